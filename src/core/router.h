/* The in-process router: where a stanza goes (domain routing through the
 * route table, route.h), after the outbound events of its sender's host.
 * The parts:
 *   router.c    entry points, outbound events, the domain dispatch,
 *               component / service / remote routes, bounces
 *   deliver.c   a local host's inbound events and the RFC 6120 §10 /
 *               RFC 6121 §8 delivery rules
 *   sessions.c  the table of bound client sessions
 *   hold.c      holds (pgn_event_hold) and resuming them
 * Stream management's acknowledgements are sm.c's (pgn_ack_ref). */
#ifndef PIGEON_ROUTER_H
#define PIGEON_ROUTER_H

#include "pigeon/module.h"
#include "route.h"
#include "sessions.h"

struct pgn_server;
struct pgn_session;
struct pgn_host;

/* Where a stanza is on its way.  A handler that holds the stanza
 * (pgn_event_hold) records the stage and itself; resuming continues after
 * it, then with the following stages. */
enum pgn_route_stage {
	PGN_STAGE_NONE = -1, /* not the router's event: nothing to resume */
	PGN_STAGE_PRE = 0,   /* pre-<kind>/<addr> on the sender's host */
	PGN_STAGE_IQ,        /* iq-<type>/<addr>/<ns>:<name> on the destination */
	PGN_STAGE_PLAIN,     /* <kind>/<addr> on the destination */
	PGN_STAGE_OFFLINE,   /* message/offline, then the sender gets an error */
};

/* A held stanza's place: the stage, the host whose handlers ran, and the
 * handler that held it. */
struct pgn_resume {
	enum pgn_route_stage stage;
	struct pgn_host *host;
	int priority;
	pgn_hook_fn fn;
	void *arg;
};

/* The router's part of an event it fires (ev->route). */
struct pgn_event_route {
	enum pgn_route_stage stage;
	struct pgn_host *host;
};

/* Routes st (takes ownership) coming from origin (NULL when the server
 * itself sends it) with an empty context: a stanza no client stanza
 * waits for (a component's, the server's own). */
void pgn_router_route(struct pgn_server *srv, struct pgn_session *origin,
		      struct pgn_stanza *st);
/* The same for a client stanza with its own context (ctx borrowed for the
 * call: stream management's number of st, c2s.c). */
void pgn_router_route_ctx(struct pgn_server *srv, struct pgn_session *origin,
			  struct pgn_stanza *st,
			  const struct pgn_route_ctx *ctx);
/* Fires ev on host h within ctx (ev->ctx is set): for the session events
 * a client stanza causes (initial-presence). */
int pgn_router_fire(struct pgn_host *h, struct pgn_event *ev,
		    const struct pgn_route_ctx *ctx);
/* Routes st within rt (rt->ctx goes into every event fired); with rt->from (hold.c), from there on: after the holder, or afresh at
 * the destination when the holder readdressed it to another domain. */
void pgn_router_run(const struct pgn_routing *rt, struct pgn_stanza *st);
/* Fires name on host h as stage (after the holder when rt->from is at
 * this stage).  1 when the stanza was taken (handled, or held: then *stp
 * is NULL), 0 when it goes on. */
int pgn_router_fire_stage(const struct pgn_routing *rt, struct pgn_host *h,
			  struct pgn_stanza **stp, const char *name,
			  enum pgn_route_stage stage);
/* The context that holds, tickets and the stanzas a handler routes with
 * ev count for: the event's, else an empty one (never NULL). */
const struct pgn_route_ctx *pgn_event_ctx(const struct pgn_event *ev);

/* Answers st with a stanza error unless it must not be answered (errors,
 * iq results), with an empty context.  Takes ownership of st. */
void pgn_router_bounce(struct pgn_server *srv, struct pgn_stanza *st,
		       const char *type, const char *condition);
/* The same within rt's context. */
void pgn_router_bounce_rt(const struct pgn_routing *rt, struct pgn_stanza *st,
			  const char *type, const char *condition);
/* The same with a human-readable text (NULL: none). */
void pgn_router_bounce_text(const struct pgn_routing *rt, struct pgn_stanza *st,
			    const char *type, const char *condition,
			    const char *text);
int pgn_stanza_type_is(const struct pgn_stanza *st, const char *t);

/* ---- route registration (server.c, component.c) ---- */
int pgn_router_add_host(struct pgn_server *srv, struct pgn_host *h);
/* A component session s finished its handshake for domain: its route.
 * The session that had the domain before is returned in *old (its entry
 * is gone; the caller ends it).  0 or -ENOMEM. */
int pgn_router_add_component(struct pgn_server *srv, const char *domain,
			     struct pgn_session *s, struct pgn_session **old);
/* s goes: its route too (if it still has it).  1 if it had. */
int pgn_router_del_component(struct pgn_server *srv, const char *domain,
			     struct pgn_session *s);
/* The default remote route: a configured component that is not connected
 * is service-unavailable; every other domain remote-server-not-found
 * (until federation registers a remote route). */
void pgn_router_remote_default(const struct pgn_routing *rt,
			       struct pgn_stanza *st, const struct pgn_route *r);

#endif
