/* The session API of module.h: what a module may see and do with a
 * client session, and the per-module data it keeps on one.  The stream
 * object itself lives in stream.c; this file only exposes it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/account.h"
#include "pigeon/module.h"
#include "host.h"
#include "router.h"
#include "server.h"
#include "stream.h"

struct pgn_session *
pgn_user_sessions(struct pgn_server *srv, const char *bare)
{
	return pgn_router_sessions(srv, bare);
}

struct pgn_session *
pgn_session_next(const struct pgn_session *s)
{
	return s->next_res;
}

struct pgn_session *
pgn_session_find(struct pgn_server *srv, uint64_t id)
{
	return pgn_stream_find(srv, id);
}

struct pgn_host *
pgn_session_host(const struct pgn_session *s)
{
	return s->host;
}

struct pgn_server *
pgn_session_server(const struct pgn_session *s)
{
	return s->srv;
}

const char *
pgn_session_peer(const struct pgn_session *s)
{
	/* A hibernated session has no connection. */
	return s->conn != NULL ? s->conn->peer : "";
}

int
pgn_session_authenticated(const struct pgn_session *s)
{
	return s->authenticated;
}

struct pgn_xml *
pgn_event_client_features(const struct pgn_event *ev)
{
	if (ev->data == NULL || ev->origin == NULL ||
	    !pgn_session_authenticated(ev->origin))
		return NULL;
	return ev->data;
}

int
pgn_session_available(const struct pgn_session *s)
{
	/* A closing stream is not a place to deliver to any more. */
	return s->available && pgn_stream_bound(s);
}

int
pgn_session_priority(const struct pgn_session *s)
{
	return s->priority;
}

const struct pgn_xml *
pgn_session_presence(const struct pgn_session *s)
{
	return s->presence;
}

int
pgn_session_set_presence(struct pgn_session *s, const struct pgn_xml *xml)
{
	struct pgn_xml *copy = NULL;

	if (xml != NULL && (copy = pgn_xml_copy(xml)) == NULL)
		return -ENOMEM;
	pgn_xml_free(s->presence);
	s->presence = copy;
	return 0;
}

int
pgn_session_send(struct pgn_session *s, const struct pgn_xml *xml)
{
	return pgn_stream_send_xml(s, xml);
}

int
pgn_session_send_direct(struct pgn_session *s, const struct pgn_xml *xml)
{
	return pgn_stream_send_direct(s, xml);
}

int
pgn_session_add_filter(struct pgn_session *s, const struct pgn_module *m,
		       int priority, pgn_send_filter_fn fn, void *arg)
{
	struct pgn_sfilter *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -ENOMEM;
	f->priority = priority;
	f->alloced = 1;
	f->owner = m;
	f->fn = fn;
	f->arg = arg;
	pgn_stream_add_filter(s, f);
	return 0;
}

/* Removes the module filters that match (fn NULL: all of m's, m NULL:
 * every module's; arg NULL: any). */
static void
remove_filters(struct pgn_session *s, const struct pgn_module *m,
	       pgn_send_filter_fn fn, void *arg)
{
	struct pgn_sfilter **pp = &s->filters;

	while (*pp != NULL) {
		struct pgn_sfilter *f = *pp;
		if (!f->alloced || (m != NULL && f->owner != m) ||
		    (fn != NULL && f->fn != fn) ||
		    (arg != NULL && f->arg != arg)) {
			pp = &f->next;
			continue;
		}
		*pp = f->next;
		free(f);
	}
}

void
pgn_session_remove_filter(struct pgn_session *s, const struct pgn_module *m,
			  pgn_send_filter_fn fn, void *arg)
{
	if (fn != NULL)
		remove_filters(s, m, fn, arg);
}

void
pgn_session_set_send_filter(struct pgn_session *s, const struct pgn_module *m,
			    pgn_send_filter_fn fn, void *arg)
{
	remove_filters(s, m, NULL, NULL);
	if (fn != NULL)
		(void)pgn_session_add_filter(s, m, PGN_FILTER_PRIO_DEFAULT, fn,
					     arg);
}

void
pgn_session_hold(struct pgn_session *s)
{
	if (s->holds++ == 0 && s->conn != NULL && s->state != PGN_ST_DEAD)
		s->conn->ops->set_reading(s->conn, 0);
}

void
pgn_session_release(struct pgn_session *s)
{
	if (s->holds == 0 || --s->holds > 0)
		return;
	if (s->state == PGN_ST_DEAD || s->state == PGN_ST_CLOSING)
		return;
	/* Replays what queued meanwhile, then reads again. */
	if (!s->busy)
		pgn_stream_resume(s);
}

void
pgn_session_close(struct pgn_session *s, const char *condition,
		  const char *text)
{
	if (condition != NULL)
		pgn_stream_error(s, condition, text);
	else
		pgn_stream_close(s);
}

void *
pgn_session_get_data(const struct pgn_session *s, const struct pgn_module *m)
{
	for (const struct pgn_sdata *d = s->sdata; d != NULL; d = d->next)
		if (d->owner == m)
			return d->data;
	return NULL;
}

int
pgn_session_set_data(struct pgn_session *s, const struct pgn_module *m,
		     void *data, void (*free_fn)(void *))
{
	struct pgn_sdata *d;

	pgn_session_drop_data(s, m);
	if (data == NULL)
		return 0;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return -ENOMEM;
	d->owner = m;
	d->data = data;
	d->free_fn = free_fn;
	d->next = s->sdata;
	s->sdata = d;
	return 0;
}

void
pgn_session_drop_data(struct pgn_session *s, const struct pgn_module *owner)
{
	struct pgn_sdata **pp = &s->sdata;

	remove_filters(s, owner, NULL, NULL);
	while (*pp != NULL) {
		struct pgn_sdata *d = *pp;
		if (owner != NULL && d->owner != owner) {
			pp = &d->next;
			continue;
		}
		*pp = d->next;
		if (d->free_fn != NULL)
			d->free_fn(d->data);
		free(d);
	}
}

void
pgn_user_kick(struct pgn_server *srv, const char *bare, const char *condition,
	      const char *text)
{
	struct pgn_session *s = pgn_router_sessions(srv, bare);

	while (s != NULL) {
		struct pgn_session *next = s->next_res;
		pgn_stream_error(s, condition, text);
		s = next;
	}
}

/* An account deletion under way: what the completion needs. */
struct unregister_req {
	struct pgn_server *srv;
	char *user, *host, *bare;
	pgn_account_cb cb;
	void *arg;
};

static void
unregister_fire(struct unregister_req *rq, const char *name, int err)
{
	/* The host may be gone only at shutdown; then nobody listens. */
	struct pgn_host *h = pgn_server_host(rq->srv, rq->host);
	struct pgn_account_event data = { rq->user, rq->host, rq->bare, err };
	struct pgn_event ev = { .name = name, .server = rq->srv, .host = h,
				.data = &data };
	if (h != NULL)
		pgn_host_fire(h, &ev);
}

static void
unregister_free(struct unregister_req *rq)
{
	free(rq->user);
	free(rq->host);
	free(rq->bare);
	free(rq);
}

static void
unregister_done(uint64_t owner, void *arg, int err,
		const struct pgn_scram_creds *creds)
{
	struct unregister_req *rq = arg;
	unregister_fire(rq, "account-removed", err);
	rq->cb(owner, rq->arg, err, creds);
	unregister_free(rq);
}

int
pgn_user_unregister(struct pgn_server *srv, const char *user,
		    const char *host, uint64_t owner, pgn_account_cb cb,
		    void *arg)
{
	struct unregister_req *rq = calloc(1, sizeof(*rq));
	size_t n;
	int err;

	if (user == NULL || host == NULL) {
		free(rq);
		return -EINVAL;
	}
	if (rq == NULL)
		goto nomem;
	n = strlen(user) + strlen(host) + 2;
	rq->srv = srv;
	rq->cb = cb;
	rq->arg = arg;
	if ((rq->user = strdup(user)) == NULL ||
	    (rq->host = strdup(host)) == NULL ||
	    (rq->bare = malloc(n)) == NULL)
		goto nomem;
	snprintf(rq->bare, n, "%s@%s", user, host);
	/* Handlers queue their reads now, ahead of the DELETE. */
	unregister_fire(rq, "account-removing", 0);
	err = pgn_account_unregister(srv->store, user, host, owner,
				     unregister_done, rq);
	if (err < 0) {
		unregister_fire(rq, "account-removed", err);
		unregister_free(rq);
	}
	return err;
nomem:
	if (rq != NULL)
		unregister_free(rq);
	return -ENOMEM;
}

struct pgn_store *
pgn_server_store(const struct pgn_server *srv)
{
	return srv->store;
}

struct pgn_worker *
pgn_server_crypto(const struct pgn_server *srv)
{
	return srv->crypto;
}
