/* The one asynchronous storage API, with two drivers (SQLite, PostgreSQL).
 *
 * Callers send SQL with bound text parameters ($1, $2, ... in both
 * drivers); each driver runs queries on its own thread and the result comes
 * back on the event loop with the caller's owner id, so a session that is
 * gone by then is simply not found (requests are keyed by id, not pointer).
 * Roster, offline messages, archive, rooms and PEP only add tables
 * (schemas/<driver>/NNN_*.sql) and queries; this API does not change. */
#ifndef PIGEON_STORE_H
#define PIGEON_STORE_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

struct pgn_store_config {
	const char *driver;   /* "sqlite" (default) or "pgsql" */
	const char *path;     /* sqlite database file */
	const char *conninfo; /* libpq connection string */
	const char *schema_dir; /* directory holding sqlite/ and pgsql/ */
	/* How long a request waits (retried, in order) while the store is
	 * unavailable before it fails with -EAGAIN; 0: at once. */
	long outage_hold_ms;
};

struct pgn_store_result {
	int error;            /* 0, or negative (-EIO, -EEXIST for unique violation,
			       * -EAGAIN: the store was unavailable for longer
			       * than outage_hold; nothing was written) */
	char errmsg[256];     /* driver message when error != 0 */
	int nrows;
	int ncols;
	char **values;        /* nrows * ncols, row-major; NULL for SQL NULL */
	int64_t changes;      /* rows changed by INSERT/UPDATE/DELETE */
};

/* Called on the loop thread.  res is valid only during the call. */
typedef void (*pgn_store_cb)(uint64_t owner, void *arg,
			     const struct pgn_store_result *res);

struct pgn_store;

/* Opens the store and applies pending migrations (synchronously: called at
 * start-up, before the loop runs, and by pigeonctl).  base may be NULL for
 * synchronous-only use (pigeonctl).  On error returns NULL and writes a
 * message into err. */
struct pgn_store *pgn_store_open(const struct pgn_store_config *cfg,
				 struct event_base *base, char *err,
				 size_t errlen);
void pgn_store_close(struct pgn_store *st);
const char *pgn_store_driver(const struct pgn_store *st);
/* Schema version applied (highest migration number). */
int pgn_store_schema_version(const struct pgn_store *st);

/* Queues a query; params are copied.  cb may be NULL (fire and forget;
 * errors are logged).  0 or negative error. */
int pgn_store_query(struct pgn_store *st, const char *sql, int nparams,
		    const char *const *params, uint64_t owner, pgn_store_cb cb,
		    void *arg);
/* Runs several statements in one transaction; one callback with the
 * result of the last statement, or the first error. */
int pgn_store_txn(struct pgn_store *st, int nstmts, const char *const *sqls,
		  const int *nparams, const char *const *const *params,
		  uint64_t owner, pgn_store_cb cb, void *arg);
/* Synchronous query for pigeonctl and start-up only (never on the loop
 * once it runs).  *out is freed with pgn_store_result_free. */
int pgn_store_query_sync(struct pgn_store *st, const char *sql, int nparams,
			 const char *const *params,
			 struct pgn_store_result **out);
/* Several statements in one transaction, synchronously (pigeonctl); *out
 * (may be NULL) is the result of the last one. */
int pgn_store_txn_sync(struct pgn_store *st, int nstmts,
		       const char *const *sqls, const int *nparams,
		       const char *const *const *params,
		       struct pgn_store_result **out);
void pgn_store_result_free(struct pgn_store_result *res);
/* Value at (row, col) or NULL. */
const char *pgn_store_value(const struct pgn_store_result *res, int row,
			    int col);

#endif
