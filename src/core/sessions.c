/* The table of bound client sessions (srv->users: "user@host" -> the
 * first session, the others linked by next_res). */
#include <errno.h>
#include <string.h>

#include "pigeon/map.h"
#include "server.h"
#include "sessions.h"
#include "stream.h"

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
