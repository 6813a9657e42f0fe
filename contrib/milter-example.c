/*
 * A minimal milter on libmilter, as an example of what mxedged's milter
 * client talks to: it adds one header to every message,
 *
 *   X-Milter-Example: seen by milter-example (client [ADDRESS])
 *
 * and asks for nothing else: no HELO, envelope, headers or body.
 *
 *   cc -o milter-example milter-example.c -lmilter -lpthread
 *   ./milter-example inet:8891@127.0.0.1
 *
 * and in mxedge.conf:
 *
 *   milter example inet:127.0.0.1:8891 on_failure=accept
 */
#include <libmilter/mfapi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per connection: the client's address, from the {client_addr} macro. */
struct example {
	char client[64];
};

static sfsistat
ex_negotiate(SMFICTX *ctx, unsigned long actions, unsigned long steps, unsigned long f2,
    unsigned long f3, unsigned long *want_actions, unsigned long *want_steps,
    unsigned long *pf2, unsigned long *pf3)
{
	/* Add headers only; be spared every step the MTA can leave out. */
	*want_actions = SMFIF_ADDHDRS;
	*want_steps = steps & (SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOHDRS |
	    SMFIP_NOEOH | SMFIP_NOBODY | SMFIP_NOUNKNOWN | SMFIP_NODATA);
	*pf2 = 0;
	*pf3 = 0;
	return SMFIS_CONTINUE;
}

static sfsistat
ex_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
	struct example *ex = calloc(1, sizeof(*ex));
	const char *client = smfi_getsymval(ctx, "{client_addr}");

	if (ex == NULL)
		return SMFIS_TEMPFAIL;
	snprintf(ex->client, sizeof(ex->client), "%s", client != NULL ? client : "unknown");
	smfi_setpriv(ctx, ex);
	return SMFIS_CONTINUE;
}

static sfsistat
ex_eom(SMFICTX *ctx)
{
	struct example *ex = smfi_getpriv(ctx);
	char value[128];

	snprintf(value, sizeof(value), "seen by milter-example (client [%s])",
	    ex != NULL ? ex->client : "unknown");
	if (smfi_addheader(ctx, "X-Milter-Example", value) != MI_SUCCESS)
		return SMFIS_TEMPFAIL;
	return SMFIS_CONTINUE;
}

static sfsistat
ex_close(SMFICTX *ctx)
{
	free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

int
main(int argc, char **argv)
{
	struct smfiDesc desc;

	if (argc != 2) {
		fprintf(stderr, "usage: milter-example inet:PORT@HOST | unix:/PATH\n");
		return 2;
	}
	memset(&desc, 0, sizeof(desc));
	desc.xxfi_name = "milter-example";
	desc.xxfi_version = SMFI_VERSION;
	desc.xxfi_flags = SMFIF_ADDHDRS;
	desc.xxfi_connect = ex_connect;
	desc.xxfi_eom = ex_eom;
	desc.xxfi_close = ex_close;
	desc.xxfi_negotiate = ex_negotiate;
	if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_register(desc) == MI_FAILURE ||
	    smfi_opensocket(true) == MI_FAILURE) {
		fprintf(stderr, "milter-example: cannot listen on %s\n", argv[1]);
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
