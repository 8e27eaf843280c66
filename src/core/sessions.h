/* The table of bound client sessions: account (bare JID) -> its sessions,
 * linked by next_res.  (The names keep their pgn_router_ prefix: bind and
 * unbind are the router's view of a session.) */
#ifndef PIGEON_SESSIONS_H
#define PIGEON_SESSIONS_H

struct pgn_server;
struct pgn_session;
struct pgn_jid;

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

#endif
