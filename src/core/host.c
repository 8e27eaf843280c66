/* Virtual hosts and their disco features/identities. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "host.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_XDATA "jabber:x:data"

struct pgn_host *
pgn_host_new(struct pgn_server *srv, const struct pgn_cfg_host *cfg)
{
	struct pgn_host *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->srv = srv;
	h->cfg = cfg;
	h->name = strdup(cfg->name);
	h->events = pgn_events_new();
	if (h->name == NULL || h->events == NULL) {
		pgn_host_free(h);
		return NULL;
	}
	return h;
}

int
pgn_host_load_modules(struct pgn_host *h, const char *dir, char *err,
		      size_t errlen)
{
	h->modules = calloc(h->cfg->nmodules + 1, sizeof(*h->modules));
	if (h->modules == NULL)
		return -ENOMEM;
	return pgn_module_load_all(h, dir, err, errlen);
}

static void
free_features(struct pgn_feature *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(f[i].var);
		free(f[i].category);
		free(f[i].type);
		free(f[i].name);
	}
	free(f);
}

void
pgn_host_free(struct pgn_host *h)
{
	if (h == NULL)
		return;
	/* Unload in reverse order so later modules may rely on earlier. */
	while (h->nmodules > 0)
		pgn_module_unload(h->modules[--h->nmodules]);
	free(h->modules);
	free_features(h->features, h->nfeatures);
	free_features(h->identities, h->nidentities);
	free_features(h->account_features, h->naccount_features);
	free_features(h->account_identities, h->naccount_identities);
	for (size_t i = 0; i < h->nforms; i++)
		pgn_xml_free(h->forms[i].x);
	free(h->forms);
	pgn_events_free(h->events);
	free(h->name);
	free(h);
}

int
pgn_host_fire(struct pgn_host *h, struct pgn_event *ev)
{
	ev->host = h;
	ev->server = h->srv;
	return pgn_events_fire(h->events, ev);
}

const char *
pgn_host_name(const struct pgn_host *h)
{
	return h->name;
}

static int
cmp_feature(const void *a, const void *b)
{
	return strcmp(((const struct pgn_feature *)a)->var,
		      ((const struct pgn_feature *)b)->var);
}

void
pgn_host_foreach_account_feature(const struct pgn_host *h,
				 void (*fn)(const char *var, void *arg),
				 void *arg)
{
	for (size_t i = 0; i < h->naccount_features; i++)
		if (i == 0 || strcmp(h->account_features[i].var,
				     h->account_features[i - 1].var) != 0)
			fn(h->account_features[i].var, arg);
}

void
pgn_host_foreach_feature(const struct pgn_host *h,
			 void (*fn)(const char *var, void *arg), void *arg)
{
	/* Features are kept sorted on insertion; skip duplicates. */
	for (size_t i = 0; i < h->nfeatures; i++)
		if (i == 0 || strcmp(h->features[i].var,
				     h->features[i - 1].var) != 0)
			fn(h->features[i].var, arg);
}

void
pgn_host_foreach_identity(const struct pgn_host *h,
			  void (*fn)(const char *category, const char *type,
				     const char *name, void *arg),
			  void *arg)
{
	for (size_t i = 0; i < h->nidentities; i++)
		fn(h->identities[i].category, h->identities[i].type,
		   h->identities[i].name, arg);
}

/* Identities before features, as XEP-0030 §3.1 shows them; mod_caps
 * hashes this same element (XEP-0115 §5.1), so what clients see in
 * disco#info and what the advertised ver covers cannot drift apart. */
struct pgn_xml *
pgn_host_disco_info(const struct pgn_host *h, const char *node)
{
	struct pgn_xml *q = pgn_xml_new(NS_DISCO_INFO, "query");

	if (q == NULL ||
	    (node != NULL && pgn_xml_set_attr(q, "node", node) != 0))
		goto fail;
	for (size_t i = 0; i < h->nidentities; i++) {
		const struct pgn_feature *id = &h->identities[i];
		struct pgn_xml *el =
			pgn_xml_add_child(q, NS_DISCO_INFO, "identity");

		if (el == NULL ||
		    pgn_xml_set_attr(el, "category", id->category) != 0 ||
		    pgn_xml_set_attr(el, "type", id->type) != 0 ||
		    (id->name != NULL &&
		     pgn_xml_set_attr(el, "name", id->name) != 0))
			goto fail;
	}
	/* Same rule as pgn_host_foreach_feature: sorted, duplicates (two
	 * modules announcing one feature) once. */
	for (size_t i = 0; i < h->nfeatures; i++) {
		struct pgn_xml *el;

		if (i > 0 &&
		    strcmp(h->features[i].var, h->features[i - 1].var) == 0)
			continue;
		el = pgn_xml_add_child(q, NS_DISCO_INFO, "feature");
		if (el == NULL ||
		    pgn_xml_set_attr(el, "var", h->features[i].var) != 0)
			goto fail;
	}
	/* XEP-0128 forms after the features, as XEP-0115 §5.4 orders
	 * them; mod_caps sorts them by FORM_TYPE for the hash. */
	for (size_t i = 0; i < h->nforms; i++) {
		struct pgn_xml *x = pgn_xml_copy(h->forms[i].x);

		if (x == NULL)
			goto fail;
		pgn_xml_append(q, x);
	}
	return q;
fail:
	pgn_xml_free(q);
	return NULL;
}

/* The FORM_TYPE value of an extended form (XEP-0128 §3), malloc'ed, or
 * NULL when it has none. */
static char *
form_type(const struct pgn_xml *x)
{
	for (const struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
	     f = pgn_xml_next(f)) {
		const char *var = pgn_xml_attr(f, "var");

		if (var != NULL && strcmp(var, "FORM_TYPE") == 0)
			return pgn_xml_child_text(f, NS_XDATA, "value");
	}
	return NULL;
}

int
pgn_host_add_form(struct pgn_host *h, const struct pgn_module *owner,
		  const struct pgn_xml *form)
{
	struct pgn_host_form *forms;
	const char *ns = pgn_xml_ns(form), *type = pgn_xml_attr(form, "type");
	char *ft = NULL;
	int rc = -EINVAL;

	if (ns == NULL || strcmp(ns, NS_XDATA) != 0 ||
	    strcmp(pgn_xml_name(form), "x") != 0 || type == NULL ||
	    strcmp(type, "result") != 0 || (ft = form_type(form)) == NULL)
		goto out;
	/* One form per FORM_TYPE (XEP-0115 §5.4 refuses duplicates). */
	for (size_t i = 0; i < h->nforms; i++) {
		char *other = form_type(h->forms[i].x);
		int same = other == NULL || strcmp(other, ft) == 0;

		free(other);
		if (same) {
			rc = -EEXIST;
			goto out;
		}
	}
	rc = -ENOMEM;
	forms = realloc(h->forms, (h->nforms + 1) * sizeof(*forms));
	if (forms == NULL)
		goto out;
	h->forms = forms;
	if ((forms[h->nforms].x = pgn_xml_copy(form)) == NULL)
		goto out;
	forms[h->nforms++].owner = owner;
	rc = 0;
out:
	free(ft);
	return rc;
}

/* Adds var to a sorted feature list. */
static int
add_feature(struct pgn_feature **list, size_t *n,
	    const struct pgn_module *owner, const char *var)
{
	struct pgn_feature *f = realloc(*list, (*n + 1) * sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	*list = f;
	memset(&f[*n], 0, sizeof(*f));
	f[*n].var = strdup(var);
	if (f[*n].var == NULL)
		return -ENOMEM;
	f[*n].owner = owner;
	(*n)++;
	qsort(*list, *n, sizeof(*f), cmp_feature);
	return 0;
}

int
pgn_host_add_feature(struct pgn_host *h, const struct pgn_module *owner,
		     const char *var)
{
	return add_feature(&h->features, &h->nfeatures, owner, var);
}

int
pgn_host_add_account_feature(struct pgn_host *h,
			     const struct pgn_module *owner, const char *var)
{
	return add_feature(&h->account_features, &h->naccount_features, owner,
			   var);
}

static int
add_identity(struct pgn_feature **list, size_t *n,
	     const struct pgn_module *owner, const char *category,
	     const char *type, const char *name)
{
	struct pgn_feature *f = realloc(*list, (*n + 1) * sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	*list = f;
	f += *n;
	memset(f, 0, sizeof(*f));
	f->owner = owner;
	f->var = strdup("");
	f->category = strdup(category);
	f->type = strdup(type);
	f->name = name != NULL ? strdup(name) : NULL;
	(*n)++;
	if (f->var == NULL || f->category == NULL || f->type == NULL ||
	    (name != NULL && f->name == NULL))
		return -ENOMEM;
	return 0;
}

int
pgn_host_add_identity(struct pgn_host *h, const struct pgn_module *owner,
		      const char *category, const char *type, const char *name)
{
	return add_identity(&h->identities, &h->nidentities, owner, category,
			    type, name);
}

int
pgn_host_add_account_identity(struct pgn_host *h,
			      const struct pgn_module *owner,
			      const char *category, const char *type,
			      const char *name)
{
	return add_identity(&h->account_identities, &h->naccount_identities,
			    owner, category, type, name);
}

void
pgn_host_foreach_account_identity(const struct pgn_host *h,
				  void (*fn)(const char *category,
					     const char *type,
					     const char *name, void *arg),
				  void *arg)
{
	for (size_t i = 0; i < h->naccount_identities; i++)
		fn(h->account_identities[i].category,
		   h->account_identities[i].type,
		   h->account_identities[i].name, arg);
}

static size_t
remove_owned(struct pgn_feature *f, size_t n, const struct pgn_module *owner)
{
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		if (f[i].owner == owner) {
			free(f[i].var);
			free(f[i].category);
			free(f[i].type);
			free(f[i].name);
			continue;
		}
		f[j++] = f[i];
	}
	return j;
}

void
pgn_host_remove_owned(struct pgn_host *h, const struct pgn_module *owner)
{
	h->nfeatures = remove_owned(h->features, h->nfeatures, owner);
	h->nidentities = remove_owned(h->identities, h->nidentities, owner);
	h->naccount_features = remove_owned(h->account_features,
					    h->naccount_features, owner);
	h->naccount_identities = remove_owned(h->account_identities,
					      h->naccount_identities, owner);
	size_t j = 0;
	for (size_t i = 0; i < h->nforms; i++) {
		if (h->forms[i].owner == owner)
			pgn_xml_free(h->forms[i].x);
		else
			h->forms[j++] = h->forms[i];
	}
	h->nforms = j;
	pgn_events_remove_owner(h->events, owner);
}
