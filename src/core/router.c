/* Routing.  A stanza a local client sends first meets the outbound events
 * of its sender's host:
 *   pre-<kind>/<addr>            (filters: blocking, privacy)
 * then the route of its destination domain (route.h): a local host
 * (deliver.c), a service domain a module owns, a connected component, or
 * the remote route.
 *
 * The routing context (struct pgn_route_ctx) is passed along: into every
 * event the router fires (ev->ctx), so that holds and ack tickets count
 * for the client stanza being routed.  What a handler routes itself
 * belongs to the same client stanza when it passes its event
 * (pgn_event_route, pgn_event_route_from, pgn_event_bounce, replies);
 * pgn_route and pgn_route_from are for the server's own stanzas and
 * route with an empty context.  There is no "routing in progress" state. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver.h"
#include "event.h"
#include "host.h"
#include "pigeon/log.h"
#include "router.h"
#include "server.h"
#include "stream.h"

static const struct pgn_route_ctx no_ctx = { 0, 0 };

int
pgn_stanza_type_is(const struct pgn_stanza *st, const char *t)
{
	return st->type != NULL && strcmp(st->type, t) == 0;
}

/* RFC 6120 §8.3.1: never answer an error with an error, nor an iq result
 * or error at all. */
static int
must_not_answer(const struct pgn_stanza *st)
{
	if (pgn_stanza_type_is(st, "error"))
		return 1;
	return st->kind == PGN_STANZA_IQ &&
	       (pgn_stanza_type_is(st, "result") || st->type == NULL ||
		(!pgn_stanza_type_is(st, "get") &&
		 !pgn_stanza_type_is(st, "set")));
}

const struct pgn_route_ctx *
pgn_event_ctx(const struct pgn_event *ev)
{
	return ev->ctx != NULL ? ev->ctx : &no_ctx;
}

void
pgn_router_bounce_text(const struct pgn_routing *rt, struct pgn_stanza *st,
		       const char *type, const char *condition,
		       const char *text)
{
	struct pgn_stanza *err = NULL;

	if (!must_not_answer(st) && st->from != NULL)
		err = pgn_stanza_error_reply(st, type, condition, text);
	pgn_stanza_free(st);
	if (err != NULL)
		pgn_router_route_ctx(rt->srv, NULL, err, rt->ctx);
}

void
pgn_router_bounce_rt(const struct pgn_routing *rt, struct pgn_stanza *st,
		     const char *type, const char *condition)
{
	pgn_router_bounce_text(rt, st, type, condition, NULL);
}

void
pgn_router_bounce(struct pgn_server *srv, struct pgn_stanza *st,
		  const char *type, const char *condition)
{
	struct pgn_routing rt = { .srv = srv, .ctx = &no_ctx };

	pgn_router_bounce_rt(&rt, st, type, condition);
}

int
pgn_router_fire_stage(const struct pgn_routing *rt, struct pgn_host *h,
		      struct pgn_stanza **stp, const char *name,
		      enum pgn_route_stage stage)
{
	struct pgn_event_route where = { .stage = stage, .host = h };
	struct pgn_event ev = { .name = name, .server = h->srv, .host = h,
				.origin = rt->origin, .stanza = *stp,
				.route = &where, .ctx = rt->ctx };
	const struct pgn_resume *from = rt->from;
	int r;

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

int
pgn_router_fire(struct pgn_host *h, struct pgn_event *ev,
		const struct pgn_route_ctx *ctx)
{
	ev->ctx = ctx;
	return pgn_host_fire(h, ev);
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

/* After the outbound events: one lookup in the route table. */
static void
dest(const struct pgn_routing *rt, struct pgn_stanza *st)
{
	const struct pgn_route *r =
		pgn_routes_lookup(rt->srv->routes, st->to->domain);

	r->fn(rt, st, r);
}

void
pgn_router_run(const struct pgn_routing *rt, struct pgn_stanza *st)
{
	const struct pgn_resume *from = rt->from;
	struct pgn_routing fresh = *rt;

	if (st->to == NULL || st->from == NULL) {
		/* Only the c2s layer routes address-less stanzas, after
		 * filling them in; anything else is a bug upstream. */
		pgn_log(PGN_LOG_WARN, "router: dropping stanza without address");
		pgn_stanza_free(st);
		return;
	}
	if (from != NULL && from->stage != PGN_STAGE_PRE) {
		if (pgn_server_host(rt->srv, st->to->domain) == from->host) {
			dest(rt, st); /* on, after the holder */
			return;
		}
		/* The holder readdressed it: delivered afresh. */
	} else {
		/* A resumed outbound chain keeps its host even if the
		 * sender has gone meanwhile. */
		struct pgn_host *ph =
			from != NULL ? from->host : pre_host(rt->origin);
		if (ph != NULL) {
			char name[64];
			snprintf(name, sizeof(name), "pre-%s/%s",
				 pgn_stanza_kind_names[st->kind],
				 st->to_self ? "self" : pgn_stanza_addr(st));
			if (pgn_router_fire_stage(rt, ph, &st, name,
						  PGN_STAGE_PRE))
				return;
		}
	}
	/* The destination's events from the first. */
	fresh.from = NULL;
	dest(&fresh, st);
}

void
pgn_router_route_ctx(struct pgn_server *srv, struct pgn_session *origin,
		     struct pgn_stanza *st, const struct pgn_route_ctx *ctx)
{
	struct pgn_routing rt = { .srv = srv, .origin = origin,
				  .ctx = ctx != NULL ? ctx : &no_ctx };

	pgn_router_run(&rt, st);
}

void
pgn_router_route(struct pgn_server *srv, struct pgn_session *origin,
		 struct pgn_stanza *st)
{
	pgn_router_route_ctx(srv, origin, st, NULL);
}

void
pgn_route_from(struct pgn_session *origin, struct pgn_stanza *st)
{
	pgn_router_route(origin->srv, origin, st);
}

void
pgn_route(struct pgn_server *srv, struct pgn_stanza *st)
{
	pgn_router_route(srv, NULL, st);
}

void
pgn_stanza_bounce(struct pgn_server *srv, struct pgn_stanza *st,
		  const char *type, const char *condition)
{
	pgn_router_bounce(srv, st, type, condition);
}

/* A handler's own stanzas: within the routing of its event. */
void
pgn_event_route(struct pgn_event *ev, struct pgn_stanza *st)
{
	pgn_router_route_ctx(ev->server, NULL, st, pgn_event_ctx(ev));
}

void
pgn_event_route_from(struct pgn_event *ev, struct pgn_session *origin,
		     struct pgn_stanza *st)
{
	pgn_router_route_ctx(origin->srv, origin, st, pgn_event_ctx(ev));
}

void
pgn_event_bounce(struct pgn_event *ev, struct pgn_stanza *st,
		 const char *type, const char *condition)
{
	struct pgn_routing rt = { .srv = ev->server, .ctx = pgn_event_ctx(ev) };

	pgn_router_bounce_rt(&rt, st, type, condition);
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
	pgn_event_route(ev, r);
}

void
pgn_event_reply(struct pgn_event *ev, struct pgn_xml *payload)
{
	send_reply(ev, pgn_stanza_iq_result(ev->stanza, payload));
}

void
pgn_event_error(struct pgn_event *ev, const char *type, const char *condition)
{
	pgn_event_error_app(ev, type, condition, NULL, NULL);
}

void
pgn_event_error_app(struct pgn_event *ev, const char *type,
		    const char *condition, const char *text,
		    struct pgn_xml *app)
{
	send_reply(ev, pgn_stanza_error_reply_app(ev->stanza, type, condition,
						  text, app));
}

/* ---- the routes ---------------------------------------------------------- */

int
pgn_router_add_host(struct pgn_server *srv, struct pgn_host *h)
{
	struct pgn_route r = { .kind = PGN_ROUTE_HOST,
			       .fn = pgn_deliver_host,
			       .arg = h,
			       .owner = h,
			       .host = h };

	return pgn_routes_add(srv->routes, h->name, &r);
}

static void
to_component(const struct pgn_routing *rt, struct pgn_stanza *st,
	     const struct pgn_route *r)
{
	struct pgn_session *comp = r->arg;

	if (comp->state != PGN_ST_BOUND) {
		/* Closing: as if not connected. */
		pgn_router_bounce_rt(rt, st, "cancel", "service-unavailable");
		return;
	}
	pgn_stream_send_xml(comp, st->xml);
	pgn_stanza_free(st);
}

int
pgn_router_add_component(struct pgn_server *srv, const char *domain,
			 struct pgn_session *s, struct pgn_session **old)
{
	const struct pgn_route *cur = pgn_routes_get(srv->routes, domain);
	struct pgn_route r = { .kind = PGN_ROUTE_COMPONENT,
			       .fn = to_component,
			       .arg = s,
			       .owner = s };

	*old = NULL;
	if (cur != NULL && cur->kind == PGN_ROUTE_COMPONENT) {
		/* One connection per component: the new one wins. */
		*old = cur->arg;
		pgn_routes_del(srv->routes, domain, cur->owner);
	}
	return pgn_routes_add(srv->routes, domain, &r) == 0 ? 0 : -ENOMEM;
}

int
pgn_router_del_component(struct pgn_server *srv, const char *domain,
			 struct pgn_session *s)
{
	return pgn_routes_del(srv->routes, domain, s) == 0;
}

static int
configured_component(const struct pgn_server *srv, const char *domain)
{
	for (size_t i = 0; i < srv->cfg->ncomponents; i++)
		if (strcmp(srv->cfg->components[i].domain, domain) == 0)
			return 1;
	return 0;
}

void
pgn_router_remote_default(const struct pgn_routing *rt, struct pgn_stanza *st,
			  const struct pgn_route *r)
{
	if (configured_component(rt->srv, st->to->domain)) {
		/* Known component, not connected now. */
		pgn_router_bounce_rt(rt, st, "cancel", "service-unavailable");
		return;
	}
	/* Federation does not exist yet: every remote domain is
	 * unreachable. */
	pgn_router_bounce_rt(rt, st, "cancel", "remote-server-not-found");
}

/* A module's route: its handler sees the stanza as an event ("route/
 * service" or "route/remote"); unhandled, the stanza bounces. */
static void
to_module(const struct pgn_routing *rt, struct pgn_stanza *st,
	  const struct pgn_route *r)
{
	int remote = r->kind == PGN_ROUTE_REMOTE;
	struct pgn_event ev = { .name = remote ? "route/remote"
					       : "route/service",
				.server = rt->srv, .host = r->host,
				.origin = rt->origin, .stanza = st,
				.data = (void *)st->to->domain,
				.ctx = rt->ctx };

	if (r->hook(&ev, r->hook_arg) == PGN_EVENT_HANDLED) {
		pgn_stanza_free(ev.stanza); /* NULL when held */
		return;
	}
	if (remote)
		pgn_router_remote_default(rt, st, r);
	else
		pgn_router_bounce_rt(rt, st, "cancel", "service-unavailable");
}

int
pgn_module_add_domain(struct pgn_module *m, const char *domain,
		      pgn_hook_fn fn, void *arg)
{
	struct pgn_route r = { .kind = PGN_ROUTE_SERVICE,
			       .fn = to_module,
			       .hook = fn,
			       .hook_arg = arg,
			       .owner = m,
			       .host = pgn_module_host(m) };
	char *prepared = NULL;
	int rc;

	if (fn == NULL || pgn_jid_nameprep(domain, &prepared) != 0)
		return -EINVAL;
	/* A configured component keeps its domain while not connected. */
	rc = configured_component(pgn_module_server(m), prepared)
		     ? -EEXIST
		     : pgn_routes_add(pgn_module_server(m)->routes, prepared,
				      &r);
	free(prepared);
	return rc;
}

int
pgn_module_remove_domain(struct pgn_module *m, const char *domain)
{
	char *prepared = NULL;
	int rc;

	if (pgn_jid_nameprep(domain, &prepared) != 0)
		return -EINVAL;
	rc = pgn_routes_del(pgn_module_server(m)->routes, prepared, m);
	free(prepared);
	return rc;
}

int
pgn_module_set_remote_route(struct pgn_module *m, pgn_hook_fn fn, void *arg)
{
	struct pgn_route r = { .fn = to_module,
			       .hook = fn,
			       .hook_arg = arg,
			       .owner = m,
			       .host = pgn_module_host(m) };

	return fn != NULL ? pgn_routes_set_remote(pgn_module_server(m)->routes,
						  &r)
			  : -EINVAL;
}

struct service_each {
	void (*fn)(const char *domain, void *arg);
	void *arg;
};

static void
service_each(const struct pgn_route *r, void *arg)
{
	const struct service_each *e = arg;

	e->fn(r->domain, e->arg);
}

void
pgn_host_foreach_service(const struct pgn_host *h,
			 void (*fn)(const char *domain, void *arg), void *arg)
{
	struct service_each e = { fn, arg };

	pgn_routes_foreach(h->srv->routes, PGN_ROUTE_SERVICE, h, service_each,
			   &e);
}
