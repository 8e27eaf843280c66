/* XEP-0163: Personal Eventing Protocol, a PubSub service at every
 * account's bare JID, on the engine of pubsub.h.  Provides the "pep"
 * service (pigeon/pep.h) to the host's other modules.  Needs mod_roster
 * and mod_caps for its notifications (notify.c). */
#include "pubsub.h"

static int
pep_load(struct pgn_module *m)
{
	return ps_module_load(m, 1, NULL);
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
	.commands = ps_pep_commands,
	.stats = ps_ctl_stats,
	.load = pep_load,
	.unload = ps_module_unload,
	.depends = (const char *const[]){"mod_roster", "mod_caps", NULL},
};
