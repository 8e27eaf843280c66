/* Typed stores over the query API: a key-value store and an archive per
 * user (include/pigeon/store.h).  The SQL is the same on both drivers;
 * each request carries a small adapter that turns the row result into
 * the typed callback.  Keys are sorted here (strcmp), not by the
 * database, whose collation differs between drivers. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/store.h"

#define ARCHIVE_MAX_PAGE 1000

#define KV_WHERE "host = $1 AND username = $2 AND ns = $3"

/* The caller's callback and argument, until the store answers. */
struct typed_req {
	union {
		pgn_kv_value_cb value;
		pgn_kv_keys_cb keys;
		pgn_kv_entries_cb entries;
		pgn_kv_done_cb done;
		pgn_archive_id_cb id;
		pgn_archive_page_cb page;
	} cb;
	void *arg;
	int max;  /* archive pages: the page size asked */
	int last; /* archive pages: rows came newest first */
	int entries; /* cb.entries, not cb.keys */
};

static struct typed_req *
req_new(void *arg)
{
	struct typed_req *r = calloc(1, sizeof(*r));

	if (r != NULL)
		r->arg = arg;
	return r;
}

/* Queues sql for r (freed on failure). */
static int
submit(struct pgn_store *st, const char *sql, int nparams,
       const char *const *params, uint64_t owner, pgn_store_cb cb,
       struct typed_req *r)
{
	int rc;

	if (r == NULL)
		return -ENOMEM;
	rc = pgn_store_query(st, sql, nparams, params, owner, cb, r);
	if (rc < 0)
		free(r);
	return rc;
}

static int
valid_kv(const char *ns, const char *host, const char *user)
{
	return ns != NULL && host != NULL && user != NULL;
}

/* ---- key-value ------------------------------------------------------------ */

static void
on_value(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct typed_req *r = arg;

	r->cb.value(owner, r->arg, res->error,
		    res->error == 0 && res->nrows > 0
			    ? pgn_store_value(res, 0, 0)
			    : NULL);
	free(r);
}

int
pgn_kv_get(struct pgn_store *st, const char *ns, const char *host,
	   const char *user, const char *key, uint64_t owner,
	   pgn_kv_value_cb cb, void *arg)
{
	const char *params[4] = { host, user, ns, key };
	struct typed_req *r;

	if (!valid_kv(ns, host, user) || key == NULL || cb == NULL)
		return -EINVAL;
	if ((r = req_new(arg)) != NULL)
		r->cb.value = cb;
	return submit(st, "SELECT value FROM user_kv WHERE " KV_WHERE
		      " AND kv_key = $4",
		      4, params, owner, on_value, r);
}

static void
on_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct typed_req *r = arg;

	r->cb.done(owner, r->arg, res->error);
	free(r);
}

int
pgn_kv_put(struct pgn_store *st, const char *ns, const char *host,
	   const char *user, size_t n, const char *const *keys,
	   const char *const *values, uint64_t owner, pgn_kv_done_cb cb,
	   void *arg)
{
	static const char upsert[] =
		"INSERT INTO user_kv (host, username, ns, kv_key, value) "
		"VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host, username, "
		"ns, kv_key) DO UPDATE SET value = excluded.value";
	static const char del[] =
		"DELETE FROM user_kv WHERE " KV_WHERE " AND kv_key = $4";
	const char **sqls = NULL;
	int *nparams = NULL;
	const char *(*pv)[5] = NULL;
	const char *const **params = NULL;
	struct typed_req *r = NULL;
	int rc = -ENOMEM;

	if (!valid_kv(ns, host, user) || n == 0 || n > PGN_KV_MAX_BATCH ||
	    keys == NULL || values == NULL)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (keys[i] == NULL)
			return -EINVAL;
	if ((sqls = calloc(n, sizeof(*sqls))) == NULL ||
	    (nparams = calloc(n, sizeof(*nparams))) == NULL ||
	    (pv = calloc(n, sizeof(*pv))) == NULL ||
	    (params = calloc(n, sizeof(*params))) == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		sqls[i] = values[i] != NULL ? upsert : del;
		nparams[i] = values[i] != NULL ? 5 : 4;
		pv[i][0] = host;
		pv[i][1] = user;
		pv[i][2] = ns;
		pv[i][3] = keys[i];
		pv[i][4] = values[i];
		params[i] = pv[i];
	}
	if (cb != NULL) {
		if ((r = req_new(arg)) == NULL)
			goto out;
		r->cb.done = cb;
	}
	/* The store copies the statements and parameters. */
	rc = pgn_store_txn(st, (int)n, sqls, nparams, params, owner,
			   cb != NULL ? on_done : NULL, r);
	if (rc < 0)
		free(r);
out:
	free(sqls);
	free(nparams);
	free(pv);
	free(params);
	return rc;
}

/* A key and its value, sorted together by key. */
struct kv_pair {
	const char *key;
	const char *value;
};

static int
cmp_pair(const void *a, const void *b)
{
	return strcmp(((const struct kv_pair *)a)->key,
		      ((const struct kv_pair *)b)->key);
}

/* Keys (column 0) and values (column 1, when the query has it) of res,
 * sorted by key. */
static void
on_rows(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct typed_req *r = arg;
	struct kv_pair *pairs = NULL;
	const char **keys = NULL, **values = NULL;
	size_t n = 0;
	int err = res->error;

	if (err == 0 && res->nrows > 0) {
		size_t rows = (size_t)res->nrows;
		if ((pairs = calloc(rows, sizeof(*pairs))) == NULL ||
		    (keys = calloc(rows, sizeof(*keys))) == NULL ||
		    (values = calloc(rows, sizeof(*values))) == NULL) {
			err = -ENOMEM;
		} else {
			for (int i = 0; i < res->nrows; i++) {
				pairs[n].key = pgn_store_value(res, i, 0);
				pairs[n].value = res->ncols > 1
						 ? pgn_store_value(res, i, 1)
						 : NULL;
				n += pairs[n].key != NULL;
			}
			qsort(pairs, n, sizeof(*pairs), cmp_pair);
			for (size_t i = 0; i < n; i++) {
				keys[i] = pairs[i].key;
				values[i] = pairs[i].value != NULL
						    ? pairs[i].value
						    : "";
			}
		}
	}
	if (err != 0)
		n = 0;
	if (r->entries)
		r->cb.entries(owner, r->arg, err, n, err == 0 ? keys : NULL,
			      err == 0 ? values : NULL);
	else
		r->cb.keys(owner, r->arg, err, n, err == 0 ? keys : NULL);
	free(pairs);
	free(keys);
	free(values);
	free(r);
}

int
pgn_kv_keys(struct pgn_store *st, const char *ns, const char *host,
	    const char *user, uint64_t owner, pgn_kv_keys_cb cb, void *arg)
{
	const char *params[3] = { host, user, ns };
	struct typed_req *r;

	if (!valid_kv(ns, host, user) || cb == NULL)
		return -EINVAL;
	if ((r = req_new(arg)) != NULL)
		r->cb.keys = cb;
	return submit(st, "SELECT kv_key FROM user_kv WHERE " KV_WHERE, 3,
		      params, owner, on_rows, r);
}

int
pgn_kv_entries(struct pgn_store *st, const char *ns, const char *host,
	       const char *user, uint64_t owner, pgn_kv_entries_cb cb,
	       void *arg)
{
	const char *params[3] = { host, user, ns };
	struct typed_req *r;

	if (!valid_kv(ns, host, user) || cb == NULL)
		return -EINVAL;
	if ((r = req_new(arg)) != NULL) {
		r->cb.entries = cb;
		r->entries = 1;
	}
	return submit(st, "SELECT kv_key, value FROM user_kv WHERE " KV_WHERE,
		      3, params, owner, on_rows, r);
}

/* DELETE FROM table for the user, in ns or in all of them. */
static int
delete_user(struct pgn_store *st, const char *table, const char *ns,
	    const char *host, const char *user, uint64_t owner,
	    pgn_kv_done_cb cb, void *arg)
{
	const char *params[3] = { host, user, ns };
	struct typed_req *r = NULL;
	char sql[128];
	int rc;

	if (host == NULL || user == NULL)
		return -EINVAL;
	snprintf(sql, sizeof(sql),
		 "DELETE FROM %s WHERE host = $1 AND username = $2%s", table,
		 ns != NULL ? " AND ns = $3" : "");
	if (cb != NULL) {
		if ((r = req_new(arg)) == NULL)
			return -ENOMEM;
		r->cb.done = cb;
	}
	rc = pgn_store_query(st, sql, ns != NULL ? 3 : 2, params, owner,
			     cb != NULL ? on_done : NULL, r);
	if (rc < 0)
		free(r);
	return rc;
}

int
pgn_kv_delete_user(struct pgn_store *st, const char *ns, const char *host,
		   const char *user, uint64_t owner, pgn_kv_done_cb cb,
		   void *arg)
{
	return delete_user(st, "user_kv", ns, host, user, owner, cb, arg);
}

/* ---- archive -------------------------------------------------------------- */

static void
on_appended(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct typed_req *r = arg;
	const char *id = res->error == 0 && res->nrows > 0
				 ? pgn_store_value(res, 0, 0)
				 : NULL;

	r->cb.id(owner, r->arg, res->error == 0 && id == NULL ? -EIO
							       : res->error,
		 id != NULL ? strtoll(id, NULL, 10) : 0);
	free(r);
}

int
pgn_archive_append(struct pgn_store *st, const char *ns, const char *host,
		   const char *user, int64_t ts, const char *key,
		   const char *value, uint64_t owner, pgn_archive_id_cb cb,
		   void *arg)
{
	char tsbuf[24];
	const char *params[6] = { host, user, ns, tsbuf, key, value };
	struct typed_req *r = NULL;
	int rc;

	if (!valid_kv(ns, host, user) || value == NULL)
		return -EINVAL;
	snprintf(tsbuf, sizeof(tsbuf), "%" PRId64, ts);
	if (cb != NULL) {
		if ((r = req_new(arg)) == NULL)
			return -ENOMEM;
		r->cb.id = cb;
	}
	rc = pgn_store_query(st,
			     "INSERT INTO user_archive (host, username, ns, "
			     "ts, item_key, value) VALUES ($1, $2, $3, "
			     "CAST($4 AS BIGINT), $5, $6) RETURNING id",
			     6, params, owner, cb != NULL ? on_appended : NULL,
			     r);
	if (rc < 0)
		free(r);
	return rc;
}

static void
on_page(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct typed_req *r = arg;
	struct pgn_archive_item *items = NULL;
	size_t n = 0;
	int err = res->error, complete = 1;

	if (err == 0 && res->nrows > 0) {
		n = (size_t)res->nrows;
		if (n > (size_t)r->max) {
			/* The extra row only says there is more. */
			n = (size_t)r->max;
			complete = 0;
		}
		if ((items = calloc(n, sizeof(*items))) == NULL) {
			err = -ENOMEM;
			n = 0;
		}
		for (size_t i = 0; i < n; i++) {
			/* Oldest first whichever end the page is from. */
			size_t row = r->last ? n - 1 - i : i;
			const char *id = pgn_store_value(res, (int)row, 0);
			const char *ts = pgn_store_value(res, (int)row, 1);
			const char *v = pgn_store_value(res, (int)row, 3);
			items[i].id = id != NULL ? strtoll(id, NULL, 10) : 0;
			items[i].ts = ts != NULL ? strtoll(ts, NULL, 10) : 0;
			items[i].key = pgn_store_value(res, (int)row, 2);
			items[i].value = v != NULL ? v : "";
		}
	}
	r->cb.page(owner, r->arg, err, n, items, err == 0 ? complete : 0);
	free(items);
	free(r);
}

int
pgn_archive_query(struct pgn_store *st, const char *ns, const char *host,
		  const char *user, const struct pgn_archive_range *rg,
		  uint64_t owner, pgn_archive_page_cb cb, void *arg)
{
	static const char *const conds[4] = { " AND ts >= CAST($%d AS BIGINT)",
					      " AND ts <= CAST($%d AS BIGINT)",
					      " AND id > CAST($%d AS BIGINT)",
					      " AND id < CAST($%d AS BIGINT)" };
	const int64_t bounds[4] = { rg != NULL ? rg->start_ts : 0,
				    rg != NULL ? rg->end_ts : 0,
				    rg != NULL ? rg->after_id : 0,
				    rg != NULL ? rg->before_id : 0 };
	char nums[5][24], sql[512];
	const char *params[8] = { host, user, ns };
	struct typed_req *r;
	int np = 3;
	size_t len;

	if (!valid_kv(ns, host, user) || rg == NULL || cb == NULL ||
	    rg->max < 1 || rg->max > ARCHIVE_MAX_PAGE)
		return -EINVAL;
	len = (size_t)snprintf(sql, sizeof(sql),
			       "SELECT id, ts, item_key, value FROM "
			       "user_archive WHERE " KV_WHERE);
	for (int i = 0; i < 4; i++) {
		if (bounds[i] == 0)
			continue;
		snprintf(nums[i], sizeof(nums[i]), "%" PRId64, bounds[i]);
		params[np++] = nums[i];
		len += (size_t)snprintf(sql + len, sizeof(sql) - len, conds[i],
					np);
	}
	snprintf(nums[4], sizeof(nums[4]), "%d", rg->max + 1);
	params[np++] = nums[4];
	snprintf(sql + len, sizeof(sql) - len,
		 " ORDER BY id %s LIMIT CAST($%d AS BIGINT)",
		 rg->last ? "DESC" : "ASC", np);
	if ((r = req_new(arg)) != NULL) {
		r->cb.page = cb;
		r->max = rg->max;
		r->last = rg->last;
	}
	return submit(st, sql, np, params, owner, on_page, r);
}

int
pgn_archive_delete_user(struct pgn_store *st, const char *ns,
			const char *host, const char *user, uint64_t owner,
			pgn_kv_done_cb cb, void *arg)
{
	return delete_user(st, "user_archive", ns, host, user, owner, cb,
			   arg);
}
