/*
 * TLS with GnuTLS, without an event loop: credentials (certificate, key,
 * trust, priority string) shared by many sessions through a reference count,
 * and one session over one non-blocking socket.  Only tls.c includes
 * <gnutls/gnutls.h>; nothing here names a GnuTLS type.
 *
 * Protocol code does not use the session half (struct tls_conn): io.c drives
 * it and offers io_start_tls_server()/io_start_tls_client() and the
 * io_tls_*() queries.  Protocol code and the daemon use the credentials half.
 */
#ifndef MXEDGE_TLS_H
#define MXEDGE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Opportunistic STARTTLS on port 25 takes TLS 1.2 and 1.3, in our order of
 * preference.  The config directive tls_priority replaces it.
 */
#define TLS_PRIORITY_DEFAULT \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:%SERVER_PRECEDENCE"

struct tls_creds;
struct tls_conn;

/*
 * Server credentials from PEM files (the certificate file may hold the whole
 * chain).  priority NULL means TLS_PRIORITY_DEFAULT.  On failure NULL, and
 * err holds a one-line reason naming the file or the bad part of the
 * priority string.  The new object has one reference.
 *
 * Reload: load a new object, swap the daemon's pointer, unref the old one;
 * sessions that hold the old one keep it alive until they end.
 */
struct tls_creds *tls_creds_load_server(const char *cert, const char *key,
    const char *priority, char *err, size_t errsize);

/*
 * Client credentials for the relay.  Peers are trusted against ca_file, or
 * the system trust store when ca_file is NULL (a missing system store is not
 * an error: verification then reports TLS_VERIFY_UNTRUSTED).  The handshake
 * never fails because of verification; the caller applies its policy after
 * IO_EV_TLS_READY with io_tls_verify().
 */
struct tls_creds *tls_creds_client(const char *priority, const char *ca_file,
    char *err, size_t errsize);

struct tls_creds *tls_creds_ref(struct tls_creds *creds);
void tls_creds_unref(struct tls_creds **credsp);

/* The peer certificate, judged after the handshake. */
enum tls_verify {
	TLS_VERIFY_OK = 0,		/* chain trusted, name matches */
	TLS_VERIFY_NO_CERT,		/* the peer sent none */
	TLS_VERIFY_UNTRUSTED,		/* chain invalid, expired or unknown CA */
	TLS_VERIFY_NAME_MISMATCH,	/* chain trusted, name does not match */
	TLS_VERIFY_ERROR,		/* no session, or verification failed to run */
};

/* "ok", "no-cert", "untrusted", "name-mismatch", "error": for log lines. */
const char *tls_verify_name(enum tls_verify v);

/* ---- Sessions: for io.c ----------------------------------------------- */

/* Negative results of the session calls below; 0 and up mean success. */
#define TLS_ERROR	(-1)	/* fatal: see tls_conn_error() */
#define TLS_WANT_READ	(-2)	/* call again when the socket is readable */
#define TLS_WANT_WRITE	(-3)	/* call again when the socket is writable */

/*
 * A session on a connected non-blocking socket, which it does not own.
 * sni (clients only) is sent unless it is NULL or an IP literal.  NULL on
 * failure with err set and errno EINVAL or ENOMEM.
 */
struct tls_conn *tls_conn_new(struct tls_creds *creds, int fd, bool server,
    const char *sni, char *err, size_t errsize);
/* Frees the session and drops its credentials reference; sends nothing. */
void tls_conn_free(struct tls_conn **connp);

/* 0 when the handshake is complete, else TLS_WANT_* or TLS_ERROR. */
int tls_conn_handshake(struct tls_conn *conn);
/*
 * Plaintext bytes read (> 0), 0 when the peer ended the session (close_notify
 * or a plain TCP close), or TLS_WANT_* / TLS_ERROR.
 */
ssize_t tls_conn_read(struct tls_conn *conn, void *buf, size_t len);
/*
 * Plaintext bytes taken (> 0, possibly fewer than len), or TLS_WANT_* /
 * TLS_ERROR.  After TLS_WANT_*, call again with the same bytes and length.
 */
ssize_t tls_conn_write(struct tls_conn *conn, const void *buf, size_t len);
/* Decrypted bytes GnuTLS holds that the socket will not signal again. */
size_t tls_conn_pending(struct tls_conn *conn);
/* Send close_notify once: 0, TLS_WANT_* (call again) or TLS_ERROR. */
int tls_conn_bye(struct tls_conn *conn);
/* The last failure, one line; "" when none. */
const char *tls_conn_error(const struct tls_conn *conn);
/* True once the peer closed the TCP connection without close_notify. */
bool tls_conn_unclean_close(const struct tls_conn *conn);

/* After the handshake: static names such as "TLS1.3" and "AES-256-GCM". */
const char *tls_conn_version_name(struct tls_conn *conn);
const char *tls_conn_cipher_name(struct tls_conn *conn);
/* Chain check, then (hostname not NULL) the name check; why gets the detail. */
enum tls_verify tls_conn_verify(struct tls_conn *conn, const char *hostname,
    char *why, size_t whysize);
/* DER of the peer's leaf certificate, valid while the session lives; or NULL. */
const unsigned char *tls_conn_peer_cert(struct tls_conn *conn, size_t *len);

#endif
