/* The domain route table: a map from domain to entry, plus the remote
 * route.  Pure data: no server needed (tests/unit/test_router.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/map.h"
#include "route.h"

struct pgn_routes {
	struct pgn_map *by_domain; /* domain -> struct pgn_route (owned) */
	size_t count[PGN_ROUTE_REMOTE];
	struct pgn_route remote;
	pgn_route_fn remote_default;
};

/* The remote route as the core makes it (no owner). */
static void
remote_reset(struct pgn_routes *t)
{
	t->remote = (struct pgn_route){ .kind = PGN_ROUTE_REMOTE,
					.domain = "",
					.fn = t->remote_default };
}

struct pgn_routes *
pgn_routes_new(pgn_route_fn remote_fn)
{
	struct pgn_routes *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	if ((t->by_domain = pgn_map_new()) == NULL) {
		free(t);
		return NULL;
	}
	t->remote_default = remote_fn;
	remote_reset(t);
	return t;
}

static void
entry_free(void *p)
{
	struct pgn_route *r = p;

	free((char *)r->domain);
	free(r);
}

void
pgn_routes_free(struct pgn_routes *t)
{
	if (t == NULL)
		return;
	pgn_map_free_values(t->by_domain, entry_free);
	free(t);
}

int
pgn_routes_add(struct pgn_routes *t, const char *domain,
	       const struct pgn_route *r)
{
	struct pgn_route *e;

	if (r->kind >= PGN_ROUTE_REMOTE)
		return -EINVAL;
	if (pgn_map_get(t->by_domain, domain) != NULL)
		return -EEXIST;
	if ((e = malloc(sizeof(*e))) == NULL)
		return -ENOMEM;
	*e = *r;
	e->domain = strdup(domain);
	if (e->domain == NULL || pgn_map_set(t->by_domain, domain, e) != 0) {
		entry_free(e);
		return -ENOMEM;
	}
	t->count[e->kind]++;
	return 0;
}

const struct pgn_route *
pgn_routes_get(const struct pgn_routes *t, const char *domain)
{
	return pgn_map_get(t->by_domain, domain);
}

const struct pgn_route *
pgn_routes_lookup(const struct pgn_routes *t, const char *domain)
{
	const struct pgn_route *r = pgn_map_get(t->by_domain, domain);

	return r != NULL ? r : &t->remote;
}

int
pgn_routes_del(struct pgn_routes *t, const char *domain, const void *owner)
{
	struct pgn_route *e = pgn_map_get(t->by_domain, domain);

	if (e == NULL || e->owner != owner)
		return -ENOENT;
	pgn_map_del(t->by_domain, domain);
	t->count[e->kind]--;
	entry_free(e);
	return 0;
}

struct del_arg {
	struct pgn_routes *t;
	const void *owner;
};

static int
del_if_owned(const char *key, uint64_t id, void *value, void *arg)
{
	struct del_arg *d = arg;
	struct pgn_route *e = value;

	if (e->owner == d->owner) {
		pgn_map_del(d->t->by_domain, key); /* the map allows it */
		d->t->count[e->kind]--;
		entry_free(e);
	}
	return 0;
}

void
pgn_routes_del_owner(struct pgn_routes *t, const void *owner)
{
	struct del_arg d = { t, owner };

	if (owner == NULL)
		return;
	pgn_map_foreach(t->by_domain, del_if_owned, &d);
	if (t->remote.owner == owner)
		remote_reset(t);
}

int
pgn_routes_set_remote(struct pgn_routes *t, const struct pgn_route *r)
{
	if (t->remote.owner != NULL && t->remote.owner != r->owner)
		return -EEXIST;
	t->remote = *r;
	t->remote.kind = PGN_ROUTE_REMOTE;
	t->remote.domain = "";
	return 0;
}

size_t
pgn_routes_count(const struct pgn_routes *t, enum pgn_route_kind kind)
{
	return kind < PGN_ROUTE_REMOTE ? t->count[kind] : 1;
}

struct each_arg {
	enum pgn_route_kind kind;
	const struct pgn_host *host;
	void (*fn)(const struct pgn_route *r, void *arg);
	void *arg;
};

static int
each(const char *key, uint64_t id, void *value, void *arg)
{
	const struct each_arg *a = arg;
	const struct pgn_route *r = value;

	if (r->kind == a->kind && (a->host == NULL || r->host == a->host))
		a->fn(r, a->arg);
	return 0;
}

void
pgn_routes_foreach(const struct pgn_routes *t, enum pgn_route_kind kind,
		   const struct pgn_host *host,
		   void (*fn)(const struct pgn_route *r, void *arg), void *arg)
{
	struct each_arg a = { kind, host, fn, arg };

	pgn_map_foreach(t->by_domain, each, &a);
}
