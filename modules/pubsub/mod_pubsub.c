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
	struct ps_engine *e = calloc(1, sizeof(*e));
	const char *domain = pgn_module_opt_str(m, "domain");
	int rc = -ENOMEM;

	if (e == NULL)
		return -ENOMEM;
	e->m = m;
	e->pep = 0;
	if (domain != NULL && domain[0] != '\0') {
		e->domain = strdup(domain);
	} else {
		const char *h = pgn_host_name(pgn_module_host(m));
		size_t n = strlen(h) + sizeof("pubsub.");
		if ((e->domain = malloc(n)) != NULL)
			snprintf(e->domain, n, "pubsub.%s", h);
	}
	if (e->domain == NULL)
		goto fail;
	pgn_module_set_data(m, e);
	if ((rc = ps_engine_load(e)) < 0 || (rc = ps_notify_init(e)) < 0)
		goto fail;
	return 0;
fail:
	ps_notify_free(e);
	ps_engine_unload(e);
	pgn_module_set_data(m, NULL);
	free(e->domain);
	free(e);
	return rc;
}

static void
pubsub_unload(struct pgn_module *m)
{
	struct ps_engine *e = pgn_module_data(m);

	if (e == NULL)
		return;
	ps_notify_free(e);
	ps_engine_unload(e);
	free(e->domain);
	free(e);
}

static const struct pgn_module_opt pubsub_options[] = {
	{.name = "domain", .type = PGN_OPT_STRING, .def = NULL,
	 .doc = "the service's domain (default pubsub.<host>)"},
	PS_LIMIT_OPTIONS,
	{.name = NULL},
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_pubsub",
	.description = "XEP-0060 Publish-Subscribe service",
	.options = pubsub_options,
	.load = pubsub_load,
	.unload = pubsub_unload,
	.depends = (const char *const[]){"mod_roster", "mod_caps", NULL},
};
