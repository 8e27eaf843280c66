/* Placeholder: being written. */
#include "pigeon/module.h"

static int
load(struct pgn_module *m)
{
	(void)m;
	return 0;
}

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_csi",
	.description = "placeholder",
	.load = load,
};
