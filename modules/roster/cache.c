/* mod_roster: the per-user cache, its loading from the store, the
 * write-through and the roster pushes. */
#include "roster_priv.h"

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
void
roster_destroy(struct roster *r)
{
	struct waiter *w = r->waiters;
	while (w != NULL) {
		struct waiter *next = w->next;
		free(w);
		w = next;
	}
	pgn_map_free_values(r->items, free_item_value);
	pgn_map_free_values(r->removed, free);
	pgn_map_free_values(r->pending, free_pending_value);
	free(r->sids);
	free(r->bare);
	free(r->user);
	free(r->host);
	free(r);
}

/* Frees the cache when nobody needs it: no load outstanding, nothing
 * waiting, no live session.  Sessions that went away without a
 * "session-ended" (never expected, but cheap to tolerate) are pruned. */
void
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

int
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

void
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
int
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
struct roster *
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

void
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
int
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
void
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
void
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
void
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
struct item *
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
