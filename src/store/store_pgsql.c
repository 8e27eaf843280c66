/* PostgreSQL driver.  Blocking libpq calls are fine here: they only ever
 * run on the store's worker thread (or in pigeonctl / at start-up).  A
 * lost connection is reported as -EAGAIN and not reset here: src/store.c
 * reconnects (pg_reconnect) with backoff and runs the whole request
 * again, so an outage costs one attempt per backoff step, not one per
 * query. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pigeon/log.h"
#include "store_driver.h"

/* Key of the session-level advisory lock held while migrating ("PGNM"). */
#define MIGRATION_LOCK_KEY "1346850381"

struct pg_conn {
	PGconn *conn;
	int in_txn;
};

static void
pg_notice(void *arg, const char *message)
{
	/* "relation already exists, skipping" and friends: not for stderr. */
	size_t n = strlen(message);

	while (n > 0 && message[n - 1] == '\n')
		n--;
	pgn_log(PGN_LOG_DEBUG, "pgsql: %.*s", (int)n, message);
}

/* 1 if the failure means the server is unavailable (the request may
 * succeed on a new connection later): the connection is gone, or the
 * server is shutting down or starting up.  SQLSTATE class 08 is
 * "connection exception"; 57P01-57P03 are admin/crash shutdown and
 * "cannot connect now". */
static int
pg_unavailable(struct pg_conn *c, const char *state)
{
	if (PQstatus(c->conn) == CONNECTION_BAD)
		return 1;
	return state != NULL &&
	       (!strncmp(state, "08", 2) || !strcmp(state, "57P01") ||
		!strcmp(state, "57P02") || !strcmp(state, "57P03"));
}

static int
pg_reconnect(void *conn, char *err, size_t errlen)
{
	struct pg_conn *c = conn;
	size_t n;

	PQreset(c->conn);
	c->in_txn = 0;
	if (PQstatus(c->conn) == CONNECTION_OK)
		return 0;
	if (err) {
		snprintf(err, errlen, "pgsql: %s", PQerrorMessage(c->conn));
		n = strlen(err);
		while (n > 0 && err[n - 1] == '\n')
			err[--n] = '\0';
	}
	return -EAGAIN;
}

static int
pg_result_error(struct pg_conn *c, PGresult *r, struct pgn_store_result *res)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorMessage(r) : "";
	int err = -EIO;

	if (state && !strcmp(state, "23505")) /* unique_violation */
		err = -EEXIST;
	else if (pg_unavailable(c, state))
		err = -EAGAIN;
	if (!msg[0])
		msg = PQerrorMessage(c->conn);
	return pgn_store_result_set_error(res, err, "pgsql: %s", msg);
}

static int
pg_copy_result(PGresult *r, struct pgn_store_result *res)
{
	int row, col, len, err;
	const char *cmd;
	char *v;

	if (PQresultStatus(r) == PGRES_COMMAND_OK) {
		cmd = PQcmdTuples(r);
		res->changes = cmd[0] ? strtoll(cmd, NULL, 10) : 0;
		return 0;
	}
	err = pgn_store_result_alloc(res, PQntuples(r), PQnfields(r));
	if (err < 0)
		return pgn_store_result_set_error(res, err,
						  "pgsql: out of memory");
	for (row = 0; row < res->nrows; row++) {
		for (col = 0; col < res->ncols; col++) {
			if (PQgetisnull(r, row, col))
				continue;
			len = PQgetlength(r, row, col);
			v = malloc((size_t)len + 1);
			if (!v) {
				pgn_store_result_clear(res);
				return pgn_store_result_set_error(
					res, -ENOMEM, "pgsql: out of memory");
			}
			memcpy(v, PQgetvalue(r, row, col), (size_t)len);
			v[len] = '\0';
			res->values[(size_t)row * (size_t)res->ncols +
				    (size_t)col] = v;
		}
	}
	return 0;
}

static int
result_ok(PGresult *r)
{
	ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

	return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* Runs sql with params (nparams < 0: a parameterless multi-statement
 * script through the simple protocol).  On a connection already known
 * to be broken nothing is sent: the caller sees -EAGAIN at once.  Caller
 * PQclear()s (NULL is a result too). */
static PGresult *
pg_run(struct pg_conn *c, const char *sql, int nparams,
       const char *const *params)
{
	if (PQstatus(c->conn) == CONNECTION_BAD)
		return NULL;
	if (nparams < 0)
		return PQexec(c->conn, sql);
	return PQexecParams(c->conn, sql, nparams, NULL, params, NULL, NULL,
			    0);
}

static int
pg_exec(void *conn, const char *sql, int nparams, const char *const *params,
	struct pgn_store_result *res)
{
	struct pg_conn *c = conn;
	PGresult *r;
	int err;

	r = pg_run(c, sql, nparams, params);
	if (!result_ok(r))
		err = pg_result_error(c, r, res);
	else
		err = pg_copy_result(r, res);
	PQclear(r);
	return err;
}

static int
pg_exec_script(void *conn, const char *script, char *err, size_t errlen)
{
	struct pg_conn *c = conn;
	struct pgn_store_result res = { 0 };
	PGresult *r;
	int rc = 0;

	r = pg_run(c, script, -1, NULL);
	if (!result_ok(r)) {
		rc = pg_result_error(c, r, &res);
		if (err)
			snprintf(err, errlen, "%s", res.errmsg);
	}
	PQclear(r);
	return rc;
}

static int
pg_begin(void *conn, struct pgn_store_result *res)
{
	struct pg_conn *c = conn;
	int err;

	err = pg_exec(c, "BEGIN", 0, NULL, res);
	if (err == 0)
		c->in_txn = 1;
	return err;
}

static int
pg_commit(void *conn, struct pgn_store_result *res)
{
	struct pg_conn *c = conn;
	int err;

	err = pg_exec(c, "COMMIT", 0, NULL, res);
	/* COMMIT ends the transaction even when it fails. */
	c->in_txn = 0;
	return err;
}

static int
pg_rollback(void *conn, struct pgn_store_result *res)
{
	struct pg_conn *c = conn;
	int err;

	if (PQstatus(c->conn) == CONNECTION_BAD) {
		c->in_txn = 0; /* the server already rolled it back */
		return 0;
	}
	err = pg_exec(c, "ROLLBACK", 0, NULL, res);
	c->in_txn = 0;
	return err;
}

static int
pg_migrate_lock(void *conn, int lock, char *err, size_t errlen)
{
	struct pg_conn *c = conn;
	struct pgn_store_result res = { 0 };
	int rc;

	rc = pg_exec(c,
		     lock ? "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")"
			  : "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")",
		     0, NULL, &res);
	if (rc < 0 && err)
		snprintf(err, errlen, "migration lock: %s", res.errmsg);
	pgn_store_result_clear(&res);
	return rc;
}

static void
pg_close(void *conn)
{
	struct pg_conn *c = conn;

	if (!c)
		return;
	PQfinish(c->conn);
	free(c);
}

static int
pg_open(const struct pgn_store_config *cfg, void **out, char *err,
	size_t errlen)
{
	/* The conninfo is expanded from "dbname"; keywords after it override
	 * it, so the encoding is always UTF-8, and survives PQreset. */
	const char *keys[] = { "fallback_application_name", "dbname",
			       "client_encoding", NULL };
	const char *vals[] = { "pigeon", cfg->conninfo ? cfg->conninfo : "",
			       "UTF8", NULL };
	struct pg_conn *c;
	size_t n;

	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "pgsql: out of memory");
		return -ENOMEM;
	}
	c->conn = PQconnectdbParams(keys, vals, 1);
	if (!c->conn) {
		snprintf(err, errlen, "pgsql: out of memory");
		goto fail;
	}
	if (PQstatus(c->conn) != CONNECTION_OK) {
		snprintf(err, errlen, "pgsql: cannot connect: %s",
			 PQerrorMessage(c->conn));
		n = strlen(err);
		while (n > 0 && err[n - 1] == '\n')
			err[--n] = '\0';
		goto fail;
	}
	PQsetNoticeProcessor(c->conn, pg_notice, NULL);
	*out = c;
	return 0;

fail:
	PQfinish(c->conn); /* NULL is harmless */
	free(c);
	return -EIO;
}

const struct pgn_store_driver pgn_store_driver_pgsql = {
	.name = "pgsql",
	.version_table_sql =
		"CREATE TABLE IF NOT EXISTS schema_version ("
		" version INTEGER PRIMARY KEY,"
		" name TEXT NOT NULL,"
		" applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
	.open = pg_open,
	.close = pg_close,
	.exec = pg_exec,
	.exec_script = pg_exec_script,
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.reconnect = pg_reconnect,
	.migrate_lock = pg_migrate_lock,
};
