/*
 * The configuration file: one directive per line, whitespace-separated
 * arguments, '#' comments.  conf_load() parses a whole file into a struct conf
 * with every default filled in, or fails with "FILE:LINE: message".  Pure
 * code: it opens the file and nothing else (no sockets, no chdir).
 */
#ifndef MXEDGE_CONF_H
#define MXEDGE_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"

#define CONF_PATH_MAX 1024

enum front_service {
	FRONT_IMAPS = 0,
	FRONT_POP3S,
	FRONT_SUBMISSIONS,
	FRONT_SUBMISSION,
	FRONT_NSERVICES
};

struct conf_listen {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	enum front_service service;	/* front listeners only */
	char text[ADDR_STR_MAX];	/* as written, for logs */
};

enum milter_failure {
	MILTER_FAIL_TEMPFAIL = 0,
	MILTER_FAIL_ACCEPT,
	MILTER_FAIL_REJECT,
	MILTER_FAIL_421,
};

struct conf_milter {
	char name[64];
	char address[CONF_PATH_MAX];	/* "unix:/path" or "inet:host:port" */
	long long connect_timeout;	/* seconds */
	long long command_timeout;
	long long content_timeout;
	enum milter_failure on_failure;
};

#define CONF_MAX_LISTEN 32
#define CONF_MAX_MILTERS 16

#define CONF_MAILBOX_MAX 320		/* "local@domain": 64 + 1 + 255 */

struct conf {
	char path[CONF_PATH_MAX];	/* the file this came from */

	char hostname[ADDR_HOST_MAX];
	char user[64];
	char state_dir[CONF_PATH_MAX];
	char spool_dir[CONF_PATH_MAX];
	char pid_file[CONF_PATH_MAX];		/* default STATE_DIR/mxedged.pid */
	char control_socket[CONF_PATH_MAX];	/* default STATE_DIR/control.sock */
	char registry[CONF_PATH_MAX];		/* default "sqlite:STATE_DIR/registry.db" */
	char log_target[16];			/* "syslog" or "stderr" */
	int log_level;				/* enum log_level */

	char tls_certificate[CONF_PATH_MAX];
	char tls_key[CONF_PATH_MAX];
	char tls_priority[256];
	char relay_tls_priority[256];

	struct conf_listen smtp_listen[CONF_MAX_LISTEN];
	int n_smtp_listen;
	struct conf_listen front_listen[CONF_MAX_LISTEN];
	int n_front_listen;

	char resolver[ADDR_HOST_MAX];		/* "system" or "ADDRESS@PORT" */
	bool allow_private_targets;

	/* TLS front */
	long long front_hello_timeout;		/* seconds, default 10 */
	long long front_hello_max;		/* bytes, default 16384 */
	long long front_connect_timeout;	/* seconds, default 10 */
	long long front_idle_timeout[FRONT_NSERVICES];	/* imaps 1800, others 600 */
	long long front_max_connections;	/* default 10000 */
	long long front_max_per_client;		/* default 64 */
	bool front_splice;			/* bulk through splice(2), default no */

	/* SMTP inbound */
	char smtp_banner[256];			/* text after "220 HOSTNAME " */
	long long smtp_max_connections;		/* default 500 */
	long long smtp_max_per_client;		/* default 20 */
	long long smtp_max_recipients;		/* default 100 */
	unsigned long long smtp_max_message_size;	/* default 50 MiB */
	unsigned long long smtp_min_free_space;	/* default 100 MiB */
	long long smtp_timeout_command;		/* default 300 */
	long long smtp_timeout_data;		/* default 180 (per data block) */
	long long smtp_max_errors;		/* default 10, then 421 */
	long long smtp_greet_delay;		/* seconds before the 220; default 0 */
	bool smtp_reverse_lookup;		/* PTR + forward check of clients; default yes */

	/* queue and relay */
	long long queue_lifetime;		/* default 5 days */
	long long queue_retry_min;		/* default 300 */
	long long queue_retry_max;		/* default 3600 */
	long long queue_delay_warning;		/* 0 = off */
	long long relay_connect_timeout;	/* default 30 */
	long long relay_command_timeout;	/* default 300 */
	long long relay_max_concurrency;	/* default 100 */
	long long relay_destination_concurrency;	/* default 10 */
	bool relay_allow_ipv4;			/* default no: primaries are v6-only */
	long long relay_mx_port;		/* default 25: port of MX-routed delivery */

	/* filtering */
	struct conf_milter milters[CONF_MAX_MILTERS];
	int n_milters;
	char spf_user[64];			/* default "nobody" */
	long long spf_timeout;			/* default 20 */
	long long verify_positive_ttl;		/* default 7 days */
	long long verify_negative_ttl;		/* default 10 minutes */
	long long verify_timeout;		/* default 30 */
	char authserv_id[ADDR_HOST_MAX];	/* default hostname */
	char postmaster_address[CONF_MAILBOX_MAX + 1];	/* "" = none */
};

/* Fill every default (hostname from gethostname(2)). */
void conf_defaults(struct conf *c);
/*
 * Parse path into c (which conf_load initialises with defaults first).
 * On error returns -1 and writes "FILE:LINE: message" into err.
 */
int conf_load(const char *path, struct conf *c, char *err, size_t errsize);
/* Parse from memory; name is used in error messages. */
int conf_load_string(const char *name, const char *text, struct conf *c, char *err,
    size_t errsize);

const char *front_service_name(enum front_service s);
int front_service_parse(const char *s, enum front_service *out);
uint16_t front_service_default_port(enum front_service s);

/* The default config path (configure --with-default-config), overridden by $MXEDGE_CONF. */
const char *conf_default_path(void);

#endif
