/* Internal interface between the generic store (src/store.c: queue,
 * results, migrations, outages) and one database driver.  A driver
 * reports "the store is unavailable, try again" as -EAGAIN (and only
 * that: a constraint or syntax error is not retried).  A driver connection is
 * used by one thread at a time: store.c serialises every call with its
 * own mutex, so drivers do no locking. */
#ifndef PIGEON_STORE_DRIVER_H
#define PIGEON_STORE_DRIVER_H

#include <stddef.h>

#include "pigeon/store.h"

struct pgn_store_driver {
	const char *name; /* "sqlite", "pgsql": also the schema subdirectory */
	/* DDL that creates schema_version if missing (dialects differ on
	 * the timestamp default). */
	const char *version_table_sql;

	/* Connects; on error returns negative and writes err. */
	int (*open)(const struct pgn_store_config *cfg, void **conn, char *err,
		    size_t errlen);
	void (*close)(void *conn);
	/* One statement with $1..$n text parameters (NULL = SQL NULL).  res
	 * is zeroed by the caller; the driver fills rows or error/errmsg and
	 * returns res->error. */
	int (*exec)(void *conn, const char *sql, int nparams,
		    const char *const *params, struct pgn_store_result *res);
	/* Several statements without parameters (a migration file). */
	int (*exec_script)(void *conn, const char *script, char *err,
			   size_t errlen);
	/* Transactions; same result convention as exec. */
	int (*begin)(void *conn, struct pgn_store_result *res);
	int (*commit)(void *conn, struct pgn_store_result *res);
	int (*rollback)(void *conn, struct pgn_store_result *res);
	/* Reconnects after a request failed with -EAGAIN (the store is
	 * unavailable: connection lost, I/O error, disk full).  NULL when
	 * there is nothing to reconnect (the next attempt just runs the
	 * request again).  0 or negative. */
	int (*reconnect)(void *conn, char *err, size_t errlen);
	/* Serialises migrations between processes sharing the database
	 * (lock != 0 takes, 0 releases).  NULL when transactions suffice. */
	int (*migrate_lock)(void *conn, int lock, char *err, size_t errlen);
};

extern const struct pgn_store_driver pgn_store_driver_sqlite;
extern const struct pgn_store_driver pgn_store_driver_pgsql;

/* Helpers for drivers (src/store.c). */

/* Sets res->error = err (negative) and formats errmsg; returns err. */
int pgn_store_result_set_error(struct pgn_store_result *res, int err,
			       const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Allocates the value array for nrows x ncols (all NULL).  0 or -ENOMEM. */
int pgn_store_result_alloc(struct pgn_store_result *res, int nrows, int ncols);
/* Drops values and error, leaving an empty result. */
void pgn_store_result_clear(struct pgn_store_result *res);

#endif
