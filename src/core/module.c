/* Loadable modules: dlopen'ed .so files exporting `pgn_module_def`.  The
 * loader checks the ABI version and the options the module declares;
 * each host gets its own instance, and everything an instance registered
 * (hooks, disco features, pigeonctl commands and figures, timers,
 * session data) is removed by the core when it unloads. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "event.h"
#include "host.h"
#include "iq.h"
#include "modopt.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "route.h"
#include "server.h"
#include "stream.h"
#include "suggest.h"

struct pgn_module {
	const struct pgn_module_def *def;
	void *dl;
	struct pgn_host *host;
	const struct pgn_cfg_module *cfg;
	struct pgn_modopt_val *opts; /* one per def->options entry */
	struct pgn_timer *timers;    /* still allocated, freed on unload */
	void *data;
	struct pgn_service *services; /* pgn_module_provide */
	size_t nservices;
};

/* A named service a module provides to the others on its host. */
struct pgn_service {
	char *name;
	const void *ops;
	void *instance;
};

struct pgn_timer {
	struct pgn_timer *next, **pprev; /* in the module's list */
	struct event *ev;
	pgn_timer_fn fn;
	void *arg;
};

static int
drop_session_data(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key;
	(void)id;
	pgn_session_drop_data(value, arg);
	return 0;
}

/* Up to max installed module names of dir (mod_*.so, without ".so"),
 * for a "did you mean"; the caller frees them.  Returns the count. */
static size_t
list_modules(const char *dir, char **names, size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (d == NULL)
		return 0;
	while (n < max && (e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);

		if (len > 7 && strncmp(e->d_name, "mod_", 4) == 0 &&
		    strcmp(e->d_name + len - 3, ".so") == 0 &&
		    (names[n] = strndup(e->d_name, len - 3)) != NULL)
			n++;
	}
	closedir(d);
	return n;
}

/* Opens the .so of cm from dir and checks its descriptor and ABI.
 * Returns the handle with *def set, or NULL with err set. */
static void *
open_module(const char *cfgpath, const struct pgn_cfg_module *cm,
	    const char *dir, const struct pgn_module_def **def, char *err,
	    size_t errlen)
{
	char path[4096];
	char where[1200];
	void *dl;

	/* Errors point at the config line that asked for the module. */
	snprintf(where, sizeof(where), "%s:%d: module %s", cfgpath, cm->line,
		 cm->name);
	snprintf(path, sizeof(path), "%s/%s.so", dir, cm->name);
	if (access(path, F_OK) != 0) {
		char *names[128] = { NULL };
		size_t n = list_modules(dir, names, 127);
		const char *near = pgn_suggest(cm->name,
					       (const char *const *)names);

		snprintf(err, errlen, "%s: no such module (no %s)%s%s%s", where,
			 path, near != NULL ? "; did you mean '" : "",
			 near != NULL ? near : "", near != NULL ? "'?" : "");
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		return NULL;
	}
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		snprintf(err, errlen, "%s: cannot load %s: %s", where, path,
			 dlerror());
		return NULL;
	}
	*def = dlsym(dl, "pgn_module_def");
	if (*def == NULL) {
		snprintf(err, errlen, "%s: %s has no pgn_module_def", where,
			 path);
		goto fail;
	}
	if ((*def)->abi != PGN_MODULE_ABI) {
		snprintf(err, errlen,
			 "%s: built for module ABI %u, server has %u", where,
			 (*def)->abi, PGN_MODULE_ABI);
		goto fail;
	}
	return dl;
fail:
	dlclose(dl);
	return NULL;
}

int
pgn_module_check(const char *cfgpath, const struct pgn_cfg_module *cm,
		 const char *dir,
		 void (*report)(const char *err, void *arg), void *arg)
{
	const struct pgn_module_def *def = NULL;
	struct pgn_cfg_module one = *cm;
	char err[1024];
	int errors = 0;
	void *dl = open_module(cfgpath, cm, dir, &def, err, sizeof(err));

	if (dl == NULL) {
		report(err, arg);
		return 1;
	}
	/* The declared defaults alone first (a broken module says no
	 * more), then each option on its own, so that every mistake of the
	 * entry is reported in one run. */
	one.nopts = 0;
	if (pgn_modopt_check(def, &one, cfgpath, NULL, err, sizeof(err)) != 0) {
		report(err, arg);
		dlclose(dl);
		return 1;
	}
	for (size_t i = 0; i < cm->nopts; i++) {
		one.opts = &cm->opts[i];
		one.nopts = 1;
		if (pgn_modopt_check(def, &one, cfgpath, NULL, err,
				     sizeof(err)) != 0) {
			report(err, arg);
			errors++;
		}
	}
	dlclose(dl);
	return errors;
}

/* The message for a dependency host h lacks: the same at start and in
 * `pigeond -t`. */
static void
missing_dep(char *err, size_t errlen, const char *cfgpath,
	    const struct pgn_cfg_module *cm, const char *dep,
	    const char *host)
{
	snprintf(err, errlen, "%s:%d: module %s needs %s, which host %s "
		 "does not load", cfgpath, cm->line, cm->name, dep, host);
}

int
pgn_module_check_deps(const char *cfgpath, const struct pgn_cfg_host *h,
		      const struct pgn_cfg_module *cm, const char *dir,
		      void (*report)(const char *err, void *arg), void *arg)
{
	const struct pgn_module_def *def = NULL;
	char err[1024];
	int missing = 0;
	void *dl = open_module(cfgpath, cm, dir, &def, err, sizeof(err));

	if (dl == NULL)
		return 0;
	for (const char *const *d = def->depends; d != NULL && *d != NULL;
	     d++) {
		size_t i = 0;

		while (i < h->nmodules && strcmp(h->modules[i].name, *d) != 0)
			i++;
		if (i == h->nmodules) {
			missing_dep(err, sizeof(err), cfgpath, cm, *d,
				    h->name);
			report(err, arg);
			missing++;
		}
	}
	dlclose(dl);
	return missing;
}

/* Registers what def declares: hooks (with the module's data as arg),
 * commands and figures. */
static int
register_declared(struct pgn_module *m)
{
	const struct pgn_module_def *def = m->def;
	int rc;

	for (size_t i = 0; def->hooks != NULL && def->hooks[i].event != NULL;
	     i++) {
		rc = pgn_module_hook(m, def->hooks[i].event, def->hooks[i].fn,
				     m->data, def->hooks[i].priority);
		if (rc < 0)
			return rc;
	}
	return pgn_ctl_register_module(m->host->srv, m);
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

/* Forgets everything m registered, except its timers (see below). */
static void
forget(struct pgn_module *m)
{
	pgn_host_remove_owned(m->host, m);
	pgn_routes_del_owner(m->host->srv->routes, m);
	pgn_ctl_forget_module(m->host->srv, m);
	pgn_map_foreach(m->host->srv->sessions, drop_session_data, m);
	pgn_iq_tracker_cancel_owner(m->host->srv->iq, m);
	services_free(m);
}

/* Timers are stopped before the module's unload (nothing fires while it
 * tears down) and freed after it, so that a module that frees its own is
 * fine too. */
static void
stop_timers(struct pgn_module *m)
{
	for (struct pgn_timer *t = m->timers; t != NULL; t = t->next)
		evtimer_del(t->ev);
}

static void
free_timers(struct pgn_module *m)
{
	while (m->timers != NULL)
		pgn_timer_free(m->timers);
}

static void
module_close(struct pgn_module *m)
{
	if (m == NULL)
		return;
	if (m->dl != NULL)
		dlclose(m->dl);
	free(m->opts);
	free(m);
}

/* Opens the module's .so and checks it and its options; does not load it
 * yet (dependencies first).  NULL with err set. */
static struct pgn_module *
module_open(struct pgn_host *h, const struct pgn_cfg_module *cfg,
	    const char *dir, char *err, size_t errlen)
{
	const struct pgn_module_def *def = NULL;
	const char *cfgpath = h->srv->cfg->path;
	struct pgn_module *m;
	void *dl;

	dl = open_module(cfgpath, cfg, dir, &def, err, errlen);
	if (dl == NULL)
		return NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		dlclose(dl);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	m->def = def;
	m->dl = dl;
	m->host = h;
	m->cfg = cfg;
	if ((m->opts = calloc(pgn_modopt_count(def->options) + 1,
			      sizeof(*m->opts))) == NULL) {
		snprintf(err, errlen, "out of memory");
		module_close(m);
		return NULL;
	}
	if (pgn_modopt_check(def, cfg, cfgpath, m->opts, err, errlen) != 0) {
		module_close(m);
		return NULL;
	}
	return m;
}

/* Runs the module's load and registers what it declares; on failure
 * frees m (and says why in err). */
static int
module_start(struct pgn_module *m, char *err, size_t errlen)
{
	struct pgn_host *h = m->host;
	const char *cfgpath = h->srv->cfg->path;
	int rc;

	if (m->def->load != NULL && (rc = m->def->load(m)) < 0) {
		snprintf(err, errlen, "%s:%d: module %s: load failed on %s: %s",
			 cfgpath, m->cfg->line, m->cfg->name, h->name,
			 strerror(-rc));
		/* The module freed its own state; the core forgets what it
		 * registered. */
		stop_timers(m);
		forget(m);
		free_timers(m);
		module_close(m);
		return rc;
	}
	if ((rc = register_declared(m)) < 0) {
		snprintf(err, errlen, "%s:%d: module %s: cannot register on %s: %s",
			 cfgpath, m->cfg->line, m->cfg->name, h->name,
			 rc == -EEXIST ? "a command of that name exists"
				       : strerror(-rc));
		pgn_module_unload(m);
		return rc;
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
				missing_dep(err, errlen, h->srv->cfg->path,
					    opened[i]->cfg, *d, h->name);
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
		module_close(opened[i]);
	free(opened);
	return rc;
}

void
pgn_module_unload(struct pgn_module *m)
{
	if (m == NULL)
		return;
	stop_timers(m);
	forget(m);
	if (m->def->unload != NULL)
		m->def->unload(m);
	free_timers(m);
	module_close(m);
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

int
pgn_module_add_account_identity(struct pgn_module *m, const char *category,
				const char *type, const char *name)
{
	return pgn_host_add_account_identity(m->host, m, category, type, name);
}

int
pgn_module_add_disco_form(struct pgn_module *m, const struct pgn_xml *form)
{
	return pgn_host_add_form(m->host, m, form);
}

const struct pgn_module_def *
pgn_module_get_def(const struct pgn_module *m)
{
	return m->def;
}

/* The value of the declared option name of type (0: any type, for its
 * text). */
static const struct pgn_modopt_val *
opt_value(const struct pgn_module *m, const char *name,
	  enum pgn_opt_type type)
{
	int i = pgn_modopt_find(m->def->options, name, type);

	if (i < 0) {
		/* A bug in the module, not in the config. */
		pgn_log(PGN_LOG_ERROR, "%s: reads undeclared option %s",
			m->def->name, name);
		return NULL;
	}
	return &m->opts[i];
}

long
pgn_module_opt_int(const struct pgn_module *m, const char *name)
{
	const struct pgn_modopt_val *v = opt_value(m, name, PGN_OPT_INT);
	return v != NULL ? v->n : 0;
}

int
pgn_module_opt_bool(const struct pgn_module *m, const char *name)
{
	const struct pgn_modopt_val *v = opt_value(m, name, PGN_OPT_BOOL);
	return v != NULL ? (int)v->n : 0;
}

const char *
pgn_module_opt_str(const struct pgn_module *m, const char *name)
{
	const struct pgn_modopt_val *v = opt_value(m, name, 0);
	return v != NULL ? v->s : NULL;
}

int
pgn_module_opt_enum(const struct pgn_module *m, const char *name)
{
	const struct pgn_modopt_val *v = opt_value(m, name, PGN_OPT_ENUM);
	return v != NULL ? (int)v->n : 0;
}

char **
pgn_module_opt_list(const struct pgn_module *m, const char *name, size_t *n)
{
	const struct pgn_modopt_val *v = opt_value(m, name, PGN_OPT_LIST);

	if (n != NULL)
		*n = 0;
	return v != NULL ? pgn_modopt_split(v->s != NULL ? v->s : "", n)
			 : NULL;
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

/* ---- timers ------------------------------------------------------------ */

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
	/* Kept in the module's list, so that unloading frees it. */
	t->next = m->timers;
	if (t->next != NULL)
		t->next->pprev = &t->next;
	t->pprev = &m->timers;
	m->timers = t;
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
	*t->pprev = t->next;
	if (t->next != NULL)
		t->next->pprev = t->pprev;
	event_free(t->ev);
	free(t);
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
