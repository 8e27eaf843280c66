/* For the end-to-end tests only (tests/e2e/test_pubsub.py): a user of
 * mod_pep's "pep" service (pigeon/pep.h).  It watches the PEP node
 * "urn:example:watched" of every account and mirrors it into the node
 * "urn:example:mirror" of the same account through the service: a
 * publish is read back with items() and published again (with
 * publish-options max_items=max), a retract is retracted. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/log.h"
#include "pigeon/module.h"
#include "pigeon/pep.h"

#define WATCHED "urn:example:watched"
#define MIRROR "urn:example:mirror"

struct tp {
	struct pgn_module *m;
	const struct pgn_pep_service *pep;
	void *inst;
};

struct copy {
	struct tp *tp;
	char *user;
};

static void
done(int err, void *arg)
{
	if (err != 0)
		pgn_log(PGN_LOG_WARN, "mod_test_pep: %s failed: %d",
			(const char *)arg, err);
}

static struct pgn_xml *
options(void)
{
	struct pgn_xml *x = pgn_xml_new("jabber:x:data", "x"), *f, *v;
	static const char *const kv[] = {
		"FORM_TYPE",
		"http://jabber.org/protocol/pubsub#publish-options",
		"pubsub#max_items", "max"};

	if (x == NULL)
		return NULL;
	pgn_xml_set_attr(x, "type", "submit");
	for (size_t i = 0; i < 4; i += 2) {
		f = pgn_xml_add_child(x, NULL, "field");
		v = f != NULL ? pgn_xml_add_child(f, NULL, "value") : NULL;
		if (v == NULL || pgn_xml_set_attr(f, "var", kv[i]) != 0 ||
		    pgn_xml_add_text(v, kv[i + 1], strlen(kv[i + 1])) != 0) {
			pgn_xml_free(x);
			return NULL;
		}
	}
	return x;
}

/* The watched item, read back through items(): published to the
 * mirror. */
static void
got_items(int err, size_t n, const struct pgn_xml *const *items, void *arg)
{
	struct copy *c = arg;
	struct pgn_xml *opts;

	if (err == 0 && n == 1 && (opts = options()) != NULL) {
		if (c->tp->pep->publish(c->tp->inst, c->user, MIRROR, items[0],
					opts, done, "publish") < 0)
			pgn_log(PGN_LOG_WARN, "mod_test_pep: publish refused");
		pgn_xml_free(opts);
	} else {
		pgn_log(PGN_LOG_WARN, "mod_test_pep: items: %d, %zu", err, n);
	}
	free(c->user);
	free(c);
}

static void
watched(const char *user, const char *node, const char *item_id,
	const struct pgn_xml *item, void *arg)
{
	struct tp *tp = arg;
	struct copy *c;

	(void)node;
	if (item == NULL) {
		tp->pep->retract(tp->inst, user, MIRROR, item_id, done,
				 "retract");
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->user = strdup(user)) == NULL) {
		free(c);
		return;
	}
	c->tp = tp;
	if (tp->pep->items(tp->inst, user, WATCHED, item_id, 0, got_items, c) <
	    0) {
		free(c->user);
		free(c);
	}
}

static int
tp_load(struct pgn_module *m)
{
	struct tp *tp = calloc(1, sizeof(*tp));
	int rc;

	if (tp == NULL)
		return -ENOMEM;
	tp->m = m;
	pgn_module_set_data(m, tp);
	tp->pep = pgn_host_service(pgn_module_host(m), PGN_PEP_SERVICE,
				   &tp->inst);
	rc = tp->pep == NULL
		     ? -ENOENT
		     : tp->pep->watch(tp->inst, m, WATCHED, watched, tp);
	if (rc < 0) { /* a failed load frees its own state */
		pgn_module_set_data(m, NULL);
		free(tp);
	}
	return rc;
}

static void
tp_unload(struct pgn_module *m)
{
	struct tp *tp = pgn_module_data(m);

	if (tp != NULL && tp->pep != NULL)
		tp->pep->unwatch(tp->inst, m);
	free(tp);
}

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_test_pep",
	.description = "test user of the pep service",
	.load = tp_load,
	.unload = tp_unload,
	.depends = (const char *const[]){"mod_pep", NULL},
};
