/* Local delivery.  A stanza to a local host is offered to the host's
 * inbound events in this order:
 *   iq-<type>/<addr>/<ns>:<name> (iq get/set with a payload)
 *   <kind>/<addr>
 * and, when no handler took it, to the built-in RFC 6121 §8 rules below.
 * (The outbound pre-<kind>/<addr> events ran before, router.c.) */
#include <stdio.h>
#include <string.h>

#include "deliver.h"
#include "host.h"
#include "iq.h"
#include "router.h"
#include "server.h"
#include "stream.h"

const char *const pgn_stanza_kind_names[] = { "message", "presence", "iq",
					      "other" };

const char *
pgn_stanza_addr(const struct pgn_stanza *st)
{
	return st->to->node == NULL       ? "host"
	       : st->to->resource == NULL ? "bare"
					  : "full";
}

static void
deliver(struct pgn_session *s, const struct pgn_stanza *st)
{
	pgn_stream_send_xml(s, st->xml);
}

/* RFC 6121 §8.5.2.2.1: with no resource to take it, offline storage (a
 * module) may, else its sender learns. */
void
pgn_deliver_offline(const struct pgn_routing *rt, struct pgn_host *h,
		    struct pgn_stanza *st)
{
	if (pgn_router_fire_stage(rt, h, &st, "message/offline",
				  PGN_STAGE_OFFLINE))
		return;
	if (pgn_stanza_type_is(st, "headline") ||
	    pgn_stanza_type_is(st, "error")) {
		pgn_stanza_free(st);
		return;
	}
	pgn_router_bounce_rt(rt, st, "cancel", "service-unavailable");
}

/* RFC 6121 §8.5.2: a message to a bare JID goes to the available
 * resources with the highest non-negative priority; with none,
 * message/offline, then an error.  (A message for a full JID that falls
 * back here comes with rt->from before PGN_STAGE_OFFLINE, so its
 * message/offline starts from the first handler.) */
static void
message_to_bare(const struct pgn_routing *rt, struct pgn_host *h,
		struct pgn_stanza *st)
{
	struct pgn_server *srv = rt->srv;

	if (rt->from == NULL || rt->from->stage < PGN_STAGE_OFFLINE) {
		struct pgn_session *head = pgn_router_sessions(srv, st->to->bare);
		int best = pgn_user_top_priority(srv, st->to->bare);
		int delivered = 0;

		if (best >= 0 && !pgn_stanza_type_is(st, "groupchat")) {
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
	pgn_deliver_offline(rt, h, st);
}

/* To a full JID (RFC 6121 §8.5.3) once no handler took it. */
static void
to_full(const struct pgn_routing *rt, struct pgn_host *h,
	struct pgn_stanza *st)
{
	struct pgn_session *s = pgn_router_find_full(rt->srv, st->to);

	if (s != NULL && pgn_stream_bound(s) &&
	    pgn_stream_send_xml(s, st->xml) == 0) {
		pgn_stanza_free(st);
		return;
	}
	/* §8.5.3.2: no such resource (or its session is ending and did not
	 * take it: stream management bounds). */
	if (st->kind == PGN_STANZA_MESSAGE &&
	    !pgn_stanza_type_is(st, "groupchat")) {
		message_to_bare(rt, h, st);
		return;
	}
	if (st->kind == PGN_STANZA_PRESENCE)
		pgn_stanza_free(st);
	else
		pgn_router_bounce_rt(rt, st, "cancel", "service-unavailable");
}

/* To a bare JID once no handler took it. */
static void
to_bare(const struct pgn_routing *rt, struct pgn_host *h,
	struct pgn_stanza *st)
{
	switch (st->kind) {
	case PGN_STANZA_MESSAGE:
		message_to_bare(rt, h, st);
		return;
	case PGN_STANZA_PRESENCE:
		/* Directed presence to an account reaches all its available
		 * resources (but the sender's own). Subscription management
		 * and probes belong to the presence module. */
		if (st->type == NULL || pgn_stanza_type_is(st, "unavailable")) {
			for (struct pgn_session *s =
				     pgn_router_sessions(rt->srv, st->to->bare);
			     s != NULL; s = s->next_res)
				if (s != rt->origin && pgn_session_available(s))
					deliver(s, st);
		}
		pgn_stanza_free(st);
		return;
	default:
		/* iq to the account: answered by the server on its behalf. */
		pgn_router_bounce_rt(rt, st, "cancel", "service-unavailable");
		return;
	}
}

void
pgn_deliver_host(const struct pgn_routing *rt, struct pgn_stanza *st,
		 const struct pgn_route *r)
{
	const struct pgn_resume *from = rt->from;
	struct pgn_host *h = r->host;
	const char *addr = pgn_stanza_addr(st);
	char name[512];

	if (from != NULL && from->stage == PGN_STAGE_OFFLINE) {
		message_to_bare(rt, h, st);
		return;
	}
	/* An answer to an iq a module sent (pgn_send_iq) goes to it. */
	if (from == NULL && pgn_iq_tracker_answer(rt->srv->iq, st))
		return;
	if ((from == NULL || from->stage <= PGN_STAGE_IQ) &&
	    st->kind == PGN_STANZA_IQ &&
	    (pgn_stanza_type_is(st, "get") || pgn_stanza_type_is(st, "set"))) {
		struct pgn_xml *payload = pgn_xml_first_child(st->xml);
		if (payload != NULL) {
			const char *ns = pgn_xml_ns(payload);
			snprintf(name, sizeof(name), "iq-%s/%s/%s:%s", st->type,
				 addr, ns != NULL ? ns : "",
				 pgn_xml_name(payload));
			if (pgn_router_fire_stage(rt, h, &st, name,
						  PGN_STAGE_IQ))
				return;
		}
	}
	snprintf(name, sizeof(name), "%s/%s", pgn_stanza_kind_names[st->kind],
		 addr);
	if (pgn_router_fire_stage(rt, h, &st, name, PGN_STAGE_PLAIN))
		return;
	if (st->to->node == NULL) {
		/* To the server itself and unhandled. */
		if (st->kind == PGN_STANZA_IQ)
			pgn_router_bounce_rt(rt, st, "cancel",
					     "service-unavailable");
		else
			pgn_stanza_free(st);
	} else if (st->to->resource != NULL) {
		to_full(rt, h, st);
	} else {
		to_bare(rt, h, st);
	}
}

static void
undelivered(const struct pgn_routing *rt, struct pgn_stanza *st)
{
	struct pgn_host *h = st->to != NULL
				     ? pgn_server_host(rt->srv, st->to->domain)
				     : NULL;

	if (st->kind == PGN_STANZA_MESSAGE && h != NULL &&
	    st->to->node != NULL) {
		pgn_deliver_offline(rt, h, st);
		return;
	}
	if (st->kind == PGN_STANZA_IQ)
		pgn_router_bounce_rt(rt, st, "wait", "recipient-unavailable");
	else
		pgn_stanza_free(st);
}

void
pgn_stanza_undelivered(struct pgn_server *srv, struct pgn_stanza *st)
{
	struct pgn_routing rt = { .srv = srv, .ctx = NULL }; /* no context */

	undelivered(&rt, st);
}

void
pgn_event_undelivered(struct pgn_event *ev, struct pgn_stanza *st)
{
	struct pgn_routing rt = { .srv = ev->server, .ctx = pgn_event_ctx(ev) };

	undelivered(&rt, st);
}
