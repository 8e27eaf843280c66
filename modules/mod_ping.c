/* XEP-0199: XMPP Ping.  Answers pings to the server and, on a user's
 * behalf, to the user's bare JID. */
#include "pigeon/module.h"

#define NS_PING "urn:xmpp:ping"

static int
on_ping(struct pgn_event *ev, void *arg)
{
	pgn_event_reply(ev, NULL);
	return PGN_EVENT_HANDLED;
}

static int
ping_load(struct pgn_module *m)
{
	int rc;
	if ((rc = pgn_module_hook(m, "iq-get/host/" NS_PING ":ping", on_ping,
				  NULL, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-get/bare/" NS_PING ":ping", on_ping,
				  NULL, 0)) < 0)
		return rc;
	return pgn_module_add_feature(m, NS_PING);
}

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_ping",
	.description = "XEP-0199 XMPP Ping",
	.load = ping_load,
};
