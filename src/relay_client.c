/*
 * The relay's SMTP client: one connection to a primary, carrying one
 * message transaction at a time for the scheduler.  It owns the client side
 * of the dialogue: greeting, EHLO (HELO when EHLO is refused), STARTTLS when
 * offered (required or opportunistic per domain), a fresh EHLO after TLS
 * with every capability learnt before TLS forgotten, MAIL/RCPT/DATA
 * (pipelined when offered) with the ESMTP parameters the primary supports,
 * the dot-stuffed body streamed from the spool under backpressure, RSET
 * after an aborted transaction, QUIT.
 *
 * Trust: every octet from the primary is hostile.  Replies go through the
 * bounded parser (relay_reply.c); a malformed reply ends the connection and
 * leaves its recipients for a retry, never a bounce.  Plaintext the primary
 * sent before our TLS handshake finished is thrown away by the io layer
 * (PITFALLS 11), and only a reply read under TLS counts after STARTTLS.
 * The TLS session is the io layer's; once it is gone nothing of it is used
 * again (PITFALLS 26).
 *
 * Failure: a connection that never became ready tries the next target;
 * when none is left the scheduler hears setup_failed and decides about
 * retries and its circuit breaker.  A connection lost mid-transaction gives
 * every recipient without a final answer a temporary result.  Nothing here
 * touches the queue or can stop the daemon.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "daemon.h"
#include "io.h"
#include "log.h"
#include "queue.h"
#include "relay_client.h"
#include "relay_proto.h"
#include "stats.h"

#define RELAY_IDLE_SECS 5		/* an idle connection waits this long for more work */
#define RELAY_QUIT_SECS 10		/* for the reply to QUIT */
#define RELAY_BODY_CHUNK 65536		/* spool octets read per step */
#define RELAY_BODY_HIWAT (256 * 1024)	/* pending output above which the spool waits */
#define RELAY_BODY_LOWAT (64 * 1024)
#define RELAY_CMD_MAX 1024		/* HELO/EHLO/STARTTLS/QUIT lines */

enum relay_conn_state {
	RC_ST_CONNECT = 0,
	RC_ST_GREETING,
	RC_ST_EHLO,
	RC_ST_HELO,
	RC_ST_STARTTLS,
	RC_ST_HANDSHAKE,
	RC_ST_EHLO_TLS,
	RC_ST_IDLE,
	RC_ST_TXN,		/* replies to RSET/MAIL/RCPT/DATA pending */
	RC_ST_BODY,		/* streaming the message */
	RC_ST_DOT,		/* waiting for the reply to the final "." */
	RC_ST_QUIT,
};

static const char *const state_names[] = {
	"connect", "greeting", "ehlo", "helo", "starttls", "handshake", "ehlo-tls", "idle",
	"transaction", "body", "dot", "quit"
};

enum relay_expect_kind {
	RC_EXP_RSET = 0,
	RC_EXP_MAIL,
	RC_EXP_RCPT,
	RC_EXP_DATA,
};

struct relay_expect {
	enum relay_expect_kind kind;
	size_t i;		/* RCPT: index into job->rcpt[] */
};

struct relay_conn {
	struct relay_dest *dest;
	struct io *io;
	struct event *ev_kick;			/* deferred work: see relay_conn_kick() */
	struct event *ev_idle;
	uint32_t id;
	enum relay_conn_state state;

	char domain[DNS_NAME_BUF];
	struct relay_mx_target *targets;
	size_t ntargets, target;
	bool tls_required;
	bool tls_skip;				/* retrying this target without STARTTLS */
	struct tls_creds *creds;

	struct relay_reply_parser parser;
	struct relay_ehlo ehlo;
	bool ready_once;			/* some target reached the idle state */
	bool need_rset;
	bool want_ready;			/* tell the scheduler we are idle (deferred) */
	bool want_finish;			/* the job ended without I/O (deferred) */
	bool dying;				/* close at the next kick */
	bool quit_after;			/* QUIT instead of becoming idle */
	char peer[DNS_NAME_BUF + ADDR_STR_MAX + 4];	/* "name[addr]:port" for logs */
	char last_status[RELAY_REPLY_STATUS_MAX];
	char last_error[QUEUE_REPLY_MAX + 1];
	unsigned int msgs;
	uint64_t started;

	/* The current transaction. */
	struct relay_job *job;
	struct relay_expect *exp;
	size_t nexp, hexp;			/* queued, answered */
	size_t sent;				/* commands written (without PIPELINING) */
	size_t naccepted;
	bool mail_failed;
	bool discard_data;			/* 354 without a recipient: send "." and ignore */
	int body_fd;
	uint64_t body_off, body_len, body_done;
	struct relay_stuffer stuffer;
	struct mx_buf out;
};

static uint32_t next_id;
static unsigned long long *c_conns, *c_setup_failed, *c_tls, *c_tls_discarded,
    *c_bad_replies, *c_helo_fallback, *c_bytes;

static void relay_conn_on_event(struct io *io, enum io_event ev, void *arg);
static void relay_conn_try(struct relay_conn *c);
static void relay_conn_pump(struct relay_conn *c);

static const struct io_callbacks relay_io_cb = { relay_conn_on_event };

static void
relay_counters(void)
{
	if (c_conns != NULL)
		return;
	c_conns = stats_counter("relay.connections");
	c_setup_failed = stats_counter("relay.connections_failed");
	c_tls = stats_counter("relay.starttls");
	c_tls_discarded = stats_counter("relay.starttls_discarded_bytes");
	c_bad_replies = stats_counter("relay.bad_replies");
	c_helo_fallback = stats_counter("relay.helo_fallback");
	c_bytes = stats_counter("relay.bytes_sent");
}

static void
relay_enter_state(struct relay_conn *c, enum relay_conn_state st)
{
	if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("event=relay_state conn=%08x from=%s to=%s", c->id,
		    state_names[c->state], state_names[st]);
	c->state = st;
}

static void
relay_conn_kick(struct relay_conn *c)
{
	event_active(c->ev_kick, EV_TIMEOUT, 0);
}

static void
relay_conn_error(struct relay_conn *c, const char *status, const char *fmt, ...)
    MX_PRINTF(3, 4);

/* Remember why this connection (or target) failed, as a one-line reply text. */
static void
relay_conn_error(struct relay_conn *c, const char *status, const char *fmt, ...)
{
	char text[QUEUE_REPLY_MAX + 1], safe[QUEUE_REPLY_MAX + 1];
	va_list ap;
	size_t i;

	va_start(ap, fmt);
	if (vsnprintf(text, sizeof(text), fmt, ap) < 0)
		text[0] = '\0';
	va_end(ap);
	/* Error strings can carry peer text (TLS alerts): one clean line. */
	for (i = 0; text[i] != '\0' && i + 1 < sizeof(safe); i++)
		safe[i] = ((unsigned char)text[i] < 0x20 || (unsigned char)text[i] >= 0x7f) ?
		    '?' : text[i];
	safe[i] = '\0';
	mx_strlcpy(c->last_status, status, sizeof(c->last_status));
	if (mx_snprintf(c->last_error, sizeof(c->last_error), "%s", safe) == -1)
		memcpy(c->last_error + sizeof(c->last_error) - 4, "...", 4);
}

/* Results for every recipient without a final answer yet. */
static void
relay_job_settle(struct relay_job *job, enum queue_rcpt_state st, const char *status,
    const char *reply)
{
	size_t i;

	for (i = 0; i < job->nrcpts; i++) {
		struct relay_result *r = &job->res[i];

		if (r->state != QUEUE_RCPT_PENDING)
			continue;
		r->state = st;
		mx_strlcpy(r->status, status, sizeof(r->status));
		if (mx_strlcpy(r->reply, reply, sizeof(r->reply)) == -1)
			memcpy(r->reply + sizeof(r->reply) - 4, "...", 4);
	}
}

static void
relay_result_set(struct relay_result *r, const struct relay_reply *rep)
{
	int cls = rep->code / 100;

	r->state = cls == 2 ? QUEUE_RCPT_DELIVERED : cls == 5 ? QUEUE_RCPT_FAILED :
	    QUEUE_RCPT_DEFERRED;
	relay_reply_status(rep, r->status);
	relay_reply_summary(rep, r->reply, sizeof(r->reply));
}

static void
relay_txn_clear(struct relay_conn *c)
{
	free(c->exp);
	c->exp = NULL;
	c->nexp = c->hexp = c->sent = c->naccepted = 0;
	c->mail_failed = c->discard_data = false;
	if (c->body_fd != -1) {
		close(c->body_fd);
		c->body_fd = -1;
	}
	mx_buf_reset(&c->out);
}

/* Give the job back to the scheduler. */
static void
relay_job_finish(struct relay_conn *c)
{
	struct relay_job *job = c->job;

	c->job = NULL;
	relay_txn_clear(c);
	if (job != NULL)
		relay_sched_job_done(job);
}

static void
relay_conn_free(struct relay_conn *c, bool setup_failed)
{
	char reply[QUEUE_REPLY_MAX + 1], err[LOG_SAFE_MAX];
	uint64_t ms = (mx_now_usec() - c->started) / 1000u;

	if (c->job != NULL) {
		if (mx_snprintf(reply, sizeof(reply), "451 %s %s", c->last_status[0] ?
		    c->last_status : "4.4.2", c->last_error[0] ? c->last_error :
		    "connection ended") == -1)
			memcpy(reply + sizeof(reply) - 4, "...", 4);
		relay_job_settle(c->job, QUEUE_RCPT_DEFERRED, c->last_status[0] ?
		    c->last_status : "4.4.2", reply);
		relay_job_finish(c);
	}
	relay_txn_clear(c);
	io_free(&c->io);
	if (c->ev_kick != NULL)
		event_free(c->ev_kick);
	if (c->ev_idle != NULL)
		event_free(c->ev_idle);
	if (setup_failed)
		(*c_setup_failed)++;
	/* The error may quote the primary: escaped like any network text. */
	log_safe(err, sizeof(err), c->last_error, strlen(c->last_error));
	log_info("event=relay_conn conn=%08x domain=%s peer=%s msgs=%u duration_ms=%llu "
	    "outcome=%s%s%s", c->id, c->domain, c->peer[0] ? c->peer : "-", c->msgs,
	    (unsigned long long)ms, setup_failed ? "failed" : "closed",
	    c->last_error[0] ? " error=" : "", c->last_error[0] ? err : "");
	relay_sched_conn_closed(c, c->dest, setup_failed, c->last_status[0] ? c->last_status :
	    "4.4.1", c->last_error[0] ? c->last_error : "connection failed");
	tls_creds_unref(&c->creds);
	mx_buf_free(&c->out);
	free(c->targets);
	free(c);
	daemon_release();
}

/*
 * This target did not work out.  Before the session was ever ready, try the
 * next one; after that, the connection is over.
 */
static void
relay_conn_fail(struct relay_conn *c)
{
	io_free(&c->io);
	event_del(c->ev_idle);
	if (c->ready_once || c->job != NULL) {
		/* Freed from the loop: our callers still hold c. */
		c->dying = true;
		relay_conn_kick(c);
		return;
	}
	c->target++;
	c->tls_skip = false;
	relay_conn_try(c);
}

static int
relay_write(struct relay_conn *c, const void *p, size_t len)
{
	if (io_write(c->io, p, len) == -1) {
		relay_conn_error(c, "4.4.2", "write to %s failed: %s", c->peer, strerror(errno));
		return -1;
	}
	*c_bytes += len;
	return 0;
}

static int
relay_cmd(struct relay_conn *c, const char *fmt, ...) MX_PRINTF(2, 3);

static int
relay_cmd(struct relay_conn *c, const char *fmt, ...)
{
	char line[RELAY_CMD_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		relay_conn_error(c, "4.3.0", "command too long");
		return -1;
	}
	return relay_write(c, line, (size_t)n);
}

/* ---- Set-up: connect, greeting, EHLO, STARTTLS ------------------------ */

static void
relay_conn_try(struct relay_conn *c)
{
	const struct relay_mx_target *t;
	char addr[ADDR_STR_MAX], ip[ADDR_STR_MAX];

	for (; c->target < c->ntargets; c->target++) {
		t = &c->targets[c->target];
		addr_format((const struct sockaddr *)&t->ss, addr, sizeof(addr));
		/* "name[addr]:port" for a host name, "[addr]:port" for a literal. */
		if (addr_format_ip((const struct sockaddr *)&t->ss, ip, sizeof(ip)) != NULL &&
		    relay_mx_name_eq(t->name, ip))
			mx_strlcpy(c->peer, addr, sizeof(c->peer));
		else if (mx_snprintf(c->peer, sizeof(c->peer), "%s%s%s", t->name,
		    addr[0] == '[' ? "" : "[", addr) == -1)
			mx_strlcpy(c->peer, addr, sizeof(c->peer));
		relay_reply_init(&c->parser);
		memset(&c->ehlo, 0, sizeof(c->ehlo));
		c->io = io_connect(mxd->base, (const struct sockaddr *)&t->ss, t->sslen,
		    (int)mxd->conf->relay_connect_timeout, &relay_io_cb, c);
		if (c->io == NULL) {
			relay_conn_error(c, "4.4.1", "connect to %s: %s", c->peer, strerror(errno));
			continue;
		}
		io_set_read_deadline(c->io, (int)mxd->conf->relay_command_timeout, 0);
		io_set_write_timeout(c->io, (int)mxd->conf->relay_command_timeout);
		io_set_handshake_timeout(c->io, (int)mxd->conf->relay_command_timeout);
		relay_enter_state(c, RC_ST_CONNECT);
		return;
	}
	/* No target left: tell the scheduler from the loop, not from inside our caller. */
	c->dying = true;
	relay_conn_kick(c);
}

static void
relay_conn_ehlo(struct relay_conn *c, enum relay_conn_state st)
{
	if (relay_cmd(c, "%s %s\r\n", st == RC_ST_HELO ? "HELO" : "EHLO",
	    mxd->conf->hostname) == -1) {
		relay_conn_fail(c);
		return;
	}
	relay_enter_state(c, st);
}

/* The session is usable: hand it to the scheduler (from the loop). */
static void
relay_conn_ready(struct relay_conn *c)
{
	c->ready_once = true;
	relay_enter_state(c, RC_ST_IDLE);
	c->want_ready = true;
	relay_conn_kick(c);
}

static void
relay_conn_after_ehlo(struct relay_conn *c)
{
	if (io_tls_established(c->io)) {
		relay_conn_ready(c);
		return;
	}
	if ((c->ehlo.ext & RELAY_EXT_STARTTLS) && !c->tls_skip && c->creds != NULL) {
		if (relay_cmd(c, "STARTTLS\r\n") == -1) {
			relay_conn_fail(c);
			return;
		}
		relay_enter_state(c, RC_ST_STARTTLS);
		return;
	}
	if (c->tls_required) {
		relay_conn_error(c, "4.7.5", "TLS is required, but %s did not offer STARTTLS",
		    c->peer);
		relay_conn_fail(c);
		return;
	}
	relay_conn_ready(c);
}

static void
relay_conn_setup_reply(struct relay_conn *c, const struct relay_reply *r)
{
	char sum[RELAY_REPLY_SUMMARY_MAX];
	size_t discarded = 0;
	const char *sni;

	switch (c->state) {
	case RC_ST_GREETING:
		if (r->code / 100 != 2) {
			relay_conn_error(c, "4.4.1", "%s greeted us with %s", c->peer,
			    relay_reply_summary(r, sum, sizeof(sum)));
			relay_conn_fail(c);
			return;
		}
		relay_conn_ehlo(c, RC_ST_EHLO);
		return;
	case RC_ST_EHLO:
	case RC_ST_EHLO_TLS:
		if (r->code / 100 == 2) {
			relay_ehlo_parse(r, &c->ehlo);
			relay_conn_after_ehlo(c);
			return;
		}
		if (r->code / 100 == 5 && c->state == RC_ST_EHLO) {
			(*c_helo_fallback)++;
			relay_conn_ehlo(c, RC_ST_HELO);
			return;
		}
		relay_conn_error(c, "4.4.1", "%s refused EHLO: %s", c->peer,
		    relay_reply_summary(r, sum, sizeof(sum)));
		relay_conn_fail(c);
		return;
	case RC_ST_HELO:
		if (r->code / 100 != 2) {
			relay_conn_error(c, "4.4.1", "%s refused HELO: %s", c->peer,
			    relay_reply_summary(r, sum, sizeof(sum)));
			relay_conn_fail(c);
			return;
		}
		memset(&c->ehlo, 0, sizeof(c->ehlo));
		relay_conn_after_ehlo(c);
		return;
	case RC_ST_STARTTLS:
		if (r->code != 220) {
			if (c->tls_required) {
				relay_conn_error(c, "4.7.5", "TLS is required, but %s refused "
				    "STARTTLS: %s", c->peer,
				    relay_reply_summary(r, sum, sizeof(sum)));
				relay_conn_fail(c);
				return;
			}
			relay_conn_ready(c);
			return;
		}
		sni = c->targets[c->target].name;
		if (io_start_tls_client(c->io, c->creds, sni, &discarded) == -1) {
			relay_conn_error(c, "4.7.5", "cannot start TLS with %s: %s", c->peer,
			    io_error_string(c->io));
			relay_conn_fail(c);
			return;
		}
		/* Anything after the 220 came in plaintext: dropped, never read as a reply. */
		relay_reply_init(&c->parser);
		memset(&c->ehlo, 0, sizeof(c->ehlo));
		if (discarded > 0) {
			*c_tls_discarded += discarded;
			log_warnx("event=relay_starttls_injection conn=%08x peer=%s discarded=%zu",
			    c->id, c->peer, discarded);
		}
		relay_enter_state(c, RC_ST_HANDSHAKE);
		return;
	default:
		return;
	}
}

/* ---- Transactions ------------------------------------------------------ */

static int
relay_send_next(struct relay_conn *c)
{
	const struct relay_expect *e;
	int r;

	if (c->sent >= c->nexp)
		return 0;
	e = &c->exp[c->sent];
	mx_buf_reset(&c->out);
	switch (e->kind) {
	case RC_EXP_RSET:
		r = mx_buf_addstr(&c->out, "RSET\r\n");
		break;
	case RC_EXP_MAIL:
		r = relay_proto_mail(c->job->env, c->ehlo.ext, c->body_len, &c->out);
		break;
	case RC_EXP_RCPT:
		r = relay_proto_rcpt(&c->job->env->rcpts[c->job->rcpt[e->i]], c->ehlo.ext,
		    &c->out);
		break;
	case RC_EXP_DATA:
	default:
		r = mx_buf_addstr(&c->out, "DATA\r\n");
		break;
	}
	if (r == -1) {
		relay_conn_error(c, "4.3.0", "cannot build a command: %s", strerror(errno));
		return -1;
	}
	c->sent++;
	return relay_write(c, c->out.data, c->out.len);
}

static void
relay_body_start(struct relay_conn *c)
{
	relay_stuffer_init(&c->stuffer);
	c->body_done = 0;
	relay_enter_state(c, RC_ST_BODY);
	io_set_write_lowat(c->io, RELAY_BODY_LOWAT);
	relay_conn_pump(c);
}

/* Stream the body while the peer keeps up; IO_EV_DRAINED brings us back. */
static void
relay_conn_pump(struct relay_conn *c)
{
	unsigned char buf[RELAY_BODY_CHUNK];
	ssize_t n;
	size_t want;

	while (c->state == RC_ST_BODY && io_output_pending(c->io) < RELAY_BODY_HIWAT) {
		mx_buf_reset(&c->out);
		if (c->body_done == c->body_len) {
			if (relay_stuffer_finish(&c->stuffer, &c->out) == -1 ||
			    relay_write(c, c->out.data, c->out.len) == -1) {
				relay_conn_fail(c);
				return;
			}
			if (c->stuffer.fixed > 0)
				log_warnx("event=relay_body_repaired conn=%08x id=%s "
				    "bare_cr_lf=%llu", c->id, c->job->env->id,
				    (unsigned long long)c->stuffer.fixed);
			io_set_write_lowat(c->io, 0);
			relay_enter_state(c, RC_ST_DOT);
			return;
		}
		want = c->body_len - c->body_done < sizeof(buf) ?
		    (size_t)(c->body_len - c->body_done) : sizeof(buf);
		n = pread(c->body_fd, buf, want, (off_t)(c->body_off + c->body_done));
		if (n <= 0) {
			/* Without the whole body there must be no final dot: hang up. */
			relay_conn_error(c, "4.3.0", "cannot read queued message %s: %s",
			    c->job->env->id, n == 0 ? "short file" : strerror(errno));
			relay_conn_fail(c);
			return;
		}
		c->body_done += (uint64_t)n;
		if (relay_stuffer_feed(&c->stuffer, buf, (size_t)n, &c->out) == -1 ||
		    relay_write(c, c->out.data, c->out.len) == -1) {
			relay_conn_fail(c);
			return;
		}
	}
}

static void
relay_txn_done(struct relay_conn *c)
{
	size_t i;

	c->msgs++;
	/*
	 * After a temporary failure the retry deserves a fresh session: a
	 * server keeps per-session state (error counts, tarpits, greylisting).
	 */
	for (i = 0; i < c->job->nrcpts; i++)
		if (c->job->res[i].state == QUEUE_RCPT_DEFERRED)
			c->quit_after = true;
	relay_job_finish(c);
	if (c->io == NULL)
		return;
	relay_conn_ready(c);
}

/* Accepted recipients take the outcome of DATA or of the final dot. */
static void
relay_txn_accepted(struct relay_conn *c, const struct relay_reply *r)
{
	size_t i;

	for (i = 0; i < c->job->nrcpts; i++)
		if (c->job->res[i].state == QUEUE_RCPT_PENDING)
			relay_result_set(&c->job->res[i], r);
}

static void
relay_txn_reply(struct relay_conn *c, const struct relay_reply *r)
{
	struct relay_job *job = c->job;
	const struct relay_expect *e;
	char sum[RELAY_REPLY_SUMMARY_MAX];
	int cls = r->code / 100;
	size_t i;

	if (c->hexp >= c->nexp) {
		relay_conn_error(c, "4.4.2", "%s sent an unexpected reply", c->peer);
		relay_conn_fail(c);
		return;
	}
	e = &c->exp[c->hexp++];
	switch (e->kind) {
	case RC_EXP_RSET:
		if (cls != 2) {
			relay_conn_error(c, "4.4.2", "%s refused RSET: %s", c->peer,
			    relay_reply_summary(r, sum, sizeof(sum)));
			relay_conn_fail(c);
			return;
		}
		c->need_rset = false;
		break;
	case RC_EXP_MAIL:
		if (cls != 2) {
			c->mail_failed = true;
			for (i = 0; i < job->nrcpts; i++)
				relay_result_set(&job->res[i], r);
			/* 2xx on MAIL would have been a delivery: never let it count. */
		}
		break;
	case RC_EXP_RCPT:
		if (c->mail_failed)
			break;
		if (cls == 2)
			c->naccepted++;
		else
			relay_result_set(&job->res[e->i], r);
		break;
	case RC_EXP_DATA:
		if (r->code == 354) {
			if (c->mail_failed || c->naccepted == 0) {
				/* RFC 2920: nobody to deliver to, so the data is empty. */
				c->discard_data = true;
				if (relay_write(c, ".\r\n", 3) == -1) {
					relay_conn_fail(c);
					return;
				}
				relay_enter_state(c, RC_ST_DOT);
				return;
			}
			relay_body_start(c);
			return;
		}
		if (!c->mail_failed && c->naccepted > 0) {
			if (cls == 2 || cls == 3) {
				/* Not 354 and not an error: a confused peer; deliver nothing. */
				relay_conn_error(c, "4.4.2", "%s answered DATA with %s", c->peer,
				    relay_reply_summary(r, sum, sizeof(sum)));
				relay_conn_fail(c);
				return;
			}
			relay_txn_accepted(c, r);
		}
		c->need_rset = true;
		relay_txn_done(c);
		return;
	}
	if (c->hexp == c->nexp) {
		/* Only DATA ends the list; reaching here means it was not queued. */
		c->need_rset = true;
		relay_txn_done(c);
		return;
	}
	if (!(c->ehlo.ext & RELAY_EXT_PIPELINING)) {
		/* Without pipelining, stop as soon as nothing more can be delivered. */
		if (c->mail_failed || (c->exp[c->sent].kind == RC_EXP_DATA && c->naccepted == 0)) {
			c->need_rset = true;
			relay_txn_done(c);
			return;
		}
		if (relay_send_next(c) == -1)
			relay_conn_fail(c);
	}
}

static void
relay_dot_reply(struct relay_conn *c, const struct relay_reply *r)
{
	if (c->discard_data) {
		c->need_rset = true;
		relay_txn_done(c);
		return;
	}
	if (r->code / 100 == 3) {
		relay_conn_error(c, "4.4.2", "%s answered the end of data with %03d", c->peer,
		    r->code);
		relay_conn_fail(c);
		return;
	}
	relay_txn_accepted(c, r);
	c->need_rset = false;
	relay_txn_done(c);
}

void
relay_conn_send(struct relay_conn *c, struct relay_job *job)
{
	char reply[QUEUE_REPLY_MAX + 1];
	size_t i, n;

	event_del(c->ev_idle);
	c->job = job;
	job->started = true;
	job->tls = io_tls_established(c->io);
	mx_strlcpy(job->remote, c->targets[c->target].name, sizeof(job->remote));
	relay_txn_clear(c);

	if (job->env->smtputf8 && !(c->ehlo.ext & RELAY_EXT_SMTPUTF8)) {
		mx_snprintf(reply, sizeof(reply), "553 5.6.7 %s does not support SMTPUTF8, "
		    "which this message needs", c->peer);
		relay_job_settle(job, QUEUE_RCPT_FAILED, "5.6.7", reply);
		c->want_finish = true;
		relay_conn_kick(c);
		return;
	}
	c->body_fd = queue_body_open(job->env->id, &c->body_off, &c->body_len);
	if (c->body_fd == -1) {
		mx_snprintf(reply, sizeof(reply), "451 4.3.0 cannot open queued message: %s",
		    strerror(errno));
		relay_job_settle(job, QUEUE_RCPT_DEFERRED, "4.3.0", reply);
		c->want_finish = true;
		relay_conn_kick(c);
		return;
	}
	if ((c->ehlo.ext & RELAY_EXT_SIZE) && c->ehlo.size_max > 0 &&
	    c->body_len > c->ehlo.size_max) {
		mx_snprintf(reply, sizeof(reply), "552 5.3.4 message of %llu octets exceeds "
		    "the limit of %s (%llu)", (unsigned long long)c->body_len, c->peer,
		    (unsigned long long)c->ehlo.size_max);
		relay_job_settle(job, QUEUE_RCPT_FAILED, "5.3.4", reply);
		c->want_finish = true;
		relay_conn_kick(c);
		return;
	}

	n = job->nrcpts + 2 + (c->need_rset ? 1 : 0);
	if ((c->exp = calloc(n, sizeof(*c->exp))) == NULL) {
		relay_job_settle(job, QUEUE_RCPT_DEFERRED, "4.3.0", "451 4.3.0 out of memory");
		c->want_finish = true;
		relay_conn_kick(c);
		return;
	}
	if (c->need_rset)
		c->exp[c->nexp++].kind = RC_EXP_RSET;
	c->exp[c->nexp++].kind = RC_EXP_MAIL;
	for (i = 0; i < job->nrcpts; i++) {
		c->exp[c->nexp].kind = RC_EXP_RCPT;
		c->exp[c->nexp++].i = i;
	}
	c->exp[c->nexp++].kind = RC_EXP_DATA;
	relay_enter_state(c, RC_ST_TXN);
	/* RFC 2920: with PIPELINING the whole group, DATA last, goes at once. */
	do {
		if (relay_send_next(c) == -1) {
			io_free(&c->io);
			c->dying = true;
			relay_conn_kick(c);
			return;
		}
	} while ((c->ehlo.ext & RELAY_EXT_PIPELINING) && c->sent < c->nexp);
}

/* ---- Events ------------------------------------------------------------ */

static void
relay_conn_reply(struct relay_conn *c, const struct relay_reply *r)
{
	char sum[RELAY_REPLY_SUMMARY_MAX];

	if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("event=relay_reply conn=%08x state=%s reply=\"%s\"", c->id,
		    state_names[c->state], relay_reply_summary(r, sum, sizeof(sum)));
	switch (c->state) {
	case RC_ST_GREETING:
	case RC_ST_EHLO:
	case RC_ST_HELO:
	case RC_ST_STARTTLS:
	case RC_ST_EHLO_TLS:
		relay_conn_setup_reply(c, r);
		return;
	case RC_ST_TXN:
		relay_txn_reply(c, r);
		return;
	case RC_ST_BODY:
		/* The primary gave up on the data early: that is its answer. */
		c->need_rset = true;
		relay_txn_accepted(c, r);
		relay_job_finish(c);
		relay_conn_error(c, "4.4.2", "%s answered before the end of data", c->peer);
		relay_conn_fail(c);
		return;
	case RC_ST_DOT:
		relay_dot_reply(c, r);
		return;
	case RC_ST_QUIT:
		c->last_error[0] = '\0';
		io_free(&c->io);
		c->dying = true;
		relay_conn_kick(c);
		return;
	case RC_ST_IDLE:
	default:
		/* 421 on an idle connection is a goodbye; anything else is noise. */
		relay_conn_error(c, "4.4.2", "%s: unexpected %s", c->peer,
		    relay_reply_summary(r, sum, sizeof(sum)));
		relay_conn_fail(c);
		return;
	}
}

static void
relay_conn_read(struct relay_conn *c)
{
	struct relay_reply *r;
	struct mx_view line;
	size_t used;
	int n;

	if ((r = malloc(sizeof(*r))) == NULL) {
		relay_conn_error(c, "4.3.0", "out of memory");
		relay_conn_fail(c);
		return;
	}
	/* Each reply may free the io (or hand the connection on): look again every time. */
	while (c->io != NULL && !c->dying && c->state != RC_ST_CONNECT &&
	    c->state != RC_ST_HANDSHAKE) {
		n = io_line_peek(c->io, RELAY_REPLY_LINE_MAX, &line);
		if (n == 0)
			break;
		if (n == -1) {
			(*c_bad_replies)++;
			relay_conn_error(c, "4.4.2", "%s sent a reply line longer than %d octets",
			    c->peer, RELAY_REPLY_LINE_MAX);
			relay_conn_fail(c);
			break;
		}
		switch (relay_reply_feed(&c->parser, line.ptr, line.len, &used, r)) {
		case RELAY_REPLY_MORE:
			io_drain(c->io, line.len);
			continue;
		case RELAY_REPLY_BAD:
			(*c_bad_replies)++;
			relay_conn_error(c, "4.4.2", "%s sent a malformed reply: %s", c->peer,
			    c->parser.error);
			relay_conn_fail(c);
			break;
		case RELAY_REPLY_DONE:
			io_drain(c->io, used);
			relay_conn_reply(c, r);
			continue;
		}
		break;
	}
	free(r);
}

static void
relay_conn_on_event(struct io *io, enum io_event ev, void *arg)
{
	struct relay_conn *c = arg;
	char why[128], safe[LOG_SAFE_MAX];
	enum tls_verify v;

	switch (ev) {
	case IO_EV_CONNECTED:
		relay_enter_state(c, RC_ST_GREETING);
		return;
	case IO_EV_DATA:
		relay_conn_read(c);
		return;
	case IO_EV_DRAINED:
		if (c->state == RC_ST_BODY)
			relay_conn_pump(c);
		return;
	case IO_EV_TLS_READY:
		(*c_tls)++;
		why[0] = '\0';
		/* The policy asks for encryption, not for a trusted certificate: log what it is. */
		v = io_tls_verify(io, NULL, why, sizeof(why));
		log_safe(safe, sizeof(safe), why, strlen(why));
		log_info("event=relay_tls conn=%08x peer=%s version=%s cipher=%s verify=%s%s%s",
		    c->id, c->peer, io_tls_version_name(io) ? io_tls_version_name(io) : "-",
		    io_tls_cipher_name(io) ? io_tls_cipher_name(io) : "-", tls_verify_name(v),
		    why[0] ? " detail=" : "", why[0] ? safe : "");
		relay_conn_ehlo(c, RC_ST_EHLO_TLS);
		return;
	case IO_EV_CLOSED:
		/* A primary may end an idle session whenever it likes. */
		if (c->state == RC_ST_QUIT || (c->state == RC_ST_IDLE && c->job == NULL)) {
			c->last_error[0] = '\0';
			io_free(&c->io);
			c->dying = true;
			relay_conn_kick(c);
			return;
		}
		relay_conn_error(c, "4.4.2", "%s closed the connection in state %s", c->peer,
		    state_names[c->state]);
		relay_conn_fail(c);
		return;
	case IO_EV_TIMEOUT:
	case IO_EV_ERROR:
	default:
		if (c->state == RC_ST_QUIT) {
			c->last_error[0] = '\0';
			io_free(&c->io);
			c->dying = true;
			relay_conn_kick(c);
			return;
		}
		if (c->state == RC_ST_HANDSHAKE && !c->tls_required && !c->tls_skip) {
			/* Opportunistic TLS that fails: the same host once more, in plaintext. */
			relay_conn_error(c, "4.7.5", "TLS handshake with %s failed: %s", c->peer,
			    io_error_string(io));
			log_safe(safe, sizeof(safe), c->last_error, strlen(c->last_error));
			log_info("event=relay_tls_failed conn=%08x peer=%s error=%s "
			    "retry=plaintext", c->id, c->peer, safe);
			io_free(&c->io);
			c->tls_skip = true;
			relay_conn_try(c);
			return;
		}
		relay_conn_error(c, c->state == RC_ST_HANDSHAKE ? "4.7.5" : c->state ==
		    RC_ST_CONNECT ? "4.4.1" : "4.4.2", "%s: %s%s (state %s)", c->peer,
		    ev == IO_EV_TIMEOUT ? "timeout: " : "", io_error_string(io),
		    state_names[c->state]);
		relay_conn_fail(c);
		return;
	}
}

static void
relay_conn_on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct relay_conn *c = arg;

	if (c->dying) {
		relay_conn_free(c, !c->ready_once);
		return;
	}
	if (c->want_finish) {
		c->want_finish = false;
		relay_job_finish(c);
		relay_conn_ready(c);
		return;
	}
	if (c->want_ready && c->state == RC_ST_IDLE && c->job == NULL) {
		struct timeval tv = { RELAY_IDLE_SECS, 0 };

		c->want_ready = false;
		if (c->quit_after) {
			relay_conn_quit(c);
			return;
		}
		event_add(c->ev_idle, &tv);
		relay_sched_conn_ready(c, c->dest);
	}
}

static void
relay_conn_on_idle(evutil_socket_t fd, short what, void *arg)
{
	relay_conn_quit(arg);
}

void
relay_conn_quit(struct relay_conn *c)
{
	event_del(c->ev_idle);
	if (c->state != RC_ST_IDLE || c->job != NULL || c->io == NULL) {
		c->quit_after = true;
		return;
	}
	c->want_ready = false;
	if (relay_cmd(c, "QUIT\r\n") == -1) {
		c->dying = true;
		relay_conn_kick(c);
		return;
	}
	io_set_read_deadline(c->io, RELAY_QUIT_SECS, 0);
	relay_enter_state(c, RC_ST_QUIT);
}

struct relay_conn *
relay_conn_open(struct relay_dest *dest, const struct relay_conn_params *p)
{
	struct relay_conn *c;

	relay_counters();
	if (p->ntargets == 0 || (c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->dest = dest;
	c->id = ++next_id;
	c->body_fd = -1;
	c->started = mx_now_usec();
	c->tls_required = p->tls_required;
	mx_buf_init(&c->out, 0);
	mx_strlcpy(c->domain, p->domain, sizeof(c->domain));
	if ((c->targets = calloc(p->ntargets, sizeof(*c->targets))) == NULL ||
	    (c->ev_kick = event_new(mxd->base, -1, 0, relay_conn_on_kick, c)) == NULL ||
	    (c->ev_idle = evtimer_new(mxd->base, relay_conn_on_idle, c)) == NULL) {
		if (c->ev_kick != NULL)
			event_free(c->ev_kick);
		free(c->targets);
		free(c);
		return NULL;
	}
	memcpy(c->targets, p->targets, p->ntargets * sizeof(*c->targets));
	c->ntargets = p->ntargets;
	if (p->creds != NULL)
		c->creds = tls_creds_ref(p->creds);
	(*c_conns)++;
	daemon_hold();
	relay_conn_try(c);
	return c;
}
