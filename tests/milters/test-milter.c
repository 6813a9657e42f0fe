/*
 * A milter on libmilter for the tests: one program, the behaviour chosen by
 * a mode.  It logs every event it sees (with the macros the tests care
 * about) to LOGFILE, one line each, so a test can check what our client
 * sent as well as what it did with the answers.
 *
 *   test-milter MODE CONN LOGFILE
 *     CONN: libmilter syntax, "inet:PORT@127.0.0.1" or "unix:/path"
 *
 * Modes:
 *   pass            continue everywhere
 *   reject-rcpt     SMFIS_REJECT for recipients containing "bad"; SMFIS_ACCEPT
 *                   at MAIL for senders containing "accept"
 *   replycode       smfi_setreply 550 5.7.1 custom text for "bad" recipients,
 *                   a three-line reply for "multi" recipients
 *   tempfail-mail   SMFIS_TEMPFAIL at MAIL
 *   reject-connect  SMFIS_REJECT at connect
 *   accept-mail     SMFIS_ACCEPT at MAIL (nothing more for the message)
 *   discard-eom     SMFIS_DISCARD at end of message
 *   headers         at end of message: add X-Test-Milter, change Subject,
 *                   insert X-Inserted at the top, delete the second X-Del
 *   quarantine      smfi_quarantine at end of message
 *   replbody        replace the body
 *   stall-rcpt      sleep STALL seconds (env, default 30) at RCPT
 *   stall-eom       sleep STALL seconds at end of message
 *   progress        at end of message: 4 x (sleep 1 s, smfi_progress)
 *   skip-body       ask for SKIP and answer SMFIS_SKIP to the first chunk
 *   noreply         ask for every no-reply step; answer SMFIS_NOREPLY
 *   symlist         ask for only {mail_addr} at MAIL (SETSYMLIST)
 */
#include <errno.h>
#include <libmilter/mfapi.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static const char *mode;
static FILE *logfp;

static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
logline(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(logfp, fmt, ap);
	va_end(ap);
	fputc('\n', logfp);
	fflush(logfp);
}

static bool
is(const char *m)
{
	return strcmp(mode, m) == 0;
}

static const char *
sym(SMFICTX *ctx, const char *name)
{
	const char *v = smfi_getsymval(ctx, (char *)name);

	return v != NULL ? v : "(none)";
}

static int
stall_seconds(void)
{
	const char *s = getenv("STALL");

	return s != NULL ? atoi(s) : 30;
}

static sfsistat
t_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
    unsigned long f3, unsigned long *pf0, unsigned long *pf1, unsigned long *pf2,
    unsigned long *pf3)
{
	unsigned long want = 0;

	logline("negotiate actions=0x%lx protocol=0x%lx", f0, f1);
	if (is("skip-body"))
		want |= SMFIP_SKIP;
	if (is("noreply"))
		want |= SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT |
		    SMFIP_NR_DATA | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_NR_HDR;
	if ((want & f1) != want) {
		logline("negotiate: MTA lacks 0x%lx", want & ~f1);
		return SMFIS_REJECT;
	}
	*pf0 = f0 & (SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE | SMFIF_CHGBODY |
	    SMFIF_SETSYMLIST);
	*pf1 = want;
	*pf2 = 0;
	*pf3 = 0;
	if (is("symlist") && smfi_setsymlist(ctx, SMFIM_ENVFROM, "{mail_addr}") != MI_SUCCESS)
		logline("setsymlist failed");
	return SMFIS_CONTINUE;
}

static sfsistat
noreply_or(sfsistat s)
{
	return is("noreply") ? SMFIS_NOREPLY : s;
}

static sfsistat
t_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
	logline("connect host=%s client_addr=%s client_name=%s daemon_name=%s j=%s if_addr=%s",
	    host, sym(ctx, "{client_addr}"), sym(ctx, "{client_name}"),
	    sym(ctx, "{daemon_name}"), sym(ctx, "j"), sym(ctx, "{if_addr}"));
	if (is("reject-connect"))
		return SMFIS_REJECT;
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_helo(SMFICTX *ctx, char *helo)
{
	logline("helo %s tls_version=%s cipher=%s", helo, sym(ctx, "{tls_version}"),
	    sym(ctx, "{cipher}"));
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_envfrom(SMFICTX *ctx, char **argv)
{
	int i;

	logline("mail %s mail_addr=%s i=%s", argv[0], sym(ctx, "{mail_addr}"), sym(ctx, "i"));
	for (i = 1; argv[i] != NULL; i++)
		logline("mail-arg %s", argv[i]);
	if (is("tempfail-mail"))
		return SMFIS_TEMPFAIL;
	if (is("accept-mail") || (is("reject-rcpt") && strstr(argv[0], "accept") != NULL))
		return SMFIS_ACCEPT;
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_envrcpt(SMFICTX *ctx, char **argv)
{
	logline("rcpt %s rcpt_addr=%s i=%s", argv[0], sym(ctx, "{rcpt_addr}"), sym(ctx, "i"));
	if (is("stall-rcpt"))
		sleep((unsigned int)stall_seconds());
	if (strstr(argv[0], "bad") != NULL) {
		if (is("reject-rcpt"))
			return SMFIS_REJECT;
		if (is("replycode")) {
			smfi_setreply(ctx, "550", "5.7.1", "Custom text from the test milter");
			return SMFIS_REJECT;
		}
	}
	if (strstr(argv[0], "multi") != NULL && is("replycode")) {
		smfi_setmlreply(ctx, "451", "4.7.1", "first line", "second line", "third line",
		    NULL);
		return SMFIS_TEMPFAIL;
	}
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_data(SMFICTX *ctx)
{
	logline("data");
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_header(SMFICTX *ctx, char *name, char *value)
{
	logline("header %s: %s", name, value);
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_eoh(SMFICTX *ctx)
{
	logline("eoh");
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_body(SMFICTX *ctx, unsigned char *p, size_t len)
{
	logline("body %zu", len);
	if (is("skip-body"))
		return SMFIS_SKIP;
	return noreply_or(SMFIS_CONTINUE);
}

static sfsistat
t_eom(SMFICTX *ctx)
{
	int i;

	logline("eom i=%s", sym(ctx, "i"));
	if (is("discard-eom"))
		return SMFIS_DISCARD;
	if (is("headers")) {
		smfi_addheader(ctx, "X-Test-Milter", "added by the test milter");
		smfi_chgheader(ctx, "Subject", 1, "changed by the test milter");
		smfi_insheader(ctx, 0, "X-Inserted", "at the top");
		smfi_chgheader(ctx, "X-Del", 2, NULL);
	}
	if (is("quarantine"))
		smfi_quarantine(ctx, "held by the test milter");
	if (is("replbody"))
		smfi_replacebody(ctx, (unsigned char *)"replaced body\r\n", 15);
	if (is("stall-eom"))
		sleep((unsigned int)stall_seconds());
	if (is("progress"))
		for (i = 0; i < 4; i++) {
			sleep(1);
			smfi_progress(ctx);
		}
	return SMFIS_CONTINUE;
}

static sfsistat
t_abort(SMFICTX *ctx)
{
	logline("abort");
	return SMFIS_CONTINUE;
}

static sfsistat
t_close(SMFICTX *ctx)
{
	logline("close");
	return SMFIS_CONTINUE;
}

int
main(int argc, char **argv)
{
	struct smfiDesc desc;

	if (argc != 4) {
		fprintf(stderr, "usage: test-milter MODE CONN LOGFILE\n");
		return 2;
	}
	mode = argv[1];
	if ((logfp = fopen(argv[3], "a")) == NULL) {
		perror(argv[3]);
		return 1;
	}
	memset(&desc, 0, sizeof(desc));
	desc.xxfi_name = "test-milter";
	desc.xxfi_version = SMFI_VERSION;
	desc.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE | SMFIF_CHGBODY |
	    SMFIF_SETSYMLIST;
	desc.xxfi_connect = t_connect;
	desc.xxfi_helo = t_helo;
	desc.xxfi_envfrom = t_envfrom;
	desc.xxfi_envrcpt = t_envrcpt;
	desc.xxfi_data = t_data;
	desc.xxfi_header = t_header;
	desc.xxfi_eoh = t_eoh;
	desc.xxfi_body = t_body;
	desc.xxfi_eom = t_eom;
	desc.xxfi_abort = t_abort;
	desc.xxfi_close = t_close;
	desc.xxfi_negotiate = t_negotiate;
	if (smfi_setconn(argv[2]) == MI_FAILURE || smfi_register(desc) == MI_FAILURE) {
		fprintf(stderr, "test-milter: cannot set up %s\n", argv[2]);
		return 1;
	}
	/* libmilter's own timeout: longer than any stall a test asks for. */
	smfi_settimeout(120);
	if (getenv("MILTER_DEBUG") != NULL)
		smfi_setdbg(atoi(getenv("MILTER_DEBUG")));
	if (smfi_opensocket(true) == MI_FAILURE) {
		fprintf(stderr, "test-milter: cannot listen on %s\n", argv[2]);
		return 1;
	}
	logline("ready %s", mode);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
