/* XEP-0163: Personal Eventing Protocol, a PubSub service at every
 * account's bare JID, on the engine of pubsub.h.  Provides the "pep"
 * service (pigeon/pep.h) to the host's other modules.  Needs mod_roster
 * and mod_caps for its notifications (notify.c). */
#include <errno.h>
#include <stdlib.h>

#include "pubsub.h"

static int
pep_load(struct pgn_module *m)
{
	struct ps_engine *e = calloc(1, sizeof(*e));
	int rc;

	if (e == NULL)
		return -ENOMEM;
	e->m = m;
	e->pep = 1;
	pgn_module_set_data(m, e);
	if ((rc = ps_engine_load(e)) < 0 || (rc = ps_notify_init(e)) < 0)
		goto fail;
	return 0;
fail:
	ps_notify_free(e);
	ps_engine_unload(e);
	pgn_module_set_data(m, NULL);
	free(e);
	return rc;
}

static void
pep_unload(struct pgn_module *m)
{
	struct ps_engine *e = pgn_module_data(m);

	if (e == NULL)
		return;
	ps_notify_free(e);
	ps_engine_unload(e);
	free(e);
}

static const struct pgn_module_opt pep_options[] = {
	PS_LIMIT_OPTIONS,
	{.name = NULL},
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_pep",
	.description = "XEP-0163 Personal Eventing Protocol",
	.options = pep_options,
	.load = pep_load,
	.unload = pep_unload,
	.depends = (const char *const[]){"mod_roster", "mod_caps", NULL},
};
