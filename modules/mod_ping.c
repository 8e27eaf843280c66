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
	return pgn_module_add_feature(m, NS_PING);
}

static const struct pgn_module_hook_def ping_hooks[] = {
	{ "iq-get/host/" NS_PING ":ping", on_ping, PGN_PRIO_HANDLER },
	{ "iq-get/bare/" NS_PING ":ping", on_ping, PGN_PRIO_HANDLER },
	{ NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_ping",
	.description = "XEP-0199 XMPP Ping",
	.hooks = ping_hooks,
	.load = ping_load,
};
