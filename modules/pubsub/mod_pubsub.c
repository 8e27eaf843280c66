/* XEP-0060: a generic PubSub service at pubsub.<host>, on the engine of
 * pubsub.h.  Skeleton. */
#include "pubsub.h"

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_pubsub",
	.description = "XEP-0060 Publish-Subscribe service",
};
