/*
 * The I/O layer between libevent/GnuTLS and the protocol code.  A session
 * owns one struct io for its connected socket and receives events, never the
 * file descriptor.  Input and output are plaintext buffers; STARTTLS turns
 * the same io into a TLS one.
 *
 * Callbacks run only from the event loop, never from inside an io_*() call,
 * so a session may call any io_*() function from its callback, io_free()
 * included (the io then stays valid until the callback returns, but no
 * further event is delivered).
 */
#ifndef MXEDGE_IO_H
#define MXEDGE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "tls.h"
#include "util.h"

struct event_base;
struct evbuffer;
struct io;

enum io_event {
	IO_EV_DATA = 0,		/* new plaintext in io_input() */
	IO_EV_DRAINED,		/* pending output fell to the low-water mark */
	IO_EV_CONNECTED,	/* io_connect() succeeded */
	IO_EV_TLS_READY,	/* handshake complete; io_tls_*() answer */
	IO_EV_TIMEOUT,		/* a deadline passed; io_error_string() says which */
	IO_EV_CLOSED,		/* the peer ended its side (EOF, close_notify) */
	IO_EV_ERROR,		/* fatal; io_error_string() says why */
};

struct io_callbacks {
	void (*on_event)(struct io *io, enum io_event ev, void *arg);
};

/*
 * After IO_EV_ERROR, and after a connect or handshake IO_EV_TIMEOUT, the io
 * is dead: it delivers nothing more, io_write() fails, and the session
 * should io_free() it.  A read or write IO_EV_TIMEOUT leaves it usable (to
 * send a 421, say); that deadline is re-armed only by new activity.
 * IO_EV_CLOSED stops reading; writing still works (half-close).  After a
 * TLS peer closed without close_notify, io_error_string() says so.
 */

/* Defaults, changeable per io. */
#define IO_READ_LIMIT_DEFAULT		(256 * 1024)	/* bytes in io_input() */
#define IO_HANDSHAKE_TIMEOUT_DEFAULT	60		/* seconds */

/*
 * Take over a connected socket (made non-blocking here).  cb is copied.
 * NULL with errno on failure, and the caller still owns fd.  No deadline is
 * set until io_set_timeout()/io_set_write_timeout().
 */
struct io *io_new(struct event_base *base, int fd,
    const struct io_callbacks *cb, void *arg);
/*
 * Connect asynchronously: later IO_EV_CONNECTED, or IO_EV_ERROR (refused,
 * unreachable...) or IO_EV_TIMEOUT after timeout_sec (0: none).  NULL with
 * errno only when no socket could be made.
 */
struct io *io_connect(struct event_base *base, const struct sockaddr *sa,
    socklen_t salen, int timeout_sec, const struct io_callbacks *cb,
    void *arg);
/*
 * Close the socket and free everything; unsent output is dropped (wait for
 * IO_EV_DRAINED first to deliver it).  A TLS session gets one non-blocking
 * close_notify attempt.  NULLs *iop.
 */
void io_free(struct io **iop);
void io_set_callbacks(struct io *io, const struct io_callbacks *cb, void *arg);

/* Plaintext received.  Drain what you consumed. */
struct evbuffer *io_input(struct io *io);
/*
 * The next line, if one ending in LF lies within the first max bytes of
 * input: 1 and *line views it, LF (and any CR) included, valid until the
 * input changes.  0: need more.  -1: max bytes buffered without an LF (the
 * line is too long; errno EMSGSIZE).  Line endings are not judged here.
 */
int io_line_peek(struct io *io, size_t max, struct mx_view *line);
void io_drain(struct io *io, size_t len);

/* Queue output: 0, or -1 with errno (EPIPE once dead or shut down, ENOMEM). */
int io_write(struct io *io, const void *data, size_t len);
int io_printf(struct io *io, const char *fmt, ...) MX_PRINTF(2, 3);
/* Move all of src to the output without copying (proxying). */
int io_write_buffer(struct io *io, struct evbuffer *src);
/* Plaintext queued and not yet handed to the kernel (or to GnuTLS). */
size_t io_output_pending(const struct io *io);
/*
 * IO_EV_DRAINED fires once when pending output, having been above lowat
 * after an io_write*(), falls to lowat or below (default 0: all sent).  To
 * close after a last reply, wait for it with lowat 0.
 */
void io_set_write_lowat(struct io *io, size_t lowat);
/*
 * Once pending output is sent, end our side: close_notify under TLS, then
 * shutdown(SHUT_WR).  Reading continues.  Later io_write() fails.
 */
int io_shutdown_write(struct io *io);

/*
 * Read flow control.  While paused nothing is read and no IO_EV_DATA is
 * delivered.  io_resume_read() delivers IO_EV_DATA again (from the loop) if
 * unconsumed input is waiting, so pipelined commands held during a pause are
 * seen.  Reading also stops while io_input() holds read_limit bytes or more
 * (0: no limit) and restarts by itself once the session drains below it.
 */
void io_pause_read(struct io *io);
void io_resume_read(struct io *io);
bool io_read_paused(const struct io *io);
void io_set_read_limit(struct io *io, size_t bytes);

/*
 * Deadlines in seconds, 0 to disable.  Read: while we wait for input,
 * restarted by any progress in either direction; not running while paused,
 * at the read limit, after EOF or during a handshake.  Write: while output
 * is pending, restarted by each write that makes progress.  Handshake: from
 * io_start_tls_*() to the end of the handshake, never restarted; set it
 * before io_start_tls_*().
 */
void io_set_timeout(struct io *io, int seconds);
/*
 * The read deadline again, restarted by our own output making progress (and
 * by this call) but by input only once per_bytes octets of it arrived (0:
 * never): after our last reply or command the peer has this long to send the
 * whole next command or reply, however slowly it trickles it (RFC 5321
 * 4.5.3.2 bounds the wait for the whole thing), and a message body must keep
 * a minimum rate.  io_set_timeout() switches back to the idle kind.
 */
void io_set_read_deadline(struct io *io, int seconds, size_t per_bytes);
void io_set_write_timeout(struct io *io, int seconds);
void io_set_handshake_timeout(struct io *io, int seconds);

/* The last error or timeout, one line; "" if none.  Valid until io_free(). */
const char *io_error_string(const struct io *io);

/*
 * STARTTLS.  Input already buffered is discarded (it arrived in plaintext
 * and must never be taken as protected: STARTTLS injection), and its size
 * stored in *discarded (may be NULL) for the log.  Output already queued
 * (the "220 ready" reply) is sent in plaintext first; later output is
 * encrypted.  No IO_EV_DATA until IO_EV_TLS_READY; failure is IO_EV_ERROR or
 * IO_EV_TIMEOUT.  The io holds a reference to creds.  -1 with errno EINVAL
 * if TLS was already started or the io is not a plain open connection.
 * sni (client) is also the default name checked by io_tls_verify().
 */
int io_start_tls_server(struct io *io, struct tls_creds *creds,
    size_t *discarded);
int io_start_tls_client(struct io *io, struct tls_creds *creds,
    const char *sni, size_t *discarded);

/* True from IO_EV_TLS_READY until an error ends the session. */
bool io_tls_established(const struct io *io);
/*
 * "version=TLS1.3 cipher=AES-256-GCM" for Received: headers and logs.
 * 0, or -1 with errno ENOTCONN (no handshake completed) or ENAMETOOLONG.
 * These three keep answering after the TLS session ended.
 */
int io_tls_info(const struct io *io, char *buf, size_t size);
const char *io_tls_version_name(const struct io *io);	/* NULL before TLS */
const char *io_tls_cipher_name(const struct io *io);	/* NULL before TLS */
/*
 * Judge the peer's certificate (for a "required" policy), while the TLS
 * session is alive: chain against the credentials' trust, then the name
 * (hostname, or the SNI given to io_start_tls_client() when NULL; no name
 * check on a server io unless hostname is given).  why may be NULL.
 */
enum tls_verify io_tls_verify(struct io *io, const char *hostname, char *why,
    size_t whysize);
/* DER of the peer's leaf certificate (for DANE), while TLS is alive; or NULL. */
const unsigned char *io_tls_peer_cert(struct io *io, size_t *len);

#endif
