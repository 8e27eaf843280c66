/* XEP-0160: Best Practices for Handling Offline Messages.
 *
 * Storing: the router fires "message/offline" when a message to a local
 * account finds no available resource.  A storable message (see
 * should_store) is held while it is written, stamped with a server
 * <delay/> (XEP-0203), and only dropped from memory once the store has
 * confirmed (messages that come meanwhile are group-committed, see
 * store_flush), in one transaction with the statements that go with it
 * (st->writes: its archive rows, doc/architecture.md "Storage
 * failures"); a storage error bounces it (internal-server-error, wait),
 * a full quota bounces it (resource-constraint, wait), an unknown account
 * lets the router answer as for any unknown user.  Nothing is lost
 * silently.
 *
 * Delivering: on "initial-presence" the user's messages are read in store
 * order, BATCH_ROWS at a time (and at most BATCH_BYTES of stanzas per
 * batch), written to that session and then deleted by id
 * (offline_delivered(): the one place stream management acks will move
 * the deletion behind, issue 4).  The next batch is read only when the
 * session can take it (pgn_session_congested(), else "session-drained"):
 * a large backlog must not pile up in the output buffer, which ends the
 * stream, nor in the stream management queue.  While that runs, messages
 * arriving for the same account are held (message/bare and message/full,
 * up to MAX_HELD per account) and routed on when the backlog is done, so
 * the session sees the old messages before the new ones.
 *
 * pigeonctl delete_old_messages DAYS deletes what is older than DAYS days
 * on every host (the command has no host argument). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pigeon/ctl.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define NS_SID "urn:xmpp:sid:0"
#define NS_EME "urn:xmpp:eme:0"

#define MAX_QUOTA 1000000
/* One batch of the backlog: rows read at once, and the stanza bytes
 * written before the next read (a batch of large messages must not fill
 * the session's output buffer, which closes the stream past 4 MiB). */
#define BATCH_ROWS 100
#define BATCH_ROWS_STR "100"
#define BATCH_BYTES (512 * 1024)
/* Messages held per account while its backlog is being delivered; past
 * this they are routed at once (and may overtake the backlog). */
#define MAX_HELD 1000
/* Group commit: messages that come while a write is running are written
 * together, up to this many per transaction, once it is done (one commit
 * costs a disk flush on PostgreSQL).  Past MAX_QUEUED waiting messages
 * the store is not keeping up and new ones are refused (wait). */
#define STORE_BATCH 256
#define MAX_QUEUED 20000
/* The same in bytes of stanza text: 20000 large messages would hold
 * gigabytes while the store is slow (each also keeps its parsed tree). */
#define MAX_QUEUED_BYTES (64u << 20)
/* delete_old_messages accepts at most this many digits (27 000 years). */
#define MAX_DAYS_DIGITS 7
/* A store that is unavailable (-EAGAIN) is logged by the store, once
 * for the outage: the messages it bounces only at debug level. */
#define STORE_FAIL_LEVEL(res) \
	((res)->error == -EAGAIN ? PGN_LOG_DEBUG : PGN_LOG_WARN)

/* ---- SQL (the same text on SQLite and PostgreSQL) ----
 * Parameters are text; CAST makes SQLite compare numbers as numbers. */

/* One statement: the account must exist and hold fewer than quota
 * messages.  offline_counts is kept by triggers (one row per user, no
 * count over the messages); the store runs one statement at a time on
 * one connection, so two inserts cannot both see quota - 1. */
#define SQL_USER_COUNT \
	"COALESCE((SELECT n FROM offline_counts " \
	"WHERE host = $1 AND username = $2), 0)"
static const char sql_insert[] =
	"INSERT INTO offline_messages (host, username, created_at, stanza) "
	"SELECT host, username, CAST($3 AS BIGINT), $4 FROM accounts "
	"WHERE host = $1 AND username = $2 AND " SQL_USER_COUNT
	" < CAST($5 AS BIGINT)";
/* The same in a transaction of several: a full quota (NULL stanza) or an
 * unknown account (foreign key) fails the whole transaction, whose
 * messages are then written one by one with sql_insert. */
static const char sql_insert_strict[] =
	"INSERT INTO offline_messages (host, username, created_at, stanza) "
	"VALUES ($1, $2, CAST($3 AS BIGINT), CASE WHEN " SQL_USER_COUNT
	" < CAST($5 AS BIGINT) THEN $4 END)";
static const char sql_account[] =
	"SELECT count(*) FROM accounts WHERE host = $1 AND username = $2";
static const char sql_fetch[] =
	"SELECT id, stanza FROM offline_messages "
	"WHERE host = $1 AND username = $2 AND id > CAST($3 AS BIGINT) "
	"ORDER BY id LIMIT " BATCH_ROWS_STR;
static const char sql_delete_head[] =
	"DELETE FROM offline_messages WHERE host = $1 AND username = $2 "
	"AND id IN (";
static const char sql_delete_old[] =
	"DELETE FROM offline_messages WHERE created_at <= CAST($1 AS BIGINT)";

struct offline {
	struct pgn_module *m;
	struct pgn_server *srv;
	const char *host;       /* the host's name (borrowed) */
	char quota[24];         /* decimal, a query parameter */
	struct pgn_map *users;  /* bare JID -> struct delivery */
	/* Messages waiting for the running write to finish. */
	struct store_req *qhead;
	struct store_req *qtail;
	size_t queued;
	size_t queued_bytes;    /* their text */
	unsigned inflight;      /* writes (statements or batches) running */
};

struct held {
	struct pgn_hold *hold;
	struct held *next;
};

/* A backlog being delivered to one session of an account.  While it
 * exists, either exactly one store query of it is in flight, and it is
 * finished only from that query's callback, or it is paused (no query)
 * until its session drains or ends. */
struct delivery {
	char *bare;
	char *username;
	uint64_t active;        /* the session receiving the backlog */
	int paused;             /* waits for session-drained */
	char last_id[24];       /* when paused: the last row written */
	uint64_t *waiting;      /* other sessions that sent initial presence */
	size_t nwaiting;
	size_t capwaiting;
	struct held *head;      /* messages held meanwhile, in arrival order */
	struct held *tail;
	size_t nheld;
};

/* A message being stored: owns the hold and the text to store. */
struct store_req {
	struct offline *o;
	struct pgn_hold *hold;
	char *username;
	char *text;
	size_t len;             /* strlen(text) */
	char now[24];
	struct store_req *next;
};

/* A group-committed batch: owns its requests. */
struct store_batch {
	struct offline *o;
	struct store_req *head;
};

/* A backlog read: names the delivery by bare JID, never by pointer. */
struct fetch_req {
	struct offline *o;
	char bare[];
};

/* ---- which messages are stored ---- */

static int
str_eq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Payloads that mean nothing without the conversation being live:
 * chat states (XEP-0085), ids (XEP-0359), threads, delays, an encryption
 * marker without the encrypted payload (XEP-0380).  A message carrying
 * only these is not stored. */
static int
is_ephemeral(const struct pgn_xml *c)
{
	const char *ns = pgn_xml_ns(c), *name = pgn_xml_name(c);

	if (ns == NULL || strcmp(ns, PGN_NS_CLIENT) == 0)
		return !str_eq(name, "body") && !str_eq(name, "subject");
	return str_eq(ns, NS_CHATSTATES) || str_eq(ns, NS_SID) ||
	       str_eq(ns, NS_DELAY) || str_eq(ns, NS_EME) ||
	       str_eq(ns, "jabber:x:delay");
}

/* XEP-0160 §3 and XEP-0334 §4.  chat, normal (and any type that is not
 * groupchat, headline or error, which RFC 6121 §5.2.2 reads as normal)
 * are stored when they carry something: a body or subject, or any
 * payload that is not ephemeral (encrypted OMEMO / OpenPGP payloads,
 * receipts, chat markers, invitations...).  <no-store/> always wins;
 * <store/> stores what would not be stored otherwise (headline,
 * groupchat, chat states), never an error.  <no-permanent-store/> does
 * not keep a message from offline storage: XEP-0334 §4.1 excludes
 * archives and logs only, and its §3.4 names storage "as a normal part of
 * delivery (e.g. if the recipient is offline)" as allowed.  mod_mam still
 * archives none of it. */
static int
should_store(const struct pgn_stanza *st)
{
	int store = 0, no_store = 0, content = 0;

	if (st->kind != PGN_STANZA_MESSAGE || str_eq(st->type, "error"))
		return 0;
	for (const struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c)) {
		if (str_eq(pgn_xml_ns(c), NS_HINTS)) {
			const char *name = pgn_xml_name(c);
			if (str_eq(name, "store"))
				store = 1;
			else if (str_eq(name, "no-store"))
				no_store = 1;
			continue;
		}
		if (!is_ephemeral(c))
			content = 1;
	}
	if (no_store)
		return 0;
	if (store)
		return 1;
	if (str_eq(st->type, "groupchat") || str_eq(st->type, "headline"))
		return 0;
	return content;
}

/* ---- storing ---- */

/* XEP-0203 §3: "CCYY-MM-DDThh:mm:ssZ". */
static int
format_stamp(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return -EINVAL;
	return 0;
}

static int
has_our_delay(const struct pgn_xml *xml, const char *host)
{
	for (const struct pgn_xml *c = pgn_xml_first_child(xml); c != NULL;
	     c = pgn_xml_next(c))
		if (str_eq(pgn_xml_ns(c), NS_DELAY) &&
		    str_eq(pgn_xml_name(c), "delay") &&
		    str_eq(pgn_xml_attr(c, "from"), host))
			return 1;
	return 0;
}

/* The text to store: the stanza with our <delay/> (added for the
 * serialisation only, so that a bounce carries the message as sent).
 * Returns a malloc'd string the caller frees, or NULL. */
static char *
serialise_with_delay(const struct offline *o, struct pgn_xml *xml, time_t now)
{
	static const char reason[] = "Offline Storage";
	struct pgn_xml *d = NULL;
	char stamp[32];
	char *text;

	if (!has_our_delay(xml, o->host)) {
		if (format_stamp(now, stamp, sizeof(stamp)) != 0 ||
		    (d = pgn_xml_add_child(xml, NS_DELAY, "delay")) == NULL)
			return NULL;
		if (pgn_xml_set_attr(d, "from", o->host) != 0 ||
		    pgn_xml_set_attr(d, "stamp", stamp) != 0 ||
		    pgn_xml_add_text(d, reason, sizeof(reason) - 1) != 0) {
			pgn_xml_unlink(d);
			pgn_xml_free(d);
			return NULL;
		}
	}
	text = pgn_xml_to_string(xml, PGN_NS_CLIENT);
	if (d != NULL) {
		pgn_xml_unlink(d);
		pgn_xml_free(d);
	}
	return text;
}

static void
store_req_free(struct store_req *r)
{
	if (r == NULL)
		return;
	free(r->text);
	free(r->username);
	free(r);
}

/* The message is durable: the held copy is no longer needed.  Takes r. */
static void
store_req_stored(struct store_req *r)
{
	pgn_stanza_free(pgn_hold_take(r->hold));
	pgn_log(PGN_LOG_DEBUG, "offline %s: stored a message for %s",
		r->o->host, r->username);
	store_req_free(r);
}

/* Takes r. */
static void
store_req_fail(struct store_req *r)
{
	pgn_hold_bounce(r->hold, "wait", "internal-server-error", NULL);
	store_req_free(r);
}

static void store_flush(struct offline *o, int singles);

/* A write finished: the messages that queued meanwhile go next. */
static void
write_done(struct offline *o)
{
	if (--o->inflight == 0)
		store_flush(o, 0);
}

static void
account_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct store_req *r = arg;
	struct offline *o = r->o;
	const char *n;

	(void)owner;
	if (res->error != 0) {
		pgn_log(STORE_FAIL_LEVEL(res), "offline %s: account lookup of "
			"%s failed: %s", o->host, r->username, res->errmsg);
		pgn_hold_bounce(r->hold, "wait", "internal-server-error", NULL);
	} else if ((n = pgn_store_value(res, 0, 0)) == NULL ||
		   strcmp(n, "0") == 0) {
		/* No such account: the router's own rules answer. */
		pgn_hold_resume(r->hold);
	} else {
		pgn_log(PGN_LOG_INFO, "offline %s: quota of %s reached for "
			"%s", o->host, o->quota, r->username);
		pgn_hold_bounce(r->hold, "wait", "resource-constraint",
				"The recipient's offline storage is full");
	}
	store_req_free(r);
	write_done(o);
}

/* A write of r came back: stored, failed, or refused by the database
 * (refused: the quota is reached or there is no such account; rare, so a
 * second query tells which, and the write goes on until it answers). */
static void
write_answered(struct store_req *r, const struct pgn_store_result *res,
	       int refused)
{
	struct offline *o = r->o;
	const char *params[2] = { o->host, r->username };

	if (refused) {
		if (pgn_store_query(pgn_server_store(o->srv), sql_account, 2,
				    params, 0, account_done, r) == 0)
			return;
		store_req_fail(r);
	} else if (res->error != 0) {
		pgn_log(STORE_FAIL_LEVEL(res), "offline %s: storing a message "
			"for %s failed: %s", o->host, r->username, res->errmsg);
		store_req_fail(r);
	} else {
		store_req_stored(r);
	}
	write_done(o);
}

/* The insert writes nothing when it is refused. */
static void
insert_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	(void)owner;
	write_answered(arg, res, res->error == 0 && res->changes == 0);
}

/* The strict statement fails when it is refused; -EAGAIN is the store
 * failing, not a refusal. */
static void
strict_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	(void)owner;
	write_answered(arg, res, res->error != 0 && res->error != -EAGAIN);
}

/* Writes r with the statements that go with it (its archive rows, see
 * pgn_stanza_write), all or nothing.  Takes r. */
static void
store_with_writes(struct offline *o, struct store_req *r)
{
	const struct pgn_stanza_write *w;
	const char *params[5] = { o->host, r->username, r->now, r->text,
				  o->quota };
	const char **sqls = NULL;
	const char *const **pp = NULL;
	int *np = NULL, n = 1, i = 0;

	for (w = pgn_hold_stanza(r->hold)->writes; w != NULL; w = w->next)
		n++;
	if ((sqls = calloc((size_t)n, sizeof(*sqls))) == NULL ||
	    (pp = calloc((size_t)n, sizeof(*pp))) == NULL ||
	    (np = calloc((size_t)n, sizeof(*np))) == NULL)
		goto fail;
	sqls[i] = sql_insert_strict;
	np[i] = 5;
	pp[i++] = params;
	for (w = pgn_hold_stanza(r->hold)->writes; w != NULL; w = w->next) {
		sqls[i] = w->sql;
		np[i] = w->nparams;
		pp[i++] = (const char *const *)w->params;
	}
	if (pgn_store_txn(pgn_server_store(o->srv), n, sqls, np, pp, 0,
			  strict_done, r) != 0)
		goto fail;
	o->inflight++;
	free(sqls);
	free(pp);
	free(np);
	return;
fail:
	free(sqls);
	free(pp);
	free(np);
	pgn_log(PGN_LOG_WARN, "offline %s: cannot queue a store transaction",
		o->host);
	store_req_fail(r);
}

/* Writes r alone (the statement that tells why nothing was inserted).
 * Takes r. */
static void
store_single(struct offline *o, struct store_req *r)
{
	const char *params[5] = { o->host, r->username, r->now, r->text,
				  o->quota };

	if (pgn_hold_stanza(r->hold)->writes != NULL) {
		store_with_writes(o, r);
		return;
	}
	if (pgn_store_query(pgn_server_store(o->srv), sql_insert, 5, params, 0,
			    insert_done, r) != 0) {
		pgn_log(PGN_LOG_WARN, "offline %s: cannot queue a store query",
			o->host);
		store_req_fail(r);
		return;
	}
	o->inflight++;
}

static void
batch_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct store_batch *b = arg;
	struct offline *o = b->o;
	struct store_req *r = b->head, *next;

	(void)owner;
	free(b);
	if (res->error == 0) {
		for (; r != NULL; r = next) {
			next = r->next;
			store_req_stored(r);
		}
	} else if (res->error == -EAGAIN) {
		/* The store was unavailable for longer than it holds
		 * requests: one by one would only fail again. */
		pgn_log(STORE_FAIL_LEVEL(res), "offline %s: storing messages "
			"failed: %s", o->host, res->errmsg);
		for (; r != NULL; r = next) {
			next = r->next;
			store_req_fail(r);
		}
	} else {
		/* Rolled back: a full quota, an unknown account or a
		 * storage error.  One by one, each gets its own answer. */
		pgn_log(PGN_LOG_DEBUG, "offline %s: batch refused (%s), "
			"writing its messages one by one", o->host,
			res->errmsg);
		for (; r != NULL; r = next) {
			next = r->next;
			store_single(o, r);
		}
	}
	write_done(o);
}

/* Writes up to STORE_BATCH queued messages in one transaction, each
 * with the statements that go with it (or each alone with singles, or
 * when there is only one). */
static void
store_flush(struct offline *o, int singles)
{
	const char *params[STORE_BATCH][5];
	const char **sqls = NULL;
	const char *const **pp = NULL;
	int *nparams = NULL;
	const struct pgn_stanza_write *w;
	struct store_batch *b = NULL;
	struct store_req *r;
	int n = 0, k = 0, total = 0;

	if (o->qhead == NULL)
		return;
	for (r = o->qhead; r != NULL && n < STORE_BATCH; r = r->next, n++) {
		total++;
		for (w = pgn_hold_stanza(r->hold)->writes; w != NULL;
		     w = w->next)
			total++;
	}
	if (singles || o->qhead->next == NULL ||
	    (b = calloc(1, sizeof(*b))) == NULL ||
	    (sqls = calloc((size_t)total, sizeof(*sqls))) == NULL ||
	    (pp = calloc((size_t)total, sizeof(*pp))) == NULL ||
	    (nparams = calloc((size_t)total, sizeof(*nparams))) == NULL) {
		free(b);
		free(sqls);
		free(pp);
		free(nparams);
		while ((r = o->qhead) != NULL) {
			o->qhead = r->next;
			r->next = NULL;
			o->queued--;
			o->queued_bytes -= r->len;
			store_single(o, r);
		}
		o->qtail = NULL;
		return;
	}
	b->o = o;
	b->head = o->qhead;
	n = 0;
	for (r = o->qhead; r != NULL && n < STORE_BATCH; r = r->next, n++) {
		o->queued_bytes -= r->len;
		sqls[k] = sql_insert_strict;
		nparams[k] = 5;
		params[n][0] = o->host;
		params[n][1] = r->username;
		params[n][2] = r->now;
		params[n][3] = r->text;
		params[n][4] = o->quota;
		pp[k++] = params[n];
		for (w = pgn_hold_stanza(r->hold)->writes; w != NULL;
		     w = w->next) {
			sqls[k] = w->sql;
			nparams[k] = w->nparams;
			pp[k++] = (const char *const *)w->params;
		}
		if (n == STORE_BATCH - 1 || r->next == NULL)
			break;
	}
	n++;
	/* Cut the batch off the queue. */
	o->qhead = r->next;
	if (o->qhead == NULL)
		o->qtail = NULL;
	r->next = NULL;
	o->queued -= (size_t)n;
	if (pgn_store_txn(pgn_server_store(o->srv), k, sqls, nparams, pp, 0,
			  batch_done, b) != 0) {
		pgn_log(PGN_LOG_WARN, "offline %s: cannot queue a store "
			"transaction", o->host);
		for (r = b->head; r != NULL; r = b->head) {
			b->head = r->next;
			store_req_fail(r);
		}
		free(b);
	} else {
		o->inflight++;
	}
	free(sqls);
	free(pp);
	free(nparams);
}

static int
on_offline(struct pgn_event *ev, void *arg)
{
	struct offline *o = arg;
	struct pgn_stanza *st = ev->stanza;
	struct store_req *r = NULL;
	time_t now = time(NULL);

	if (st == NULL || st->to == NULL || st->to->node == NULL ||
	    !should_store(st))
		return PGN_EVENT_PASS;
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (r->username = strdup(st->to->node)) == NULL ||
	    (r->text = serialise_with_delay(o, st->xml, now)) == NULL)
		goto fail;
	r->o = o;
	r->len = strlen(r->text);
	snprintf(r->now, sizeof(r->now), "%lld", (long long)now);
	/* Not held (allocation failure): let the router bounce it. */
	if ((r->hold = pgn_event_hold(ev)) == NULL)
		goto fail;
	if (o->inflight == 0) {
		store_single(o, r);
		return PGN_EVENT_HANDLED;
	}
	if (o->queued >= MAX_QUEUED ||
	    o->queued_bytes >= MAX_QUEUED_BYTES) {
		pgn_log(PGN_LOG_WARN, "offline %s: %zu messages (%zu bytes) "
			"waiting for the store, refusing more", o->host,
			o->queued, o->queued_bytes);
		pgn_hold_bounce(r->hold, "wait", "resource-constraint",
				"Offline storage is busy, try again later");
		store_req_free(r);
		return PGN_EVENT_HANDLED;
	}
	if (o->qtail != NULL)
		o->qtail->next = r;
	else
		o->qhead = r;
	o->qtail = r;
	o->queued++;
	o->queued_bytes += r->len;
	return PGN_EVENT_HANDLED;
fail:
	pgn_log(PGN_LOG_ERROR, "offline %s: out of memory storing a message",
		o->host);
	store_req_free(r);
	return PGN_EVENT_PASS;
}

/* ---- delivering ---- */

static void
delivery_free(struct delivery *d)
{
	if (d == NULL)
		return;
	/* Only reached with messages still held at unload, when nothing
	 * can be routed any more. */
	while (d->head != NULL) {
		struct held *n = d->head->next;
		pgn_stanza_free(pgn_hold_take(d->head->hold));
		free(d->head);
		d->head = n;
	}
	free(d->waiting);
	free(d->username);
	free(d->bare);
	free(d);
}

/* delivery_free for pgn_map_free_values. */
static void
free_delivery_value(void *value)
{
	delivery_free(value);
}

/* The session id still bound to bare and available, or NULL: a session
 * that went unavailable or ended keeps its messages in the store. */
static struct pgn_session *
live_session(const struct offline *o, uint64_t id, const char *bare)
{
	for (struct pgn_session *s = pgn_user_sessions(o->srv, bare);
	     s != NULL; s = pgn_session_next(s))
		if (pgn_session_id(s) == id)
			return pgn_session_available(s) ? s : NULL;
	return NULL;
}

static void fetch_done(uint64_t owner, void *arg,
		       const struct pgn_store_result *res);

/* Queues the read of the rows after last_id for d->active.  0 or a
 * negative error (then nothing is in flight). */
static int
fetch_next(struct offline *o, struct delivery *d, const char *last_id)
{
	size_t n = strlen(d->bare) + 1;
	struct fetch_req *r = malloc(sizeof(*r) + n);
	const char *params[3] = { o->host, d->username, last_id };
	int rc;

	if (r == NULL)
		return -ENOMEM;
	r->o = o;
	memcpy(r->bare, d->bare, n);
	rc = pgn_store_query(pgn_server_store(o->srv), sql_fetch, 3, params,
			     d->active, fetch_done, r);
	if (rc != 0)
		free(r);
	return rc;
}

/* The backlog of d->active is over (delivered, or the session is gone).
 * Moves on to the next waiting session or, when none is left, routes
 * the held messages in order and forgets d. */
static void
delivery_finish(struct offline *o, struct delivery *d)
{
	struct held *h;

	while (d->nwaiting > 0) {
		d->active = d->waiting[0];
		memmove(d->waiting, d->waiting + 1,
			--d->nwaiting * sizeof(*d->waiting));
		if (live_session(o, d->active, d->bare) == NULL)
			continue;
		store_flush(o, 1);
		if (fetch_next(o, d, "0") == 0)
			return;
	}
	pgn_map_del(o->users, d->bare);
	h = d->head;
	d->head = d->tail = NULL;
	delivery_free(d);
	/* Routing may store (message/offline) or start another delivery
	 * of this account: d is gone by now. */
	while (h != NULL) {
		struct held *n = h->next;
		pgn_hold_resume(h->hold);
		free(h);
		h = n;
	}
}

/* The rows (ids) are in the client's hands: delete them.  Today that is
 * right after the write to the socket; with stream management (issue 4)
 * this is called when the client acks them. */
static void
offline_delivered(struct offline *o, const char *username,
		  char *const *ids, int n)
{
	/* "$3, ..., $102": at most BATCH_ROWS * 24 bytes. */
	char sql[sizeof(sql_delete_head) + BATCH_ROWS * 24 + 2];
	const char *params[2 + BATCH_ROWS];
	size_t len;

	if (n <= 0 || n > BATCH_ROWS)
		return;
	len = (size_t)snprintf(sql, sizeof(sql), "%s", sql_delete_head);
	params[0] = o->host;
	params[1] = username;
	for (int i = 0; i < n; i++) {
		len += (size_t)snprintf(sql + len, sizeof(sql) - len,
					"%sCAST($%d AS BIGINT)",
					i > 0 ? ", " : "", i + 3);
		params[2 + i] = ids[i];
	}
	snprintf(sql + len, sizeof(sql) - len, ")");
	/* Without a callback the store logs a failure; the rows then stay
	 * and are delivered again at the next login (at least once). */
	if (pgn_store_query(pgn_server_store(o->srv), sql, 2 + n, params, 0,
			    NULL, NULL) != 0)
		pgn_log(PGN_LOG_WARN, "offline %s: cannot queue the deletion "
			"of %d delivered messages of %s", o->host, n,
			username);
}

/* Writes the rows of res to s in order, until BATCH_BYTES.  Fills ids
 * with the rows written (borrowed from res) and returns their number, or
 * -ENOMEM before anything was written.  A row that does not parse into
 * one stanza is counted as written (and logged): it would block the
 * backlog forever. */
static int
send_rows(struct pgn_session *s, const struct pgn_store_result *res,
	  char **ids)
{
	size_t bytes = 0;
	int n = 0;

	for (int i = 0; i < res->nrows && i < BATCH_ROWS; i++) {
		const char *id = pgn_store_value(res, i, 0);
		const char *text = pgn_store_value(res, i, 1);
		size_t len = text != NULL ? strlen(text) : 0;
		struct pgn_xml *box, *el;
		int rc;

		if (id == NULL)
			continue;
		if (i > 0 && bytes >= BATCH_BYTES)
			break;
		if ((box = pgn_xml_new(PGN_NS_CLIENT, "stored")) == NULL)
			return n > 0 ? n : -ENOMEM;
		rc = pgn_xml_parse_into(box, text != NULL ? text : "", len);
		if (rc == -ENOMEM) {
			pgn_xml_free(box);
			return n > 0 ? n : -ENOMEM;
		}
		el = pgn_xml_first_child(box);
		if (rc == 0 && el != NULL && pgn_xml_next(el) == NULL) {
			if (pgn_session_send(s, el) != 0) {
				/* Closing: this one and the rest stay
				 * stored for the next login. */
				pgn_xml_free(box);
				break;
			}
		} else
			pgn_log(PGN_LOG_WARN, "offline: dropping unparsable "
				"stored message %s", id);
		pgn_xml_free(box);
		bytes += len;
		ids[n++] = (char *)id;
	}
	return n;
}

static void
fetch_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct fetch_req *r = arg;
	struct offline *o = r->o;
	struct delivery *d = pgn_map_get(o->users, r->bare);
	struct pgn_session *s;
	char *ids[BATCH_ROWS];
	int n;

	free(r);
	if (d == NULL || d->active != owner)
		return; /* cannot happen: one query in flight per delivery */
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "offline %s: reading the messages of %s "
			"failed: %s", o->host, d->bare, res->errmsg);
		delivery_finish(o, d);
		return;
	}
	if ((s = live_session(o, owner, d->bare)) == NULL ||
	    res->nrows == 0) {
		delivery_finish(o, d);
		return;
	}
	if ((n = send_rows(s, res, ids)) <= 0) {
		delivery_finish(o, d);
		return;
	}
	pgn_log(PGN_LOG_DEBUG, "session %" PRIu64 ": %d offline messages "
		"delivered", owner, n);
	offline_delivered(o, d->username, ids, n);
	/* A full batch, or one cut at BATCH_BYTES: there may be more. */
	if (res->nrows < BATCH_ROWS && n == res->nrows) {
		delivery_finish(o, d);
		return;
	}
	if (pgn_session_congested(s) &&
	    strlen(ids[n - 1]) < sizeof(d->last_id)) {
		/* The client has enough to read (or to acknowledge) for
		 * now: go on from on_drained. */
		snprintf(d->last_id, sizeof(d->last_id), "%s", ids[n - 1]);
		d->paused = 1;
		return;
	}
	if (fetch_next(o, d, ids[n - 1]) != 0)
		delivery_finish(o, d);
}

/* The paused delivery of the session of ev, if any. */
static struct delivery *
paused_delivery(struct offline *o, struct pgn_event *ev)
{
	const struct pgn_jid *jid =
		ev->origin != NULL ? pgn_session_jid(ev->origin) : NULL;
	struct delivery *d;

	if (jid == NULL ||
	    (d = pgn_map_get(o->users, jid->bare)) == NULL || !d->paused ||
	    d->active != pgn_session_id(ev->origin))
		return NULL;
	d->paused = 0;
	return d;
}

static int
on_drained(struct pgn_event *ev, void *arg)
{
	struct offline *o = arg;
	struct delivery *d = paused_delivery(o, ev);

	if (d != NULL && fetch_next(o, d, d->last_id) != 0)
		delivery_finish(o, d);
	return PGN_EVENT_PASS;
}

/* A session that ends while its delivery waits: the rest stays stored;
 * the next waiting session (or the held messages) goes on. */
static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct offline *o = arg;
	struct delivery *d = paused_delivery(o, ev);

	if (d != NULL)
		delivery_finish(o, d);
	return PGN_EVENT_PASS;
}

static int
on_initial_presence(struct pgn_event *ev, void *arg)
{
	struct offline *o = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *jid = s != NULL ? pgn_session_jid(s) : NULL;
	struct delivery *d;
	uint64_t id;

	if (jid == NULL || jid->node == NULL)
		return PGN_EVENT_PASS;
	id = pgn_session_id(s);
	if ((d = pgn_map_get(o->users, jid->bare)) != NULL) {
		/* One backlog reader per account at a time: this session
		 * gets what is left once the current one is done. */
		if (d->nwaiting == d->capwaiting) {
			size_t cap = d->capwaiting ? d->capwaiting * 2 : 4;
			uint64_t *w = realloc(d->waiting, cap * sizeof(*w));
			if (w == NULL)
				goto nomem;
			d->waiting = w;
			d->capwaiting = cap;
		}
		d->waiting[d->nwaiting++] = id;
		return PGN_EVENT_PASS;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL ||
	    (d->bare = strdup(jid->bare)) == NULL ||
	    (d->username = strdup(jid->node)) == NULL ||
	    pgn_map_set(o->users, d->bare, d) != 0) {
		delivery_free(d);
		goto nomem;
	}
	d->active = id;
	/* Messages still waiting for a write go to the store first, alone,
	 * so that the read below (the store answers in order) sees all of
	 * them. */
	store_flush(o, 1);
	if (fetch_next(o, d, "0") != 0) {
		pgn_log(PGN_LOG_WARN, "offline %s: cannot queue the read of "
			"the messages of %s", o->host, d->bare);
		pgn_map_del(o->users, d->bare);
		delivery_free(d);
	}
	return PGN_EVENT_PASS;
nomem:
	pgn_log(PGN_LOG_ERROR, "session %" PRIu64 ": out of memory for "
		"offline delivery", id);
	return PGN_EVENT_PASS;
}

/* While a backlog is delivered, new messages for that account wait for
 * it (the router runs this after the filters, just before delivering). */
static int
on_message_to_user(struct pgn_event *ev, void *arg)
{
	struct offline *o = arg;
	struct pgn_stanza *st = ev->stanza;
	struct delivery *d;
	struct held *h;

	if (st == NULL || st->to == NULL ||
	    (d = pgn_map_get(o->users, st->to->bare)) == NULL ||
	    d->nheld >= MAX_HELD || (h = calloc(1, sizeof(*h))) == NULL)
		return PGN_EVENT_PASS;
	if ((h->hold = pgn_event_hold(ev)) == NULL) {
		free(h);
		return PGN_EVENT_PASS;
	}
	if (d->tail != NULL)
		d->tail->next = h;
	else
		d->head = h;
	d->tail = h;
	d->nheld++;
	return PGN_EVENT_HANDLED;
}

/* ---- pigeonctl delete_old_messages DAYS ---- */

static void
delete_old_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct pgn_command *cmd = arg;
	char text[32];

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "offline: delete_old_messages failed: %s",
			res->errmsg);
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error");
		return;
	}
	snprintf(text, sizeof(text), "%lld\n", (long long)res->changes);
	pgn_command_reply(cmd, PGN_CTL_OK, text);
}

static void
cmd_delete_old(struct pgn_command *cmd, int argc, char *const *argv,
	       void *arg)
{
	struct offline *o = arg;
	const char *days_s = argc == 1 ? argv[0] : "";
	size_t len = strlen(days_s);
	long long days = 0, cutoff;
	char cutoff_s[24];
	const char *params[1] = { cutoff_s };

	if (len == 0 || len > MAX_DAYS_DIGITS ||
	    strspn(days_s, "0123456789") != len) {
		pgn_command_reply(cmd, PGN_CTL_USAGE,
				  "usage: delete_old_messages DAYS (an integer "
				  ">= 0)");
		return;
	}
	for (size_t i = 0; i < len; i++)
		days = days * 10 + (days_s[i] - '0');
	/* Inclusive, so that 0 deletes everything stored until now. */
	cutoff = (long long)time(NULL) - days * 86400;
	snprintf(cutoff_s, sizeof(cutoff_s), "%lld", cutoff);
	if (pgn_store_query(pgn_server_store(o->srv), sql_delete_old, 1,
			    params, 0, delete_old_done, cmd) != 0)
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error");
}

/* ---- module ---- */

static void
offline_unload(struct pgn_module *m)
{
	struct offline *o = pgn_module_data(m);

	if (o == NULL)
		return;
	/* The store has drained (every delivery finished) before modules
	 * are unloaded; anything left is freed without routing. */
	pgn_map_free_values(o->users, free_delivery_value);
	while (o->qhead != NULL) {
		struct store_req *r = o->qhead;
		o->qhead = r->next;
		pgn_stanza_free(pgn_hold_take(r->hold));
		store_req_free(r);
	}
	free(o);
	pgn_module_set_data(m, NULL);
}

static int
offline_load(struct pgn_module *m)
{
	struct offline *o;
	int rc;

	if ((o = calloc(1, sizeof(*o))) == NULL)
		return -ENOMEM;
	if ((o->users = pgn_map_new()) == NULL) {
		free(o);
		return -ENOMEM;
	}
	o->m = m;
	o->srv = pgn_module_server(m);
	o->host = pgn_host_name(pgn_module_host(m));
	snprintf(o->quota, sizeof(o->quota), "%ld",
		 pgn_module_opt_int(m, "quota"));
	pgn_module_set_data(m, o);

	if ((rc = pgn_module_add_feature(m, "msgoffline")) < 0) {
		/* A failed load is not unloaded by the core. */
		offline_unload(m);
		return rc;
	}
	return 0;
}

static const struct pgn_module_hook_def offline_hooks[] = {
	{ "message/offline", on_offline, PGN_PRIO_HANDLER },
	{ "initial-presence", on_initial_presence, PGN_PRIO_HANDLER },
	/* Holding for an ongoing backlog runs after the filters and the
	 * handlers, right before the built-in delivery. */
	{ "message/bare", on_message_to_user, PGN_PRIO_DELIVERY },
	{ "message/full", on_message_to_user, PGN_PRIO_DELIVERY },
	{ "session-drained", on_drained, PGN_PRIO_HANDLER },
	{ "session-ended", on_session_ended, PGN_PRIO_HANDLER },
	{ NULL, NULL, 0 },
};

static const struct pgn_module_opt offline_options[] = {
	{ .name = "quota", .type = PGN_OPT_INT, .def = "1000", .min = 1,
	  .max = MAX_QUOTA, .doc = "messages stored per account" },
	{ .name = NULL },
};

static const struct pgn_module_cmd offline_commands[] = {
	{ "delete_old_messages", 1, "DAYS",
	  "delete offline messages older than DAYS days", cmd_delete_old, 0 },
	{ NULL, 0, NULL, NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_offline",
	.description = "Offline messages (XEP-0160)",
	.options = offline_options,
	.hooks = offline_hooks,
	.commands = offline_commands,
	.load = offline_load,
	.unload = offline_unload,
};
