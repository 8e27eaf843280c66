/* The in-process router (RFC 6120 §10, RFC 6121 §8) and the table of bound
 * client sessions. */
#ifndef PIGEON_ROUTER_H
#define PIGEON_ROUTER_H

#include "pigeon/module.h"

struct pgn_server;
struct pgn_session;

/* Routes st (takes ownership) coming from origin (NULL when the server
 * itself sends it). */
void pgn_router_route(struct pgn_server *srv, struct pgn_session *origin,
		      struct pgn_stanza *st);
/* Links a session under its full JID s->jid.  A session already bound to
 * the same full JID is returned in *replaced (unlinked; the caller ends
 * it with a conflict stream error).  0, -EUSERS when the account has too
 * many sessions, or -ENOMEM. */
int pgn_router_bind(struct pgn_server *srv, struct pgn_session *s,
		    struct pgn_session **replaced);
void pgn_router_unbind(struct pgn_server *srv, struct pgn_session *s);
/* Sessions of an account (bare JID string), linked by next_res. */
struct pgn_session *pgn_router_sessions(struct pgn_server *srv,
					const char *bare);
struct pgn_session *pgn_router_find_full(struct pgn_server *srv,
					 const struct pgn_jid *jid);
/* Answers st with a stanza error unless it must not be answered (errors,
 * iq results).  Takes ownership of st. */
void pgn_router_bounce(struct pgn_server *srv, struct pgn_stanza *st,
		       const char *type, const char *condition);

#endif
