/* XEP-0191: Simple Communications Blocking.
 *
 * A user's block list is a set of JIDs (table `blocklist`) matched as
 * XEP-0016 does ("JID Matching": full JID, bare JID, domain/resource,
 * domain with its subdomains).  Sections below are those of the use cases
 * of XEP-0191 1.3 (§3.2 list, §3.3 block, §3.4 unblock, §3.5 unblock
 * all).  While the user has sessions the list is cached here,
 * referenced by each session and loaded in "session-started" (the session
 * is held until then), so that the filters, which see every stanza of the
 * user, never wait for storage.  A stanza for a user who is offline and
 * whose list is not cached is held while the list loads, then judged; the
 * list is dropped again once nothing uses it.
 *
 * Filters, PGN_PRIO_FILTER (doc/modules.md):
 *   inbound, on the user's host ("message/bare", "message/full",
 *   "presence/bare", "presence/full", "iq/full"): from a blocked JID,
 *   messages and iq get/set are answered service-unavailable, presence,
 *   errors and iq results are dropped (§3.3), so the user looks offline;
 *   outbound, "pre-<kind>/{host,bare,full}" on the sender's host: to a
 *   blocked JID, messages and iq get/set are answered not-acceptable with
 *   <blocked xmlns='urn:xmpp:blocking:errors'/>, presence is dropped.
 * The only iq the server answers on a user's behalf that is filtered is
 * jabber:iq:last (XEP-0012 §8: last activity is presence information).
 *
 * Changes are applied to the cache at once (the block is in force for
 * the next stanza), written in one transaction, and answered, pushed to
 * the resources that asked for the list and followed by the presence
 * changes of §3.3/§3.4 once the write committed; a failed write is
 * undone in the cache and answered internal-server-error. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "pigeon/blocking.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"
#define NS_LAST "jabber:iq:last"

#define MAX_ITEMS_LIMIT 100000

enum direction { INBOUND, OUTBOUND };

enum verdict {
	V_PASS,        /* not blocked: routing continues */
	V_DROP,        /* silently */
	V_UNAVAILABLE, /* inbound: service-unavailable, as if offline */
	V_BLOCKED,     /* outbound: not-acceptable + <blocked/> */
	V_FAIL,        /* the list could not be loaded: fail closed */
};

/* A stanza, a session or a question of the "blocking" service waiting
 * for a list to load. */
struct waiter {
	struct waiter *next;
	struct pgn_hold *hold; /* the held stanza, or NULL */
	enum direction dir;
	uint64_t sid; /* the held session, or the sender of a stanza */
	/* The service's question (hold NULL, fn set): is jid blocked. */
	pgn_blocking_fn fn;
	void *arg;
	struct pgn_jid *jid;
};

struct blist {
	struct blocking *b;
	char *bare; /* "user@host", the map key */
	char *user;
	struct pgn_jid **items;
	size_t n, cap;
	unsigned refs;       /* sessions using it (marked in session data) */
	unsigned busy;       /* its waiters are running: do not free */
	int loaded, loading; /* loading: a store callback has the pointer */
	struct waiter *waiters, **wait_tail;
};

struct blocking {
	struct pgn_module *m;
	struct pgn_server *srv;
	struct pgn_store *store;
	const char *host;
	struct pgn_map *lists; /* bare -> struct blist */
	size_t max_items;
	uint64_t push_seq;
};

/* Per-session data. */
struct bsess {
	char *bare;    /* the account: in "session-ended" pgn_session_jid()
	                * is NULL once the stream is closing */
	int requested; /* asked for the list: gets pushes (§3.3) */
	int ref;       /* holds a reference on the user's blist */
};

static void
bsess_free(void *p)
{
	struct bsess *bs = p;
	if (bs != NULL)
		free(bs->bare);
	free(bs);
}

enum op { OP_BLOCK, OP_UNBLOCK, OP_UNBLOCK_ALL };

/* One block/unblock command between the cache update and the commit. */
struct change {
	struct blocking *b;
	char *bare;
	enum op op;
	struct pgn_jid **jids; /* the items added or removed (owned) */
	size_t n;
	struct pgn_hold *hold; /* the request, answered after the commit */
};

static int
type_is(const struct pgn_stanza *st, const char *t)
{
	return st->type != NULL && strcmp(st->type, t) == 0;
}

/* RFC 6120 §8.3.1: errors and iq results are never answered. */
static int
answerable(const struct pgn_stanza *st)
{
	if (st->kind == PGN_STANZA_OTHER || type_is(st, "error"))
		return 0;
	return st->kind != PGN_STANZA_IQ || type_is(st, "get") ||
	       type_is(st, "set");
}

/* ---- the list ----------------------------------------------------------- */

static int
domain_matches(const char *item, const char *domain)
{
	size_t li = strlen(item), ld = strlen(domain);
	if (li == ld)
		return strcmp(item, domain) == 0;
	/* "example.com" also matches "muc.example.com" ("JID Matching"). */
	return ld > li + 1 && domain[ld - li - 1] == '.' &&
	       strcmp(domain + ld - li, item) == 0;
}

static int
item_matches(const struct pgn_jid *it, const struct pgn_jid *j)
{
	if (it->node != NULL) {
		if (j->node == NULL || strcmp(it->bare, j->bare) != 0)
			return 0;
		return it->resource == NULL ||
		       (j->resource != NULL &&
		        strcmp(it->resource, j->resource) == 0);
	}
	if (it->resource != NULL)
		return j->node == NULL && j->resource != NULL &&
		       strcmp(it->domain, j->domain) == 0 &&
		       strcmp(it->resource, j->resource) == 0;
	return domain_matches(it->domain, j->domain);
}

static int
is_blocked(const struct blist *l, const struct pgn_jid *j)
{
	for (size_t i = 0; i < l->n; i++)
		if (item_matches(l->items[i], j))
			return 1;
	return 0;
}

static ssize_t
item_index(const struct blist *l, const char *full)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->items[i]->full, full) == 0)
			return (ssize_t)i;
	return -1;
}

/* Takes jid (also on failure). */
static int
item_add(struct blist *l, struct pgn_jid *jid)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct pgn_jid **v = realloc(l->items, cap * sizeof(*v));
		if (v == NULL) {
			pgn_jid_free(jid);
			return -ENOMEM;
		}
		l->items = v;
		l->cap = cap;
	}
	l->items[l->n++] = jid;
	return 0;
}

/* Removes item i and gives it to the caller. */
static struct pgn_jid *
item_take(struct blist *l, size_t i)
{
	struct pgn_jid *jid = l->items[i];
	memmove(&l->items[i], &l->items[i + 1],
	        (l->n - i - 1) * sizeof(*l->items));
	l->n--;
	return jid;
}

static void
items_clear(struct blist *l)
{
	for (size_t i = 0; i < l->n; i++)
		pgn_jid_free(l->items[i]);
	l->n = 0;
}

static void
blist_free(struct blist *l)
{
	items_clear(l);
	free(l->items);
	free(l->bare);
	free(l->user);
	free(l);
}

/* The cached list of bare, created (not loaded) if absent; NULL on
 * allocation failure. */
static struct blist *
blist_get(struct blocking *b, const char *bare)
{
	struct blist *l = pgn_map_get(b->lists, bare);
	const char *at = strchr(bare, '@');
	if (l != NULL)
		return l;
	if (at == NULL)
		return NULL;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		goto fail;
	l->b = b;
	l->wait_tail = &l->waiters;
	l->bare = strdup(bare);
	l->user = strndup(bare, (size_t)(at - bare));
	if (l->bare == NULL || l->user == NULL ||
	    pgn_map_set(b->lists, bare, l) != 0)
		goto fail;
	return l;
fail:
	if (l != NULL)
		blist_free(l);
	return NULL;
}

/* Drops the list once no session, waiter or store callback uses it. */
static void
blist_release(struct blocking *b, struct blist *l)
{
	if (l->refs > 0 || l->busy > 0 || l->loading || l->waiters != NULL)
		return;
	pgn_map_del(b->lists, l->bare);
	blist_free(l);
}

/* ---- verdicts -------------------------------------------------------- */

/* dir says whose list l is: INBOUND, the recipient's; OUTBOUND, the
 * sender's. */
static enum verdict
judge(enum direction dir, const struct blist *l, const struct pgn_stanza *st)
{
	const struct pgn_jid *peer = dir == INBOUND ? st->from : st->to;
	if (peer == NULL || !is_blocked(l, peer))
		return V_PASS;
	if (st->kind == PGN_STANZA_PRESENCE || !answerable(st))
		return V_DROP;
	return dir == INBOUND ? V_UNAVAILABLE : V_BLOCKED;
}

/* The error for a stanza the sender may not send: not-acceptable with
 * the blocking condition (§3.3), or internal-server-error. */
static struct pgn_stanza *
outbound_error(const struct pgn_stanza *st, enum verdict v)
{
	struct pgn_xml *blocked;

	if (v != V_BLOCKED)
		return pgn_stanza_error_reply(st, "wait",
		                              "internal-server-error", NULL);
	blocked = pgn_xml_new(NS_BLOCKING_ERRORS, "blocked");
	if (blocked == NULL)
		return NULL;
	return pgn_stanza_error_reply_app(st, "cancel", "not-acceptable", NULL,
	                                  blocked);
}

/* Routes err (taken) within ev's routing, so that the client stanza
 * being handled is acknowledged once err is routed too; ev is NULL once
 * the handler is continued after storage (the hold taken): err is then
 * the server's own. */
static void
route_error(struct blocking *b, struct pgn_event *ev, struct pgn_stanza *err)
{
	if (ev != NULL)
		pgn_event_route(ev, err);
	else
		pgn_route(b->srv, err);
}

/* Carries out v for st (borrowed), the stanza of ev (NULL: see
 * route_error).  origin: the sending session for an outbound stanza,
 * which gets its error directly: routed, the error would come from the
 * blocked JID and our own inbound filter would drop it. */
static void
execute(struct blocking *b, struct pgn_event *ev, enum direction dir,
        enum verdict v, const struct pgn_stanza *st,
        struct pgn_session *origin)
{
	struct pgn_stanza *err = NULL;

	pgn_log(PGN_LOG_DEBUG, "mod_blocking: %s %s %s -> %s: %s",
	        dir == INBOUND ? "inbound" : "outbound",
	        st->kind == PGN_STANZA_MESSAGE    ? "message"
	        : st->kind == PGN_STANZA_PRESENCE ? "presence"
	                                          : "iq",
	        st->from != NULL ? st->from->full : "?",
	        st->to != NULL ? st->to->full : "?",
	        v == V_DROP   ? "dropped"
	        : v == V_FAIL ? "list unavailable"
	                      : "refused");
	if (v == V_DROP || !answerable(st) || st->kind == PGN_STANZA_PRESENCE)
		return;
	if (dir == INBOUND) {
		err = pgn_stanza_error_reply(
		        st, v == V_FAIL ? "wait" : "cancel",
		        v == V_FAIL ? "internal-server-error"
		                    : "service-unavailable",
		        NULL);
		if (err != NULL)
			route_error(b, ev, err);
		return;
	}
	if (origin == NULL)
		return;
	err = outbound_error(st, v);
	if (err != NULL) {
		pgn_session_send(origin, err->xml);
		pgn_stanza_free(err);
	}
}

static void
run_held(struct blocking *b, struct waiter *w, enum verdict v)
{
	struct pgn_stanza *st;

	if (v == V_PASS) {
		pgn_hold_resume(w->hold);
		return;
	}
	st = pgn_hold_take(w->hold);
	if (st == NULL)
		return;
	execute(b, NULL, w->dir, v, st, pgn_session_find(b->srv, w->sid));
	pgn_stanza_free(st);
}

static void
on_loaded(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct blist *l = arg;
	struct blocking *b = l->b;
	struct waiter *w, *next;
	int ok = res->error == 0;

	l->loading = 0;
	items_clear(l);
	for (int i = 0; ok && i < res->nrows; i++) {
		struct pgn_jid *jid;
		const char *s = pgn_store_value(res, i, 0);
		int rc = s != NULL ? pgn_jid_parse(s, &jid) : -EINVAL;
		if (rc == -EINVAL) {
			pgn_log(PGN_LOG_WARN,
			        "mod_blocking: %s: ignoring invalid stored "
			        "item",
			        l->bare);
			continue;
		}
		if (rc < 0 || item_add(l, jid) < 0)
			ok = 0;
	}
	if (ok) {
		l->loaded = 1;
	} else {
		items_clear(l);
		pgn_log(PGN_LOG_ERROR,
		        "mod_blocking: cannot load the block list of %s: %s",
		        l->bare, res->error ? res->errmsg : "out of memory");
	}

	/* Waiters may route, and routing may come back here: work on a
	 * detached queue and keep the list alive meanwhile. */
	w = l->waiters;
	l->waiters = NULL;
	l->wait_tail = &l->waiters;
	l->busy++;
	for (; w != NULL; w = next) {
		next = w->next;
		if (w->hold != NULL) {
			const struct pgn_stanza *st = pgn_hold_stanza(w->hold);
			run_held(b, w, ok ? judge(w->dir, l, st) : V_FAIL);
		} else if (w->fn != NULL) {
			/* Fails closed, as the filters do. */
			w->fn(ok ? 0 : -EIO, !ok || is_blocked(l, w->jid),
			      w->arg);
			pgn_jid_free(w->jid);
		} else {
			struct pgn_session *s =
			        pgn_session_find(b->srv, w->sid);
			if (s != NULL && !ok)
				/* Without its list the user's blocks could
				 * not be enforced: refuse the session. */
				pgn_session_close(s, "internal-server-error",
				                  "block list unavailable");
			if (s != NULL)
				pgn_session_release(s);
		}
		free(w);
	}
	l->busy--;
	blist_release(b, l);
}

/* Starts loading l if nobody did.  0 or a negative error. */
static int
blist_load(struct blocking *b, struct blist *l)
{
	const char *params[2] = {b->host, l->user};
	int rc;

	if (l->loading)
		return 0;
	rc = pgn_store_query(b->store,
	                     "SELECT jid FROM blocklist WHERE host = $1 AND "
	                     "username = $2",
	                     2, params, 0, on_loaded, l);
	if (rc == 0)
		l->loading = 1;
	return rc;
}

/* Holds ev's stanza until l is loaded.  0 or a negative error (nothing
 * held). */
static int
wait_for_list(struct blocking *b, struct blist *l, struct pgn_event *ev,
              enum direction dir)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	if (blist_load(b, l) < 0 || (w->hold = pgn_event_hold(ev)) == NULL) {
		free(w);
		return -ENOMEM;
	}
	w->dir = dir;
	w->sid = ev->origin != NULL ? pgn_session_id(ev->origin) : 0;
	*l->wait_tail = w;
	l->wait_tail = &w->next;
	return 0;
}

static int
filter(struct blocking *b, struct pgn_event *ev, enum direction dir)
{
	const struct pgn_stanza *st = ev->stanza;
	const struct pgn_jid *user = dir == INBOUND ? st->to : st->from;
	const struct pgn_jid *peer = dir == INBOUND ? st->from : st->to;
	struct blist *l;
	enum verdict v;

	/* Not our user, or between the user's own resources. */
	if (user == NULL || peer == NULL || user->node == NULL ||
	    strcmp(user->domain, b->host) != 0 ||
	    strcmp(user->bare, peer->bare) == 0)
		return PGN_EVENT_PASS;
	l = pgn_map_get(b->lists, user->bare);
	if (l != NULL && l->loaded) {
		v = judge(dir, l, st);
		if (v == V_PASS)
			return PGN_EVENT_PASS;
		execute(b, ev, dir, v, st, ev->origin);
		return PGN_EVENT_HANDLED;
	}
	/* Not cached: the user has no session.  Presence notifications,
	 * probes (only available resources answer them) and iqs to full
	 * JIDs reach nobody then (the router drops or bounces them as we
	 * would), so only what may be stored or answered on the user's
	 * behalf needs the list.  This spares a load per contact when a
	 * user with many offline contacts logs in. */
	if (dir == INBOUND && l == NULL &&
	    ((st->kind == PGN_STANZA_PRESENCE &&
	      (st->type == NULL || type_is(st, "unavailable") ||
	       type_is(st, "probe"))) ||
	     (st->kind == PGN_STANZA_IQ && user->resource != NULL)))
		return PGN_EVENT_PASS;
	l = blist_get(b, user->bare);
	if (l == NULL || wait_for_list(b, l, ev, dir) < 0) {
		if (l != NULL)
			blist_release(b, l);
		execute(b, ev, dir, V_FAIL, st, ev->origin);
		return PGN_EVENT_HANDLED;
	}
	return PGN_EVENT_HANDLED;
}

static int
on_inbound(struct pgn_event *ev, void *arg)
{
	return filter(arg, ev, INBOUND);
}

static int
on_outbound(struct pgn_event *ev, void *arg)
{
	return filter(arg, ev, OUTBOUND);
}

/* ---- sessions -------------------------------------------------------- */

static int
on_session_started(struct pgn_event *ev, void *arg)
{
	struct blocking *b = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *jid = s != NULL ? pgn_session_jid(s) : NULL;
	struct bsess *bs = NULL;
	struct waiter *w = NULL;
	struct blist *l;

	if (jid == NULL)
		return PGN_EVENT_PASS;
	l = blist_get(b, jid->bare);
	bs = calloc(1, sizeof(*bs));
	if (l == NULL || bs == NULL || (bs->bare = strdup(jid->bare)) == NULL)
		goto fail;
	if (!l->loaded &&
	    ((w = calloc(1, sizeof(*w))) == NULL || blist_load(b, l) < 0))
		goto fail;
	if (pgn_session_set_data(s, b->m, bs, bsess_free) < 0)
		goto fail;
	bs->ref = 1;
	l->refs++;
	if (w != NULL) {
		/* The session's stanzas wait for the list (they queue). */
		w->sid = pgn_session_id(s);
		pgn_session_hold(s);
		*l->wait_tail = w;
		l->wait_tail = &w->next;
	}
	return PGN_EVENT_PASS;
fail:
	bsess_free(bs);
	free(w);
	if (l != NULL)
		blist_release(b, l);
	pgn_log(PGN_LOG_ERROR,
	        "session %" PRIu64 ": mod_blocking: cannot "
	        "load the block list",
	        pgn_session_id(s));
	pgn_session_close(s, "internal-server-error", "block list unavailable");
	return PGN_EVENT_PASS;
}

static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct blocking *b = arg;
	struct bsess *bs = ev->origin != NULL
	                           ? pgn_session_get_data(ev->origin, b->m)
	                           : NULL;
	struct blist *l;

	if (bs == NULL || !bs->ref)
		return PGN_EVENT_PASS;
	bs->ref = 0;
	l = pgn_map_get(b->lists, bs->bare);
	if (l != NULL && l->refs > 0) {
		l->refs--;
		blist_release(b, l);
	}
	return PGN_EVENT_PASS;
}

/* ---- the commands (§3.2-§3.5) ------------------------------------------- */

/* The user's own list for a command the user sent to their account; NULL
 * for anybody else's request (not ours to answer: the router's
 * service-unavailable applies). */
static struct blist *
own_list(struct blocking *b, struct pgn_event *ev, int *not_loaded)
{
	const struct pgn_stanza *st = ev->stanza;
	struct blist *l;

	*not_loaded = 0;
	if (ev->origin == NULL || st->from == NULL || st->to == NULL ||
	    st->from->node == NULL || strcmp(st->from->bare, st->to->bare) != 0)
		return NULL;
	l = pgn_map_get(b->lists, st->from->bare);
	if (l == NULL || !l->loaded) {
		/* session-started failed to load it: the session is
		 * closing. */
		*not_loaded = 1;
		return NULL;
	}
	return l;
}

/* An error for st (borrowed), the stanza of ev (NULL: see route_error). */
static void
error_text(struct blocking *b, struct pgn_event *ev,
           const struct pgn_stanza *st, const char *type,
           const char *condition, const char *text)
{
	struct pgn_stanza *err =
	        pgn_stanza_error_reply(st, type, condition, text);
	if (err != NULL)
		route_error(b, ev, err);
}

static int
add_items(struct pgn_xml *parent, struct pgn_jid *const *jids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct pgn_xml *it =
		        pgn_xml_add_child(parent, NS_BLOCKING, "item");
		if (it == NULL ||
		    pgn_xml_set_attr(it, "jid", jids[i]->full) != 0)
			return -ENOMEM;
	}
	return 0;
}

static int
on_blocklist(struct pgn_event *ev, void *arg)
{
	struct blocking *b = arg;
	int not_loaded;
	struct blist *l = own_list(b, ev, &not_loaded);
	struct pgn_xml *q;
	struct bsess *bs;

	if (l == NULL) {
		if (!not_loaded)
			return PGN_EVENT_PASS;
		pgn_event_error(ev, "wait", "internal-server-error");
		return PGN_EVENT_HANDLED;
	}
	q = pgn_xml_new(NS_BLOCKING, "blocklist");
	if (q == NULL || add_items(q, l->items, l->n) < 0) {
		pgn_xml_free(q);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, q);
	bs = pgn_session_get_data(ev->origin, b->m);
	if (bs != NULL)
		bs->requested = 1;
	return PGN_EVENT_HANDLED;
}

static void
change_free(struct change *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		pgn_jid_free(c->jids[i]);
	free(c->jids);
	free(c->bare);
	free(c);
}

/* Takes jid (also on failure). */
static int
change_add(struct change *c, struct pgn_jid *jid, size_t max)
{
	if (c->jids == NULL) {
		c->jids = calloc(max ? max : 1, sizeof(*c->jids));
		if (c->jids == NULL) {
			pgn_jid_free(jid);
			return -ENOMEM;
		}
	}
	c->jids[c->n++] = jid;
	return 0;
}

static int
change_has(const struct change *c, const char *full)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->jids[i]->full, full) == 0)
			return 1;
	return 0;
}

/* Sends the push of c to every resource of c->bare that asked for the
 * list (§3.3, §3.4, §3.5). */
static void
push(struct blocking *b, const struct change *c)
{
	for (struct pgn_session *s = pgn_user_sessions(b->srv, c->bare);
	     s != NULL; s = pgn_session_next(s)) {
		struct bsess *bs = pgn_session_get_data(s, b->m);
		const struct pgn_jid *jid = pgn_session_jid(s);
		struct pgn_xml *iq, *op;
		char id[48];

		if (bs == NULL || !bs->requested || jid == NULL)
			continue;
		snprintf(id, sizeof(id), "blocking-push-%" PRIu64,
		         ++b->push_seq);
		iq = pgn_xml_new(PGN_NS_CLIENT, "iq");
		if (iq == NULL || pgn_xml_set_attr(iq, "type", "set") != 0 ||
		    pgn_xml_set_attr(iq, "id", id) != 0 ||
		    pgn_xml_set_attr(iq, "to", jid->full) != 0 ||
		    (op = pgn_xml_add_child(iq, NS_BLOCKING,
		                            c->op == OP_BLOCK ? "block"
		                                              : "unblock")) ==
		            NULL ||
		    add_items(op, c->jids, c->op == OP_UNBLOCK_ALL ? 0 : c->n) <
		            0) {
			pgn_log(PGN_LOG_ERROR,
			        "session %" PRIu64 ": mod_blocking: push lost "
			        "(out of memory)",
			        pgn_session_id(s));
			pgn_xml_free(iq);
			continue;
		}
		pgn_session_send(s, iq);
		pgn_xml_free(iq);
	}
}

/* Routes <presence type=type from=from to=to/> as the server (no
 * outbound filter: the peer may be blocked by now). */
static void
send_presence(struct blocking *b, const char *type, const char *from,
              const char *to)
{
	struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "presence");
	struct pgn_stanza *st;
	int bad = 0;

	if (x == NULL || pgn_xml_set_attr(x, "type", type) != 0 ||
	    pgn_xml_set_attr(x, "from", from) != 0 ||
	    pgn_xml_set_attr(x, "to", to) != 0) {
		pgn_xml_free(x);
		return;
	}
	st = pgn_stanza_new(x, &bad);
	if (st != NULL)
		pgn_route(b->srv, st);
}

/* §3.3: the newly blocked contacts see the user go offline.  Only JIDs
 * with a node name address somebody; a blocked domain is not told. */
static void
announce_block(struct blocking *b, const struct change *c)
{
	for (struct pgn_session *s = pgn_user_sessions(b->srv, c->bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_jid *jid = pgn_session_jid(s);
		if (jid == NULL || !pgn_session_available(s))
			continue;
		for (size_t i = 0; i < c->n; i++)
			if (c->jids[i]->node != NULL &&
			    strcmp(c->jids[i]->bare, c->bare) != 0)
				send_presence(b, "unavailable", jid->full,
				              c->jids[i]->full);
	}
}

/* §3.4: the unblocked contacts get the user's current presence again,
 * and the user theirs.  The presence module answers probes with the
 * rules of RFC 6121 §4.3 (subscriptions), so a probe "from the contact"
 * sends the user's presence to the contact only if the contact may see
 * it, and a probe from the user fetches the contact's. */
static void
announce_unblock(struct blocking *b, const struct change *c)
{
	for (size_t i = 0; i < c->n; i++) {
		const struct pgn_jid *jid = c->jids[i];
		if (jid->node == NULL || strcmp(jid->bare, c->bare) == 0)
			continue;
		send_presence(b, "probe", jid->bare, c->bare);
		send_presence(b, "probe", c->bare, jid->bare);
	}
}

/* Undoes c in the cache after a failed write. */
static void
revert(struct blocking *b, struct change *c)
{
	struct blist *l = pgn_map_get(b->lists, c->bare);

	if (l == NULL || !l->loaded)
		return; /* not cached: it is reloaded from the store */
	for (size_t i = 0; i < c->n; i++) {
		ssize_t k = item_index(l, c->jids[i]->full);
		if (c->op == OP_BLOCK) {
			if (k >= 0)
				pgn_jid_free(item_take(l, (size_t)k));
		} else if (k < 0) {
			struct pgn_jid *copy = pgn_jid_copy(c->jids[i]);
			if (copy == NULL || item_add(l, copy) < 0)
				pgn_log(PGN_LOG_ERROR,
				        "mod_blocking: %s: cache differs from "
				        "the store (out of memory)",
				        c->bare);
		}
	}
}

static void
on_written(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct change *c = arg;
	struct blocking *b = c->b;
	struct pgn_stanza *st = pgn_hold_take(c->hold), *reply = NULL;

	if (res->error != 0) {
		pgn_log(PGN_LOG_ERROR,
		        "mod_blocking: cannot save the block list of %s: %s",
		        c->bare, res->errmsg);
		revert(b, c);
		if (st != NULL)
			error_text(b, NULL, st, "wait",
			           "internal-server-error", NULL);
		goto done;
	}
	if (st != NULL && (reply = pgn_stanza_iq_result(st, NULL)) != NULL)
		pgn_route(b->srv, reply);
	push(b, c);
	if (c->op == OP_BLOCK)
		announce_block(b, c);
	else
		announce_unblock(b, c);
done:
	pgn_stanza_free(st);
	change_free(c);
}

/* Writes c (applied to the cache already) and answers when it
 * committed.  Takes c.  Returns PGN_EVENT_HANDLED. */
static int
commit(struct blocking *b, struct pgn_event *ev, struct change *c)
{
	static const char ins[] =
	        "INSERT INTO blocklist (host, username, jid) VALUES ($1, $2, "
	        "$3) ON CONFLICT DO NOTHING";
	static const char del[] = "DELETE FROM blocklist WHERE host = $1 "
	                          "AND username = $2 AND jid = $3";
	static const char del_all[] = "DELETE FROM blocklist WHERE host = $1 "
	                              "AND username = $2";
	size_t nst = c->op == OP_UNBLOCK_ALL ? 1 : c->n;
	const char **sqls = calloc(nst, sizeof(*sqls));
	int *np = calloc(nst, sizeof(*np));
	const char **pv = calloc(nst * 3, sizeof(*pv));
	const char *const **pp = calloc(nst, sizeof(*pp));
	const char *user = ev->stanza->from->node;
	int rc = -ENOMEM;

	if (sqls == NULL || np == NULL || pv == NULL || pp == NULL)
		goto fail;
	for (size_t i = 0; i < nst; i++) {
		sqls[i] = c->op == OP_BLOCK         ? ins
		          : c->op == OP_UNBLOCK_ALL ? del_all
		                                    : del;
		np[i] = c->op == OP_UNBLOCK_ALL ? 2 : 3;
		pv[3 * i] = b->host;
		pv[3 * i + 1] = user;
		pv[3 * i + 2] =
		        c->op == OP_UNBLOCK_ALL ? NULL : c->jids[i]->full;
		pp[i] = &pv[3 * i];
	}
	if ((c->hold = pgn_event_hold(ev)) == NULL)
		goto fail;
	rc = pgn_store_txn(b->store, (int)nst, sqls, np, pp, 0, on_written, c);
	if (rc < 0) {
		/* The hold is ours: answer from it. */
		struct pgn_stanza *st = pgn_hold_take(c->hold);
		revert(b, c);
		if (st != NULL)
			error_text(b, ev, st, "wait",
			           "internal-server-error", NULL);
		pgn_stanza_free(st);
		change_free(c);
	}
	free(sqls);
	free(np);
	free(pv);
	free(pp);
	return PGN_EVENT_HANDLED;
fail:
	free(sqls);
	free(np);
	free(pv);
	free(pp);
	revert(b, c);
	change_free(c);
	pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}

/* Parses the <item/> children of op into c (prepared JIDs, no
 * duplicates).  Returns 0, or answers the error itself and returns -1. */
static int
parse_items(struct blocking *b, struct pgn_event *ev, struct pgn_xml *op,
            struct change *c, size_t *count)
{
	size_t n = 0;
	struct pgn_xml *it;

	*count = 0;
	for (it = pgn_xml_first_child(op); it != NULL; it = pgn_xml_next(it))
		if (strcmp(pgn_xml_name(it), "item") == 0)
			n++;
	if (n > b->max_items) {
		error_text(b, ev, ev->stanza, "cancel", "policy-violation",
		           "too many items");
		return -1;
	}
	for (it = pgn_xml_first_child(op); it != NULL; it = pgn_xml_next(it)) {
		const char *s;
		struct pgn_jid *jid;
		int rc;

		if (strcmp(pgn_xml_name(it), "item") != 0)
			continue;
		(*count)++;
		s = pgn_xml_attr(it, "jid");
		if (s == NULL) {
			pgn_event_error(ev, "modify", "bad-request");
			return -1;
		}
		rc = pgn_jid_parse(s, &jid);
		if (rc == -EINVAL) {
			pgn_event_error(ev, "modify", "jid-malformed");
			return -1;
		}
		if (rc < 0)
			goto nomem;
		if (change_has(c, jid->full)) {
			pgn_jid_free(jid);
			continue;
		}
		if (change_add(c, jid, n) < 0)
			goto nomem;
	}
	return 0;
nomem:
	pgn_event_error(ev, "wait", "resource-constraint");
	return -1;
}

static struct change *
change_new(struct blocking *b, struct blist *l, enum op op)
{
	struct change *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->b = b;
	c->op = op;
	c->bare = strdup(l->bare);
	if (c->bare == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

/* The change op that ev asks of its sender's list (*lp), with the items
 * of ev in it (*count of them).  NULL when there is none: ev is then
 * answered, or not ours to answer, as *ret (what the hook returns). */
static struct change *
change_start(struct blocking *b, struct pgn_event *ev, enum op op,
             struct blist **lp, size_t *count, int *ret)
{
	int not_loaded;
	struct blist *l = own_list(b, ev, &not_loaded);
	struct pgn_xml *items = pgn_xml_first_child(ev->stanza->xml);
	struct change *c;

	*ret = PGN_EVENT_HANDLED;
	if (l == NULL) {
		if (!not_loaded)
			*ret = PGN_EVENT_PASS;
		else
			pgn_event_error(ev, "wait", "internal-server-error");
		return NULL;
	}
	if ((c = change_new(b, l, op)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return NULL;
	}
	if (parse_items(b, ev, items, c, count) < 0) {
		change_free(c);
		return NULL;
	}
	*lp = l;
	return c;
}

static int
on_block(struct pgn_event *ev, void *arg)
{
	struct blocking *b = arg;
	struct blist *l;
	struct change *c;
	size_t count, j = 0;
	int ret;
	char text[64];

	if ((c = change_start(b, ev, OP_BLOCK, &l, &count, &ret)) == NULL)
		return ret;
	if (count == 0) {
		/* §3.3: a block without items. */
		pgn_event_error(ev, "modify", "bad-request");
		goto answered;
	}
	/* Keep only what is new. */
	for (size_t i = 0; i < c->n; i++) {
		if (item_index(l, c->jids[i]->full) >= 0)
			pgn_jid_free(c->jids[i]);
		else
			c->jids[j++] = c->jids[i];
	}
	c->n = j;
	if (l->n + c->n > b->max_items) {
		snprintf(text, sizeof(text),
		         "the block list is limited to %zu "
		         "items",
		         b->max_items);
		error_text(b, ev, ev->stanza, "cancel", "policy-violation",
		           text);
		goto answered;
	}
	if (c->n == 0) {
		pgn_event_reply(ev, NULL);
		goto answered;
	}
	for (size_t i = 0; i < c->n; i++) {
		struct pgn_jid *copy = pgn_jid_copy(c->jids[i]);
		if (copy == NULL || item_add(l, copy) < 0) {
			c->n = i; /* revert what was added */
			revert(b, c);
			c->n = j;
			pgn_event_error(ev, "wait", "resource-constraint");
			goto answered;
		}
	}
	pgn_log(PGN_LOG_INFO, "mod_blocking: %s blocks %zu JID(s)", l->bare,
	        c->n);
	return commit(b, ev, c);
answered:
	change_free(c);
	return PGN_EVENT_HANDLED;
}

static int
on_unblock(struct pgn_event *ev, void *arg)
{
	struct blocking *b = arg;
	struct blist *l;
	struct change *c;
	size_t count, j = 0;
	int ret;

	if ((c = change_start(b, ev, OP_UNBLOCK, &l, &count, &ret)) == NULL)
		return ret;
	if (count == 0) {
		/* §3.5: unblock everybody; the removed items move into c. */
		c->op = OP_UNBLOCK_ALL;
		if (l->n == 0) {
			pgn_event_reply(ev, NULL);
			goto answered;
		}
		free(c->jids);
		c->jids = l->items;
		c->n = l->n;
		l->items = NULL;
		l->n = l->cap = 0;
	} else {
		/* Keep only what is blocked; take it out of the cache. */
		for (size_t i = 0; i < c->n; i++) {
			ssize_t k = item_index(l, c->jids[i]->full);
			pgn_jid_free(c->jids[i]);
			if (k >= 0)
				c->jids[j++] = item_take(l, (size_t)k);
		}
		c->n = j;
		if (c->n == 0) {
			pgn_event_reply(ev, NULL);
			goto answered;
		}
	}
	pgn_log(PGN_LOG_INFO, "mod_blocking: %s unblocks %s", l->bare,
	        c->op == OP_UNBLOCK_ALL ? "all" : "some JIDs");
	return commit(b, ev, c);
answered:
	change_free(c);
	return PGN_EVENT_HANDLED;
}

/* ---- the "blocking" service (pigeon/blocking.h) ---------------------- */

static int
svc_blocks(void *instance, const char *user, const char *jid,
	   pgn_blocking_fn fn, void *arg)
{
	struct blocking *b = instance;
	const char *at = strchr(user, '@');
	struct pgn_jid *j = NULL;
	struct waiter *w;
	struct blist *l;
	int rc;

	if ((rc = pgn_jid_parse(jid, &j)) < 0)
		return rc;
	if (at == NULL || strcmp(at + 1, b->host) != 0) {
		pgn_jid_free(j);
		fn(0, 0, arg);
		return 0;
	}
	l = pgn_map_get(b->lists, user);
	if (l != NULL && l->loaded) {
		int blocked = is_blocked(l, j);
		pgn_jid_free(j);
		fn(0, blocked, arg);
		return 0;
	}
	if ((l = blist_get(b, user)) == NULL ||
	    (w = calloc(1, sizeof(*w))) == NULL) {
		if (l != NULL)
			blist_release(b, l);
		pgn_jid_free(j);
		return -ENOMEM;
	}
	if (blist_load(b, l) < 0) {
		free(w);
		blist_release(b, l);
		pgn_jid_free(j);
		return -ENOMEM;
	}
	w->fn = fn;
	w->arg = arg;
	w->jid = j;
	*l->wait_tail = w;
	l->wait_tail = &w->next;
	return 0;
}

static const struct pgn_blocking_service blocking_service = {
	.blocks = svc_blocks,
};

/* ---- module ---------------------------------------------------------- */

static int
free_list(const char *key, uint64_t id, void *value, void *arg)
{
	struct blist *l = value;
	struct blocking *b = arg;
	struct waiter *w, *next;

	/* Store callbacks have all run (the store closes first); anything
	 * still waiting is dropped. */
	for (w = l->waiters; w != NULL; w = next) {
		next = w->next;
		if (w->hold != NULL) {
			pgn_stanza_free(pgn_hold_take(w->hold));
		} else if (w->fn != NULL) {
			/* Not reached: store callbacks have run. */
			pgn_jid_free(w->jid);
		} else {
			struct pgn_session *s =
			        pgn_session_find(b->srv, w->sid);
			if (s != NULL)
				pgn_session_release(s);
		}
		free(w);
	}
	blist_free(l);
	return 0;
}

static void
blocking_unload(struct pgn_module *m)
{
	struct blocking *b = pgn_module_data(m);
	if (b == NULL)
		return;
	pgn_map_foreach(b->lists, free_list, b);
	pgn_map_free(b->lists);
	free(b);
	pgn_module_set_data(m, NULL);
}

static int
blocking_load(struct pgn_module *m)
{
	struct blocking *b = calloc(1, sizeof(*b));
	int rc = -ENOMEM;

	if (b == NULL)
		return -ENOMEM;
	b->m = m;
	b->srv = pgn_module_server(m);
	b->store = pgn_server_store(b->srv);
	b->host = pgn_host_name(pgn_module_host(m));
	b->lists = pgn_map_new();
	b->max_items = (size_t)pgn_module_opt_int(m, "max_items");
	pgn_module_set_data(m, b);
	if (b->lists == NULL ||
	    (rc = pgn_module_add_feature(m, NS_BLOCKING)) < 0 ||
	    (rc = pgn_module_provide(m, PGN_BLOCKING_SERVICE,
				     &blocking_service, b)) < 0)
		goto fail;
	return 0;
fail:
	blocking_unload(m);
	return rc;
}

static const struct pgn_module_opt blocking_options[] = {
	{ .name = "max_items", .type = PGN_OPT_INT, .def = "1000", .min = 1,
	  .max = MAX_ITEMS_LIMIT, .doc = "JIDs on one account's block list" },
	{ .name = NULL },
};

static const struct pgn_module_hook_def blocking_hooks[] = {
	/* Filters: inbound on the user's host... */
	{ "message/bare", on_inbound, PGN_PRIO_FILTER },
	{ "message/full", on_inbound, PGN_PRIO_FILTER },
	{ "presence/bare", on_inbound, PGN_PRIO_FILTER },
	{ "presence/full", on_inbound, PGN_PRIO_FILTER },
	{ "iq/full", on_inbound, PGN_PRIO_FILTER },
	/* XEP-0012 §8: last activity is presence information. */
	{ "iq-get/bare/" NS_LAST ":query", on_inbound, PGN_PRIO_FILTER },
	/* ...and outbound from it. */
	{ "pre-message/host", on_outbound, PGN_PRIO_FILTER },
	{ "pre-message/bare", on_outbound, PGN_PRIO_FILTER },
	{ "pre-message/full", on_outbound, PGN_PRIO_FILTER },
	{ "pre-presence/host", on_outbound, PGN_PRIO_FILTER },
	{ "pre-presence/bare", on_outbound, PGN_PRIO_FILTER },
	{ "pre-presence/full", on_outbound, PGN_PRIO_FILTER },
	{ "pre-iq/host", on_outbound, PGN_PRIO_FILTER },
	{ "pre-iq/bare", on_outbound, PGN_PRIO_FILTER },
	{ "pre-iq/full", on_outbound, PGN_PRIO_FILTER },
	{ "session-started", on_session_started, PGN_PRIO_HANDLER },
	/* Late: the presence module's unavailable broadcast (a handler)
	 * still goes through our outbound filter. */
	{ "session-ended", on_session_ended, PGN_PRIO_FALLBACK },
	{ "iq-get/bare/" NS_BLOCKING ":blocklist", on_blocklist,
	  PGN_PRIO_HANDLER },
	{ "iq-set/bare/" NS_BLOCKING ":block", on_block, PGN_PRIO_HANDLER },
	{ "iq-set/bare/" NS_BLOCKING ":unblock", on_unblock,
	  PGN_PRIO_HANDLER },
	{ NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
        .abi = PGN_MODULE_ABI,
        .name = "mod_blocking",
        .description = "XEP-0191 Simple Communications Blocking",
        .options = blocking_options,
        .hooks = blocking_hooks,
        .load = blocking_load,
        .unload = blocking_unload,
};
