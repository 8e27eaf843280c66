/* The domain route table (after ejabberd's register_route and Prosody's
 * route/remote): which part of the server takes a stanza addressed to a
 * domain.  One hash lookup per stanza; the entries are made when a host
 * starts, a component connects or a module registers a service domain,
 * never while routing.  A domain without an entry goes to the one
 * "remote" route, whose default bounces (no federation yet); a
 * federation module replaces it.
 *
 * Also the routing context: which client stanza a stanza being routed
 * belongs to, so that holds and ack tickets delay that stanza's
 * acknowledgement (XEP-0198, sm.c). */
#ifndef PIGEON_ROUTE_H
#define PIGEON_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "pigeon/module.h"

struct pgn_server;
struct pgn_session;
struct pgn_host;
struct pgn_resume;

/* The client stanza a routing belongs to: its session id (0: none, a
 * stanza the server made) and stream management number.  Passed by
 * pointer along routing, copied into a hold; never allocated. */
struct pgn_route_ctx {
	uint64_t ack_sid;
	uint32_t ack_seq;
};

enum pgn_route_kind {
	PGN_ROUTE_HOST = 0, /* a local virtual host (arg: struct pgn_host) */
	PGN_ROUTE_SERVICE,  /* a domain a module owns (conference.<host>) */
	PGN_ROUTE_COMPONENT, /* a connected XEP-0114 component (arg: session) */
	PGN_ROUTE_REMOTE,   /* the fallback: every other domain */
};

/* One stanza on its way, as the route handlers see it (on the stack). */
struct pgn_routing {
	struct pgn_server *srv;
	struct pgn_session *origin;       /* the sender's session, or NULL */
	const struct pgn_route_ctx *ctx;  /* never NULL */
	const struct pgn_resume *from;    /* a resumed hold's place, or NULL */
};

struct pgn_route;
/* Takes st. */
typedef void (*pgn_route_fn)(const struct pgn_routing *rt,
			     struct pgn_stanza *st, const struct pgn_route *r);

struct pgn_route {
	enum pgn_route_kind kind;
	const char *domain;     /* owned by the entry; "" for remote */
	pgn_route_fn fn;
	void *arg;
	/* SERVICE and a module's remote route: the module's handler. */
	pgn_hook_fn hook;
	void *hook_arg;
	const void *owner;      /* host, session or module; NULL: the core */
	struct pgn_host *host;  /* HOST: itself; SERVICE: the module's host */
};

struct pgn_routes;

/* remote_fn is the default remote route (its owner NULL). */
struct pgn_routes *pgn_routes_new(pgn_route_fn remote_fn);
void pgn_routes_free(struct pgn_routes *t);
/* Adds an entry for domain (copied): fn, arg, hook, hook_arg, owner and
 * host as in struct pgn_route.  0, -EEXIST when the domain has one, or
 * -ENOMEM. */
int pgn_routes_add(struct pgn_routes *t, const char *domain,
		   const struct pgn_route *r);
/* The entry of domain exactly, or NULL.  Borrowed until it is removed. */
const struct pgn_route *pgn_routes_get(const struct pgn_routes *t,
				       const char *domain);
/* The entry of domain, else the remote route: never NULL. */
const struct pgn_route *pgn_routes_lookup(const struct pgn_routes *t,
					  const char *domain);
/* Removes domain's entry if owner owns it: 0 or -ENOENT. */
int pgn_routes_del(struct pgn_routes *t, const char *domain,
		   const void *owner);
/* Removes every entry owner owns (module unload), and gives the remote
 * route back to the default if owner had replaced it. */
void pgn_routes_del_owner(struct pgn_routes *t, const void *owner);
/* Replaces the remote route (r->fn, arg, hook, hook_arg, owner): 0, or
 * -EEXIST when another owner has it already. */
int pgn_routes_set_remote(struct pgn_routes *t, const struct pgn_route *r);
size_t pgn_routes_count(const struct pgn_routes *t, enum pgn_route_kind kind);
/* Calls fn for each entry of that kind (host NULL: any host). */
void pgn_routes_foreach(const struct pgn_routes *t, enum pgn_route_kind kind,
			const struct pgn_host *host,
			void (*fn)(const struct pgn_route *r, void *arg),
			void *arg);

/* ---- acknowledgement of client stanzas (sm.c) ----
 * While ctx's stanza (ack_sid != 0) has a reference, stream management
 * does not count it as handled.  A NULL or empty ctx is a no-op. */
void pgn_ack_ref(struct pgn_server *srv, const struct pgn_route_ctx *ctx);
void pgn_ack_unref(struct pgn_server *srv, const struct pgn_route_ctx *ctx);

#endif
