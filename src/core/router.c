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

#include "event.h"
#include "host.h"
#include "iq.h"
#include "pigeon/map.h"
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

/* Where a stanza is on its way.  A handler that holds the stanza
 * (pgn_event_hold) records the stage and itself; resuming continues after
 * it, then with the following stages. */
enum stage {
	STAGE_NONE = -1, /* a session event's stanza: nothing to resume */
	STAGE_PRE = 0, /* pre-<kind>/<addr> on the sender's host */
	STAGE_IQ,      /* iq-<type>/<addr>/<ns>:<name> on the destination */
	STAGE_PLAIN,   /* <kind>/<addr> on the destination */
	STAGE_OFFLINE, /* message/offline, then the sender gets an error */
};

struct resume {
	enum stage stage;
	struct pgn_host *host; /* whose handlers were running */
	int priority;
	pgn_hook_fn fn;
	void *arg;
};

/* The router's part of an event (ev->route). */
struct route_ctx {
	enum stage stage;
	struct pgn_host *host; /* the host whose handlers run */
};

struct pgn_hold {
	struct pgn_server *srv;
	struct pgn_stanza *st;
	uint64_t origin;       /* session id, 0 if none */
	struct resume at;
	/* The client stanza whose acknowledgement waits for this hold
	 * (XEP-0198): session id (0: none) and number. */
	uint64_t ack_sid;
	uint32_t ack_seq;
	/* When and from which session the stanza was read (the latency
	 * histograms then count the wait, see latency.h). */
	uint64_t read_ns, read_sid;
};

/* Fires name on host h, from the start or (when from is at this stage)
 * after the handler that held the stanza.  Returns 1 when the stanza was
 * taken (handled, or held: then *stp is NULL and nothing is freed by the
 * caller). */
static int
fire_stage(struct pgn_host *h, struct pgn_session *origin,
	   struct pgn_stanza **stp, const char *name, enum stage stage,
	   const struct resume *from)
{
	struct route_ctx ctx = { .stage = stage, .host = h };
	struct pgn_event ev = { .name = name, .origin = origin,
				.stanza = *stp, .route = &ctx };
	int r;

	ev.host = h;
	ev.server = h->srv;
	if (from != NULL && from->stage == stage)
		r = pgn_events_fire_after(h->events, &ev, from->priority,
					  from->fn, from->arg);
	else
		r = pgn_events_fire(h->events, &ev);
	if (ev.stanza == NULL) {
		/* Held: the holder owns it now. */
		*stp = NULL;
		return 1;
	}
	if (r == PGN_EVENT_HANDLED) {
		pgn_stanza_free(ev.stanza);
		*stp = NULL;
		return 1;
	}
	return 0;
}

static const char *
addr_of(const struct pgn_stanza *st)
{
	return st->to->node == NULL       ? "host"
	       : st->to->resource == NULL ? "bare"
					  : "full";
}

int
pgn_user_top_priority(struct pgn_server *srv, const char *bare)
{
	int best = -1;

	for (struct pgn_session *s = pgn_router_sessions(srv, bare); s != NULL;
	     s = s->next_res)
		if (pgn_session_available(s) && s->priority > best)
			best = s->priority;
	return best;
}

/* Nobody can take the message now: offline storage (a module) may, else
 * its sender learns (RFC 6121 §8.5.2.2.1). */
static void
offline_or_bounce(struct pgn_server *srv, struct pgn_host *h,
		  struct pgn_session *origin, struct pgn_stanza *st,
		  const struct resume *from)
{
	if (fire_stage(h, origin, &st, "message/offline", STAGE_OFFLINE, from))
		return;
	if (type_is(st, "headline") || type_is(st, "error")) {
		pgn_stanza_free(st);
		return;
	}
	pgn_router_bounce(srv, st, "cancel", "service-unavailable");
}

/* RFC 6121 §8.5.2: a message to a bare JID goes to the available
 * resources with the highest non-negative priority; with none,
 * message/offline, then an error. */
static void
message_to_bare(struct pgn_server *srv, struct pgn_host *h,
		struct pgn_session *origin, struct pgn_stanza *st,
		const struct resume *from)
{
	if (from == NULL || from->stage < STAGE_OFFLINE) {
		struct pgn_session *head = pgn_router_sessions(srv, st->to->bare);
		int best = pgn_user_top_priority(srv, st->to->bare);
		int delivered = 0;

		if (best >= 0 && !type_is(st, "groupchat")) {
			for (struct pgn_session *s = head; s != NULL;
			     s = s->next_res)
				if (pgn_session_available(s) &&
				    s->priority == best &&
				    pgn_stream_send_xml(s, st->xml) == 0)
					delivered = 1;
		}
		if (delivered) {
			pgn_stanza_free(st);
			return;
		}
	}
	offline_or_bounce(srv, h, origin, st, from);
}

static void
route_local(struct pgn_server *srv, struct pgn_host *h,
	    struct pgn_session *origin, struct pgn_stanza *st,
	    const struct resume *from)
{
	const char *addr = addr_of(st);
	const char *kind = kind_names[st->kind];
	char name[512];

	if (from != NULL && from->stage == STAGE_OFFLINE) {
		message_to_bare(srv, h, origin, st, from);
		return;
	}
	/* An answer to an iq a module sent (pgn_send_iq) goes to it. */
	if (from == NULL && pgn_iq_tracker_answer(srv->iq, st))
		return;
	if ((from == NULL || from->stage <= STAGE_IQ) &&
	    st->kind == PGN_STANZA_IQ &&
	    (type_is(st, "get") || type_is(st, "set"))) {
		struct pgn_xml *payload = pgn_xml_first_child(st->xml);
		if (payload != NULL) {
			const char *ns = pgn_xml_ns(payload);
			snprintf(name, sizeof(name), "iq-%s/%s/%s:%s", st->type,
				 addr, ns != NULL ? ns : "",
				 pgn_xml_name(payload));
			if (fire_stage(h, origin, &st, name, STAGE_IQ, from))
				return;
		}
	}
	snprintf(name, sizeof(name), "%s/%s", kind, addr);
	if (fire_stage(h, origin, &st, name, STAGE_PLAIN, from))
		return;
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
		if (s != NULL && pgn_stream_bound(s) &&
		    pgn_stream_send_xml(s, st->xml) == 0) {
			pgn_stanza_free(st);
			return;
		}
		/* RFC 6121 §8.5.3.2: no such resource (or its session is
		 * ending and did not take it: stream management bounds). */
		if (st->kind == PGN_STANZA_MESSAGE && !type_is(st, "groupchat")) {
			message_to_bare(srv, h, origin, st, NULL);
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
		message_to_bare(srv, h, origin, st, NULL);
		return;
	case PGN_STANZA_PRESENCE:
		/* Directed presence to an account reaches all its available
		 * resources (but the sender's own). Subscription management
		 * and probes belong to the presence module. */
		if (st->type == NULL || type_is(st, "unavailable")) {
			for (struct pgn_session *s =
				     pgn_router_sessions(srv, st->to->bare);
			     s != NULL; s = s->next_res)
				if (s != origin && pgn_session_available(s))
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

/* Outbound events fire only for what a bound client session sends. */
static struct pgn_host *
pre_host(const struct pgn_session *origin)
{
	if (origin == NULL || origin->kind != PGN_STREAM_C2S ||
	    origin->jid == NULL)
		return NULL;
	return origin->host;
}

/* After the outbound events: to a local host, a component or (later)
 * another server. */
static void
route_dest(struct pgn_server *srv, struct pgn_session *origin,
	   struct pgn_stanza *st, const struct resume *from)
{
	struct pgn_host *h = pgn_server_host(srv, st->to->domain);
	struct pgn_session *comp;

	if (h != NULL) {
		route_local(srv, h, origin, st, from);
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

static void
route_run(struct pgn_server *srv, struct pgn_session *origin,
	  struct pgn_stanza *st, const struct resume *from)
{
	if (st->to == NULL || st->from == NULL) {
		/* Only the c2s layer routes address-less stanzas, after
		 * filling them in; anything else is a bug upstream. */
		pgn_log(PGN_LOG_WARN, "router: dropping stanza without address");
		pgn_stanza_free(st);
		return;
	}
	if (from == NULL || from->stage == STAGE_PRE) {
		/* A resumed outbound chain keeps its host even if the
		 * sender has gone meanwhile. */
		struct pgn_host *ph = from != NULL ? from->host : pre_host(origin);
		if (ph != NULL) {
			char name[64];
			snprintf(name, sizeof(name), "pre-%s/%s",
				 kind_names[st->kind],
				 st->to_self ? "self" : addr_of(st));
			if (fire_stage(ph, origin, &st, name, STAGE_PRE, from))
				return;
		}
		from = NULL;
	}
	route_dest(srv, origin, st, from);
}

void
pgn_router_route(struct pgn_server *srv, struct pgn_session *origin,
		 struct pgn_stanza *st)
{
	route_run(srv, origin, st, NULL);
}

void
pgn_route_from(struct pgn_session *origin, struct pgn_stanza *st)
{
	route_run(origin->srv, origin, st, NULL);
}

void
pgn_stanza_bounce(struct pgn_server *srv, struct pgn_stanza *st,
		  const char *type, const char *condition)
{
	pgn_router_bounce(srv, st, type, condition);
}

void
pgn_stanza_undelivered(struct pgn_server *srv, struct pgn_stanza *st)
{
	struct pgn_host *h =
		st->to != NULL ? pgn_server_host(srv, st->to->domain) : NULL;

	if (st->kind == PGN_STANZA_MESSAGE && h != NULL &&
	    st->to->node != NULL) {
		offline_or_bounce(srv, h, NULL, st, NULL);
		return;
	}
	if (st->kind == PGN_STANZA_IQ)
		pgn_router_bounce(srv, st, "wait", "recipient-unavailable");
	else
		pgn_stanza_free(st);
}

struct pgn_hold *
pgn_event_hold(struct pgn_event *ev)
{
	const struct route_ctx *ctx = ev->route;
	struct pgn_hold *h;

	if (ev->stanza == NULL || (h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	h->srv = ev->server;
	h->st = ev->stanza;
	h->ack_sid = h->srv->ack_sid;
	h->ack_seq = h->srv->ack_seq;
	if (h->ack_sid != 0)
		pgn_sm_ref(h->srv, h->ack_sid, h->ack_seq);
	h->read_ns = h->srv->read_ns;
	h->read_sid = h->srv->read_sid;
	h->origin = ev->origin != NULL ? ev->origin->id : 0;
	if (ctx != NULL)
		h->at = (struct resume){ ctx->stage, ctx->host,
					 ev->pos_priority, ev->pos_fn,
					 ev->pos_arg };
	else
		h->at.stage = STAGE_NONE;
	ev->stanza = NULL;
	return h;
}

struct pgn_stanza *
pgn_hold_stanza(const struct pgn_hold *h)
{
	return h->st;
}

void
pgn_hold_resume(struct pgn_hold *h)
{
	struct pgn_session *origin =
		h->origin != 0 ? pgn_stream_find(h->srv, h->origin) : NULL;
	struct pgn_stanza *st = h->st;
	struct resume at = h->at;
	struct pgn_server *srv = h->srv;
	uint64_t sid = h->ack_sid, saved_sid = srv->ack_sid;
	uint32_t seq = h->ack_seq, saved_seq = srv->ack_seq;
	uint64_t saved_ns = srv->read_ns, saved_rsid = srv->read_sid;

	/* Holds and tickets taken further on belong to the same client
	 * stanza, and its delivery is timed from its read. */
	srv->ack_sid = sid;
	srv->ack_seq = seq;
	srv->read_ns = h->read_ns;
	srv->read_sid = h->read_sid;
	free(h);
	if (at.stage == STAGE_NONE) {
		/* Not on its way anywhere (a session event's stanza). */
		pgn_stanza_free(st);
	} else if (at.stage != STAGE_PRE && st->to != NULL &&
		   pgn_server_host(srv, st->to->domain) != at.host) {
		/* The holder readdressed it: deliver afresh. */
		route_dest(srv, origin, st, NULL);
	} else {
		route_run(srv, origin, st, &at);
	}
	srv->ack_sid = saved_sid;
	srv->ack_seq = saved_seq;
	srv->read_ns = saved_ns;
	srv->read_sid = saved_rsid;
	if (sid != 0)
		pgn_sm_unref(srv, sid, seq);
}

struct pgn_stanza *
pgn_hold_take(struct pgn_hold *h)
{
	struct pgn_stanza *st = h->st;

	if (h->ack_sid != 0)
		pgn_sm_unref(h->srv, h->ack_sid, h->ack_seq);
	free(h);
	return st;
}

void
pgn_route(struct pgn_server *srv, struct pgn_stanza *st)
{
	pgn_router_route(srv, NULL, st);
}

/* Replies go back through the router, except before authentication,
 * when there is no address yet: straight onto the stream. */
static void
send_reply(struct pgn_event *ev, struct pgn_stanza *r)
{
	if (r == NULL)
		return;
	if (ev->stanza->from == NULL && ev->origin != NULL) {
		pgn_stream_send_xml(ev->origin, r->xml);
		pgn_stanza_free(r);
		return;
	}
	pgn_router_route(ev->server, NULL, r);
}

void
pgn_event_reply(struct pgn_event *ev, struct pgn_xml *payload)
{
	send_reply(ev, pgn_stanza_iq_result(ev->stanza, payload));
}

void
pgn_event_error(struct pgn_event *ev, const char *type, const char *condition)
{
	send_reply(ev, pgn_stanza_error_reply(ev->stanza, type, condition,
					      NULL));
}
