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
 * Filtering: a recipient passes our own checks, then its domain's SPF
 * policy (one check per transaction, in the SPF helper process), its
 * recipient policy (a registry list, or a probe of the primary: verify.c),
 * then the milters (milter.c); the session reads nothing while an answer
 * is pending.  The header section is held in memory (smtp_hdr.c) until its
 * end, so that our fields go on top and forged Authentication-Results
 * fields with our authserv-id are removed before anything is written.
 * Without milters the message then streams into the spool.  With milters
 * the body goes to an unlinked temporary file in the spool's tmp/ as it
 * arrives (and from there to the milters, 64 KiB at a time, while the
 * client still sends); at end of message the spool file is written from
 * the header section with the milters' changes applied and that file, so
 * memory stays bounded by the header limit whatever the message size.  The
 * whole phase after the final dot has a deadline well inside the client's
 * 10-minute DATA timeout (PITFALLS 30).  Every filter's state is dropped
 * with the transaction (PITFALLS 12).
 *
 * Failure: a broken connection is closed and logged; nothing here can
 * stop the daemon.  Every input is bounded (line lengths, recipients,
 * message size, header section, errors) and every wait has a deadline.
 */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
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
#include "dns.h"
#include "io.h"
#include "client_limits.h"
#include "listen.h"
#include "log.h"
#include "milter.h"
#include "queue.h"
#include "queue_file.h"
#include "registry.h"
#include "smtp.h"
#include "smtp_hdr.h"
#include "smtp_parse.h"
#include "spf.h"
#include "stats.h"
#include "tls.h"
#include "verify.h"

#define SMTP_CLOSE_TIMEOUT 5		/* seconds to wait for the client's FIN */
#define SMTP_RDNS_TIMEOUT 5		/* seconds for each of the PTR and forward lookups */
#define SMTP_DATA_MIN_OCTETS 2048	/* a body must bring this much per smtp_timeout_data */
#define SMTP_PULLUP 4096		/* command bytes made contiguous at once */
#define SMTP_MAX_HOPS 100		/* Received: fields (RFC 5321 §6.3) */
#define SMTP_HDR_MAX 2048		/* our Received: field */
#define SMTP_OURS_MAX 8192		/* all our fields: Received, Received-SPF, Authentication-Results */
#define SMTP_TMP_CHUNK 65536		/* body octets buffered before a write to the filter file */
/* From the final dot to our answer, milters included: well inside the client's 10 minutes. */
#define SMTP_EOM_LIMIT (MILTER_EOM_LIMIT + 60)

enum smtp_state {
	SMTP_ST_GREETING = 0,	/* connected; our 220 not sent yet */
	SMTP_ST_HELO,		/* 220 sent; HELO or EHLO expected */
	SMTP_ST_READY,		/* greeted; no transaction */
	SMTP_ST_MAIL,		/* MAIL accepted; RCPT expected */
	SMTP_ST_RCPT,		/* at least one recipient accepted */
	SMTP_ST_FILTER,		/* RCPT or DATA waits for SPF, verification or milters (not reading) */
	SMTP_ST_DATA,		/* 354 sent; reading the message */
	SMTP_ST_EOM,		/* end of data; waiting for the milters (not reading) */
	SMTP_ST_COMMIT,		/* end of data; waiting for the spool (not reading) */
	SMTP_ST_TLS,		/* STARTTLS handshake */
	SMTP_ST_CLOSING,	/* last reply queued; waiting for the client to go */
	SMTP_ST_MAX
};

static const char *const state_names[SMTP_ST_MAX] = {
	"greeting", "helo", "ready", "mail", "rcpt", "filter", "data", "eom", "commit", "tls",
	"closing"
};

#define ST(x) (1u << (x))
#define ST_GREETED (ST(SMTP_ST_READY) | ST(SMTP_ST_MAIL) | ST(SMTP_ST_RCPT))
#define ST_COMMANDS (ST(SMTP_ST_HELO) | ST_GREETED)

enum smtp_spf_state {
	SMTP_SPF_NONE = 0,	/* not asked in this transaction */
	SMTP_SPF_PENDING,
	SMTP_SPF_DONE,		/* spf_res and spf_comment hold the answer */
};

/* The checks a recipient goes through after ours, in this order. */
enum smtp_rcpt_step {
	SMTP_RC_SPF = 0,
	SMTP_RC_RECIPIENT,	/* the domain's recipient policy: list or verify */
	SMTP_RC_MILTER,
	SMTP_RC_ACCEPT,
};

/* What a check step says. */
enum smtp_check {
	SMTP_CHECK_NEXT = 0,	/* passed: on to the next step */
	SMTP_CHECK_WAIT,	/* an answer is pending; its callback goes on */
	SMTP_CHECK_DONE,	/* a reply was sent: this RCPT is over */
};

/* A recipient on its way through the checks (copied: the domain table may change). */
struct smtp_rcpt_check {
	enum smtp_rcpt_step step;
	char addr[SMTP_MAILBOX_MAX + 1];
	struct domain dom;
	unsigned long long limit;	/* the domain's size limit */
	unsigned int notify;
	bool has_orcpt;
	char orcpt[SMTP_ORCPT_MAX + 1];
	bool verified;			/* a verification answer is in verify_status */
	enum verify_status verify_status;
	bool milter_answered;		/* the milters' answer is in milter_d */
	enum milter_decision milter_d;
	char *milter_reply;
};

/* Where the milters are in the message. */
enum smtp_mf_step {
	SMTP_MF_HEADERS = 0,
	SMTP_MF_EOH,
	SMTP_MF_BODY,
	SMTP_MF_EOM,		/* end of message sent: the answer decides */
};

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
	char client_name[DNS_NAME_BUF];	/* forward-confirmed PTR name, or "" */
	struct dns_query *rdns_q;	/* the PTR or forward lookup under way */
	bool greet_delay;		/* smtp_greet_delay still running */
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

	/* The transaction: valid in MAIL, RCPT, FILTER, DATA, EOM and COMMIT. */
	struct queue_envelope env;
	uint64_t size_limit;		/* the lowest of the recipients' domain limits */
	struct queue_writer *writer;
	struct smtp_data data;
	struct smtp_hdr hdr;		/* our fields and the client's header section */

	/* Filters: the session's milter chain, and per transaction the rest. */
	struct milter_chain *milters;
	bool have_milters;		/* some milter is configured */
	struct sockaddr_storage local;	/* our address, for {if_addr} */
	enum smtp_spf_state spf_state;
	struct spf_query *spf_q;
	enum spf_res spf_res;
	bool spf_helo;			/* the HELO identity was checked */
	char spf_comment[SPF_COMMENT_MAX + 1];
	bool spf_tag;			/* an accepted recipient's domain wants the SPF fields */
	bool discard;			/* a milter said discard: answer 250, queue nothing */
	bool quarantine;		/* hold the message in the queue */
	struct verify_query *vq;
	struct smtp_rcpt_check rc;	/* the RCPT waiting in SMTP_ST_FILTER */

	/* DATA with milters: the body in a temporary file, fed to the milters. */
	bool filtering;
	int tmpfd;			/* unlinked, in spool_dir/tmp; -1 */
	struct mx_buf tmpbuf;		/* not yet written to tmpfd */
	uint64_t tmp_len;		/* body octets, written or buffered */
	uint64_t tmp_flushed;		/* body octets in the file */
	bool tmp_error;
	bool data_done;			/* the final dot was seen */
	enum smtp_mf_step mf_step;
	bool mf_busy;			/* a milter event is pending */
	size_t mf_off;			/* next header field to send, offset in hdr */
	uint64_t mf_sent;		/* body octets sent to the milters */
	enum milter_decision mf_d;	/* a decision made before end of message */
	char *mf_reply;
	struct event *ev_eom;		/* SMTP_EOM_LIMIT after the final dot */
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
    *c_rcpts, *c_timeouts, *c_too_many_errors, *c_bytes, *c_bad_lines, *c_spf_rejected,
    *c_spf_tempfailed, *c_rejected_unknown, *c_rcpt_unverified, *c_milter_rejected,
    *c_milter_tempfailed, *c_discarded, *c_quarantined, *c_authres_removed,
    *c_filter_timeouts;

static void smtp_session_free(struct smtp_session *s);
static void smtp_input(struct smtp_session *s);
static void smtp_filters_cancel(struct smtp_session *s);

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
	/* Nothing a filter says could reach the client any more. */
	smtp_filters_cancel(s);
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
	io_set_read_deadline(s->io, SMTP_CLOSE_TIMEOUT, 0);
	io_set_write_timeout(s->io, SMTP_CLOSE_TIMEOUT);
	(void)evbuffer_drain(io_input(s->io), evbuffer_get_length(io_input(s->io)));
	/* A session that was waiting (filters, spool) must see the client's FIN. */
	io_resume_read(s->io);
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

/* Every pending filter answer is dropped, and the milters forget the transaction. */
static void
smtp_filters_cancel(struct smtp_session *s)
{
	spf_cancel(&s->spf_q);
	verify_cancel(&s->vq);
	milter_chain_abort(s->milters);
	s->mf_busy = false;
	if (s->ev_eom != NULL)
		evtimer_del(s->ev_eom);
}

/* The transaction ends: nothing of it survives into the next one (PITFALLS 12). */
static void
smtp_txn_reset(struct smtp_session *s)
{
	if (s->writer != NULL)
		queue_writer_abort(&s->writer);
	smtp_filters_cancel(s);
	queue_envelope_clear(&s->env);
	memset(&s->data, 0, sizeof(s->data));
	smtp_hdr_free(&s->hdr);
	s->size_limit = 0;
	s->spf_state = SMTP_SPF_NONE;
	s->spf_tag = false;
	s->discard = false;
	s->quarantine = false;
	free(s->rc.milter_reply);
	memset(&s->rc, 0, sizeof(s->rc));
	s->filtering = false;
	if (s->tmpfd != -1) {
		close(s->tmpfd);
		s->tmpfd = -1;
	}
	mx_buf_free(&s->tmpbuf);
	s->tmp_len = s->tmp_flushed = 0;
	s->tmp_error = false;
	s->data_done = false;
	s->mf_step = SMTP_MF_HEADERS;
	s->mf_off = 0;
	s->mf_sent = 0;
	s->mf_d = MILTER_D_CONTINUE;
	free(s->mf_reply);
	s->mf_reply = NULL;
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
	dns_cancel(&s->rdns_q);
	milter_chain_free(&s->milters);
	if (s->ev_timer != NULL)
		event_free(s->ev_timer);
	if (s->ev_eom != NULL)
		event_free(s->ev_eom);
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
	milter_chain_helo(s->milters, s->helo);
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

/* The milters hear MAIL with its ESMTP parameters, as we parsed them. */
static int
smtp_milter_mail(struct smtp_session *s, const struct smtp_params *p)
{
	char path[SMTP_MAILBOX_MAX + 3], size[32], envid[SMTP_ENVID_MAX + 8];
	const char *args[5];
	size_t n = 0;

	if (mx_snprintf(path, sizeof(path), "<%s>", s->env.sender) == -1)
		return -1;
	if (p->present & SMTP_PARAM_SIZE) {
		snprintf(size, sizeof(size), "SIZE=%llu", (unsigned long long)p->size);
		args[n++] = size;
	}
	if (p->body != SMTP_BODY_NONE)
		args[n++] = p->body == SMTP_BODY_8BITMIME ? "BODY=8BITMIME" : "BODY=7BIT";
	if (p->present & SMTP_PARAM_SMTPUTF8)
		args[n++] = "SMTPUTF8";
	if (p->ret != SMTP_RET_NONE)
		args[n++] = p->ret == SMTP_RET_FULL ? "RET=FULL" : "RET=HDRS";
	if (p->present & SMTP_PARAM_ENVID) {
		if (mx_snprintf(envid, sizeof(envid), "ENVID=%s", p->envid) == -1)
			return -1;
		args[n++] = envid;
	}
	if (milter_chain_mail(s->milters, path, args, n) == -1)
		return -1;
	milter_chain_queue_id(s->milters, s->env.id);
	return 0;
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
	    queue_id_generate(s->env.id) == -1 || smtp_milter_mail(s, p) == -1) {
		milter_chain_abort(s->milters);
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

/* A reply from a milter (validated by milter.c: 4xx/5xx lines joined by CRLF), as it is. */
static void
smtp_reply_milter(struct smtp_session *s, const char *reply)
{
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char safe[LOG_SAFE_MAX];

		log_debug("event=smtp_reply id=%08x qid=%s reply=\"%s\"", s->id, smtp_qid(s),
		    log_safe(safe, sizeof(safe), reply, strlen(reply)));
	}
	if (io_write(s->io, reply, strlen(reply)) == -1 || io_write(s->io, "\r\n", 2) == -1)
		log_debug("event=smtp_write_failed id=%08x errno=%d", s->id, errno);
}

/*
 * What the milters decided (about a recipient, DATA, or the message before
 * its end): continue and discard let the command go on; the others answer it.
 */
static enum smtp_check
smtp_milter_verdict(struct smtp_session *s, const char *stage, enum milter_decision d,
    const char *reply)
{
	char safe[LOG_SAFE_MAX];

	if (d == MILTER_D_CONTINUE)
		return SMTP_CHECK_NEXT;
	log_info("event=smtp_milter id=%08x qid=%s client=%s stage=%s decision=%s reply=\"%s\"",
	    s->id, smtp_qid(s), s->client_ip, stage, milter_decision_name(d),
	    reply != NULL ? log_safe(safe, sizeof(safe), reply, strlen(reply)) : "");
	switch (d) {
	case MILTER_D_CONTINUE:
		break;
	case MILTER_D_DISCARD:
		s->discard = true;
		return SMTP_CHECK_NEXT;
	case MILTER_D_REJECT:
		(*c_milter_rejected)++;
		smtp_reply_milter(s, reply != NULL ? reply : "550 5.7.1 Command rejected");
		smtp_error_count(s);
		break;
	case MILTER_D_TEMPFAIL:
		(*c_milter_tempfailed)++;
		smtp_reply_milter(s, reply != NULL ? reply :
		    "451 4.7.1 Service unavailable - try again later");
		smtp_error_count(s);
		break;
	case MILTER_D_SHUTDOWN:
		(*c_milter_rejected)++;
		smtp_reply_milter(s, reply != NULL ? reply :
		    "421 4.7.0 Service unavailable - closing connection");
		smtp_close(s, "milter_shutdown");
		break;
	}
	return SMTP_CHECK_DONE;
}

/* Every check passed: the recipient joins the envelope. */
static void
smtp_rcpt_accept(struct smtp_session *s)
{
	const struct smtp_rcpt_check *rc = &s->rc;
	struct queue_rcpt *r;
	char safe[LOG_SAFE_MAX];

	if ((r = queue_envelope_add_rcpt(&s->env)) == NULL) {
		smtp_reply(s, "451 4.3.0 Error: local error in processing");
		smtp_error_count(s);
		return;
	}
	mx_strlcpy(r->addr, rc->addr, sizeof(r->addr));
	if (rc->has_orcpt)
		mx_strlcpy(r->orcpt, rc->orcpt, sizeof(r->orcpt));
	if (rc->notify & SMTP_NOTIFY_NEVER)
		r->notify |= QUEUE_NOTIFY_NEVER;
	if (rc->notify & SMTP_NOTIFY_SUCCESS)
		r->notify |= QUEUE_NOTIFY_SUCCESS;
	if (rc->notify & SMTP_NOTIFY_FAILURE)
		r->notify |= QUEUE_NOTIFY_FAILURE;
	if (rc->notify & SMTP_NOTIFY_DELAY)
		r->notify |= QUEUE_NOTIFY_DELAY;
	r->state = QUEUE_RCPT_PENDING;
	(*c_rcpts)++;
	if (rc->dom.spf != REG_SPF_OFF)
		s->spf_tag = true;
	if (rc->limit < s->size_limit)
		s->size_limit = rc->limit;
	smtp_enter_state(s, SMTP_ST_RCPT);
	log_info("event=smtp_rcpt id=%08x qid=%s to=<%s> domain=%s", s->id, s->env.id,
	    log_safe(safe, sizeof(safe), rc->addr, strlen(rc->addr)), rc->dom.name);
	smtp_reply(s, "250 2.1.5 Ok");
}

static void smtp_rcpt_check(struct smtp_session *s);

static void
smtp_spf_store(struct smtp_session *s, enum spf_res res, bool helo, const char *comment)
{
	char safe[LOG_SAFE_MAX], safe2[LOG_SAFE_MAX];

	s->spf_state = SMTP_SPF_DONE;
	s->spf_res = res;
	s->spf_helo = helo;
	(void)mx_strlcpy(s->spf_comment, comment != NULL ? comment : "",
	    sizeof(s->spf_comment));
	log_info("event=smtp_spf id=%08x qid=%s client=%s identity=%s domain=%s result=%s "
	    "comment=\"%s\"", s->id, smtp_qid(s), s->client_ip, helo ? "helo" : "mailfrom",
	    helo ? log_safe(safe, sizeof(safe), s->helo, strlen(s->helo)) :
	    log_safe(safe, sizeof(safe), s->env.sender, strlen(s->env.sender)),
	    spf_res_name(res), log_safe(safe2, sizeof(safe2), s->spf_comment,
	    strlen(s->spf_comment)));
}

static void
smtp_spf_cb(const struct spf_result *res, void *arg)
{
	struct smtp_session *s = arg;

	s->spf_q = NULL;
	smtp_spf_store(s, res->result, res->helo_identity, res->comment);
	if (s->state == SMTP_ST_FILTER)
		smtp_rcpt_check(s);
}

/* SPF, once per transaction, judged by each recipient's domain policy. */
static enum smtp_check
smtp_rcpt_spf(struct smtp_session *s)
{
	const struct smtp_rcpt_check *rc = &s->rc;
	const char *at;

	if (rc->dom.spf == REG_SPF_OFF)
		return SMTP_CHECK_NEXT;
	switch (s->spf_state) {
	case SMTP_SPF_NONE:
		s->spf_q = spf_check((const struct sockaddr *)&s->client, s->helo, s->env.sender,
		    smtp_spf_cb, s);
		if (s->spf_q != NULL) {
			s->spf_state = SMTP_SPF_PENDING;
			return SMTP_CHECK_WAIT;
		}
		smtp_spf_store(s, SPF_RES_TEMPERROR, s->env.sender[0] == '\0',
		    "the SPF checker is not available");
		break;
	case SMTP_SPF_PENDING:
		return SMTP_CHECK_WAIT;
	case SMTP_SPF_DONE:
		break;
	}
	if (rc->dom.spf != REG_SPF_REJECT)
		return SMTP_CHECK_NEXT;
	/* softfail, neutral, none and permerror are tagged, never refused (RFC 7208 §8). */
	if (s->spf_res == SPF_RES_FAIL) {
		(*c_spf_rejected)++;
		at = strrchr(s->env.sender, '@');
		log_info("event=smtp_rcpt_rejected id=%08x qid=%s client=%s reason=spf_fail",
		    s->id, smtp_qid(s), s->client_ip);
		smtp_reply(s, "550 5.7.23 Error: SPF: %s is not allowed to send mail for %s",
		    s->client_ip, s->spf_helo || at == NULL ? "this HELO name" : at + 1);
		smtp_error_count(s);
		return SMTP_CHECK_DONE;
	}
	if (s->spf_res == SPF_RES_TEMPERROR) {
		(*c_spf_tempfailed)++;
		log_info("event=smtp_rcpt_deferred id=%08x qid=%s client=%s reason=spf_temperror",
		    s->id, smtp_qid(s), s->client_ip);
		smtp_reply(s, "451 4.7.24 Error: SPF: temporary DNS error, try again later");
		smtp_error_count(s);
		return SMTP_CHECK_DONE;
	}
	return SMTP_CHECK_NEXT;
}

static enum smtp_check
smtp_rcpt_unknown(struct smtp_session *s, const char *reason)
{
	char safe[LOG_SAFE_MAX];

	(*c_rejected_unknown)++;
	log_info("event=smtp_rcpt_rejected id=%08x qid=%s client=%s to=<%s> reason=%s", s->id,
	    smtp_qid(s), s->client_ip, log_safe(safe, sizeof(safe), s->rc.addr,
	    strlen(s->rc.addr)), reason);
	smtp_reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", s->rc.addr);
	smtp_error_count(s);
	return SMTP_CHECK_DONE;
}

static void
smtp_verify_cb(const struct verify_result *res, void *arg)
{
	struct smtp_session *s = arg;

	s->vq = NULL;
	s->rc.verified = true;
	s->rc.verify_status = res->status;
	if (s->state == SMTP_ST_FILTER)
		smtp_rcpt_check(s);
}

/* The domain's recipient policy: anyone, a list in the registry, or what the primary says. */
static enum smtp_check
smtp_rcpt_recipient(struct smtp_session *s)
{
	struct smtp_rcpt_check *rc = &s->rc;
	char safe[LOG_SAFE_MAX];
	bool refused;
	int r;

	switch (rc->dom.recipients) {
	case REG_RCPT_ANY:
		return SMTP_CHECK_NEXT;
	case REG_RCPT_LIST:
		/* A local, indexed lookup: fast enough for the loop. */
		if ((r = registry_recipient_check(mxd->registry, rc->dom.name, rc->addr)) == 1)
			return SMTP_CHECK_NEXT;
		if (r == 0)
			return smtp_rcpt_unknown(s, "not_listed");
		log_warnx("event=smtp_recipient_list_failed id=%08x domain=%s", s->id,
		    rc->dom.name);
		smtp_reply(s, "451 4.3.0 Error: cannot check the recipient now, try again later");
		smtp_error_count(s);
		return SMTP_CHECK_DONE;
	case REG_RCPT_VERIFY:
		break;
	}
	if (!rc->verified) {
		if (verify_cached(rc->addr, &refused) == 1) {
			rc->verified = true;
			rc->verify_status = refused ? VERIFY_REFUSED : VERIFY_ACCEPTED;
		} else if ((s->vq = verify_start(&rc->dom, rc->addr, smtp_verify_cb, s)) != NULL) {
			return SMTP_CHECK_WAIT;
		} else {
			rc->verified = true;
			rc->verify_status = VERIFY_UNAVAILABLE;
		}
	}
	switch (rc->verify_status) {
	case VERIFY_ACCEPTED:
		return SMTP_CHECK_NEXT;
	case VERIFY_REFUSED:
		return smtp_rcpt_unknown(s, "verify_refused");
	case VERIFY_TEMPFAIL:
	case VERIFY_UNAVAILABLE:
		break;
	}
	if (rc->dom.unavailable == REG_UNAVAIL_ACCEPT) {
		log_info("event=smtp_rcpt_unverified id=%08x qid=%s to=<%s> result=%s policy=accept",
		    s->id, smtp_qid(s), log_safe(safe, sizeof(safe), rc->addr, strlen(rc->addr)),
		    verify_status_name(rc->verify_status));
		return SMTP_CHECK_NEXT;
	}
	(*c_rcpt_unverified)++;
	log_info("event=smtp_rcpt_deferred id=%08x qid=%s client=%s to=<%s> reason=verify_%s",
	    s->id, smtp_qid(s), s->client_ip, log_safe(safe, sizeof(safe), rc->addr,
	    strlen(rc->addr)), verify_status_name(rc->verify_status));
	/* Not 250 and a bounce later (backscatter, PITFALLS 17): the sender tries again. */
	if (rc->verify_status == VERIFY_TEMPFAIL)
		smtp_reply(s, "450 4.1.1 <%s>: Recipient address rejected: the destination "
		    "cannot confirm it now, try again later", rc->addr);
	else
		smtp_reply(s, "450 4.4.3 <%s>: Recipient address rejected: the destination's "
		    "mail server cannot be reached to verify it, try again later", rc->addr);
	smtp_error_count(s);
	return SMTP_CHECK_DONE;
}

static void
smtp_rcpt_milter_cb(const struct milter_result *res, void *arg)
{
	struct smtp_session *s = arg;

	s->rc.milter_answered = true;
	s->rc.milter_d = res->decision;
	s->rc.milter_reply = res->reply != NULL ? strdup(res->reply) : NULL;
	if (s->state == SMTP_ST_FILTER)
		smtp_rcpt_check(s);
}

static enum smtp_check
smtp_rcpt_milter(struct smtp_session *s)
{
	struct smtp_rcpt_check *rc = &s->rc;
	char path[SMTP_MAILBOX_MAX + 3], notify[48], orcpt[SMTP_ORCPT_MAX + 8];
	const char *args[2];
	size_t n = 0, len;

	if (rc->milter_answered)
		return smtp_milter_verdict(s, "rcpt", rc->milter_d, rc->milter_reply);
	/* No milter configured and none asked for: nobody to ask. */
	if (!s->have_milters && (rc->dom.milters[0] == '\0' ||
	    strcmp(rc->dom.milters, "none") == 0))
		return SMTP_CHECK_NEXT;
	(void)mx_snprintf(path, sizeof(path), "<%s>", rc->addr);
	if (rc->notify != 0) {
		snprintf(notify, sizeof(notify), "NOTIFY=%s%s%s%s",
		    rc->notify & SMTP_NOTIFY_NEVER ? "NEVER" : "",
		    rc->notify & SMTP_NOTIFY_SUCCESS ? "SUCCESS," : "",
		    rc->notify & SMTP_NOTIFY_FAILURE ? "FAILURE," : "",
		    rc->notify & SMTP_NOTIFY_DELAY ? "DELAY," : "");
		len = strlen(notify);
		if (notify[len - 1] == ',')
			notify[len - 1] = '\0';
		args[n++] = notify;
	}
	if (rc->has_orcpt && mx_snprintf(orcpt, sizeof(orcpt), "ORCPT=%s", rc->orcpt) == 0)
		args[n++] = orcpt;
	if (milter_chain_rcpt(s->milters, path, args, n, rc->dom.milters, smtp_rcpt_milter_cb,
	    s) == 0)
		return SMTP_CHECK_WAIT;
	log_warnx("event=smtp_milter_failed id=%08x qid=%s stage=rcpt errno=%d", s->id,
	    smtp_qid(s), errno);
	smtp_reply(s, "451 4.3.0 Error: local error in processing");
	smtp_error_count(s);
	return SMTP_CHECK_DONE;
}

/* A filter's answer came while waiting: read commands again. */
static void
smtp_filter_done(struct smtp_session *s)
{
	if (s->state == SMTP_ST_FILTER)
		smtp_enter_state(s, s->env.nrcpts > 0 ? SMTP_ST_RCPT : SMTP_ST_MAIL);
	if (s->state != SMTP_ST_CLOSING && io_read_paused(s->io))
		io_resume_read(s->io);
}

/*
 * Run the recipient in s->rc through the checks from its current step.
 * A step that must wait pauses the session; its callback comes back here.
 */
static void
smtp_rcpt_check(struct smtp_session *s)
{
	enum smtp_check r;

	for (;;) {
		switch (s->rc.step) {
		case SMTP_RC_SPF:
			r = smtp_rcpt_spf(s);
			break;
		case SMTP_RC_RECIPIENT:
			r = smtp_rcpt_recipient(s);
			break;
		case SMTP_RC_MILTER:
			r = smtp_rcpt_milter(s);
			break;
		case SMTP_RC_ACCEPT:
		default:
			smtp_rcpt_accept(s);
			r = SMTP_CHECK_DONE;
			break;
		}
		if (r == SMTP_CHECK_WAIT) {
			if (s->state != SMTP_ST_FILTER) {
				smtp_enter_state(s, SMTP_ST_FILTER);
				io_pause_read(s->io);
			}
			return;
		}
		if (r == SMTP_CHECK_DONE) {
			smtp_filter_done(s);
			return;
		}
		s->rc.step++;
	}
}

/* <postmaster>, or postmaster at our own name when no customer has that name. */
static bool
smtp_rcpt_is_postmaster(const struct smtp_path *p)
{
	const char *host = mxd->conf->hostname;

	if (p->postmaster)
		return true;
	return p->kind == SMTP_DOMAIN_NAME && !p->quoted && strcasecmp(p->local, "postmaster") == 0 &&
	    strcmp(p->domain, host) == 0 &&
	    domain_table_exact(mxd->domains, host, strlen(host)) == NULL;
}

/*
 * RFC 5321 4.5.1: a server MUST take mail for its postmaster.  We deliver
 * nothing locally, so it goes on to postmaster_address, through the milters
 * like any mail, but without a customer's SPF or recipient policy: *d gets
 * such a domain.  -1 when no postmaster_address is set.
 */
static int
smtp_postmaster_domain(struct domain *d)
{
	const char *at = strrchr(mxd->conf->postmaster_address, '@');

	if (at == NULL)
		return -1;
	domain_init(d, at + 1);
	d->spf = REG_SPF_OFF;
	d->recipients = REG_RCPT_ANY;
	return 0;
}

/* The registered domain a recipient belongs to, or NULL once it was refused. */
static const struct domain *
smtp_rcpt_domain(struct smtp_session *s, const struct smtp_path *path, const char *addr)
{
	const struct domain *d;
	unsigned int relay;

	/* Whatever the syntax means to someone else, we relay none of it (PITFALLS 15). */
	if (path->kind != SMTP_DOMAIN_NAME) {
		smtp_rcpt_refuse(s, addr, "address_literal");
		return NULL;
	}
	if ((relay = smtp_path_relay_flags(path)) != 0) {
		smtp_rcpt_refuse(s, addr, relay & SMTP_RELAY_PERCENT ? "percent_hack" :
		    relay & SMTP_RELAY_BANG ? "bang_path" : relay & SMTP_RELAY_QUOTED ?
		    "quoted_local_part" : relay & SMTP_RELAY_ROUTE ? "source_route" :
		    "address_literal");
		return NULL;
	}
	/* Only explicit registration counts, never an MX pointing at us (PITFALLS 16). */
	d = domain_table_exact(mxd->domains, path->domain, path->domain_len);
	if (d == NULL)
		smtp_rcpt_refuse(s, addr, "domain_not_registered");
	return d;
}

static void
smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_command *c)
{
	const struct conf *cf = mxd->conf;
	const struct domain *d;
	struct domain pm;
	struct smtp_rcpt_check *rc;
	char addr[SMTP_MAILBOX_MAX + 1], asked[SMTP_MAILBOX_MAX + 1];
	unsigned long long max_rcpts, limit;
	size_t i;

	if (smtp_path_format(&c->path, addr, sizeof(addr)) == -1) {
		smtp_reply(s, "501 5.1.3 Error: bad recipient address");
		smtp_error_count(s);
		return;
	}
	asked[0] = '\0';
	if (smtp_rcpt_is_postmaster(&c->path)) {
		if (smtp_postmaster_domain(&pm) == -1) {
			smtp_rcpt_refuse(s, addr, "no_postmaster_address");
			return;
		}
		d = &pm;
		mx_strlcpy(asked, addr, sizeof(asked));
		mx_strlcpy(addr, cf->postmaster_address, sizeof(addr));
		log_info("event=smtp_rcpt_postmaster id=%08x qid=%s to=<%s>", s->id, smtp_qid(s),
		    addr);
	} else if ((d = smtp_rcpt_domain(s, &c->path, addr)) == NULL)
		return;
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
		if (strcmp(s->env.rcpts[i].addr, addr) == 0) {
			/* Accepted already, every check included. */
			smtp_reply(s, "250 2.1.5 Ok");
			return;
		}
	/* The checks that may have to wait work on copies: the domain table may change. */
	rc = &s->rc;
	free(rc->milter_reply);
	memset(rc, 0, sizeof(*rc));
	mx_strlcpy(rc->addr, addr, sizeof(rc->addr));
	rc->dom = *d;
	rc->limit = limit;
	rc->notify = c->params.notify;
	if (c->params.present & SMTP_PARAM_ORCPT) {
		rc->has_orcpt = true;
		mx_strlcpy(rc->orcpt, c->params.orcpt, sizeof(rc->orcpt));
	} else if (asked[0] != '\0') {
		/* For any DSN: the address the client used, not postmaster_address. */
		rc->has_orcpt = mx_snprintf(rc->orcpt, sizeof(rc->orcpt), "rfc822;%s",
		    asked) == 0;
	}
	rc->step = SMTP_RC_SPF;
	smtp_rcpt_check(s);
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
	    s->helo_ok ? "" : "helo=", !s->helo_ok ? helo : s->client_name[0] != '\0' ?
	    s->client_name : "unknown",
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

/* Our fields on top of the message: Authentication-Results, Received-SPF, Received. */
static int
smtp_our_fields(struct smtp_session *s, struct mx_buf *b)
{
	const struct conf *cf = mxd->conf;
	struct spf_header_info h;

	if (s->spf_tag && s->spf_state == SMTP_SPF_DONE) {
		memset(&h, 0, sizeof(h));
		h.result = s->spf_res;
		h.helo_identity = s->spf_helo;
		h.comment = s->spf_comment;
		h.receiver = cf->hostname;
		h.client_ip = s->client_ip;
		h.sender = s->env.sender;
		h.helo = s->helo;
		h.authserv_id = cf->authserv_id;
		if (spf_format_authres(b, &h) == -1 || spf_format_received(b, &h) == -1)
			return -1;
	}
	return smtp_received_header(s, b);
}

/*
 * The filter file: unlinked from the start (O_TMPFILE, or a name removed at
 * once), in the spool's tmp/ so that it lives on the spool's disk and
 * counts against its free space; nothing is left behind by a crash.
 */
static int
smtp_tmp_open(struct smtp_session *s)
{
	char path[CONF_PATH_MAX + 32];
	int fd;

	if (mx_snprintf(path, sizeof(path), "%s/tmp", mxd->conf->spool_dir) == -1)
		return -1;
	fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd == -1 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		if (mx_snprintf(path, sizeof(path), "%s/tmp/filter.XXXXXX",
		    mxd->conf->spool_dir) == -1)
			return -1;
		if ((fd = mkostemp(path, O_CLOEXEC)) != -1)
			(void)unlink(path);
	}
	if (fd == -1)
		return -1;
	s->tmpfd = fd;
	mx_buf_init(&s->tmpbuf, 0);
	return 0;
}

static void
smtp_tmp_flush(struct smtp_session *s)
{
	size_t off = 0;
	ssize_t n;

	while (!s->tmp_error && off < s->tmpbuf.len) {
		n = write(s->tmpfd, s->tmpbuf.data + off, s->tmpbuf.len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_warn("event=smtp_filter_file_write_failed id=%08x qid=%s", s->id,
			    smtp_qid(s));
			s->tmp_error = true;
			break;
		}
		off += (size_t)n;
		s->tmp_flushed += (uint64_t)n;
	}
	mx_buf_reset(&s->tmpbuf);
}

static void
smtp_tmp_write(struct smtp_session *s, const void *p, size_t len)
{
	if (s->tmp_error)
		return;
	if (mx_buf_add(&s->tmpbuf, p, len) == -1) {
		s->tmp_error = true;
		return;
	}
	s->tmp_len += len;
	if (s->tmpbuf.len >= SMTP_TMP_CHUNK)
		smtp_tmp_flush(s);
}

/* The header section is complete: clean it, then write it (or keep it for the milters). */
static void
smtp_header_done(struct smtp_session *s)
{
	struct smtp_hdr *h = &s->hdr;
	size_t n;

	if (h->too_big || h->error) {
		queue_writer_abort(&s->writer);
		return;
	}
	/* RFC 8601 §5: nobody else may speak for our authserv-id. */
	if ((n = smtp_hdr_strip_authres(h, mxd->conf->authserv_id)) > 0) {
		*c_authres_removed += n;
		log_info("event=smtp_authres_removed id=%08x qid=%s client=%s fields=%zu", s->id,
		    smtp_qid(s), s->client_ip, n);
	}
	if (!s->filtering) {
		if (s->writer != NULL)
			queue_writer_body(s->writer, h->buf.data, h->buf.len);
		mx_buf_free(&h->buf);
		h->end = 0;
		return;
	}
	/* The body (after its empty line) goes to the file; the section stays here. */
	if (h->body && h->buf.len > h->end + 2)
		smtp_tmp_write(s, h->buf.data + h->end + 2, h->buf.len - h->end - 2);
	h->buf.len = h->end;
}

static void
smtp_data_emit(void *arg, const unsigned char *p, size_t len)
{
	struct smtp_session *s = arg;
	size_t used;

	/* A message we will refuse, or throw away, keeps nothing. */
	if ((s->data.flags & SMTP_DATA_REJECT) != 0 || s->discard || s->mf_d != MILTER_D_CONTINUE)
		return;
	if (!s->hdr.done) {
		used = smtp_hdr_feed(&s->hdr, p, len);
		if (!s->hdr.done)
			return;
		smtp_header_done(s);
		p += used;
		len -= used;
	}
	if (len == 0 || s->hdr.too_big || s->hdr.error)
		return;
	if (s->filtering)
		smtp_tmp_write(s, p, len);
	else if (s->writer != NULL)
		queue_writer_body(s->writer, p, len);
}

/* DATA passed every check: the fields of ours, somewhere to write, and 354. */
static void
smtp_data_begin(struct smtp_session *s)
{
	struct mx_buf ours;
	const char *v, *ci;
	int r;

	s->env.arrival = mx_time_now();
	s->env.next_attempt = s->env.arrival;
	mx_strlcpy(s->env.client_addr, s->client_ip, sizeof(s->env.client_addr));
	mx_strlcpy(s->env.helo, s->helo, sizeof(s->env.helo));
	if (s->tls && (v = io_tls_version_name(s->io)) != NULL &&
	    (ci = io_tls_cipher_name(s->io)) != NULL) {
		mx_strlcpy(s->env.tls_version, v, sizeof(s->env.tls_version));
		mx_strlcpy(s->env.tls_cipher, ci, sizeof(s->env.tls_cipher));
	}
	s->filtering = !s->discard && milter_chain_active(s->milters);
	smtp_hdr_init(&s->hdr, SMTP_HDR_SECTION_MAX);
	mx_buf_init(&ours, SMTP_OURS_MAX);
	r = smtp_our_fields(s, &ours) == -1 || smtp_hdr_add(&s->hdr, ours.data, ours.len) == -1 ?
	    -1 : 0;
	mx_buf_free(&ours);
	/* With milters the spool file is written at the end; a discarded message needs none. */
	if (r == 0 && !s->discard)
		r = s->filtering ? smtp_tmp_open(s) :
		    (s->writer = queue_writer_open(&s->env)) == NULL ? -1 : 0;
	if (r == -1) {
		(*c_queue_failed)++;
		log_warnx("event=smtp_queue_open_failed id=%08x qid=%s errno=%d", s->id,
		    s->env.id, errno);
		smtp_reply(s, "451 4.3.0 Error: queue file write error");
		smtp_txn_end(s);
		smtp_error_count(s);
		return;
	}
	smtp_data_init(&s->data, s->size_limit, smtp_data_emit, s);
	smtp_enter_state(s, SMTP_ST_DATA);
	io_set_read_deadline(s->io, (int)mxd->conf->smtp_timeout_data,
	    SMTP_DATA_MIN_OCTETS);
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void
smtp_data_milter_cb(const struct milter_result *res, void *arg)
{
	struct smtp_session *s = arg;

	if (s->state != SMTP_ST_FILTER)
		return;
	if (smtp_milter_verdict(s, "data", res->decision, res->reply) == SMTP_CHECK_DONE) {
		/* Refused at DATA: the transaction is over. */
		if (s->state != SMTP_ST_CLOSING) {
			smtp_txn_end(s);
			io_resume_read(s->io);
		}
		return;
	}
	smtp_enter_state(s, SMTP_ST_RCPT);
	smtp_data_begin(s);
	if (s->state != SMTP_ST_CLOSING)
		io_resume_read(s->io);
}

static void
smtp_cmd_data(struct smtp_session *s, const struct smtp_command *c)
{
	if (!s->discard && milter_chain_active(s->milters)) {
		if (milter_chain_data(s->milters, smtp_data_milter_cb, s) == 0) {
			smtp_enter_state(s, SMTP_ST_FILTER);
			io_pause_read(s->io);
			return;
		}
		log_warnx("event=smtp_milter_failed id=%08x qid=%s stage=data errno=%d", s->id,
		    smtp_qid(s), errno);
		smtp_reply(s, "451 4.3.0 Error: local error in processing");
		smtp_txn_end(s);
		smtp_error_count(s);
		return;
	}
	smtp_data_begin(s);
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

/* The message got its final answer: back to READY, and on with pipelined commands. */
static void
smtp_data_finished(struct smtp_session *s, bool error)
{
	smtp_txn_end(s);
	if (mxd->stopping) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down", mxd->conf->hostname);
		smtp_close(s, "shutdown");
		return;
	}
	smtp_unhold(s);
	if (error)
		smtp_error_count(s);
	/* Commands pipelined after the final dot run now (io redelivers them). */
	if (s->state == SMTP_ST_READY && io_read_paused(s->io))
		io_resume_read(s->io);
}

/* A milter quarantined the message: held in the queue until `mxedge queue release`. */
static void
smtp_quarantine_record(struct smtp_session *s, const char *id)
{
	struct queue_journal_rec rec;

	memset(&rec, 0, sizeof(rec));
	rec.type = QUEUE_JOURNAL_HOLD;
	rec.held = true;
	/*
	 * The relay learns it from the arrival (env.held); the journal makes it
	 * last across a restart.  If that write fails the message stays held
	 * only until then: said loudly, the 250 stands (it is on disk).
	 */
	if (queue_journal_append(id, &rec) == -1)
		log_warn("event=smtp_quarantine_record_failed id=%08x qid=%s", s->id, id);
	(*c_quarantined)++;
}

static void
smtp_commit_done(bool ok, const char *id, void *arg)
{
	struct smtp_session *s = arg;
	char safe[LOG_SAFE_MAX];

	if (ok) {
		if (s->quarantine)
			smtp_quarantine_record(s, id);
		(*c_accepted)++;
		s->messages++;
		log_info("event=smtp_queued id=%08x qid=%s client=%s from=<%s> rcpts=%zu size=%llu "
		    "tls=%s%s", s->id, s->env.id, s->client_ip,
		    log_safe(safe, sizeof(safe), s->env.sender, strlen(s->env.sender)),
		    s->env.nrcpts, (unsigned long long)s->data.size,
		    s->env.tls_version[0] ? s->env.tls_version : "no",
		    s->quarantine ? " held=quarantine" : "");
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
	smtp_data_finished(s, !ok);
}

/* Accepted towards the client, kept nowhere (a milter's DISCARD). */
static void
smtp_discarded(struct smtp_session *s, const char *stage)
{
	(*c_discarded)++;
	log_info("event=smtp_discarded id=%08x qid=%s client=%s stage=%s", s->id, s->env.id,
	    s->client_ip, stage);
	/* As for a queued message: the sender must not learn that it went nowhere. */
	smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->env.id);
	smtp_data_finished(s, false);
}

/* ---- End of message with milters ---------------------------------------- */

static unsigned char smtp_chunk[SMTP_TMP_CHUNK];	/* one read from a filter file */

static void smtp_mf_cb(const struct milter_result *res, void *arg);

/* The milters' final word before their end of message (or ours): answer with it. */
static void
smtp_eom_verdict(struct smtp_session *s, enum milter_decision d, const char *reply)
{
	if (s->ev_eom != NULL)
		evtimer_del(s->ev_eom);
	if (d == MILTER_D_DISCARD) {
		log_info("event=smtp_milter id=%08x qid=%s client=%s stage=message decision=discard",
		    s->id, smtp_qid(s), s->client_ip);
		smtp_discarded(s, "message");
		return;
	}
	if (smtp_milter_verdict(s, "message", d, reply) == SMTP_CHECK_DONE &&
	    s->state != SMTP_ST_CLOSING)
		smtp_data_finished(s, false);
}

/* A local failure while feeding the milters: the message gets a temporary failure. */
static void
smtp_mf_fail(struct smtp_session *s, const char *what)
{
	log_warnx("event=smtp_milter_failed id=%08x qid=%s stage=%s errno=%d", s->id,
	    smtp_qid(s), what, errno);
	s->mf_d = MILTER_D_TEMPFAIL;
	free(s->mf_reply);
	s->mf_reply = strdup("451 4.3.0 Error: local error in processing");
	if (s->data_done)
		smtp_eom_verdict(s, s->mf_d, s->mf_reply);
}

static int
smtp_mf_header(struct smtp_session *s, const struct mx_view *name, const struct mx_view *value)
{
	char *n = strndup((const char *)name->ptr, name->len);
	char *v = strndup((const char *)value->ptr, value->len);
	int r = -1;

	if (n != NULL && v != NULL)
		r = milter_chain_header(s->milters, n, v, smtp_mf_cb, s);
	free(n);
	free(v);
	return r;
}

static int
smtp_mf_body(struct smtp_session *s)
{
	uint64_t left = s->tmp_flushed - s->mf_sent;
	size_t want = left < MILTER_CHUNK_MAX ? (size_t)left : MILTER_CHUNK_MAX;
	ssize_t n;

	do
		n = pread(s->tmpfd, smtp_chunk, want, (off_t)s->mf_sent);
	while (n == -1 && errno == EINTR);
	if (n <= 0) {
		if (n == 0)
			errno = EIO;
		return -1;
	}
	s->mf_sent += (uint64_t)n;
	/* milter.c copies the octets: the buffer is free again on return. */
	return milter_chain_body(s->milters, smtp_chunk, (size_t)n, smtp_mf_cb, s);
}

/*
 * Feed the milters whatever is ready, one event at a time: the header
 * fields once the section is complete, end of headers, the body as it
 * reaches the file, and end of message after the final dot.
 */
static void
smtp_mf_pump(struct smtp_session *s)
{
	struct mx_view name, value;
	size_t used;
	int r;

	while (s->filtering && !s->mf_busy && s->mf_d == MILTER_D_CONTINUE && s->hdr.done &&
	    s->mf_step != SMTP_MF_EOM) {
		switch (s->mf_step) {
		case SMTP_MF_HEADERS:
			if (s->mf_off >= s->hdr.end || milter_header_next(s->hdr.buf.data +
			    s->mf_off, s->hdr.end - s->mf_off, &name, &value, &used) != 1) {
				s->mf_step = SMTP_MF_EOH;
				continue;
			}
			s->mf_off += used;
			r = smtp_mf_header(s, &name, &value);
			break;
		case SMTP_MF_EOH:
			s->mf_step = SMTP_MF_BODY;
			r = milter_chain_eoh(s->milters, smtp_mf_cb, s);
			break;
		case SMTP_MF_BODY:
			if (s->mf_sent < s->tmp_flushed) {
				r = smtp_mf_body(s);
				break;
			}
			if (!s->data_done)
				return;
			s->mf_step = SMTP_MF_EOM;
			r = milter_chain_eom(s->milters, smtp_mf_cb, s);
			break;
		case SMTP_MF_EOM:
		default:
			return;
		}
		if (r == -1) {
			smtp_mf_fail(s, "content");
			return;
		}
		s->mf_busy = true;
	}
}

/* Envelope changes a milter asked for at end of message: CHGFROM, ADDRCPT, DELRCPT. */
static int
smtp_mod_path(struct smtp_session *s, bool rcpt, const char *value, struct smtp_command *c,
    char *addr, size_t size)
{
	char line[SMTP_COMMAND_MAX];
	struct smtp_parse_error err;
	bool angle = value[0] == '<';

	if (mx_snprintf(line, sizeof(line), "%s:%s%s%s", rcpt ? "RCPT TO" : "MAIL FROM",
	    angle ? "" : "<", value, angle ? "" : ">") == -1 ||
	    smtp_command_parse(line, strlen(line), s->env.smtputf8 ? SMTP_PARSE_SMTPUTF8 : 0, c,
	    &err) == -1)
		return -1;
	return smtp_path_format(&c->path, addr, size);
}

static void
smtp_eom_envelope(struct smtp_session *s, const struct milter_result *res)
{
	struct smtp_command c;
	struct queue_rcpt *r;
	char addr[SMTP_MAILBOX_MAX + 1], safe[LOG_SAFE_MAX];
	const char *what, *result;
	size_t i, k;

	for (i = 0; i < res->nmods; i++) {
		const struct milter_mod *m = &res->mods[i];

		result = "applied";
		switch (m->kind) {
		case MILTER_MOD_CHGFROM:
			what = "chgfrom";
			if (smtp_mod_path(s, false, m->value, &c, addr, sizeof(addr)) == -1)
				result = "ignored_bad_address";
			else
				mx_strlcpy(s->env.sender, addr, sizeof(s->env.sender));
			break;
		case MILTER_MOD_ADDRCPT:
			what = "addrcpt";
			/* Never an open relay, not even on a milter's word. */
			if (smtp_mod_path(s, true, m->value, &c, addr, sizeof(addr)) == -1 ||
			    c.path.kind != SMTP_DOMAIN_NAME || smtp_path_relay_flags(&c.path) != 0)
				result = "ignored_bad_address";
			else if (domain_table_exact(mxd->domains, c.path.domain,
			    c.path.domain_len) == NULL)
				result = "ignored_not_registered";
			else {
				for (k = 0; k < s->env.nrcpts; k++)
					if (strcmp(s->env.rcpts[k].addr, addr) == 0)
						break;
				if (k < s->env.nrcpts)
					result = "ignored_duplicate";
				else if ((r = queue_envelope_add_rcpt(&s->env)) == NULL)
					result = "ignored_too_many";
				else {
					mx_strlcpy(r->addr, addr, sizeof(r->addr));
					r->state = QUEUE_RCPT_PENDING;
				}
			}
			break;
		case MILTER_MOD_DELRCPT:
			what = "delrcpt";
			if (smtp_mod_path(s, true, m->value, &c, addr, sizeof(addr)) == -1) {
				result = "ignored_bad_address";
				break;
			}
			for (k = 0; k < s->env.nrcpts; k++)
				if (strcmp(s->env.rcpts[k].addr, addr) == 0)
					break;
			if (k == s->env.nrcpts) {
				result = "ignored_unknown";
				break;
			}
			memmove(&s->env.rcpts[k], &s->env.rcpts[k + 1],
			    (s->env.nrcpts - k - 1) * sizeof(s->env.rcpts[0]));
			s->env.nrcpts--;
			break;
		default:
			continue;
		}
		log_info("event=smtp_milter_envelope id=%08x qid=%s change=%s value=\"%s\" "
		    "milter=%s result=%s", s->id, s->env.id, what,
		    log_safe(safe, sizeof(safe), m->value, strlen(m->value)),
		    m->milter != NULL ? m->milter : "-", result);
	}
}

/*
 * A replaced body: lines end in CRLF, LF or CR (all written as CRLF, so no
 * bare CR or LF reaches the spool), none longer than SMTP allows, within the
 * size limit.  With out NULL only checks; -1 means unusable.
 */
static int
smtp_body_put(struct smtp_session *s, const unsigned char *p, size_t len, bool write_it)
{
	size_t i = 0, start, end;
	uint64_t total = 0;

	while (i < len) {
		start = i;
		while (i < len && p[i] != '\r' && p[i] != '\n')
			i++;
		end = i;
		if (i < len && p[i] == '\r')
			i++;
		if (i < len && p[i] == '\n' && (i == end || p[i - 1] == '\r'))
			i++;
		if (end - start > SMTP_DATA_LINE_MAX - 2)
			return -1;
		total += end - start + 2;
		if (write_it) {
			queue_writer_body(s->writer, p + start, end - start);
			queue_writer_body(s->writer, "\r\n", 2);
		}
	}
	return s->size_limit != 0 && total > s->size_limit ? -1 : 0;
}

static int
smtp_tmp_copy(struct smtp_session *s)
{
	uint64_t off = 0;
	size_t want;
	ssize_t n;

	while (off < s->tmp_flushed) {
		want = s->tmp_flushed - off < sizeof(smtp_chunk) ? (size_t)(s->tmp_flushed - off) :
		    sizeof(smtp_chunk);
		n = pread(s->tmpfd, smtp_chunk, want, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		queue_writer_body(s->writer, smtp_chunk, (size_t)n);
		off += (uint64_t)n;
	}
	return 0;
}

/*
 * The milters accept: the spool file is the header section with their
 * changes, then the body (theirs or the file's), committed as usual.
 */
static void
smtp_eom_commit(struct smtp_session *s, const struct milter_result *res)
{
	struct mx_buf out;
	char safe[LOG_SAFE_MAX];
	const char *fail = NULL;
	bool hdr_mods = false;
	size_t i;

	smtp_eom_envelope(s, res);
	if (s->env.nrcpts == 0) {
		smtp_discarded(s, "no_recipients_left");
		return;
	}
	for (i = 0; i < res->nmods; i++)
		if (res->mods[i].kind <= MILTER_MOD_CHGHEADER)
			hdr_mods = true;
	s->quarantine = res->quarantine;
	/* The writer copies the envelope: the relay hears of the hold at arrival. */
	s->env.held = res->quarantine;
	mx_buf_init(&out, 0);
	if (res->body_replaced && smtp_body_put(s, res->body, res->body_len, false) == -1)
		fail = "a content filter returned an unusable body";
	else if (hdr_mods && milter_headers_apply(s->hdr.buf.data, s->hdr.end, res->mods,
	    res->nmods, &out) == -1)
		fail = "cannot apply the content filters' header changes";
	else if ((s->writer = queue_writer_open(&s->env)) == NULL)
		fail = "queue file write error";
	if (fail == NULL) {
		if (hdr_mods)
			queue_writer_body(s->writer, out.data, out.len);
		else
			queue_writer_body(s->writer, s->hdr.buf.data, s->hdr.end);
		if (res->body_replaced) {
			if (res->body_len > 0 || s->hdr.body) {
				queue_writer_body(s->writer, "\r\n", 2);
				(void)smtp_body_put(s, res->body, res->body_len, true);
			}
		} else if (s->hdr.body) {
			queue_writer_body(s->writer, "\r\n", 2);
			if (smtp_tmp_copy(s) == -1) {
				log_warn("event=smtp_filter_file_read_failed id=%08x", s->id);
				queue_writer_abort(&s->writer);
				fail = "queue file write error";
			}
		}
	}
	mx_buf_free(&out);
	if (fail != NULL) {
		(*c_queue_failed)++;
		log_warnx("event=smtp_message_rejected id=%08x qid=%s client=%s reason=\"%s\"",
		    s->id, s->env.id, s->client_ip, fail);
		smtp_reply(s, "451 4.3.0 Error: %s", fail);
		smtp_data_finished(s, true);
		return;
	}
	log_info("event=smtp_milter id=%08x qid=%s client=%s stage=message decision=continue "
	    "changes=%zu body_replaced=%s quarantine=%s%s%s%s", s->id, s->env.id, s->client_ip,
	    res->nmods, res->body_replaced ? "yes" : "no", res->quarantine ? "yes" : "no",
	    res->quarantine ? " reason=\"" : "", res->quarantine && res->quarantine_reason ?
	    log_safe(safe, sizeof(safe), res->quarantine_reason,
	    strlen(res->quarantine_reason)) : "", res->quarantine ? "\"" : "");
	smtp_enter_state(s, SMTP_ST_COMMIT);
	queue_writer_commit(s->writer, smtp_commit_done, s);
	s->writer = NULL;
}

static void
smtp_mf_cb(const struct milter_result *res, void *arg)
{
	struct smtp_session *s = arg;

	s->mf_busy = false;
	if (s->mf_step == SMTP_MF_EOM) {
		if (s->ev_eom != NULL)
			evtimer_del(s->ev_eom);
		if (res->decision == MILTER_D_CONTINUE)
			smtp_eom_commit(s, res);
		else
			smtp_eom_verdict(s, res->decision, res->reply);
		return;
	}
	if (res->decision != MILTER_D_CONTINUE) {
		/* Final for the message: it is answered at its end (or now, if that came). */
		s->mf_d = res->decision;
		free(s->mf_reply);
		s->mf_reply = res->reply != NULL ? strdup(res->reply) : NULL;
		if (s->data_done)
			smtp_eom_verdict(s, s->mf_d, s->mf_reply);
		return;
	}
	smtp_mf_pump(s);
}

/* PITFALLS 30: past this, the client may give up and send the message again. */
static void
smtp_eom_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	if (s->state != SMTP_ST_EOM)
		return;
	(*c_filter_timeouts)++;
	log_warnx("event=smtp_milter_timeout id=%08x qid=%s client=%s limit_s=%d step=%d", s->id,
	    s->env.id, s->client_ip, SMTP_EOM_LIMIT, (int)s->mf_step);
	milter_chain_abort(s->milters);
	s->mf_busy = false;
	smtp_reply(s, "451 4.7.1 Error: content filtering took too long, try again later");
	smtp_data_finished(s, true);
}

/* After the final dot with milters: wait for them (not reading). */
static void
smtp_eom_begin(struct smtp_session *s)
{
	struct timeval tv = { SMTP_EOM_LIMIT, 0 };

	s->data_done = true;
	smtp_enter_state(s, SMTP_ST_EOM);
	io_pause_read(s->io);
	smtp_hold(s);
	if (s->ev_eom == NULL)
		s->ev_eom = evtimer_new(mxd->base, smtp_eom_timeout, s);
	if (s->ev_eom != NULL)
		evtimer_add(s->ev_eom, &tv);
	if (s->mf_d != MILTER_D_CONTINUE) {
		smtp_eom_verdict(s, s->mf_d, s->mf_reply);
		return;
	}
	smtp_mf_pump(s);
}

/* The real end of the message: judge it, then commit or reject. */
static void
smtp_data_end(struct smtp_session *s)
{
	unsigned int f = s->data.flags;
	const char *reason = NULL;

	io_set_read_deadline(s->io, (int)mxd->conf->smtp_timeout_command, 0);
	*c_bytes += s->data.size;
	if ((f & SMTP_DATA_REJECT) == 0 && !s->discard && !s->hdr.done) {
		/* The message ended inside its header section. */
		smtp_hdr_finish(&s->hdr);
		smtp_header_done(s);
	}
	if (s->filtering && s->tmpbuf.len > 0)
		smtp_tmp_flush(s);
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
	} else if (s->hdr.too_big) {
		(*c_rejected_size)++;
		reason = "header_too_big";
		smtp_reply(s, "552 5.3.4 Error: message header section too large");
	} else if (!s->discard && (s->hdr.error || s->tmp_error ||
	    (!s->filtering && s->writer == NULL))) {
		(*c_queue_failed)++;
		reason = "no_writer";
		smtp_reply(s, "451 4.3.0 Error: queue file write error");
	}
	if (reason != NULL) {
		log_info("event=smtp_message_rejected id=%08x qid=%s client=%s reason=%s size=%llu "
		    "received=%u", s->id, s->env.id, s->client_ip, reason,
		    (unsigned long long)s->data.size, s->data.received);
		smtp_data_finished(s, true);
		return;
	}
	if (s->discard) {
		smtp_discarded(s, "rcpt");
		return;
	}
	if (s->filtering) {
		smtp_eom_begin(s);
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
		else if (s->filtering)
			smtp_mf_pump(s);
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
		case SMTP_ST_FILTER:
		case SMTP_ST_EOM:
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
		milter_chain_tls(s->milters, io_tls_version_name(io), io_tls_cipher_name(io));
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

/* The greeting waits for smtp_greet_delay and for the client's name, whichever is last. */
static void
smtp_greet_when_ready(struct smtp_session *s)
{
	if (s->state == SMTP_ST_GREETING && !s->greet_delay && s->rdns_q == NULL)
		smtp_greet(s);
}

static void
smtp_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	if (s->dying)
		smtp_session_free(s);
	else {
		s->greet_delay = false;
		smtp_greet_when_ready(s);
	}
}

/*
 * The client's name, as Postfix finds it: the PTR name, kept only if it
 * resolves back to the client's address (anyone can write any PTR for
 * their own addresses).  It goes into our Received: field and the milters'
 * {client_name}; downstream filters judge "unknown" harshly.  Every failure
 * just leaves the name unknown.
 */
static void
smtp_rdns_forward_cb(const struct dns_result *res, void *arg)
{
	struct smtp_session *s = arg;
	char safe[LOG_SAFE_MAX];
	size_t i;

	s->rdns_q = NULL;
	for (i = 0; res->status == DNS_OK && i < res->naddrs; i++)
		if (addr_same_host((const struct sockaddr *)&res->addrs[i],
		    (const struct sockaddr *)&s->client))
			break;
	if (res->status == DNS_OK && i < res->naddrs) {
		mx_strlcpy(s->client_name, res->name, sizeof(s->client_name));
		milter_chain_set_client_name(s->milters, s->client_name);
	} else
		log_info("event=smtp_rdns_unconfirmed id=%08x client=%s name=%s status=%s", s->id,
		    s->client_ip, log_safe(safe, sizeof(safe), res->name, strlen(res->name)),
		    dns_status_str(res->status));
	smtp_greet_when_ready(s);
}

static void
smtp_rdns_ptr_cb(const struct dns_result *res, void *arg)
{
	struct smtp_session *s = arg;
	const char *name;

	s->rdns_q = NULL;
	if (res->status == DNS_OK && res->answer != NULL && res->answer->count > 0) {
		/* The first name; several PTRs are rare and any one confirmed will do. */
		name = res->answer->rr[0].name;
		if (strcmp(name, ".") != 0)
			s->rdns_q = dns_lookup_addrs(mxd->dns, name, true, true, SMTP_RDNS_TIMEOUT,
			    smtp_rdns_forward_cb, s);
	}
	smtp_greet_when_ready(s);
}

static void
smtp_rdns_start(struct smtp_session *s)
{
	char rev[ADDR_REVERSE_MAX];
	const struct sockaddr *sa = (const struct sockaddr *)&s->client;

	if (!mxd->conf->smtp_reverse_lookup || mxd->dns == NULL || addr_is_loopback(sa) ||
	    addr_reverse_name(sa, rev) == -1)
		return;
	s->rdns_q = dns_lookup(mxd->dns, rev, DNS_T_PTR, SMTP_RDNS_TIMEOUT, smtp_rdns_ptr_cb, s);
}

/* The session's milter chain: it connects to milters only when a transaction needs them. */
static int
smtp_milters_open(struct smtp_session *s, int fd)
{
	struct milter_session_info info;
	struct milter_set *set = milter_set_current();
	socklen_t len = sizeof(s->local);

	memset(&info, 0, sizeof(info));
	info.client = (const struct sockaddr *)&s->client;
	if (getsockname(fd, (struct sockaddr *)&s->local, &len) == 0)
		info.local = (const struct sockaddr *)&s->local;
	info.hostname = mxd->conf->hostname;
	info.session_id = s->id;
	s->have_milters = set != NULL && milter_set_count(set) > 0;
	s->milters = milter_chain_new(mxd->base, set, &info);
	milter_set_unref(&set);
	return s->milters == NULL ? -1 : 0;
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
	s->tmpfd = -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A client that talks before it could have seen any greeting (postscreen's PREGREET). */
	early = recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
	if ((s->ev_timer = evtimer_new(mxd->base, smtp_timer_cb, s)) == NULL ||
	    smtp_milters_open(s, fd) == -1 ||
	    (s->io = io_new(mxd->base, fd, &cb, s)) == NULL) {
		if (s->ev_timer != NULL)
			event_free(s->ev_timer);
		milter_chain_free(&s->milters);
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
	io_set_read_deadline(s->io, (int)cf->smtp_timeout_command, 0);
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

		s->greet_delay = evtimer_add(s->ev_timer, &tv) == 0;
	}
	smtp_rdns_start(s);
	smtp_greet_when_ready(s);
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
	c_spf_rejected = stats_counter("smtp.rejected_spf");
	c_spf_tempfailed = stats_counter("smtp.deferred_spf");
	c_rejected_unknown = stats_counter("smtp.rejected_unknown_recipient");
	c_rcpt_unverified = stats_counter("smtp.deferred_unverified_recipient");
	c_milter_rejected = stats_counter("smtp.milter_rejected");
	c_milter_tempfailed = stats_counter("smtp.milter_tempfailed");
	c_discarded = stats_counter("smtp.milter_discarded");
	c_quarantined = stats_counter("smtp.milter_quarantined");
	c_authres_removed = stats_counter("smtp.authres_removed");
	c_filter_timeouts = stats_counter("smtp.milter_timeouts");
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
		if (s->state == SMTP_ST_EOM || s->state == SMTP_ST_COMMIT ||
		    s->state == SMTP_ST_CLOSING)
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
