/* mod_roster: presence (RFC 6121 §4), the subscription state machine
 * (§3, Appendix A), probes and account removal. */
#include "roster_priv.h"

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

/* Routes st (takes it) within the routing of ev, the event being
 * handled, so that the client stanza it is part of is acknowledged only
 * once st's routing is done too; ev is NULL where a handler is continued
 * after storage (the roster loaded): st is then the server's own. */
void
route_in(struct rmod *rm, struct pgn_event *ev, struct pgn_stanza *st)
{
	if (ev != NULL)
		pgn_event_route(ev, st);
	else
		pgn_route(rm->srv, st);
}

/* Routes st on behalf of session s (outbound filters apply), keeping
 * our own pre-presence hooks out, within ev's routing (as route_in).
 * Takes st. */
static void
route_as(struct rmod *rm, struct pgn_event *ev, struct pgn_session *s,
	 struct pgn_stanza *st)
{
	rm->routing++;
	if (ev != NULL)
		pgn_event_route_from(ev, s, st);
	else
		pgn_route_from(s, st);
	rm->routing--;
}

/* Sends xml (a presence) from s to jid, on s's behalf. */
static void
send_presence_as(struct rmod *rm, struct pgn_event *ev,
		 struct pgn_session *s, const struct pgn_xml *xml,
		 const char *to)
{
	const struct pgn_jid *full = session_jid(rm, s);
	struct pgn_stanza *st;
	if (full == NULL || (st = stanza_copy_to(xml, full->full, to)) == NULL)
		return;
	route_as(rm, ev, s, st);
}

static int
presence_is_available(const struct pgn_xml *x)
{
	return x != NULL && pgn_xml_attr(x, "type") == NULL;
}

/* Sends the presence of every available resource of r's user to jid
 * (after a subscription was approved, §3.1.5). */
static void
send_all_presence_to(struct roster *r, struct pgn_event *ev, const char *jid)
{
	for (struct pgn_session *s = pgn_user_sessions(r->rm->srv, r->bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_xml *p = pgn_session_presence(s);
		if (pgn_session_available(s) && presence_is_available(p))
			send_presence_as(r->rm, ev, s, p, jid);
	}
}

/* Unavailable from every available resource of r's user to jid (§3.2.2). */
void
send_all_unavailable_to(struct roster *r, struct pgn_event *ev,
			const char *jid)
{
	for (struct pgn_session *s = pgn_user_sessions(r->rm->srv, r->bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_jid *full = pgn_session_jid(s);
		struct pgn_stanza *st;
		if (!pgn_session_available(s) || full == NULL)
			continue;
		if ((st = presence_new("unavailable", full->full, jid)) != NULL)
			route_as(r->rm, ev, s, st);
	}
}

/* A server-generated subscription stanza from r's user to jid. */
void
route_sub(struct roster *r, struct pgn_event *ev, const char *type,
	  const char *jid)
{
	struct pgn_stanza *st = presence_new(type, r->bare, jid);
	if (st != NULL)
		route_in(r->rm, ev, st);
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
bounce_text(struct pgn_event *ev, const struct pgn_stanza *st,
	    const char *type, const char *cond, const char *text)
{
	struct pgn_stanza *e = pgn_stanza_error_reply(st, type, cond, text);
	if (e != NULL)
		pgn_event_route(ev, e);
}

/* Outbound subscription stanza from r's user to contact (§3.1.2, 3.2.2,
 * 3.3.2, 3.4; Appendix A.2).  st is borrowed. */
static void
outbound_sub(struct roster *r, struct pgn_event *ev,
	     const struct pgn_stanza *st, const char *contact)
{
	struct item *it = pgn_map_get(r->items, contact);
	struct pending *pin = pgn_map_get(r->pending, contact);
	struct pgn_stanza *out;
	int full = 0, changed = 0, route = 1;

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
			send_all_unavailable_to(r, ev, contact);
	}
	if (changed)
		item_changed(r, it);
	if (route) {
		/* §3.1.2: stamped with the bare JID. */
		if ((out = stanza_copy_to(st->xml, r->bare, contact)) != NULL)
			pgn_event_route(ev, out);
	}
	if (type_is(st, "subscribed") && changed && route)
		send_all_presence_to(r, ev, contact);
	return;
nomem:
	if (full) {
		char text[96];
		snprintf(text, sizeof(text),
			 "the roster is full (at most %d items)",
			 r->rm->max_items);
		bounce_text(ev, st, "cancel", "not-allowed", text);
	} else {
		bounce_text(ev, st, "wait", "resource-constraint", NULL);
	}
}

/* Inbound subscription stanza for r's user from contact (§3.1.3, 3.1.6,
 * 3.2.3, 3.3.3; Appendix A.3).  st is borrowed; ev is its event, or NULL
 * once the roster loaded (route_in). */
static void
inbound_sub(struct roster *r, struct pgn_event *ev,
	    const struct pgn_stanza *st, const char *contact)
{
	struct item *it = pgn_map_get(r->items, contact);

	if (!r->exists) {
		/* §8.5.1 no such user: a subscribe gets unsubscribed. */
		if (type_is(st, "subscribe"))
			route_sub(r, ev, "unsubscribed", contact);
		return;
	}
	if (type_is(st, "subscribe")) {
		struct pending *p;
		if (it != NULL && has_from(it->sub)) {
			route_sub(r, ev, "subscribed", contact);
			return;
		}
		if (it != NULL && it->approved) {
			it->sub = it->sub == SUB_TO ? SUB_BOTH : SUB_FROM;
			it->approved = 0;
			item_changed(r, it);
			route_sub(r, ev, "subscribed", contact);
			send_all_presence_to(r, ev, contact);
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
			send_all_unavailable_to(r, ev, contact);
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
		inbound_sub(r, NULL, st, st->from->bare);
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
refuse_probe(struct rmod *rm, struct pgn_event *ev,
	     const struct pgn_stanza *st, int pending_in)
{
	struct pgn_stanza *u;
	if (pending_in || strcmp(st->from->bare, st->to->bare) == 0)
		return;
	if ((u = presence_new("unsubscribed", st->to->bare, st->from->bare)) !=
	    NULL)
		route_in(rm, ev, u);
}

/* §4.3.2: a probe of r's user from prober: every available resource
 * answers if prober is subscribed (from/both) or the user itself;
 * anybody else gets unsubscribed (refuse_probe). */
static void
answer_probe(struct roster *r, struct pgn_event *ev,
	     const struct pgn_stanza *st)
{
	const char *pb = st->from->bare;
	struct item *it = pgn_map_get(r->items, pb);

	if (!r->exists || (strcmp(pb, r->bare) != 0 &&
			   (it == NULL || !has_from(it->sub)))) {
		refuse_probe(r->rm, ev, st,
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
		send_presence_as(r->rm, ev, s, p, st->from->full);
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
		answer_probe(r, NULL, st);
	} else if (res->error != 0 || res->nrows != 1) {
		pgn_log(PGN_LOG_WARN, "mod_roster: probe of %s: %s",
			st->to->bare, res->error ? res->errmsg : "no row");
	} else if (pgn_store_value(res, 0, 0) == NULL) {
		refuse_probe(j->rm, NULL, st, 0); /* no such account */
	} else {
		int sub = parse_sub(pgn_store_value(res, 0, 1));
		/* Subscribed but offline: §4.3.2, 2 allows not answering. */
		if (sub < 0 || !has_from((enum sub)sub))
			refuse_probe(j->rm, NULL, st,
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

int
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
				answer_probe(r, ev, st);
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
			inbound_sub(r, ev, st, st->from->bare);
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

struct roster *
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
int
on_out_presence(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_stanza *st = ev->stanza;
	struct sstate *ss;
	struct roster *r;

	if (rm->routing > 0 || ev->origin == NULL || st->to == NULL)
		return PGN_EVENT_PASS;
	if (!valid_presence_type(st)) {
		bounce_text(ev, st, "modify", "bad-request", NULL);
		return PGN_EVENT_HANDLED;
	}
	r = roster_of_session(rm, ev->origin);
	if (is_sub_type(st)) {
		if (r == NULL) {
			bounce_text(ev, st, "wait", "internal-server-error",
				    NULL);
			return PGN_EVENT_HANDLED;
		}
		if (strcmp(st->to->bare, r->bare) != 0)
			outbound_sub(r, ev, st, st->to->bare);
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
	struct pgn_event *ev; /* the broadcast is on its behalf (route_in) */
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
		send_presence_as(b->rm, b->ev, b->s, b->xml, key);
	if (b->probe && has_to(it->sub)) {
		const struct pgn_jid *full = session_jid(b->rm, b->s);
		struct pgn_stanza *p =
			full != NULL ? presence_new("probe", full->full, key)
				     : NULL;
		if (p != NULL)
			route_in(b->rm, b->ev, p);
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
		send_presence_as(b->rm, b->ev, b->s, b->xml, key);
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
void
bcast_unavailable(struct rmod *rm, struct pgn_event *ev, struct roster *r,
		  struct pgn_session *s, struct sstate *ss,
		  const struct pgn_xml *xml)
{
	/* probe doubles as "the subscribers got it" for bcast_directed. */
	struct bcast b = { rm, ev, r, s, xml, 0 };
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
int
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
		bounce_text(ev, st, "modify", "bad-request", NULL);
		return PGN_EVENT_HANDLED;
	}
	if (st->type != NULL && !type_is(st, "unavailable"))
		return PGN_EVENT_PASS; /* subscription to oneself, probe... */
	r = roster_of_session(rm, s);
	if (type_is(st, "unavailable")) {
		int was_available = ss->available;
		const struct pgn_jid *me = session_jid(rm, s);
		struct pgn_stanza *c;
		bcast_unavailable(rm, ev, r, s, ss, st->xml);
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
	struct bcast b = { rm, ev, r, s, st->xml, initial };
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

int
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

int
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

int
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
				pgn_event_route(ev, st);
			if ((rv->what[i] & REMOVE_UNSUBSCRIBED) &&
			    (st = presence_new("unsubscribed", a->bare,
					       rv->jids[i])) != NULL)
				pgn_event_route(ev, st);
		}
		pgn_log(PGN_LOG_INFO, "mod_roster: %s removed: %zu "
			"subscriptions cancelled", a->bare, rv->n);
	}
	removal_free(rv);
	return PGN_EVENT_PASS;
}
