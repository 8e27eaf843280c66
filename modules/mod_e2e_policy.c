/* mod_e2e_policy: the "E2E required" policy, a Pigeon extension
 * (doc/e2e.md, namespace urn:pigeon:e2e-policy:0).
 *
 * With policy: required, a chat or normal message (or one without a
 * type) that carries a <body/> but no end-to-end payload (OMEMO in either
 * namespace, OpenPGP for XMPP, legacy OpenPGP) is refused with a
 * policy-violation stanza error (type modify: the sender can send it
 * again encrypted, RFC 6120 §8.3.3.12), a <text/> the client shows, and
 * <e2e-required xmlns='urn:pigeon:e2e-policy:0'/> for clients that know
 * the extension.  It then goes nowhere: the check runs as an outbound
 * filter (PGN_PRIO_FILTER on the sender's "pre-message/..." events),
 * before duplicates, carbons, the archive, delivery, offline storage and
 * push; and as an inbound filter on this host for messages from any
 * other domain (remote servers once federation exists, components, other
 * local hosts whose policy may differ).
 *
 * Exempt: messages to or from the server itself (a JID without a node
 * on a local host, or a service domain of this host) and to or from the
 * JIDs of the option exempt (bare JIDs, or domains with every address at
 * them: bots, components).  Receipts, markers, chat states and every
 * other message without a body, groupchat, headline and error pass.
 *
 * Discovery: the host's disco#info lists the feature
 * urn:pigeon:e2e-policy:0 (and urn:pigeon:e2e-policy:0#required when the
 * policy is required) and an XEP-0128 form of that FORM_TYPE with the
 * policy and the accepted payload namespaces (mod_caps hashes it with the
 * rest).  With policy: optional the module announces that and filters
 * nothing (no hooks). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e/e2e_check.h"
#include "pigeon/ctl.h"
#include "pigeon/log.h"
#include "pigeon/module.h"

#define NS_XDATA "jabber:x:data"
#define FEATURE_REQUIRED E2E_NS_POLICY "#required"
#define DEFAULT_TEXT                                                        \
	"This server requires end-to-end encryption: the message was not "  \
	"sent. Turn on OMEMO (or OpenPGP) for this chat and send it again."

static const char *const policies[] = { "optional", "required", NULL };
enum { POLICY_OPTIONAL, POLICY_REQUIRED };

struct policy {
	struct pgn_module *m;
	struct pgn_server *srv;
	struct pgn_host *host;
	const char *text; /* borrowed from the options */
	struct e2e_exempt exempt;
	uint64_t refused;
	uint64_t refused_inbound;
};

/* ---- who is exempt ---- */

struct service_find {
	const char *domain;
	int found;
};

static void
service_is(const char *domain, void *arg)
{
	struct service_find *f = arg;

	if (strcmp(domain, f->domain) == 0)
		f->found = 1;
}

/* The server itself: a local host's JID (or a resource of it), or one of
 * this host's service domains (pubsub.<host>...). */
static int
is_server(const struct policy *p, const struct pgn_jid *j)
{
	struct service_find f = { j->domain, 0 };

	if (j->node != NULL)
		return 0;
	if (pgn_server_host(p->srv, j->domain) != NULL)
		return 1;
	pgn_host_foreach_service(p->host, service_is, &f);
	return f.found;
}

static int
exempt(const struct policy *p, const struct pgn_jid *j)
{
	return j == NULL || is_server(p, j) ||
	       e2e_exempt_match(&p->exempt, j);
}

/* ---- refusing ---- */

static void
refuse(struct policy *p, struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;
	struct pgn_stanza *err;
	struct pgn_xml *e;

	pgn_log(PGN_LOG_DEBUG,
		"mod_e2e_policy %s: plaintext message %s from %s to %s "
		"refused",
		pgn_host_name(p->host), st->id != NULL ? st->id : "(no id)",
		st->from->full, st->to != NULL ? st->to->full : "?");
	err = pgn_stanza_error_reply(st, "modify", "policy-violation",
				     p->text);
	if (err == NULL)
		goto nomem;
	/* The application-specific condition (RFC 6120 §8.3.2) that tells
	 * a client which policy it was. */
	e = pgn_xml_child(err->xml, PGN_NS_CLIENT, "error");
	if (e == NULL ||
	    pgn_xml_add_child(e, E2E_NS_POLICY, "e2e-required") == NULL) {
		pgn_stanza_free(err);
		goto nomem;
	}
	pgn_event_route(ev, err);
	return;
nomem:
	/* Still refused: the sender just gets no explanation. */
	pgn_log(PGN_LOG_ERROR, "mod_e2e_policy: out of memory answering %s",
		st->from->full);
}

/* Both directions: a message the policy is about, with a body and no
 * end-to-end payload, neither end exempt.  The classification comes
 * first: it decides most messages by one pass over their children. */
static int
check(struct policy *p, struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;

	if (st == NULL || st->kind != PGN_STANZA_MESSAGE ||
	    st->from == NULL ||
	    e2e_classify(st->xml, st->type) != E2E_PLAINTEXT ||
	    exempt(p, st->from) || exempt(p, st->to))
		return PGN_EVENT_PASS;
	refuse(p, ev);
	return PGN_EVENT_HANDLED;
}

/* A local user's message, on the sender's host. */
static int
on_outbound(struct pgn_event *ev, void *arg)
{
	struct policy *p = arg;
	int rc = check(p, ev);

	if (rc == PGN_EVENT_HANDLED)
		p->refused++;
	return rc;
}

/* A message to a user of this host from another domain: the sender's
 * own host did not check it (a remote server, a component), or checked
 * it by its own policy (another local host). */
static int
on_inbound(struct pgn_event *ev, void *arg)
{
	struct policy *p = arg;
	const struct pgn_stanza *st = ev->stanza;
	int rc;

	if (st == NULL || st->from == NULL ||
	    strcmp(st->from->domain, pgn_host_name(p->host)) == 0)
		return PGN_EVENT_PASS;
	rc = check(p, ev);
	if (rc == PGN_EVENT_HANDLED)
		p->refused_inbound++;
	return rc;
}

/* ---- discovery ---- */

static int
add_field(struct pgn_xml *x, const char *var, const char *type,
	  const char *const *values)
{
	struct pgn_xml *f = pgn_xml_add_child(x, NS_XDATA, "field");

	if (f == NULL || pgn_xml_set_attr(f, "var", var) != 0 ||
	    (type != NULL && pgn_xml_set_attr(f, "type", type) != 0))
		return -ENOMEM;
	for (; *values != NULL; values++) {
		struct pgn_xml *v = pgn_xml_add_child(f, NS_XDATA, "value");
		if (v == NULL || pgn_xml_add_text(v, *values,
						  strlen(*values)) != 0)
			return -ENOMEM;
	}
	return 0;
}

/* XEP-0128: FORM_TYPE urn:pigeon:e2e-policy:0, policy, encryption (the
 * namespaces of the payloads that count as end-to-end encrypted). */
static int
add_form(struct policy *p, int required)
{
	static const char *const form_type[] = { E2E_NS_POLICY, NULL };
	static const char *const payloads[] = { E2E_NS_AXOLOTL, E2E_NS_OMEMO2,
						E2E_NS_OPENPGP,
						E2E_NS_PGP_LEGACY, NULL };
	const char *policy[] = { policies[required ? POLICY_REQUIRED
						    : POLICY_OPTIONAL],
				 NULL };
	struct pgn_xml *x = pgn_xml_new(NS_XDATA, "x");
	int rc = -ENOMEM;

	if (x == NULL || pgn_xml_set_attr(x, "type", "result") != 0 ||
	    add_field(x, "FORM_TYPE", "hidden", form_type) != 0 ||
	    add_field(x, "policy", "list-single", policy) != 0 ||
	    add_field(x, "encryption", "list-multi", payloads) != 0)
		goto out;
	rc = pgn_module_add_disco_form(p->m, x);
out:
	pgn_xml_free(x);
	return rc;
}

/* ---- figures ---- */

static void
policy_stats(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	struct policy *p = arg;
	char buf[128];

	(void)argc;
	(void)argv;
	snprintf(buf, sizeof(buf),
		 "e2e_refused %" PRIu64 "\ne2e_refused_inbound %" PRIu64 "\n",
		 p->refused, p->refused_inbound);
	pgn_command_reply(cmd, PGN_CTL_OK, buf);
}

/* ---- load ---- */

static void
policy_free(struct policy *p)
{
	if (p == NULL)
		return;
	e2e_exempt_free(&p->exempt);
	free(p);
}

static int
policy_load(struct pgn_module *m)
{
	static const char *const outbound[] = {
		"pre-message/host", "pre-message/bare", "pre-message/full",
		"pre-message/self", NULL };
	static const char *const inbound[] = { "message/bare", "message/full",
					       NULL };
	struct policy *p = calloc(1, sizeof(*p));
	int required = pgn_module_opt_enum(m, "policy") == POLICY_REQUIRED;
	char **items = NULL, err[512];
	size_t n = 0;
	int rc = -ENOMEM;

	if (p == NULL)
		return -ENOMEM;
	p->m = m;
	p->srv = pgn_module_server(m);
	p->host = pgn_module_host(m);
	p->text = pgn_module_opt_str(m, "text");
	if ((items = pgn_module_opt_list(m, "exempt", &n)) == NULL)
		goto fail;
	rc = e2e_exempt_parse(items, n, &p->exempt, err, sizeof(err));
	free(items);
	if (rc == -EINVAL)
		pgn_log(PGN_LOG_ERROR, "mod_e2e_policy %s: %s",
			pgn_host_name(p->host), err);
	if (rc != 0)
		goto fail;
	if ((rc = pgn_module_add_feature(m, E2E_NS_POLICY)) != 0 ||
	    (required &&
	     (rc = pgn_module_add_feature(m, FEATURE_REQUIRED)) != 0) ||
	    (rc = add_form(p, required)) != 0)
		goto fail;
	for (size_t i = 0; required && outbound[i] != NULL; i++)
		if ((rc = pgn_module_hook(m, outbound[i], on_outbound, p,
					  PGN_PRIO_FILTER)) != 0)
			goto fail;
	for (size_t i = 0; required && inbound[i] != NULL; i++)
		if ((rc = pgn_module_hook(m, inbound[i], on_inbound, p,
					  PGN_PRIO_FILTER)) != 0)
			goto fail;
	pgn_module_set_data(m, p);
	return 0;
fail:
	/* The core removes the features, form and hooks. */
	policy_free(p);
	return rc;
}

static void
policy_unload(struct pgn_module *m)
{
	policy_free(pgn_module_data(m));
}

static const struct pgn_module_opt policy_options[] = {
	{ .name = "policy", .type = PGN_OPT_ENUM, .def = "optional",
	  .values = policies,
	  .doc = "required: refuse chat/normal messages with a body and no "
		 "end-to-end payload" },
	{ .name = "exempt", .type = PGN_OPT_LIST, .def = "", .max = 1000,
	  .doc = "bare JIDs and domains whose messages (to and from) are "
		 "exempt" },
	{ .name = "text", .type = PGN_OPT_STRING, .def = DEFAULT_TEXT,
	  .doc = "the <text/> of the policy-violation error" },
	{ .name = NULL },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_e2e_policy",
	.description = "E2E required: refuse plaintext messages (Pigeon "
		       "extension, doc/e2e.md)",
	.options = policy_options,
	.stats = policy_stats,
	.load = policy_load,
	.unload = policy_unload,
};
