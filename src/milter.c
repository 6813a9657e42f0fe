/*
 * The milter client (see milter.h for the model).  Owns, per SMTP session,
 * one connection per milter of the configured set, and the transaction's
 * milter state: which milters accepted, the sticky verdicts, the collected
 * modifications.  All of it is forgotten at milter_chain_abort().
 *
 * Trust: milters are separate programs and may be broken or hostile.  Every
 * packet goes through milter_proto.c's strict decoder; a reply that does not
 * fit the command it answers, a modification the milter did not negotiate,
 * a header value that could smuggle a line, silence past a deadline, or a
 * closed connection fails that milter.  A failed milter stays failed for
 * the session and its on_failure policy answers for it.
 *
 * Ordering: one command at a time per milter, and the milters of a
 * transaction in config order; an event completes when every milter has
 * answered it (or one decided).  Completions always run from the event
 * loop, through a deferred event, so a caller never sees its callback
 * before its call returned.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "addr.h"
#include "io.h"
#include "log.h"
#include "milter.h"
#include "milter_proto.h"
#include "stats.h"

#define MILTER_LINGER_SEC 2		/* to deliver QUIT before closing */
#define MILTER_BODY_MAX (64u << 20)	/* a replaced body we keep at most */
#define MILTER_MODS_MAX 1024		/* modifications per message */

static const char reply_reject[] = "550 5.7.1 Command rejected";
static const char reply_tempfail[] = "451 4.7.1 Service unavailable - try again later";
static const char reply_shutdown[] = "421 4.7.0 Service unavailable - closing connection";
static const char reply_other_list[] =
    "452 4.5.3 Too many recipients: send this one in another transaction";

struct milter_target {
	char name[64];
	char address[CONF_PATH_MAX];
	struct sockaddr_storage ss;
	socklen_t sslen;
	int connect_timeout;
	int command_timeout;
	int content_timeout;
	enum milter_failure on_failure;
};

struct milter_set {
	int refs;
	size_t n;
	struct milter_target t[CONF_MAX_MILTERS];
};

enum mconn_state {
	MC_IDLE = 0,		/* not connected yet */
	MC_CONNECTING,
	MC_NEGOTIATING,		/* OPTNEG sent */
	MC_READY,
	MC_FAILED,		/* for the rest of the session */
};

/* What the milter's next packet answers. */
enum mconn_wait {
	MW_NONE = 0,
	MW_OPTNEG,
	MW_CONNECT,
	MW_HELO,
	MW_MAIL,
	MW_EVENT,		/* the chain's current event */
};

enum chain_event {
	EV_NONE = 0,
	EV_RCPT,
	EV_DATA,
	EV_HEADER,
	EV_EOH,
	EV_BODY,
	EV_EOM,
};

static const char *const event_names[] = {
	"none", "rcpt", "data", "header", "eoh", "body", "eom"
};
static const char *const wait_names[] = {
	"nothing", "option negotiation", "connect", "helo", "mail", "event"
};

/* A decision that outlives the command that produced it. */
struct verdict {
	enum milter_decision d;		/* CONTINUE: none */
	int code;
	char *reply;
	const char *milter;
};

struct mconn {
	struct milter_chain *chain;
	const struct milter_target *t;
	size_t idx;
	struct io *io;
	struct event *timer;
	enum mconn_state state;
	enum mconn_wait wait;
	bool drain;		/* the transaction under this reply was aborted: ignore it */
	uint32_t actions;	/* negotiated */
	uint32_t protocol;
	char *symlist[MILTER_NSTAGES];
	bool conn_sent;
	unsigned int helo_gen;
	bool conn_accepted;	/* accepted at connect/HELO: nothing more this session */
	struct verdict conn_v;	/* refused at connect/HELO */
	bool in_txn;		/* MAIL sent in this transaction */
	bool txn_accepted;
	bool body_skip;
	bool replbody;		/* sent a body replacement in this message */
	size_t mods_start;
};

struct milter_chain {
	struct event_base *base;
	struct milter_set *set;
	size_t n;
	struct mconn *m;
	struct event *done_ev;
	uint32_t session_id;

	/* Session facts, for the macros and the replays. */
	char family;
	uint16_t port;
	char client_addr[ADDR_STR_MAX];
	char client_port[8];
	char client_name[ADDR_HOST_MAX + 2];
	char if_addr[ADDR_STR_MAX];
	char hostname[ADDR_HOST_MAX];
	char daemon_name[64];
	char underscore[ADDR_HOST_MAX + ADDR_STR_MAX + 4];	/* "_": "name [addr]" */
	char *helo;
	unsigned int helo_gen;
	char *tls_version;
	char *cipher;
	char *queue_id;
	bool shutdown;		/* a 421 was decided: every later event gets it */

	/* The transaction. */
	bool in_txn;
	char *mail_path;
	char *mail_addr;
	char **mail_args;
	size_t n_mail_args;
	bool txn_fixed;		/* the first RCPT chose the milters */
	uint32_t txn_mask;
	bool txn_missing;	/* the domain names a milter that is not configured */
	struct verdict txn_v;	/* message-wide decision */
	struct milter_mod *mods;
	size_t nmods;
	size_t cap_mods;
	bool quarantine;
	char *quarantine_reason;
	struct mx_buf newbody;
	bool body_replaced;

	/* The event in progress. */
	enum chain_event ev;
	size_t cur;
	size_t body_off;
	milter_cb cb;
	void *cb_arg;
	char *ev_path;
	char *ev_addr;
	char **ev_args;
	size_t n_ev_args;
	char *ev_name;
	char *ev_value;
	struct mx_buf ev_body;
	uint64_t eom_deadline;	/* monotonic usec */
	struct milter_result result;
	char *result_reply;

	/* milter_chain_message() */
	const unsigned char *msg;
	size_t msg_len;
	size_t msg_off;
	bool msg_in_body;
	milter_cb msg_cb;
	void *msg_arg;
};

static struct milter_set *current_set;

static void mconn_step(struct mconn *m);
static void chain_run(struct milter_chain *c);

static void
count(const char *name)
{
	(*stats_counter(name))++;
}

static char *
xstrdup(const char *s)
{
	return s == NULL ? NULL : strdup(s);
}

static void
verdict_clear(struct verdict *v)
{
	free(v->reply);
	memset(v, 0, sizeof(*v));
}

static int
verdict_set(struct verdict *v, enum milter_decision d, int code, const char *reply,
    const char *milter)
{
	char *r = strdup(reply);

	if (r == NULL)
		return -1;
	verdict_clear(v);
	v->d = d;
	v->code = code;
	v->reply = r;
	v->milter = milter;
	return 0;
}

/* Set ----------------------------------------------------------------------- */

static int
target_resolve(const struct conf_milter *cm, struct milter_target *t, char *err, size_t errsize)
{
	memset(t, 0, sizeof(*t));
	mx_strlcpy(t->name, cm->name, sizeof(t->name));
	mx_strlcpy(t->address, cm->address, sizeof(t->address));
	t->connect_timeout = (int)cm->connect_timeout;
	t->command_timeout = (int)cm->command_timeout;
	t->content_timeout = (int)cm->content_timeout;
	t->on_failure = cm->on_failure;
	if (strncmp(cm->address, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&t->ss;

		sun->sun_family = AF_UNIX;
		if (mx_strlcpy(sun->sun_path, cm->address + 5, sizeof(sun->sun_path)) == -1) {
			snprintf(err, errsize, "milter %s: socket path too long", cm->name);
			return -1;
		}
		t->sslen = sizeof(*sun);
		return 0;
	}
	if (strncmp(cm->address, "inet:", 5) == 0) {
		struct addr_hostport hp;
		struct addrinfo hints, *res;
		const char *e;
		char port[8];
		int r;

		if (addr_parse_hostport(cm->address + 5, 0, &hp, &e) == -1 || hp.port == 0) {
			snprintf(err, errsize, "milter %s: bad address %s", cm->name, cm->address);
			return -1;
		}
		if (hp.kind != ADDR_HOST_NAME)
			return addr_hostport_sockaddr(&hp, &t->ss, &t->sslen) == 0 ? 0 :
			    (snprintf(err, errsize, "milter %s: bad address", cm->name), -1);
		/* A name: resolved once here, at start or reload, never per session. */
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		snprintf(port, sizeof(port), "%u", hp.port);
		if ((r = getaddrinfo(hp.host, port, &hints, &res)) != 0) {
			snprintf(err, errsize, "milter %s: cannot resolve %s: %s", cm->name, hp.host,
			    gai_strerror(r));
			return -1;
		}
		memcpy(&t->ss, res->ai_addr, res->ai_addrlen);
		t->sslen = res->ai_addrlen;
		freeaddrinfo(res);
		return 0;
	}
	snprintf(err, errsize, "milter %s: address must be unix: or inet:", cm->name);
	return -1;
}

struct milter_set *
milter_set_new(const struct conf *c, char *err, size_t errsize)
{
	struct milter_set *s;
	int i;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	s->refs = 1;
	for (i = 0; i < c->n_milters && i < CONF_MAX_MILTERS; i++) {
		if (target_resolve(&c->milters[i], &s->t[s->n], err, errsize) == -1) {
			free(s);
			return NULL;
		}
		s->n++;
	}
	return s;
}

struct milter_set *
milter_set_ref(struct milter_set *s)
{
	if (s != NULL)
		s->refs++;
	return s;
}

void
milter_set_unref(struct milter_set **sp)
{
	struct milter_set *s = *sp;

	*sp = NULL;
	if (s != NULL && --s->refs == 0)
		free(s);
}

size_t
milter_set_count(const struct milter_set *s)
{
	return s == NULL ? 0 : s->n;
}

struct milter_set *
milter_set_current(void)
{
	if (current_set == NULL || current_set->n == 0)
		return NULL;
	return milter_set_ref(current_set);
}

/* Bits of the set named by a domain's list; *missing when a name is not configured. */
static uint32_t
set_mask(const struct milter_set *s, const char *list, bool *missing)
{
	uint32_t mask = 0;
	const char *p = list;
	size_t i;

	*missing = false;
	if (s == NULL)
		return 0;
	if (list == NULL || list[0] == '\0') {
		for (i = 0; i < s->n; i++)
			mask |= 1u << i;
		return mask;
	}
	if (strcmp(list, "none") == 0)
		return 0;
	while (*p != '\0') {
		const char *w = p;
		size_t len;
		bool found = false;

		while (*p != '\0' && *p != ',')
			p++;
		len = (size_t)(p - w);
		if (*p == ',')
			p++;
		if (len == 0)
			continue;
		for (i = 0; i < s->n; i++)
			if (strlen(s->t[i].name) == len && memcmp(s->t[i].name, w, len) == 0) {
				mask |= 1u << i;
				found = true;
			}
		if (!found)
			*missing = true;
	}
	return mask;
}

/* Results -------------------------------------------------------------------- */

static void
chain_done(evutil_socket_t fd, short what, void *arg)
{
	struct milter_chain *c = arg;
	milter_cb cb = c->cb;

	c->cb = NULL;
	if (cb != NULL)
		cb(&c->result, c->cb_arg);	/* may free c: nothing after this */
}

static void
chain_log_verdict(struct milter_chain *c, const char *milter, const char *what,
    const char *reply)
{
	char safe[LOG_SAFE_MAX];

	log_info("event=milter_verdict session=%08x milter=%s stage=%s verdict=%s reply=\"%s\"",
	    c->session_id, milter != NULL ? milter : "-", event_names[c->ev], what,
	    log_safe(safe, sizeof(safe), reply, strlen(reply)));
}

/* Finish the current event with a decision; the callback runs from the loop. */
static void
chain_finish(struct milter_chain *c, enum milter_decision d, int code, const char *reply,
    const char *milter)
{
	struct milter_result *r = &c->result;

	free(c->result_reply);
	c->result_reply = NULL;
	memset(r, 0, sizeof(*r));
	r->decision = d;
	if (d != MILTER_D_CONTINUE && reply != NULL) {
		if ((c->result_reply = strdup(reply)) == NULL) {
			/* Without memory the safe answer is a temporary failure. */
			r->decision = MILTER_D_TEMPFAIL;
			r->code = 451;
			r->reply = reply_tempfail;
		} else {
			r->code = code;
			r->reply = c->result_reply;
		}
		r->milter = milter;
	}
	if (c->ev == EV_EOM && r->decision == MILTER_D_CONTINUE) {
		r->quarantine = c->quarantine;
		r->quarantine_reason = c->quarantine_reason;
		r->nmods = c->nmods;
		r->mods = c->mods;
		r->body_replaced = c->body_replaced;
		r->body = c->newbody.data;
		r->body_len = c->newbody.len;
	}
	switch (r->decision) {
	case MILTER_D_REJECT:
		count("milter.rejected");
		break;
	case MILTER_D_TEMPFAIL:
		count("milter.tempfailed");
		break;
	case MILTER_D_DISCARD:
		count("milter.discarded");
		break;
	case MILTER_D_SHUTDOWN:
		count("milter.shutdown");
		break;
	default:
		break;
	}
	c->ev = EV_NONE;
	event_active(c->done_ev, EV_TIMEOUT, 0);
}

/* A decision valid for the rest of the transaction (data phase, MAIL, connect). */
static void
chain_finish_sticky(struct milter_chain *c, enum milter_decision d, int code,
    const char *reply, const char *milter)
{
	if (d == MILTER_D_SHUTDOWN)
		c->shutdown = true;
	else if (d != MILTER_D_CONTINUE && c->txn_v.d == MILTER_D_CONTINUE)
		(void)verdict_set(&c->txn_v, d, code, reply, milter);
	chain_finish(c, d, code, reply, milter);
}

static bool
event_is_message(enum chain_event ev)
{
	return ev == EV_DATA || ev == EV_HEADER || ev == EV_EOH || ev == EV_BODY ||
	    ev == EV_EOM;
}

/* The milter's own policy answers for it. */
static void
chain_policy(struct mconn *m)
{
	struct milter_chain *c = m->chain;
	bool sticky = event_is_message(c->ev);

	switch (m->t->on_failure) {
	case MILTER_FAIL_ACCEPT:
		c->cur++;
		c->body_off = 0;
		chain_run(c);
		return;
	case MILTER_FAIL_REJECT:
		chain_log_verdict(c, m->t->name, "policy-reject", reply_reject);
		if (sticky)
			chain_finish_sticky(c, MILTER_D_REJECT, 550, reply_reject, m->t->name);
		else
			chain_finish(c, MILTER_D_REJECT, 550, reply_reject, m->t->name);
		return;
	case MILTER_FAIL_421:
		chain_log_verdict(c, m->t->name, "policy-421", reply_shutdown);
		chain_finish_sticky(c, MILTER_D_SHUTDOWN, 421, reply_shutdown, m->t->name);
		return;
	case MILTER_FAIL_TEMPFAIL:
	default:
		chain_log_verdict(c, m->t->name, "policy-tempfail", reply_tempfail);
		if (sticky)
			chain_finish_sticky(c, MILTER_D_TEMPFAIL, 451, reply_tempfail, m->t->name);
		else
			chain_finish(c, MILTER_D_TEMPFAIL, 451, reply_tempfail, m->t->name);
		return;
	}
}

static const char *
failure_name(enum milter_failure f)
{
	switch (f) {
	case MILTER_FAIL_ACCEPT:
		return "accept";
	case MILTER_FAIL_REJECT:
		return "reject";
	case MILTER_FAIL_421:
		return "421";
	default:
		return "tempfail";
	}
}

/* Connections ------------------------------------------------------------------ */

static void
mconn_close(struct mconn *m)
{
	if (m->timer != NULL)
		evtimer_del(m->timer);
	io_free(&m->io);
}

/*
 * The milter is broken: close it, forget its half-made modifications, and
 * if the chain is waiting on it, let its policy answer.
 */
static void
mconn_fail(struct mconn *m, const char *fmt, ...) MX_PRINTF(2, 3);

static void
mconn_fail(struct mconn *m, const char *fmt, ...)
{
	struct milter_chain *c = m->chain;
	char why[256], safe[LOG_SAFE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_warnx("event=milter_failed session=%08x milter=%s address=%s reason=\"%s\" "
	    "on_failure=%s", c->session_id, m->t->name, m->t->address,
	    log_safe(safe, sizeof(safe), why, strlen(why)), failure_name(m->t->on_failure));
	count("milter.failed");
	mconn_close(m);
	m->state = MC_FAILED;
	m->wait = MW_NONE;
	m->drain = false;
	if (c->ev == EV_EOM && c->cur == m->idx) {
		size_t i;

		for (i = m->mods_start; i < c->nmods; i++) {
			free(c->mods[i].name);
			free(c->mods[i].value);
			free(c->mods[i].args);
		}
		if (c->nmods > m->mods_start)
			c->nmods = m->mods_start;
	}
	if (c->ev != EV_NONE && c->cur == m->idx)
		chain_policy(m);
}

static void
mconn_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct mconn *m = arg;

	mconn_fail(m, "no reply to %s within the deadline", wait_names[m->wait]);
}

static void
mconn_wait_for(struct mconn *m, enum mconn_wait w, int seconds)
{
	struct milter_chain *c = m->chain;
	struct timeval tv;
	uint64_t usec = (uint64_t)seconds * 1000000u;

	if (c->ev == EV_EOM && w == MW_EVENT) {
		uint64_t now = mx_now_usec();
		uint64_t left = c->eom_deadline > now ? c->eom_deadline - now : 0;

		if (left < usec)
			usec = left;
	}
	m->wait = w;
	tv.tv_sec = (time_t)(usec / 1000000u);
	tv.tv_usec = (suseconds_t)(usec % 1000000u);
	evtimer_add(m->timer, &tv);
}

static int
mconn_send(struct mconn *m, struct mx_buf *b)
{
	if (io_write(m->io, b->data, b->len) == -1) {
		mx_buf_reset(b);
		mconn_fail(m, "write: %s", strerror(errno));
		return -1;
	}
	mx_buf_reset(b);
	return 0;
}

/* The macros of a stage, filtered by the milter's SETSYMLIST, as one packet (or none). */
static int
put_stage_macros(struct mconn *m, struct mx_buf *b, enum milter_stage stage, char cmd)
{
	struct milter_chain *c = m->chain;
	struct milter_macro all[12], keep[12];
	size_t n = 0, k = 0, i;

	switch (stage) {
	case MILTER_STAGE_CONNECT:
		all[n++] = (struct milter_macro){ "j", c->hostname };
		all[n++] = (struct milter_macro){ "{daemon_name}", c->daemon_name };
		all[n++] = (struct milter_macro){ "{client_addr}", c->client_addr };
		all[n++] = (struct milter_macro){ "{client_port}", c->client_port };
		all[n++] = (struct milter_macro){ "{client_name}", c->client_name };
		all[n++] = (struct milter_macro){ "{if_addr}",
		    c->if_addr[0] != '\0' ? c->if_addr : NULL };
		all[n++] = (struct milter_macro){ "_", c->underscore };
		break;
	case MILTER_STAGE_HELO:
		all[n++] = (struct milter_macro){ "{tls_version}", c->tls_version };
		all[n++] = (struct milter_macro){ "{cipher}", c->cipher };
		break;
	case MILTER_STAGE_MAIL:
		all[n++] = (struct milter_macro){ "i", c->queue_id };
		all[n++] = (struct milter_macro){ "{mail_addr}", c->mail_addr };
		all[n++] = (struct milter_macro){ "{tls_version}", c->tls_version };
		all[n++] = (struct milter_macro){ "{cipher}", c->cipher };
		break;
	case MILTER_STAGE_RCPT:
		all[n++] = (struct milter_macro){ "i", c->queue_id };
		all[n++] = (struct milter_macro){ "{rcpt_addr}", c->ev_addr };
		break;
	default:
		all[n++] = (struct milter_macro){ "i", c->queue_id };
		break;
	}
	for (i = 0; i < n; i++) {
		if (all[i].value == NULL)
			continue;
		if (m->symlist[stage] != NULL && !milter_symlist_has(m->symlist[stage], all[i].name))
			continue;
		keep[k++] = all[i];
	}
	if (k == 0)
		return 0;
	return milter_put_macros(b, cmd, keep, k);
}

static void
mconn_send_optneg(struct mconn *m)
{
	struct mx_buf b;

	mx_buf_init(&b, 0);
	if (milter_put_optneg(&b, MILTER_VERSION, MILTER_ACT_ALL, MILTER_P_OFFER) == -1) {
		mx_buf_free(&b);
		mconn_fail(m, "cannot encode option negotiation");
		return;
	}
	m->state = MC_NEGOTIATING;
	if (mconn_send(m, &b) == 0)
		mconn_wait_for(m, MW_OPTNEG, m->t->command_timeout);
	mx_buf_free(&b);
}

static void mconn_on_io(struct io *io, enum io_event ev, void *arg);

static void
mconn_connect(struct mconn *m)
{
	struct milter_chain *c = m->chain;
	static const struct io_callbacks cbs = { mconn_on_io };

	m->state = MC_CONNECTING;
	m->io = io_connect(c->base, (const struct sockaddr *)&m->t->ss, m->t->sslen,
	    m->t->connect_timeout, &cbs, m);
	if (m->io == NULL) {
		mconn_fail(m, "connect: %s", strerror(errno));
		return;
	}
	io_set_read_limit(m->io, MILTER_PACKET_MAX + 8);
}

/* Move on to the next milter of the event. */
static void
chain_next(struct milter_chain *c)
{
	c->cur++;
	c->body_off = 0;
	chain_run(c);
}

/* A header value as milters want it: LF folding, no leading space unless asked. */
static int
header_for_milter(const struct mconn *m, const char *value, struct mx_buf *out)
{
	const char *p = value;

	if ((m->protocol & MILTER_P_HDR_LEADSPC) == 0)
		while (*p == ' ' || *p == '\t')
			p++;
	for (; *p != '\0'; p++) {
		if (p[0] == '\r' && p[1] == '\n')
			continue;
		if (mx_buf_add(out, p, 1) == -1)
			return -1;
	}
	return mx_buf_add(out, "", 1) == -1 ? -1 : 0;
}

/* Send the event to milter m; returns true when a reply is awaited. */
static void
mconn_send_event(struct mconn *m)
{
	struct milter_chain *c = m->chain;
	struct mx_buf b, v;
	uint32_t p = m->protocol;
	bool reply = true;
	int timeout = m->t->command_timeout, r = 0;

	mx_buf_init(&b, 0);
	switch (c->ev) {
	case EV_RCPT:
		if (p & MILTER_P_NORCPT)
			goto skip;
		r = put_stage_macros(m, &b, MILTER_STAGE_RCPT, MILTER_C_RCPT);
		if (r == 0)
			r = milter_put_rcpt(&b, c->ev_path, (const char *const *)c->ev_args,
			    c->n_ev_args);
		reply = (p & MILTER_P_NR_RCPT) == 0;
		break;
	case EV_DATA:
		if (p & MILTER_P_NODATA)
			goto skip;
		r = put_stage_macros(m, &b, MILTER_STAGE_DATA, MILTER_C_DATA);
		if (r == 0)
			r = milter_put_simple(&b, MILTER_C_DATA);
		reply = (p & MILTER_P_NR_DATA) == 0;
		break;
	case EV_HEADER:
		if (p & MILTER_P_NOHDRS)
			goto skip;
		mx_buf_init(&v, 0);
		r = header_for_milter(m, c->ev_value, &v);
		if (r == 0)
			r = milter_put_header(&b, c->ev_name, (const char *)v.data);
		mx_buf_free(&v);
		reply = (p & MILTER_P_NR_HDR) == 0;
		break;
	case EV_EOH:
		if (p & MILTER_P_NOEOH)
			goto skip;
		r = put_stage_macros(m, &b, MILTER_STAGE_EOH, MILTER_C_EOH);
		if (r == 0)
			r = milter_put_simple(&b, MILTER_C_EOH);
		reply = (p & MILTER_P_NR_EOH) == 0;
		break;
	case EV_BODY:
		if ((p & MILTER_P_NOBODY) || m->body_skip)
			goto skip;
		reply = (p & MILTER_P_NR_BODY) == 0;
		timeout = m->t->content_timeout;
		/* Without replies every chunk goes at once; with them, one per reply. */
		do {
			size_t n = c->ev_body.len - c->body_off;

			if (n > MILTER_CHUNK_MAX)
				n = MILTER_CHUNK_MAX;
			r = milter_put_body(&b, c->ev_body.data + c->body_off, n);
			c->body_off += n;
		} while (r == 0 && !reply && c->body_off < c->ev_body.len);
		break;
	case EV_EOM:
		m->mods_start = c->nmods;
		m->replbody = false;
		r = put_stage_macros(m, &b, MILTER_STAGE_EOM, MILTER_C_BODYEOB);
		if (r == 0)
			r = milter_put_simple(&b, MILTER_C_BODYEOB);
		timeout = m->t->content_timeout;
		break;
	default:
		goto skip;
	}
	if (r == -1) {
		mx_buf_free(&b);
		mconn_fail(m, "cannot encode %s: %s", event_names[c->ev], strerror(errno));
		return;
	}
	if (mconn_send(m, &b) == -1) {
		mx_buf_free(&b);
		return;
	}
	mx_buf_free(&b);
	if (reply) {
		mconn_wait_for(m, MW_EVENT, timeout);
		return;
	}
skip:
	mx_buf_free(&b);
	chain_next(c);
}

/*
 * Bring milter m up to the chain's current event (connect, negotiate,
 * replay connect, HELO and MAIL as needed), then send it the event.  Called
 * whenever m is idle and the event is at m.
 */
static void
mconn_step(struct mconn *m)
{
	struct milter_chain *c = m->chain;
	struct mx_buf b;
	uint32_t p;
	int r;

	if (c->ev == EV_NONE || c->cur != m->idx || m->wait != MW_NONE)
		return;
	switch (m->state) {
	case MC_FAILED:
		chain_policy(m);
		return;
	case MC_IDLE:
		mconn_connect(m);
		return;
	case MC_CONNECTING:
	case MC_NEGOTIATING:
		return;
	case MC_READY:
		break;
	}
	p = m->protocol;
	mx_buf_init(&b, 0);
	if (!m->conn_sent) {
		m->conn_sent = true;
		if ((p & MILTER_P_NOCONNECT) == 0) {
			r = put_stage_macros(m, &b, MILTER_STAGE_CONNECT, MILTER_C_CONNECT);
			if (r == 0)
				r = milter_put_connect(&b, c->client_name, c->family, c->port,
				    c->client_addr);
			if (r == -1 || mconn_send(m, &b) == -1)
				goto fail;
			if ((p & MILTER_P_NR_CONN) == 0) {
				mx_buf_free(&b);
				mconn_wait_for(m, MW_CONNECT, m->t->command_timeout);
				return;
			}
		}
	}
	if (m->conn_accepted) {
		mx_buf_free(&b);
		chain_next(c);
		return;
	}
	if (m->conn_v.d != MILTER_D_CONTINUE) {
		/* Refused at connect or HELO: every transaction with it is refused. */
		mx_buf_free(&b);
		chain_finish_sticky(c, m->conn_v.d, m->conn_v.code, m->conn_v.reply,
		    m->t->name);
		return;
	}
	if (m->helo_gen != c->helo_gen && c->helo != NULL) {
		m->helo_gen = c->helo_gen;
		if ((p & MILTER_P_NOHELO) == 0) {
			r = put_stage_macros(m, &b, MILTER_STAGE_HELO, MILTER_C_HELO);
			if (r == 0)
				r = milter_put_helo(&b, c->helo);
			if (r == -1 || mconn_send(m, &b) == -1)
				goto fail;
			if ((p & MILTER_P_NR_HELO) == 0) {
				mx_buf_free(&b);
				mconn_wait_for(m, MW_HELO, m->t->command_timeout);
				return;
			}
		}
	}
	if (!m->in_txn) {
		m->in_txn = true;
		if ((p & MILTER_P_NOMAIL) == 0) {
			r = put_stage_macros(m, &b, MILTER_STAGE_MAIL, MILTER_C_MAIL);
			if (r == 0)
				r = milter_put_mail(&b, c->mail_path,
				    (const char *const *)c->mail_args, c->n_mail_args);
			if (r == -1 || mconn_send(m, &b) == -1)
				goto fail;
			if ((p & MILTER_P_NR_MAIL) == 0) {
				mx_buf_free(&b);
				mconn_wait_for(m, MW_MAIL, m->t->command_timeout);
				return;
			}
		}
	}
	mx_buf_free(&b);
	if (m->txn_accepted) {
		chain_next(c);
		return;
	}
	mconn_send_event(m);
	return;
fail:
	mx_buf_free(&b);
	if (m->state != MC_FAILED)
		mconn_fail(m, "cannot encode a command: %s", strerror(errno));
}

/* Run the current event at the next milter of the transaction, or finish it. */
static void
chain_run(struct milter_chain *c)
{
	while (c->cur < c->n && (c->txn_mask & (1u << c->cur)) == 0)
		c->cur++;
	if (c->cur >= c->n) {
		chain_finish(c, MILTER_D_CONTINUE, 0, NULL, NULL);
		return;
	}
	mconn_step(&c->m[c->cur]);
}

/* Replies ------------------------------------------------------------------------ */

static bool
action_allowed(const struct mconn *m, enum milter_reply_kind k)
{
	uint32_t a = m->actions;

	switch (k) {
	case MILTER_RK_ADDHEADER:
	case MILTER_RK_INSHEADER:
		return (a & MILTER_ACT_ADDHDRS) != 0;
	case MILTER_RK_CHGHEADER:
		return (a & MILTER_ACT_CHGHDRS) != 0;
	case MILTER_RK_QUARANTINE:
		return (a & MILTER_ACT_QUARANTINE) != 0;
	case MILTER_RK_ADDRCPT:
		return (a & MILTER_ACT_ADDRCPT) != 0;
	case MILTER_RK_ADDRCPT_PAR:
		return (a & MILTER_ACT_ADDRCPT_PAR) != 0;
	case MILTER_RK_DELRCPT:
		return (a & MILTER_ACT_DELRCPT) != 0;
	case MILTER_RK_CHGFROM:
		return (a & MILTER_ACT_CHGFROM) != 0;
	case MILTER_RK_REPLBODY:
		return (a & MILTER_ACT_CHGBODY) != 0;
	default:
		return false;
	}
}

static int
printable_copy(const char *s, char **out)
{
	size_t i, n = strlen(s);
	char *d = malloc(n + 1);

	if (d == NULL)
		return -1;
	for (i = 0; i < n; i++)
		d[i] = (s[i] < 0x20 || s[i] > 0x7e) ? '?' : s[i];
	d[n] = '\0';
	*out = d;
	return 0;
}

/* A modification at end of message: checked, normalised, kept.  0 or -1 (failed). */
static int
mconn_modify(struct mconn *m, const struct milter_reply *r)
{
	struct milter_chain *c = m->chain;
	struct milter_mod *mod;
	const char *err;

	if (!action_allowed(m, r->kind)) {
		mconn_fail(m, "%s without negotiating it", milter_reply_kind_name(r->kind));
		return -1;
	}
	if (r->kind == MILTER_RK_QUARANTINE) {
		free(c->quarantine_reason);
		c->quarantine_reason = NULL;
		if (printable_copy(r->value, &c->quarantine_reason) == -1) {
			mconn_fail(m, "out of memory");
			return -1;
		}
		c->quarantine = true;
		return 0;
	}
	if (r->kind == MILTER_RK_REPLBODY) {
		if (!m->replbody) {
			/* Each milter's replacement is whole; a later milter's wins. */
			mx_buf_reset(&c->newbody);
			m->replbody = true;
		}
		if (mx_buf_add(&c->newbody, r->body.ptr, r->body.len) == -1) {
			mconn_fail(m, "replacement body too large");
			return -1;
		}
		c->body_replaced = true;
		return 0;
	}
	if (c->nmods >= MILTER_MODS_MAX) {
		mconn_fail(m, "too many modifications");
		return -1;
	}
	if (c->nmods == c->cap_mods) {
		size_t ncap = c->cap_mods ? c->cap_mods * 2 : 8;
		struct milter_mod *nm = realloc(c->mods, ncap * sizeof(*nm));

		if (nm == NULL) {
			mconn_fail(m, "out of memory");
			return -1;
		}
		c->mods = nm;
		c->cap_mods = ncap;
	}
	mod = &c->mods[c->nmods];
	memset(mod, 0, sizeof(*mod));
	mod->milter = m->t->name;
	mod->index = r->index;
	switch (r->kind) {
	case MILTER_RK_ADDHEADER:
	case MILTER_RK_INSHEADER:
	case MILTER_RK_CHGHEADER: {
		struct mx_buf v;
		const char *val = r->value;

		mod->kind = r->kind == MILTER_RK_ADDHEADER ? MILTER_MOD_ADDHEADER :
		    r->kind == MILTER_RK_INSHEADER ? MILTER_MOD_INSHEADER : MILTER_MOD_CHGHEADER;
		while (*val == ' ' || *val == '\t')
			val++;
		mx_buf_init(&v, 0);
		if (milter_header_value_normalize(r->name, val, &v, &err) == -1 ||
		    mx_buf_cstr(&v) == NULL) {
			mx_buf_free(&v);
			mconn_fail(m, "bad header %s: %s", milter_reply_kind_name(r->kind), err);
			return -1;
		}
		mod->value = (char *)v.data;
		if (mod->value == NULL)
			mod->value = strdup("");
		mod->name = strdup(r->name);
		break;
	}
	case MILTER_RK_ADDRCPT:
	case MILTER_RK_ADDRCPT_PAR:
	case MILTER_RK_DELRCPT:
	case MILTER_RK_CHGFROM:
		mod->kind = r->kind == MILTER_RK_DELRCPT ? MILTER_MOD_DELRCPT :
		    r->kind == MILTER_RK_CHGFROM ? MILTER_MOD_CHGFROM : MILTER_MOD_ADDRCPT;
		if (mx_str_has_ctl(r->value) || (r->args != NULL && mx_str_has_ctl(r->args))) {
			mconn_fail(m, "control characters in an envelope change");
			return -1;
		}
		mod->value = strdup(r->value);
		if (r->args != NULL && (mod->args = strdup(r->args)) == NULL) {
			free(mod->value);
			mconn_fail(m, "out of memory");
			return -1;
		}
		break;
	default:
		mconn_fail(m, "unexpected %s", milter_reply_kind_name(r->kind));
		return -1;
	}
	if (mod->value == NULL || (mod->kind <= MILTER_MOD_CHGHEADER && mod->name == NULL)) {
		free(mod->name);
		free(mod->value);
		free(mod->args);
		mconn_fail(m, "out of memory");
		return -1;
	}
	c->nmods++;
	return 0;
}

/* Map a final reply to a decision; CONTINUE for continue/accept/skip. */
static enum milter_decision
reply_decision(const struct milter_reply *r, int *code, const char **text)
{
	switch (r->kind) {
	case MILTER_RK_REJECT:
		*code = 550;
		*text = reply_reject;
		return MILTER_D_REJECT;
	case MILTER_RK_TEMPFAIL:
		*code = 451;
		*text = reply_tempfail;
		return MILTER_D_TEMPFAIL;
	case MILTER_RK_REPLYCODE:
		*code = r->code;
		*text = r->value;
		if (r->code == 421)
			return MILTER_D_SHUTDOWN;
		return r->code >= 500 ? MILTER_D_REJECT : MILTER_D_TEMPFAIL;
	case MILTER_RK_DISCARD:
		*code = 250;
		*text = "250 2.7.0 Discarded";
		return MILTER_D_DISCARD;
	case MILTER_RK_SHUTDOWN:
	case MILTER_RK_CONN_FAIL:
		*code = 421;
		*text = reply_shutdown;
		return MILTER_D_SHUTDOWN;
	default:
		return MILTER_D_CONTINUE;
	}
}

static void
mconn_negotiated(struct mconn *m, const struct milter_reply *r)
{
	size_t s;

	if (r->kind != MILTER_RK_OPTNEG) {
		mconn_fail(m, "answered option negotiation with %s", milter_reply_kind_name(r->kind));
		return;
	}
	if (r->version < MILTER_VERSION_MIN || r->version > MILTER_VERSION) {
		mconn_fail(m, "speaks protocol version %u (we speak %d to %d)", r->version,
		    MILTER_VERSION_MIN, MILTER_VERSION);
		return;
	}
	if ((r->protocol & ~MILTER_P_OFFER) != 0) {
		mconn_fail(m, "asks for protocol steps 0x%x we did not offer",
		    r->protocol & ~MILTER_P_OFFER);
		return;
	}
	if ((r->actions & ~MILTER_ACT_ALL) != 0) {
		mconn_fail(m, "asks for actions 0x%x we do not know", r->actions & ~MILTER_ACT_ALL);
		return;
	}
	m->actions = r->actions;
	m->protocol = r->protocol;
	for (s = 0; s < MILTER_NSTAGES; s++) {
		if (r->symlist[s] == NULL)
			continue;
		if ((m->symlist[s] = strdup(r->symlist[s])) == NULL) {
			mconn_fail(m, "out of memory");
			return;
		}
	}
	m->state = MC_READY;
	m->wait = MW_NONE;
	log_debug("event=milter_ready session=%08x milter=%s version=%u actions=0x%x "
	    "protocol=0x%x", m->chain->session_id, m->t->name, r->version, r->actions,
	    r->protocol);
	mconn_step(m);
}

/* One packet from the milter. */
static void
mconn_on_reply(struct mconn *m, const struct milter_reply *r)
{
	struct milter_chain *c = m->chain;
	enum mconn_wait w = m->wait;
	enum milter_decision d;
	const char *text = NULL;
	int code = 0;

	if (w == MW_NONE) {
		mconn_fail(m, "sent %s when nothing was asked", milter_reply_kind_name(r->kind));
		return;
	}
	if (r->kind == MILTER_RK_PROGRESS) {
		/* Still working: the deadline starts again (the EOM cap still holds). */
		if (w != MW_EVENT || c->ev != EV_EOM) {
			mconn_fail(m, "progress outside end of message");
			return;
		}
		evtimer_del(m->timer);
		mconn_wait_for(m, w, m->t->content_timeout);
		return;
	}
	if (w == MW_OPTNEG) {
		evtimer_del(m->timer);
		mconn_negotiated(m, r);
		return;
	}
	if (m->drain) {
		/* The transaction this answers was aborted: swallow it to its end. */
		if (!milter_reply_is_final(r->kind))
			return;
		evtimer_del(m->timer);
		m->drain = false;
		m->wait = MW_NONE;
		mconn_step(m);
		return;
	}
	if (!milter_reply_is_final(r->kind)) {
		if (w != MW_EVENT || c->ev != EV_EOM) {
			mconn_fail(m, "%s outside end of message", milter_reply_kind_name(r->kind));
			return;
		}
		(void)mconn_modify(m, r);
		return;
	}
	evtimer_del(m->timer);
	m->wait = MW_NONE;
	d = reply_decision(r, &code, &text);
	if (d != MILTER_D_CONTINUE) {
		char what[32];

		snprintf(what, sizeof(what), "%s", milter_reply_kind_name(r->kind));
		chain_log_verdict(c, m->t->name, what, text);
	}
	switch (w) {
	case MW_CONNECT:
	case MW_HELO:
		if (r->kind == MILTER_RK_ACCEPT)
			m->conn_accepted = true;
		else if (d == MILTER_D_SHUTDOWN) {
			chain_finish_sticky(c, d, code, text, m->t->name);
			return;
		} else if (d != MILTER_D_CONTINUE) {
			if (verdict_set(&m->conn_v, d, code, text, m->t->name) == -1) {
				mconn_fail(m, "out of memory");
				return;
			}
		}
		mconn_step(m);
		return;
	case MW_MAIL:
		if (r->kind == MILTER_RK_ACCEPT)
			m->txn_accepted = true;
		else if (d != MILTER_D_CONTINUE) {
			/* Refused MAIL: every RCPT of the transaction is refused alike. */
			chain_finish_sticky(c, d, code, text, m->t->name);
			return;
		}
		mconn_step(m);
		return;
	case MW_EVENT:
		break;
	default:
		mconn_fail(m, "internal: unexpected wait state");
		return;
	}
	if (r->kind == MILTER_RK_ACCEPT)
		m->txn_accepted = true;
	if (c->ev == EV_EOM)
		m->in_txn = false;	/* its message is over: no ABORT needed */
	if (r->kind == MILTER_RK_SKIP && c->ev == EV_BODY)
		m->body_skip = true;
	if (d == MILTER_D_CONTINUE) {
		if (c->ev == EV_BODY && !m->body_skip && !m->txn_accepted &&
		    c->body_off < c->ev_body.len) {
			mconn_send_event(m);	/* the next chunk */
			return;
		}
		chain_next(c);
		return;
	}
	if (c->ev == EV_RCPT && (d == MILTER_D_REJECT || d == MILTER_D_TEMPFAIL))
		chain_finish(c, d, code, text, m->t->name);	/* this recipient only */
	else
		chain_finish_sticky(c, d, code, text, m->t->name);
}

static void
mconn_read(struct mconn *m)
{
	struct io *io = m->io;

	while (m->io == io && io != NULL) {
		struct evbuffer *in = io_input(io);
		size_t avail = evbuffer_get_length(in);
		struct milter_packet pkt;
		struct milter_reply r;
		const char *err = "";
		unsigned char *p;
		enum milter_parse pr;
		char cmd[8];

		if (avail < 4)
			return;
		/* The length field is judged before the packet is pulled together. */
		p = evbuffer_pullup(in, 4);
		pr = milter_packet_parse(p, 4, MILTER_PACKET_MAX, &pkt, &err);
		if (pr == MILTER_PARSE_ERROR) {
			mconn_fail(m, "malformed packet: %s", err);
			return;
		}
		if (pr == MILTER_PARSE_MORE) {
			size_t need = 4 + ((size_t)p[0] << 24 | (size_t)p[1] << 16 |
			    (size_t)p[2] << 8 | p[3]);

			if (avail < need)
				return;
			if ((p = evbuffer_pullup(in, (ssize_t)need)) == NULL) {
				mconn_fail(m, "out of memory");
				return;
			}
			if (milter_packet_parse(p, need, MILTER_PACKET_MAX, &pkt, &err) !=
			    MILTER_PARSE_DONE) {
				mconn_fail(m, "malformed packet: %s", err);
				return;
			}
		}
		if (milter_reply_decode(&pkt, &r, &err) == -1) {
			snprintf(cmd, sizeof(cmd), "0x%02x", pkt.cmd);
			mconn_fail(m, "malformed reply %s: %s", cmd, err);
			return;
		}
		mconn_on_reply(m, &r);
		/* The reply's strings point into the input: drain only now. */
		if (m->io == io)
			io_drain(io, pkt.size);
	}
}

static void
mconn_on_io(struct io *io, enum io_event ev, void *arg)
{
	struct mconn *m = arg;

	switch (ev) {
	case IO_EV_CONNECTED:
		mconn_send_optneg(m);
		break;
	case IO_EV_DATA:
		mconn_read(m);
		break;
	case IO_EV_DRAINED:
		break;
	case IO_EV_CLOSED:
		mconn_fail(m, "closed the connection");
		break;
	case IO_EV_TIMEOUT:
		mconn_fail(m, "connect timed out");
		break;
	case IO_EV_ERROR:
	default:
		mconn_fail(m, "%s", io_error_string(io));
		break;
	}
}

/* A closing connection that still has QUIT to deliver. */
struct mlinger {
	struct io *io;
	struct event *timer;
};

static void
linger_end(struct mlinger *l)
{
	io_free(&l->io);
	event_free(l->timer);
	free(l);
}

static void
linger_on_io(struct io *io, enum io_event ev, void *arg)
{
	if (ev == IO_EV_DATA) {
		io_drain(io, evbuffer_get_length(io_input(io)));
		return;
	}
	linger_end(arg);
}

static void
linger_timeout(evutil_socket_t fd, short what, void *arg)
{
	linger_end(arg);
}

static void
mconn_quit(struct milter_chain *c, struct mconn *m)
{
	static const struct io_callbacks cbs = { linger_on_io };
	struct timeval tv = { MILTER_LINGER_SEC, 0 };
	struct mlinger *l;
	struct mx_buf b;

	if (m->io == NULL)
		return;
	if (m->state != MC_READY || (l = calloc(1, sizeof(*l))) == NULL) {
		mconn_close(m);
		return;
	}
	mx_buf_init(&b, 0);
	if (milter_put_simple(&b, MILTER_C_QUIT) == -1 || io_write(m->io, b.data, b.len) == -1 ||
	    (l->timer = evtimer_new(c->base, linger_timeout, l)) == NULL) {
		mx_buf_free(&b);
		free(l);
		mconn_close(m);
		return;
	}
	mx_buf_free(&b);
	evtimer_del(m->timer);
	l->io = m->io;
	m->io = NULL;
	io_set_callbacks(l->io, &cbs, l);
	io_set_write_lowat(l->io, 0);
	(void)io_shutdown_write(l->io);
	evtimer_add(l->timer, &tv);
}

/* Chain ----------------------------------------------------------------------------- */

struct milter_chain *
milter_chain_new(struct event_base *base, struct milter_set *set,
    const struct milter_session_info *info)
{
	struct milter_chain *c;
	size_t i;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->base = base;
	c->set = milter_set_ref(set);
	c->n = milter_set_count(set);
	c->session_id = info->session_id;
	mx_buf_init(&c->newbody, MILTER_BODY_MAX);
	mx_buf_init(&c->ev_body, 0);
	if ((c->done_ev = event_new(base, -1, 0, chain_done, c)) == NULL)
		goto fail;
	if (c->n > 0 && (c->m = calloc(c->n, sizeof(*c->m))) == NULL)
		goto fail;
	for (i = 0; i < c->n; i++) {
		c->m[i].chain = c;
		c->m[i].t = &set->t[i];
		c->m[i].idx = i;
		if ((c->m[i].timer = evtimer_new(base, mconn_timeout, &c->m[i])) == NULL)
			goto fail;
	}
	mx_strlcpy(c->hostname, info->hostname != NULL ? info->hostname : "localhost",
	    sizeof(c->hostname));
	mx_strlcpy(c->daemon_name, info->daemon_name != NULL ? info->daemon_name : "mxedged",
	    sizeof(c->daemon_name));
	c->family = 'U';
	if (info->client != NULL && (info->client->sa_family == AF_INET ||
	    info->client->sa_family == AF_INET6)) {
		const struct sockaddr *sa = info->client;

		addr_format_ip(sa, c->client_addr, sizeof(c->client_addr));
		c->port = ntohs(sa->sa_family == AF_INET ?
		    ((const struct sockaddr_in *)sa)->sin_port :
		    ((const struct sockaddr_in6 *)sa)->sin6_port);
		/* IPv4-mapped clients are IPv4 clients. */
		c->family = strchr(c->client_addr, ':') != NULL ? '6' : '4';
		snprintf(c->client_port, sizeof(c->client_port), "%u", c->port);
	}
	if (info->local != NULL && (info->local->sa_family == AF_INET ||
	    info->local->sa_family == AF_INET6))
		addr_format_ip(info->local, c->if_addr, sizeof(c->if_addr));
	if (info->client_name != NULL && info->client_name[0] != '\0')
		mx_strlcpy(c->client_name, info->client_name, sizeof(c->client_name));
	else if (c->client_addr[0] != '\0')
		snprintf(c->client_name, sizeof(c->client_name), "[%s]", c->client_addr);
	else
		mx_strlcpy(c->client_name, "unknown", sizeof(c->client_name));
	snprintf(c->underscore, sizeof(c->underscore), "%s [%s]", c->client_name,
	    c->client_addr);
	return c;
fail:
	milter_chain_free(&c);
	return NULL;
}

void
milter_chain_set_client_name(struct milter_chain *c, const char *name)
{
	if (c == NULL || name[0] == '\0' ||
	    mx_strlcpy(c->client_name, name, sizeof(c->client_name)) == -1)
		return;
	snprintf(c->underscore, sizeof(c->underscore), "%s [%s]", c->client_name,
	    c->client_addr);
}

static void
free_args(char ***argsp, size_t *np)
{
	size_t i;

	for (i = 0; i < *np; i++)
		free((*argsp)[i]);
	free(*argsp);
	*argsp = NULL;
	*np = 0;
}

static int
copy_args(const char *const *args, size_t n, char ***out, size_t *nout)
{
	size_t i;

	*out = NULL;
	*nout = 0;
	if (n == 0)
		return 0;
	if ((*out = calloc(n, sizeof(char *))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		if (((*out)[i] = strdup(args[i] != NULL ? args[i] : "")) == NULL) {
			*nout = i;
			free_args(out, nout);
			return -1;
		}
	}
	*nout = n;
	return 0;
}

/* "<a@b>" -> "a@b" for the {mail_addr} and {rcpt_addr} macros. */
static char *
path_addr(const char *path)
{
	size_t n = strlen(path);

	if (n >= 2 && path[0] == '<' && path[n - 1] == '>')
		return strndup(path + 1, n - 2);
	return strdup(path);
}

static void
event_clear(struct milter_chain *c)
{
	free(c->ev_path);
	free(c->ev_addr);
	free(c->ev_name);
	free(c->ev_value);
	c->ev_path = c->ev_addr = c->ev_name = c->ev_value = NULL;
	free_args(&c->ev_args, &c->n_ev_args);
	mx_buf_reset(&c->ev_body);
}

static void
mods_clear(struct milter_chain *c)
{
	size_t i;

	for (i = 0; i < c->nmods; i++) {
		free(c->mods[i].name);
		free(c->mods[i].value);
		free(c->mods[i].args);
	}
	c->nmods = 0;
}

void
milter_chain_abort(struct milter_chain *c)
{
	struct mx_buf b;
	size_t i;

	if (c == NULL)
		return;
	/* Whatever was pending is dropped; its milter's reply is swallowed. */
	event_del(c->done_ev);
	c->cb = NULL;
	c->ev = EV_NONE;
	c->msg = NULL;
	c->msg_cb = NULL;
	mx_buf_init(&b, 0);
	for (i = 0; i < c->n; i++) {
		struct mconn *m = &c->m[i];

		if (m->wait == MW_MAIL || m->wait == MW_EVENT)
			m->drain = true;
		if (m->state == MC_READY && m->in_txn && m->io != NULL) {
			if (milter_put_simple(&b, MILTER_C_ABORT) == 0)
				(void)mconn_send(m, &b);
			mx_buf_reset(&b);
		}
		m->in_txn = false;
		m->txn_accepted = false;
		m->body_skip = false;
		m->replbody = false;
	}
	mx_buf_free(&b);
	c->in_txn = false;
	free(c->mail_path);
	free(c->mail_addr);
	c->mail_path = c->mail_addr = NULL;
	free_args(&c->mail_args, &c->n_mail_args);
	c->txn_fixed = false;
	c->txn_mask = 0;
	c->txn_missing = false;
	verdict_clear(&c->txn_v);
	mods_clear(c);
	c->quarantine = false;
	free(c->quarantine_reason);
	c->quarantine_reason = NULL;
	mx_buf_reset(&c->newbody);
	c->body_replaced = false;
	event_clear(c);
}

void
milter_chain_free(struct milter_chain **cp)
{
	struct milter_chain *c = *cp;
	size_t i, s;

	if (c == NULL)
		return;
	*cp = NULL;
	if (c->done_ev != NULL)
		milter_chain_abort(c);
	for (i = 0; i < c->n; i++) {
		struct mconn *m = &c->m[i];

		mconn_quit(c, m);
		mconn_close(m);
		if (m->timer != NULL)
			event_free(m->timer);
		verdict_clear(&m->conn_v);
		for (s = 0; s < MILTER_NSTAGES; s++)
			free(m->symlist[s]);
	}
	free(c->m);
	if (c->done_ev != NULL)
		event_free(c->done_ev);
	free(c->helo);
	free(c->tls_version);
	free(c->cipher);
	free(c->queue_id);
	free(c->mods);
	mx_buf_free(&c->newbody);
	mx_buf_free(&c->ev_body);
	free(c->result_reply);
	milter_set_unref(&c->set);
	free(c);
}

static void
replace_str(char **dst, const char *src)
{
	free(*dst);
	*dst = xstrdup(src);
}

void
milter_chain_helo(struct milter_chain *c, const char *helo)
{
	replace_str(&c->helo, helo);
	c->helo_gen++;
}

void
milter_chain_tls(struct milter_chain *c, const char *version, const char *cipher)
{
	replace_str(&c->tls_version, version);
	replace_str(&c->cipher, cipher);
}

void
milter_chain_queue_id(struct milter_chain *c, const char *id)
{
	replace_str(&c->queue_id, id);
}

int
milter_chain_mail(struct milter_chain *c, const char *path, const char *const *args,
    size_t nargs)
{
	milter_chain_abort(c);	/* a transaction always starts clean */
	if ((c->mail_path = strdup(path)) == NULL || (c->mail_addr = path_addr(path)) == NULL ||
	    copy_args(args, nargs, &c->mail_args, &c->n_mail_args) == -1) {
		milter_chain_abort(c);
		errno = ENOMEM;
		return -1;
	}
	c->in_txn = true;
	return 0;
}

bool
milter_chain_active(const struct milter_chain *c)
{
	return c != NULL && c->txn_fixed && c->txn_mask != 0;
}

/* Common start of an event; returns 1 when it runs, 0 when it is already answered, -1. */
static int
chain_begin(struct milter_chain *c, enum chain_event ev, milter_cb cb, void *arg)
{
	if (c->ev != EV_NONE || c->cb != NULL) {
		errno = EBUSY;
		return -1;
	}
	if (!c->in_txn) {
		errno = EINVAL;
		return -1;
	}
	event_clear(c);
	c->cb = cb;
	c->cb_arg = arg;
	c->ev = ev;
	c->cur = 0;
	c->body_off = 0;
	if (c->shutdown) {
		chain_finish(c, MILTER_D_SHUTDOWN, 421, reply_shutdown, NULL);
		return 0;
	}
	if (c->txn_v.d != MILTER_D_CONTINUE) {
		chain_finish(c, c->txn_v.d, c->txn_v.code, c->txn_v.reply, c->txn_v.milter);
		return 0;
	}
	if (ev != EV_RCPT && (!c->txn_fixed || c->txn_mask == 0)) {
		chain_finish(c, MILTER_D_CONTINUE, 0, NULL, NULL);
		return 0;
	}
	return 1;
}

int
milter_chain_rcpt(struct milter_chain *c, const char *path, const char *const *args,
    size_t nargs, const char *domain_milters, milter_cb cb, void *arg)
{
	uint32_t mask;
	bool missing;
	int r;

	if ((r = chain_begin(c, EV_RCPT, cb, arg)) <= 0)
		return r;
	mask = set_mask(c->set, domain_milters, &missing);
	if (!c->txn_fixed) {
		c->txn_fixed = true;
		c->txn_mask = mask;
		c->txn_missing = missing;
		if (missing)
			log_warnx("event=milter_unknown session=%08x milters=\"%s\" "
			    "reason=\"the domain names a milter that is not configured\"",
			    c->session_id, domain_milters);
	} else if (mask != c->txn_mask || missing != c->txn_missing) {
		chain_finish(c, MILTER_D_TEMPFAIL, 452, reply_other_list, NULL);
		return 0;
	}
	if (c->txn_missing) {
		/* Fail closed: the domain asked for filtering we cannot give. */
		chain_finish(c, MILTER_D_TEMPFAIL, 451, reply_tempfail, NULL);
		return 0;
	}
	if ((c->ev_path = strdup(path)) == NULL || (c->ev_addr = path_addr(path)) == NULL ||
	    copy_args(args, nargs, &c->ev_args, &c->n_ev_args) == -1) {
		chain_finish(c, MILTER_D_TEMPFAIL, 451, reply_tempfail, NULL);
		return 0;
	}
	chain_run(c);
	return 0;
}

int
milter_chain_data(struct milter_chain *c, milter_cb cb, void *arg)
{
	int r;

	if ((r = chain_begin(c, EV_DATA, cb, arg)) <= 0)
		return r;
	chain_run(c);
	return 0;
}

int
milter_chain_header(struct milter_chain *c, const char *name, const char *value,
    milter_cb cb, void *arg)
{
	int r;

	if ((r = chain_begin(c, EV_HEADER, cb, arg)) <= 0)
		return r;
	if ((c->ev_name = strdup(name)) == NULL || (c->ev_value = strdup(value)) == NULL) {
		chain_finish_sticky(c, MILTER_D_TEMPFAIL, 451, reply_tempfail, NULL);
		return 0;
	}
	chain_run(c);
	return 0;
}

int
milter_chain_eoh(struct milter_chain *c, milter_cb cb, void *arg)
{
	int r;

	if ((r = chain_begin(c, EV_EOH, cb, arg)) <= 0)
		return r;
	chain_run(c);
	return 0;
}

int
milter_chain_body(struct milter_chain *c, const void *data, size_t len, milter_cb cb,
    void *arg)
{
	int r;

	if ((r = chain_begin(c, EV_BODY, cb, arg)) <= 0)
		return r;
	if (len == 0) {
		chain_finish(c, MILTER_D_CONTINUE, 0, NULL, NULL);
		return 0;
	}
	if (mx_buf_add(&c->ev_body, data, len) == -1) {
		chain_finish_sticky(c, MILTER_D_TEMPFAIL, 451, reply_tempfail, NULL);
		return 0;
	}
	chain_run(c);
	return 0;
}

int
milter_chain_eom(struct milter_chain *c, milter_cb cb, void *arg)
{
	int r;

	if ((r = chain_begin(c, EV_EOM, cb, arg)) <= 0)
		return r;
	c->eom_deadline = mx_now_usec() + (uint64_t)MILTER_EOM_LIMIT * 1000000u;
	chain_run(c);
	return 0;
}

/* milter_chain_message(): one event after another from a spooled message. */
static void message_step(struct milter_chain *c);

static void
message_cb(const struct milter_result *res, void *arg)
{
	struct milter_chain *c = arg;
	milter_cb cb = c->msg_cb;

	if (res->decision != MILTER_D_CONTINUE || c->msg == NULL) {
		c->msg = NULL;
		c->msg_cb = NULL;
		if (cb != NULL)
			cb(res, c->msg_arg);
		return;
	}
	message_step(c);
}

static void
message_step(struct milter_chain *c)
{
	struct mx_view name, value;
	size_t used;
	int r;

	if (!c->msg_in_body) {
		r = milter_header_next(c->msg + c->msg_off, c->msg_len - c->msg_off, &name, &value,
		    &used);
		c->msg_off += used;
		if (r == 1) {
			char *n = strndup((const char *)name.ptr, name.len);
			char *v = strndup((const char *)value.ptr, value.len);

			if (n == NULL || v == NULL)
				r = -1;
			else
				r = milter_chain_header(c, n, v, message_cb, c);
			free(n);
			free(v);
			if (r == 0)
				return;
			goto fail;
		}
		c->msg_in_body = true;
		if (milter_chain_eoh(c, message_cb, c) == 0)
			return;
		goto fail;
	}
	if (c->msg_off < c->msg_len) {
		size_t n = c->msg_len - c->msg_off;

		if (n > MILTER_CHUNK_MAX)
			n = MILTER_CHUNK_MAX;
		r = milter_chain_body(c, c->msg + c->msg_off, n, message_cb, c);
		c->msg_off += n;
		if (r == 0)
			return;
		goto fail;
	}
	{
		milter_cb cb = c->msg_cb;

		/* The last step: eom's result goes straight to the caller. */
		c->msg = NULL;
		c->msg_cb = NULL;
		if (milter_chain_eom(c, cb, c->msg_arg) == 0)
			return;
	}
fail:
	/* Out of memory or misuse: answer with a temporary failure from the loop. */
	c->msg = NULL;
	if (c->msg_cb != NULL) {
		c->cb = c->msg_cb;
		c->cb_arg = c->msg_arg;
		c->msg_cb = NULL;
	}
	c->ev = EV_DATA;
	chain_finish_sticky(c, MILTER_D_TEMPFAIL, 451, reply_tempfail, NULL);
}

int
milter_chain_message(struct milter_chain *c, const unsigned char *msg, size_t len,
    milter_cb cb, void *arg)
{
	if (c->ev != EV_NONE || c->cb != NULL || c->msg != NULL) {
		errno = EBUSY;
		return -1;
	}
	if (!c->in_txn) {
		errno = EINVAL;
		return -1;
	}
	c->msg = msg;
	c->msg_len = len;
	c->msg_off = 0;
	c->msg_in_body = false;
	c->msg_cb = cb;
	c->msg_arg = arg;
	message_step(c);
	return 0;
}

const char *
milter_decision_name(enum milter_decision d)
{
	switch (d) {
	case MILTER_D_CONTINUE:
		return "continue";
	case MILTER_D_REJECT:
		return "reject";
	case MILTER_D_TEMPFAIL:
		return "tempfail";
	case MILTER_D_DISCARD:
		return "discard";
	case MILTER_D_SHUTDOWN:
		return "shutdown";
	}
	return "?";
}

/* Module ------------------------------------------------------------------------------ */

static int
milter_module_load(void)
{
	struct milter_set *s;
	char err[512];

	if ((s = milter_set_new(mxd->conf, err, sizeof(err))) == NULL) {
		log_warnx("event=milter_config_failed error=\"%s\"", err);
		return -1;
	}
	milter_set_unref(&current_set);
	current_set = s;
	if (s->n > 0)
		log_info("event=milters_loaded count=%zu", s->n);
	return 0;
}

static int
milter_module_start(void)
{
	return milter_module_load();
}

static void
milter_module_reload(void)
{
	/* On failure the old set stays: a typo must not switch filtering off. */
	(void)milter_module_load();
}

static void
milter_module_stop(void)
{
}

static int
milter_module_status(struct mx_buf *json)
{
	size_t i;

	mx_buf_addstr(json, "\"milters\":[");
	for (i = 0; current_set != NULL && i < current_set->n; i++) {
		if (i > 0)
			mx_buf_addstr(json, ",");
		mx_buf_addstr(json, "{\"name\":");
		mx_buf_json_str(json, current_set->t[i].name);
		mx_buf_addstr(json, ",\"address\":");
		mx_buf_json_str(json, current_set->t[i].address);
		mx_buf_printf(json, ",\"on_failure\":\"%s\"}",
		    failure_name(current_set->t[i].on_failure));
	}
	return mx_buf_addstr(json, "]");
}

const struct daemon_module milter_module = {
	"milter",
	milter_module_start,
	milter_module_reload,
	milter_module_stop,
	milter_module_status,
};
