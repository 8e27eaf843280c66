/* Store, worker and account tests.  Every store case runs against SQLite
 * (a temporary file) and, when PIGEON_TEST_PGSQL holds a libpq conninfo,
 * against PostgreSQL in a schema of its own that each case drops and
 * recreates.  PIGEON_REQUIRE_PGSQL=1 turns a missing PostgreSQL into a
 * failure instead of a skip. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <libpq-fe.h>

#include "pigeon/account.h"
#include "pigeon/log.h"
#include "pigeon/scram.h"
#include "pigeon/store.h"
#include "pigeon/worker.h"

/* Not PATH_BUF: a project header may shadow <limits.h>. */
#define PATH_BUF 4096
#define PG_SCHEMA "pigeon_test"
#define BACKEND_SQLITE 0
#define BACKEND_PGSQL 1

/* Set once in main() before any test runs; read-only afterwards. */
static const char *pg_base_conninfo;  /* as given in the environment */
static char pg_test_conninfo[4096];   /* plus search_path=PG_SCHEMA */

struct fx {
	int backend;
	char dir[1024];
	char dbpath[PATH_BUF + 16];
	char schema_dir[PATH_BUF];
	struct pgn_store_config cfg;
	struct event_base *base;
	struct pgn_store *st;
};

/* ---- helpers -------------------------------------------------------------- */

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void
pg_reset_schema(void)
{
	PGconn *c = PQconnectdb(pg_base_conninfo);
	PGresult *r;

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "pgsql: %s",
		      PQerrorMessage(c));
	PQsetNoticeProcessor(c, NULL, NULL);
	r = PQexec(c, "SET client_min_messages = warning;"
		      "DROP SCHEMA IF EXISTS " PG_SCHEMA " CASCADE;"
		      "CREATE SCHEMA " PG_SCHEMA);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "pgsql: %s",
		      PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
}

static const char *
default_schema_dir(void)
{
	static char buf[PATH_BUF];
	const char *src = getenv("PIGEON_SRCDIR");

	if (!src || !src[0])
		return "schemas";
	snprintf(buf, sizeof(buf), "%s/schemas", src);
	return buf;
}

static void
fx_init(struct fx *f, int backend)
{
	memset(f, 0, sizeof(*f));
	f->backend = backend;
	snprintf(f->dir, sizeof(f->dir), "%s/pgn-store-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	snprintf(f->dbpath, sizeof(f->dbpath), "%s/test.db", f->dir);
	snprintf(f->schema_dir, sizeof(f->schema_dir), "%s",
		 default_schema_dir());
	if (backend == BACKEND_PGSQL) {
		pg_reset_schema();
		f->cfg.driver = "pgsql";
		f->cfg.conninfo = pg_test_conninfo;
	} else {
		f->cfg.driver = "sqlite";
		f->cfg.path = f->dbpath;
	}
	f->cfg.schema_dir = f->schema_dir;
	f->base = event_base_new();
	ck_assert_ptr_nonnull(f->base);
}

static struct pgn_store *
fx_try_open(struct fx *f, struct event_base *base, char *err, size_t errlen)
{
	return pgn_store_open(&f->cfg, base, err, errlen);
}

static void
fx_open(struct fx *f)
{
	char err[512];

	f->st = fx_try_open(f, f->base, err, sizeof(err));
	ck_assert_msg(f->st != NULL, "open: %s", err);
}

static void
fx_fini(struct fx *f)
{
	pgn_store_close(f->st);
	f->st = NULL;
	event_base_free(f->base);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
}

/* Runs the loop until *counter reaches want (or 30 s pass: failure). */
static void
run_until(struct event_base *base, const int *counter, int want)
{
	struct timeval tv = { 30, 0 };
	int expired = 0;
	struct event *deadline = evtimer_new(base, on_deadline, &expired);

	ck_assert_ptr_nonnull(deadline);
	evtimer_add(deadline, &tv);
	while (*counter < want && !expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(deadline);
	ck_assert_msg(*counter >= want, "timed out: %d of %d callbacks",
		      *counter, want);
}

static void
exec_ok(struct pgn_store *st, const char *sql)
{
	struct pgn_store_result *res = NULL;
	int err = pgn_store_query_sync(st, sql, 0, NULL, &res);

	ck_assert_msg(err == 0, "%s: %d", sql, err);
	pgn_store_result_free(res);
}

/* The single value of a one-row, one-column query, as a malloc'd string
 * ("(null)" for SQL NULL). */
static char *
query_value(struct pgn_store *st, const char *sql, int n,
	    const char *const *p)
{
	struct pgn_store_result *res = NULL;
	const char *v;
	char *out;
	int err = pgn_store_query_sync(st, sql, n, p, &res);

	ck_assert_msg(err == 0, "%s: %d", sql, err);
	ck_assert_int_eq(res->nrows, 1);
	v = pgn_store_value(res, 0, 0);
	out = strdup(v ? v : "(null)");
	pgn_store_result_free(res);
	return out;
}

static int
query_int(struct pgn_store *st, const char *sql)
{
	char *v = query_value(st, sql, 0, NULL);
	int n = atoi(v);

	free(v);
	return n;
}

static void
write_file(const char *dir, const char *name, const char *text)
{
	char path[PATH_BUF * 2];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(text, fp);
	ck_assert_int_eq(fclose(fp), 0);
}

/* ---- worker ------------------------------------------------------------------ */

struct wjob {
	int index;
	int *seen;
	int *count;
	int ran_on_loop; /* set by done() only */
	struct pgn_worker *chain; /* submit one more job from done() */
};

static void
wjob_run(void *p)
{
	struct wjob *j = p;

	if (j->index % 97 == 0)
		usleep(1000); /* let the loop catch up now and then */
}

static void wjob_done(void *p);

static void
wjob_done(void *p)
{
	struct wjob *j = p;

	j->seen[*j->count] = j->index;
	(*j->count)++;
	if (j->chain) {
		struct wjob *k = calloc(1, sizeof(*k));

		ck_assert_ptr_nonnull(k);
		*k = *j;
		k->index = j->index + 100000;
		k->chain = NULL;
		ck_assert_int_eq(pgn_worker_submit(j->chain, k, wjob_run,
						   wjob_done), 0);
	}
	free(j);
}

START_TEST(test_worker_order)
{
	enum { N = 1000, M = 50 };
	static int seen[N + M + 1];
	struct event_base *base = event_base_new();
	struct pgn_worker *w;
	int count = 0, i;

	ck_assert_ptr_nonnull(base);
	ck_assert_ptr_null(pgn_worker_new(NULL, "x"));
	w = pgn_worker_new(base, "test-worker");
	ck_assert_ptr_nonnull(w);
	for (i = 0; i < N; i++) {
		struct wjob *j = calloc(1, sizeof(*j));

		ck_assert_ptr_nonnull(j);
		j->index = i;
		j->seen = seen;
		j->count = &count;
		ck_assert_int_eq(pgn_worker_submit(w, j, wjob_run, wjob_done),
				 0);
	}
	ck_assert_uint_gt(pgn_worker_pending(w), 0);
	run_until(base, &count, N);
	for (i = 0; i < N; i++)
		ck_assert_int_eq(seen[i], i);

	/* Free drains without the loop: queued jobs, their done()
	 * callbacks, and a job chained from a done() callback. */
	count = 0;
	for (i = 0; i < M; i++) {
		struct wjob *j = calloc(1, sizeof(*j));

		ck_assert_ptr_nonnull(j);
		j->index = i;
		j->seen = seen;
		j->count = &count;
		j->chain = i == M - 1 ? w : NULL;
		ck_assert_int_eq(pgn_worker_submit(w, j, wjob_run, wjob_done),
				 0);
	}
	pgn_worker_free(w);
	ck_assert_int_eq(count, M + 1);
	for (i = 0; i < M; i++)
		ck_assert_int_eq(seen[i], i);
	ck_assert_int_eq(seen[M], M - 1 + 100000);
	event_base_free(base);
}
END_TEST

/* ---- typed stores ---------------------------------------------------------------- */

/* What the typed callbacks saw last. */
struct typed_state {
	int count;
	int err;
	char value[256];
	size_t n;
	char keys[8][32];
	int64_t id;
	int64_t ids[8];
	char values[8][32];
	int complete;
};

static void
kv_value_cb(uint64_t owner, void *arg, int err, const char *value)
{
	struct typed_state *s = arg;

	(void)owner;
	s->count++;
	s->err = err;
	snprintf(s->value, sizeof(s->value), "%s", value ? value : "(none)");
}

static void
kv_keys_cb(uint64_t owner, void *arg, int err, size_t n,
	   const char *const *keys)
{
	struct typed_state *s = arg;

	(void)owner;
	s->count++;
	s->err = err;
	s->n = n;
	for (size_t i = 0; i < n && i < 8; i++)
		snprintf(s->keys[i], sizeof(s->keys[i]), "%s", keys[i]);
}

static void
kv_entries_cb(uint64_t owner, void *arg, int err, size_t n,
	      const char *const *keys, const char *const *values)
{
	struct typed_state *s = arg;

	(void)owner;
	s->count++;
	s->err = err;
	s->n = n;
	for (size_t i = 0; i < n && i < 8; i++)
		snprintf(s->keys[i], sizeof(s->keys[i]), "%s=%s", keys[i],
			 values[i]);
}

static void
kv_done_cb(uint64_t owner, void *arg, int err)
{
	struct typed_state *s = arg;

	(void)owner;
	s->count++;
	s->err = err;
}

static void
add_account(struct pgn_store *st, const char *user)
{
	const char *p[2] = { user, "example.org" };
	struct pgn_store_result *res = NULL;

	ck_assert_int_eq(pgn_store_query_sync(
				 st,
				 "INSERT INTO accounts (username, host, salt, "
				 "iterations, sha1_stored_key, sha1_server_key, "
				 "sha256_stored_key, sha256_server_key) VALUES "
				 "($1, $2, 's', 1, 'a', 'b', 'c', 'd')",
				 2, p, &res),
			 0);
	pgn_store_result_free(res);
}

START_TEST(test_kv)
{
	struct fx f;
	struct typed_state s = { 0 };
	const char *keys[3] = { "b", "a", "c" };
	const char *vals[3] = { "beta", "alpha", "gamma" };
	const char *upd_keys[2] = { "a", "c" };
	const char *upd_vals[2] = { "ALPHA", NULL };
	int want = 0;

	fx_init(&f, _i);
	fx_open(&f);
	add_account(f.st, "alice");
	add_account(f.st, "bob");
	/* Nothing yet. */
	ck_assert_int_eq(pgn_kv_get(f.st, "t", "example.org", "alice", "a", 1,
				    kv_value_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_int_eq(s.err, 0);
	ck_assert_str_eq(s.value, "(none)");
	/* Three keys in one transaction, listed sorted. */
	ck_assert_int_eq(pgn_kv_put(f.st, "t", "example.org", "alice", 3, keys,
				    vals, 2, kv_done_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_int_eq(s.err, 0);
	ck_assert_int_eq(pgn_kv_keys(f.st, "t", "example.org", "alice", 3,
				     kv_keys_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_uint_eq(s.n, 3);
	ck_assert_str_eq(s.keys[0], "a");
	ck_assert_str_eq(s.keys[1], "b");
	ck_assert_str_eq(s.keys[2], "c");
	ck_assert_int_eq(pgn_kv_entries(f.st, "t", "example.org", "alice", 3,
					kv_entries_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_uint_eq(s.n, 3);
	ck_assert_str_eq(s.keys[0], "a=alpha");
	ck_assert_str_eq(s.keys[2], "c=gamma");
	/* Replace one, delete one; namespaces and users are apart. */
	ck_assert_int_eq(pgn_kv_put(f.st, "t", "example.org", "alice", 2,
				    upd_keys, upd_vals, 4, NULL, NULL), 0);
	ck_assert_int_eq(pgn_kv_put(f.st, "other", "example.org", "alice", 1,
				    keys, vals, 5, NULL, NULL), 0);
	ck_assert_int_eq(pgn_kv_put(f.st, "t", "example.org", "bob", 1, keys,
				    vals, 5, NULL, NULL), 0);
	ck_assert_int_eq(pgn_kv_get(f.st, "t", "example.org", "alice", "a", 6,
				    kv_value_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_str_eq(s.value, "ALPHA");
	ck_assert_int_eq(pgn_kv_keys(f.st, "t", "example.org", "alice", 7,
				     kv_keys_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_str_eq(s.keys[1], "b");
	/* All or nothing: an unknown account fails the whole batch. */
	ck_assert_int_eq(pgn_kv_put(f.st, "t", "example.org", "nobody", 1,
				    keys, vals, 8, kv_done_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_int_lt(s.err, 0);
	/* Deleting a user's namespace leaves the others. */
	ck_assert_int_eq(pgn_kv_delete_user(f.st, "t", "example.org", "alice",
					    9, kv_done_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_int_eq(s.err, 0);
	ck_assert_int_eq(pgn_kv_keys(f.st, "t", "example.org", "alice", 10,
				     kv_keys_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_uint_eq(s.n, 0);
	ck_assert_int_eq(pgn_kv_get(f.st, "other", "example.org", "alice", "b",
				    11, kv_value_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_str_eq(s.value, "beta");
	ck_assert_int_eq(pgn_kv_get(f.st, "t", "example.org", "bob", "b", 12,
				    kv_value_cb, &s), 0);
	run_until(f.base, &s.count, ++want);
	ck_assert_str_eq(s.value, "beta");
	/* The rows go with the account. */
	exec_ok(f.st, "DELETE FROM accounts WHERE username = 'bob'");
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM user_kv WHERE "
					 "username = 'bob'"), 0);
	ck_assert_int_eq(pgn_kv_put(f.st, "t", "example.org", "alice", 0, keys,
				    vals, 0, NULL, NULL), -EINVAL);
	fx_fini(&f);
}
END_TEST

static void
archive_id_cb(uint64_t owner, void *arg, int err, int64_t id)
{
	struct typed_state *s = arg;

	(void)owner;
	s->count++;
	s->err = err;
	s->id = id;
}

static void
archive_page_cb(uint64_t owner, void *arg, int err, size_t n,
		const struct pgn_archive_item *items, int complete)
{
	struct typed_state *s = arg;

	(void)owner;
	s->count++;
	s->err = err;
	s->n = n;
	s->complete = complete;
	for (size_t i = 0; i < n && i < 8; i++) {
		s->ids[i] = items[i].id;
		snprintf(s->values[i], sizeof(s->values[i]), "%s:%s",
			 items[i].key ? items[i].key : "-", items[i].value);
	}
}

/* Runs one query and waits for its page. */
static void
archive_page(struct fx *f, struct typed_state *s,
	     const struct pgn_archive_range *r)
{
	int want = s->count + 1;

	ck_assert_int_eq(pgn_archive_query(f->st, "log", "example.org",
					   "alice", r, 1, archive_page_cb, s),
			 0);
	run_until(f->base, &s->count, want);
	ck_assert_int_eq(s->err, 0);
}

START_TEST(test_archive)
{
	struct fx f;
	struct typed_state s = { 0 };
	int64_t ids[5];
	char v[16];
	int want = 0;

	fx_init(&f, _i);
	fx_open(&f);
	add_account(f.st, "alice");
	for (int i = 0; i < 5; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		ck_assert_int_eq(pgn_archive_append(f.st, "log", "example.org",
						    "alice", 100 + i * 10,
						    i == 2 ? NULL : "k", v, 0,
						    archive_id_cb, &s), 0);
		run_until(f.base, &s.count, ++want);
		ck_assert_int_eq(s.err, 0);
		ids[i] = s.id;
		ck_assert(i == 0 || ids[i] > ids[i - 1]);
	}
	ck_assert_int_eq(pgn_archive_append(f.st, "other", "example.org",
					    "alice", 1, NULL, "x", 0, NULL,
					    NULL), 0);
	/* The first page of two, then the next. */
	struct pgn_archive_range r = { .max = 2 };
	archive_page(&f, &s, &r);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_int_eq(s.complete, 0);
	ck_assert_str_eq(s.values[0], "k:v0");
	ck_assert_str_eq(s.values[1], "k:v1");
	r.after_id = s.ids[1];
	archive_page(&f, &s, &r);
	ck_assert_str_eq(s.values[0], "-:v2");
	ck_assert_int_eq(s.complete, 0);
	r.after_id = s.ids[1];
	archive_page(&f, &s, &r);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_str_eq(s.values[0], "k:v4");
	ck_assert_int_eq(s.complete, 1);
	/* The last page, oldest first; then the one before it. */
	struct pgn_archive_range last = { .max = 2, .last = 1 };
	archive_page(&f, &s, &last);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_str_eq(s.values[0], "k:v3");
	ck_assert_str_eq(s.values[1], "k:v4");
	last.before_id = s.ids[0];
	archive_page(&f, &s, &last);
	ck_assert_str_eq(s.values[0], "k:v1");
	ck_assert_str_eq(s.values[1], "-:v2");
	ck_assert_int_eq(s.complete, 0);
	/* A time range (inclusive). */
	struct pgn_archive_range t = { .start_ts = 110, .end_ts = 130,
				       .max = 10 };
	archive_page(&f, &s, &t);
	ck_assert_uint_eq(s.n, 3);
	ck_assert_str_eq(s.values[0], "k:v1");
	ck_assert_str_eq(s.values[2], "k:v3");
	ck_assert_int_eq(s.complete, 1);
	ck_assert_int_eq(pgn_archive_query(f.st, "log", "example.org", "alice",
					   &(struct pgn_archive_range){ .max = 0 },
					   1, archive_page_cb, &s), -EINVAL);
	/* Deleting one namespace of the user. */
	ck_assert_int_eq(pgn_archive_delete_user(f.st, "log", "example.org",
						 "alice", 0, kv_done_cb, &s),
			 0);
	want = s.count + 1;
	run_until(f.base, &s.count, want);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM user_archive"),
			 1);
	fx_fini(&f);
}
END_TEST

/* Links migration file name of the real schemas into dir. */
static void
link_migration(const char *dir, const char *driver, const char *name)
{
	char from[PATH_BUF * 2], to[PATH_BUF * 2];

	snprintf(from, sizeof(from), "%s/%s/%s", default_schema_dir(), driver,
		 name);
	snprintf(to, sizeof(to), "%s/%s", dir, name);
	ck_assert_msg(symlink(from, to) == 0, "symlink %s", to);
}

/* 013 moves mod_private's and mod_vcard's rows into user_kv. */
START_TEST(test_migration_013)
{
	static const char *const before[] = {
		"001_accounts.sql", "002_roster.sql", "003_offline.sql",
		"004_blocking.sql", "005_last.sql", "006_vcard.sql",
		"007_private.sql", "008_caps.sql", "009_mam.sql",
		"010_push.sql", "011_roster_pending_stanza.sql",
		"012_mam_quota.sql",
	};
	struct fx f;
	char sub[PATH_BUF + 64];
	char *v;

	fx_init(&f, _i);
	snprintf(f.schema_dir, sizeof(f.schema_dir), "%s/schemas", f.dir);
	ck_assert_int_eq(mkdir(f.schema_dir, 0700), 0);
	snprintf(sub, sizeof(sub), "%s/%s", f.schema_dir, f.cfg.driver);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	for (size_t i = 0; i < sizeof(before) / sizeof(*before); i++)
		link_migration(sub, f.cfg.driver, before[i]);
	fx_open(&f);
	ck_assert_int_eq(pgn_store_schema_version(f.st), 12);
	add_account(f.st, "alice");
	exec_ok(f.st, "INSERT INTO private_storage (host, username, namespace, "
		      "data) VALUES ('example.org', 'alice', 'urn:x', "
		      "'<x xmlns=\"urn:x\"/>')");
	exec_ok(f.st, "INSERT INTO vcards (host, username, vcard, photo_hash) "
		      "VALUES ('example.org', 'alice', '<vCard/>', 'abc')");
	/* A JID of 9 bytes in 8 characters: the key counts bytes. */
	exec_ok(f.st, "INSERT INTO push_registrations (host, username, jid, "
		      "node, options, created) VALUES ('example.org', 'alice', "
		      "'p\xc3\xbcsh.org', 'n1', NULL, 1)");
	pgn_store_close(f.st);
	link_migration(sub, f.cfg.driver, "013_typed_stores.sql");
	fx_open(&f);
	ck_assert_int_eq(pgn_store_schema_version(f.st), 13);
	v = query_value(f.st, "SELECT value FROM user_kv WHERE ns = 'private' "
			      "AND kv_key = 'urn:x'", 0, NULL);
	ck_assert_str_eq(v, "<x xmlns=\"urn:x\"/>");
	free(v);
	v = query_value(f.st, "SELECT value FROM user_kv WHERE ns = 'vcard' "
			      "AND kv_key = 'vcard'", 0, NULL);
	ck_assert_str_eq(v, "<vCard/>");
	free(v);
	v = query_value(f.st, "SELECT value FROM user_kv WHERE ns = 'vcard' "
			      "AND kv_key = 'photo_hash'", 0, NULL);
	ck_assert_str_eq(v, "abc");
	free(v);
	v = query_value(f.st, "SELECT kv_key || '=' || value FROM user_kv "
			      "WHERE ns = 'push'", 0, NULL);
	ck_assert_str_eq(v, "9:p\xc3\xbcsh.orgn1=");
	free(v);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM user_kv"), 4);
	fx_fini(&f);
}
END_TEST

/* ---- migrations ----------------------------------------------------------------- */

START_TEST(test_migrations_once)
{
	struct fx f;
	char err[512];
	int v1, rows1;
	char *name;

	fx_init(&f, _i);
	fx_open(&f);
	ck_assert_str_eq(pgn_store_driver(f.st),
			 _i == BACKEND_PGSQL ? "pgsql" : "sqlite");
	v1 = pgn_store_schema_version(f.st);
	ck_assert_int_ge(v1, 1);
	rows1 = query_int(f.st, "SELECT count(*) FROM schema_version");
	name = query_value(f.st,
			   "SELECT name FROM schema_version WHERE version = 1",
			   0, NULL);
	ck_assert_str_eq(name, "001_accounts.sql");
	free(name);
	pgn_store_close(f.st);

	/* Reopened without an event base: sync use only. */
	f.st = fx_try_open(&f, NULL, err, sizeof(err));
	ck_assert_msg(f.st != NULL, "reopen: %s", err);
	ck_assert_int_eq(pgn_store_schema_version(f.st), v1);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM schema_version"),
			 rows1);
	ck_assert_int_eq(pgn_store_query(f.st, "SELECT 1", 0, NULL, 1, NULL,
					 NULL),
			 -EINVAL);
	fx_fini(&f);
}
END_TEST

START_TEST(test_migrations_custom)
{
	struct fx f;
	char sub[PATH_BUF + 64], err[512];
	struct pgn_store_result *res = NULL;

	fx_init(&f, _i);
	snprintf(f.schema_dir, sizeof(f.schema_dir), "%s/schemas", f.dir);
	ck_assert_int_eq(mkdir(f.schema_dir, 0700), 0);
	snprintf(sub, sizeof(sub), "%s/%s", f.schema_dir, f.cfg.driver);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	/* Numeric, not lexical, order: 10 after 2. */
	write_file(sub, "2_b.sql", "ALTER TABLE t_a ADD COLUMN w TEXT;\n");
	write_file(sub, "001_a.sql",
		   "-- first\nCREATE TABLE t_a (id INTEGER PRIMARY KEY, v TEXT);\n"
		   "INSERT INTO t_a (id, v) VALUES (1, 'one');\n");
	write_file(sub, "README", "not a migration");
	write_file(sub, "003_x.sql~", "THIS IS NOT SQL");
	write_file(sub, "010_c.sql",
		   "CREATE TABLE t_c (id INTEGER); CREATE TABLE t_d (id INTEGER);");
	fx_open(&f);
	ck_assert_int_eq(pgn_store_schema_version(f.st), 10);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM schema_version"),
			 3);
	exec_ok(f.st, "SELECT w FROM t_a");
	pgn_store_close(f.st);

	write_file(sub, "011_d.sql", "INSERT INTO t_a (id, v) VALUES (2, 'two');");
	fx_open(&f);
	ck_assert_int_eq(pgn_store_schema_version(f.st), 11);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM t_a"), 2);
	pgn_store_close(f.st);
	f.st = NULL;

	/* A failing migration fails the open, names its file, and leaves
	 * nothing of itself behind. */
	write_file(sub, "012_bad.sql",
		   "CREATE TABLE t_bad (id INTEGER);\nTHIS IS NOT SQL;\n");
	f.st = fx_try_open(&f, f.base, err, sizeof(err));
	ck_assert_ptr_null(f.st);
	ck_assert_msg(strstr(err, "012_bad.sql") != NULL, "err: %s", err);
	snprintf(sub + strlen(sub), sizeof(sub) - strlen(sub), "/012_bad.sql");
	ck_assert_int_eq(unlink(sub), 0);
	fx_open(&f);
	ck_assert_int_eq(pgn_store_schema_version(f.st), 11);
	ck_assert_int_lt(pgn_store_query_sync(f.st, "SELECT * FROM t_bad", 0,
					      NULL, &res),
			 0);
	ck_assert_ptr_null(res);

	/* Missing directory and unknown driver are errors too. */
	pgn_store_close(f.st);
	f.st = NULL;
	snprintf(f.schema_dir, sizeof(f.schema_dir), "%s/nowhere", f.dir);
	ck_assert_ptr_null(fx_try_open(&f, f.base, err, sizeof(err)));
	ck_assert_msg(strstr(err, "nowhere") != NULL, "err: %s", err);
	f.cfg.driver = "oracle";
	ck_assert_ptr_null(fx_try_open(&f, f.base, err, sizeof(err)));
	fx_fini(&f);
}
END_TEST

/* Several processes starting at once on a fresh database: each must
 * open, and every migration must be applied exactly once. */
START_TEST(test_migrations_concurrent)
{
	enum { NPROC = 4 };
	struct fx f;
	pid_t pids[NPROC];
	int i, status, rows;

	fx_init(&f, _i);
	for (i = 0; i < NPROC; i++) {
		pids[i] = fork();
		ck_assert_int_ge(pids[i], 0);
		if (pids[i] == 0) {
			char err[512];
			struct pgn_store *st =
				pgn_store_open(&f.cfg, NULL, err, sizeof(err));

			if (!st)
				fprintf(stderr, "concurrent open: %s\n", err);
			pgn_store_close(st);
			_exit(st ? 0 : 1);
		}
	}
	for (i = 0; i < NPROC; i++) {
		ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "child %d failed", i);
	}
	fx_open(&f);
	rows = query_int(f.st, "SELECT count(*) FROM schema_version");
	ck_assert_int_eq(rows, query_int(f.st, "SELECT count(DISTINCT version)"
					       " FROM schema_version"));
	ck_assert_int_eq(query_int(f.st, "SELECT max(version) FROM schema_version"),
			 pgn_store_schema_version(f.st));
	fx_fini(&f);
}
END_TEST

/* ---- queries ------------------------------------------------------------------- */

struct cb_state {
	int count;
	int error;
	uint64_t owner;
	void *arg;
	int nrows;
	int64_t changes;
	char value[256];
	char errmsg[256];
	struct event_base *base; /* break the loop when set */
};

static void
record_cb(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct cb_state *s = arg;
	const char *v = pgn_store_value(res, 0, 0);

	s->count++;
	s->owner = owner;
	s->arg = arg;
	s->error = res->error;
	s->nrows = res->nrows;
	s->changes = res->changes;
	snprintf(s->value, sizeof(s->value), "%s", v ? v : "(null)");
	snprintf(s->errmsg, sizeof(s->errmsg), "%s", res->errmsg);
	if (s->base)
		event_base_loopbreak(s->base);
}

static void
create_kv(struct pgn_store *st)
{
	exec_ok(st, "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)");
}

START_TEST(test_async_query)
{
	struct fx f;
	struct cb_state s = { 0 };
	const char *p[2] = { "a", "alpha" };

	fx_init(&f, _i);
	fx_open(&f);
	create_kv(f.st);
	s.base = f.base;
	ck_assert_int_eq(pgn_store_query(f.st,
					 "INSERT INTO kv (k, v) VALUES ($1, $2)",
					 2, p, 42, record_cb, &s),
			 0);
	event_base_dispatch(f.base);
	ck_assert_int_eq(s.count, 1);
	ck_assert_int_eq(s.error, 0);
	ck_assert_uint_eq(s.owner, 42);
	ck_assert_ptr_eq(s.arg, &s);
	ck_assert_int_eq(s.changes, 1);

	ck_assert_int_eq(pgn_store_query(f.st, "SELECT v FROM kv WHERE k = $1",
					 1, p, 43, record_cb, &s),
			 0);
	event_base_dispatch(f.base);
	ck_assert_int_eq(s.count, 2);
	ck_assert_uint_eq(s.owner, 43);
	ck_assert_int_eq(s.nrows, 1);
	ck_assert_str_eq(s.value, "alpha");

	/* Fire and forget, then bad arguments. */
	p[0] = "b";
	ck_assert_int_eq(pgn_store_query(f.st,
					 "INSERT INTO kv (k, v) VALUES ($1, $2)",
					 2, p, 0, NULL, NULL),
			 0);
	ck_assert_int_eq(pgn_store_query(f.st, NULL, 0, NULL, 0, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(pgn_store_query(f.st, "SELECT 1", 1, NULL, 0, NULL,
					 NULL),
			 -EINVAL);
	ck_assert_int_eq(pgn_store_query(f.st, "SELECT count(*) FROM kv", 0,
					 NULL, 44, record_cb, &s),
			 0);
	event_base_dispatch(f.base);
	ck_assert_str_eq(s.value, "2");
	fx_fini(&f);
}
END_TEST

START_TEST(test_params)
{
	static const char utf8_key[] = "cl\xc3\xa9 \xe2\x98\x83";  /* clé ☃ */
	static const char utf8_val[] =
		"\xf0\x9d\x84\x9e \xe6\x97\xa5\xe6\x9c\xac \xd0\xbf\xd1\x80"
		" 'quoted' \"dq\" ; DROP TABLE kv; --"; /* 𝄞 日本 пр */
	struct fx f;
	struct pgn_store_result *res = NULL;
	struct cb_state s = { 0 };
	const char *p[2];
	char *v;

	fx_init(&f, _i);
	fx_open(&f);
	create_kv(f.st);

	p[0] = "null";
	p[1] = NULL;
	ck_assert_int_eq(pgn_store_query_sync(
				 f.st, "INSERT INTO kv (k, v) VALUES ($1, $2)",
				 2, p, &res),
			 0);
	ck_assert_int_eq(res->changes, 1);
	pgn_store_result_free(res);
	res = NULL;
	p[0] = utf8_key;
	p[1] = utf8_val;
	ck_assert_int_eq(pgn_store_query_sync(
				 f.st, "INSERT INTO kv (k, v) VALUES ($1, $2)",
				 2, p, &res),
			 0);
	pgn_store_result_free(res);
	res = NULL;

	/* Parameter order follows the numbers, not the text order. */
	p[0] = utf8_val;
	p[1] = utf8_key;
	v = query_value(f.st, "SELECT k FROM kv WHERE k = $2 AND v = $1", 2,
			p);
	ck_assert_str_eq(v, utf8_key);
	free(v);

	ck_assert_int_eq(pgn_store_query_sync(
				 f.st, "SELECT k, v FROM kv ORDER BY k", 0,
				 NULL, &res),
			 0);
	ck_assert_int_eq(res->nrows, 2);
	ck_assert_int_eq(res->ncols, 2);
	ck_assert_str_eq(pgn_store_value(res, 0, 0), utf8_key);
	ck_assert_str_eq(pgn_store_value(res, 0, 1), utf8_val);
	ck_assert_str_eq(pgn_store_value(res, 1, 0), "null");
	ck_assert_ptr_null(pgn_store_value(res, 1, 1));
	ck_assert_ptr_null(pgn_store_value(res, 2, 0));
	ck_assert_ptr_null(pgn_store_value(res, 0, 2));
	ck_assert_ptr_null(pgn_store_value(res, -1, 0));
	pgn_store_result_free(res);
	res = NULL;
	ck_assert_ptr_null(pgn_store_value(NULL, 0, 0));

	/* Async: NULL parameter and UTF-8 value. */
	p[0] = NULL;
	ck_assert_int_eq(pgn_store_query(f.st,
					 "SELECT count(*) FROM kv WHERE v IS NULL"
					 " OR v = $1",
					 1, p, 1, record_cb, &s),
			 0);
	p[0] = utf8_key;
	ck_assert_int_eq(pgn_store_query(f.st, "SELECT v FROM kv WHERE k = $1",
					 1, p, 2, record_cb, &s),
			 0);
	run_until(f.base, &s.count, 2);
	ck_assert_str_eq(s.value, utf8_val);

	/* Parameter count must match the statement. */
	ck_assert_int_lt(pgn_store_query_sync(f.st,
					      "SELECT v FROM kv WHERE k = $1",
					      2, p, &res),
			 0);
	ck_assert_ptr_null(res);
	fx_fini(&f);
}
END_TEST

START_TEST(test_unique_violation)
{
	struct fx f;
	struct pgn_store_result *res = NULL;
	struct cb_state s = { 0 };
	const char *p[2] = { "dup", "1" };
	static const char ins[] = "INSERT INTO kv (k, v) VALUES ($1, $2)";

	fx_init(&f, _i);
	fx_open(&f);
	create_kv(f.st);
	ck_assert_int_eq(pgn_store_query_sync(f.st, ins, 2, p, &res), 0);
	pgn_store_result_free(res);
	res = NULL;
	ck_assert_int_eq(pgn_store_query_sync(f.st, ins, 2, p, &res), -EEXIST);
	ck_assert_ptr_null(res);

	ck_assert_int_eq(pgn_store_query(f.st, ins, 2, p, 7, record_cb, &s), 0);
	run_until(f.base, &s.count, 1);
	ck_assert_int_eq(s.error, -EEXIST);
	ck_assert_uint_eq(s.owner, 7);
	ck_assert_int_gt(strlen(s.errmsg), 0);
	ck_assert_int_eq(s.nrows, 0);

	/* Other failures are -EIO with the driver's message. */
	ck_assert_int_eq(pgn_store_query(f.st, "SELEKT nonsense", 0, NULL, 8,
					 record_cb, &s),
			 0);
	run_until(f.base, &s.count, 2);
	ck_assert_int_eq(s.error, -EIO);
	ck_assert_int_gt(strlen(s.errmsg), 0);
	ck_assert_int_eq(pgn_store_query_sync(f.st, "SELECT * FROM missing", 0,
					      NULL, &res),
			 -EIO);
	/* The connection is still usable after errors. */
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv"), 1);
	fx_fini(&f);
}
END_TEST

START_TEST(test_txn)
{
	static const char ins[] = "INSERT INTO kv (k, v) VALUES ($1, $2)";
	struct fx f;
	struct cb_state s = { 0 };
	const char *a[2] = { "a", "1" }, *b[2] = { "b", "2" },
		   *c[2] = { "c", "3" };
	const char *sqls[3];
	const char *const *params[3];
	int np[3];

	fx_init(&f, _i);
	fx_open(&f);
	create_kv(f.st);

	/* Commit: the result is the last statement's. */
	sqls[0] = ins, np[0] = 2, params[0] = a;
	sqls[1] = ins, np[1] = 2, params[1] = b;
	sqls[2] = "SELECT count(*) FROM kv", np[2] = 0, params[2] = NULL;
	ck_assert_int_eq(pgn_store_txn(f.st, 3, sqls, np, params, 1, record_cb,
				       &s),
			 0);
	run_until(f.base, &s.count, 1);
	ck_assert_int_eq(s.error, 0);
	ck_assert_str_eq(s.value, "2");

	/* A unique violation in the middle rolls back the first insert. */
	sqls[0] = ins, np[0] = 2, params[0] = c;
	sqls[1] = ins, np[1] = 2, params[1] = a;
	ck_assert_int_eq(pgn_store_txn(f.st, 3, sqls, np, params, 2, record_cb,
				       &s),
			 0);
	run_until(f.base, &s.count, 2);
	ck_assert_int_eq(s.error, -EEXIST);
	ck_assert_uint_eq(s.owner, 2);

	/* So does a broken statement at the end. */
	sqls[1] = "UPDATE kv SET nosuchcolumn = 1";
	np[1] = 0;
	params[1] = NULL;
	ck_assert_int_eq(pgn_store_txn(f.st, 2, sqls, np, params, 3, record_cb,
				       &s),
			 0);
	run_until(f.base, &s.count, 3);
	ck_assert_int_eq(s.error, -EIO);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv WHERE k = 'c'"),
			 0);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv"), 2);

	/* And the connection is out of the transaction afterwards. */
	sqls[1] = "SELECT count(*) FROM kv";
	ck_assert_int_eq(pgn_store_txn(f.st, 2, sqls, np, params, 4, record_cb,
				       &s),
			 0);
	run_until(f.base, &s.count, 4);
	ck_assert_int_eq(s.error, 0);
	ck_assert_str_eq(s.value, "3");
	ck_assert_int_eq(pgn_store_txn(f.st, 0, sqls, np, params, 5, record_cb,
				       &s),
			 -EINVAL);
	fx_fini(&f);
}
END_TEST

/* pgn_store_txn_sync (pigeonctl): all or nothing, the last result. */
START_TEST(test_txn_sync)
{
	static const char ins[] = "INSERT INTO kv (k, v) VALUES ($1, $2)";
	struct fx f;
	struct pgn_store_result *res = NULL;
	const char *a[2] = { "a", "1" }, *b[2] = { "b", "2" };
	const char *sqls[3] = { ins, ins, "SELECT count(*) FROM kv" };
	const char *const *params[3] = { a, b, NULL };
	int np[3] = { 2, 2, 0 };

	fx_init(&f, _i);
	fx_open(&f);
	create_kv(f.st);
	ck_assert_int_eq(pgn_store_txn_sync(f.st, 3, sqls, np, params, &res),
			 0);
	ck_assert_str_eq(pgn_store_value(res, 0, 0), "2");
	pgn_store_result_free(res);
	/* A duplicate in the middle rolls back the statement before it. */
	a[0] = "c";
	params[1] = (const char *[2]){ "a", "9" };
	ck_assert_int_eq(pgn_store_txn_sync(f.st, 3, sqls, np, params, &res),
			 -EEXIST);
	ck_assert_ptr_null(res);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv"), 2);
	/* And the connection is usable (out of the transaction) after. */
	params[1] = (const char *[2]){ "d", "4" };
	ck_assert_int_eq(pgn_store_txn_sync(f.st, 3, sqls, np, params, NULL),
			 0);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv"), 4);
	ck_assert_int_eq(pgn_store_txn_sync(f.st, 0, sqls, np, params, &res),
			 -EINVAL);
	fx_fini(&f);
}
END_TEST

struct order_state {
	int next;
	int bad;
	int count;
};

static void
order_cb(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct order_state *o = arg;
	const char *v = pgn_store_value(res, 0, 0);

	/* Owner 2i inserted row i; owner 2i+1 counted i+1 rows. */
	if (res->error || owner != (uint64_t)o->next ||
	    ((owner & 1) && (!v || atoi(v) != (int)(owner / 2) + 1)))
		o->bad++;
	o->next++;
	o->count++;
}

START_TEST(test_results_in_order)
{
	enum { N = 150 };
	struct fx f;
	struct order_state o = { 0 };
	char key[16];
	const char *p[2] = { key, "x" };
	int i;

	fx_init(&f, _i);
	fx_open(&f);
	create_kv(f.st);
	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%04d", i);
		ck_assert_int_eq(pgn_store_query(
					 f.st,
					 "INSERT INTO kv (k, v) VALUES ($1, $2)",
					 2, p, (uint64_t)2 * i, order_cb, &o),
				 0);
		ck_assert_int_eq(pgn_store_query(f.st,
						 "SELECT count(*) FROM kv", 0,
						 NULL, (uint64_t)2 * i + 1,
						 order_cb, &o),
				 0);
	}
	run_until(f.base, &o.count, 2 * N);
	ck_assert_int_eq(o.bad, 0);

	/* Close drains: queued queries still run and answer. */
	o.next = o.count = 0;
	exec_ok(f.st, "DELETE FROM kv");
	for (i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "d%04d", i);
		ck_assert_int_eq(pgn_store_query(
					 f.st,
					 "INSERT INTO kv (k, v) VALUES ($1, $2)",
					 2, p, (uint64_t)2 * i, order_cb, &o),
				 0);
		ck_assert_int_eq(pgn_store_query(f.st,
						 "SELECT count(*) FROM kv", 0,
						 NULL, (uint64_t)2 * i + 1,
						 order_cb, &o),
				 0);
	}
	pgn_store_close(f.st);
	f.st = NULL;
	ck_assert_int_eq(o.count, 40);
	ck_assert_int_eq(o.bad, 0);
	fx_fini(&f);
}
END_TEST

/* ---- accounts ----------------------------------------------------------------- */

struct acct_state {
	int count;
	int err;
	int creds_ok;     /* creds present and password matched */
	int have_creds;
	unsigned iterations;
	const char *password; /* expected */
	uint64_t owner;
};

static void
acct_cb(uint64_t owner, void *arg, int err, const struct pgn_scram_creds *creds)
{
	struct acct_state *s = arg;

	s->count++;
	s->err = err;
	s->owner = owner;
	s->have_creds = creds != NULL;
	s->creds_ok = creds && s->password &&
		      pgn_scram_check_password(creds, s->password) == 1;
	s->iterations = creds ? creds->iterations : 0;
}

/* Waits for the next account callback and returns its error. */
static int
acct_wait(struct fx *f, struct acct_state *s)
{
	int want = s->count + 1;

	run_until(f->base, &s->count, want);
	return s->err;
}

START_TEST(test_accounts_sync)
{
	struct fx f;
	struct pgn_store_result *res = NULL;
	char *list = NULL, *salt1, *salt2;
	const char *p[1] = { "alice" };
	int r, c;

	fx_init(&f, _i);
	fx_open(&f);
	ck_assert_int_eq(pgn_account_register_sync(f.st, "carol", "example.org",
						   "pw-carol"),
			 0);
	ck_assert_int_eq(pgn_account_register_sync(f.st, "alice", "example.org",
						   "pw-alice"),
			 0);
	ck_assert_int_eq(pgn_account_register_sync(f.st, "bob", "example.org",
						   "pw-bob"),
			 0);
	ck_assert_int_eq(pgn_account_register_sync(f.st, "alice", "other.org",
						   "pw-alice"),
			 0);
	ck_assert_int_eq(pgn_account_register_sync(f.st, "alice", "example.org",
						   "again"),
			 -EEXIST);
	ck_assert_int_eq(pgn_account_register_sync(f.st, "", "example.org", "x"),
			 -EINVAL);
	ck_assert_int_eq(pgn_account_register_sync(f.st, "x", "", "x"), -EINVAL);
	ck_assert_int_eq(pgn_account_register_sync(f.st, NULL, "h", "x"),
			 -EINVAL);

	ck_assert_int_eq(pgn_account_list_sync(f.st, "example.org", &list), 0);
	ck_assert_str_eq(list, "alice\nbob\ncarol\n");
	free(list);
	ck_assert_int_eq(pgn_account_list_sync(f.st, "nobody.org", &list), 0);
	ck_assert_str_eq(list, "");
	free(list);
	ck_assert_int_eq(pgn_account_list_sync(f.st, "", &list), -EINVAL);
	ck_assert_ptr_null(list);

	/* Never a clear password anywhere in the row. */
	ck_assert_int_eq(pgn_store_query_sync(
				 f.st, "SELECT * FROM accounts WHERE username = $1",
				 1, p, &res),
			 0);
	ck_assert_int_eq(res->nrows, 2);
	for (r = 0; r < res->nrows; r++)
		for (c = 0; c < res->ncols; c++)
			ck_assert_ptr_null(strstr(pgn_store_value(res, r, c),
						  "pw-alice"));
	pgn_store_result_free(res);
	res = NULL;

	salt1 = query_value(f.st,
			    "SELECT salt FROM accounts WHERE username = $1"
			    " AND host = 'example.org'",
			    1, p);
	ck_assert_int_eq(pgn_account_set_password_sync(f.st, "alice",
						       "example.org", "new-pw"),
			 0);
	salt2 = query_value(f.st,
			    "SELECT salt FROM accounts WHERE username = $1"
			    " AND host = 'example.org'",
			    1, p);
	ck_assert_str_ne(salt1, salt2);
	free(salt1);
	free(salt2);
	ck_assert_int_eq(pgn_account_set_password_sync(f.st, "zed",
						       "example.org", "pw"),
			 -ENOENT);
	ck_assert_int_eq(pgn_account_set_password_sync(f.st, "", "example.org",
						       "pw"),
			 -EINVAL);

	ck_assert_int_eq(pgn_account_unregister_sync(f.st, "bob", "example.org"),
			 0);
	ck_assert_int_eq(pgn_account_unregister_sync(f.st, "bob", "example.org"),
			 -ENOENT);
	ck_assert_int_eq(pgn_account_unregister_sync(f.st, "bob", ""), -EINVAL);
	ck_assert_int_eq(pgn_account_list_sync(f.st, "example.org", &list), 0);
	ck_assert_str_eq(list, "alice\ncarol\n");
	free(list);
	ck_assert_int_eq(pgn_account_list_sync(f.st, "other.org", &list), 0);
	ck_assert_str_eq(list, "alice\n");
	free(list);
	fx_fini(&f);
}
END_TEST

START_TEST(test_accounts_async)
{
	struct fx f;
	struct acct_state s = { 0 };
	struct pgn_worker *cw;

	fx_init(&f, _i);
	fx_open(&f);
	cw = pgn_worker_new(f.base, "pgn-crypto");
	ck_assert_ptr_nonnull(cw);

	ck_assert_int_eq(pgn_account_register(f.st, cw, "alice", "example.org",
					      "s3cret \xc3\xa9", 11, acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), 0);
	ck_assert_uint_eq(s.owner, 11);
	ck_assert_int_eq(s.have_creds, 0);
	ck_assert_int_eq(pgn_account_register(f.st, cw, "alice", "example.org",
					      "other", 12, acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), -EEXIST);

	s.password = "s3cret \xc3\xa9";
	ck_assert_int_eq(pgn_account_get_creds(f.st, "alice", "example.org", 13,
					       acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), 0);
	ck_assert_int_eq(s.have_creds, 1);
	ck_assert_int_eq(s.creds_ok, 1);
	ck_assert_uint_eq(s.iterations, PGN_SCRAM_DEFAULT_ITERATIONS);

	ck_assert_int_eq(pgn_account_get_creds(f.st, "alice", "other.org", 14,
					       acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), -ENOENT);
	ck_assert_int_eq(s.have_creds, 0);

	ck_assert_int_eq(pgn_account_set_password(f.st, cw, "alice",
						  "example.org", "changed", 15,
						  acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), 0);
	s.password = "changed";
	ck_assert_int_eq(pgn_account_get_creds(f.st, "alice", "example.org", 16,
					       acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), 0);
	ck_assert_int_eq(s.creds_ok, 1);
	s.password = NULL;

	ck_assert_int_eq(pgn_account_set_password(f.st, cw, "zed",
						  "example.org", "pw", 17,
						  acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), -ENOENT);

	ck_assert_int_eq(pgn_account_unregister(f.st, "alice", "example.org",
						18, acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), 0);
	ck_assert_int_eq(pgn_account_unregister(f.st, "alice", "example.org",
						19, acct_cb, &s),
			 0);
	ck_assert_int_eq(acct_wait(&f, &s), -ENOENT);

	/* Rejected at once, no callback. */
	ck_assert_int_eq(pgn_account_register(f.st, cw, "", "example.org", "pw",
					      20, acct_cb, &s),
			 -EINVAL);
	ck_assert_int_eq(pgn_account_get_creds(f.st, "alice", "", 21, acct_cb,
					       &s),
			 -EINVAL);
	ck_assert_int_eq(pgn_account_unregister(f.st, "", "example.org", 22,
						acct_cb, &s),
			 -EINVAL);
	ck_assert_int_eq(pgn_account_set_password(f.st, cw, "a", "",
						  "pw", 23, acct_cb, &s),
			 -EINVAL);

	/* Several registrations in flight; the crypto worker goes first
	 * at shutdown so that its queued store queries still run. */
	ck_assert_int_eq(pgn_account_register(f.st, cw, "u1", "example.org",
					      "p1", 31, acct_cb, &s),
			 0);
	ck_assert_int_eq(pgn_account_register(f.st, cw, "u2", "example.org",
					      "p2", 32, acct_cb, &s),
			 0);
	pgn_worker_free(cw);
	pgn_store_close(f.st);
	f.st = NULL;
	ck_assert_int_eq(s.count, 11);
	ck_assert_int_eq(s.err, 0);
	ck_assert_uint_eq(s.owner, 32);
	fx_open(&f);
	{
		char *list = NULL;

		ck_assert_int_eq(pgn_account_list_sync(f.st, "example.org",
						       &list),
				 0);
		ck_assert_str_eq(list, "u1\nu2\n");
		free(list);
	}
	fx_fini(&f);
}
END_TEST

/* ---- outages (SQLite through the test hook) ------------------------------------ */

static void
unlink_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	unlink(arg);
}

static void
touch(const char *path)
{
	FILE *fp = fopen(path, "w");

	ck_assert_ptr_nonnull(fp);
	fclose(fp);
}

/* While the store fails (PIGEON_TEST_STORE_FAIL names a file that
 * exists), requests wait in order and go through once it is back; past
 * outage_hold they fail with -EAGAIN, and the store is used again as
 * soon as it works. */
START_TEST(test_outage_hold)
{
	struct fx f;
	struct cb_state s[3];
	char flag[PATH_BUF + 16];
	struct timeval tv = { 0, 300 * 1000 };
	struct event *ev;
	const char *pa[2] = { "a", "1" }, *pb[2] = { "b", "2" };
	static const char ins[] = "INSERT INTO kv (k, v) VALUES ($1, $2)";

	memset(s, 0, sizeof(s));
	fx_init(&f, BACKEND_SQLITE);
	snprintf(flag, sizeof(flag), "%s/fail", f.dir);
	ck_assert_int_eq(setenv("PIGEON_TEST_STORE_FAIL", flag, 1), 0);
	f.cfg.outage_hold_ms = 10000;
	fx_open(&f);
	create_kv(f.st);

	/* A 0.3 s outage: both inserts wait, then commit, in order. */
	touch(flag);
	ev = evtimer_new(f.base, unlink_cb, flag);
	ck_assert_ptr_nonnull(ev);
	evtimer_add(ev, &tv);
	ck_assert_int_eq(pgn_store_query(f.st, ins, 2, pa, 1, record_cb, &s[0]),
			 0);
	ck_assert_int_eq(pgn_store_query(f.st, ins, 2, pb, 2, record_cb, &s[1]),
			 0);
	run_until(f.base, &s[1].count, 1);
	ck_assert_int_eq(s[0].count, 1);
	ck_assert_int_eq(s[0].error, 0);
	ck_assert_int_eq(s[1].error, 0);
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv"), 2);
	event_free(ev);

	/* Longer than the hold (0.2 s): the request fails, the next one
	 * after the outage works. */
	pgn_store_close(f.st);
	f.cfg.outage_hold_ms = 200;
	fx_open(&f);
	touch(flag);
	ck_assert_int_eq(pgn_store_query(f.st, "SELECT count(*) FROM kv", 0,
					 NULL, 3, record_cb, &s[2]),
			 0);
	run_until(f.base, &s[2].count, 1);
	ck_assert_int_eq(s[2].error, -EAGAIN);
	unlink(flag);
	usleep(250 * 1000); /* past the backoff step */
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv"), 2);
	unsetenv("PIGEON_TEST_STORE_FAIL");
	fx_fini(&f);
}
END_TEST

/* ---- PostgreSQL only --------------------------------------------------------- */

START_TEST(test_pg_reconnect)
{
	struct fx f;
	char *pid, sql[128];
	PGconn *c;
	PGresult *r;

	fx_init(&f, BACKEND_PGSQL);
	fx_open(&f);
	create_kv(f.st);
	pid = query_value(f.st, "SELECT pg_backend_pid()", 0, NULL);
	c = PQconnectdb(pg_base_conninfo);
	ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", atoi(pid));
	r = PQexec(c, sql);
	ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	PQclear(r);
	PQfinish(c);
	free(pid);
	usleep(100 * 1000);
	/* The store notices the dead session, reconnects, retries once. */
	ck_assert_int_eq(query_int(f.st, "SELECT count(*) FROM kv"), 0);
	fx_fini(&f);
}
END_TEST

START_TEST(test_pg_required)
{
	ck_abort_msg("PIGEON_REQUIRE_PGSQL=1 but PIGEON_TEST_PGSQL is not set");
}
END_TEST

/* ---- main ---------------------------------------------------------------------- */

/* Appends key='value' to buf, quoting as libpq wants. */
static int
conninfo_add(char *buf, size_t len, const char *key, const char *val)
{
	size_t off = strlen(buf);

	if (off + strlen(key) + 4 >= len)
		return -1;
	off += (size_t)snprintf(buf + off, len - off, "%s%s='", off ? " " : "",
				key);
	for (; *val; val++) {
		if (off + 3 >= len)
			return -1;
		if (*val == '\'' || *val == '\\')
			buf[off++] = '\\';
		buf[off++] = *val;
	}
	if (off + 2 >= len)
		return -1;
	buf[off++] = '\'';
	buf[off] = '\0';
	return 0;
}

/* The given conninfo (key=value or URI) with search_path set to the test
 * schema, so that the tests never touch anything else in the database. */
static int
build_test_conninfo(const char *base)
{
	PQconninfoOption *opts, *o;
	char *errmsg = NULL, options[1024];
	const char *extra = "";
	int rc = 0;

	opts = PQconninfoParse(base, &errmsg);
	if (!opts) {
		fprintf(stderr, "PIGEON_TEST_PGSQL: %s\n",
			errmsg ? errmsg : "cannot parse");
		PQfreemem(errmsg);
		return -1;
	}
	pg_test_conninfo[0] = '\0';
	for (o = opts; o->keyword; o++) {
		if (!o->val || !o->val[0])
			continue;
		if (!strcmp(o->keyword, "options")) {
			extra = o->val;
			continue;
		}
		if (conninfo_add(pg_test_conninfo, sizeof(pg_test_conninfo),
				 o->keyword, o->val) < 0)
			rc = -1;
	}
	snprintf(options, sizeof(options), "%s%s-csearch_path=" PG_SCHEMA,
		 extra, extra[0] ? " " : "");
	if (conninfo_add(pg_test_conninfo, sizeof(pg_test_conninfo), "options",
			 options) < 0)
		rc = -1;
	PQconninfoFree(opts);
	return rc;
}

/* Each store case runs once per backend, _i being the backend. */
#define add_backend_test(tc, t, nbackends)                                     \
	tcase_add_loop_test((tc), t, BACKEND_SQLITE, (nbackends))

int
main(void)
{
	const char *pg = getenv("PIGEON_TEST_PGSQL");
	const char *req = getenv("PIGEON_REQUIRE_PGSQL");
	int nbackends = 1, failed;
	Suite *s;
	TCase *tc;
	SRunner *sr;

	/* Before any event_base exists (as pigeond does). */
	evthread_use_pthreads();
	pgn_log_threshold = PGN_LOG_ERROR;

	if (pg && pg[0]) {
		pg_base_conninfo = pg;
		if (build_test_conninfo(pg) < 0)
			return 1;
		nbackends = 2;
	} else if (!req || strcmp(req, "1") != 0) {
		fprintf(stderr, "test_store: PIGEON_TEST_PGSQL unset, "
				"PostgreSQL cases skipped\n");
	}

	s = suite_create("store");
	tc = tcase_create("worker");
	tcase_add_test(tc, test_worker_order);
	suite_add_tcase(s, tc);

	/* Loop index 0 is SQLite, 1 PostgreSQL. */
	tc = tcase_create("store");
	tcase_set_timeout(tc, 120);
	add_backend_test(tc, test_migrations_once, nbackends);
	add_backend_test(tc, test_migrations_custom, nbackends);
	add_backend_test(tc, test_migrations_concurrent, nbackends);
	add_backend_test(tc, test_async_query, nbackends);
	add_backend_test(tc, test_params, nbackends);
	add_backend_test(tc, test_unique_violation, nbackends);
	add_backend_test(tc, test_txn, nbackends);
	add_backend_test(tc, test_txn_sync, nbackends);
	add_backend_test(tc, test_results_in_order, nbackends);
	add_backend_test(tc, test_accounts_sync, nbackends);
	add_backend_test(tc, test_accounts_async, nbackends);
	add_backend_test(tc, test_kv, nbackends);
	add_backend_test(tc, test_archive, nbackends);
	add_backend_test(tc, test_migration_013, nbackends);
	tcase_add_test(tc, test_outage_hold);
	suite_add_tcase(s, tc);

	tc = tcase_create("pgsql");
	tcase_set_timeout(tc, 120);
	if (nbackends == 2)
		tcase_add_test(tc, test_pg_reconnect);
	else if (req && !strcmp(req, "1"))
		tcase_add_test(tc, test_pg_required);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
