/* Virtual hosts: each has its own event table, modules and disco data. */
#ifndef PIGEON_HOST_H
#define PIGEON_HOST_H

#include <stddef.h>

#include "pigeon/config.h"
#include "pigeon/module.h"

struct pgn_events;

struct pgn_feature {
	char *var;
	char *category, *type, *name; /* identities only */
	const struct pgn_module *owner;
};

/* An XEP-0128 extended form of the host's disco#info. */
struct pgn_host_form {
	struct pgn_xml *x;      /* owned */
	const struct pgn_module *owner;
};

struct pgn_host {
	char *name;
	struct pgn_server *srv;
	const struct pgn_cfg_host *cfg;
	struct pgn_events *events;
	struct pgn_module **modules;
	size_t nmodules;
	struct pgn_feature *features;
	size_t nfeatures;
	struct pgn_feature *identities;
	size_t nidentities;
	struct pgn_feature *account_features; /* of every account's bare JID */
	size_t naccount_features;
	struct pgn_feature *account_identities; /* likewise (pubsub/pep) */
	size_t naccount_identities;
	struct pgn_host_form *forms; /* in the order added */
	size_t nforms;
};

struct pgn_host *pgn_host_new(struct pgn_server *srv,
			      const struct pgn_cfg_host *cfg);
/* Loads the host's modules from dir; err gets a message on failure. */
int pgn_host_load_modules(struct pgn_host *h, const char *dir, char *err,
			  size_t errlen);
void pgn_host_free(struct pgn_host *h);
/* Fires ev on the host's events. */
int pgn_host_fire(struct pgn_host *h, struct pgn_event *ev);

/* Disco data owned by a module (removed with it). */
int pgn_host_add_feature(struct pgn_host *h, const struct pgn_module *owner,
			 const char *var);
int pgn_host_add_account_feature(struct pgn_host *h,
				 const struct pgn_module *owner,
				 const char *var);
int pgn_host_add_identity(struct pgn_host *h, const struct pgn_module *owner,
			  const char *category, const char *type,
			  const char *name);
int pgn_host_add_account_identity(struct pgn_host *h,
				  const struct pgn_module *owner,
				  const char *category, const char *type,
				  const char *name);
/* Adds a copy of form (see pgn_module_add_disco_form). */
int pgn_host_add_form(struct pgn_host *h, const struct pgn_module *owner,
		      const struct pgn_xml *form);
/* Removes the module's features, identities, forms and hooks. */
void pgn_host_remove_owned(struct pgn_host *h, const struct pgn_module *owner);

/* module.c */
void pgn_module_unload(struct pgn_module *m);
/* What `pigeond -t` checks without starting anything: the module's .so
 * in dir opens, has the right ABI, and each of cm's options is one it
 * declares, of the right type.  Calls report once per mistake with a
 * message "cfgpath:LINE: module NAME: ..."; returns how many. */
int pgn_module_check(const char *cfgpath, const struct pgn_cfg_module *cm,
		     const char *dir,
		     void (*report)(const char *err, void *arg), void *arg);
/* The same for dependencies: the modules cm depends on are loaded by
 * host h too.  Reports as pgn_module_check (nothing when the module does
 * not open: pgn_module_check says so); returns how many are missing. */
int pgn_module_check_deps(const char *cfgpath, const struct pgn_cfg_host *h,
			  const struct pgn_cfg_module *cm, const char *dir,
			  void (*report)(const char *err, void *arg),
			  void *arg);
/* The descriptor of a loaded module (borrowed). */
const struct pgn_module_def *pgn_module_get_def(const struct pgn_module *m);
/* Loads the host's configured modules into h->modules, each after the
 * modules it depends on (pgn_module_def.depends).  0, or negative with a
 * message in err (a dependency the host does not load, a cycle, a module
 * that fails to load). */
int pgn_module_load_all(struct pgn_host *h, const char *dir, char *err,
			size_t errlen);

#endif
