/* mod_roster: jabber:iq:roster get and set (RFC 6121 §2). */
#include "roster_priv.h"

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

int
cmp_jid(const void *a, const void *b)
{
	const struct item *x = *(const struct item *const *)a;
	const struct item *y = *(const struct item *const *)b;
	return strcmp(x->jid, y->jid);
}

/* The items of r (changed after 'after'), sorted by cmp; caller frees the
 * array (not the items).  NULL on allocation failure. */
struct item **
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

int
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
		pgn_event_route(ev, e);
}

int
has_ctrl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20)
			return 1;
	return 0;
}

/* Removal (§2.5): cancel both subscriptions, then drop the item. */
static void
roster_remove(struct roster *r, struct pgn_event *ev, const char *jid)
{
	struct item *it = pgn_map_get(r->items, jid);
	struct pending *p = pgn_map_del(r->pending, jid);
	if (it != NULL && (has_to(it->sub) || it->ask))
		route_sub(r, ev, "unsubscribe", jid);
	if (p != NULL || (it != NULL && has_from(it->sub))) {
		if (it != NULL && has_from(it->sub))
			send_all_unavailable_to(r, ev, jid);
		route_sub(r, ev, "unsubscribed", jid);
	}
	if (p != NULL) {
		pending_free(p);
		persist_pending(r, jid, NULL);
	}
	if (it != NULL)
		item_remove(r, jid);
}

int
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
		roster_remove(r, ev, jid->bare);
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
