/*
 * The inbound SMTP server: accepts on smtp_listen sockets and runs one
 * session per connection, an explicit state machine driven by a command
 * table, over the I/O layer (io.c).  It owns the session state, the
 * transaction's envelope and the open spool writer; the spool itself is
 * queue.h's business.
 *
 * Trust: every byte from the client is hostile.  Lines go through the
 * strict splitter and parser of smtp_parse.c (only CRLF ends a line), the
 * message through its DATA machine (only CRLF.CRLF ends it, bare CR/LF
 * rejects it).  Recipients are accepted only for exactly registered
 * domains, decided on the parsed canonical domain, and never for address
 * syntax that has been used to relay (%, !, source routes, quoted @,
 * literals).  Bytes pipelined past a synchronisation point, or sent before
 * our greeting, end the session; plaintext sent after STARTTLS is thrown
 * away by the I/O layer and the session starts over.  Every reply that ends
 * a transaction (RSET, a rejected message, the 250 after DATA) resets all
 * transaction state.
 *
 * Durability: "250 queued" is written only from the spool's commit
 * callback, which reports success only after the file and its directory
 * were synced; until then the session reads nothing more.  Any failure is
 * 451 4.3.0 and the spool removes the file.
 *
 * Failure: a broken connection is closed and logged; nothing here can
 * stop the daemon.  Every input is bounded (line lengths, recipients,
 * message size, errors) and every wait has a deadline.
 */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "io.h"
#include "client_limits.h"
#include "listen.h"
#include "log.h"
#include "queue.h"
#include "queue_file.h"
#include "registry.h"
#include "smtp.h"
#include "smtp_parse.h"
#include "stats.h"
#include "tls.h"

#define SMTP_CLOSE_TIMEOUT 5		/* seconds to wait for the client's FIN */
#define SMTP_PULLUP 4096		/* command bytes made contiguous at once */
#define SMTP_MAX_HOPS 100		/* Received: fields (RFC 5321 §6.3) */
#define SMTP_HDR_MAX 2048		/* our Received: field */

enum smtp_state {
	SMTP_ST_GREETING = 0,	/* connected; our 220 not sent yet */
	SMTP_ST_HELO,		/* 220 sent; HELO or EHLO expected */
	SMTP_ST_READY,		/* greeted; no transaction */
	SMTP_ST_MAIL,		/* MAIL accepted; RCPT expected */
	SMTP_ST_RCPT,		/* at least one recipient accepted */
	SMTP_ST_DATA,		/* 354 sent; reading the message */
	SMTP_ST_COMMIT,		/* end of data; waiting for the spool (not reading) */
	SMTP_ST_TLS,		/* STARTTLS handshake */
	SMTP_ST_CLOSING,	/* last reply queued; waiting for the client to go */
	SMTP_ST_MAX
};

static const char *const state_names[SMTP_ST_MAX] = {
	"greeting", "helo", "ready", "mail", "rcpt", "data", "commit", "tls", "closing"
};

#define ST(x) (1u << (x))
#define ST_GREETED (ST(SMTP_ST_READY) | ST(SMTP_ST_MAIL) | ST(SMTP_ST_RCPT))
#define ST_COMMANDS (ST(SMTP_ST_HELO) | ST_GREETED)

struct smtp_session {
	struct smtp_session *prev, *next;	/* all sessions, for stop() */
	uint32_t id;
	struct io *io;
	enum smtp_state state;
	struct event *ev_timer;		/* pre-greeting delay; deferred free */
	bool dying;			/* freed from ev_timer on the next loop turn */

	struct sockaddr_storage client;
	socklen_t clientlen;
	char client_ip[ADDR_STR_MAX];	/* "192.0.2.1" or "2001:db8::1" */
	bool counted_client;
	uint64_t started;		/* usec, monotonic */

	struct smtp_line_splitter lines;
	unsigned int errors;
	bool esmtp;			/* EHLO (not HELO) accepted */
	bool helo_ok;			/* the HELO name is a valid domain or literal */
	bool tls;			/* a handshake completed on this connection */
	bool gone;			/* the client went away during a commit */
	bool held;			/* holds the daemon (commit, or closing at stop) */
	bool peer_closed;		/* EOF seen while our last reply was still going out */
	char helo[QUEUE_HELO_MAX + 1];
	unsigned int messages;		/* accepted in this session */
	uint64_t bytes_in;
	const char *close_reason;

	/* The transaction: valid in MAIL, RCPT, DATA and COMMIT. */
	struct queue_envelope env;
	uint64_t size_limit;		/* the lowest of the recipients' domain limits */
	struct queue_writer *writer;
	struct smtp_data data;
};

/* Table entry flags. */
#define SMTP_CF_SYNC	0x01u	/* RFC 2920: must be the last command of a group */

struct smtp_cmd_entry {
	enum smtp_cmd cmd;
	unsigned int states;	/* ST() bits where the command may run */
	void (*proceed)(struct smtp_session *, const struct smtp_command *);
	unsigned int flags;
};

static void smtp_cmd_helo(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_mail(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_rcpt(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_data(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_rset(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_noop(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_quit(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_vrfy(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_expn(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_help(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_starttls(struct smtp_session *, const struct smtp_command *);
static void smtp_cmd_unsupported(struct smtp_session *, const struct smtp_command *);

static const struct smtp_cmd_entry smtp_cmd_table[] = {
	{ SMTP_CMD_HELO, ST_COMMANDS, smtp_cmd_helo, SMTP_CF_SYNC },
	{ SMTP_CMD_EHLO, ST_COMMANDS, smtp_cmd_helo, SMTP_CF_SYNC },
	{ SMTP_CMD_MAIL, ST(SMTP_ST_READY), smtp_cmd_mail, 0 },
	{ SMTP_CMD_RCPT, ST(SMTP_ST_MAIL) | ST(SMTP_ST_RCPT), smtp_cmd_rcpt, 0 },
	{ SMTP_CMD_DATA, ST(SMTP_ST_RCPT), smtp_cmd_data, SMTP_CF_SYNC },
	{ SMTP_CMD_RSET, ST_COMMANDS, smtp_cmd_rset, 0 },
	{ SMTP_CMD_NOOP, ST_COMMANDS, smtp_cmd_noop, SMTP_CF_SYNC },
	{ SMTP_CMD_QUIT, ST_COMMANDS, smtp_cmd_quit, 0 },
	{ SMTP_CMD_VRFY, ST_COMMANDS, smtp_cmd_vrfy, SMTP_CF_SYNC },
	{ SMTP_CMD_EXPN, ST_COMMANDS, smtp_cmd_expn, SMTP_CF_SYNC },
	{ SMTP_CMD_HELP, ST_COMMANDS, smtp_cmd_help, SMTP_CF_SYNC },
	/* The I/O layer discards what follows STARTTLS: no SYNC check needed. */
	{ SMTP_CMD_STARTTLS, ST_GREETED, smtp_cmd_starttls, 0 },
	{ SMTP_CMD_BDAT, ST_COMMANDS, smtp_cmd_unsupported, 0 },
	{ SMTP_CMD_AUTH, ST_COMMANDS, smtp_cmd_unsupported, 0 },
};

struct smtp_listener {
	struct listener *l;
};

static struct smtp_listener listeners[CONF_MAX_LISTEN];
static int nlisteners;
static struct client_limits *limits;
static struct smtp_session *sessions;
static size_t active;
static uint32_t next_id;
static struct tls_creds *smtp_creds;	/* NULL: STARTTLS not offered */

static unsigned long long *c_sessions, *c_refused_total, *c_refused_client, *c_pregreet,
    *c_sync_violation, *c_starttls, *c_tls_failed, *c_tls_discarded, *c_accepted,
    *c_queue_failed, *c_rejected_relay, *c_rejected_size, *c_rejected_bare_newline,
    *c_rejected_long_line, *c_rejected_loop, *c_rejected_space, *c_too_many_rcpts,
    *c_rcpts, *c_timeouts, *c_too_many_errors, *c_bytes, *c_bad_lines;

static void smtp_session_free(struct smtp_session *s);
static void smtp_input(struct smtp_session *s);

static const char *
smtp_qid(const struct smtp_session *s)
{
	return s->env.id[0] != '\0' ? s->env.id : "-";
}

static void
smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state != st && log_enabled(LOG_LEVEL_DEBUG))
		log_debug("event=smtp_state id=%08x qid=%s from=%s to=%s", s->id, smtp_qid(s),
		    state_names[s->state], state_names[st]);
	s->state = st;
}

/* Queue one reply line; the text is ours, never the client's. */
static void MX_PRINTF(2, 3)
smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	char line[SMTP_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 2)
		n = (int)sizeof(line) - 3;
	if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("event=smtp_reply id=%08x qid=%s reply=\"%.*s\"", s->id, smtp_qid(s), n,
		    line);
	line[n++] = '\r';
	line[n++] = '\n';
	if (io_write(s->io, line, (size_t)n) == -1)
		log_debug("event=smtp_write_failed id=%08x errno=%d", s->id, errno);
}

/*
 * Free the session from the loop, not from inside the input loop or a
 * command that the caller will look at again.
 */
static void
smtp_kill(struct smtp_session *s)
{
	smtp_enter_state(s, SMTP_ST_CLOSING);
	s->dying = true;
	event_active(s->ev_timer, EV_TIMEOUT, 0);
}

/*
 * Our last reply is queued: send it, end our side, and wait (briefly) for
 * the client to close, so its unread bytes do not turn our FIN into a RST
 * that could destroy the reply.
 */
static void
smtp_close(struct smtp_session *s, const char *reason)
{
	if (s->state == SMTP_ST_CLOSING)
		return;
	s->close_reason = reason;
	smtp_enter_state(s, SMTP_ST_CLOSING);
	event_del(s->ev_timer);
	/*
	 * A closing session can do nothing more: it no longer counts against
	 * its client, whose next connection may well arrive before its FIN.
	 */
	if (s->counted_client) {
		client_limits_release(limits, (struct sockaddr *)&s->client);
		s->counted_client = false;
	}
	if (io_shutdown_write(s->io) == -1) {
		smtp_kill(s);
		return;
	}
	io_set_timeout(s->io, SMTP_CLOSE_TIMEOUT);
	io_set_write_timeout(s->io, SMTP_CLOSE_TIMEOUT);
	(void)evbuffer_drain(io_input(s->io), evbuffer_get_length(io_input(s->io)));
}

/* A 4xx/5xx answer to a command: counts towards smtp_max_errors. */
static void
smtp_error_count(struct smtp_session *s)
{
	if (++s->errors < (unsigned long long)mxd->conf->smtp_max_errors)
		return;
	(*c_too_many_errors)++;
	log_info("event=smtp_too_many_errors id=%08x qid=%s errors=%u", s->id, smtp_qid(s),
	    s->errors);
	smtp_reply(s, "421 4.7.0 %s Error: too many errors", mxd->conf->hostname);
	smtp_close(s, "too_many_errors");
}

/* The transaction ends: nothing of it survives into the next one. */
static void
smtp_txn_reset(struct smtp_session *s)
{
	if (s->writer != NULL)
		queue_writer_abort(&s->writer);
	queue_envelope_clear(&s->env);
	memset(&s->data, 0, sizeof(s->data));
	s->size_limit = 0;
}

/* Back to the state after HELO/EHLO, transaction gone. */
static void
smtp_txn_end(struct smtp_session *s)
{
	smtp_txn_reset(s);
	smtp_enter_state(s, SMTP_ST_READY);
}

static void
smtp_hold(struct smtp_session *s)
{
	if (!s->held) {
		s->held = true;
		daemon_hold();
	}
}

static void
smtp_unhold(struct smtp_session *s)
{
	if (s->held) {
		s->held = false;
		daemon_release();
	}
}

static void
smtp_session_free(struct smtp_session *s)
{
	uint64_t ms = (mx_now_usec() - s->started) / 1000u;

	log_info("event=smtp_disconnect id=%08x client=%s messages=%u bytes_in=%llu "
	    "duration_ms=%llu reason=%s", s->id, s->client_ip, s->messages,
	    (unsigned long long)s->bytes_in, (unsigned long long)ms,
	    s->close_reason ? s->close_reason : "closed");
	smtp_txn_reset(s);
	if (s->ev_timer != NULL)
		event_free(s->ev_timer);
	if (s->io != NULL)
		io_free(&s->io);
	if (s->counted_client)
		client_limits_release(limits, (struct sockaddr *)&s->client);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	active--;
	/* Last: releasing the final hold may end the loop at shutdown. */
	if (s->held) {
		s->held = false;
		free(s);
		daemon_release();
		return;
	}
	free(s);
}

/* The client broke RFC 2920 (or talked before our greeting): refuse it. */
static void
smtp_sync_violation(struct smtp_session *s, const char *where)
{
	(*c_sync_violation)++;
	log_info("event=smtp_sync_violation id=%08x qid=%s client=%s after=%s", s->id,
	    smtp_qid(s), s->client_ip, where);
	smtp_reply(s, "554 5.5.0 %s Error: SMTP protocol synchronization", mxd->conf->hostname);
	smtp_close(s, "sync_violation");
}

/* ---- Commands ------------------------------------------------------------ */

static void
smtp_cmd_helo(struct smtp_session *s, const struct smtp_command *c)
{
	const struct conf *cf = mxd->conf;
	char safe[LOG_SAFE_MAX];
	size_t i;

	/* The name goes into the spool and a header: no control octets. */
	for (i = 0; i < c->arg.len; i++)
		if (c->arg.ptr[i] < 0x20 || c->arg.ptr[i] == 0x7f)
			break;
	if (i < c->arg.len || c->arg.len > QUEUE_HELO_MAX) {
		smtp_reply(s, "501 5.5.2 Error: invalid %s name",
		    c->cmd == SMTP_CMD_EHLO ? "EHLO" : "HELO");
		smtp_error_count(s);
		return;
	}
	/* A new EHLO ends any transaction (RFC 5321 §4.1.4). */
	smtp_txn_reset(s);
	memcpy(s->helo, c->arg.ptr, c->arg.len);
	s->helo[c->arg.len] = '\0';
	s->helo_ok = c->helo_valid;
	s->esmtp = c->cmd == SMTP_CMD_EHLO;
	log_debug("event=smtp_helo id=%08x cmd=%s helo=%s valid=%s", s->id,
	    smtp_cmd_name(c->cmd), log_safe(safe, sizeof(safe), c->arg.ptr, c->arg.len),
	    c->helo_valid ? "yes" : "no");
	smtp_enter_state(s, SMTP_ST_READY);
	if (!s->esmtp) {
		smtp_reply(s, "250 %s", cf->hostname);
		return;
	}
	smtp_reply(s, "250-%s", cf->hostname);
	smtp_reply(s, "250-PIPELINING");
	smtp_reply(s, "250-SIZE %llu", cf->smtp_max_message_size);
	if (smtp_creds != NULL && !s->tls)
		smtp_reply(s, "250-STARTTLS");
	smtp_reply(s, "250-8BITMIME");
	smtp_reply(s, "250-ENHANCEDSTATUSCODES");
	smtp_reply(s, "250-SMTPUTF8");
	smtp_reply(s, "250 DSN");
}

static void
smtp_cmd_mail(struct smtp_session *s, const struct smtp_command *c)
{
	const struct conf *cf = mxd->conf;
	const struct smtp_params *p = &c->params;
	char safe[LOG_SAFE_MAX];
	unsigned long long need;
	long long avail;

	if ((p->present & SMTP_PARAM_SIZE) && p->size > cf->smtp_max_message_size) {
		(*c_rejected_size)++;
		smtp_reply(s, "552 5.3.4 Error: message size exceeds fixed limit");
		smtp_error_count(s);
		return;
	}
	/* Enough room for this message and the reserve (PITFALLS 20)? */
	need = cf->smtp_min_free_space;
	if ((p->present & SMTP_PARAM_SIZE) && p->size < UINT64_MAX - need)
		need += p->size;
	avail = queue_free_space();
	if (avail < 0 || (unsigned long long)avail < need) {
		(*c_rejected_space)++;
		log_warnx("event=smtp_insufficient_space id=%08x free=%lld needed=%llu", s->id,
		    avail, need);
		if (avail < 0)
			smtp_reply(s, "451 4.3.0 Error: cannot check the queue's free space");
		else
			smtp_reply(s, "452 4.3.1 Error: insufficient system storage");
		smtp_error_count(s);
		return;
	}
	queue_envelope_init(&s->env);
	if (smtp_path_format(&c->path, s->env.sender, sizeof(s->env.sender)) == -1 ||
	    queue_id_generate(s->env.id) == -1) {
		queue_envelope_clear(&s->env);
		log_warnx("event=smtp_mail_failed id=%08x", s->id);
		smtp_reply(s, "451 4.3.0 Error: local error in processing");
		smtp_error_count(s);
		return;
	}
	s->env.smtputf8 = (p->present & SMTP_PARAM_SMTPUTF8) != 0;
	s->env.body = p->body == SMTP_BODY_8BITMIME ? QUEUE_BODY_8BITMIME :
	    p->body == SMTP_BODY_7BIT ? QUEUE_BODY_7BIT : QUEUE_BODY_NONE;
	s->env.ret = p->ret == SMTP_RET_FULL ? QUEUE_RET_FULL :
	    p->ret == SMTP_RET_HDRS ? QUEUE_RET_HDRS : QUEUE_RET_NONE;
	if (p->present & SMTP_PARAM_ENVID)
		mx_strlcpy(s->env.envid, p->envid, sizeof(s->env.envid));
	s->env.size = (p->present & SMTP_PARAM_SIZE) ? p->size : 0;
	s->size_limit = cf->smtp_max_message_size;
	smtp_enter_state(s, SMTP_ST_MAIL);
	log_info("event=smtp_mail id=%08x qid=%s from=<%s> size=%llu body=%s smtputf8=%s",
	    s->id, s->env.id, log_safe(safe, sizeof(safe), s->env.sender,
	    strlen(s->env.sender)), (unsigned long long)s->env.size,
	    s->env.body == QUEUE_BODY_8BITMIME ? "8bitmime" :
	    s->env.body == QUEUE_BODY_7BIT ? "7bit" : "-", s->env.smtputf8 ? "yes" : "no");
	smtp_reply(s, "250 2.1.0 Ok");
}

static void
smtp_rcpt_refuse(struct smtp_session *s, const char *addr, const char *reason)
{
	char safe[LOG_SAFE_MAX];

	(*c_rejected_relay)++;
	log_info("event=smtp_rcpt_rejected id=%08x qid=%s client=%s to=<%s> reason=%s",
	    s->id, smtp_qid(s), s->client_ip, log_safe(safe, sizeof(safe), addr, strlen(addr)),
	    reason);
	smtp_reply(s, "554 5.7.1 <%s>: Relay access denied", addr);
	smtp_error_count(s);
}

static void
smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_command *c)
{
	const struct conf *cf = mxd->conf;
	const struct domain *d;
	struct queue_rcpt *r;
	char addr[SMTP_MAILBOX_MAX + 1], safe[LOG_SAFE_MAX];
	unsigned long long max_rcpts, limit;
	unsigned int relay;
	size_t i;

	if (smtp_path_format(&c->path, addr, sizeof(addr)) == -1) {
		smtp_reply(s, "501 5.1.3 Error: bad recipient address");
		smtp_error_count(s);
		return;
	}
	/* Whatever the syntax means to someone else, we relay none of it (PITFALLS 15). */
	if (c->path.postmaster || c->path.kind != SMTP_DOMAIN_NAME) {
		smtp_rcpt_refuse(s, addr, c->path.postmaster ? "no_domain" : "address_literal");
		return;
	}
	if ((relay = smtp_path_relay_flags(&c->path)) != 0) {
		smtp_rcpt_refuse(s, addr, relay & SMTP_RELAY_PERCENT ? "percent_hack" :
		    relay & SMTP_RELAY_BANG ? "bang_path" : relay & SMTP_RELAY_QUOTED ?
		    "quoted_local_part" : relay & SMTP_RELAY_ROUTE ? "source_route" :
		    "address_literal");
		return;
	}
	/* Only explicit registration counts, never an MX pointing at us (PITFALLS 16). */
	d = domain_table_exact(mxd->domains, c->path.domain, c->path.domain_len);
	if (d == NULL) {
		smtp_rcpt_refuse(s, addr, "domain_not_registered");
		return;
	}
	max_rcpts = (unsigned long long)cf->smtp_max_recipients;
	if (max_rcpts > QUEUE_RCPT_MAX)
		max_rcpts = QUEUE_RCPT_MAX;
	if (s->env.nrcpts >= max_rcpts) {
		/* Not an error: the client sends the rest in another transaction. */
		(*c_too_many_rcpts)++;
		log_info("event=smtp_rcpt_deferred id=%08x qid=%s reason=too_many_recipients "
		    "max=%llu", s->id, smtp_qid(s), max_rcpts);
		smtp_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	limit = d->size_limit != 0 && d->size_limit < cf->smtp_max_message_size ?
	    d->size_limit : cf->smtp_max_message_size;
	if (s->env.size > limit) {
		(*c_rejected_size)++;
		smtp_reply(s, "552 5.3.4 <%s>: Message size exceeds the limit for this domain",
		    addr);
		smtp_error_count(s);
		return;
	}
	for (i = 0; i < s->env.nrcpts; i++)
		if (strcmp(s->env.rcpts[i].addr, addr) == 0)
			break;
	if (i == s->env.nrcpts) {
		if ((r = queue_envelope_add_rcpt(&s->env)) == NULL) {
			smtp_reply(s, "451 4.3.0 Error: local error in processing");
			smtp_error_count(s);
			return;
		}
		mx_strlcpy(r->addr, addr, sizeof(r->addr));
		if (c->params.present & SMTP_PARAM_ORCPT)
			mx_strlcpy(r->orcpt, c->params.orcpt, sizeof(r->orcpt));
		if (c->params.notify & SMTP_NOTIFY_NEVER)
			r->notify |= QUEUE_NOTIFY_NEVER;
		if (c->params.notify & SMTP_NOTIFY_SUCCESS)
			r->notify |= QUEUE_NOTIFY_SUCCESS;
		if (c->params.notify & SMTP_NOTIFY_FAILURE)
			r->notify |= QUEUE_NOTIFY_FAILURE;
		if (c->params.notify & SMTP_NOTIFY_DELAY)
			r->notify |= QUEUE_NOTIFY_DELAY;
		r->state = QUEUE_RCPT_PENDING;
		(*c_rcpts)++;
	}
	if (limit < s->size_limit)
		s->size_limit = limit;
	smtp_enter_state(s, SMTP_ST_RCPT);
	log_info("event=smtp_rcpt id=%08x qid=%s to=<%s> domain=%s", s->id, s->env.id,
	    log_safe(safe, sizeof(safe), addr, strlen(addr)), d->name);
	smtp_reply(s, "250 2.1.5 Ok");
}

/* "Received:" as RFC 5321 §4.4 has it, with the TLS details as a comment. */
static int
smtp_received_header(struct smtp_session *s, struct mx_buf *b)
{
	const struct conf *cf = mxd->conf;
	char helo[QUEUE_HELO_MAX + 1], date[64], tlsinfo[QUEUE_TLS_MAX * 2 + 32];
	const char *proto;
	struct tm tm;
	time_t now = (time_t)s->env.arrival;
	size_t i;

	/* An invalid name goes inside the comment, where only ( ) \ would matter. */
	for (i = 0; s->helo[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)s->helo[i];

		helo[i] = (ch < 0x21 || ch > 0x7e || ch == '(' || ch == ')' || ch == '\\') ?
		    '_' : (char)ch;
	}
	helo[i] = '\0';
	if (localtime_r(&now, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
		return -1;
	if (s->env.smtputf8)
		proto = s->tls ? "UTF8SMTPS" : s->esmtp ? "UTF8SMTP" : "SMTP";
	else
		proto = s->tls ? "ESMTPS" : s->esmtp ? "ESMTP" : "SMTP";
	tlsinfo[0] = '\0';
	if (s->tls && io_tls_info(s->io, tlsinfo + 1, sizeof(tlsinfo) - 3) == 0) {
		tlsinfo[0] = '(';
		i = strlen(tlsinfo);
		tlsinfo[i] = ')';
		tlsinfo[i + 1] = '\0';
	}
	if (mx_buf_printf(b, "Received: from %s (%s%s [%s%s])\r\n", s->helo_ok ? helo : "unknown",
	    s->helo_ok ? "" : "helo=", s->helo_ok ? "unknown" : helo,
	    strchr(s->client_ip, ':') != NULL ? "IPv6:" : "",
	    s->client_ip) == -1 ||
	    mx_buf_printf(b, "\tby %s (mxedge) with %s%s%s id %s", cf->hostname, proto,
	    tlsinfo[0] ? " " : "", tlsinfo, s->env.id) == -1)
		return -1;
	if (s->env.nrcpts == 1 &&
	    mx_buf_printf(b, "\r\n\tfor <%s>", s->env.rcpts[0].addr) == -1)
		return -1;
	return mx_buf_printf(b, ";\r\n\t%s\r\n", date);
}

static void
smtp_data_emit(void *arg, const unsigned char *p, size_t len)
{
	struct smtp_session *s = arg;

	if (s->writer != NULL && (s->data.flags & SMTP_DATA_REJECT) == 0)
		queue_writer_body(s->writer, p, len);
}

static void
smtp_cmd_data(struct smtp_session *s, const struct smtp_command *c)
{
	struct mx_buf hdr;
	const char *v, *ci;

	s->env.arrival = mx_time_now();
	s->env.next_attempt = s->env.arrival;
	mx_strlcpy(s->env.client_addr, s->client_ip, sizeof(s->env.client_addr));
	mx_strlcpy(s->env.helo, s->helo, sizeof(s->env.helo));
	if (s->tls && (v = io_tls_version_name(s->io)) != NULL &&
	    (ci = io_tls_cipher_name(s->io)) != NULL) {
		mx_strlcpy(s->env.tls_version, v, sizeof(s->env.tls_version));
		mx_strlcpy(s->env.tls_cipher, ci, sizeof(s->env.tls_cipher));
	}
	mx_buf_init(&hdr, SMTP_HDR_MAX);
	if (smtp_received_header(s, &hdr) == -1 ||
	    (s->writer = queue_writer_open(&s->env)) == NULL) {
		(*c_queue_failed)++;
		log_warnx("event=smtp_queue_open_failed id=%08x qid=%s errno=%d", s->id,
		    s->env.id, errno);
		mx_buf_free(&hdr);
		smtp_reply(s, "451 4.3.0 Error: queue file write error");
		smtp_txn_end(s);
		smtp_error_count(s);
		return;
	}
	queue_writer_body(s->writer, hdr.data, hdr.len);
	mx_buf_free(&hdr);
	smtp_data_init(&s->data, s->size_limit, smtp_data_emit, s);
	smtp_enter_state(s, SMTP_ST_DATA);
	io_set_timeout(s->io, (int)mxd->conf->smtp_timeout_data);
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void
smtp_cmd_rset(struct smtp_session *s, const struct smtp_command *c)
{
	if (s->state != SMTP_ST_HELO)
		smtp_txn_end(s);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_cmd_noop(struct smtp_session *s, const struct smtp_command *c)
{
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_cmd_quit(struct smtp_session *s, const struct smtp_command *c)
{
	smtp_reply(s, "221 2.0.0 Bye");
	smtp_close(s, "quit");
}

static void
smtp_cmd_vrfy(struct smtp_session *s, const struct smtp_command *c)
{
	smtp_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void
smtp_cmd_expn(struct smtp_session *s, const struct smtp_command *c)
{
	smtp_reply(s, "502 5.5.1 Error: command not implemented");
	smtp_error_count(s);
}

static void
smtp_cmd_help(struct smtp_session *s, const struct smtp_command *c)
{
	smtp_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY%s HELP",
	    smtp_creds != NULL && !s->tls ? " STARTTLS" : "");
}

static void
smtp_cmd_unsupported(struct smtp_session *s, const struct smtp_command *c)
{
	smtp_reply(s, "502 5.5.1 Error: command not implemented");
	smtp_error_count(s);
}

static void
smtp_cmd_starttls(struct smtp_session *s, const struct smtp_command *c)
{
	size_t discarded = 0;

	if (s->tls) {
		smtp_reply(s, "554 5.5.1 Error: TLS already active");
		smtp_error_count(s);
		return;
	}
	if (smtp_creds == NULL) {
		smtp_reply(s, "454 4.7.0 TLS not available");
		smtp_error_count(s);
		return;
	}
	/* Nothing said before the handshake survives it (RFC 3207 §4.2). */
	smtp_txn_reset(s);
	s->esmtp = false;
	s->helo_ok = false;
	s->helo[0] = '\0';
	smtp_reply(s, "220 2.0.0 Ready to start TLS");
	smtp_enter_state(s, SMTP_ST_TLS);
	io_set_handshake_timeout(s->io, (int)mxd->conf->smtp_timeout_command);
	if (io_start_tls_server(s->io, smtp_creds, &discarded) == -1) {
		(*c_tls_failed)++;
		log_warnx("event=smtp_tls_failed id=%08x client=%s error=\"%s\"", s->id,
		    s->client_ip, io_error_string(s->io));
		smtp_close(s, "tls_failed");
		return;
	}
	(*c_starttls)++;
	if (discarded > 0) {
		/* STARTTLS command injection (CVE-2011-0411): never executed. */
		(*c_tls_discarded)++;
		log_warnx("event=smtp_starttls_plaintext_discarded id=%08x client=%s bytes=%zu",
		    s->id, s->client_ip, discarded);
	}
}

/* ---- Input --------------------------------------------------------------- */

static const struct smtp_cmd_entry *
smtp_cmd_lookup(enum smtp_cmd cmd)
{
	size_t i;

	for (i = 0; i < MX_NELEM(smtp_cmd_table); i++)
		if (smtp_cmd_table[i].cmd == cmd)
			return &smtp_cmd_table[i];
	return NULL;
}

/* The answer to a command that is valid but not now. */
static void
smtp_wrong_state(struct smtp_session *s, enum smtp_cmd cmd)
{
	if (s->state == SMTP_ST_HELO)
		smtp_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
	else if (cmd == SMTP_CMD_MAIL)
		smtp_reply(s, "503 5.5.1 Error: nested MAIL command");
	else if (cmd == SMTP_CMD_RCPT)
		smtp_reply(s, "503 5.5.1 Error: need MAIL command");
	else if (cmd == SMTP_CMD_DATA && s->state == SMTP_ST_MAIL)
		smtp_reply(s, "554 5.5.1 Error: no valid recipients");
	else if (cmd == SMTP_CMD_DATA)
		smtp_reply(s, "503 5.5.1 Error: need RCPT command");
	else
		smtp_reply(s, "503 5.5.1 Error: bad sequence of commands");
	smtp_error_count(s);
}

static void
smtp_command(struct smtp_session *s, const char *line, size_t len, bool more)
{
	const struct smtp_cmd_entry *e;
	struct smtp_command c;
	struct smtp_parse_error err;
	unsigned int flags = s->env.smtputf8 ? SMTP_PARSE_SMTPUTF8 : 0;
	int r;

	r = smtp_command_parse(line, len, flags, &c, &err);
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char safe[LOG_SAFE_MAX];

		log_debug("event=smtp_command id=%08x qid=%s line=%s", s->id, smtp_qid(s),
		    log_safe(safe, sizeof(safe), line, len));
	}
	if (c.cmd == SMTP_CMD_UNKNOWN || (e = smtp_cmd_lookup(c.cmd)) == NULL) {
		smtp_reply(s, "500 5.5.2 Error: command not recognized");
		smtp_error_count(s);
		return;
	}
	/*
	 * RFC 2920 §3.1: these end a group, and without PIPELINING every
	 * command does.  Bytes already waiting were sent without our reply.
	 */
	if (more && c.cmd != SMTP_CMD_QUIT && ((e->flags & SMTP_CF_SYNC) || !s->esmtp)) {
		smtp_sync_violation(s, smtp_cmd_name(c.cmd));
		return;
	}
	if ((e->states & ST(s->state)) == 0) {
		smtp_wrong_state(s, c.cmd);
		return;
	}
	if (r == -1) {
		smtp_reply(s, "%d %s Error: %s", err.code, err.status, err.text);
		smtp_error_count(s);
		return;
	}
	e->proceed(s, &c);
}

static void
smtp_bad_line(struct smtp_session *s, unsigned int errors)
{
	(*c_bad_lines)++;
	log_info("event=smtp_bad_line id=%08x qid=%s client=%s reason=%s", s->id, smtp_qid(s),
	    s->client_ip, errors & SMTP_LINE_TOO_LONG ? "too_long" :
	    errors & SMTP_LINE_BARE_LF ? "bare_lf" : errors & SMTP_LINE_BARE_CR ? "bare_cr" :
	    "nul");
	if (errors & SMTP_LINE_TOO_LONG)
		smtp_reply(s, "500 5.5.2 Error: line too long");
	else
		smtp_reply(s, "500 5.5.2 Error: bare CR, bare LF or NUL in command line");
	smtp_error_count(s);
}

/* One command line from the input, if a whole one is there.  Returns false to stop. */
static bool
smtp_command_input(struct smtp_session *s)
{
	struct evbuffer *in = io_input(s->io);
	char copy[SMTP_COMMAND_MAX];
	enum smtp_line_result r;
	struct mx_view line;
	unsigned int errors;
	size_t have = evbuffer_get_length(in), take, consumed;
	unsigned char *p;
	bool more;

	if (have == 0)
		return false;
	take = have < SMTP_PULLUP ? have : SMTP_PULLUP;
	if ((p = evbuffer_pullup(in, (ev_ssize_t)take)) == NULL) {
		s->close_reason = "out_of_memory";
		smtp_kill(s);
		return false;
	}
	r = smtp_line_next(&s->lines, p, take, &line, &consumed, &errors);
	/* Copy before draining: the command must not point into the buffer. */
	if (r == SMTP_LINE_OK)
		memcpy(copy, line.ptr, line.len);
	more = have > consumed;
	s->bytes_in += consumed;
	io_drain(s->io, consumed);
	switch (r) {
	case SMTP_LINE_MORE:
		return consumed > 0;
	case SMTP_LINE_BAD:
		smtp_bad_line(s, errors);
		return true;
	case SMTP_LINE_OK:
		smtp_command(s, copy, line.len, more);
		return true;
	}
	return false;
}

static void
smtp_commit_done(bool ok, const char *id, void *arg)
{
	struct smtp_session *s = arg;
	char safe[LOG_SAFE_MAX];

	if (ok) {
		(*c_accepted)++;
		s->messages++;
		log_info("event=smtp_queued id=%08x qid=%s client=%s from=<%s> rcpts=%zu size=%llu "
		    "tls=%s", s->id, s->env.id, s->client_ip,
		    log_safe(safe, sizeof(safe), s->env.sender, strlen(s->env.sender)),
		    s->env.nrcpts, (unsigned long long)s->data.size,
		    s->env.tls_version[0] ? s->env.tls_version : "no");
	} else {
		(*c_queue_failed)++;
		log_warnx("event=smtp_queue_failed id=%08x qid=%s client=%s", s->id, s->env.id,
		    s->client_ip);
	}
	if (s->gone) {
		/* The 250 has nobody to go to: the sender will retry (a duplicate). */
		if (ok)
			log_warnx("event=smtp_reply_lost id=%08x qid=%s", s->id, s->env.id);
		s->close_reason = "client_gone_during_commit";
		smtp_session_free(s);
		return;
	}
	if (ok)
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->env.id);
	else
		smtp_reply(s, "451 4.3.0 Error: queue file write error");
	smtp_txn_end(s);
	if (mxd->stopping) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down", mxd->conf->hostname);
		smtp_close(s, "shutdown");
		return;
	}
	smtp_unhold(s);
	if (!ok)
		smtp_error_count(s);
	if (s->state == SMTP_ST_READY) {
		/* Commands pipelined after the final dot run now (io redelivers them). */
		io_resume_read(s->io);
	}
}

/* The real end of the message: judge it, then commit or reject. */
static void
smtp_data_end(struct smtp_session *s)
{
	unsigned int f = s->data.flags;
	const char *reason = NULL;

	io_set_timeout(s->io, (int)mxd->conf->smtp_timeout_command);
	*c_bytes += s->data.size;
	if (f & SMTP_DATA_TOO_BIG) {
		(*c_rejected_size)++;
		reason = "too_big";
		smtp_reply(s, "552 5.3.4 Error: message too big");
	} else if (f & (SMTP_DATA_BARE_CR | SMTP_DATA_BARE_LF)) {
		/* SMTP smuggling (PITFALLS 10): never repaired, never split. */
		(*c_rejected_bare_newline)++;
		reason = f & SMTP_DATA_BARE_LF ? "bare_lf" : "bare_cr";
		smtp_reply(s, "550 5.6.0 Error: bare CR or LF in message; only CRLF ends a line");
	} else if (f & SMTP_DATA_LINE_TOO_LONG) {
		(*c_rejected_long_line)++;
		reason = "line_too_long";
		smtp_reply(s, "550 5.6.0 Error: message has a line longer than 1000 octets");
	} else if (s->data.received > SMTP_MAX_HOPS) {
		(*c_rejected_loop)++;
		reason = "too_many_hops";
		smtp_reply(s, "554 5.4.6 Error: too many hops (mail loop?)");
	} else if (s->writer == NULL) {
		(*c_queue_failed)++;
		reason = "no_writer";
		smtp_reply(s, "451 4.3.0 Error: queue file write error");
	}
	if (reason != NULL) {
		log_info("event=smtp_message_rejected id=%08x qid=%s client=%s reason=%s size=%llu "
		    "received=%u", s->id, s->env.id, s->client_ip, reason,
		    (unsigned long long)s->data.size, s->data.received);
		smtp_txn_end(s);
		smtp_error_count(s);
		return;
	}
	/* Read nothing more until the spool answers: this is RFC 2920's sync point. */
	smtp_enter_state(s, SMTP_ST_COMMIT);
	io_pause_read(s->io);
	smtp_hold(s);
	queue_writer_commit(s->writer, smtp_commit_done, s);
	s->writer = NULL;
}

static void
smtp_data_input(struct smtp_session *s)
{
	struct evbuffer *in = io_input(s->io);
	struct evbuffer_iovec v[8];
	size_t total, used;
	bool done;
	int i, n;

	while (s->state == SMTP_ST_DATA && evbuffer_get_length(in) > 0) {
		n = evbuffer_peek(in, -1, NULL, v, (int)MX_NELEM(v));
		if (n > (int)MX_NELEM(v))
			n = (int)MX_NELEM(v);
		total = 0;
		done = false;
		for (i = 0; i < n && !done; i++) {
			done = smtp_data_feed(&s->data, v[i].iov_base, v[i].iov_len, &used) ==
			    SMTP_DATA_DONE;
			total += used;
		}
		/* A message we will refuse stops taking disk space at once. */
		if (s->writer != NULL && (s->data.flags & SMTP_DATA_REJECT) != 0)
			queue_writer_abort(&s->writer);
		s->bytes_in += total;
		io_drain(s->io, total);
		if (done)
			smtp_data_end(s);
	}
}

static void
smtp_input(struct smtp_session *s)
{
	for (;;) {
		switch (s->state) {
		case SMTP_ST_GREETING:
			(*c_pregreet)++;
			smtp_sync_violation(s, "connect");
			return;
		case SMTP_ST_HELO:
		case SMTP_ST_READY:
		case SMTP_ST_MAIL:
		case SMTP_ST_RCPT:
			if (!smtp_command_input(s))
				return;
			break;
		case SMTP_ST_DATA:
			smtp_data_input(s);
			if (s->state == SMTP_ST_DATA)
				return;
			break;
		case SMTP_ST_CLOSING:
			(void)evbuffer_drain(io_input(s->io), evbuffer_get_length(io_input(s->io)));
			return;
		case SMTP_ST_COMMIT:
		case SMTP_ST_TLS:
		case SMTP_ST_MAX:
			return;
		}
	}
}

/* ---- Events -------------------------------------------------------------- */

static void
smtp_timeout(struct smtp_session *s)
{
	if (s->state == SMTP_ST_CLOSING || s->state == SMTP_ST_TLS ||
	    io_output_pending(s->io) > 0) {
		/* Closing already, a dead handshake, or a client that reads nothing. */
		log_info("event=smtp_timeout id=%08x qid=%s client=%s state=%s error=\"%s\"",
		    s->id, smtp_qid(s), s->client_ip, state_names[s->state],
		    io_error_string(s->io));
		if (s->state != SMTP_ST_CLOSING) {
			(*c_timeouts)++;
			s->close_reason = "timeout";
		}
		smtp_session_free(s);
		return;
	}
	(*c_timeouts)++;
	log_info("event=smtp_timeout id=%08x qid=%s client=%s state=%s", s->id, smtp_qid(s),
	    s->client_ip, state_names[s->state]);
	smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", mxd->conf->hostname);
	smtp_close(s, "timeout");
}

static void
smtp_io_event(struct io *io, enum io_event ev, void *arg)
{
	struct smtp_session *s = arg;

	switch (ev) {
	case IO_EV_DATA:
		smtp_input(s);
		break;
	case IO_EV_DRAINED:
		if (s->state == SMTP_ST_CLOSING && s->peer_closed)
			smtp_session_free(s);
		break;
	case IO_EV_CONNECTED:
		break;
	case IO_EV_TLS_READY:
		s->tls = true;
		log_info("event=smtp_tls id=%08x client=%s version=%s cipher=%s", s->id,
		    s->client_ip, io_tls_version_name(io) ? io_tls_version_name(io) : "-",
		    io_tls_cipher_name(io) ? io_tls_cipher_name(io) : "-");
		smtp_line_init(&s->lines, SMTP_COMMAND_MAX);
		smtp_enter_state(s, SMTP_ST_HELO);
		break;
	case IO_EV_TIMEOUT:
		smtp_timeout(s);
		break;
	case IO_EV_CLOSED:
	case IO_EV_ERROR:
		if (ev == IO_EV_CLOSED && s->state == SMTP_ST_CLOSING && io_output_pending(io) > 0) {
			/* A client that sent QUIT and its FIN at once still gets the 221. */
			s->peer_closed = true;
			break;
		}
		if (s->state == SMTP_ST_TLS) {
			(*c_tls_failed)++;
			log_info("event=smtp_tls_failed id=%08x client=%s error=\"%s\"", s->id,
			    s->client_ip, io_error_string(io));
		}
		if (s->state != SMTP_ST_CLOSING)
			s->close_reason = ev == IO_EV_CLOSED ? "client_closed" : "io_error";
		if (s->state == SMTP_ST_COMMIT) {
			/* The spool still owns a callback to us: wait for it. */
			s->gone = true;
			io_free(&s->io);
			return;
		}
		smtp_session_free(s);
		break;
	}
}

static void
smtp_greet(struct smtp_session *s)
{
	const struct conf *cf = mxd->conf;

	smtp_enter_state(s, SMTP_ST_HELO);
	smtp_reply(s, "220 %s ESMTP%s%s", cf->hostname, cf->smtp_banner[0] ? " " : "",
	    cf->smtp_banner);
}

static void
smtp_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	if (s->dying)
		smtp_session_free(s);
	else if (s->state == SMTP_ST_GREETING)
		smtp_greet(s);
}

/* Refuse without a session: one best-effort line, then close. */
static void
smtp_refuse(int fd, const char *code, const char *text)
{
	char line[512];
	int n;

	n = snprintf(line, sizeof(line), "%s %s %s\r\n", code, mxd->conf->hostname, text);
	if (n > 0 && (size_t)n < sizeof(line) &&
	    send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("event=smtp_refuse_send_failed errno=%d", errno);
	close(fd);
}

static void
smtp_accept(int fd, struct sockaddr *sa, socklen_t salen, void *arg)
{
	static const struct io_callbacks cb = { smtp_io_event };
	const struct conf *cf = mxd->conf;
	struct smtp_session *s;
	char client[ADDR_STR_MAX];
	int one = 1;
	bool early;
	char peek;

	(*c_sessions)++;
	if (mxd->stopping) {
		smtp_refuse(fd, "421 4.3.2", "Service shutting down");
		return;
	}
	if ((long long)active >= cf->smtp_max_connections) {
		(*c_refused_total)++;
		log_warnx("event=smtp_refused reason=max_connections client=%s active=%zu",
		    addr_format(sa, client, sizeof(client)), active);
		smtp_refuse(fd, "421 4.3.2", "Error: too many connections");
		return;
	}
	if (client_limits_acquire(limits, sa, (size_t)cf->smtp_max_per_client) == -1) {
		(*c_refused_client)++;
		log_warnx("event=smtp_refused reason=max_per_client client=%s",
		    addr_format(sa, client, sizeof(client)));
		smtp_refuse(fd, "421 4.7.0", "Error: too many connections from your address");
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		client_limits_release(limits, sa);
		close(fd);
		return;
	}
	s->counted_client = true;
	s->id = ++next_id;
	s->started = mx_now_usec();
	if (salen > sizeof(s->client))
		salen = sizeof(s->client);
	memcpy(&s->client, sa, salen);
	s->clientlen = salen;
	addr_format_ip(sa, s->client_ip, sizeof(s->client_ip));
	smtp_line_init(&s->lines, SMTP_COMMAND_MAX);
	queue_envelope_init(&s->env);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A client that talks before it could have seen any greeting (postscreen's PREGREET). */
	early = recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
	if ((s->ev_timer = evtimer_new(mxd->base, smtp_timer_cb, s)) == NULL ||
	    (s->io = io_new(mxd->base, fd, &cb, s)) == NULL) {
		if (s->ev_timer != NULL)
			event_free(s->ev_timer);
		log_warn("event=smtp_session_failed client=%s", s->client_ip);
		client_limits_release(limits, sa);
		free(s);
		close(fd);
		return;
	}
	active++;
	s->next = sessions;
	if (sessions != NULL)
		sessions->prev = s;
	sessions = s;
	io_set_timeout(s->io, (int)cf->smtp_timeout_command);
	io_set_write_timeout(s->io, (int)cf->smtp_timeout_command);
	log_info("event=smtp_connect id=%08x client=%s", s->id,
	    addr_format(sa, client, sizeof(client)));
	if (early) {
		(*c_pregreet)++;
		smtp_sync_violation(s, "connect");
		return;
	}
	if (cf->smtp_greet_delay > 0) {
		struct timeval tv = { (time_t)cf->smtp_greet_delay, 0 };

		if (evtimer_add(s->ev_timer, &tv) == 0)
			return;
	}
	smtp_greet(s);
}

/* ---- Module -------------------------------------------------------------- */

/*
 * Load the certificate and key.  A missing certificate file means "no
 * STARTTLS" (logged); anything else that fails is an error.
 */
static int
smtp_creds_load(struct tls_creds **out, char *err, size_t errsize)
{
	const struct conf *cf = mxd->conf;
	struct stat st;

	*out = NULL;
	if (stat(cf->tls_certificate, &st) == -1 && errno == ENOENT) {
		log_warnx("event=smtp_tls_disabled reason=\"%s does not exist: STARTTLS is not "
		    "offered\"", cf->tls_certificate);
		return 0;
	}
	*out = tls_creds_load_server(cf->tls_certificate, cf->tls_key, cf->tls_priority, err,
	    errsize);
	return *out == NULL ? -1 : 0;
}

void
smtp_preinit(void)
{
	char err[512];

	if (mxd->conf->n_smtp_listen == 0)
		return;
	if (smtp_creds_load(&smtp_creds, err, sizeof(err)) == -1)
		log_fatalx("STARTTLS credentials: %s", err);
	if (smtp_creds != NULL)
		log_info("event=smtp_tls_loaded certificate=%s", mxd->conf->tls_certificate);
}

static int
smtp_start(void)
{
	int i;

	c_sessions = stats_counter("smtp.sessions");
	c_refused_total = stats_counter("smtp.refused_max_connections");
	c_refused_client = stats_counter("smtp.refused_max_per_client");
	c_pregreet = stats_counter("smtp.pregreet");
	c_sync_violation = stats_counter("smtp.sync_violations");
	c_starttls = stats_counter("smtp.starttls");
	c_tls_failed = stats_counter("smtp.tls_failed");
	c_tls_discarded = stats_counter("smtp.starttls_plaintext_discarded");
	c_accepted = stats_counter("smtp.messages_accepted");
	c_queue_failed = stats_counter("smtp.queue_failed");
	c_rejected_relay = stats_counter("smtp.rejected_relay");
	c_rejected_size = stats_counter("smtp.rejected_size");
	c_rejected_bare_newline = stats_counter("smtp.rejected_bare_newline");
	c_rejected_long_line = stats_counter("smtp.rejected_long_line");
	c_rejected_loop = stats_counter("smtp.rejected_loop");
	c_rejected_space = stats_counter("smtp.rejected_free_space");
	c_too_many_rcpts = stats_counter("smtp.too_many_recipients");
	c_rcpts = stats_counter("smtp.recipients_accepted");
	c_timeouts = stats_counter("smtp.timeouts");
	c_too_many_errors = stats_counter("smtp.too_many_errors");
	c_bytes = stats_counter("smtp.bytes_received");
	c_bad_lines = stats_counter("smtp.bad_lines");
	if ((limits = client_limits_new()) == NULL)
		return -1;
	for (i = 0; i < mxd->conf->n_smtp_listen; i++) {
		listeners[nlisteners].l = listener_new(mxd->base, mxd->smtp_fds[i], smtp_accept,
		    &listeners[nlisteners], "smtp");
		if (listeners[nlisteners].l == NULL)
			return -1;
		nlisteners++;
	}
	return 0;
}

/*
 * New certificates for new STARTTLS sessions; sessions in TLS keep theirs.
 * After the privilege drop the key must be readable by `user`: when it is
 * not, the old credentials stay (and a restart picks the new ones up).
 */
static void
smtp_reload(void)
{
	struct tls_creds *nc;
	char err[512];

	if (mxd->conf->n_smtp_listen == 0)
		return;
	if (smtp_creds_load(&nc, err, sizeof(err)) == -1) {
		log_warnx("event=smtp_tls_reload_failed error=\"%s\" keeping=%s", err,
		    smtp_creds != NULL ? "old_credentials" : "no_starttls");
		return;
	}
	tls_creds_unref(&smtp_creds);
	smtp_creds = nc;
	if (nc != NULL)
		log_info("event=smtp_tls_loaded certificate=%s", mxd->conf->tls_certificate);
}

static void
smtp_stop(void)
{
	struct smtp_session *s, *next;
	int i;

	for (i = 0; i < nlisteners; i++)
		listener_free(&listeners[i].l);
	nlisteners = 0;
	/* Sessions waiting for the spool finish first; the others are told now. */
	for (s = sessions; s != NULL; s = next) {
		next = s->next;
		if (s->state == SMTP_ST_COMMIT || s->state == SMTP_ST_CLOSING)
			continue;
		if (s->state == SMTP_ST_TLS) {
			s->close_reason = "shutdown";
			smtp_session_free(s);
			continue;
		}
		smtp_hold(s);
		smtp_reply(s, "421 4.3.2 %s Service shutting down", mxd->conf->hostname);
		smtp_close(s, "shutdown");
	}
	tls_creds_unref(&smtp_creds);
}

static int
smtp_status(struct mx_buf *json)
{
	return mx_buf_printf(json, "\"smtp\":{\"active\":%zu,\"clients\":%zu,\"listeners\":%d,"
	    "\"starttls\":%s}", active, limits ? client_limits_groups(limits) : 0, nlisteners,
	    smtp_creds != NULL ? "true" : "false");
}

const struct daemon_module smtp_module = {
	.name = "smtp",
	.start = smtp_start,
	.reload = smtp_reload,
	.stop = smtp_stop,
	.status = smtp_status,
};
