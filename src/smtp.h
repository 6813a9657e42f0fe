/*
 * The inbound SMTP server (the backup MX on smtp_listen): one session per
 * accepted connection, reached only through the daemon's module hooks.
 */
#ifndef MXEDGE_SMTP_H
#define MXEDGE_SMTP_H

#include "daemon.h"

extern const struct daemon_module smtp_module;

/*
 * Load the STARTTLS certificate and key while the daemon still runs as
 * root, so a key readable only by root works.  Called by mxedged.c before
 * the privilege drop; exits (log_fatalx) when the files exist but cannot
 * be used.  Without a certificate file STARTTLS is not offered.
 */
void smtp_preinit(void);

#endif
