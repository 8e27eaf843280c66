/* XEP-0030: Service Discovery.  disco#info of a host lists the identities
 * and features that the host's modules registered (pgn_host_disco_info,
 * the element mod_caps hashes too); disco#items lists nothing yet
 * (components and rooms will add items).  An account's bare JID answers
 * with the account identity (XEP-0030 §3.1 for accounts). */
#include <string.h>

#include "pigeon/module.h"

#define NS_INFO "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"

static struct pgn_xml *
new_query(struct pgn_event *ev, const char *ns)
{
	struct pgn_xml *req = pgn_xml_first_child(ev->stanza->xml);
	const char *node = req != NULL ? pgn_xml_attr(req, "node") : NULL;
	struct pgn_xml *q = pgn_xml_new(ns, "query");
	if (q != NULL && node != NULL)
		pgn_xml_set_attr(q, "node", node);
	return q;
}

static int
on_info(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *req = pgn_xml_first_child(ev->stanza->xml);
	struct pgn_xml *q;

	if (req != NULL && pgn_xml_attr(req, "node") != NULL) {
		/* Modules that define nodes answer them before this
		 * handler (mod_caps: node#ver, XEP-0115 §6.2). */
		pgn_event_error(ev, "cancel", "item-not-found");
		return PGN_EVENT_HANDLED;
	}
	if ((q = pgn_host_disco_info(ev->host, NULL)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
}

static int
on_items(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *q = new_query(ev, NS_ITEMS);
	if (q == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
}

static int
on_account_info(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *q = new_query(ev, NS_INFO), *id, *f;

	/* Only the account owner (any of its resources) sees it; others get
	 * the answer without presence subscription checks, which the roster
	 * module will add. */
	if (q == NULL ||
	    (id = pgn_xml_add_child(q, NS_INFO, "identity")) == NULL ||
	    pgn_xml_set_attr(id, "category", "account") != 0 ||
	    pgn_xml_set_attr(id, "type", "registered") != 0 ||
	    (f = pgn_xml_add_child(q, NS_INFO, "feature")) == NULL ||
	    pgn_xml_set_attr(f, "var", NS_INFO) != 0) {
		pgn_xml_free(q);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
}

static int
disco_load(struct pgn_module *m)
{
	int rc;
	if ((rc = pgn_module_hook(m, "iq-get/host/" NS_INFO ":query", on_info,
				  m, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-get/host/" NS_ITEMS ":query",
				  on_items, m, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-get/bare/" NS_INFO ":query",
				  on_account_info, m, 0)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-get/bare/" NS_ITEMS ":query",
				  on_items, m, 0)) < 0)
		return rc;
	if ((rc = pgn_module_add_identity(m, "server", "im", "Pigeon")) < 0 ||
	    (rc = pgn_module_add_feature(m, NS_INFO)) < 0 ||
	    (rc = pgn_module_add_feature(m, NS_ITEMS)) < 0)
		return rc;
	return 0;
}

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_disco",
	.description = "XEP-0030 Service Discovery",
	.load = disco_load,
};
