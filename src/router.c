/* Routing.  Every stanza is classified once (kind, and whether it is
 * addressed to a host, a bare JID or a full JID) and offered to the
 * events of the destination host in this order:
 *   pre-<kind>/<addr>            (filters: blocking, privacy)
 *   iq-<type>/<addr>/<ns>:<name> (iq get/set with a payload)
 *   <kind>/<addr>
 * and, when no handler took it, to the built-in RFC 6121 §8 rules below. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "map.h"
#include "pigeon/log.h"
#include "router.h"
#include "server.h"
#include "stream.h"

static const char *const kind_names[] = { "message", "presence", "iq",
					  "other" };

static int
type_is(const struct pgn_stanza *st, const char *t)
{
	return st->type != NULL && strcmp(st->type, t) == 0;
}

/* RFC 6120 §8.3.1: never answer an error with an error, nor an iq result
 * or error at all. */
static int
must_not_answer(const struct pgn_stanza *st)
{
	if (type_is(st, "error"))
		return 1;
	return st->kind == PGN_STANZA_IQ &&
	       (type_is(st, "result") || st->type == NULL ||
		(!type_is(st, "get") && !type_is(st, "set")));
}

void
pgn_router_bounce(struct pgn_server *srv, struct pgn_stanza *st,
		  const char *type, const char *condition)
{
	struct pgn_stanza *err = NULL;
	if (!must_not_answer(st) && st->from != NULL)
		err = pgn_stanza_error_reply(st, type, condition, NULL);
	pgn_stanza_free(st);
	if (err != NULL)
		pgn_router_route(srv, NULL, err);
}

static void
deliver(struct pgn_session *s, const struct pgn_stanza *st)
{
	pgn_stream_send_xml(s, st->xml);
}

struct pgn_session *
pgn_router_sessions(struct pgn_server *srv, const char *bare)
{
	return pgn_map_get(srv->users, bare);
}

struct pgn_session *
pgn_router_find_full(struct pgn_server *srv, const struct pgn_jid *jid)
{
	if (jid->resource == NULL)
		return NULL;
	for (struct pgn_session *s = pgn_map_get(srv->users, jid->bare);
	     s != NULL; s = s->next_res)
		if (strcmp(s->jid->resource, jid->resource) == 0)
			return s;
	return NULL;
}

int
pgn_router_bind(struct pgn_server *srv, struct pgn_session *s,
		struct pgn_session **replaced)
{
	struct pgn_session *head = pgn_map_get(srv->users, s->jid->bare);
	struct pgn_session *old = pgn_router_find_full(srv, s->jid);
	unsigned n = 0;

	*replaced = NULL;
	for (struct pgn_session *p = head; p != NULL; p = p->next_res)
		n++;
	if (old == NULL && n >= srv->cfg->limits.max_sessions_per_user)
		return -EUSERS;
	if (old != NULL) {
		pgn_router_unbind(srv, old);
		*replaced = old;
		head = pgn_map_get(srv->users, s->jid->bare);
	}
	s->next_res = head;
	if (pgn_map_set(srv->users, s->jid->bare, s) != 0)
		return -ENOMEM;
	s->in_users = 1;
	return 0;
}

void
pgn_router_unbind(struct pgn_server *srv, struct pgn_session *s)
{
	if (!s->in_users)
		return;
	struct pgn_session *head = pgn_map_get(srv->users, s->jid->bare);
	struct pgn_session **pp = &head;
	while (*pp != NULL && *pp != s)
		pp = &(*pp)->next_res;
	if (*pp == s)
		*pp = s->next_res;
	if (head == NULL)
		pgn_map_del(srv->users, s->jid->bare);
	else
		pgn_map_set(srv->users, s->jid->bare, head);
	s->next_res = NULL;
	s->in_users = 0;
}

/* Fires pre-, payload and plain events; returns 1 if a handler took it. */
static int
fire_events(struct pgn_host *h, struct pgn_session *origin,
	    struct pgn_stanza *st, const char *addr)
{
	char name[512];
	struct pgn_event ev = { .origin = origin, .stanza = st };
	const char *kind = kind_names[st->kind];

	ev.name = name;
	snprintf(name, sizeof(name), "pre-%s/%s", kind, addr);
	if (pgn_host_fire(h, &ev) == PGN_EVENT_HANDLED)
		return 1;
	if (st->kind == PGN_STANZA_IQ && (type_is(st, "get") ||
					  type_is(st, "set"))) {
		struct pgn_xml *payload = pgn_xml_first_child(st->xml);
		if (payload != NULL) {
			const char *ns = pgn_xml_ns(payload);
			snprintf(name, sizeof(name), "iq-%s/%s/%s:%s", st->type,
				 addr, ns != NULL ? ns : "",
				 pgn_xml_name(payload));
			if (pgn_host_fire(h, &ev) == PGN_EVENT_HANDLED)
				return 1;
		}
	}
	snprintf(name, sizeof(name), "%s/%s", kind, addr);
	return pgn_host_fire(h, &ev) == PGN_EVENT_HANDLED;
}

/* RFC 6121 §8.5.2: a message to a bare JID goes to the available
 * resources with the highest non-negative priority. */
static void
message_to_bare(struct pgn_server *srv, struct pgn_host *h,
		struct pgn_session *origin, struct pgn_stanza *st)
{
	struct pgn_session *head = pgn_router_sessions(srv, st->to->bare);
	int best = -1, delivered = 0;

	for (struct pgn_session *s = head; s != NULL; s = s->next_res)
		if (s->available && s->priority >= 0 && s->priority > best)
			best = s->priority;
	if (best >= 0 && !type_is(st, "groupchat")) {
		for (struct pgn_session *s = head; s != NULL; s = s->next_res)
			if (s->available && s->priority == best) {
				deliver(s, st);
				delivered = 1;
			}
	}
	if (delivered) {
		pgn_stanza_free(st);
		return;
	}
	/* Nobody to take it now: offline storage (a module) may. */
	struct pgn_event ev = { .name = "message/offline", .origin = origin,
				.stanza = st };
	if (pgn_host_fire(h, &ev) == PGN_EVENT_HANDLED) {
		pgn_stanza_free(st);
		return;
	}
	if (type_is(st, "headline") || type_is(st, "error")) {
		pgn_stanza_free(st);
		return;
	}
	pgn_router_bounce(srv, st, "cancel", "service-unavailable");
}

static void
route_local(struct pgn_server *srv, struct pgn_host *h,
	    struct pgn_session *origin, struct pgn_stanza *st)
{
	const char *addr = st->to->node == NULL       ? "host"
			   : st->to->resource == NULL ? "bare"
						      : "full";
	if (fire_events(h, origin, st, addr)) {
		pgn_stanza_free(st);
		return;
	}
	if (st->to->node == NULL) {
		/* To the server itself and unhandled. */
		if (st->kind == PGN_STANZA_IQ)
			pgn_router_bounce(srv, st, "cancel",
					  "service-unavailable");
		else
			pgn_stanza_free(st);
		return;
	}
	if (st->to->resource != NULL) {
		struct pgn_session *s = pgn_router_find_full(srv, st->to);
		if (s != NULL && s->state == PGN_ST_BOUND) {
			deliver(s, st);
			pgn_stanza_free(st);
			return;
		}
		/* RFC 6121 §8.5.3.2: no such resource. */
		if (st->kind == PGN_STANZA_MESSAGE && !type_is(st, "groupchat")) {
			message_to_bare(srv, h, origin, st);
			return;
		}
		if (st->kind == PGN_STANZA_PRESENCE)
			pgn_stanza_free(st);
		else
			pgn_router_bounce(srv, st, "cancel",
					  "service-unavailable");
		return;
	}
	switch (st->kind) {
	case PGN_STANZA_MESSAGE:
		message_to_bare(srv, h, origin, st);
		return;
	case PGN_STANZA_PRESENCE:
		/* Directed presence to an account reaches all its available
		 * resources (but the sender's own). Subscription management
		 * and probes belong to the presence module. */
		if (st->type == NULL || type_is(st, "unavailable")) {
			for (struct pgn_session *s =
				     pgn_router_sessions(srv, st->to->bare);
			     s != NULL; s = s->next_res)
				if (s != origin && s->available)
					deliver(s, st);
		}
		pgn_stanza_free(st);
		return;
	default:
		/* iq to the account: answered by the server on its behalf. */
		pgn_router_bounce(srv, st, "cancel", "service-unavailable");
		return;
	}
}

void
pgn_router_route(struct pgn_server *srv, struct pgn_session *origin,
		 struct pgn_stanza *st)
{
	struct pgn_host *h;
	struct pgn_session *comp;

	if (st->to == NULL || st->from == NULL) {
		/* Only the c2s layer routes address-less stanzas, after
		 * filling them in; anything else is a bug upstream. */
		pgn_log(PGN_LOG_WARN, "router: dropping stanza without address");
		pgn_stanza_free(st);
		return;
	}
	h = pgn_server_host(srv, st->to->domain);
	if (h != NULL) {
		route_local(srv, h, origin, st);
		return;
	}
	comp = pgn_map_get(srv->components, st->to->domain);
	if (comp != NULL && comp->state == PGN_ST_BOUND) {
		deliver(comp, st);
		pgn_stanza_free(st);
		return;
	}
	for (size_t i = 0; i < srv->cfg->ncomponents; i++)
		if (strcmp(srv->cfg->components[i].domain, st->to->domain) == 0) {
			/* Known component, not connected (or closing) now. */
			pgn_router_bounce(srv, st, "cancel",
					  "service-unavailable");
			return;
		}
	/* Federation does not exist yet: every remote domain is
	 * unreachable. */
	pgn_router_bounce(srv, st, "cancel", "remote-server-not-found");
}

void
pgn_route(struct pgn_server *srv, struct pgn_stanza *st)
{
	pgn_router_route(srv, NULL, st);
}

void
pgn_event_reply(struct pgn_event *ev, struct pgn_xml *payload)
{
	struct pgn_stanza *r = pgn_stanza_iq_result(ev->stanza, payload);
	if (r != NULL)
		pgn_router_route(ev->server, NULL, r);
}

void
pgn_event_error(struct pgn_event *ev, const char *type, const char *condition)
{
	struct pgn_stanza *r =
		pgn_stanza_error_reply(ev->stanza, type, condition, NULL);
	if (r != NULL)
		pgn_router_route(ev->server, NULL, r);
}
