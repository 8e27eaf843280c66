/* SQLite driver.  Statements are prepared once per SQL text and kept in a
 * small LRU cache: the server sends the same few queries over and over.
 * Parameters are written $1, $2 ... as for PostgreSQL; SQLite treats them
 * as named parameters, bound by name. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "pigeon/log.h"
#include "store_driver.h"

#define STMT_CACHE_SIZE 64
#define BUSY_TIMEOUT_MS 5000

struct cached_stmt {
	char *sql; /* NULL = free slot */
	uint64_t hash;
	uint64_t last_used;
	sqlite3_stmt *stmt;
};

struct sq_conn {
	sqlite3 *db;
	/* Test hook (PIGEON_TEST_STORE_FAIL): while this file exists, every
	 * statement fails as a disk I/O error would.  NULL normally. */
	char *fail_file;
	uint64_t clock; /* LRU clock, bumped on every use */
	struct cached_stmt cache[STMT_CACHE_SIZE];
};

static uint64_t
hash_sql(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	while (*s) {
		h ^= (unsigned char)*s++;
		h *= 1099511628211ULL;
	}
	return h;
}

/* 1 for the errors that say the database cannot be used now but may be
 * later (the disk is full, an I/O error, the file became read-only or
 * unreadable, another process holds the lock past busy_timeout), as
 * opposed to errors of the statement itself. */
static int
sq_unavailable(int ext)
{
	switch (ext & 0xff) {
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_PROTOCOL:
		return 1;
	default:
		return 0;
	}
}

static int
sq_error(struct sq_conn *c, struct pgn_store_result *res, const char *what)
{
	int ext = sqlite3_extended_errcode(c->db);
	int err = -EIO;

	if (ext == SQLITE_CONSTRAINT_UNIQUE ||
	    ext == SQLITE_CONSTRAINT_PRIMARYKEY)
		err = -EEXIST;
	else if (sq_unavailable(ext))
		err = -EAGAIN;
	return pgn_store_result_set_error(res, err, "sqlite: %s%s%s", what,
					  what[0] ? ": " : "",
					  sqlite3_errmsg(c->db));
}

/* Returns a reset statement for sql, from the cache or freshly prepared
 * (evicting the least recently used one when full). */
static int
sq_prepare(struct sq_conn *c, const char *sql, sqlite3_stmt **out,
	   struct pgn_store_result *res)
{
	uint64_t h = hash_sql(sql);
	struct cached_stmt *slot = NULL;
	sqlite3_stmt *stmt;
	size_t i;
	char *copy;

	for (i = 0; i < STMT_CACHE_SIZE; i++) {
		struct cached_stmt *e = &c->cache[i];

		if (e->sql && e->hash == h && !strcmp(e->sql, sql)) {
			e->last_used = ++c->clock;
			*out = e->stmt;
			return 0;
		}
		/* A free slot if there is one, else the least recently used. */
		if (!e->sql) {
			if (!slot || slot->sql)
				slot = e;
		} else if (!slot ||
			   (slot->sql && e->last_used < slot->last_used)) {
			slot = e;
		}
	}
	if (sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL) != SQLITE_OK)
		return sq_error(c, res, "prepare");
	if (!stmt) /* only whitespace or comments */
		return pgn_store_result_set_error(res, -EINVAL,
						  "sqlite: empty statement");
	copy = strdup(sql);
	if (!copy) {
		sqlite3_finalize(stmt);
		return pgn_store_result_set_error(res, -ENOMEM,
						  "sqlite: out of memory");
	}
	if (slot->sql) {
		sqlite3_finalize(slot->stmt);
		free(slot->sql);
	}
	slot->sql = copy;
	slot->hash = h;
	slot->stmt = stmt;
	slot->last_used = ++c->clock;
	*out = stmt;
	return 0;
}

static int
sq_bind(struct sq_conn *c, sqlite3_stmt *stmt, int nparams,
	const char *const *params, struct pgn_store_result *res)
{
	char name[16];
	int i, idx, rc;

	/* Same rule as PostgreSQL: exactly the parameters the SQL uses. */
	if (sqlite3_bind_parameter_count(stmt) != nparams)
		return pgn_store_result_set_error(
			res, -EINVAL, "sqlite: statement takes %d parameters, %d given",
			sqlite3_bind_parameter_count(stmt), nparams);
	for (i = 0; i < nparams; i++) {
		snprintf(name, sizeof(name), "$%d", i + 1);
		idx = sqlite3_bind_parameter_index(stmt, name);
		if (idx == 0)
			return pgn_store_result_set_error(
				res, -EINVAL, "sqlite: no parameter %s", name);
		if (params[i])
			rc = sqlite3_bind_text(stmt, idx, params[i], -1,
					       SQLITE_STATIC);
		else
			rc = sqlite3_bind_null(stmt, idx);
		if (rc != SQLITE_OK)
			return sq_error(c, res, "bind");
	}
	return 0;
}

/* Appends one row of column text to res, growing the array by doubling. */
static int
sq_add_row(sqlite3_stmt *stmt, struct pgn_store_result *res, int *cap_rows)
{
	char **grown, **row;
	const unsigned char *txt;
	int col, len;

	if (res->nrows == *cap_rows) {
		int cap = *cap_rows ? *cap_rows * 2 : 8;

		grown = realloc(res->values,
				(size_t)cap * (size_t)res->ncols * sizeof(char *));
		if (!grown)
			return -ENOMEM;
		res->values = grown;
		*cap_rows = cap;
	}
	row = res->values + (size_t)res->nrows * (size_t)res->ncols;
	for (col = 0; col < res->ncols; col++)
		row[col] = NULL;
	/* Counted before filling so that clear() frees a partial row. */
	res->nrows++;
	for (col = 0; col < res->ncols; col++) {
		if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
			continue;
		txt = sqlite3_column_text(stmt, col);
		len = sqlite3_column_bytes(stmt, col);
		if (!txt)
			return -ENOMEM;
		row[col] = malloc((size_t)len + 1);
		if (!row[col])
			return -ENOMEM;
		memcpy(row[col], txt, (size_t)len);
		row[col][len] = '\0';
	}
	return 0;
}

static int
sq_exec_real(struct sq_conn *c, const char *sql, int nparams,
	     const char *const *params, struct pgn_store_result *res)
{
	sqlite3_stmt *stmt = NULL;
	int rc, err, cap_rows = 0;

	err = sq_prepare(c, sql, &stmt, res);
	if (err < 0)
		return err;
	err = sq_bind(c, stmt, nparams, params, res);
	if (err < 0)
		goto fail;
	res->ncols = sqlite3_column_count(stmt);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (res->ncols == 0)
			continue;
		err = sq_add_row(stmt, res, &cap_rows);
		if (err < 0) {
			pgn_store_result_clear(res);
			pgn_store_result_set_error(res, err,
						   "sqlite: out of memory");
			goto fail;
		}
	}
	if (rc != SQLITE_DONE) {
		/* Rows read before the error are not a result. */
		pgn_store_result_clear(res);
		err = sq_error(c, res, "");
		goto fail;
	}
	if (!sqlite3_stmt_readonly(stmt))
		res->changes = sqlite3_changes(c->db);
	err = 0;

fail:
	/* Back to a clean state for the next use from the cache; binds are
	 * SQLITE_STATIC, so they must not outlive the call. */
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	return err;
}

static int
sq_exec(void *conn, const char *sql, int nparams, const char *const *params,
	struct pgn_store_result *res)
{
	struct sq_conn *c = conn;

	if (c->fail_file != NULL && access(c->fail_file, F_OK) == 0)
		return pgn_store_result_set_error(
			res, -EAGAIN,
			"sqlite: disk I/O error (test hook PIGEON_TEST_STORE_FAIL)");
	return sq_exec_real(c, sql, nparams, params, res);
}

static int
sq_exec_script(void *conn, const char *script, char *err, size_t errlen)
{
	struct sq_conn *c = conn;
	char *msg = NULL;
	int rc;

	rc = sqlite3_exec(c->db, script, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		if (err)
			snprintf(err, errlen, "sqlite: %s",
				 msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static int
sq_begin(void *conn, struct pgn_store_result *res)
{
	/* IMMEDIATE takes the write lock now; a deferred transaction that
	 * upgrades later can fail with SQLITE_BUSY despite busy_timeout. */
	return sq_exec(conn, "BEGIN IMMEDIATE", 0, NULL, res);
}

static int
sq_commit(void *conn, struct pgn_store_result *res)
{
	return sq_exec(conn, "COMMIT", 0, NULL, res);
}

static int
sq_rollback(void *conn, struct pgn_store_result *res)
{
	struct sq_conn *c = conn;

	/* Some errors roll back by themselves; ROLLBACK would then fail. */
	if (sqlite3_get_autocommit(c->db))
		return 0;
	/* Not through the test hook: a failed request must not leave the
	 * transaction open. */
	return sq_exec_real(c, "ROLLBACK", 0, NULL, res);
}

static void
sq_close(void *conn)
{
	struct sq_conn *c = conn;
	size_t i;

	if (!c)
		return;
	for (i = 0; i < STMT_CACHE_SIZE; i++) {
		if (c->cache[i].sql) {
			sqlite3_finalize(c->cache[i].stmt);
			free(c->cache[i].sql);
		}
	}
	if (sqlite3_close(c->db) != SQLITE_OK)
		pgn_log(PGN_LOG_WARN, "sqlite: close: %s",
			sqlite3_errmsg(c->db));
	free(c->fail_file);
	free(c);
}

static int
sq_open(const struct pgn_store_config *cfg, void **out, char *err,
	size_t errlen)
{
	static const char pragmas[] = "PRAGMA journal_mode=WAL;"
				      "PRAGMA synchronous=NORMAL;"
				      "PRAGMA foreign_keys=ON;";
	struct sq_conn *c;
	const char *hook;
	int rc;

	if (!cfg->path || !cfg->path[0]) {
		snprintf(err, errlen, "sqlite: no database path");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "sqlite: out of memory");
		return -ENOMEM;
	}
	rc = sqlite3_open_v2(cfg->path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "sqlite: cannot open %s: %s", cfg->path,
			 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(c->db, 1);
	sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
	/* Switching a new database to WAL while another process opens it
	 * too can answer SQLITE_BUSY at once, without the busy handler
	 * (seen with four pigeond starting together): retry for as long as
	 * the busy timeout. */
	for (int waited = 0;; waited += 20) {
		rc = sqlite3_exec(c->db, pragmas, NULL, NULL, NULL);
		if ((rc & 0xff) != SQLITE_BUSY || waited >= BUSY_TIMEOUT_MS)
			break;
		sqlite3_sleep(20);
	}
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(c->db));
		goto fail;
	}
	/* For the end-to-end tests of store failures only (tests/e2e/
	 * test_storefail.py): a file whose existence fails the store. */
	if ((hook = getenv("PIGEON_TEST_STORE_FAIL")) != NULL && hook[0]) {
		if ((c->fail_file = strdup(hook)) == NULL) {
			snprintf(err, errlen, "sqlite: out of memory");
			goto fail;
		}
		pgn_log(PGN_LOG_WARN, "sqlite: test hook PIGEON_TEST_STORE_FAIL "
			"set: the store fails while %s exists", hook);
	}
	*out = c;
	return 0;

fail:
	sqlite3_close(c->db); /* NULL is harmless */
	free(c);
	return -EIO;
}

const struct pgn_store_driver pgn_store_driver_sqlite = {
	.name = "sqlite",
	.version_table_sql =
		"CREATE TABLE IF NOT EXISTS schema_version ("
		" version INTEGER PRIMARY KEY,"
		" name TEXT NOT NULL,"
		" applied_at TEXT NOT NULL"
		"  DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))",
	.open = sq_open,
	.close = sq_close,
	.exec = sq_exec,
	.exec_script = sq_exec_script,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.reconnect = NULL,
	.migrate_lock = NULL,
};
