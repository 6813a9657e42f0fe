/*
 * SQLite registry backend: one database file under state_dir.  The schema
 * version lives in PRAGMA user_version and is migrated forward on open by a
 * writer.  Every change is one transaction.  The database uses the rollback
 * journal rather than WAL so that a reader with read-only file access (the
 * daemon after it dropped privileges) needs no write access to -shm files.
 * Change detection is PRAGMA data_version, which moves when another
 * connection commits.
 */
#include "config.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "util.h"

#define SCHEMA_VERSION 1

struct sqlite_reg {
	sqlite3 *db;
	long long data_version;
	bool readonly;
};

static const char *const schema_v1 =
    "CREATE TABLE domains ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " backend TEXT NOT NULL DEFAULT '',"
    " imaps TEXT NOT NULL DEFAULT '',"
    " pop3s TEXT NOT NULL DEFAULT '',"
    " submissions TEXT NOT NULL DEFAULT '',"
    " submission TEXT NOT NULL DEFAULT '',"
    " relay TEXT NOT NULL DEFAULT 'mx',"
    " proxy TEXT NOT NULL DEFAULT 'off',"
    " spf TEXT NOT NULL DEFAULT 'tag',"
    " recipients TEXT NOT NULL DEFAULT 'any',"
    " unavailable TEXT NOT NULL DEFAULT 'tempfail',"
    " relay_tls TEXT NOT NULL DEFAULT 'may',"
    " size_limit INTEGER NOT NULL DEFAULT 0,"
    " lifetime INTEGER NOT NULL DEFAULT 0,"
    " milters TEXT NOT NULL DEFAULT '',"
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL);"
    "CREATE TABLE recipients ("
    " domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,"
    " address TEXT NOT NULL,"
    " PRIMARY KEY (domain, address));";

static const char *const domain_columns =
    "name, backend, imaps, pop3s, submissions, submission, relay, proxy, spf, recipients,"
    " unavailable, relay_tls, size_limit, lifetime, milters, created, updated";

static int
db_fail(struct sqlite_reg *s, char *err, size_t errsize, const char *what)
{
	snprintf(err, errsize, "registry: %s: %s", what, sqlite3_errmsg(s->db));
	return -1;
}

static int
db_exec(struct sqlite_reg *s, const char *sql, char *err, size_t errsize)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errsize, "registry: %s", msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int
db_user_version(struct sqlite_reg *s, int *v)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

static int
db_migrate(struct sqlite_reg *s, char *err, size_t errsize)
{
	int v;
	char sql[64];

	if (db_exec(s, "BEGIN IMMEDIATE", err, errsize) == -1)
		return -1;
	if (db_user_version(s, &v) == -1) {
		db_fail(s, err, errsize, "reading schema version");
		goto rollback;
	}
	if (v > SCHEMA_VERSION) {
		snprintf(err, errsize, "registry: schema version %d is newer than this program (%d)",
		    v, SCHEMA_VERSION);
		goto rollback;
	}
	if (v < 1 && db_exec(s, schema_v1, err, errsize) == -1)
		goto rollback;
	/* Later versions add "if (v < 2) ..." steps here, in order. */
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION);
	if (db_exec(s, sql, err, errsize) == -1)
		goto rollback;
	return db_exec(s, "COMMIT", err, errsize);
rollback:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static int
sq_open(struct registry *r, const char *location, int flags, char *err, size_t errsize)
{
	struct sqlite_reg *s;
	int oflags, v;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errsize, "out of memory");
		return -1;
	}
	s->readonly = (flags & REGISTRY_RDONLY) != 0;
	oflags = s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	if (sqlite3_open_v2(location, &s->db, oflags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errsize, "registry %s: %s", location,
		    s->db ? sqlite3_errmsg(s->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 5000);
	sqlite3_extended_result_codes(s->db, 1);
	if (db_exec(s, "PRAGMA foreign_keys = ON", err, errsize) == -1)
		goto fail;
	if (!s->readonly) {
		if (db_exec(s, "PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL",
		    err, errsize) == -1 || db_migrate(s, err, errsize) == -1)
			goto fail;
	} else {
		if (db_user_version(s, &v) == -1) {
			db_fail(s, err, errsize, location);
			goto fail;
		}
		if (v != SCHEMA_VERSION) {
			snprintf(err, errsize, "registry %s: schema version %d, expected %d "
			    "(run any mxedge command to migrate)", location, v, SCHEMA_VERSION);
			goto fail;
		}
	}
	r->backend = s;
	registry_changed(r);	/* remember the current data_version */
	return 0;
fail:
	sqlite3_close(s->db);
	free(s);
	return -1;
}

static void
sq_close(struct registry *r)
{
	struct sqlite_reg *s = r->backend;

	if (s == NULL)
		return;
	sqlite3_close(s->db);
	free(s);
	r->backend = NULL;
}

static int
bind_domain(sqlite3_stmt *st, const struct domain *d)
{
	int i = 1, k, rc = 0;

	rc |= sqlite3_bind_text(st, i++, d->name, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(st, i++, d->backend, -1, SQLITE_STATIC);
	for (k = 0; k < FRONT_NSERVICES; k++)
		rc |= sqlite3_bind_text(st, i++, d->service[k], -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(st, i++, d->relay, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(st, i++, registry_proxy_name(d->proxy), -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(st, i++, registry_spf_name(d->spf), -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(st, i++, registry_rcpt_name(d->recipients), -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(st, i++, registry_unavail_name(d->unavailable), -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(st, i++, registry_tls_name(d->relay_tls), -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, i++, (sqlite3_int64)d->size_limit);
	rc |= sqlite3_bind_int64(st, i++, d->lifetime);
	rc |= sqlite3_bind_text(st, i++, d->milters, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, i++, d->created);
	rc |= sqlite3_bind_int64(st, i++, d->updated);
	return rc == SQLITE_OK ? 0 : -1;
}

static int
col_copy(sqlite3_stmt *st, int col, char *dst, size_t size)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	if (t == NULL)
		t = (const unsigned char *)"";
	return mx_strlcpy(dst, (const char *)t, size);
}

/* Read one row into d, validating it: the file may have been edited by hand. */
static int
row_domain(sqlite3_stmt *st, struct domain *d, char *err, size_t errsize)
{
	const char *e = NULL;
	char tmp[64];
	int i = 0, k, bad = 0;

	memset(d, 0, sizeof(*d));
	bad |= col_copy(st, i++, d->name, sizeof(d->name));
	bad |= col_copy(st, i++, d->backend, sizeof(d->backend));
	for (k = 0; k < FRONT_NSERVICES; k++)
		bad |= col_copy(st, i++, d->service[k], sizeof(d->service[k]));
	bad |= col_copy(st, i++, d->relay, sizeof(d->relay));
#define ENUM_COL(setter)						\
	do {								\
		bad |= col_copy(st, i++, tmp, sizeof(tmp));		\
		if (!bad && setter(d, tmp, &e) == -1)			\
			bad = -1;					\
	} while (0)
	ENUM_COL(domain_set_proxy);
	ENUM_COL(domain_set_spf);
	ENUM_COL(domain_set_recipients);
	ENUM_COL(domain_set_unavailable);
	ENUM_COL(domain_set_relay_tls);
#undef ENUM_COL
	d->size_limit = (unsigned long long)sqlite3_column_int64(st, i++);
	d->lifetime = sqlite3_column_int64(st, i++);
	bad |= col_copy(st, i++, d->milters, sizeof(d->milters));
	d->created = sqlite3_column_int64(st, i++);
	d->updated = sqlite3_column_int64(st, i++);
	if (bad || domain_validate(d, &e) == -1) {
		snprintf(err, errsize, "registry: bad stored record for '%.64s': %s", d->name,
		    e ? e : "value too long");
		return -1;
	}
	return 0;
}

static int
sq_write(struct registry *r, const char *sql, const struct domain *d, int expect_changes,
    char *err, size_t errsize)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(s, err, errsize, "prepare");
	if (bind_domain(st, d) == -1) {
		sqlite3_finalize(st);
		return db_fail(s, err, errsize, "bind");
	}
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
		snprintf(err, errsize, "domain %s is already registered (use 'domain set')", d->name);
		return -1;
	}
	if (rc != SQLITE_DONE)
		return db_fail(s, err, errsize, "write");
	if (expect_changes && sqlite3_changes(s->db) == 0) {
		snprintf(err, errsize, "domain %s is not registered", d->name);
		return 1;
	}
	return 0;
}

static int
sq_domain_add(struct registry *r, const struct domain *d, char *err, size_t errsize)
{
	char sql[512];

	snprintf(sql, sizeof(sql), "INSERT INTO domains (%s) VALUES "
	    "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", domain_columns);
	return sq_write(r, sql, d, 0, err, errsize);
}

static int
sq_domain_update(struct registry *r, const struct domain *d, char *err, size_t errsize)
{
	/* The same column order as bind_domain(); created is left alone. */
	return sq_write(r, "UPDATE domains SET name = ?1, backend = ?2, imaps = ?3, pop3s = ?4,"
	    " submissions = ?5, submission = ?6, relay = ?7, proxy = ?8, spf = ?9,"
	    " recipients = ?10, unavailable = ?11, relay_tls = ?12, size_limit = ?13,"
	    " lifetime = ?14, milters = ?15, updated = ?17 WHERE name = ?1",
	    d, 1, err, errsize);
}

static int
sq_domain_del(struct registry *r, const char *name, char *err, size_t errsize)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(s->db, "DELETE FROM domains WHERE name = ?", -1, &st, NULL) !=
	    SQLITE_OK)
		return db_fail(s, err, errsize, "prepare");
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_fail(s, err, errsize, "delete");
	if (sqlite3_changes(s->db) == 0) {
		snprintf(err, errsize, "domain %s is not registered", name);
		return 1;
	}
	return 0;
}

static int
sq_domain_get(struct registry *r, const char *name, struct domain *out, char *err,
    size_t errsize)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st = NULL;
	char sql[512];
	int rc, ret;

	snprintf(sql, sizeof(sql), "SELECT %s FROM domains WHERE name = ?", domain_columns);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(s, err, errsize, "prepare");
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = row_domain(st, out, err, errsize);
	else if (rc == SQLITE_DONE) {
		snprintf(err, errsize, "domain %s is not registered", name);
		ret = 1;
	} else
		ret = db_fail(s, err, errsize, "read");
	sqlite3_finalize(st);
	return ret;
}

static int
sq_domain_foreach(struct registry *r, registry_domain_cb cb, void *arg, char *err,
    size_t errsize)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st = NULL;
	struct domain d;
	char sql[512];
	int rc, ret = 0;

	snprintf(sql, sizeof(sql), "SELECT %s FROM domains ORDER BY name", domain_columns);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(s, err, errsize, "prepare");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (row_domain(st, &d, err, errsize) == -1) {
			ret = -1;
			break;
		}
		if (cb(&d, arg) != 0)
			break;
	}
	if (ret == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = db_fail(s, err, errsize, "read");
	sqlite3_finalize(st);
	return ret;
}

static int
recipient_stmt(struct registry *r, const char *sql, const char *domain, const char *address,
    sqlite3_stmt **stp, char *err, size_t errsize)
{
	struct sqlite_reg *s = r->backend;

	if (sqlite3_prepare_v2(s->db, sql, -1, stp, NULL) != SQLITE_OK)
		return db_fail(s, err, errsize, "prepare");
	sqlite3_bind_text(*stp, 1, domain, -1, SQLITE_STATIC);
	if (address != NULL)
		sqlite3_bind_text(*stp, 2, address, -1, SQLITE_STATIC);
	return 0;
}

static int
sq_recipient_add(struct registry *r, const char *domain, const char *address, char *err,
    size_t errsize)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st;
	int rc;

	if (recipient_stmt(r, "INSERT INTO recipients (domain, address) VALUES (?, ?)", domain,
	    address, &st, err, errsize) == -1)
		return -1;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
		snprintf(err, errsize, "domain %s is not registered", domain);
		return -1;
	}
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
		snprintf(err, errsize, "recipient %s is already listed", address);
		return -1;
	}
	return rc == SQLITE_DONE ? 0 : db_fail(s, err, errsize, "write");
}

static int
sq_recipient_del(struct registry *r, const char *domain, const char *address, char *err,
    size_t errsize)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st;
	int rc;

	if (recipient_stmt(r, "DELETE FROM recipients WHERE domain = ? AND address = ?", domain,
	    address, &st, err, errsize) == -1)
		return -1;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_fail(s, err, errsize, "delete");
	if (sqlite3_changes(s->db) == 0) {
		snprintf(err, errsize, "recipient %s is not listed", address);
		return 1;
	}
	return 0;
}

static int
sq_recipient_foreach(struct registry *r, const char *domain, registry_recipient_cb cb,
    void *arg, char *err, size_t errsize)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st;
	int rc;

	if (recipient_stmt(r, "SELECT address FROM recipients WHERE domain = ? ORDER BY address",
	    domain, NULL, &st, err, errsize) == -1)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (cb((const char *)sqlite3_column_text(st, 0), arg) != 0)
			break;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_fail(s, err, errsize, "read");
}

static int
sq_recipient_check(struct registry *r, const char *domain, const char *address)
{
	sqlite3_stmt *st;
	char err[16];
	int rc;

	if (recipient_stmt(r, "SELECT 1 FROM recipients WHERE domain = ? AND address = ?",
	    domain, address, &st, err, sizeof(err)) == -1)
		return -1;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

static int
sq_changed(struct registry *r)
{
	struct sqlite_reg *s = r->backend;
	sqlite3_stmt *st;
	long long v;
	int rc;

	if (sqlite3_prepare_v2(s->db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	rc = sqlite3_step(st);
	v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return -1;
	if (v == s->data_version)
		return 0;
	s->data_version = v;
	return 1;
}

const struct registry_ops registry_sqlite_ops = {
	.scheme = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.domain_add = sq_domain_add,
	.domain_update = sq_domain_update,
	.domain_del = sq_domain_del,
	.domain_get = sq_domain_get,
	.domain_foreach = sq_domain_foreach,
	.recipient_add = sq_recipient_add,
	.recipient_del = sq_recipient_del,
	.recipient_foreach = sq_recipient_foreach,
	.recipient_check = sq_recipient_check,
	.changed = sq_changed,
};
