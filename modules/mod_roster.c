/* Roster and presence (RFC 6121).
 *
 * Rosters live in a per-user cache (bare JID -> struct roster) loaded from
 * the store when the first session of the user starts (the session is
 * held until then), when a subscription stanza arrives for a user who is
 * offline (the stanza is held), or for a pigeonctl command.  The cache is
 * the truth while it exists: every change is applied in memory, written
 * through to the store (one FIFO connection, so a later load sees every
 * earlier write) and pushed to the interested resources.  The cache is
 * freed when no live session uses it and nothing waits for it.
 *
 * Versioning (§2.6): a per-user counter; each item keeps the version of
 * its last change and removed items leave a tombstone with the version of
 * their removal, so a client that knows version N gets an empty result and
 * pushes of the items changed after N.  Tombstones are bounded: the oldest
 * are pruned and min_ver remembers that versions at or below it must get
 * the whole roster.
 *
 * Subscription state (§3, Appendix A): subscription none/to/from/both, ask
 * (Pending Out) and approved (pre-approval) are columns of the item;
 * Pending In is a row of roster_pending (status, nick), kept until the
 * user answers and delivered again at every login.
 *
 * Presence (§4): the user's own presence (<presence/> without 'to',
 * "pre-presence/self") is broadcast to the contacts with from/both, to the
 * user's available resources, and recorded on the session; the first one
 * also probes the contacts with to/both.  Directed presence is
 * remembered per session, and whoever saw the session available gets
 * unavailable when it ends.  Presence to contacts goes through
 * pgn_route_from() so that outbound filters (blocking) apply; a depth
 * counter keeps our own "pre-presence" hooks out of those. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/ctl.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/roster.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_ROSTER "jabber:iq:roster"
#define NS_ROSTERVER "urn:xmpp:features:rosterver"
#define NS_PREAPPROVAL "urn:xmpp:features:pre-approval"
#define NS_NICK "http://jabber.org/protocol/nick"

#define DEFAULT_MAX_ITEMS 1000
#define MAX_MAX_ITEMS 1000000
#define MAX_NAME_BYTES 1023    /* 'name' of an item */
#define MAX_GROUP_BYTES 1023   /* one <group/> */
#define MAX_GROUPS 64          /* groups of one item */
#define MAX_STATUS_BYTES 1024  /* status/nick kept with a pending request */
#define MAX_REQUEST_BYTES 4096 /* a pending request kept whole (serialised) */
#define MAX_DIRECTED 256       /* directed presence targets per session */

enum sub { SUB_NONE = 0, SUB_TO, SUB_FROM, SUB_BOTH };

static const char *const sub_names[] = { "none", "to", "from", "both" };

struct item {
	char *jid; /* contact bare JID (prepared) */
	char *name;
	char **groups;
	size_t ngroups;
	enum sub sub;
	int ask;      /* Pending Out */
	int approved; /* pre-approved (§3.4) */
	int64_t ver;
};

struct tombstone {
	int64_t ver;
};

/* An inbound request not answered yet (Pending In).  stanza is the
 * whole request serialised without to/from (§3.1.3: delivered as it
 * came, extensions included); NULL for one too large or stored before
 * the column existed, which is rebuilt from status and nick. */
struct pending {
	char *status;
	char *nick;
	char *stanza;
};

struct roster;

/* Something waiting for a roster to be loaded. */
struct waiter {
	void (*fn)(struct roster *r, void *arg);
	void *arg;
	struct waiter *next;
};

struct rmod;

struct roster {
	struct rmod *rm;
	char *bare;
	char *user;
	char *host;
	struct pgn_map *items;   /* jid -> struct item */
	struct pgn_map *removed; /* jid -> struct tombstone */
	struct pgn_map *pending; /* jid -> struct pending */
	int64_t ver;
	int64_t min_ver;
	int exists;   /* the account exists */
	int loading;  /* queries outstanding */
	int busy;     /* running its waiters: must not be freed */
	int loaded;
	int failed;   /* load failed: the roster is not usable */
	int steps;    /* load queries answered */
	uint64_t *sids; /* sessions using the cache */
	size_t nsids, cap;
	struct waiter *waiters, **wtail;
};

struct rmod {
	struct pgn_module *m;
	struct pgn_server *srv;
	struct pgn_map *users; /* bare -> struct roster */
	struct pgn_map *removals; /* bare -> struct removal (being deleted) */
	int max_items;
	int routing;       /* > 0 while we route presence on a user's behalf */
	uint64_t push_seq; /* ids of roster pushes */
};

/* Per-session state. */
struct sstate {
	int interested; /* requested the roster (§2.1.6) */
	int available;  /* broadcast available presence (our view) */
	struct pgn_map *directed; /* full JID -> (void *)1 */
	/* The bound JID: pgn_session_jid() is NULL once the stream is
	 * closing, and "session-ended" still needs it. */
	struct pgn_jid *jid;
};

/* ---- small helpers ------------------------------------------------------ */

static int
type_is(const struct pgn_stanza *st, const char *t)
{
	return st->type != NULL && strcmp(st->type, t) == 0;
}

static char *
xstrdup(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static void
item_free(struct item *it)
{
	if (it == NULL)
		return;
	free(it->jid);
	free(it->name);
	for (size_t i = 0; i < it->ngroups; i++)
		free(it->groups[i]);
	free(it->groups);
	free(it);
}

static void
pending_free(struct pending *p)
{
	if (p == NULL)
		return;
	free(p->status);
	free(p->nick);
	free(p->stanza);
	free(p);
}

static int
free_item_cb(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key, (void)id, (void)arg;
	item_free(value);
	return 0;
}

static int
free_plain_cb(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key, (void)id, (void)arg;
	free(value);
	return 0;
}

static int
free_pending_cb(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key, (void)id, (void)arg;
	pending_free(value);
	return 0;
}

static void
sstate_free(void *p)
{
	struct sstate *ss = p;
	if (ss == NULL)
		return;
	pgn_map_free(ss->directed);
	pgn_jid_free(ss->jid);
	free(ss);
}

static struct sstate *
sstate_of(struct rmod *rm, struct pgn_session *s)
{
	return s != NULL ? pgn_session_get_data(s, rm->m) : NULL;
}

/* The full JID of s, also while it is closing (see struct sstate). */
static const struct pgn_jid *
session_jid(struct rmod *rm, struct pgn_session *s)
{
	const struct pgn_jid *j = pgn_session_jid(s);
	struct sstate *ss;
	if (j == NULL && (ss = sstate_of(rm, s)) != NULL)
		j = ss->jid;
	return j;
}

/* Groups are stored newline separated; names never hold control
 * characters (refused on input). */
static char *
groups_join(const struct item *it)
{
	size_t len = 1;
	char *out, *p;
	for (size_t i = 0; i < it->ngroups; i++)
		len += strlen(it->groups[i]) + 1;
	if ((out = malloc(len)) == NULL)
		return NULL;
	p = out;
	for (size_t i = 0; i < it->ngroups; i++) {
		size_t n = strlen(it->groups[i]);
		if (i > 0)
			*p++ = '\n';
		memcpy(p, it->groups[i], n);
		p += n;
	}
	*p = '\0';
	return out;
}

static int
groups_split(struct item *it, const char *s)
{
	const char *p = s;
	if (s == NULL || *s == '\0')
		return 0;
	while (p != NULL && it->ngroups < MAX_GROUPS) {
		const char *nl = strchr(p, '\n');
		size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
		char **g = realloc(it->groups,
				   (it->ngroups + 1) * sizeof(*it->groups));
		if (g == NULL)
			return -ENOMEM;
		it->groups = g;
		if ((g[it->ngroups] = strndup(p, n)) == NULL)
			return -ENOMEM;
		it->ngroups++;
		p = nl != NULL ? nl + 1 : NULL;
	}
	return 0;
}

static int
parse_sub(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (s != NULL && strcmp(s, sub_names[i]) == 0)
			return i;
	return -1;
}

static int
has_from(enum sub s)
{
	return s == SUB_FROM || s == SUB_BOTH;
}

static int
has_to(enum sub s)
{
	return s == SUB_TO || s == SUB_BOTH;
}

/* ---- the cache ---------------------------------------------------------- */

static struct roster *
roster_new(struct rmod *rm, const char *bare)
{
	struct roster *r = calloc(1, sizeof(*r));
	const char *at = strchr(bare, '@');
	if (r == NULL || at == NULL)
		goto fail;
	r->rm = rm;
	r->wtail = &r->waiters;
	if ((r->bare = strdup(bare)) == NULL ||
	    (r->user = strndup(bare, (size_t)(at - bare))) == NULL ||
	    (r->host = strdup(at + 1)) == NULL ||
	    (r->items = pgn_map_new()) == NULL ||
	    (r->removed = pgn_map_new()) == NULL ||
	    (r->pending = pgn_map_new()) == NULL)
		goto fail;
	if (pgn_map_set(rm->users, bare, r) != 0)
		goto fail;
	return r;
fail:
	if (r != NULL) {
		free(r->bare);
		free(r->user);
		free(r->host);
		pgn_map_free(r->items);
		pgn_map_free(r->removed);
		pgn_map_free(r->pending);
		free(r);
	}
	return NULL;
}

/* Frees r's contents; the caller has taken it out of rm->users. */
static void
roster_destroy(struct roster *r)
{
	struct waiter *w = r->waiters;
	while (w != NULL) {
		struct waiter *next = w->next;
		free(w);
		w = next;
	}
	pgn_map_foreach(r->items, free_item_cb, NULL);
	pgn_map_foreach(r->removed, free_plain_cb, NULL);
	pgn_map_foreach(r->pending, free_pending_cb, NULL);
	pgn_map_free(r->items);
	pgn_map_free(r->removed);
	pgn_map_free(r->pending);
	free(r->sids);
	free(r->bare);
	free(r->user);
	free(r->host);
	free(r);
}

/* Frees the cache when nobody needs it: no load outstanding, nothing
 * waiting, no live session.  Sessions that went away without a
 * "session-ended" (never expected, but cheap to tolerate) are pruned. */
static void
roster_maybe_free(struct roster *r)
{
	size_t j = 0;
	if (r->loading || r->busy || r->waiters != NULL)
		return;
	for (size_t i = 0; i < r->nsids; i++)
		if (pgn_session_find(r->rm->srv, r->sids[i]) != NULL)
			r->sids[j++] = r->sids[i];
	r->nsids = j;
	if (r->nsids > 0)
		return;
	pgn_map_del(r->rm->users, r->bare);
	roster_destroy(r);
}

static int
roster_add_sid(struct roster *r, uint64_t id)
{
	for (size_t i = 0; i < r->nsids; i++)
		if (r->sids[i] == id)
			return 0;
	if (r->nsids == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 4;
		uint64_t *n = realloc(r->sids, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		r->sids = n;
		r->cap = cap;
	}
	r->sids[r->nsids++] = id;
	return 0;
}

static void
roster_del_sid(struct roster *r, uint64_t id)
{
	for (size_t i = 0; i < r->nsids; i++)
		if (r->sids[i] == id) {
			r->sids[i] = r->sids[--r->nsids];
			return;
		}
}

static void load_start(struct roster *r);

/* Queues fn(r, arg) for when r is loaded (r must be loading or about to
 * be).  0 or -ENOMEM. */
static int
roster_wait(struct roster *r, void (*fn)(struct roster *, void *), void *arg)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->fn = fn;
	w->arg = arg;
	*r->wtail = w;
	r->wtail = &w->next;
	if (!r->loading && !r->loaded)
		load_start(r);
	return 0;
}

/* ---- loading ------------------------------------------------------------ */

#define LOAD_STEPS 4

static void
load_done(struct roster *r)
{
	struct waiter *w;
	r->loading = 0;
	r->loaded = 1;
	pgn_log(r->failed ? PGN_LOG_WARN : PGN_LOG_DEBUG,
		"mod_roster: roster of %s %s (%zu items, version %" PRId64 ")",
		r->bare, r->failed ? "failed to load" : "loaded",
		pgn_map_count(r->items), r->ver);
	/* A waiter may end a session (releasing one runs its queued
	 * stanzas): r stays until roster_maybe_free below. */
	r->busy = 1;
	while ((w = r->waiters) != NULL) {
		r->waiters = w->next;
		if (r->waiters == NULL)
			r->wtail = &r->waiters;
		w->fn(r, w->arg);
		free(w);
	}
	r->busy = 0;
	roster_maybe_free(r);
}

static void
load_step(struct roster *r, const struct pgn_store_result *res)
{
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: loading %s: %s", r->bare,
			res->errmsg);
		r->failed = 1;
	}
	if (++r->steps == LOAD_STEPS)
		load_done(r);
}

/* Column c of row i as a number; a NULL (a LEFT JOIN miss) reads as 0. */
static int64_t
value_i64(const struct pgn_store_result *res, int i, int c)
{
	const char *v = pgn_store_value(res, i, c);
	return v != NULL ? strtoll(v, NULL, 10) : 0;
}

/* Reads every row of res with row (0, or -1 with nothing of the row
 * kept).  A roster missing rows must not pass for the whole one, so the
 * first row that cannot be kept marks r failed and ends the reading. */
static void
load_rows(struct roster *r, const struct pgn_store_result *res,
	  int (*row)(struct roster *, const struct pgn_store_result *, int))
{
	for (int i = 0; res->error == 0 && i < res->nrows; i++)
		if (row(r, res, i) != 0) {
			r->failed = 1;
			break;
		}
	load_step(r, res);
}

/* A zeroed entry of size bytes, set in map under the jid of row i (column
 * 0), for the caller to fill; NULL with nothing set. */
static void *
load_entry(struct pgn_map *map, const struct pgn_store_result *res, int i,
	   size_t size)
{
	const char *jid = pgn_store_value(res, i, 0);
	void *e = jid != NULL ? calloc(1, size) : NULL;
	if (e != NULL && pgn_map_set(map, jid, e) != 0) {
		free(e);
		e = NULL;
	}
	return e;
}

static void
on_load_account(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct roster *r = arg;
	(void)owner;
	if (res->error == 0 && res->nrows > 0) {
		r->exists = 1;
		r->ver = value_i64(res, 0, 0);
		r->min_ver = value_i64(res, 0, 1);
	}
	load_step(r, res);
}

static int
load_item_row(struct roster *r, const struct pgn_store_result *res, int i)
{
	struct item *it = calloc(1, sizeof(*it));
	const char *jid = pgn_store_value(res, i, 0);
	int sub = parse_sub(pgn_store_value(res, i, 2));
	const char *ask = pgn_store_value(res, i, 3);
	const char *appr = pgn_store_value(res, i, 4);
	if (it == NULL || jid == NULL || (it->jid = strdup(jid)) == NULL ||
	    groups_split(it, pgn_store_value(res, i, 5)) != 0 ||
	    pgn_map_set(r->items, jid, it) != 0) {
		item_free(it);
		return -1;
	}
	it->name = xstrdup(pgn_store_value(res, i, 1));
	it->sub = sub < 0 ? SUB_NONE : (enum sub)sub;
	it->ask = ask != NULL && atoi(ask) != 0;
	it->approved = appr != NULL && atoi(appr) != 0;
	it->ver = value_i64(res, i, 6);
	return 0;
}

static int
load_removed_row(struct roster *r, const struct pgn_store_result *res, int i)
{
	struct tombstone *t = load_entry(r->removed, res, i, sizeof(*t));
	if (t == NULL)
		return -1;
	t->ver = value_i64(res, i, 1);
	return 0;
}

static int
load_pending_row(struct roster *r, const struct pgn_store_result *res, int i)
{
	struct pending *p = load_entry(r->pending, res, i, sizeof(*p));
	if (p == NULL)
		return -1;
	p->status = xstrdup(pgn_store_value(res, i, 1));
	p->nick = xstrdup(pgn_store_value(res, i, 2));
	p->stanza = xstrdup(pgn_store_value(res, i, 3));
	return 0;
}

static void
on_load_items(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	(void)owner;
	load_rows(arg, res, load_item_row);
}

static void
on_load_removed(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	(void)owner;
	load_rows(arg, res, load_removed_row);
}

static void
on_load_pending(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	(void)owner;
	load_rows(arg, res, load_pending_row);
}

/* Four queries on the one store connection, answered in order; r stays
 * alive while they run (roster_maybe_free checks r->loading). */
static void
load_start(struct roster *r)
{
	static const char *const sqls[LOAD_STEPS] = {
		"SELECT v.ver, v.min_ver FROM accounts a LEFT JOIN "
		"roster_version v ON v.host = a.host AND v.username = "
		"a.username WHERE a.host = $1 AND a.username = $2",
		"SELECT jid, name, subscription, ask, approved, groups, ver "
		"FROM roster WHERE host = $1 AND username = $2",
		"SELECT jid, ver FROM roster_removed WHERE host = $1 AND "
		"username = $2",
		"SELECT jid, status, nick, stanza FROM roster_pending WHERE "
		"host = $1 AND username = $2",
	};
	static const pgn_store_cb cbs[LOAD_STEPS] = {
		on_load_account, on_load_items, on_load_removed,
		on_load_pending,
	};
	const char *params[2] = { r->host, r->user };
	struct pgn_store *store = pgn_server_store(r->rm->srv);

	r->loading = 1;
	r->steps = 0;
	for (int i = 0; i < LOAD_STEPS; i++) {
		if (pgn_store_query(store, sqls[i], 2, params, 0, cbs[i], r) !=
		    0) {
			/* Count the ones that will never answer. */
			pgn_log(PGN_LOG_WARN,
				"mod_roster: cannot query the roster of %s",
				r->bare);
			r->failed = 1;
			r->steps += LOAD_STEPS - i - 1;
			if (++r->steps == LOAD_STEPS) {
				/* Nothing outstanding: finish from here; the
				 * callers tolerate a synchronous completion. */
				load_done(r);
			}
			return;
		}
	}
}

/* The cache of bare, created (and its load started) if absent. */
static struct roster *
roster_get(struct rmod *rm, const char *bare)
{
	struct roster *r = pgn_map_get(rm->users, bare);
	if (r == NULL)
		r = roster_new(rm, bare);
	return r;
}

/* ---- store writes (write-through) --------------------------------------- */

#define SQL_VERSION                                                            \
	"INSERT INTO roster_version (host, username, ver, min_ver) VALUES "    \
	"($1, $2, $3, $4) ON CONFLICT (host, username) DO UPDATE SET "         \
	"ver = excluded.ver, min_ver = excluded.min_ver"

static void
write_txn(struct roster *r, int n, const char *const *sqls, const int *np,
	  const char *const *const *params)
{
	int rc = pgn_store_txn(pgn_server_store(r->rm->srv), n, sqls, np,
			       params, 0, NULL, NULL);
	if (rc != 0)
		pgn_log(PGN_LOG_WARN,
			"mod_roster: cannot write the roster of %s (%d)",
			r->bare, rc);
}

static void
persist_item(struct roster *r, const struct item *it)
{
	static const char *const sqls[3] = {
		SQL_VERSION,
		"INSERT INTO roster (host, username, jid, name, subscription, "
		"ask, approved, groups, ver) VALUES ($1, $2, $3, $4, $5, $6, "
		"$7, $8, $9) ON CONFLICT (host, username, jid) DO UPDATE SET "
		"name = excluded.name, subscription = excluded.subscription, "
		"ask = excluded.ask, approved = excluded.approved, groups = "
		"excluded.groups, ver = excluded.ver",
		"DELETE FROM roster_removed WHERE host = $1 AND username = $2 "
		"AND jid = $3",
	};
	static const int np[3] = { 4, 9, 3 };
	char ver[24], min_ver[24], iver[24];
	char *groups = groups_join(it);
	if (groups == NULL) {
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory writing %s",
			r->bare);
		return;
	}
	snprintf(ver, sizeof(ver), "%" PRId64, r->ver);
	snprintf(min_ver, sizeof(min_ver), "%" PRId64, r->min_ver);
	snprintf(iver, sizeof(iver), "%" PRId64, it->ver);
	const char *p0[4] = { r->host, r->user, ver, min_ver };
	const char *p1[9] = { r->host,
			      r->user,
			      it->jid,
			      it->name,
			      sub_names[it->sub],
			      it->ask ? "1" : "0",
			      it->approved ? "1" : "0",
			      groups,
			      iver };
	const char *p2[3] = { r->host, r->user, it->jid };
	const char *const *params[3] = { p0, p1, p2 };
	write_txn(r, 3, sqls, np, params);
	free(groups);
}

static void
persist_removal(struct roster *r, const char *jid, int64_t tver,
		int64_t pruned_upto)
{
	static const char *const sqls[4] = {
		SQL_VERSION,
		"DELETE FROM roster WHERE host = $1 AND username = $2 AND "
		"jid = $3",
		"INSERT INTO roster_removed (host, username, jid, ver) VALUES "
		"($1, $2, $3, $4) ON CONFLICT (host, username, jid) DO UPDATE "
		"SET ver = excluded.ver",
		"DELETE FROM roster_removed WHERE host = $1 AND username = $2 "
		"AND ver <= $3",
	};
	static const int np[4] = { 4, 3, 4, 3 };
	char ver[24], min_ver[24], tv[24], pr[24];
	snprintf(ver, sizeof(ver), "%" PRId64, r->ver);
	snprintf(min_ver, sizeof(min_ver), "%" PRId64, r->min_ver);
	snprintf(tv, sizeof(tv), "%" PRId64, tver);
	snprintf(pr, sizeof(pr), "%" PRId64, pruned_upto);
	const char *p0[4] = { r->host, r->user, ver, min_ver };
	const char *p1[3] = { r->host, r->user, jid };
	const char *p2[4] = { r->host, r->user, jid, tv };
	const char *p3[3] = { r->host, r->user, pr };
	const char *const *params[4] = { p0, p1, p2, p3 };
	write_txn(r, pruned_upto > 0 ? 4 : 3, sqls, np, params);
}

static void
persist_pending(struct roster *r, const char *jid, const struct pending *p)
{
	static const char *const put =
		"INSERT INTO roster_pending (host, username, jid, status, "
		"nick, stanza) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT "
		"(host, username, jid) DO UPDATE SET status = "
		"excluded.status, nick = excluded.nick, stanza = "
		"excluded.stanza";
	static const char *const del =
		"DELETE FROM roster_pending WHERE host = $1 AND username = $2 "
		"AND jid = $3";
	const char *params[6] = { r->host,
				  r->user,
				  jid,
				  p != NULL ? p->status : NULL,
				  p != NULL ? p->nick : NULL,
				  p != NULL ? p->stanza : NULL };
	int rc = pgn_store_query(pgn_server_store(r->rm->srv),
				 p != NULL ? put : del, p != NULL ? 6 : 3,
				 params, 0, NULL, NULL);
	if (rc != 0)
		pgn_log(PGN_LOG_WARN,
			"mod_roster: cannot write a request of %s (%d)",
			r->bare, rc);
}

/* ---- roster pushes ------------------------------------------------------ */

/* Appends the <item/> of it (or of a removal when it is NULL) to q. */
static int
add_item_xml(struct pgn_xml *q, const struct item *it, const char *removed)
{
	struct pgn_xml *x = pgn_xml_add_child(q, NS_ROSTER, "item");
	if (x == NULL)
		return -ENOMEM;
	if (it == NULL)
		return pgn_xml_set_attr(x, "jid", removed) != 0 ||
				       pgn_xml_set_attr(x, "subscription",
							"remove") != 0
			       ? -ENOMEM
			       : 0;
	if (pgn_xml_set_attr(x, "jid", it->jid) != 0 ||
	    (it->name != NULL && pgn_xml_set_attr(x, "name", it->name) != 0) ||
	    pgn_xml_set_attr(x, "subscription", sub_names[it->sub]) != 0 ||
	    (it->ask && pgn_xml_set_attr(x, "ask", "subscribe") != 0) ||
	    (it->approved && pgn_xml_set_attr(x, "approved", "true") != 0))
		return -ENOMEM;
	for (size_t i = 0; i < it->ngroups; i++) {
		struct pgn_xml *g = pgn_xml_add_child(x, NS_ROSTER, "group");
		if (g == NULL ||
		    pgn_xml_add_text(g, it->groups[i], strlen(it->groups[i])) !=
			    0)
			return -ENOMEM;
	}
	return 0;
}

/* Sends one push of it (or the removal of jid) to session s. */
static void
push_one(struct rmod *rm, struct pgn_session *s, const struct item *it,
	 const char *jid, int64_t ver)
{
	const struct pgn_jid *full = pgn_session_jid(s);
	struct pgn_xml *iq = pgn_xml_new(PGN_NS_CLIENT, "iq");
	struct pgn_xml *q;
	char id[32], v[24];

	snprintf(id, sizeof(id), "push%" PRIu64, ++rm->push_seq);
	snprintf(v, sizeof(v), "%" PRId64, ver);
	if (iq == NULL || full == NULL ||
	    pgn_xml_set_attr(iq, "type", "set") != 0 ||
	    pgn_xml_set_attr(iq, "id", id) != 0 ||
	    pgn_xml_set_attr(iq, "to", full->full) != 0 ||
	    (q = pgn_xml_add_child(iq, NS_ROSTER, "query")) == NULL ||
	    pgn_xml_set_attr(q, "ver", v) != 0 ||
	    add_item_xml(q, it, jid) != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory for a push");
		pgn_xml_free(iq);
		return;
	}
	pgn_session_send(s, iq);
	pgn_xml_free(iq);
}

/* Pushes to every interested resource of r's user (§2.1.6). */
static void
push_all(struct roster *r, const struct item *it, const char *jid)
{
	for (struct pgn_session *s = pgn_user_sessions(r->rm->srv, r->bare);
	     s != NULL; s = pgn_session_next(s)) {
		struct sstate *ss = sstate_of(r->rm, s);
		if (ss != NULL && ss->interested)
			push_one(r->rm, s, it, jid, r->ver);
	}
}

/* Records a change of it: new version, write-through, pushes. */
static void
item_changed(struct roster *r, struct item *it)
{
	it->ver = ++r->ver;
	persist_item(r, it);
	push_all(r, it, NULL);
}

struct oldest {
	const char *jid;
	int64_t ver;
};

static int
find_oldest(const char *key, uint64_t id, void *value, void *arg)
{
	struct tombstone *t = value;
	struct oldest *o = arg;
	(void)id;
	if (o->jid == NULL || t->ver < o->ver) {
		o->jid = key;
		o->ver = t->ver;
	}
	return 0;
}

/* Removes the item of jid (which must exist): tombstone, write, push. */
static void
item_remove(struct roster *r, const char *jid)
{
	struct item *it = pgn_map_del(r->items, jid);
	struct tombstone *t = pgn_map_get(r->removed, jid);
	int64_t pruned = 0;
	char *key = strdup(jid);

	item_free(it);
	r->ver++;
	if (t == NULL && (t = calloc(1, sizeof(*t))) != NULL &&
	    pgn_map_set(r->removed, jid, t) != 0) {
		free(t);
		t = NULL;
	}
	if (t != NULL) {
		t->ver = r->ver;
	} else {
		/* No tombstone: clients must get the whole roster. */
		r->min_ver = r->ver;
	}
	/* Bounded tombstones: prune the oldest, clients that old get the
	 * whole roster. */
	while (pgn_map_count(r->removed) > (size_t)r->rm->max_items) {
		struct oldest o = { NULL, 0 };
		pgn_map_foreach(r->removed, find_oldest, &o);
		if (o.jid == NULL)
			break;
		pruned = o.ver;
		free(pgn_map_del(r->removed, o.jid));
	}
	if (pruned > r->min_ver)
		r->min_ver = pruned;
	if (key == NULL) {
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory removing");
		return;
	}
	persist_removal(r, key, r->ver, pruned);
	push_all(r, NULL, key);
	free(key);
}

/* A new item (no subscription) or NULL: out of memory, or the roster is
 * full (*full set). */
static struct item *
item_create(struct roster *r, const char *jid, int *full)
{
	struct item *it;
	*full = 0;
	if (pgn_map_count(r->items) >= (size_t)r->rm->max_items) {
		*full = 1;
		return NULL;
	}
	if ((it = calloc(1, sizeof(*it))) == NULL ||
	    (it->jid = strdup(jid)) == NULL ||
	    pgn_map_set(r->items, jid, it) != 0) {
		item_free(it);
		return NULL;
	}
	return it;
}

/* ---- presence helpers --------------------------------------------------- */

/* A copy of xml addressed from -> to, or NULL. */
static struct pgn_stanza *
stanza_copy_to(const struct pgn_xml *xml, const char *from, const char *to)
{
	struct pgn_xml *c = pgn_xml_copy(xml);
	struct pgn_stanza *st;
	struct pgn_jid *jf = NULL, *jt = NULL;
	int bad = 0;

	if (c == NULL)
		return NULL;
	pgn_xml_set_attr(c, "to", NULL);
	pgn_xml_set_attr(c, "from", NULL);
	if ((st = pgn_stanza_new(c, &bad)) == NULL)
		return NULL;
	if (pgn_jid_parse(from, &jf) != 0 || pgn_jid_parse(to, &jt) != 0 ||
	    pgn_stanza_set_from(st, jf) != 0 || pgn_stanza_set_to(st, jt) != 0) {
		pgn_stanza_free(st);
		st = NULL;
	}
	pgn_jid_free(jf);
	pgn_jid_free(jt);
	return st;
}

/* A new <presence type=type/> from -> to (type may be NULL). */
static struct pgn_stanza *
presence_new(const char *type, const char *from, const char *to)
{
	struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "presence");
	struct pgn_stanza *st;
	if (x == NULL || (type != NULL && pgn_xml_set_attr(x, "type", type))) {
		pgn_xml_free(x);
		return NULL;
	}
	st = stanza_copy_to(x, from, to);
	pgn_xml_free(x);
	return st;
}

/* Routes st on behalf of session s (outbound filters apply), keeping
 * our own pre-presence hooks out.  Takes st. */
static void
route_as(struct rmod *rm, struct pgn_session *s, struct pgn_stanza *st)
{
	rm->routing++;
	pgn_route_from(s, st);
	rm->routing--;
}

/* Sends xml (a presence) from s to jid, on s's behalf. */
static void
send_presence_as(struct rmod *rm, struct pgn_session *s,
		 const struct pgn_xml *xml, const char *to)
{
	const struct pgn_jid *full = session_jid(rm, s);
	struct pgn_stanza *st;
	if (full == NULL || (st = stanza_copy_to(xml, full->full, to)) == NULL)
		return;
	route_as(rm, s, st);
}

static int
presence_is_available(const struct pgn_xml *x)
{
	return x != NULL && pgn_xml_attr(x, "type") == NULL;
}

/* Sends the presence of every available resource of r's user to jid
 * (after a subscription was approved, §3.1.5). */
static void
send_all_presence_to(struct roster *r, const char *jid)
{
	for (struct pgn_session *s = pgn_user_sessions(r->rm->srv, r->bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_xml *p = pgn_session_presence(s);
		if (pgn_session_available(s) && presence_is_available(p))
			send_presence_as(r->rm, s, p, jid);
	}
}

/* Unavailable from every available resource of r's user to jid (§3.2.2). */
static void
send_all_unavailable_to(struct roster *r, const char *jid)
{
	for (struct pgn_session *s = pgn_user_sessions(r->rm->srv, r->bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_jid *full = pgn_session_jid(s);
		struct pgn_stanza *st;
		if (!pgn_session_available(s) || full == NULL)
			continue;
		if ((st = presence_new("unavailable", full->full, jid)) != NULL)
			route_as(r->rm, s, st);
	}
}

/* A server-generated subscription stanza from r's user to jid. */
static void
route_sub(struct roster *r, const char *type, const char *jid)
{
	struct pgn_stanza *st = presence_new(type, r->bare, jid);
	if (st != NULL)
		pgn_route(r->rm->srv, st);
}

/* Delivers xml (copied) to every available resource of r's user. */
static int
deliver_available(struct roster *r, const struct pgn_xml *xml,
		  const char *from)
{
	int n = 0;
	for (struct pgn_session *s = pgn_user_sessions(r->rm->srv, r->bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_jid *full = pgn_session_jid(s);
		struct pgn_stanza *st;
		if (!pgn_session_available(s) || full == NULL)
			continue;
		if ((st = stanza_copy_to(xml, from, full->full)) == NULL)
			continue;
		pgn_session_send(s, st->xml);
		pgn_stanza_free(st);
		n++;
	}
	return n;
}

/* The request kept whole, or NULL (none, unparsable, out of memory). */
static struct pgn_xml *
pending_stanza(const struct pending *p)
{
	struct pgn_xml *box, *x;
	if (p->stanza == NULL ||
	    (box = pgn_xml_new(PGN_NS_CLIENT, "stored")) == NULL)
		return NULL;
	x = pgn_xml_parse_into(box, p->stanza, strlen(p->stanza)) == 0
		    ? pgn_xml_first_child(box)
		    : NULL;
	if (x != NULL && (pgn_xml_next(x) != NULL ||
			  strcmp(pgn_xml_name(x), "presence") != 0 ||
			  pgn_xml_attr(x, "type") == NULL ||
			  strcmp(pgn_xml_attr(x, "type"), "subscribe") != 0))
		x = NULL;
	if (x != NULL)
		pgn_xml_unlink(x);
	pgn_xml_free(box);
	return x;
}

/* The stored request of jid as a <presence type='subscribe'/>: as it
 * came when it was kept whole, else rebuilt from status and nick. */
static struct pgn_xml *
pending_xml(const struct pending *p)
{
	struct pgn_xml *x = pending_stanza(p);
	struct pgn_xml *c;
	if (x != NULL)
		return x;
	if ((x = pgn_xml_new(PGN_NS_CLIENT, "presence")) == NULL ||
	    pgn_xml_set_attr(x, "type", "subscribe") != 0)
		goto fail;
	if (p->status != NULL &&
	    ((c = pgn_xml_add_child(x, PGN_NS_CLIENT, "status")) == NULL ||
	     pgn_xml_add_text(c, p->status, strlen(p->status)) != 0))
		goto fail;
	if (p->nick != NULL &&
	    ((c = pgn_xml_add_child(x, NS_NICK, "nick")) == NULL ||
	     pgn_xml_add_text(c, p->nick, strlen(p->nick)) != 0))
		goto fail;
	return x;
fail:
	pgn_xml_free(x);
	return NULL;
}

struct deliver_ctx {
	struct pgn_session *s;
	const char *to;
};

static int
deliver_pending_cb(const char *key, uint64_t id, void *value, void *arg)
{
	struct deliver_ctx *d = arg;
	struct pgn_xml *x = pending_xml(value);
	struct pgn_stanza *st;
	(void)id;
	if (x == NULL)
		return 0;
	if ((st = stanza_copy_to(x, key, d->to)) != NULL) {
		pgn_session_send(d->s, st->xml);
		pgn_stanza_free(st);
	}
	pgn_xml_free(x);
	return 0;
}

/* ---- subscription state machine ----------------------------------------- */

static char *
limited_text(const struct pgn_xml *x, const char *ns, const char *name)
{
	char *t = pgn_xml_child_text(x, ns, name);
	if (t != NULL && strlen(t) > MAX_STATUS_BYTES) {
		free(t);
		t = NULL;
	}
	return t;
}

/* §3.1.3: the request kept whole (serialised, without to/from), or
 * NULL when it is larger than MAX_REQUEST_BYTES (status and nick are
 * then all that is kept) or out of memory. */
static char *
request_text(const struct pgn_xml *xml)
{
	struct pgn_xml *c = pgn_xml_copy(xml);
	char *t = NULL;
	if (c != NULL && pgn_xml_set_attr(c, "to", NULL) == 0 &&
	    pgn_xml_set_attr(c, "from", NULL) == 0)
		t = pgn_xml_to_string(c, PGN_NS_CLIENT);
	pgn_xml_free(c);
	if (t != NULL && strlen(t) > MAX_REQUEST_BYTES) {
		pgn_log(PGN_LOG_INFO,
			"mod_roster: a request of %zu bytes is kept as its "
			"status and nick only",
			strlen(t));
		free(t);
		t = NULL;
	}
	return t;
}

/* Error back to the client for its outbound presence (copied). */
static void
bounce_text(struct rmod *rm, const struct pgn_stanza *st, const char *type,
	    const char *cond, const char *text)
{
	struct pgn_stanza *e = pgn_stanza_error_reply(st, type, cond, text);
	if (e != NULL)
		pgn_route(rm->srv, e);
}

/* Outbound subscription stanza from r's user to contact (§3.1.2, 3.2.2,
 * 3.3.2, 3.4; Appendix A.2).  st is borrowed. */
static void
outbound_sub(struct roster *r, struct pgn_session *origin,
	     const struct pgn_stanza *st, const char *contact)
{
	struct item *it = pgn_map_get(r->items, contact);
	struct pending *pin = pgn_map_get(r->pending, contact);
	struct pgn_stanza *out;
	int full = 0, changed = 0, route = 1;

	(void)origin;
	if (type_is(st, "subscribe")) {
		if (it == NULL && (it = item_create(r, contact, &full)) == NULL)
			goto nomem;
		if (!has_to(it->sub) && !it->ask) {
			it->ask = 1;
			changed = 1;
		}
		if (it->ver == 0)
			changed = 1; /* new item */
	} else if (type_is(st, "subscribed")) {
		if (pin != NULL) {
			if (it == NULL &&
			    (it = item_create(r, contact, &full)) == NULL)
				goto nomem;
			it->sub = it->sub == SUB_TO ? SUB_BOTH : SUB_FROM;
			it->approved = 0;
			pending_free(pgn_map_del(r->pending, contact));
			persist_pending(r, contact, NULL);
			changed = 1;
		} else if (it != NULL && has_from(it->sub)) {
			route = 0; /* already subscribed: nothing to do */
		} else {
			/* Pre-approval (§3.4). */
			if (it == NULL &&
			    (it = item_create(r, contact, &full)) == NULL)
				goto nomem;
			if (!it->approved || it->ver == 0) {
				it->approved = 1;
				changed = 1;
			}
			route = 0;
		}
	} else if (type_is(st, "unsubscribe")) {
		if (it != NULL && (has_to(it->sub) || it->ask)) {
			it->sub = it->sub == SUB_BOTH ? SUB_FROM
				  : it->sub == SUB_TO ? SUB_NONE
						      : it->sub;
			it->ask = 0;
			changed = 1;
		}
	} else { /* unsubscribed */
		int had_from = it != NULL && has_from(it->sub);
		if (pin != NULL) {
			pending_free(pgn_map_del(r->pending, contact));
			persist_pending(r, contact, NULL);
		}
		if (it != NULL && (had_from || it->approved)) {
			it->sub = it->sub == SUB_BOTH ? SUB_TO
				  : it->sub == SUB_FROM ? SUB_NONE
							: it->sub;
			it->approved = 0;
			changed = 1;
		}
		if (had_from)
			send_all_unavailable_to(r, contact);
	}
	if (changed)
		item_changed(r, it);
	if (route) {
		/* §3.1.2: stamped with the bare JID. */
		if ((out = stanza_copy_to(st->xml, r->bare, contact)) != NULL)
			pgn_route(r->rm->srv, out);
	}
	if (type_is(st, "subscribed") && changed && route)
		send_all_presence_to(r, contact);
	return;
nomem:
	if (full) {
		char text[96];
		snprintf(text, sizeof(text),
			 "the roster is full (at most %d items)",
			 r->rm->max_items);
		bounce_text(r->rm, st, "cancel", "not-allowed", text);
	} else {
		bounce_text(r->rm, st, "wait", "resource-constraint", NULL);
	}
}

/* Inbound subscription stanza for r's user from contact (§3.1.3, 3.1.6,
 * 3.2.3, 3.3.3; Appendix A.3).  st is borrowed. */
static void
inbound_sub(struct roster *r, const struct pgn_stanza *st,
	    const char *contact)
{
	struct item *it = pgn_map_get(r->items, contact);

	if (!r->exists) {
		/* §8.5.1 no such user: a subscribe gets unsubscribed. */
		if (type_is(st, "subscribe"))
			route_sub(r, "unsubscribed", contact);
		return;
	}
	if (type_is(st, "subscribe")) {
		struct pending *p;
		if (it != NULL && has_from(it->sub)) {
			route_sub(r, "subscribed", contact);
			return;
		}
		if (it != NULL && it->approved) {
			it->sub = it->sub == SUB_TO ? SUB_BOTH : SUB_FROM;
			it->approved = 0;
			item_changed(r, it);
			route_sub(r, "subscribed", contact);
			send_all_presence_to(r, contact);
			return;
		}
		p = pgn_map_get(r->pending, contact);
		if (p == NULL) {
			if (pgn_map_count(r->pending) >=
			    (size_t)r->rm->max_items) {
				pgn_log(PGN_LOG_INFO,
					"mod_roster: too many requests for "
					"%s, dropping one",
					r->bare);
				return;
			}
			if ((p = calloc(1, sizeof(*p))) == NULL ||
			    pgn_map_set(r->pending, contact, p) != 0) {
				free(p);
				return;
			}
		}
		free(p->status);
		free(p->nick);
		free(p->stanza);
		p->status = limited_text(st->xml, NULL, "status");
		p->nick = limited_text(st->xml, NS_NICK, "nick");
		p->stanza = request_text(st->xml);
		persist_pending(r, contact, p);
		/* Kept until answered; delivered now to the available
		 * resources and again at every login. */
		deliver_available(r, st->xml, contact);
		return;
	}
	if (type_is(st, "subscribed")) {
		if (it == NULL || !it->ask)
			return; /* not requested: ignored (A.3.2) */
		it->sub = it->sub == SUB_FROM ? SUB_BOTH : SUB_TO;
		it->ask = 0;
		item_changed(r, it);
		deliver_available(r, st->xml, contact);
		return;
	}
	if (type_is(st, "unsubscribe")) {
		struct pending *p = pgn_map_del(r->pending, contact);
		int changed = 0;
		if (p != NULL) {
			pending_free(p);
			persist_pending(r, contact, NULL);
			changed = 1;
		}
		if (it != NULL && has_from(it->sub)) {
			it->sub = it->sub == SUB_BOTH ? SUB_TO : SUB_NONE;
			item_changed(r, it);
			/* §3.3.3: the contact no longer sees us. */
			send_all_unavailable_to(r, contact);
			changed = 1;
		}
		if (changed)
			deliver_available(r, st->xml, contact);
		return;
	}
	/* unsubscribed */
	if (it == NULL || (!has_to(it->sub) && !it->ask))
		return;
	it->sub = it->sub == SUB_BOTH ? SUB_FROM
		  : it->sub == SUB_TO ? SUB_NONE
				      : it->sub;
	it->ask = 0;
	item_changed(r, it);
	deliver_available(r, st->xml, contact);
}

static int
is_sub_type(const struct pgn_stanza *st)
{
	return type_is(st, "subscribe") || type_is(st, "subscribed") ||
	       type_is(st, "unsubscribe") || type_is(st, "unsubscribed");
}

/* A held inbound subscription stanza, finished once the roster loaded. */
static void
held_inbound(struct roster *r, void *arg)
{
	struct pgn_hold *h = arg;
	struct pgn_stanza *st = pgn_hold_take(h);
	if (st == NULL)
		return;
	if (!r->failed && st->from != NULL)
		inbound_sub(r, st, st->from->bare);
	else
		pgn_log(PGN_LOG_WARN,
			"mod_roster: dropping a subscription stanza for %s",
			r->bare);
	pgn_stanza_free(st);
}

/* ---- presence probes ---------------------------------------------------- */

/* §4.3.2, 1: "If the contact account does not exist or the user's bare
 * JID is in the contact's roster with a subscription state other than
 * From, From + Pending Out, or Both, then the contact's server SHOULD
 * return a presence stanza of type unsubscribed in response to the
 * presence probe" (so the prober's server cancels a subscription it
 * wrongly believes in, §3.2.3).  Not when a request from the prober is
 * pending here (Pending In): its server rightly shows Pending Out, and
 * unsubscribed would cancel that request (mod_blocking probes on an
 * unblock whatever the state). */
static void
refuse_probe(struct rmod *rm, const struct pgn_stanza *st, int pending_in)
{
	struct pgn_stanza *u;
	if (pending_in || strcmp(st->from->bare, st->to->bare) == 0)
		return;
	if ((u = presence_new("unsubscribed", st->to->bare, st->from->bare)) !=
	    NULL)
		pgn_route(rm->srv, u);
}

/* §4.3.2: a probe of r's user from prober: every available resource
 * answers if prober is subscribed (from/both) or the user itself;
 * anybody else gets unsubscribed (refuse_probe). */
static void
answer_probe(struct roster *r, const struct pgn_stanza *st)
{
	const char *pb = st->from->bare;
	struct item *it = pgn_map_get(r->items, pb);

	if (!r->exists || (strcmp(pb, r->bare) != 0 &&
			   (it == NULL || !has_from(it->sub)))) {
		refuse_probe(r->rm, st,
			     r->exists && pgn_map_get(r->pending, pb) != NULL);
		return;
	}
	for (struct pgn_session *s = pgn_user_sessions(r->rm->srv, r->bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_xml *p = pgn_session_presence(s);
		const struct pgn_jid *full = pgn_session_jid(s);
		if (!pgn_session_available(s) || !presence_is_available(p) ||
		    full == NULL || strcmp(full->full, st->from->full) == 0)
			continue;
		/* A probe of a full JID asks that resource only. */
		if (st->to->resource != NULL &&
		    strcmp(full->full, st->to->full) != 0)
			continue;
		send_presence_as(r->rm, s, p, st->from->full);
	}
}

/* A probe for a user whose roster is not in the cache (offline, or
 * loading): one query (account, the prober's subscription, a pending
 * request) instead of loading the whole roster, since a user logging in
 * probes every contact. */
struct probe_job {
	struct rmod *rm;
	struct pgn_hold *hold;
};

static void
on_probe_row(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct probe_job *j = arg;
	struct pgn_stanza *st = pgn_hold_take(j->hold);
	struct roster *r;
	(void)owner;

	if (st == NULL)
		goto done;
	/* The user may have come online meanwhile: the cache is then the
	 * truth (and knows the available resources). */
	r = pgn_map_get(j->rm->users, st->to->bare);
	if (r != NULL && r->loaded && !r->failed) {
		answer_probe(r, st);
	} else if (res->error != 0 || res->nrows != 1) {
		pgn_log(PGN_LOG_WARN, "mod_roster: probe of %s: %s",
			st->to->bare, res->error ? res->errmsg : "no row");
	} else if (pgn_store_value(res, 0, 0) == NULL) {
		refuse_probe(j->rm, st, 0); /* no such account */
	} else {
		int sub = parse_sub(pgn_store_value(res, 0, 1));
		/* Subscribed but offline: §4.3.2, 2 allows not answering. */
		if (sub < 0 || !has_from((enum sub)sub))
			refuse_probe(j->rm, st,
				     pgn_store_value(res, 0, 2) != NULL);
	}
done:
	pgn_stanza_free(st);
	free(j);
}

static void
probe_offline(struct rmod *rm, struct pgn_event *ev)
{
	static const char sql[] =
		"SELECT (SELECT 1 FROM accounts WHERE host = $1 AND "
		"username = $2), (SELECT subscription FROM roster WHERE "
		"host = $1 AND username = $2 AND jid = $3), (SELECT 1 FROM "
		"roster_pending WHERE host = $1 AND username = $2 AND "
		"jid = $3)";
	const struct pgn_stanza *st = ev->stanza;
	const char *params[3] = { st->to->domain, st->to->node,
				  st->from->bare };
	struct probe_job *j = calloc(1, sizeof(*j));

	if (j == NULL || (j->hold = pgn_event_hold(ev)) == NULL) {
		free(j);
		return;
	}
	j->rm = rm;
	if (pgn_store_query(pgn_server_store(rm->srv), sql, 3, params, 0,
			    on_probe_row, j) != 0) {
		pgn_stanza_free(pgn_hold_take(j->hold));
		free(j);
	}
}

/* ---- hooks: inbound presence -------------------------------------------- */

static int
on_in_presence(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_stanza *st = ev->stanza;
	struct roster *r;
	struct pgn_hold *h;

	if (st->to == NULL || st->to->node == NULL || st->from == NULL)
		return PGN_EVENT_PASS;
	if (type_is(st, "probe")) {
		r = pgn_map_get(rm->users, st->to->bare);
		if (r != NULL && r->loaded) {
			if (!r->failed)
				answer_probe(r, st);
		} else if (strcmp(st->from->bare, st->to->bare) != 0) {
			/* No cache or still loading: no available
			 * resource, but maybe no subscription either. */
			probe_offline(rm, ev);
		}
		return PGN_EVENT_HANDLED;
	}
	if (!is_sub_type(st))
		return PGN_EVENT_PASS;
	/* §3: subscription stanzas are about bare JIDs. */
	if (strcmp(st->from->bare, st->to->bare) == 0)
		return PGN_EVENT_HANDLED;
	r = pgn_map_get(rm->users, st->to->bare);
	if (r != NULL && r->loaded) {
		if (!r->failed)
			inbound_sub(r, st, st->from->bare);
		return PGN_EVENT_HANDLED;
	}
	/* The user is offline (or its roster is loading): hold the stanza
	 * while its roster is read. */
	if ((r = roster_get(rm, st->to->bare)) == NULL)
		return PGN_EVENT_HANDLED;
	if ((h = pgn_event_hold(ev)) == NULL) {
		pgn_log(PGN_LOG_WARN,
			"mod_roster: cannot hold a subscription stanza for %s",
			st->to->bare);
		roster_maybe_free(r);
		return PGN_EVENT_HANDLED;
	}
	if (roster_wait(r, held_inbound, h) != 0) {
		pgn_stanza_free(pgn_hold_take(h));
		roster_maybe_free(r);
	}
	return PGN_EVENT_HANDLED;
}

/* ---- hooks: outbound presence ------------------------------------------- */

static struct roster *
roster_of_session(struct rmod *rm, struct pgn_session *s)
{
	const struct pgn_jid *j = s != NULL ? pgn_session_jid(s) : NULL;
	struct roster *r = j != NULL ? pgn_map_get(rm->users, j->bare) : NULL;
	return r != NULL && r->loaded && !r->failed ? r : NULL;
}

static int
valid_presence_type(const struct pgn_stanza *st)
{
	static const char *const types[] = {
		"unavailable", "subscribe",    "subscribed", "unsubscribe",
		"unsubscribed", "probe",        "error",
	};
	if (st->type == NULL)
		return 1;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(st->type, types[i]) == 0)
			return 1;
	return 0;
}

/* Outbound presence to a JID ("pre-presence/bare|full|host"): subscription
 * management, and the directed presence list (§4.6). */
static int
on_out_presence(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_stanza *st = ev->stanza;
	struct sstate *ss;
	struct roster *r;

	if (rm->routing > 0 || ev->origin == NULL || st->to == NULL)
		return PGN_EVENT_PASS;
	if (!valid_presence_type(st)) {
		bounce_text(rm, st, "modify", "bad-request", NULL);
		return PGN_EVENT_HANDLED;
	}
	r = roster_of_session(rm, ev->origin);
	if (is_sub_type(st)) {
		if (r == NULL) {
			bounce_text(rm, st, "wait", "internal-server-error",
				    NULL);
			return PGN_EVENT_HANDLED;
		}
		if (strcmp(st->to->bare, r->bare) != 0)
			outbound_sub(r, ev->origin, st, st->to->bare);
		return PGN_EVENT_HANDLED;
	}
	if (st->type != NULL && !type_is(st, "unavailable"))
		return PGN_EVENT_PASS;
	ss = sstate_of(rm, ev->origin);
	if (ss == NULL || r == NULL || strcmp(st->to->bare, r->bare) == 0)
		return PGN_EVENT_PASS;
	if (st->type == NULL) {
		struct item *it = pgn_map_get(r->items, st->to->bare);
		/* Subscribers get our unavailable anyway. */
		if ((it == NULL || !has_from(it->sub) || !ss->available) &&
		    ss->directed != NULL &&
		    pgn_map_count(ss->directed) < MAX_DIRECTED &&
		    pgn_map_set(ss->directed, st->to->full, (void *)1) != 0)
			pgn_log(PGN_LOG_WARN, "mod_roster: out of memory");
	} else if (ss->directed != NULL) {
		pgn_map_del(ss->directed, st->to->full);
	}
	return PGN_EVENT_PASS;
}

struct bcast {
	struct rmod *rm;
	struct roster *r;
	struct pgn_session *s;
	const struct pgn_xml *xml;
	int probe;
};

static int
bcast_contact(const char *key, uint64_t id, void *value, void *arg)
{
	struct bcast *b = arg;
	struct item *it = value;
	(void)id;
	if (has_from(it->sub))
		send_presence_as(b->rm, b->s, b->xml, key);
	if (b->probe && has_to(it->sub)) {
		const struct pgn_jid *full = session_jid(b->rm, b->s);
		struct pgn_stanza *p =
			full != NULL ? presence_new("probe", full->full, key)
				     : NULL;
		if (p != NULL)
			pgn_route(b->rm->srv, p);
	}
	return 0;
}

static int
bcast_directed(const char *key, uint64_t id, void *value, void *arg)
{
	struct bcast *b = arg;
	struct item *it = NULL;
	struct pgn_jid *j = NULL;
	(void)id, (void)value;
	/* Subscribers already got it through the broadcast (to their bare
	 * JID, so to all their resources). */
	if (b->r != NULL && b->probe && pgn_jid_parse(key, &j) == 0)
		it = pgn_map_get(b->r->items, j->bare);
	pgn_jid_free(j);
	if (it == NULL || !has_from(it->sub))
		send_presence_as(b->rm, b->s, b->xml, key);
	return 0;
}

/* Sends xml (presence of s) to the user's available resources; with
 * others_to_s, also the presence of the other resources to s. */
static void
bcast_own(struct roster *r, struct pgn_session *s, const struct pgn_xml *xml,
	  int others_to_s)
{
	const struct pgn_jid *me = session_jid(r->rm, s);
	if (me == NULL)
		return;
	for (struct pgn_session *o = pgn_user_sessions(r->rm->srv, r->bare);
	     o != NULL; o = pgn_session_next(o)) {
		const struct pgn_jid *oj = pgn_session_jid(o);
		struct pgn_stanza *c;
		if (oj == NULL || !pgn_session_available(o))
			continue;
		if ((c = stanza_copy_to(xml, me->full, oj->full)) != NULL) {
			pgn_session_send(o, c->xml);
			pgn_stanza_free(c);
		}
		if (others_to_s && o != s) {
			const struct pgn_xml *op = pgn_session_presence(o);
			if (presence_is_available(op) &&
			    (c = stanza_copy_to(op, oj->full, me->full)) !=
				    NULL) {
				pgn_session_send(s, c->xml);
				pgn_stanza_free(c);
			}
		}
	}
}

/* The broadcast of an unavailable presence xml of s (§4.5.2): the
 * subscribers and own resources if s was available, and the directed
 * presence targets (§4.6.3) in any case.  r may be NULL (no roster). */
static void
bcast_unavailable(struct rmod *rm, struct roster *r, struct pgn_session *s,
		  struct sstate *ss, const struct pgn_xml *xml)
{
	/* probe doubles as "the subscribers got it" for bcast_directed. */
	struct bcast b = { rm, r, s, xml, 0 };
	if (pgn_session_set_presence(s, xml) != 0)
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory");
	if (r != NULL && ss->available) {
		pgn_map_foreach(r->items, bcast_contact, &b);
		bcast_own(r, s, xml, 0);
		b.probe = 1;
	}
	if (ss->directed != NULL)
		pgn_map_foreach(ss->directed, bcast_directed, &b);
	pgn_map_free(ss->directed);
	if ((ss->directed = pgn_map_new()) == NULL)
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory");
	ss->available = 0;
}

/* The user's own presence (§4.2, 4.4, 4.5). */
static int
on_self_presence(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_session *s = ev->origin;
	struct sstate *ss = sstate_of(rm, s);
	struct roster *r;
	int initial;

	if (s == NULL || ss == NULL || rm->routing > 0)
		return PGN_EVENT_PASS;
	if (!valid_presence_type(st)) {
		bounce_text(rm, st, "modify", "bad-request", NULL);
		return PGN_EVENT_HANDLED;
	}
	if (st->type != NULL && !type_is(st, "unavailable"))
		return PGN_EVENT_PASS; /* subscription to oneself, probe... */
	r = roster_of_session(rm, s);
	if (type_is(st, "unavailable")) {
		int was_available = ss->available;
		const struct pgn_jid *me = session_jid(rm, s);
		struct pgn_stanza *c;
		bcast_unavailable(rm, r, s, ss, st->xml);
		/* §4.5.2: the user's server MUST also send the unavailable
		 * notification to all of the user's available resources, as
		 * well as to the resource that sent it in the first place;
		 * the core already counts that one as unavailable, so
		 * bcast_own skipped it. */
		if (was_available && r != NULL && me != NULL &&
		    (c = stanza_copy_to(st->xml, me->full, me->full)) != NULL) {
			pgn_session_send(s, c->xml);
			pgn_stanza_free(c);
		}
		return PGN_EVENT_HANDLED;
	}
	initial = !ss->available;
	ss->available = 1;
	if (pgn_session_set_presence(s, st->xml) != 0)
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory");
	if (r == NULL)
		return PGN_EVENT_HANDLED;
	struct bcast b = { rm, r, s, st->xml, initial };
	pgn_map_foreach(r->items, bcast_contact, &b);
	bcast_own(r, s, st->xml, initial);
	if (initial) {
		/* §3.1.3: requests wait until answered. */
		const struct pgn_jid *me = session_jid(rm, s);
		struct deliver_ctx d = { s, me->full };
		pgn_map_foreach(r->pending, deliver_pending_cb, &d);
	}
	return PGN_EVENT_HANDLED;
}

/* ---- account removal ---------------------------------------------------- */

/* XEP-0077 §3.2 asks the server to cancel a removed account's
 * subscriptions; RFC 6121 has no account deletion, so it is done as if
 * the user had cancelled each one: unsubscribe to every contact whose
 * presence the user had or asked for (§3.3.2), unsubscribed to every
 * contact that had the user's or asked for it (§3.2.2).  The contacts'
 * servers (this one for local contacts, through the usual inbound
 * handling) then set their items to none and drop a pending request, so
 * no roster keeps a ghost.  The account's rows are read in
 * "account-removing", before the DELETE (the store runs queries in
 * order), and the stanzas go out in "account-removed" once it worked. */
#define REMOVE_UNSUBSCRIBE 1
#define REMOVE_UNSUBSCRIBED 2

struct removal {
	struct rmod *rm;
	char *bare;
	int read;     /* the rows came */
	size_t n;
	char **jids;
	int *what; /* REMOVE_* bits */
};

static void
removal_free(struct removal *rv)
{
	if (rv == NULL)
		return;
	for (size_t i = 0; i < rv->n; i++)
		free(rv->jids[i]);
	free(rv->jids);
	free(rv->what);
	free(rv->bare);
	free(rv);
}

static int
free_removal_cb(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key, (void)id, (void)arg;
	removal_free(value);
	return 0;
}

/* Rows: jid, subscription, ask, pending (1: a request from jid waits). */
static void
on_removal_rows(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct removal *rv = arg;
	/* rv is still in rm->removals: the DELETE, whose completion frees
	 * it, runs after this query (one store connection, in order). */
	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: reading the roster of %s "
			"before its removal: %s", rv->bare, res->errmsg);
		return;
	}
	if (res->nrows > 0 &&
	    ((rv->jids = calloc((size_t)res->nrows, sizeof(*rv->jids))) ==
		     NULL ||
	     (rv->what = calloc((size_t)res->nrows, sizeof(*rv->what))) ==
		     NULL)) {
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory");
		return;
	}
	for (int i = 0; i < res->nrows; i++) {
		const char *jid = pgn_store_value(res, i, 0);
		int sub = parse_sub(pgn_store_value(res, i, 1));
		const char *ask = pgn_store_value(res, i, 2);
		const char *pend = pgn_store_value(res, i, 3);
		int what = 0;
		if (sub < 0)
			sub = SUB_NONE;
		if (has_to((enum sub)sub) || (ask != NULL && atoi(ask) != 0))
			what |= REMOVE_UNSUBSCRIBE;
		if (has_from((enum sub)sub) || (pend != NULL && atoi(pend)))
			what |= REMOVE_UNSUBSCRIBED;
		if (jid == NULL || what == 0)
			continue;
		if ((rv->jids[rv->n] = strdup(jid)) == NULL)
			break;
		rv->what[rv->n++] = what;
	}
	rv->read = 1;
}

static int
on_account_removing(struct pgn_event *ev, void *arg)
{
	static const char sql[] =
		"SELECT jid, subscription, ask, 0 FROM roster WHERE host = $1 "
		"AND username = $2 UNION ALL SELECT jid, 'none', 0, 1 FROM "
		"roster_pending WHERE host = $1 AND username = $2";
	struct rmod *rm = arg;
	const struct pgn_account_event *a = ev->data;
	const char *params[2];
	struct removal *rv;

	if (a == NULL || pgn_map_get(rm->removals, a->bare) != NULL)
		return PGN_EVENT_PASS; /* one at a time; the other fails */
	if ((rv = calloc(1, sizeof(*rv))) == NULL ||
	    (rv->bare = strdup(a->bare)) == NULL ||
	    pgn_map_set(rm->removals, a->bare, rv) != 0) {
		removal_free(rv);
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory: the "
			"subscriptions of %s are not cancelled", a->bare);
		return PGN_EVENT_PASS;
	}
	rv->rm = rm;
	params[0] = a->host;
	params[1] = a->user;
	if (pgn_store_query(pgn_server_store(rm->srv), sql, 2, params, 0,
			    on_removal_rows, rv) != 0) {
		pgn_map_del(rm->removals, a->bare);
		removal_free(rv);
	}
	return PGN_EVENT_PASS;
}

static int
on_account_removed(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	const struct pgn_account_event *a = ev->data;
	struct removal *rv = a != NULL ? pgn_map_del(rm->removals, a->bare)
				       : NULL;
	struct roster *r;

	if (rv == NULL)
		return PGN_EVENT_PASS;
	if (a->err == 0 && rv->read) {
		/* Whatever reaches the cache of the account now must not
		 * write rows for it (the sessions are about to be closed). */
		if ((r = pgn_map_get(rm->users, a->bare)) != NULL)
			r->exists = 0;
		for (size_t i = 0; i < rv->n; i++) {
			struct pgn_stanza *st;
			if ((rv->what[i] & REMOVE_UNSUBSCRIBE) &&
			    (st = presence_new("unsubscribe", a->bare,
					       rv->jids[i])) != NULL)
				pgn_route(rm->srv, st);
			if ((rv->what[i] & REMOVE_UNSUBSCRIBED) &&
			    (st = presence_new("unsubscribed", a->bare,
					       rv->jids[i])) != NULL)
				pgn_route(rm->srv, st);
		}
		pgn_log(PGN_LOG_INFO, "mod_roster: %s removed: %zu "
			"subscriptions cancelled", a->bare, rv->n);
	}
	removal_free(rv);
	return PGN_EVENT_PASS;
}

/* ---- hooks: sessions ---------------------------------------------------- */

static void
release_session(struct roster *r, void *arg)
{
	uint64_t id = (uint64_t)(uintptr_t)arg;
	struct pgn_session *s = pgn_session_find(r->rm->srv, id);
	if (s != NULL)
		pgn_session_release(s);
}

static int
on_session_started(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *j = pgn_session_jid(s);
	struct sstate *ss = calloc(1, sizeof(*ss));
	struct roster *r;

	if (ss == NULL || (ss->directed = pgn_map_new()) == NULL ||
	    j == NULL || (ss->jid = pgn_jid_copy(j)) == NULL ||
	    pgn_session_set_data(s, rm->m, ss, sstate_free) != 0) {
		sstate_free(ss);
		pgn_log(PGN_LOG_WARN, "mod_roster: session %" PRIu64
			": out of memory", pgn_session_id(s));
		return PGN_EVENT_PASS;
	}
	if (j == NULL || (r = roster_get(rm, j->bare)) == NULL ||
	    roster_add_sid(r, pgn_session_id(s)) != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: session %" PRIu64
			": cannot set up the roster", pgn_session_id(s));
		return PGN_EVENT_PASS;
	}
	if (r->loaded)
		return PGN_EVENT_PASS;
	pgn_session_hold(s);
	if (roster_wait(r, release_session,
			(void *)(uintptr_t)pgn_session_id(s)) != 0)
		pgn_session_release(s);
	return PGN_EVENT_PASS;
}

static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *j = session_jid(rm, s);
	struct sstate *ss = sstate_of(rm, s);
	struct roster *r = j != NULL ? pgn_map_get(rm->users, j->bare) : NULL;

	if (ss != NULL && (ss->available || (ss->directed != NULL &&
					      pgn_map_count(ss->directed) > 0))) {
		/* Everyone who saw us available learns we are gone. */
		struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "presence");
		if (x != NULL && pgn_xml_set_attr(x, "type", "unavailable") == 0)
			bcast_unavailable(rm,
					  r != NULL && r->loaded && !r->failed
						  ? r
						  : NULL,
					  s, ss, x);
		pgn_xml_free(x);
	}
	if (r != NULL) {
		roster_del_sid(r, pgn_session_id(s));
		roster_maybe_free(r);
	}
	return PGN_EVENT_PASS;
}

static int
on_features(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *f = ev->data;
	(void)arg;
	if (f == NULL || ev->origin == NULL ||
	    !pgn_session_authenticated(ev->origin))
		return PGN_EVENT_PASS;
	if (pgn_xml_add_child(f, NS_ROSTERVER, "ver") == NULL ||
	    pgn_xml_add_child(f, NS_PREAPPROVAL, "sub") == NULL)
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory");
	return PGN_EVENT_PASS;
}

/* ---- jabber:iq:roster --------------------------------------------------- */

struct collect {
	struct item **items;
	size_t n;
	int64_t after; /* only items changed after this version */
};

static int
collect_cb(const char *key, uint64_t id, void *value, void *arg)
{
	struct collect *c = arg;
	struct item *it = value;
	(void)key, (void)id;
	if (it->ver > c->after)
		c->items[c->n++] = it;
	return 0;
}

static int
cmp_jid(const void *a, const void *b)
{
	const struct item *x = *(const struct item *const *)a;
	const struct item *y = *(const struct item *const *)b;
	return strcmp(x->jid, y->jid);
}

/* The items of r (changed after 'after'), sorted by cmp; caller frees the
 * array (not the items).  NULL on allocation failure. */
static struct item **
items_sorted(struct roster *r, int64_t after,
	     int (*cmp)(const void *, const void *), size_t *n)
{
	struct collect c = { NULL, 0, after };
	c.items = calloc(pgn_map_count(r->items) + 1, sizeof(*c.items));
	if (c.items == NULL)
		return NULL;
	pgn_map_foreach(r->items, collect_cb, &c);
	qsort(c.items, c.n, sizeof(*c.items), cmp);
	*n = c.n;
	return c.items;
}

/* One change to push: an item, or the removal of jid. */
struct change {
	int64_t ver;
	const struct item *it;
	const char *jid;
};

struct change_collect {
	struct change *c;
	size_t n, cap;
	int64_t after;
	int failed;
};

static int
change_add(struct change_collect *cc, int64_t ver, const struct item *it,
	   const char *jid)
{
	if (ver <= cc->after)
		return 0;
	if (cc->n == cc->cap) {
		size_t cap = cc->cap ? cc->cap * 2 : 16;
		struct change *n = realloc(cc->c, cap * sizeof(*n));
		if (n == NULL) {
			cc->failed = 1;
			return 1;
		}
		cc->c = n;
		cc->cap = cap;
	}
	cc->c[cc->n].ver = ver;
	cc->c[cc->n].it = it;
	cc->c[cc->n++].jid = jid;
	return 0;
}

static int
change_item_cb(const char *key, uint64_t id, void *value, void *arg)
{
	const struct item *it = value;
	(void)key, (void)id;
	return change_add(arg, it->ver, it, NULL);
}

static int
change_tomb_cb(const char *key, uint64_t id, void *value, void *arg)
{
	const struct tombstone *t = value;
	(void)id;
	return change_add(arg, t->ver, NULL, key);
}

static int
cmp_change(const void *a, const void *b)
{
	const struct change *x = a, *y = b;
	return x->ver < y->ver ? -1 : x->ver > y->ver;
}

/* §2.6.3: the changes after version 'after', oldest first, as pushes to
 * s (each with the version of its change).  0 or -ENOMEM. */
static int
push_changes(struct roster *r, struct pgn_session *s, int64_t after)
{
	struct change_collect cc = { NULL, 0, 0, after, 0 };

	pgn_map_foreach(r->items, change_item_cb, &cc);
	if (!cc.failed)
		pgn_map_foreach(r->removed, change_tomb_cb, &cc);
	if (cc.failed) {
		free(cc.c);
		return -ENOMEM;
	}
	if (cc.n > 0)
		qsort(cc.c, cc.n, sizeof(*cc.c), cmp_change);
	for (size_t i = 0; i < cc.n; i++)
		push_one(r->rm, s, cc.c[i].it, cc.c[i].jid, cc.c[i].ver);
	free(cc.c);
	return 0;
}

static int
from_owner(const struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;
	return ev->origin != NULL && st->from != NULL && st->to != NULL &&
	       strcmp(st->from->bare, st->to->bare) == 0;
}

static int
on_roster_get(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_xml *req = pgn_xml_first_child(ev->stanza->xml);
	struct sstate *ss;
	struct roster *r;
	struct pgn_xml *q = NULL;
	struct item **items = NULL;
	const char *cver;
	size_t n = 0;
	char v[24];

	if (!from_owner(ev)) {
		pgn_event_error(ev, "auth", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	if (pgn_xml_first_child(req) != NULL) {
		/* §2.1.3: a roster get has no items. */
		pgn_event_error(ev, "modify", "bad-request");
		return PGN_EVENT_HANDLED;
	}
	r = roster_of_session(rm, ev->origin);
	ss = sstate_of(rm, ev->origin);
	if (r == NULL || ss == NULL) {
		pgn_event_error(ev, "wait", "internal-server-error");
		return PGN_EVENT_HANDLED;
	}
	ss->interested = 1;
	cver = pgn_xml_attr(req, "ver");
	if (cver != NULL && *cver != '\0') {
		char *end;
		long long known = strtoll(cver, &end, 10);
		if (*end == '\0' && known >= r->min_ver && known <= r->ver) {
			/* §2.6.3: empty result, then the changes. */
			pgn_event_reply(ev, NULL);
			if (push_changes(r, ev->origin, known) != 0)
				pgn_log(PGN_LOG_WARN,
					"mod_roster: out of memory");
			return PGN_EVENT_HANDLED;
		}
	}
	snprintf(v, sizeof(v), "%" PRId64, r->ver);
	if ((q = pgn_xml_new(NS_ROSTER, "query")) == NULL ||
	    pgn_xml_set_attr(q, "ver", v) != 0 ||
	    (items = items_sorted(r, -1, cmp_jid, &n)) == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (add_item_xml(q, items[i], NULL) != 0)
			goto fail;
	free(items);
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
fail:
	free(items);
	pgn_xml_free(q);
	pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}

static void
reply_error_text(struct pgn_event *ev, const char *type, const char *cond,
		 const char *text)
{
	struct pgn_stanza *e =
		pgn_stanza_error_reply(ev->stanza, type, cond, text);
	if (e != NULL)
		pgn_route(ev->server, e);
}

static int
has_ctrl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20)
			return 1;
	return 0;
}

/* Removal (§2.5): cancel both subscriptions, then drop the item. */
static void
roster_remove(struct roster *r, const char *jid)
{
	struct item *it = pgn_map_get(r->items, jid);
	struct pending *p = pgn_map_del(r->pending, jid);
	if (it != NULL && (has_to(it->sub) || it->ask))
		route_sub(r, "unsubscribe", jid);
	if (p != NULL || (it != NULL && has_from(it->sub))) {
		if (it != NULL && has_from(it->sub))
			send_all_unavailable_to(r, jid);
		route_sub(r, "unsubscribed", jid);
	}
	if (p != NULL) {
		pending_free(p);
		persist_pending(r, jid, NULL);
	}
	if (it != NULL)
		item_remove(r, jid);
}

static int
on_roster_set(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_xml *req = pgn_xml_first_child(ev->stanza->xml);
	struct pgn_xml *x, *itx = NULL;
	struct roster *r;
	struct pgn_jid *jid = NULL;
	struct item *it;
	char **groups = NULL;
	size_t ngroups = 0;
	const char *name, *jattr, *subattr;
	int nitems = 0, full = 0;

	if (!from_owner(ev)) {
		pgn_event_error(ev, "auth", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	for (x = pgn_xml_first_child(req); x != NULL; x = pgn_xml_next(x))
		if (strcmp(pgn_xml_name(x), "item") == 0) {
			itx = x;
			nitems++;
		}
	if (nitems != 1) {
		reply_error_text(ev, "modify", "bad-request",
				 "a roster set has exactly one item");
		return PGN_EVENT_HANDLED;
	}
	if ((r = roster_of_session(rm, ev->origin)) == NULL) {
		pgn_event_error(ev, "wait", "internal-server-error");
		return PGN_EVENT_HANDLED;
	}
	jattr = pgn_xml_attr(itx, "jid");
	if (jattr == NULL) {
		reply_error_text(ev, "modify", "bad-request",
				 "the item has no jid");
		return PGN_EVENT_HANDLED;
	}
	if (pgn_jid_parse(jattr, &jid) != 0) {
		pgn_event_error(ev, "modify", "jid-malformed");
		return PGN_EVENT_HANDLED;
	}
	if (jid->resource != NULL) {
		pgn_jid_free(jid);
		reply_error_text(ev, "modify", "bad-request",
				 "roster items are bare JIDs");
		return PGN_EVENT_HANDLED;
	}
	if (strcmp(jid->bare, r->bare) == 0) {
		pgn_jid_free(jid);
		reply_error_text(ev, "cancel", "not-allowed",
				 "your own JID cannot be a contact");
		return PGN_EVENT_HANDLED;
	}
	subattr = pgn_xml_attr(itx, "subscription");
	if (subattr != NULL && strcmp(subattr, "remove") == 0) {
		if (pgn_map_get(r->items, jid->bare) == NULL) {
			pgn_jid_free(jid);
			pgn_event_error(ev, "modify", "item-not-found");
			return PGN_EVENT_HANDLED;
		}
		roster_remove(r, jid->bare);
		pgn_jid_free(jid);
		pgn_event_reply(ev, NULL);
		return PGN_EVENT_HANDLED;
	}
	/* §2.3.3: limits and groups. */
	name = pgn_xml_attr(itx, "name");
	if (name != NULL && strlen(name) > MAX_NAME_BYTES) {
		reply_error_text(ev, "modify", "not-acceptable",
				 "the name is too long");
		goto done;
	}
	for (x = pgn_xml_first_child(itx); x != NULL; x = pgn_xml_next(x)) {
		char *g, **ng;
		if (strcmp(pgn_xml_name(x), "group") != 0)
			continue;
		if ((g = pgn_xml_text(x)) == NULL)
			goto nomem;
		if (*g == '\0' || strlen(g) > MAX_GROUP_BYTES || has_ctrl(g) ||
		    ngroups >= MAX_GROUPS) {
			free(g);
			reply_error_text(ev, "modify", "not-acceptable",
					 "empty, too long or too many groups");
			goto done;
		}
		for (size_t i = 0; i < ngroups; i++)
			if (strcmp(groups[i], g) == 0) {
				free(g);
				reply_error_text(ev, "modify", "bad-request",
						 "duplicate group");
				goto done;
			}
		if ((ng = realloc(groups, (ngroups + 1) * sizeof(*ng))) ==
		    NULL) {
			free(g);
			goto nomem;
		}
		groups = ng;
		groups[ngroups++] = g;
	}
	it = pgn_map_get(r->items, jid->bare);
	if (it == NULL && (it = item_create(r, jid->bare, &full)) == NULL) {
		if (full) {
			char text[96];
			snprintf(text, sizeof(text),
				 "the roster is full (at most %d items)",
				 rm->max_items);
			reply_error_text(ev, "cancel", "not-allowed", text);
			goto done;
		}
		goto nomem;
	}
	char *nname = xstrdup(name);
	if (name != NULL && nname == NULL)
		goto nomem;
	free(it->name);
	it->name = nname;
	for (size_t i = 0; i < it->ngroups; i++)
		free(it->groups[i]);
	free(it->groups);
	it->groups = groups;
	it->ngroups = ngroups;
	groups = NULL;
	ngroups = 0;
	item_changed(r, it);
	pgn_event_reply(ev, NULL);
	goto done;
nomem:
	pgn_event_error(ev, "wait", "resource-constraint");
done:
	for (size_t i = 0; i < ngroups; i++)
		free(groups[i]);
	free(groups);
	pgn_jid_free(jid);
	return PGN_EVENT_HANDLED;
}

/* ---- pigeonctl ---------------------------------------------------------- */

struct ctl_job {
	struct pgn_command *cmd;
	int op; /* 0 add, 1 delete, 2 get */
	char *contact;
	char *nick;
	char *group;
	int sub;
};

static void
ctl_job_free(struct ctl_job *j)
{
	if (j == NULL)
		return;
	free(j->contact);
	free(j->nick);
	free(j->group);
	free(j);
}

static void
ctl_get(struct roster *r, struct pgn_command *cmd)
{
	size_t n = 0, len = 1;
	struct item **items = items_sorted(r, -1, cmp_jid, &n);
	char *out, *p;

	if (items == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		len += strlen(items[i]->jid) + 16;
		len += items[i]->name != NULL ? strlen(items[i]->name) : 0;
		for (size_t g = 0; g < items[i]->ngroups; g++)
			len += strlen(items[i]->groups[g]) + 1;
	}
	if ((out = malloc(len)) == NULL) {
		free(items);
		goto nomem;
	}
	p = out;
	for (size_t i = 0; i < n; i++) {
		const struct item *it = items[i];
		const char *name = it->name != NULL ? it->name : "";
		p += sprintf(p, "%s\t", it->jid);
		/* One line per item: control characters become spaces. */
		for (const char *c = name; *c != '\0'; c++)
			*p++ = (unsigned char)*c < 0x20 ? ' ' : *c;
		p += sprintf(p, "\t%s\t", sub_names[it->sub]);
		for (size_t g = 0; g < it->ngroups; g++)
			p += sprintf(p, "%s%s", g > 0 ? "," : "",
				     it->groups[g]);
		*p++ = '\n';
	}
	*p = '\0';
	pgn_command_reply(cmd, PGN_CTL_OK, out);
	free(out);
	free(items);
	return;
nomem:
	pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
}

static void
ctl_run(struct roster *r, void *arg)
{
	struct ctl_job *j = arg;
	struct item *it;
	int full = 0;

	if (r->failed) {
		pgn_command_reply(j->cmd, PGN_CTL_ERROR,
				  "cannot read the roster");
		goto out;
	}
	if (!r->exists) {
		pgn_command_reply(j->cmd, PGN_CTL_ERROR, "unknown user");
		goto out;
	}
	switch (j->op) {
	case 0:
		if ((it = pgn_map_get(r->items, j->contact)) == NULL &&
		    (it = item_create(r, j->contact, &full)) == NULL) {
			pgn_command_reply(j->cmd, PGN_CTL_ERROR,
					  full ? "the roster is full"
					       : "out of memory");
			goto out;
		}
		free(it->name);
		it->name = j->nick;
		j->nick = NULL;
		for (size_t i = 0; i < it->ngroups; i++)
			free(it->groups[i]);
		free(it->groups);
		it->groups = NULL;
		it->ngroups = 0;
		if (j->group != NULL && *j->group != '\0') {
			if ((it->groups = malloc(sizeof(char *))) != NULL) {
				it->groups[0] = j->group;
				it->ngroups = 1;
				j->group = NULL;
			}
		}
		it->sub = (enum sub)j->sub;
		it->ask = 0;
		it->approved = 0;
		item_changed(r, it);
		pgn_command_reply(j->cmd, PGN_CTL_OK, NULL);
		break;
	case 1:
		if (pgn_map_get(r->items, j->contact) == NULL) {
			pgn_command_reply(j->cmd, PGN_CTL_ERROR,
					  "no such roster item");
			goto out;
		}
		item_remove(r, j->contact);
		pgn_command_reply(j->cmd, PGN_CTL_OK, NULL);
		break;
	default:
		ctl_get(r, j->cmd);
		break;
	}
out:
	ctl_job_free(j);
}

static int
ctl_bare(const char *user, const char *host, char **out)
{
	struct pgn_jid *j = NULL;
	int rc = pgn_jid_make(user, host, NULL, &j);
	if (rc != 0)
		return rc;
	*out = strdup(j->bare);
	pgn_jid_free(j);
	return *out != NULL ? 0 : -ENOMEM;
}

static void
ctl_start(struct rmod *rm, struct pgn_command *cmd, struct ctl_job *j,
	  const char *user, const char *host)
{
	char *bare = NULL;
	struct roster *r;

	if (ctl_bare(user, host, &bare) != 0) {
		pgn_command_reply(cmd, PGN_CTL_USAGE, "invalid user or host");
		ctl_job_free(j);
		return;
	}
	if (strcmp(strchr(bare, '@') + 1, pgn_host_name(pgn_module_host(rm->m))) !=
	    0) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "not a local host");
		goto fail;
	}
	if ((r = roster_get(rm, bare)) == NULL)
		goto nomem;
	if (r->loaded) {
		ctl_run(r, j);
		roster_maybe_free(r);
	} else if (roster_wait(r, ctl_run, j) != 0) {
		roster_maybe_free(r);
		goto nomem;
	}
	free(bare);
	return;
nomem:
	pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
fail:
	ctl_job_free(j);
	free(bare);
}

static void
ctl_roster_item(struct pgn_command *cmd, int argc, char *const *argv,
		void *arg, int op)
{
	struct rmod *rm = arg;
	struct ctl_job *j;

	/* add takes nick, group and subscription after the two JIDs. */
	if (argc != (op == 0 ? 7 : 4)) {
		pgn_command_reply(cmd, PGN_CTL_USAGE,
				  op == 0 ? "7 arguments expected"
					  : "4 arguments expected");
		return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	j->cmd = cmd;
	j->op = op;
	if (ctl_bare(argv[2], argv[3], &j->contact) != 0) {
		pgn_command_reply(cmd, PGN_CTL_USAGE, "invalid contact JID");
		ctl_job_free(j);
		return;
	}
	if (op == 0) {
		if ((j->sub = parse_sub(argv[6])) < 0) {
			pgn_command_reply(cmd, PGN_CTL_USAGE,
					  "SUBS is none, to, from or both");
			ctl_job_free(j);
			return;
		}
		if (strlen(argv[4]) > MAX_NAME_BYTES ||
		    strlen(argv[5]) > MAX_GROUP_BYTES || has_ctrl(argv[5])) {
			pgn_command_reply(cmd, PGN_CTL_USAGE,
					  "NICK or GROUP too long or invalid");
			ctl_job_free(j);
			return;
		}
		if ((*argv[4] != '\0' && (j->nick = strdup(argv[4])) == NULL) ||
		    (j->group = strdup(argv[5])) == NULL) {
			pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
			ctl_job_free(j);
			return;
		}
	}
	ctl_start(rm, cmd, j, argv[0], argv[1]);
}

static void
ctl_add(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	ctl_roster_item(cmd, argc, argv, arg, 0);
}

static void
ctl_delete(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	ctl_roster_item(cmd, argc, argv, arg, 1);
}

static void
ctl_get_roster(struct pgn_command *cmd, int argc, char *const *argv,
	       void *arg)
{
	struct ctl_job *j;
	if (argc != 2) {
		pgn_command_reply(cmd, PGN_CTL_USAGE, "2 arguments expected");
		return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	j->cmd = cmd;
	j->op = 2;
	ctl_start(arg, cmd, j, argv[0], argv[1]);
}

/* ---- module ------------------------------------------------------------- */

/* ---- the "roster" service (pigeon/roster.h) ----------------------------- */

struct contact_ask {
	unsigned mask;
	pgn_roster_found_fn fn;
	void *arg;
};

static void
on_contact_row(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct contact_ask *a = arg;
	int sub;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: reading a contact: %s",
			res->errmsg);
		a->fn(res->error, 0, a->arg);
	} else {
		sub = res->nrows > 0 ? parse_sub(pgn_store_value(res, 0, 0))
				     : -1;
		a->fn(0, sub >= 0 && (a->mask & (1u << sub)) != 0, a->arg);
	}
	free(a);
}

static int
svc_has_contact(void *instance, const char *user, const char *contact,
		unsigned mask, pgn_roster_found_fn fn, void *arg)
{
	struct rmod *rm = instance;
	struct roster *r = pgn_map_get(rm->users, user);
	const char *at = strchr(user, '@');
	struct contact_ask *a;
	char *username;
	int rc;

	/* The cache is the truth while it is loaded. */
	if (r != NULL && r->loaded && !r->failed) {
		const struct item *it = pgn_map_get(r->items, contact);
		fn(0, it != NULL && (mask & (1u << it->sub)) != 0, arg);
		return 0;
	}
	/* Else one read: the store runs it after every write queued. */
	if (at == NULL || (a = calloc(1, sizeof(*a))) == NULL)
		return -ENOMEM;
	if ((username = strndup(user, (size_t)(at - user))) == NULL) {
		free(a);
		return -ENOMEM;
	}
	a->mask = mask;
	a->fn = fn;
	a->arg = arg;
	const char *params[3] = { at + 1, username, contact };
	rc = pgn_store_query(pgn_server_store(rm->srv),
			     "SELECT subscription FROM roster WHERE host = $1 "
			     "AND username = $2 AND jid = $3",
			     3, params, 0, on_contact_row, a);
	free(username);
	if (rc < 0) {
		free(a);
		return -ENOMEM;
	}
	return 0;
}

_Static_assert((1u << SUB_NONE) == PGN_SUB_NONE &&
		       (1u << SUB_TO) == PGN_SUB_TO &&
		       (1u << SUB_FROM) == PGN_SUB_FROM &&
		       (1u << SUB_BOTH) == PGN_SUB_BOTH,
	       "enum sub is the bit number of pigeon/roster.h's mask");

static const struct pgn_roster_service roster_service = {
	.has_contact = svc_has_contact,
};

static int
free_roster_cb(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key, (void)id, (void)arg;
	roster_destroy(value);
	return 0;
}

static void
roster_unload(struct pgn_module *m)
{
	struct rmod *rm = pgn_module_data(m);
	if (rm == NULL)
		return;
	pgn_map_foreach(rm->users, free_roster_cb, NULL);
	pgn_map_free(rm->users);
	pgn_map_foreach(rm->removals, free_removal_cb, NULL);
	pgn_map_free(rm->removals);
	free(rm);
	pgn_module_set_data(m, NULL);
}

static int
roster_load(struct pgn_module *m)
{
	struct rmod *rm = calloc(1, sizeof(*rm));
	long max_items;
	int rc;

	if (rm == NULL || (rm->users = pgn_map_new()) == NULL ||
	    (rm->removals = pgn_map_new()) == NULL) {
		if (rm != NULL)
			pgn_map_free(rm->users);
		free(rm);
		return -ENOMEM;
	}
	rm->m = m;
	rm->srv = pgn_module_server(m);
	if ((rc = pgn_module_option_long(m, "max_items", DEFAULT_MAX_ITEMS, 1,
					 MAX_MAX_ITEMS, &max_items)) < 0) {
		pgn_map_free(rm->users);
		pgn_map_free(rm->removals);
		free(rm);
		return rc;
	}
	rm->max_items = (int)max_items;
	pgn_module_set_data(m, rm);
	if ((rc = pgn_module_hook(m, "iq-get/bare/" NS_ROSTER ":query",
				  on_roster_get, rm, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-set/bare/" NS_ROSTER ":query",
				  on_roster_set, rm, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "pre-presence/self", on_self_presence,
				  rm, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "pre-presence/bare", on_out_presence, rm,
				  0)) < 0 ||
	    (rc = pgn_module_hook(m, "pre-presence/full", on_out_presence, rm,
				  0)) < 0 ||
	    (rc = pgn_module_hook(m, "pre-presence/host", on_out_presence, rm,
				  0)) < 0 ||
	    (rc = pgn_module_hook(m, "presence/bare", on_in_presence, rm, 0)) <
		    0 ||
	    (rc = pgn_module_hook(m, "presence/full", on_in_presence, rm, 0)) <
		    0 ||
	    (rc = pgn_module_hook(m, "session-started", on_session_started, rm,
				  0)) < 0 ||
	    (rc = pgn_module_hook(m, "session-ended", on_session_ended, rm,
				  0)) < 0 ||
	    (rc = pgn_module_hook(m, "stream-features", on_features, rm, 0)) <
		    0 ||
	    (rc = pgn_module_hook(m, "account-removing", on_account_removing,
				  rm, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "account-removed", on_account_removed,
				  rm, 0)) < 0 ||
	    (rc = pgn_module_command(m, "add_rosteritem", ctl_add, rm)) < 0 ||
	    (rc = pgn_module_command(m, "delete_rosteritem", ctl_delete, rm)) <
		    0 ||
	    (rc = pgn_module_command(m, "get_roster", ctl_get_roster, rm)) < 0 ||
	    (rc = pgn_module_provide(m, PGN_ROSTER_SERVICE, &roster_service,
				     rm)) < 0)
		goto fail;
	return 0;
fail:
	roster_unload(m);
	return rc;
}

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_roster",
	.description = "Roster and presence (RFC 6121)",
	.load = roster_load,
	.unload = roster_unload,
};
