/* The "pep" service of mod_pep (pigeon/pep.h): other modules' calls
 * become requests of the engine (a <pubsub/> tree built here, run as
 * the account's owner), and the watchers of node names hear of every
 * publish and retract (ps_run_watchers, from engine.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ---- watchers (pep.h) -------------------------------------------------- */

struct watch {
	struct watch *next;
	struct pgn_module *m;
	char *node;
	pgn_pep_watch_fn fn;
	void *arg;
};

void
ps_run_watchers(struct ps_req *r, const struct pgn_xml *item)
{
	struct ps_priv *pv = r->e->priv;

	if (!r->e->pep)
		return;
	for (struct watch *w = pv->watches; w != NULL; w = w->next)
		if (strcmp(w->node, r->node) == 0)
			w->fn(r->service, r->node, r->item_id, item, w->arg);
}

/* ---- the "pep" service (pigeon/pep.h) -------------------------------- */

static struct ps_req *
api_req(void *instance, const char *user, const char *node, const char *op,
	struct pgn_xml **el)
{
	struct ps_engine *e = instance;
	struct ps_req *r;

	if (user == NULL || node == NULL || strchr(user, '@') == NULL ||
	    (r = ps_req_new(e, user, user)) == NULL)
		return NULL;
	if ((r->tree = ps_answer(PS_NS, op, node, el)) == NULL) {
		ps_req_free(r);
		return NULL;
	}
	return r;
}

static int
api_publish(void *instance, const char *user, const char *node,
	    const struct pgn_xml *item, const struct pgn_xml *options,
	    pgn_pep_done_fn fn, void *arg)
{
	struct pgn_xml *el, *c, *po;
	struct ps_req *r;

	if (item == NULL)
		return -EINVAL;
	if ((r = api_req(instance, user, node, "publish", &el)) == NULL)
		return -ENOMEM;
	if ((c = pgn_xml_copy(item)) == NULL)
		goto nomem;
	pgn_xml_append(el, c);
	if (options != NULL) {
		if ((po = pgn_xml_add_child(r->tree, PS_NS,
					    "publish-options")) == NULL ||
		    (c = pgn_xml_copy(options)) == NULL)
			goto nomem;
		pgn_xml_append(po, c);
	}
	r->done = fn;
	r->arg = arg;
	if (fn == NULL)
		r->done = NULL;
	ps_req_start(r, r->tree, 1);
	return 0;
nomem:
	ps_req_free(r);
	return -ENOMEM;
}

static int
api_retract(void *instance, const char *user, const char *node,
	    const char *item_id, pgn_pep_done_fn fn, void *arg)
{
	struct pgn_xml *el, *it;
	struct ps_req *r;

	if (item_id == NULL)
		return -EINVAL;
	if ((r = api_req(instance, user, node, "retract", &el)) == NULL)
		return -ENOMEM;
	if ((it = pgn_xml_add_child(el, PS_NS, "item")) == NULL ||
	    pgn_xml_set_attr(it, "id", item_id) != 0) {
		ps_req_free(r);
		return -ENOMEM;
	}
	r->done = fn;
	r->arg = arg;
	ps_req_start(r, r->tree, 1);
	return 0;
}

static int
api_items(void *instance, const char *user, const char *node,
	  const char *item_id, size_t max, pgn_pep_items_fn fn, void *arg)
{
	struct pgn_xml *el, *it;
	struct ps_req *r;
	char buf[24];

	if (fn == NULL)
		return -EINVAL;
	if ((r = api_req(instance, user, node, "items", &el)) == NULL)
		return -ENOMEM;
	snprintf(buf, sizeof(buf), "%zu", max);
	if ((item_id != NULL &&
	     ((it = pgn_xml_add_child(el, PS_NS, "item")) == NULL ||
	      pgn_xml_set_attr(it, "id", item_id) != 0)) ||
	    (item_id == NULL && max > 0 &&
	     pgn_xml_set_attr(el, "max_items", buf) != 0)) {
		ps_req_free(r);
		return -ENOMEM;
	}
	r->items_fn = fn;
	r->arg = arg;
	ps_req_start(r, r->tree, 0);
	return 0;
}

static int
api_watch(void *instance, struct pgn_module *m, const char *node,
	  pgn_pep_watch_fn fn, void *arg)
{
	struct ps_engine *e = instance;
	struct ps_priv *pv = e->priv;
	struct watch *w = calloc(1, sizeof(*w));

	if (w == NULL || (w->node = strdup(node)) == NULL) {
		free(w);
		return -ENOMEM;
	}
	w->m = m;
	w->fn = fn;
	w->arg = arg;
	w->next = pv->watches;
	pv->watches = w;
	return 0;
}

static void
api_unwatch(void *instance, struct pgn_module *m)
{
	struct ps_engine *e = instance;
	struct ps_priv *pv = e->priv;

	for (struct watch **p = &pv->watches; *p != NULL;) {
		struct watch *w = *p;
		if (w->m == m) {
			*p = w->next;
			free(w->node);
			free(w);
		} else {
			p = &w->next;
		}
	}
}

const struct pgn_pep_service ps_pep_ops = {
	.publish = api_publish,
	.retract = api_retract,
	.items = api_items,
	.watch = api_watch,
	.unwatch = api_unwatch,
};

void
ps_watches_free(struct ps_engine *e)
{
	struct ps_priv *pv = e->priv;

	while (pv->watches != NULL) {
		struct watch *w = pv->watches;
		pv->watches = w->next;
		free(w->node);
		free(w);
	}
}
