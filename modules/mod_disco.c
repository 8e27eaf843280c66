/* XEP-0030: Service Discovery.  disco#info of a host lists the identities
 * and features that the host's modules registered (pgn_host_disco_info,
 * the element mod_caps hashes too); disco#items lists the service
 * domains of its modules (pubsub.<host>).  An account's bare JID answers
 * with the account identity (XEP-0030 §3.1 for accounts), disco#info and
 * disco#items (which it answers, empty) and, to its owner, the account
 * features modules added (archive, push). */
#include <errno.h>
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

struct add_ctx {
	struct pgn_xml *q;
	int err;
};

static void
add_service(const char *domain, void *arg)
{
	struct add_ctx *c = arg;
	struct pgn_xml *it = pgn_xml_add_child(c->q, NS_ITEMS, "item");

	if (it == NULL || pgn_xml_set_attr(it, "jid", domain) != 0)
		c->err = -ENOMEM;
}

/* The host's items: the service domains its modules own (pubsub.<host>,
 * XEP-0030 §4). */
static int
on_host_items(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *req = pgn_xml_first_child(ev->stanza->xml);
	struct add_ctx c = { .q = new_query(ev, NS_ITEMS) };

	(void)arg;
	if (c.q != NULL && (req == NULL || pgn_xml_attr(req, "node") == NULL))
		pgn_host_foreach_service(ev->host, add_service, &c);
	if (c.q == NULL || c.err != 0) {
		pgn_xml_free(c.q);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, c.q);
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


static void
add_var(const char *var, void *arg)
{
	struct add_ctx *c = arg;
	struct pgn_xml *f = pgn_xml_add_child(c->q, NS_INFO, "feature");

	if (f == NULL || pgn_xml_set_attr(f, "var", var) != 0)
		c->err = -ENOMEM;
}

static void
add_identity(const char *category, const char *type, const char *name,
	     void *arg)
{
	struct add_ctx *c = arg;
	struct pgn_xml *id = pgn_xml_add_child(c->q, NS_INFO, "identity");

	if (id == NULL || pgn_xml_set_attr(id, "category", category) != 0 ||
	    pgn_xml_set_attr(id, "type", type) != 0 ||
	    (name != NULL && pgn_xml_set_attr(id, "name", name) != 0))
		c->err = -ENOMEM;
}

static int
on_account_info(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *req = pgn_xml_first_child(ev->stanza->xml);
	struct add_ctx c = { .q = new_query(ev, NS_INFO) };
	struct pgn_xml *id;
	const struct pgn_jid *from = ev->stanza->from;

	if (req != NULL && pgn_xml_attr(req, "node") != NULL) {
		pgn_event_error(ev, "cancel", "item-not-found");
		pgn_xml_free(c.q);
		return PGN_EVENT_HANDLED;
	}
	if (c.q == NULL ||
	    (id = pgn_xml_add_child(c.q, NS_INFO, "identity")) == NULL ||
	    pgn_xml_set_attr(id, "category", "account") != 0 ||
	    pgn_xml_set_attr(id, "type", "registered") != 0)
		c.err = -ENOMEM;
	else {
		/* Identities of the account's services (PEP: pubsub/pep,
		 * XEP-0163 §6.1) are for everyone to discover. */
		pgn_host_foreach_account_identity(ev->host, add_identity, &c);
		add_var(NS_INFO, &c);
		/* The bare JID answers disco#items too (on_items, for
		 * anyone), so its disco#info says so (XEP-0030 §3.1). */
		add_var(NS_ITEMS, &c);
	}
	/* The account's own services (archive, push) are the owner's
	 * business (any of its resources); others see the identity only. */
	if (c.err == 0 && from != NULL &&
	    strcmp(from->bare, ev->stanza->to->bare) == 0)
		pgn_host_foreach_account_feature(ev->host, add_var, &c);
	if (c.err != 0) {
		pgn_xml_free(c.q);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, c.q);
	return PGN_EVENT_HANDLED;
}

static int
disco_load(struct pgn_module *m)
{
	int rc;

	if ((rc = pgn_module_add_identity(m, "server", "im", "Pigeon")) < 0 ||
	    (rc = pgn_module_add_feature(m, NS_INFO)) < 0 ||
	    (rc = pgn_module_add_feature(m, NS_ITEMS)) < 0)
		return rc;
	return 0;
}

static const struct pgn_module_hook_def disco_hooks[] = {
	{ "iq-get/host/" NS_INFO ":query", on_info, PGN_PRIO_HANDLER },
	{ "iq-get/host/" NS_ITEMS ":query", on_host_items, PGN_PRIO_HANDLER },
	{ "iq-get/bare/" NS_INFO ":query", on_account_info, PGN_PRIO_HANDLER },
	{ "iq-get/bare/" NS_ITEMS ":query", on_items, PGN_PRIO_HANDLER },
	{ NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_disco",
	.description = "XEP-0030 Service Discovery",
	.hooks = disco_hooks,
	.load = disco_load,
};
