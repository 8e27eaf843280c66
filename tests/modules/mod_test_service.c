/* A module for the end-to-end tests only (built, never installed): owns
 * two service domains through the route table, so that
 * tests/e2e/test_routing.py can show that a module-owned domain is
 * reachable (test_service_domain_*).
 *   service.<host>  answers every iq get/set with a result that lists the
 *                   host's service domains (pgn_host_foreach_service),
 *                   echoes a message's body back, ignores presence
 *   pass.<host>     takes nothing: the router bounces it */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/module.h"

#define NS_TEST "urn:pigeon:test:services"

static void
add_item(const char *domain, void *arg)
{
	struct pgn_xml *item = pgn_xml_add_child(arg, NS_TEST, "item");

	if (item != NULL)
		pgn_xml_set_attr(item, "jid", domain);
}

static int
on_service(struct pgn_event *ev, void *arg)
{
	struct pgn_stanza *st = ev->stanza;
	struct pgn_module *m = arg;

	if (st->kind == PGN_STANZA_IQ) {
		struct pgn_xml *q = pgn_xml_new(NS_TEST, "query");
		if (q != NULL)
			pgn_host_foreach_service(pgn_module_host(m), add_item,
						 q);
		pgn_event_reply(ev, q);
		return PGN_EVENT_HANDLED;
	}
	if (st->kind == PGN_STANZA_MESSAGE && st->from != NULL &&
	    (st->type == NULL || strcmp(st->type, "error") != 0)) {
		struct pgn_xml *x = pgn_xml_copy(st->xml);
		struct pgn_stanza *echo;
		if (x == NULL)
			return PGN_EVENT_HANDLED;
		pgn_xml_set_attr(x, "from", st->to->full);
		pgn_xml_set_attr(x, "to", st->from->full);
		echo = pgn_stanza_new(x, NULL);
		if (echo != NULL)
			pgn_event_route(ev, echo);
	}
	return PGN_EVENT_HANDLED;
}

static int
on_pass(struct pgn_event *ev, void *arg)
{
	return PGN_EVENT_PASS;
}

static int
load(struct pgn_module *m)
{
	const char *host = pgn_host_name(pgn_module_host(m));
	char dom[300];
	int rc;

	/* A local host is not a module's to take. */
	if (pgn_module_add_domain(m, host, on_pass, NULL) != -EEXIST)
		return -EINVAL;
	snprintf(dom, sizeof(dom), "service.%s", host);
	if ((rc = pgn_module_add_domain(m, dom, on_service, m)) < 0)
		return rc;
	snprintf(dom, sizeof(dom), "pass.%s", host);
	return pgn_module_add_domain(m, dom, on_pass, NULL);
}

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_test_service",
	.description = "tests only: two service domains",
	.load = load,
};
