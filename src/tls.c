/*
 * GnuTLS, kept in one file.  It owns credentials (certificate, key, trust
 * store, priority cache; shared and reference-counted so a SIGHUP reload never
 * pulls them from under a live session) and sessions over a non-blocking
 * socket that the caller owns and polls.  It trusts its caller to poll in the
 * direction it asks for and to repeat a write with the same bytes; it trusts
 * nothing from the peer, which GnuTLS parses.  Failures come back as
 * TLS_ERROR with a one-line reason; a failed session is never used again and
 * never sends anything but, at most, one best-effort alert.  Nothing here
 * blocks, logs or exits.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls.h"

/* A peer can send warning alerts back to back; we read through this many. */
#define TLS_MAX_WARNINGS	16

struct tls_creds {
	int refs;
	bool server;
	gnutls_certificate_credentials_t cert;
	gnutls_priority_t prio;
};

struct tls_conn {
	gnutls_session_t session;
	struct tls_creds *creds;
	int fd;
	int sys_errno;		/* errno of the last failed recv/send */
	bool server;
	bool done;		/* handshake complete */
	bool failed;
	bool unclean;
	char err[192];
};

static void tls_set_error(char *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));

/* Error text is for a log line: keep what fits, and show that it was cut. */
static void
tls_set_error(char *err, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err == NULL || size == 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(err, size, fmt, ap);
	va_end(ap);
	if (n < 0)
		err[0] = '\0';
	else if ((size_t)n >= size && size > 4)
		memcpy(err + size - 4, "...", 4);
}

static int
tls_creds_set_priority(struct tls_creds *c, const char *priority, char *err,
    size_t errsize)
{
	const char *where = NULL;
	int r;

	if (priority == NULL)
		priority = TLS_PRIORITY_DEFAULT;
	r = gnutls_priority_init(&c->prio, priority, &where);
	if (r == GNUTLS_E_SUCCESS)
		return 0;
	c->prio = NULL;
	if (r == GNUTLS_E_INVALID_REQUEST && where != NULL)
		tls_set_error(err, errsize,
		    "invalid TLS priority string near \"%.40s\"", where);
	else
		tls_set_error(err, errsize, "TLS priority string: %s",
		    gnutls_strerror(r));
	errno = EINVAL;
	return -1;
}

static struct tls_creds *
tls_creds_alloc(bool server, char *err, size_t errsize)
{
	struct tls_creds *c;
	int r;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		tls_set_error(err, errsize, "out of memory");
		return NULL;
	}
	c->refs = 1;
	c->server = server;
	r = gnutls_certificate_allocate_credentials(&c->cert);
	if (r != GNUTLS_E_SUCCESS) {
		tls_set_error(err, errsize, "TLS credentials: %s",
		    gnutls_strerror(r));
		free(c);
		errno = ENOMEM;
		return NULL;
	}
	return c;
}

static void
tls_creds_destroy(struct tls_creds *c)
{
	if (c->prio != NULL)
		gnutls_priority_deinit(c->prio);
	gnutls_certificate_free_credentials(c->cert);
	free(c);
}

struct tls_creds *
tls_creds_load_server(const char *cert, const char *key, const char *priority,
    char *err, size_t errsize)
{
	struct tls_creds *c;
	int r;

	if (cert == NULL || key == NULL) {
		tls_set_error(err, errsize, "TLS certificate or key not set");
		errno = EINVAL;
		return NULL;
	}
	if ((c = tls_creds_alloc(true, err, errsize)) == NULL)
		return NULL;
	/* GnuTLS also checks that the key belongs to the certificate. */
	r = gnutls_certificate_set_x509_key_file2(c->cert, cert, key,
	    GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		tls_set_error(err, errsize, "cannot load certificate %s with "
		    "key %s: %s", cert, key, gnutls_strerror(r));
		tls_creds_destroy(c);
		errno = EINVAL;
		return NULL;
	}
	/* Old clients that only offer finite-field DHE get RFC 7919 groups. */
	(void)gnutls_certificate_set_known_dh_params(c->cert,
	    GNUTLS_SEC_PARAM_MEDIUM);
	if (tls_creds_set_priority(c, priority, err, errsize) == -1) {
		tls_creds_destroy(c);
		return NULL;
	}
	return c;
}

struct tls_creds *
tls_creds_client(const char *priority, const char *ca_file, char *err,
    size_t errsize)
{
	struct tls_creds *c;
	int r;

	if ((c = tls_creds_alloc(false, err, errsize)) == NULL)
		return NULL;
	if (ca_file != NULL) {
		r = gnutls_certificate_set_x509_trust_file(c->cert, ca_file,
		    GNUTLS_X509_FMT_PEM);
		if (r <= 0) {
			tls_set_error(err, errsize, "cannot load CA file %s: %s",
			    ca_file, r == 0 ? "no certificates in it" :
			    gnutls_strerror(r));
			tls_creds_destroy(c);
			errno = EINVAL;
			return NULL;
		}
	} else {
		/*
		 * Opportunistic TLS works without a trust store; without one
		 * every peer verifies as untrusted, which the policy sees.
		 */
		(void)gnutls_certificate_set_x509_system_trust(c->cert);
	}
	if (tls_creds_set_priority(c, priority, err, errsize) == -1) {
		tls_creds_destroy(c);
		return NULL;
	}
	return c;
}

struct tls_creds *
tls_creds_ref(struct tls_creds *c)
{
	if (c != NULL)
		c->refs++;
	return c;
}

void
tls_creds_unref(struct tls_creds **cp)
{
	struct tls_creds *c;

	if (cp == NULL || (c = *cp) == NULL)
		return;
	*cp = NULL;
	if (--c->refs > 0)
		return;
	tls_creds_destroy(c);
}

const char *
tls_verify_name(enum tls_verify v)
{
	switch (v) {
	case TLS_VERIFY_OK:
		return "ok";
	case TLS_VERIFY_NO_CERT:
		return "no-cert";
	case TLS_VERIFY_UNTRUSTED:
		return "untrusted";
	case TLS_VERIFY_NAME_MISMATCH:
		return "name-mismatch";
	case TLS_VERIFY_ERROR:
		break;
	}
	return "error";
}

/*
 * Transport.  Our own pull/push, not gnutls_transport_set_int(), so that
 * the errno of a failed syscall survives for the error message and SIGPIPE
 * is never raised whatever the process's signal disposition.
 */
static ssize_t
tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
	struct tls_conn *c = ptr;
	ssize_t r;

	r = recv(c->fd, buf, len, 0);
	if (r == -1) {
		c->sys_errno = errno;
		gnutls_transport_set_errno(c->session, errno);
	}
	return r;
}

static ssize_t
tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct tls_conn *c = ptr;
	struct msghdr msg;
	ssize_t r;

	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = (struct iovec *)(uintptr_t)iov;
	msg.msg_iovlen = (size_t)iovcnt;
	r = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
	if (r == -1) {
		c->sys_errno = errno;
		gnutls_transport_set_errno(c->session, errno);
	}
	return r;
}

/*
 * GnuTLS wants this with a custom pull function.  We never let it wait: the
 * event loop does the waiting, so report only what is ready now.
 */
static int
tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned int ms)
{
	struct tls_conn *c = ptr;
	struct pollfd pfd;

	pfd.fd = c->fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0);
}

static bool
tls_is_ip_literal(const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, buf) == 1 ||
	    inet_pton(AF_INET6, name, buf) == 1;
}

struct tls_conn *
tls_conn_new(struct tls_creds *creds, int fd, bool server, const char *sni,
    char *err, size_t errsize)
{
	struct tls_conn *c;
	unsigned int flags;
	int r;

	if (creds == NULL || creds->server != server) {
		tls_set_error(err, errsize, "TLS %s session needs %s credentials",
		    server ? "server" : "client", server ? "server" : "client");
		errno = EINVAL;
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		tls_set_error(err, errsize, "out of memory");
		return NULL;
	}
	c->fd = fd;
	c->server = server;
	flags = (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK |
	    GNUTLS_NO_SIGNAL;
	if ((r = gnutls_init(&c->session, flags)) != GNUTLS_E_SUCCESS)
		goto fail_free;
	if ((r = gnutls_priority_set(c->session, creds->prio)) < 0 ||
	    (r = gnutls_credentials_set(c->session, GNUTLS_CRD_CERTIFICATE,
	    creds->cert)) < 0)
		goto fail_deinit;
	if (server)
		gnutls_certificate_server_set_request(c->session,
		    GNUTLS_CERT_IGNORE);
	else if (sni != NULL && sni[0] != '\0' && !tls_is_ip_literal(sni)) {
		r = gnutls_server_name_set(c->session, GNUTLS_NAME_DNS, sni,
		    strlen(sni));
		if (r < 0)
			goto fail_deinit;
	}
	/* The event loop keeps the handshake deadline, not GnuTLS. */
	gnutls_handshake_set_timeout(c->session, GNUTLS_INDEFINITE_TIMEOUT);
	gnutls_transport_set_ptr(c->session, c);
	gnutls_transport_set_pull_function(c->session, tls_pull);
	gnutls_transport_set_pull_timeout_function(c->session,
	    tls_pull_timeout);
	gnutls_transport_set_vec_push_function(c->session, tls_push);
	c->creds = tls_creds_ref(creds);
	return c;

fail_deinit:
	gnutls_deinit(c->session);
fail_free:
	tls_set_error(err, errsize, "TLS session: %s", gnutls_strerror(r));
	free(c);
	errno = r == GNUTLS_E_MEMORY_ERROR ? ENOMEM : EINVAL;
	return NULL;
}

void
tls_conn_free(struct tls_conn **cp)
{
	struct tls_conn *c;

	if (cp == NULL || (c = *cp) == NULL)
		return;
	*cp = NULL;
	gnutls_deinit(c->session);
	tls_creds_unref(&c->creds);
	free(c);
}

/* Record a fatal error once, with the detail that makes it actionable. */
static int
tls_conn_fail(struct tls_conn *c, const char *what, int r)
{
	c->failed = true;
	switch (r) {
	case GNUTLS_E_PUSH_ERROR:
	case GNUTLS_E_PULL_ERROR:
		tls_set_error(c->err, sizeof(c->err), "TLS %s: %s", what,
		    strerror(c->sys_errno));
		return TLS_ERROR;
	case GNUTLS_E_PREMATURE_TERMINATION:
		tls_set_error(c->err, sizeof(c->err),
		    "TLS %s: peer closed the connection", what);
		return TLS_ERROR;
	case GNUTLS_E_FATAL_ALERT_RECEIVED:
		tls_set_error(c->err, sizeof(c->err),
		    "TLS %s: peer sent alert %s", what,
		    gnutls_alert_get_name(gnutls_alert_get(c->session)));
		return TLS_ERROR;
	default:
		tls_set_error(c->err, sizeof(c->err), "TLS %s: %s", what,
		    gnutls_strerror(r));
		break;
	}
	/* Tell the peer why, best effort: one non-blocking attempt. */
	(void)gnutls_alert_send_appropriate(c->session, r);
	return TLS_ERROR;
}

static int
tls_conn_again(struct tls_conn *c)
{
	return gnutls_record_get_direction(c->session) == 0 ?
	    TLS_WANT_READ : TLS_WANT_WRITE;
}

int
tls_conn_handshake(struct tls_conn *c)
{
	int r, warnings = 0;

	if (c->failed)
		return TLS_ERROR;
	if (c->done)
		return 0;
	for (;;) {
		r = gnutls_handshake(c->session);
		if (r == GNUTLS_E_SUCCESS) {
			c->done = true;
			return 0;
		}
		if (r == GNUTLS_E_AGAIN)
			return tls_conn_again(c);
		if (r == GNUTLS_E_INTERRUPTED)
			continue;
		if (!gnutls_error_is_fatal(r) && ++warnings < TLS_MAX_WARNINGS)
			continue;
		return tls_conn_fail(c, "handshake", r);
	}
}

ssize_t
tls_conn_read(struct tls_conn *c, void *buf, size_t len)
{
	ssize_t r;
	int warnings = 0;

	if (c->failed || !c->done)
		return TLS_ERROR;
	for (;;) {
		r = gnutls_record_recv(c->session, buf, len);
		if (r >= 0)
			return r;
		switch (r) {
		case GNUTLS_E_AGAIN:
			return tls_conn_again(c);
		case GNUTLS_E_INTERRUPTED:
			continue;
		case GNUTLS_E_PREMATURE_TERMINATION:
			/* SMTP and the proxied protocols frame their own data. */
			c->unclean = true;
			return 0;
		case GNUTLS_E_REHANDSHAKE:
			/* We never renegotiate; the peer's request is ignored. */
			if (++warnings < TLS_MAX_WARNINGS)
				continue;
			break;
		default:
			if (!gnutls_error_is_fatal((int)r) &&
			    ++warnings < TLS_MAX_WARNINGS)
				continue;
			break;
		}
		return tls_conn_fail(c, "read", (int)r);
	}
}

ssize_t
tls_conn_write(struct tls_conn *c, const void *buf, size_t len)
{
	ssize_t r;

	if (c->failed || !c->done)
		return TLS_ERROR;
	do {
		r = gnutls_record_send(c->session, buf, len);
	} while (r == GNUTLS_E_INTERRUPTED);
	if (r >= 0)
		return r;
	if (r == GNUTLS_E_AGAIN)
		return tls_conn_again(c);
	return tls_conn_fail(c, "write", (int)r);
}

size_t
tls_conn_pending(struct tls_conn *c)
{
	if (c->failed || !c->done)
		return 0;
	return gnutls_record_check_pending(c->session);
}

int
tls_conn_bye(struct tls_conn *c)
{
	int r;

	if (c->failed || !c->done)
		return TLS_ERROR;
	do {
		r = gnutls_bye(c->session, GNUTLS_SHUT_WR);
	} while (r == GNUTLS_E_INTERRUPTED);
	if (r == GNUTLS_E_SUCCESS)
		return 0;
	if (r == GNUTLS_E_AGAIN)
		return tls_conn_again(c);
	return TLS_ERROR;
}

const char *
tls_conn_error(const struct tls_conn *c)
{
	return c->err;
}

bool
tls_conn_unclean_close(const struct tls_conn *c)
{
	return c->unclean;
}

const char *
tls_conn_version_name(struct tls_conn *c)
{
	const char *s;

	if (!c->done)
		return NULL;
	s = gnutls_protocol_get_name(gnutls_protocol_get_version(c->session));
	return s != NULL ? s : "unknown";
}

const char *
tls_conn_cipher_name(struct tls_conn *c)
{
	const char *s;

	if (!c->done)
		return NULL;
	s = gnutls_cipher_get_name(gnutls_cipher_get(c->session));
	return s != NULL ? s : "unknown";
}

const unsigned char *
tls_conn_peer_cert(struct tls_conn *c, size_t *len)
{
	const gnutls_datum_t *certs;
	unsigned int n = 0;

	*len = 0;
	if (!c->done || c->failed)
		return NULL;
	certs = gnutls_certificate_get_peers(c->session, &n);
	if (certs == NULL || n == 0)
		return NULL;
	*len = certs[0].size;
	return certs[0].data;
}

static enum tls_verify
tls_conn_check_name(struct tls_conn *c, const char *hostname, char *why,
    size_t whysize)
{
	const gnutls_datum_t *certs;
	gnutls_x509_crt_t crt;
	unsigned int n = 0;
	unsigned int match;
	int r;

	certs = gnutls_certificate_get_peers(c->session, &n);
	if (certs == NULL || n == 0 ||
	    gnutls_certificate_type_get(c->session) != GNUTLS_CRT_X509) {
		tls_set_error(why, whysize, "no X.509 peer certificate");
		return TLS_VERIFY_NO_CERT;
	}
	if ((r = gnutls_x509_crt_init(&crt)) < 0) {
		tls_set_error(why, whysize, "%s", gnutls_strerror(r));
		return TLS_VERIFY_ERROR;
	}
	r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
	if (r < 0) {
		gnutls_x509_crt_deinit(crt);
		tls_set_error(why, whysize, "peer certificate: %s",
		    gnutls_strerror(r));
		return TLS_VERIFY_ERROR;
	}
	match = gnutls_x509_crt_check_hostname2(crt, hostname, 0);
	gnutls_x509_crt_deinit(crt);
	if (!match) {
		tls_set_error(why, whysize,
		    "certificate does not match the host name");
		return TLS_VERIFY_NAME_MISMATCH;
	}
	return TLS_VERIFY_OK;
}

enum tls_verify
tls_conn_verify(struct tls_conn *c, const char *hostname, char *why,
    size_t whysize)
{
	gnutls_datum_t text;
	unsigned int status = 0, n = 0;
	int r;

	if (why != NULL && whysize > 0)
		why[0] = '\0';
	if (!c->done || c->failed) {
		tls_set_error(why, whysize, "no TLS session");
		return TLS_VERIFY_ERROR;
	}
	if (gnutls_certificate_get_peers(c->session, &n) == NULL || n == 0) {
		tls_set_error(why, whysize, "peer sent no certificate");
		return TLS_VERIFY_NO_CERT;
	}
	r = gnutls_certificate_verify_peers2(c->session, &status);
	if (r == GNUTLS_E_NO_CERTIFICATE_FOUND) {
		tls_set_error(why, whysize, "peer sent no certificate");
		return TLS_VERIFY_NO_CERT;
	}
	if (r < 0) {
		tls_set_error(why, whysize, "verification: %s",
		    gnutls_strerror(r));
		return TLS_VERIFY_ERROR;
	}
	if (status != 0) {
		if (gnutls_certificate_verification_status_print(status,
		    GNUTLS_CRT_X509, &text, 0) == 0) {
			/* GnuTLS ends the text with a space */
			while (text.size > 0 && text.data[text.size - 1] == ' ')
				text.size--;
			tls_set_error(why, whysize, "%.*s", (int)text.size,
			    (char *)text.data);
			gnutls_free(text.data);
		} else
			tls_set_error(why, whysize,
			    "certificate not trusted (status 0x%x)", status);
		return TLS_VERIFY_UNTRUSTED;
	}
	if (hostname != NULL)
		return tls_conn_check_name(c, hostname, why, whysize);
	return TLS_VERIFY_OK;
}
