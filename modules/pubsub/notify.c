/* Event notifications and access models (XEP-0060 §7.1.2, §4.5;
 * XEP-0163 §4).  Skeleton: notifications are not sent yet, and only the
 * open model, owners and outcasts are decided. */
#include <errno.h>

#include "pubsub.h"

int
ps_notify_init(struct ps_engine *e)
{
	(void)e;
	return 0;
}

void
ps_notify_free(struct ps_engine *e)
{
	(void)e;
}

void
ps_notify_publish(struct ps_engine *e, const struct ps_node_ref *n,
		  const struct pgn_xml *item, const char *publisher)
{
	(void)e, (void)n, (void)item, (void)publisher;
}

void
ps_notify_retract(struct ps_engine *e, const struct ps_node_ref *n,
		  const char *item_id)
{
	(void)e, (void)n, (void)item_id;
}

void
ps_notify_purge(struct ps_engine *e, const struct ps_node_ref *n)
{
	(void)e, (void)n;
}

void
ps_notify_delete(struct ps_engine *e, const struct ps_node_ref *n,
		 const char *redirect_uri)
{
	(void)e, (void)n, (void)redirect_uri;
}

void
ps_notify_config(struct ps_engine *e, const struct ps_node_ref *n)
{
	(void)e, (void)n;
}

int
ps_access_check(struct ps_engine *e, const struct ps_node_ref *n,
		const char *requester, enum ps_affiliation aff,
		ps_access_fn fn, void *arg)
{
	(void)e, (void)requester;
	if (aff == PS_AFF_OUTCAST)
		fn(0, 0, arg);
	else if (aff >= PS_AFF_MEMBER)
		fn(0, 1, arg);
	else
		fn(0, n->config->access_model == PS_ACCESS_OPEN, arg);
	return 0;
}
