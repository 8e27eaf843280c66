/* The PubSub protocol (XEP-0060): the pubsub and pubsub#owner requests.
 * Skeleton. */
#include "pubsub.h"

int
ps_engine_load(struct ps_engine *e)
{
	(void)e;
	return 0;
}

void
ps_engine_unload(struct ps_engine *e)
{
	(void)e;
}
