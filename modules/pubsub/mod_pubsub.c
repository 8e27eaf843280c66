/* XEP-0060: a generic PubSub service at pubsub.<host> (option domain),
 * on the engine of pubsub.h.  Listed in the host's disco#items. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pubsub.h"

static int
pubsub_load(struct pgn_module *m)
{
	const char *domain = pgn_module_opt_str(m, "domain");
	const char *h = pgn_host_name(pgn_module_host(m));
	size_t n = strlen(h) + sizeof("pubsub.");
	char *d;

	if (domain != NULL && domain[0] != '\0')
		d = strdup(domain);
	else if ((d = malloc(n)) != NULL)
		snprintf(d, n, "pubsub.%s", h);
	if (d == NULL)
		return -ENOMEM;
	return ps_module_load(m, 0, d);
}

static const struct pgn_module_opt pubsub_options[] = {
	{.name = "domain",
	 .type = PGN_OPT_STRING,
	 .def = NULL,
	 .doc = "the service's domain (default pubsub.<host>)"},
	PS_LIMIT_OPTIONS,
	{.name = NULL},
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_pubsub",
	.description = "XEP-0060 Publish-Subscribe service",
	.options = pubsub_options,
	.commands = ps_pubsub_commands,
	.stats = ps_ctl_stats,
	.load = pubsub_load,
	.unload = ps_module_unload,
	.depends = (const char *const[]){"mod_roster", "mod_caps", NULL},
};
