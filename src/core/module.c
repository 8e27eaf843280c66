/* Loadable modules: dlopen'ed .so files exporting `pgn_module_def`.  The
 * loader checks the ABI version; each host gets its own instance, whose
 * hooks and disco features are removed when it unloads. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>


#include "event.h"
#include "host.h"
#include "iq.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "server.h"
#include "stream.h"

/* A named service a module provides to the others on its host. */
struct pgn_service {
	char *name;
	const void *ops;
	void *instance;
};

struct pgn_module {
	const struct pgn_module_def *def;
	void *dl;
	struct pgn_host *host;
	const struct pgn_cfg_module *cfg;
	void *data;
	struct pgn_service *services;
	size_t nservices;
};

static int
drop_session_data(const char *key, uint64_t id, void *value, void *arg)
{
	pgn_session_drop_data(value, arg);
	return 0;
}

static void
services_free(struct pgn_module *m)
{
	for (size_t i = 0; i < m->nservices; i++)
		free(m->services[i].name);
	free(m->services);
	m->services = NULL;
	m->nservices = 0;
}

/* Opens the module's .so and checks it; does not load it yet. */
static struct pgn_module *
module_open(struct pgn_host *h, const struct pgn_cfg_module *cfg,
	    const char *dir, char *err, size_t errlen)
{
	char path[4096];
	struct pgn_module *m = NULL;
	void *dl;

	char where[1200];
	/* Errors point at the config line that asked for the module. */
	snprintf(where, sizeof(where), "%s:%d: module %s", h->srv->cfg->path,
		 cfg->line, cfg->name);
	snprintf(path, sizeof(path), "%s/%s.so", dir, cfg->name);
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		snprintf(err, errlen, "%s: cannot load %s: %s", where, path,
			 dlerror());
		return NULL;
	}
	const struct pgn_module_def *def = dlsym(dl, "pgn_module_def");
	if (def == NULL) {
		snprintf(err, errlen, "%s: %s has no pgn_module_def", where,
			 path);
		goto fail;
	}
	if (def->abi != PGN_MODULE_ABI) {
		snprintf(err, errlen,
			 "%s: built for module ABI %u, server has %u", where,
			 def->abi, PGN_MODULE_ABI);
		goto fail;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	m->def = def;
	m->dl = dl;
	m->host = h;
	m->cfg = cfg;
	return m;
fail:
	dlclose(dl);
	return NULL;
}

/* Runs the module's load; on failure frees m (and says why in err). */
static int
module_start(struct pgn_module *m, char *err, size_t errlen)
{
	struct pgn_host *h = m->host;

	if (m->def->load != NULL) {
		int rc = m->def->load(m);
		if (rc < 0) {
			snprintf(err, errlen, "%s:%d: module %s: load failed "
				 "on %s: %s", h->srv->cfg->path, m->cfg->line,
				 m->cfg->name, h->name, strerror(-rc));
			/* The module freed its own state; the core forgets
			 * what it registered. */
			pgn_host_remove_owned(h, m);
			pgn_ctl_forget_module(h->srv, m);
			pgn_map_foreach(h->srv->sessions, drop_session_data, m);
			pgn_iq_tracker_cancel_owner(h->srv->iq, m);
			services_free(m);
			dlclose(m->dl);
			free(m);
			return -EINVAL;
		}
	}
	pgn_log(PGN_LOG_DEBUG, "host %s: loaded %s", h->name, m->def->name);
	return 0;
}

/* The opened module named name among mods, or NULL. */
static struct pgn_module *
module_named(struct pgn_module *const *mods, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (mods[i] != NULL && strcmp(mods[i]->def->name, name) == 0)
			return mods[i];
	return NULL;
}

/* All of m's dependencies are loaded on its host already. */
static int
deps_loaded(const struct pgn_module *m)
{
	const struct pgn_host *h = m->host;

	for (const char *const *d = m->def->depends; d != NULL && *d != NULL;
	     d++)
		if (module_named(h->modules, h->nmodules, *d) == NULL)
			return 0;
	return 1;
}

int
pgn_module_load_all(struct pgn_host *h, const char *dir, char *err,
		    size_t errlen)
{
	size_t n = h->cfg->nmodules, left = n;
	struct pgn_module **opened = calloc(n + 1, sizeof(*opened));
	int rc = -EINVAL;

	if (opened == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if ((opened[i] = module_open(h, &h->cfg->modules[i], dir, err,
					     errlen)) == NULL)
			goto fail;
	/* A dependency the host does not load is a configuration error. */
	for (size_t i = 0; i < n; i++)
		for (const char *const *d = opened[i]->def->depends;
		     d != NULL && *d != NULL; d++)
			if (module_named(opened, n, *d) == NULL) {
				snprintf(err, errlen,
					 "%s:%d: module %s needs %s, which "
					 "host %s does not load",
					 h->srv->cfg->path,
					 opened[i]->cfg->line,
					 opened[i]->cfg->name, *d, h->name);
				goto fail;
			}
	/* Dependencies first, else in the configured order. */
	while (left > 0) {
		size_t before = left;
		for (size_t i = 0; i < n; i++) {
			struct pgn_module *m = opened[i];
			if (m == NULL || !deps_loaded(m))
				continue;
			opened[i] = NULL;
			left--;
			if (module_start(m, err, errlen) < 0)
				goto fail;
			h->modules[h->nmodules++] = m;
		}
		if (left == before) {
			snprintf(err, errlen, "host %s: modules depend on "
				 "each other in a cycle", h->name);
			goto fail;
		}
	}
	rc = 0;
fail:
	for (size_t i = 0; i < n; i++)
		if (opened[i] != NULL) {
			dlclose(opened[i]->dl);
			free(opened[i]);
		}
	free(opened);
	return rc;
}

void
pgn_module_unload(struct pgn_module *m)
{
	if (m == NULL)
		return;
	pgn_host_remove_owned(m->host, m);
	pgn_ctl_forget_module(m->host->srv, m);
	pgn_map_foreach(m->host->srv->sessions, drop_session_data, m);
	pgn_iq_tracker_cancel_owner(m->host->srv->iq, m);
	services_free(m);
	if (m->def->unload != NULL)
		m->def->unload(m);
	dlclose(m->dl);
	free(m);
}

int
pgn_module_hook(struct pgn_module *m, const char *event, pgn_hook_fn fn,
		void *arg, int priority)
{
	return pgn_events_add(m->host->events, event, fn, arg, priority, m);
}

int
pgn_module_add_feature(struct pgn_module *m, const char *var)
{
	return pgn_host_add_feature(m->host, m, var);
}

int
pgn_module_add_account_feature(struct pgn_module *m, const char *var)
{
	return pgn_host_add_account_feature(m->host, m, var);
}

int
pgn_module_add_identity(struct pgn_module *m, const char *category,
			const char *type, const char *name)
{
	return pgn_host_add_identity(m->host, m, category, type, name);
}

const char *
pgn_module_option(const struct pgn_module *m, const char *key,
		  const char *def)
{
	const char *v = pgn_cfg_module_opt(m->cfg, key);
	return v != NULL ? v : def;
}

int
pgn_module_option_long(const struct pgn_module *m, const char *key, long def,
		       long min, long max, long *out)
{
	const char *v = pgn_cfg_module_opt(m->cfg, key);
	char *end;
	long n;

	*out = def;
	if (v == NULL)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < min || n > max) {
		pgn_log(PGN_LOG_ERROR,
			"%s: option %s must be an integer from %ld to %ld",
			m->def->name, key, min, max);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

int
pgn_module_option_bool(const struct pgn_module *m, const char *key, int def)
{
	const char *v = pgn_cfg_module_opt(m->cfg, key);
	if (v == NULL)
		return def;
	if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") ||
	    !strcmp(v, "on"))
		return 1;
	if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") ||
	    !strcmp(v, "off"))
		return 0;
	return def;
}

void *
pgn_module_data(const struct pgn_module *m)
{
	return m->data;
}

void
pgn_module_set_data(struct pgn_module *m, void *data)
{
	m->data = data;
}

struct pgn_host *
pgn_module_host(const struct pgn_module *m)
{
	return m->host;
}

struct pgn_server *
pgn_module_server(const struct pgn_module *m)
{
	return m->host->srv;
}

/* ---- services between modules ------------------------------------------ */

int
pgn_module_provide(struct pgn_module *m, const char *name, const void *ops,
		   void *instance)
{
	struct pgn_service *v;

	if (pgn_host_service(m->host, name, NULL) != NULL)
		return -EEXIST;
	for (size_t i = 0; i < m->nservices; i++)
		if (strcmp(m->services[i].name, name) == 0)
			return -EEXIST;
	v = realloc(m->services, (m->nservices + 1) * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	m->services = v;
	v += m->nservices;
	if ((v->name = strdup(name)) == NULL)
		return -ENOMEM;
	v->ops = ops;
	v->instance = instance;
	m->nservices++;
	return 0;
}

const void *
pgn_host_service(const struct pgn_host *h, const char *name, void **instance)
{
	for (size_t i = 0; i < h->nmodules; i++) {
		const struct pgn_module *m = h->modules[i];
		for (size_t j = 0; j < m->nservices; j++)
			if (strcmp(m->services[j].name, name) == 0) {
				if (instance != NULL)
					*instance = m->services[j].instance;
				return m->services[j].ops;
			}
	}
	return NULL;
}

/* ---- timers ------------------------------------------------------------ */

struct pgn_timer {
	struct event *ev;
	pgn_timer_fn fn;
	void *arg;
};

static void
timer_fired(evutil_socket_t fd, short what, void *arg)
{
	struct pgn_timer *t = arg;

	(void)fd;
	(void)what;
	t->fn(t->arg);
}

struct pgn_timer *
pgn_timer_new(struct pgn_module *m, pgn_timer_fn fn, void *arg)
{
	struct pgn_timer *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->fn = fn;
	t->arg = arg;
	t->ev = evtimer_new(m->host->srv->base, timer_fired, t);
	if (t->ev == NULL) {
		free(t);
		return NULL;
	}
	return t;
}

void
pgn_timer_start(struct pgn_timer *t, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
			      (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(t->ev, &tv);
}

void
pgn_timer_stop(struct pgn_timer *t)
{
	evtimer_del(t->ev);
}

void
pgn_timer_free(struct pgn_timer *t)
{
	if (t == NULL)
		return;
	event_free(t->ev);
	free(t);
}
