/* XEP-0163: Personal Eventing Protocol, a PubSub service at every
 * account's bare JID, on the engine of pubsub.h.  Skeleton. */
#include "pubsub.h"

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_pep",
	.description = "XEP-0163 Personal Eventing Protocol",
};
