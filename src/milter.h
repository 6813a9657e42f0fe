/*
 * The milter client: the MTA side of the Sendmail milter protocol v6 on our
 * event loop (milter.c), for the inbound SMTP session.
 *
 * One struct milter_chain per SMTP session talks to the configured milters,
 * each over its own connection, in config order.  Which milters take part in
 * a transaction depends on the recipient's domain (struct domain.milters:
 * "" = every configured milter, "none", or "a,b"), which is known only at
 * the first RCPT.  So milters are contacted lazily: connect, HELO and MAIL
 * are recorded by the session and replayed to each milter of the
 * transaction just before its first RCPT.  A reject or tempfail a milter
 * gives at connect, HELO or MAIL therefore answers the RCPT commands of the
 * transaction (like Postfix's smtpd_delay_reject, on by default there),
 * and a milter is never consulted for a domain that did not ask for it.
 *
 * Every wait has a deadline (connect_timeout, command_timeout,
 * content_timeout per milter; end of message as a whole is capped at
 * MILTER_EOM_LIMIT so the client's 10-minute DATA timeout is never reached:
 * PITFALLS 30).  A milter that cannot be reached, is too slow or sends
 * anything malformed is failed for the rest of the session and its
 * on_failure policy answers instead (tempfail, accept = skip it, reject,
 * 421).
 */
#ifndef MXEDGE_MILTER_H
#define MXEDGE_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"
#include "daemon.h"
#include "milter_proto.h"
#include "util.h"

struct event_base;
struct milter_set;
struct milter_chain;

#define MILTER_EOM_LIMIT 420	/* seconds for the whole end-of-message phase */

/* The milter module: keeps the configured milters, rebuilt on reload. */
extern const struct daemon_module milter_module;

/*
 * The configured milters with their addresses resolved (unix:/path, or
 * inet:host:port; a host name is resolved here, once, with getaddrinfo).
 * Refcounted and immutable: a chain keeps the set it started with across a
 * reload.  NULL with err on failure.
 */
struct milter_set *milter_set_new(const struct conf *c, char *err, size_t errsize);
struct milter_set *milter_set_ref(struct milter_set *s);
void milter_set_unref(struct milter_set **sp);
size_t milter_set_count(const struct milter_set *s);
/* The module's current set (a new reference; unref it), or NULL when none is configured. */
struct milter_set *milter_set_current(void);

enum milter_decision {
	MILTER_D_CONTINUE = 0,	/* carry on as if there were no milter */
	MILTER_D_REJECT,	/* answer result.reply (5xx) */
	MILTER_D_TEMPFAIL,	/* answer result.reply (4xx) */
	MILTER_D_DISCARD,	/* accept towards the client, deliver nothing */
	MILTER_D_SHUTDOWN,	/* answer result.reply (421) and close the connection */
};

struct milter_result {
	enum milter_decision decision;
	int code;			/* REJECT, TEMPFAIL, SHUTDOWN: the reply code */
	/* The whole reply without the final CRLF: "550 5.7.1 text" (lines joined by CRLF). */
	const char *reply;
	const char *milter;		/* the milter that decided, or NULL */
	/* End of message only: */
	bool quarantine;		/* hold the message (reason below) */
	const char *quarantine_reason;
	size_t nmods;
	const struct milter_mod *mods;	/* in the order to apply them */
	bool body_replaced;		/* the new body is body/body_len (CRLF lines) */
	const unsigned char *body;
	size_t body_len;
};

/*
 * The result and everything it points to stay valid until the next call on
 * the chain (or its end).  A callback may call anything on the chain,
 * milter_chain_free() included.
 */
typedef void (*milter_cb)(const struct milter_result *res, void *arg);

/* What the milters learn about the SMTP session ({client_addr}, ...). */
struct milter_session_info {
	const struct sockaddr *client;	/* NULL: unknown */
	const struct sockaddr *local;	/* {if_addr}; may be NULL */
	const char *client_name;	/* {client_name}; NULL: "[address]" */
	const char *hostname;		/* j */
	const char *daemon_name;	/* {daemon_name}; NULL: "mxedged" */
	uint32_t session_id;		/* for our logs */
};

/*
 * A chain for one SMTP session.  set may be NULL (no milters: every call
 * answers CONTINUE).  The chain takes its own reference to set and copies
 * info.
 */
struct milter_chain *milter_chain_new(struct event_base *base, struct milter_set *set,
    const struct milter_session_info *info);
/*
 * The client's verified host name, once known: for {client_name}, "_" and
 * the connect event of milters not yet connected.  c may be NULL.
 */
void milter_chain_set_client_name(struct milter_chain *c, const char *name);
/* QUIT to every connected milter (best effort), then free.  A pending callback is dropped. */
void milter_chain_free(struct milter_chain **cp);

/*
 * Recorded for the milters, sent lazily (see above).  helo may be called
 * again (EHLO after STARTTLS); tls sets {tls_version} and {cipher} (NULLs
 * clear them).  mail starts a transaction (and resets a previous one that
 * was not ended with milter_chain_abort()): path is "<a@b>" or "<>",
 * args the ESMTP parameters.  queue_id sets the macro "i".
 */
void milter_chain_helo(struct milter_chain *c, const char *helo);
void milter_chain_tls(struct milter_chain *c, const char *version, const char *cipher);
int milter_chain_mail(struct milter_chain *c, const char *path, const char *const *args,
    size_t nargs);
void milter_chain_queue_id(struct milter_chain *c, const char *id);

/*
 * The asynchronous events.  Each returns 0 and later calls cb once, from
 * the event loop (never from inside the call), or returns -1 (errno EBUSY:
 * another event is pending; EINVAL: out of order) and never calls it.
 *
 * rcpt: domain_milters is the recipient domain's list.  The first RCPT of a
 * transaction fixes the transaction's milters; a later RCPT whose domain
 * names a different list is answered TEMPFAIL 452 4.5.3 (the client sends
 * it again in its own transaction).  REJECT/TEMPFAIL at RCPT refuse that
 * recipient only, unless the reason is transaction-wide (a milter refused
 * the connection or MAIL): then every RCPT is refused the same way.
 *
 * data: the DATA command.  header: value as it follows the colon (folding
 * CRLFs kept); eoh; body: any length (sent in chunks of at most 64 KiB;
 * the bytes are copied), CRLF line endings, dot-unstuffed.  A decision other
 * than CONTINUE during data/header/eoh/body is final for the message: the
 * chain answers later events of the transaction with it at once, so the
 * session may keep feeding or stop.  eom gives the final decision and the
 * modifications to apply.
 */
int milter_chain_rcpt(struct milter_chain *c, const char *path, const char *const *args,
    size_t nargs, const char *domain_milters, milter_cb cb, void *arg);
int milter_chain_data(struct milter_chain *c, milter_cb cb, void *arg);
int milter_chain_header(struct milter_chain *c, const char *name, const char *value,
    milter_cb cb, void *arg);
int milter_chain_eoh(struct milter_chain *c, milter_cb cb, void *arg);
int milter_chain_body(struct milter_chain *c, const void *data, size_t len, milter_cb cb,
    void *arg);
int milter_chain_eom(struct milter_chain *c, milter_cb cb, void *arg);

/*
 * End of a transaction, whatever ended it (end of message, RSET, a refused
 * MAIL, a lost client): every milter in it gets ABORT, and all transaction
 * state (verdicts, accepted milters, modifications) is forgotten, so the
 * next transaction starts clean (PITFALLS 12).  A pending callback is
 * dropped.  Always safe to call.
 */
void milter_chain_abort(struct milter_chain *c);

/* Does the current transaction involve any milter (known from the first RCPT)? */
bool milter_chain_active(const struct milter_chain *c);

/* Convenience for the whole message: headers, eoh, body and eom from one buffer. */
int milter_chain_message(struct milter_chain *c, const unsigned char *msg, size_t len,
    milter_cb cb, void *arg);

const char *milter_decision_name(enum milter_decision d);

#endif
