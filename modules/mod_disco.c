/* XEP-0030: Service Discovery.  disco#info of a host lists the identities
 * and features that the host's modules registered; disco#items lists
 * nothing yet (components and rooms will add items).  An account's bare
 * JID answers with the account identity (XEP-0030 §3.1 for accounts). */
#include <string.h>

#include "pigeon/module.h"

#define NS_INFO "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"

struct build {
	struct pgn_xml *q;
	int failed;
};

static void
add_feature(const char *var, void *arg)
{
	struct build *b = arg;
	struct pgn_xml *f = pgn_xml_add_child(b->q, NS_INFO, "feature");
	if (f == NULL || pgn_xml_set_attr(f, "var", var) != 0)
		b->failed = 1;
}

static void
add_identity(const char *category, const char *type, const char *name,
	     void *arg)
{
	struct build *b = arg;
	struct pgn_xml *i = pgn_xml_add_child(b->q, NS_INFO, "identity");
	if (i == NULL || pgn_xml_set_attr(i, "category", category) != 0 ||
	    pgn_xml_set_attr(i, "type", type) != 0 ||
	    (name != NULL && pgn_xml_set_attr(i, "name", name) != 0))
		b->failed = 1;
}

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
	struct build b = { new_query(ev, NS_INFO), 0 };

	if (req != NULL && pgn_xml_attr(req, "node") != NULL) {
		/* Modules that define nodes answer them before this
		 * handler (mod_caps: node#ver, XEP-0115 §6.2). */
		pgn_xml_free(b.q);
		pgn_event_error(ev, "cancel", "item-not-found");
		return PGN_EVENT_HANDLED;
	}
	if (b.q == NULL)
		goto fail;
	pgn_host_foreach_identity(ev->host, add_identity, &b);
	pgn_host_foreach_feature(ev->host, add_feature, &b);
	if (b.failed)
		goto fail;
	pgn_event_reply(ev, b.q);
	return PGN_EVENT_HANDLED;
fail:
	pgn_xml_free(b.q);
	pgn_event_error(ev, "wait", "resource-constraint");
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
	struct build b = { new_query(ev, NS_INFO), 0 };
	/* Only the account owner (any of its resources) sees it; others get
	 * the answer without presence subscription checks, which the roster
	 * module will add. */
	if (b.q == NULL)
		goto fail;
	add_identity("account", "registered", NULL, &b);
	add_feature(NS_INFO, &b);
	if (b.failed)
		goto fail;
	pgn_event_reply(ev, b.q);
	return PGN_EVENT_HANDLED;
fail:
	pgn_xml_free(b.q);
	pgn_event_error(ev, "wait", "resource-constraint");
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
