/* The generic store: opens a driver, applies migrations, and runs queries
 * either on the caller's thread (sync) or on the store's own worker thread
 * with the result delivered on the loop by (owner, arg).
 *
 * The one driver connection is guarded by a mutex so that the worker and
 * a synchronous caller can never use it at the same time. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pigeon/log.h"
#include "pigeon/store.h"
#include "pigeon/worker.h"
#include "store_driver.h"

#ifndef PGN_SCHEMA_DIR
#define PGN_SCHEMA_DIR "schemas"
#endif

/* Not PATH_MAX: <limits.h> is shadowed by src/limits.h on the include
 * path. */
#define PATH_BUF 4096

/* A migration file larger than this is a mistake, not a schema. */
#define MIGRATION_MAX_BYTES (16 * 1024 * 1024)

/* Reconnection backoff while the store is unavailable: the first attempt
 * at once, the next after BACKOFF_MIN_MS, doubling up to BACKOFF_MAX_MS. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct pgn_store {
	const struct pgn_store_driver *drv;
	void *conn;
	pthread_mutex_t mu; /* guards conn and the outage state */
	pthread_cond_t wake; /* interrupts a backoff wait (closing) */
	struct pgn_worker *worker; /* NULL without an event base */
	int version;
	/* Outage state (see run_held()), under mu. */
	long hold_ms;
	int down;             /* a request failed with -EAGAIN, none since succeeded */
	int past_hold;        /* the hold ran out (logged once) */
	int closing;          /* no more waiting */
	int64_t down_since;   /* monotonic ms */
	int64_t next_try;     /* monotonic ms of the next attempt */
	int64_t backoff;      /* ms */
	unsigned long attempts, failed;
	char down_msg[256];   /* the error that started it */
};

struct stmt {
	char *sql;
	int nparams;
	char **params;
};

/* One asynchronous request: copied in, run on the worker, answered on
 * the loop. */
struct request {
	struct pgn_store *st;
	int txn; /* wrap the statements in BEGIN/COMMIT */
	int nstmts;
	struct stmt *stmts;
	uint64_t owner;
	pgn_store_cb cb;
	void *arg;
	struct pgn_store_result res;
};

/* ---- results ------------------------------------------------------------ */

int
pgn_store_result_set_error(struct pgn_store_result *res, int err,
			   const char *fmt, ...)
{
	va_list ap;
	size_t n;

	res->error = err;
	va_start(ap, fmt);
	vsnprintf(res->errmsg, sizeof(res->errmsg), fmt, ap);
	va_end(ap);
	/* Driver messages end in newlines; one log line per event. */
	n = strlen(res->errmsg);
	while (n > 0 && isspace((unsigned char)res->errmsg[n - 1]))
		res->errmsg[--n] = '\0';
	return err;
}

int
pgn_store_result_alloc(struct pgn_store_result *res, int nrows, int ncols)
{
	size_t n;

	if (nrows < 0 || ncols < 0)
		return -EINVAL;
	n = (size_t)nrows * (size_t)ncols;
	res->nrows = nrows;
	res->ncols = ncols;
	res->values = NULL;
	if (n == 0)
		return 0;
	res->values = calloc(n, sizeof(char *));
	if (!res->values) {
		res->nrows = 0;
		return -ENOMEM;
	}
	return 0;
}

void
pgn_store_result_clear(struct pgn_store_result *res)
{
	size_t i, n;

	if (res->values) {
		n = (size_t)res->nrows * (size_t)res->ncols;
		for (i = 0; i < n; i++)
			free(res->values[i]);
		free(res->values);
	}
	memset(res, 0, sizeof(*res));
}

void
pgn_store_result_free(struct pgn_store_result *res)
{
	if (!res)
		return;
	pgn_store_result_clear(res);
	free(res);
}

const char *
pgn_store_value(const struct pgn_store_result *res, int row, int col)
{
	if (!res || !res->values || row < 0 || col < 0 || row >= res->nrows ||
	    col >= res->ncols)
		return NULL;
	return res->values[(size_t)row * (size_t)res->ncols + (size_t)col];
}

/* ---- running statements (caller holds st->mu) --------------------------- */

static int
run_stmts(struct pgn_store *st, int txn, int nstmts, const struct stmt *stmts,
	  struct pgn_store_result *res)
{
	struct pgn_store_result tmp;
	int i, err;

	memset(res, 0, sizeof(*res));
	if (txn) {
		err = st->drv->begin(st->conn, res);
		if (err < 0)
			return err;
		pgn_store_result_clear(res);
	}
	for (i = 0; i < nstmts; i++) {
		pgn_store_result_clear(res);
		err = st->drv->exec(st->conn, stmts[i].sql, stmts[i].nparams,
				    (const char *const *)stmts[i].params, res);
		if (err < 0)
			goto fail;
	}
	if (txn) {
		memset(&tmp, 0, sizeof(tmp));
		err = st->drv->commit(st->conn, &tmp);
		if (err < 0) {
			pgn_store_result_clear(res);
			*res = tmp;
			goto fail;
		}
		pgn_store_result_clear(&tmp);
	}
	return 0;

fail:
	if (txn) {
		/* The first error is the one worth reporting. */
		memset(&tmp, 0, sizeof(tmp));
		if (st->drv->rollback(st->conn, &tmp) < 0)
			pgn_log(PGN_LOG_WARN, "store %s: rollback failed: %s",
				st->drv->name, tmp.errmsg);
		pgn_store_result_clear(&tmp);
	}
	return res->error;
}

/* ---- migrations ----------------------------------------------------------- */

struct migration {
	long number;
	char *file; /* base name */
};

static int
migration_cmp(const void *a, const void *b)
{
	const struct migration *x = a, *y = b;

	return (x->number > y->number) - (x->number < y->number);
}

static void
migrations_free(struct migration *m, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(m[i].file);
	free(m);
}

/* Lists NNN_name.sql in dir, sorted by number.  Other files are ignored
 * so that editors' backups do not become migrations. */
static int
migrations_list(const char *dir, struct migration **out, size_t *count,
		char *err, size_t errlen)
{
	struct migration *m = NULL, *grown;
	size_t n = 0, cap = 0, i, len;
	struct dirent *de;
	DIR *d;
	char *end;
	long num;

	d = opendir(dir);
	if (!d) {
		int e = errno;

		snprintf(err, errlen, "migrations: cannot open %s: %s", dir,
			 strerror(e));
		return -e;
	}
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (!isdigit((unsigned char)de->d_name[0]) || len < 5 ||
		    strcmp(de->d_name + len - 4, ".sql") != 0)
			continue;
		errno = 0;
		num = strtol(de->d_name, &end, 10);
		if (errno || *end != '_' || num <= 0 || num > INT32_MAX)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			grown = realloc(m, cap * sizeof(*m));
			if (!grown)
				goto nomem;
			m = grown;
		}
		m[n].number = num;
		m[n].file = strdup(de->d_name);
		if (!m[n].file)
			goto nomem;
		n++;
	}
	closedir(d);
	d = NULL;
	if (n > 0)
		qsort(m, n, sizeof(*m), migration_cmp);
	for (i = 1; i < n; i++) {
		if (m[i].number == m[i - 1].number) {
			snprintf(err, errlen,
				 "migrations: %s and %s have the same number",
				 m[i - 1].file, m[i].file);
			migrations_free(m, n);
			return -EINVAL;
		}
	}
	*out = m;
	*count = n;
	return 0;

nomem:
	if (d)
		closedir(d);
	migrations_free(m, n);
	snprintf(err, errlen, "migrations: out of memory");
	return -ENOMEM;
}

static int
read_file(const char *path, char **out)
{
	char *buf = NULL, *grown;
	size_t len = 0, cap = 0, n;
	FILE *f;
	int err;

	f = fopen(path, "r");
	if (!f)
		return -errno;
	for (;;) {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 8192;
			if (cap > MIGRATION_MAX_BYTES) {
				err = -EFBIG;
				goto fail;
			}
			grown = realloc(buf, cap);
			if (!grown) {
				err = -ENOMEM;
				goto fail;
			}
			buf = grown;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		err = -EIO;
		goto fail;
	}
	fclose(f);
	buf[len] = '\0';
	*out = buf;
	return 0;

fail:
	fclose(f);
	free(buf);
	return err;
}

/* Returns 1 if version is recorded, 0 if not, negative on error. */
static int
migration_applied(struct pgn_store *st, long number, char *err,
		  size_t errlen)
{
	struct pgn_store_result res = { 0 };
	char num[24];
	const char *p[1] = { num };
	int rc;

	snprintf(num, sizeof(num), "%ld", number);
	rc = st->drv->exec(st->conn,
			   "SELECT version FROM schema_version WHERE version = $1",
			   1, p, &res);
	if (rc < 0)
		snprintf(err, errlen, "%s", res.errmsg);
	else
		rc = res.nrows > 0;
	pgn_store_result_clear(&res);
	return rc;
}

/* Applies one migration file in its own transaction.  The check for an
 * already-applied version is repeated inside the transaction because
 * another process may have applied it since the listing. */
static int
migration_apply(struct pgn_store *st, const char *dir,
		const struct migration *m, char *err, size_t errlen)
{
	struct pgn_store_result res = { 0 };
	char path[PATH_BUF], num[24], msg[512];
	const char *p[2] = { num, m->file };
	char *script = NULL;
	int rc, in_txn = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, m->file) >=
	    sizeof(path)) {
		snprintf(err, errlen, "migration %s: path too long", m->file);
		return -ENAMETOOLONG;
	}
	rc = read_file(path, &script);
	if (rc < 0) {
		snprintf(err, errlen, "migration %s: %s", path, strerror(-rc));
		goto fail;
	}
	rc = st->drv->begin(st->conn, &res);
	if (rc < 0) {
		snprintf(err, errlen, "migration %s: %s", path, res.errmsg);
		goto fail;
	}
	in_txn = 1;
	pgn_store_result_clear(&res);
	rc = migration_applied(st, m->number, msg, sizeof(msg));
	if (rc < 0) {
		snprintf(err, errlen, "migration %s: %s", path, msg);
		goto fail;
	}
	if (rc == 0) {
		rc = st->drv->exec_script(st->conn, script, msg, sizeof(msg));
		if (rc < 0) {
			snprintf(err, errlen, "migration %s failed: %s", path,
				 msg);
			goto fail;
		}
		snprintf(num, sizeof(num), "%ld", m->number);
		rc = st->drv->exec(st->conn,
				   "INSERT INTO schema_version (version, name) "
				   "VALUES ($1, $2)",
				   2, p, &res);
		if (rc < 0) {
			snprintf(err, errlen, "migration %s: %s", path,
				 res.errmsg);
			goto fail;
		}
		pgn_store_result_clear(&res);
		pgn_log(PGN_LOG_INFO, "store %s: applied migration %s",
			st->drv->name, m->file);
	}
	rc = st->drv->commit(st->conn, &res);
	in_txn = 0;
	if (rc < 0) {
		snprintf(err, errlen, "migration %s: %s", path, res.errmsg);
		goto fail;
	}
	pgn_store_result_clear(&res);
	free(script);
	return 0;

fail:
	pgn_store_result_clear(&res);
	if (in_txn) {
		st->drv->rollback(st->conn, &res);
		pgn_store_result_clear(&res);
	}
	free(script);
	return rc;
}

static int
migrate(struct pgn_store *st, const char *schema_dir, char *err,
	size_t errlen)
{
	struct pgn_store_result res = { 0 };
	struct migration *m = NULL;
	size_t n = 0, i;
	char dir[PATH_BUF];
	const char *v;
	int rc, locked = 0;

	if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", schema_dir,
			     st->drv->name) >= sizeof(dir)) {
		snprintf(err, errlen, "migrations: schema path too long");
		return -ENAMETOOLONG;
	}
	rc = migrations_list(dir, &m, &n, err, errlen);
	if (rc < 0)
		return rc;
	if (st->drv->migrate_lock) {
		rc = st->drv->migrate_lock(st->conn, 1, err, errlen);
		if (rc < 0)
			goto fail;
		locked = 1;
	}
	rc = st->drv->exec_script(st->conn, st->drv->version_table_sql, err,
				  errlen);
	if (rc < 0)
		goto fail;
	for (i = 0; i < n; i++) {
		rc = migration_apply(st, dir, &m[i], err, errlen);
		if (rc < 0)
			goto fail;
	}
	rc = st->drv->exec(st->conn, "SELECT max(version) FROM schema_version",
			   0, NULL, &res);
	if (rc < 0) {
		snprintf(err, errlen, "migrations: %s", res.errmsg);
		goto fail;
	}
	v = pgn_store_value(&res, 0, 0);
	st->version = v ? atoi(v) : 0;
	rc = 0;

fail:
	pgn_store_result_clear(&res);
	if (locked && st->drv->migrate_lock(st->conn, 0, NULL, 0) < 0)
		pgn_log(PGN_LOG_WARN, "store %s: cannot release migration lock",
			st->drv->name);
	migrations_free(m, n);
	return rc;
}

static int
cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t attr;
	int rc;

	if (pthread_condattr_init(&attr) != 0)
		return -1;
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(c, &attr);
	pthread_condattr_destroy(&attr);
	return rc;
}

/* ---- open / close ----------------------------------------------------------- */

struct pgn_store *
pgn_store_open(const struct pgn_store_config *cfg, struct event_base *base,
	       char *err, size_t errlen)
{
	struct pgn_store *st = NULL;
	const struct pgn_store_driver *drv;
	char dummy[1];
	int mu_ok = 0;

	if (!err || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	if (!cfg) {
		snprintf(err, errlen, "store: no configuration");
		return NULL;
	}
	if (!cfg->driver || !cfg->driver[0] || !strcmp(cfg->driver, "sqlite"))
		drv = &pgn_store_driver_sqlite;
	else if (!strcmp(cfg->driver, "pgsql"))
		drv = &pgn_store_driver_pgsql;
	else {
		snprintf(err, errlen, "store: unknown driver \"%s\"",
			 cfg->driver);
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "store: out of memory");
		return NULL;
	}
	st->drv = drv;
	if (pthread_mutex_init(&st->mu, NULL) != 0) {
		snprintf(err, errlen, "store: cannot create mutex");
		goto fail;
	}
	mu_ok = 1;
	if (cond_init_monotonic(&st->wake) != 0) {
		snprintf(err, errlen, "store: cannot create condition");
		goto fail;
	}
	mu_ok = 2;
	st->hold_ms = cfg->outage_hold_ms > 0 ? cfg->outage_hold_ms : 0;
	if (drv->open(cfg, &st->conn, err, errlen) < 0)
		goto fail;
	if (migrate(st, cfg->schema_dir ? cfg->schema_dir : PGN_SCHEMA_DIR,
		    err, errlen) < 0)
		goto fail;
	/* The worker starts last: nothing above runs on it. */
	if (base) {
		st->worker = pgn_worker_new(base, "pgn-store");
		if (!st->worker) {
			snprintf(err, errlen, "store: cannot start worker");
			goto fail;
		}
	}
	pgn_log(PGN_LOG_INFO, "store %s: open, schema version %d", drv->name,
		st->version);
	return st;

fail:
	if (st->conn)
		drv->close(st->conn);
	if (mu_ok > 1)
		pthread_cond_destroy(&st->wake);
	if (mu_ok)
		pthread_mutex_destroy(&st->mu);
	free(st);
	return NULL;
}

void
pgn_store_close(struct pgn_store *st)
{
	if (!st)
		return;
	/* A request waiting for the store to come back gives up, and so do
	 * the queued ones (one attempt each at most). */
	pthread_mutex_lock(&st->mu);
	st->closing = 1;
	pthread_cond_broadcast(&st->wake);
	pthread_mutex_unlock(&st->mu);
	/* Drains: queued queries run and their callbacks are called. */
	pgn_worker_free(st->worker);
	st->drv->close(st->conn);
	pthread_cond_destroy(&st->wake);
	pthread_mutex_destroy(&st->mu);
	free(st);
}

const char *
pgn_store_driver(const struct pgn_store *st)
{
	return st ? st->drv->name : NULL;
}

int
pgn_store_schema_version(const struct pgn_store *st)
{
	return st ? st->version : 0;
}

/* ---- queries ---------------------------------------------------------------- */

static void
stmts_free(struct stmt *stmts, int n)
{
	int i, j;

	if (!stmts)
		return;
	for (i = 0; i < n; i++) {
		free(stmts[i].sql);
		if (stmts[i].params) {
			for (j = 0; j < stmts[i].nparams; j++)
				free(stmts[i].params[j]);
			free(stmts[i].params);
		}
	}
	free(stmts);
}

static int
stmt_copy(struct stmt *s, const char *sql, int nparams,
	  const char *const *params)
{
	int i;

	if (!sql || nparams < 0 || (nparams > 0 && !params))
		return -EINVAL;
	s->sql = strdup(sql);
	if (!s->sql)
		return -ENOMEM;
	if (nparams == 0)
		return 0;
	s->params = calloc((size_t)nparams, sizeof(char *));
	if (!s->params)
		return -ENOMEM;
	s->nparams = nparams;
	for (i = 0; i < nparams; i++) {
		if (!params[i])
			continue; /* SQL NULL */
		s->params[i] = strdup(params[i]);
		if (!s->params[i])
			return -ENOMEM;
	}
	return 0;
}

/* ---- outages ------------------------------------------------------------------ */

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keeps msg as the outage's cause, on one line (libpq's messages have
 * several).  Caller holds mu. */
static void
outage_cause(struct pgn_store *st, const char *msg)
{
	size_t n = 0;

	for (; *msg != '\0' && n + 1 < sizeof(st->down_msg); msg++) {
		if (isspace((unsigned char)*msg)) {
			if (n > 0 && st->down_msg[n - 1] != ' ')
				st->down_msg[n++] = ' ';
		} else {
			st->down_msg[n++] = *msg;
		}
	}
	while (n > 0 && st->down_msg[n - 1] == ' ')
		n--;
	st->down_msg[n] = '\0';
}

/* A request failed with -EAGAIN while the store was up: one log line for
 * the whole outage, not one per query.  Caller holds mu. */
static void
outage_begin(struct pgn_store *st, const char *msg)
{
	st->down = 1;
	st->past_hold = 0;
	st->down_since = mono_ms();
	/* The first attempt at once: a connection the server closed
	 * (restart long ago, idle timeout) is simply replaced. */
	st->backoff = BACKOFF_MIN_MS / 2;
	st->next_try = st->down_since;
	st->attempts = 0;
	st->failed = 0;
	outage_cause(st, msg);
	pgn_log(PGN_LOG_WARN,
		"store %s: unavailable (%s); requests wait up to %ld ms, "
		"in order, while it is tried again",
		st->drv->name, st->down_msg, st->hold_ms);
}

/* A request succeeded again.  Caller holds mu. */
static void
outage_end(struct pgn_store *st)
{
	int64_t ms = mono_ms() - st->down_since;

	st->down = 0;
	pgn_log(PGN_LOG_WARN,
		"store %s: available again after %" PRId64 ".%" PRId64
		" s (%lu reconnect attempts, %lu requests failed)",
		st->drv->name, ms / 1000, (ms % 1000) / 100, st->attempts,
		st->failed);
}

/* Waits until the next attempt is due.  Returns 0 when it is, or -EAGAIN
 * when the request must fail now: the hold ran out (then requests fail
 * at once between attempts) or the store is closing.  Caller holds mu. */
static int
outage_wait(struct pgn_store *st)
{
	int64_t now, until, hold_end;
	struct timespec ts;

	for (;;) {
		now = mono_ms();
		if (now >= st->next_try)
			return 0;
		hold_end = st->down_since + st->hold_ms;
		if (st->closing || now >= hold_end) {
			if (!st->past_hold && !st->closing) {
				st->past_hold = 1;
				pgn_log(PGN_LOG_ERROR,
					"store %s: still unavailable after "
					"%ld ms: requests fail until it is "
					"back",
					st->drv->name, st->hold_ms);
			}
			return -EAGAIN;
		}
		until = st->next_try < hold_end ? st->next_try : hold_end;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (until - now) / 1000;
		ts.tv_nsec += ((until - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&st->wake, &st->mu, &ts);
	}
}

/* Runs the request's statements, riding out an outage.  While the store
 * is unavailable (-EAGAIN from the driver: nothing was committed), the
 * request is run again after reconnecting, with backoff, for up to
 * hold_ms from the start of the outage.  The worker runs one request at
 * a time, so the requests behind it wait and keep their order; there
 * is one reconnect attempt per backoff step whatever the load.  Past
 * the hold a request fails at once (-EAGAIN) unless an attempt is due.
 *
 * A COMMIT whose connection broke may have committed: it is run again
 * like any failed request, so callers' writes should tolerate a replay
 * (mod_mam's rows are unique by stanza id and inserted ON CONFLICT DO
 * NOTHING). */
static void
run_held(struct pgn_store *st, int txn, int nstmts, const struct stmt *stmts,
	 struct pgn_store_result *res)
{
	char msg[256];
	int rc;

	for (;;) {
		if (st->down) {
			if (outage_wait(st) < 0) {
				st->failed++;
				pgn_store_result_clear(res);
				pgn_store_result_set_error(
					res, -EAGAIN, "store unavailable: %s",
					st->down_msg);
				return;
			}
			st->attempts++;
			st->backoff = st->backoff * 2 > BACKOFF_MAX_MS
					      ? BACKOFF_MAX_MS
					      : st->backoff * 2;
			st->next_try = mono_ms() + st->backoff;
			if (st->drv->reconnect &&
			    st->drv->reconnect(st->conn, msg, sizeof(msg)) < 0) {
				outage_cause(st, msg);
				continue;
			}
		}
		pgn_store_result_clear(res);
		rc = run_stmts(st, txn, nstmts, stmts, res);
		if (rc != -EAGAIN) {
			if (st->down)
				outage_end(st);
			return;
		}
		if (!st->down)
			outage_begin(st, res->errmsg);
		else
			outage_cause(st, res->errmsg);
	}
}

static void
request_run(void *job)
{
	struct request *rq = job;
	struct pgn_store *st = rq->st;

	pthread_mutex_lock(&st->mu);
	run_held(st, rq->txn, rq->nstmts, rq->stmts, &rq->res);
	pthread_mutex_unlock(&st->mu);
}

static void
request_done(void *job)
{
	struct request *rq = job;

	if (rq->cb)
		rq->cb(rq->owner, rq->arg, &rq->res);
	else if (rq->res.error)
		pgn_log(PGN_LOG_WARN, "store %s: query failed: %s",
			rq->st->drv->name, rq->res.errmsg);
	pgn_store_result_clear(&rq->res);
	stmts_free(rq->stmts, rq->nstmts);
	free(rq);
}

static int
submit(struct pgn_store *st, int txn, int nstmts, const char *const *sqls,
       const int *nparams, const char *const *const *params, uint64_t owner,
       pgn_store_cb cb, void *arg)
{
	struct request *rq;
	int i, err;

	if (!st || nstmts <= 0 || !sqls)
		return -EINVAL;
	if (!st->worker)
		return -EINVAL; /* opened without an event base */
	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return -ENOMEM;
	rq->st = st;
	rq->txn = txn;
	rq->owner = owner;
	rq->cb = cb;
	rq->arg = arg;
	rq->stmts = calloc((size_t)nstmts, sizeof(*rq->stmts));
	if (!rq->stmts) {
		err = -ENOMEM;
		goto fail;
	}
	rq->nstmts = nstmts;
	for (i = 0; i < nstmts; i++) {
		err = stmt_copy(&rq->stmts[i], sqls[i], nparams ? nparams[i] : 0,
				params ? params[i] : NULL);
		if (err < 0)
			goto fail;
	}
	err = pgn_worker_submit(st->worker, rq, request_run, request_done);
	if (err < 0)
		goto fail;
	return 0;

fail:
	stmts_free(rq->stmts, rq->nstmts);
	free(rq);
	return err;
}

int
pgn_store_query(struct pgn_store *st, const char *sql, int nparams,
		const char *const *params, uint64_t owner, pgn_store_cb cb,
		void *arg)
{
	const char *const *pp[1] = { params };

	return submit(st, 0, 1, &sql, &nparams, pp, owner, cb, arg);
}

int
pgn_store_txn(struct pgn_store *st, int nstmts, const char *const *sqls,
	      const int *nparams, const char *const *const *params,
	      uint64_t owner, pgn_store_cb cb, void *arg)
{
	return submit(st, 1, nstmts, sqls, nparams, params, owner, cb, arg);
}

/* Runs stmts on the caller's thread (with the outage hold, like the
 * store thread).  On error *out is NULL (nothing to free) and the driver
 * message is logged, so that a caller's error path cannot leak the
 * result. */
static int
run_sync(struct pgn_store *st, int txn, int nstmts, const struct stmt *stmts,
	 struct pgn_store_result **out)
{
	struct pgn_store_result *res = calloc(1, sizeof(*res));
	int err;

	if (!res)
		return -ENOMEM;
	pthread_mutex_lock(&st->mu);
	run_held(st, txn, nstmts, stmts, res);
	err = res->error;
	pthread_mutex_unlock(&st->mu);
	if (err < 0) {
		pgn_log(err == -EEXIST ? PGN_LOG_DEBUG : PGN_LOG_WARN,
			"store %s: %s failed: %s", st->drv->name,
			txn ? "transaction" : "query", res->errmsg);
		pgn_store_result_free(res);
		return err;
	}
	if (out)
		*out = res;
	else
		pgn_store_result_free(res);
	return 0;
}

int
pgn_store_query_sync(struct pgn_store *st, const char *sql, int nparams,
		     const char *const *params, struct pgn_store_result **out)
{
	struct stmt s;

	if (out)
		*out = NULL;
	if (!st || !sql || nparams < 0 || (nparams > 0 && !params))
		return -EINVAL;
	/* Parameters are only read during the call: no copy needed. */
	s.sql = (char *)sql;
	s.nparams = nparams;
	s.params = (char **)params;
	return run_sync(st, 0, 1, &s, out);
}

int
pgn_store_txn_sync(struct pgn_store *st, int nstmts,
		   const char *const *sqls, const int *nparams,
		   const char *const *const *params,
		   struct pgn_store_result **out)
{
	struct stmt *s;
	int i, err;

	if (out)
		*out = NULL;
	if (!st || nstmts <= 0 || !sqls || !nparams || !params)
		return -EINVAL;
	if ((s = calloc((size_t)nstmts, sizeof(*s))) == NULL)
		return -ENOMEM;
	for (i = 0; i < nstmts; i++) {
		s[i].sql = (char *)sqls[i];
		s[i].nparams = nparams[i];
		s[i].params = (char **)params[i];
	}
	err = run_sync(st, 1, nstmts, s, out);
	free(s);
	return err;
}
