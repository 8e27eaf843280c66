/* Holds: a handler takes the stanza and its place in the chain while it
 * waits for storage (pgn_event_hold), then resumes routing or takes the
 * stanza (doc/architecture.md, "Waiting for storage inside the chain").
 * A hold keeps the routing context it was taken in: the client stanza's
 * acknowledgement waits for it (pgn_ack_ref), and the routing it resumes
 * counts for that stanza again. */
#include <errno.h>
#include <stdlib.h>

#include "router.h"
#include "server.h"
#include "stream.h"

struct pgn_hold {
	struct pgn_server *srv;
	struct pgn_stanza *st;
	uint64_t origin;       /* session id, 0 if none */
	struct pgn_resume at;
	struct pgn_route_ctx ctx;
	/* When and from which session the stanza was read (the latency
	 * histograms then count the wait, see latency.h). */
	uint64_t read_ns, read_sid;
};

struct pgn_hold *
pgn_event_hold(struct pgn_event *ev)
{
	const struct pgn_event_route *where = ev->route;
	struct pgn_hold *h;

	if (ev->stanza == NULL || (h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	h->srv = ev->server;
	h->st = ev->stanza;
	h->ctx = *pgn_event_ctx(ev);
	pgn_ack_ref(h->srv, &h->ctx);
	h->read_ns = h->srv->read_ns;
	h->read_sid = h->srv->read_sid;
	h->origin = ev->origin != NULL ? ev->origin->id : 0;
	if (where != NULL)
		h->at = (struct pgn_resume){ where->stage, where->host,
					     ev->pos_priority, ev->pos_fn,
					     ev->pos_arg };
	else
		h->at.stage = PGN_STAGE_NONE;
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
	struct pgn_hold held = *h; /* h is freed before routing goes on */
	struct pgn_server *srv = held.srv;
	struct pgn_routing rt = {
		.srv = srv,
		.origin = held.origin != 0 ? pgn_stream_find(srv, held.origin)
					   : NULL,
		.ctx = &held.ctx,
		.from = &held.at,
	};
	uint64_t saved_ns = srv->read_ns, saved_rsid = srv->read_sid;

	free(h);
	/* Its delivery is timed from its read. */
	srv->read_ns = held.read_ns;
	srv->read_sid = held.read_sid;
	if (held.at.stage == PGN_STAGE_NONE)
		/* Not on its way anywhere (a session event's stanza). */
		pgn_stanza_free(held.st);
	else
		pgn_router_run(&rt, held.st);
	srv->read_ns = saved_ns;
	srv->read_sid = saved_rsid;
	pgn_ack_unref(srv, &held.ctx);
}

void
pgn_hold_bounce(struct pgn_hold *h, const char *type, const char *condition,
		const char *text)
{
	struct pgn_route_ctx ctx = h->ctx; /* h is freed first */
	struct pgn_routing rt = { .srv = h->srv, .ctx = &ctx };
	struct pgn_stanza *st = h->st;

	free(h);
	/* The error counts for the held stanza: its ack waits for what the
	 * error meets, and only then is the hold's reference dropped. */
	pgn_router_bounce_text(&rt, st, type, condition, text);
	pgn_ack_unref(rt.srv, &ctx);
}

struct pgn_stanza *
pgn_hold_take(struct pgn_hold *h)
{
	struct pgn_stanza *st = h->st;

	pgn_ack_unref(h->srv, &h->ctx);
	free(h);
	return st;
}

int
pgn_hold_answer(struct pgn_hold *h, struct pgn_xml *payload, const char *type,
		const char *condition, const char *text)
{
	struct pgn_server *srv = h->srv;
	struct pgn_stanza *req = pgn_hold_take(h);
	struct pgn_stanza *r;

	if (condition != NULL) {
		pgn_xml_free(payload);
		r = pgn_stanza_error_reply(req, type, condition, text);
	} else {
		r = pgn_stanza_iq_result(req, payload);
	}
	pgn_stanza_free(req);
	if (r == NULL)
		return -ENOMEM;
	pgn_route(srv, r);
	return 0;
}
