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

/* ---- typed stores (src/store/store_kv.c) ----
 * Shared tables (schemas/<driver>/013_typed_stores.sql) behind a few
 * calls, the same SQL on both drivers, so that a module keeping per-user
 * data needs no table of its own.  ns names the module's data ("private",
 * "vcard"); host and user name an account, and the rows go with it
 * (ON DELETE CASCADE): writing for an account that does not exist fails.
 * Requests queue on the store in order like any query; the callbacks run
 * on the loop with the caller's owner id and err 0 or negative (as
 * pgn_store_result.error); strings they get are borrowed for the call.
 * Each call returns 0, or a negative error and then never calls back. */

/* Key-value per user: (ns, host, user, key) -> value (text). */
typedef void (*pgn_kv_value_cb)(uint64_t owner, void *arg, int err,
				const char *value /* NULL: no such key */);
typedef void (*pgn_kv_keys_cb)(uint64_t owner, void *arg, int err, size_t n,
			       const char *const *keys /* sorted */);
/* The same with each key's value (values[i] is keys[i]'s). */
typedef void (*pgn_kv_entries_cb)(uint64_t owner, void *arg, int err,
				  size_t n, const char *const *keys,
				  const char *const *values);
typedef void (*pgn_kv_done_cb)(uint64_t owner, void *arg, int err);

/* The most keys one pgn_kv_put writes. */
#define PGN_KV_MAX_BATCH 1024

int pgn_kv_get(struct pgn_store *st, const char *ns, const char *host,
	       const char *user, const char *key, uint64_t owner,
	       pgn_kv_value_cb cb, void *arg);
/* Writes n keys (1..PGN_KV_MAX_BATCH) in one transaction, all or none;
 * values[i] NULL deletes keys[i].  cb may be NULL. */
int pgn_kv_put(struct pgn_store *st, const char *ns, const char *host,
	       const char *user, size_t n, const char *const *keys,
	       const char *const *values, uint64_t owner, pgn_kv_done_cb cb,
	       void *arg);
int pgn_kv_keys(struct pgn_store *st, const char *ns, const char *host,
		const char *user, uint64_t owner, pgn_kv_keys_cb cb, void *arg);
/* Every key of the user in ns with its value (for small values: the
 * keys alone are cheaper to read). */
int pgn_kv_entries(struct pgn_store *st, const char *ns, const char *host,
		   const char *user, uint64_t owner, pgn_kv_entries_cb cb,
		   void *arg);
/* Deletes every key of the user in ns (ns NULL: in every namespace). */
int pgn_kv_delete_user(struct pgn_store *st, const char *ns,
		       const char *host, const char *user, uint64_t owner,
		       pgn_kv_done_cb cb, void *arg);

/* Archive per user: items appended in order, each with an id (growing),
 * a time ts (the caller's unit), an optional key and a value. */
struct pgn_archive_item {
	int64_t id;
	int64_t ts;
	const char *key; /* NULL when appended without one */
	const char *value;
};
/* Which items a query returns: those with start_ts <= ts <= end_ts and
 * after_id < id < before_id (0: no bound), at most max (1..1000) of
 * them: the oldest ones, or with last set the newest ones (paging
 * backwards).  Always given oldest first. */
struct pgn_archive_range {
	int64_t start_ts, end_ts;
	int64_t after_id, before_id;
	int max;
	int last;
};
typedef void (*pgn_archive_id_cb)(uint64_t owner, void *arg, int err,
				  int64_t id);
/* complete: no other item of the range lies beyond this page. */
typedef void (*pgn_archive_page_cb)(uint64_t owner, void *arg, int err,
				    size_t n,
				    const struct pgn_archive_item *items,
				    int complete);

int pgn_archive_append(struct pgn_store *st, const char *ns,
		       const char *host, const char *user, int64_t ts,
		       const char *key, const char *value, uint64_t owner,
		       pgn_archive_id_cb cb, void *arg);
int pgn_archive_query(struct pgn_store *st, const char *ns, const char *host,
		      const char *user, const struct pgn_archive_range *r,
		      uint64_t owner, pgn_archive_page_cb cb, void *arg);
/* Deletes the user's items in ns (ns NULL: in every namespace). */
int pgn_archive_delete_user(struct pgn_store *st, const char *ns,
			    const char *host, const char *user,
			    uint64_t owner, pgn_kv_done_cb cb, void *arg);

#endif
