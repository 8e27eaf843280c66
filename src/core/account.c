/* Accounts: SCRAM credentials in the `accounts` table.
 *
 * Asynchronous operations that take a password first derive the keys on
 * the crypto worker (PBKDF2 is far too slow for the loop), then queue the
 * store query, then answer on the loop.  Operations that go through the
 * crypto worker may therefore be overtaken by a later get_creds or
 * unregister on the same account; callers needing order chain them.
 *
 * The crypto worker must be freed before the store is closed: a draining
 * derivation queues its store query from its done() callback. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pigeon/account.h"
#include "pigeon/log.h"
#include "pigeon/worker.h"

/* Key and salt columns, in pgn_scram_creds_encode order. */
enum { ENC_SALT, ENC_SHA1_STORED, ENC_SHA1_SERVER, ENC_SHA256_STORED,
       ENC_SHA256_SERVER, ENC_COUNT };

/* Both statements take the same parameters: user, host, salt,
 * iterations, then the four keys. */
static const char sql_insert[] =
	"INSERT INTO accounts (username, host, salt, iterations,"
	" sha1_stored_key, sha1_server_key, sha256_stored_key,"
	" sha256_server_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
static const char sql_update[] =
	"UPDATE accounts SET salt = $3, iterations = $4,"
	" sha1_stored_key = $5, sha1_server_key = $6,"
	" sha256_stored_key = $7, sha256_server_key = $8"
	" WHERE username = $1 AND host = $2";
static const char sql_select[] =
	"SELECT salt, iterations, sha1_stored_key, sha1_server_key,"
	" sha256_stored_key, sha256_server_key FROM accounts"
	" WHERE username = $1 AND host = $2";
static const char sql_delete[] =
	"DELETE FROM accounts WHERE username = $1 AND host = $2";
static const char sql_list[] =
	"SELECT username FROM accounts WHERE host = $1";

enum acct_op { OP_GET, OP_REGISTER, OP_SET_PASSWORD, OP_UNREGISTER };

/* Encoded credentials, ready to bind. */
struct enc_creds {
	char *col[ENC_COUNT];
	char iterations[16];
};

struct acct_req {
	struct pgn_store *st;
	enum acct_op op;
	char *user;
	char *host;
	char *password; /* wiped once derived */
	int err;        /* of the derivation */
	struct enc_creds enc;
	uint64_t owner;
	pgn_account_cb cb;
	void *arg;
};

static void
enc_clear(struct enc_creds *e)
{
	int i;

	for (i = 0; i < ENC_COUNT; i++) {
		pgn_scram_wipe_free(e->col[i]);
		e->col[i] = NULL;
	}
}

/* Heavy: PBKDF2 with a fresh random salt. */
static int
enc_derive(const char *password, struct enc_creds *e)
{
	struct pgn_scram_creds creds;
	int err;

	err = pgn_scram_derive(password, NULL, 0, PGN_SCRAM_DEFAULT_ITERATIONS,
			       &creds);
	if (err < 0)
		goto fail;
	err = pgn_scram_creds_encode(&creds, &e->col[ENC_SALT],
				     &e->col[ENC_SHA1_STORED],
				     &e->col[ENC_SHA1_SERVER],
				     &e->col[ENC_SHA256_STORED],
				     &e->col[ENC_SHA256_SERVER]);
	if (err < 0)
		goto fail;
	snprintf(e->iterations, sizeof(e->iterations), "%u", creds.iterations);
	sodium_memzero(&creds, sizeof(creds));
	return 0;

fail:
	sodium_memzero(&creds, sizeof(creds));
	enc_clear(e);
	return err;
}

static void
enc_params(const char *user, const char *host, const struct enc_creds *e,
	   const char *p[8])
{
	p[0] = user;
	p[1] = host;
	p[2] = e->col[ENC_SALT];
	p[3] = e->iterations;
	p[4] = e->col[ENC_SHA1_STORED];
	p[5] = e->col[ENC_SHA1_SERVER];
	p[6] = e->col[ENC_SHA256_STORED];
	p[7] = e->col[ENC_SHA256_SERVER];
}

/* Row 0 of a sql_select result to creds.  0, -ENOENT or decode error. */
static int
creds_from_result(const struct pgn_store_result *res,
		  struct pgn_scram_creds *out)
{
	const char *iter;
	char *end;
	unsigned long n;

	if (res->nrows < 1)
		return -ENOENT;
	iter = pgn_store_value(res, 0, 1);
	if (!iter)
		return -EIO;
	n = strtoul(iter, &end, 10);
	if (*end || n == 0 || n > 0xffffffffUL)
		return -EIO;
	return pgn_scram_creds_decode(
		pgn_store_value(res, 0, 0), (unsigned)n,
		pgn_store_value(res, 0, 2), pgn_store_value(res, 0, 3),
		pgn_store_value(res, 0, 4), pgn_store_value(res, 0, 5), out);
}

static int
check_names(const char *user, const char *host)
{
	if (!user || !user[0] || !host || !host[0])
		return -EINVAL;
	return 0;
}

/* ---- asynchronous -------------------------------------------------------- */

static void
req_free(struct acct_req *rq)
{
	if (!rq)
		return;
	free(rq->user);
	free(rq->host);
	pgn_scram_wipe_free(rq->password);
	enc_clear(&rq->enc);
	free(rq);
}

static struct acct_req *
req_new(struct pgn_store *st, enum acct_op op, const char *user,
	const char *host, const char *password, uint64_t owner,
	pgn_account_cb cb, void *arg)
{
	struct acct_req *rq;

	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return NULL;
	rq->st = st;
	rq->op = op;
	rq->owner = owner;
	rq->cb = cb;
	rq->arg = arg;
	rq->user = strdup(user);
	rq->host = strdup(host);
	if (password)
		rq->password = strdup(password);
	if (!rq->user || !rq->host || (password && !rq->password)) {
		req_free(rq);
		return NULL;
	}
	return rq;
}

static void
req_answer(struct acct_req *rq, int err, const struct pgn_scram_creds *creds)
{
	if (rq->cb)
		rq->cb(rq->owner, rq->arg, err, creds);
	else if (err < 0)
		pgn_log(PGN_LOG_WARN, "account %s@%s: operation failed: %s",
			rq->user, rq->host, strerror(-err));
	req_free(rq);
}

static void
on_store_result(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct acct_req *rq = arg;
	struct pgn_scram_creds creds;
	int err = res->error;

	if (err < 0) {
		if (err != -EEXIST)
			pgn_log(PGN_LOG_WARN, "account %s@%s: %s", rq->user,
				rq->host, res->errmsg);
		req_answer(rq, err, NULL);
		return;
	}
	switch (rq->op) {
	case OP_GET:
		err = creds_from_result(res, &creds);
		req_answer(rq, err, err == 0 ? &creds : NULL);
		sodium_memzero(&creds, sizeof(creds));
		return;
	case OP_SET_PASSWORD:
	case OP_UNREGISTER:
		err = res->changes > 0 ? 0 : -ENOENT;
		break;
	case OP_REGISTER:
		break;
	}
	req_answer(rq, err, NULL);
}

static int
req_query(struct acct_req *rq)
{
	const char *p[8];
	const char *sql;
	int n = 2;

	p[0] = rq->user;
	p[1] = rq->host;
	switch (rq->op) {
	case OP_GET:
		sql = sql_select;
		break;
	case OP_UNREGISTER:
		sql = sql_delete;
		break;
	case OP_REGISTER:
	case OP_SET_PASSWORD:
	default:
		sql = rq->op == OP_REGISTER ? sql_insert : sql_update;
		enc_params(rq->user, rq->host, &rq->enc, p);
		n = 8;
		break;
	}
	return pgn_store_query(rq->st, sql, n, p, rq->owner, on_store_result,
			       rq);
}

/* Crypto worker thread. */
static void
derive_run(void *job)
{
	struct acct_req *rq = job;

	rq->err = enc_derive(rq->password, &rq->enc);
	pgn_scram_wipe_free(rq->password);
	rq->password = NULL;
}

/* Loop thread. */
static void
derive_done(void *job)
{
	struct acct_req *rq = job;
	int err = rq->err;

	if (err == 0)
		err = req_query(rq);
	if (err < 0)
		req_answer(rq, err, NULL);
}

static int
submit(struct pgn_store *st, struct pgn_worker *cw, enum acct_op op,
       const char *user, const char *host, const char *password,
       uint64_t owner, pgn_account_cb cb, void *arg)
{
	struct acct_req *rq;
	int err;

	if (!st || check_names(user, host) < 0)
		return -EINVAL;
	if ((op == OP_REGISTER || op == OP_SET_PASSWORD) && (!cw || !password))
		return -EINVAL;
	rq = req_new(st, op, user, host, password, owner, cb, arg);
	if (!rq)
		return -ENOMEM;
	if (cw)
		err = pgn_worker_submit(cw, rq, derive_run, derive_done);
	else
		err = req_query(rq);
	if (err < 0)
		req_free(rq);
	return err;
}

int
pgn_account_get_creds(struct pgn_store *st, const char *user,
		      const char *host, uint64_t owner, pgn_account_cb cb,
		      void *arg)
{
	return submit(st, NULL, OP_GET, user, host, NULL, owner, cb, arg);
}

int
pgn_account_register(struct pgn_store *st, struct pgn_worker *cw,
		     const char *user, const char *host, const char *password,
		     uint64_t owner, pgn_account_cb cb, void *arg)
{
	return submit(st, cw, OP_REGISTER, user, host, password, owner, cb,
		      arg);
}

int
pgn_account_set_password(struct pgn_store *st, struct pgn_worker *cw,
			 const char *user, const char *host,
			 const char *password, uint64_t owner,
			 pgn_account_cb cb, void *arg)
{
	return submit(st, cw, OP_SET_PASSWORD, user, host, password, owner, cb,
		      arg);
}

int
pgn_account_unregister(struct pgn_store *st, const char *user,
		       const char *host, uint64_t owner, pgn_account_cb cb,
		       void *arg)
{
	return submit(st, NULL, OP_UNREGISTER, user, host, NULL, owner, cb,
		      arg);
}

/* ---- synchronous (pigeonctl) ------------------------------------------ */

static int
write_sync(struct pgn_store *st, const char *sql, const char *user,
	   const char *host, const char *password)
{
	struct pgn_store_result *res = NULL;
	struct enc_creds enc = { 0 };
	const char *p[8];
	int err;

	if (!st || check_names(user, host) < 0 || !password)
		return -EINVAL;
	err = enc_derive(password, &enc);
	if (err < 0)
		goto fail;
	enc_params(user, host, &enc, p);
	err = pgn_store_query_sync(st, sql, 8, p, &res);
	if (err < 0)
		goto fail;
	if (sql == sql_update && res->changes == 0)
		err = -ENOENT;

fail:
	pgn_store_result_free(res);
	enc_clear(&enc);
	return err;
}

int
pgn_account_register_sync(struct pgn_store *st, const char *user,
			  const char *host, const char *password)
{
	return write_sync(st, sql_insert, user, host, password);
}

int
pgn_account_set_password_sync(struct pgn_store *st, const char *user,
			      const char *host, const char *password)
{
	return write_sync(st, sql_update, user, host, password);
}

/* The server cancels a removed account's subscriptions by sending
 * unsubscribe/unsubscribed to its contacts (mod_roster, XEP-0077 §3.2).
 * With the server stopped nothing can be sent, so the rows of the local
 * contacts are changed here as mod_roster would on receiving those
 * stanzas: the contact's item for the account goes to subscription none
 * without ask or pre-approval, with a new roster version (so a client
 * that knows the old one gets the change pushed, RFC 6121 §2.6), and a
 * request from the account pending at the contact is dropped.  Every
 * statement is by primary key (roster, roster_version, roster_pending of
 * mod_roster, schemas/ 002 and 011).  Contacts on other servers are not
 * told: that needs the running server. */
static const char sql_contacts[] =
	"SELECT jid FROM roster WHERE host = $1 AND username = $2 UNION "
	"SELECT jid FROM roster_pending WHERE host = $1 AND username = $2";
#define SQL_GHOST                                                              \
	"host = $1 AND username = $2 AND jid = $3 AND (subscription <> "      \
	"'none' OR ask <> 0 OR approved <> 0)"
static const char sql_contact_ver[] =
	"UPDATE roster_version SET ver = ver + 1 WHERE host = $1 AND "
	"username = $2 AND EXISTS (SELECT 1 FROM roster WHERE " SQL_GHOST ")";
static const char sql_contact_item[] =
	"UPDATE roster SET subscription = 'none', ask = 0, approved = 0, "
	"ver = COALESCE((SELECT v.ver FROM roster_version v WHERE v.host = $1 "
	"AND v.username = $2), 0) WHERE " SQL_GHOST;
static const char sql_contact_request[] =
	"DELETE FROM roster_pending WHERE host = $1 AND username = $2 AND "
	"jid = $3";

/* The most contacts cancelled offline (mod_roster's max_items is 1000 by
 * default; more rows than this are a damaged store). */
#define MAX_OFFLINE_CONTACTS 1000000

int
pgn_account_unregister_sync(struct pgn_store *st, const char *user,
			    const char *host)
{
	struct pgn_store_result *res = NULL, *contacts = NULL;
	const char *p[2] = { user, host };
	const char *hp[2] = { host, user };
	const char **sqls = NULL, *(*cp)[3] = NULL;
	const char *const **params = NULL;
	int *np = NULL, n = 0, k = 0, i, err;
	char *bare = NULL, **parts = NULL;
	size_t blen;

	if (!st || check_names(user, host) < 0)
		return -EINVAL;
	err = pgn_store_query_sync(st, sql_contacts, 2, hp, &contacts);
	if (err < 0)
		goto fail;
	if (contacts->nrows > MAX_OFFLINE_CONTACTS) {
		err = -E2BIG;
		goto fail;
	}
	n = contacts->nrows;
	blen = strlen(user) + strlen(host) + 2;
	err = -ENOMEM;
	if ((bare = malloc(blen)) == NULL ||
	    (sqls = calloc((size_t)n * 3 + 1, sizeof(*sqls))) == NULL ||
	    (np = calloc((size_t)n * 3 + 1, sizeof(*np))) == NULL ||
	    (params = calloc((size_t)n * 3 + 1, sizeof(*params))) == NULL ||
	    (cp = calloc((size_t)n + 1, sizeof(*cp))) == NULL ||
	    (parts = calloc((size_t)n + 1, sizeof(*parts))) == NULL)
		goto fail;
	snprintf(bare, blen, "%s@%s", user, host);
	for (i = 0; i < n; i++) {
		const char *jid = pgn_store_value(contacts, i, 0);
		char *at;
		/* A bare JID user@host; a server JID has no row to fix. */
		if (jid == NULL || strchr(jid, '/') != NULL ||
		    (at = strchr(jid, '@')) == NULL)
			continue;
		if ((parts[i] = strdup(jid)) == NULL)
			goto fail;
		at = parts[i] + (at - jid);
		*at = '\0';
		cp[i][0] = at + 1;   /* contact's host */
		cp[i][1] = parts[i]; /* contact's user */
		cp[i][2] = bare;
		sqls[k] = sql_contact_ver;
		sqls[k + 1] = sql_contact_item;
		sqls[k + 2] = sql_contact_request;
		for (int j = 0; j < 3; j++) {
			np[k + j] = 3;
			params[k + j] = cp[i];
		}
		k += 3;
	}
	sqls[k] = sql_delete;
	np[k] = 2;
	params[k] = p;
	err = pgn_store_txn_sync(st, k + 1, sqls, np, params, &res);
	if (err == 0 && res->changes == 0)
		err = -ENOENT;
fail:
	if (parts != NULL)
		for (i = 0; i < n; i++)
			free(parts[i]);
	free(parts);
	free(cp);
	free(params);
	free(np);
	free(sqls);
	free(bare);
	pgn_store_result_free(contacts);
	pgn_store_result_free(res);
	return err;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted here rather than in SQL: PostgreSQL's ORDER BY follows the
 * database collation, SQLite's is bytewise; strcmp is the same for both. */
int
pgn_account_list_sync(struct pgn_store *st, const char *host, char **out)
{
	struct pgn_store_result *res = NULL;
	const char *p[1] = { host };
	const char **names = NULL;
	size_t len = 0, off = 0, n;
	char *buf = NULL;
	int err, i;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!st || !host || !host[0])
		return -EINVAL;
	err = pgn_store_query_sync(st, sql_list, 1, p, &res);
	if (err < 0)
		goto fail;
	if (res->nrows > 0) {
		names = calloc((size_t)res->nrows, sizeof(*names));
		if (!names) {
			err = -ENOMEM;
			goto fail;
		}
	}
	for (i = 0; i < res->nrows; i++) {
		names[i] = pgn_store_value(res, i, 0);
		if (!names[i])
			names[i] = "";
		len += strlen(names[i]) + 1;
	}
	if (res->nrows > 0)
		qsort(names, (size_t)res->nrows, sizeof(*names), cmp_str);
	buf = malloc(len + 1);
	if (!buf) {
		err = -ENOMEM;
		goto fail;
	}
	/* One name per line, each ending in '\n'; "" when there are none. */
	for (i = 0; i < res->nrows; i++) {
		n = strlen(names[i]);
		memcpy(buf + off, names[i], n);
		off += n;
		buf[off++] = '\n';
	}
	buf[off] = '\0';
	*out = buf;
	err = 0;

fail:
	free(names);
	pgn_store_result_free(res);
	return err;
}
