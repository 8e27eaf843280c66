/* The owner's requests (XEP-0060 §8, pubsub#owner: configure, default,
 * delete, purge, affiliations, subscriptions) and disco (XEP-0060 §5,
 * XEP-0163 §6.1): the identities and features, and disco#items listing
 * the nodes a requester may see (each through ps_access_check). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "pigeon/log.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

/* XEP-0060 §10: what the engine implements ("pubsub#" + each). */
static const char *const features[] = {
	"access-open",
	"access-presence",
	"access-roster",
	"access-whitelist",
	"auto-create",
	"config-node",
	/* pubsub#max_items "max": Gajim uses XEP-0402 and Monal its
	 * bookmarks and OMEMO nodes with "max" only when this is shown. */
	"config-node-max",
	"create-and-configure",
	"create-nodes",
	"delete-items",
	"delete-nodes",
	"instant-nodes",
	"item-ids",
	"manage-affiliations",
	"manage-subscriptions",
	"modify-affiliations",
	"multi-items",
	"outcast-affiliation",
	"persistent-items",
	"publish",
	"publish-options",
	"purge-nodes",
	"retract-items",
	"retrieve-affiliations",
	"retrieve-default",
	"retrieve-items",
	"retrieve-subscriptions",
	"subscribe",
	"rsm",
	NULL,
};
/* PEP only (XEP-0163 §4). */
static const char *const pep_features[] = {
	"auto-subscribe",
	"filtered-notifications",
	"last-published",
	"presence-notifications",
	NULL,
};

/* ---- owner requests -------------------------------------------------- */

/* The node must exist and the requester own it: else answers, 1. */
static int
refused(struct ps_req *r)
{
	if (ps_no_node(r))
		return 1;
	if (r->aff != PS_AFF_OWNER) {
		ps_fail(r, "auth", "forbidden", NULL, NULL);
		return 1;
	}
	return 0;
}

static void
done_empty(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	/* Before the answer, which frees the request r->el is in. */
	if (strcmp(pgn_xml_name(r->el), "configure") == 0) {
		struct ps_node_ref n = ps_ref(r);
		ps_notify_config(r->e, &n);
	} else if (strcmp(pgn_xml_name(r->el), "purge") == 0) {
		struct ps_node_ref n = ps_ref(r);
		ps_notify_purge(r->e, &n);
	}
	if (r->hold != NULL) {
		pgn_hold_answer(r->hold, NULL, NULL, NULL, NULL);
		r->hold = NULL;
	}
	ps_finish(r, NULL);
}

static void
configure_loaded(struct ps_req *r)
{
	struct pgn_xml *ans, *c, *x;
	const struct pgn_xml *sub;
	const char *bad;
	char *enc;
	int rc;

	if (refused(r))
		return;
	if (r->op == PS_OP_OWNER && r->create == 0 && r->options == NULL) {
		/* get */
		if ((ans = ps_answer(PS_NS_OWNER, "configure", r->node, &c)) ==
			    NULL ||
		    (x = ps_config_form(&r->cfg, r->node)) == NULL) {
			pgn_xml_free(ans);
			ps_nomem(r);
			return;
		}
		pgn_xml_append(c, x);
		ps_finish(r, ans);
		return;
	}
	sub = r->options;
	if (pgn_xml_attr(sub, "type") != NULL &&
	    strcmp(pgn_xml_attr(sub, "type"), "cancel") == 0) {
		ps_finish(r, NULL);
		return;
	}
	if ((rc = ps_config_apply_form(&r->cfg, sub, r->e->limits.max_items,
				       &bad)) < 0) {
		ps_fail_rc(r, rc, "modify", "not-acceptable", NULL);
		return;
	}
	if ((enc = ps_config_encode(&r->cfg)) == NULL) {
		ps_nomem(r);
		return;
	}
	if (ps_store_configure(r->e, r->node_id, enc,
			       ps_max_items(r->e, &r->cfg), done_empty, r) < 0)
		ps_fail_store(r, NULL);
	free(enc);
}

static void
purge_loaded(struct ps_req *r)
{
	if (refused(r))
		return;
	if (ps_store_purge(r->e, r->node_id, done_empty, r) < 0)
		ps_fail_store(r, NULL);
}

static void
delete_loaded(struct ps_req *r)
{
	struct pgn_xml *redirect;
	struct ps_node_ref n;

	if (refused(r))
		return;
	/* Before the DELETE: notify.c's queries still see the
	 * subscriptions (pubsub.h). */
	redirect = pgn_xml_child(r->el, NULL, "redirect");
	n = ps_ref(r);
	ps_notify_delete(r->e, &n,
			 redirect != NULL ? pgn_xml_attr(redirect, "uri")
					  : NULL);
	if (ps_store_node_delete(r->e, r->node_id, done_empty, r) < 0)
		ps_fail_store(r, NULL);
}

/* Owner affiliations / subscriptions: get lists, set writes. */
static void
rows_read(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	int subs = strcmp(pgn_xml_name(r->el), "subscriptions") == 0;
	struct pgn_xml *ans, *list, *c;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	if ((ans = ps_answer(PS_NS_OWNER, pgn_xml_name(r->el), r->node,
			     &list)) == NULL)
		goto nomem;
	if (!subs && r->e->pep) {
		/* The account owns its PEP nodes without a row. */
		if ((c = pgn_xml_add_child(list, PS_NS_OWNER, "affiliation")) ==
			    NULL ||
		    pgn_xml_set_attr(c, "jid", r->service) != 0 ||
		    pgn_xml_set_attr(c, "affiliation", "owner") != 0)
			goto nomem;
	}
	for (int i = 0; i < res->nrows; i++) {
		static const char *const sub_cols[] = {"jid", "subid",
						       "subscription", NULL};
		static const char *const aff_cols[] = {"jid", "affiliation",
						       NULL};
		c = pgn_xml_add_child(list, PS_NS_OWNER,
				      subs ? "subscription" : "affiliation");
		if (c == NULL ||
		    ps_xml_set_row(c, res, i, subs ? sub_cols : aff_cols) != 0)
			goto nomem;
	}
	ps_finish(r, ans);
	return;
nomem:
	pgn_xml_free(ans);
	ps_nomem(r);
}

static int
valid_state(const char *s)
{
	return strcmp(s, "none") == 0 || strcmp(s, "subscribed") == 0 ||
	       strcmp(s, "pending") == 0 || strcmp(s, "unconfigured") == 0;
}

static void
rows_write(struct ps_req *r)
{
	int subs = strcmp(pgn_xml_name(r->el), "subscriptions") == 0;
	const char *jids[PS_MAX_ROWS], *vals[PS_MAX_ROWS];
	const char *subids[PS_MAX_ROWS];
	char idbuf[PS_MAX_ROWS][20];
	struct pgn_jid *parsed[PS_MAX_ROWS];
	size_t n = 0;
	int rc;

	for (struct pgn_xml *c = pgn_xml_first_child(r->el); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *jid = pgn_xml_attr(c, "jid");
		const char *v =
			pgn_xml_attr(c, subs ? "subscription" : "affiliation");
		struct pgn_jid *j = NULL;
		int bad = jid == NULL || v == NULL || n == PS_MAX_ROWS ||
			  pgn_jid_parse(jid, &j) < 0;

		if (!bad)
			bad = subs ? !valid_state(v)
				   : ps_affiliation_parse(v) < 0 ||
					      j->resource != NULL ||
					      (r->e->pep &&
					       strcmp(j->bare, r->service) ==
						       0);
		if (bad) {
			pgn_jid_free(j);
			for (size_t i = 0; i < n; i++)
				pgn_jid_free(parsed[i]);
			ps_fail(r, "modify",
				n == PS_MAX_ROWS ? "policy-violation"
						 : "bad-request",
				NULL, NULL);
			return;
		}
		parsed[n] = j;
		jids[n] = subs ? j->full : j->bare;
		vals[n] = v;
		ps_random_id(idbuf[n], sizeof(idbuf[n]));
		subids[n] = idbuf[n];
		n++;
	}
	if (n == 0)
		rc = -EINVAL;
	else
		rc = ps_store_set_rows(r->e, r->node_id, subs, n, jids, vals,
				       subids, done_empty, r);
	for (size_t i = 0; i < n; i++)
		pgn_jid_free(parsed[i]);
	if (rc == -EINVAL)
		ps_fail(r, "modify", "bad-request", NULL, NULL);
	else if (rc < 0)
		ps_fail_store(r, NULL);
}

/* A node's rows are bounded (PS_MAX_NODE_ROWS, what a get lists): an
 * owner set adds at most PS_MAX_ROWS at a time, but sets add up. */
static void
rows_counted(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	long have, add = 0;

	(void)owner;
	if (res->error != 0 || res->nrows < 1) {
		ps_fail_store(r, res);
		return;
	}
	have = strtol(pgn_store_value(res, 0, 0), NULL, 10);
	for (struct pgn_xml *c = pgn_xml_first_child(r->el); c != NULL;
	     c = pgn_xml_next(c))
		add++;
	if (have + add > PS_MAX_NODE_ROWS) {
		ps_fail(r, "wait", "policy-violation", NULL, NULL);
		return;
	}
	rows_write(r);
}

static void
rows_loaded(struct ps_req *r)
{
	int subs = strcmp(pgn_xml_name(r->el), "subscriptions") == 0;
	int rc;

	if (refused(r))
		return;
	if (!r->create) /* get */
		rc = subs ? ps_store_subscriptions(r->e, r->node_id, rows_read,
						   r)
			  : ps_store_affiliations(r->e, r->node_id, rows_read,
						  r);
	else
		rc = ps_store_node_rows(r->e, r->node_id, subs, rows_counted,
					r);
	if (rc < 0)
		ps_fail_store(r, NULL);
}

static void
send_default(struct ps_req *r)
{
	struct ps_config c;
	struct pgn_xml *ans, *d, *x;

	ps_config_default(&c, r->e->pep);
	if ((ans = ps_answer(PS_NS_OWNER, "default", NULL, &d)) == NULL ||
	    (x = ps_config_form(&c, NULL)) == NULL) {
		pgn_xml_free(ans);
		ps_nomem(r);
		return;
	}
	pgn_xml_append(d, x);
	ps_finish(r, ans);
}

void
ps_owner_start(struct ps_req *r, const struct pgn_xml *ps, int set)
{
	const struct pgn_xml *el = pgn_xml_first_child(ps);
	const char *name;
	void (*step)(struct ps_req *) = NULL;

	if (el == NULL || pgn_xml_next(el) != NULL) {
		ps_fail(r, "modify", "bad-request", NULL, NULL);
		return;
	}
	r->el = el;
	r->op = PS_OP_OWNER;
	r->create = set; /* for the owner requests: "this is a set" */
	name = pgn_xml_name(el);
	if (ps_set_node(r, pgn_xml_attr(el, "node")) < 0) {
		ps_nomem(r);
		return;
	}
	if (strcmp(name, "default") == 0 && !set) {
		send_default(r);
		return;
	}
	if (strcmp(name, "configure") == 0) {
		if (set && (r->options = pgn_xml_child(el, PS_NS_XDATA, "x")) ==
				   NULL) {
			ps_fail(r, "modify", "bad-request", NULL, NULL);
			return;
		}
		step = configure_loaded;
	} else if (strcmp(name, "purge") == 0 && set) {
		step = purge_loaded;
	} else if (strcmp(name, "delete") == 0 && set) {
		step = delete_loaded;
	} else if (strcmp(name, "affiliations") == 0 ||
		   strcmp(name, "subscriptions") == 0) {
		step = rows_loaded;
	} else {
		ps_fail(r, "cancel", "feature-not-implemented", "unsupported",
			name);
		return;
	}
	if (r->node == NULL || r->node[0] == '\0' ||
	    strlen(r->node) > PS_MAX_NAME) {
		ps_fail(r, "modify", "bad-request", "nodeid-required", NULL);
		return;
	}
	r->create = set;
	ps_load_node(r, step);
}

/* ---- disco ------------------------------------------------------------ */

static int
add_feature_el(struct pgn_xml *q, const char *var)
{
	struct pgn_xml *f = pgn_xml_add_child(q, NS_DISCO_INFO, "feature");

	return f == NULL || pgn_xml_set_attr(f, "var", var) != 0 ? -ENOMEM : 0;
}

/* The generic service's disco#info (XEP-0060 §5.1, §5.3). */
static struct pgn_xml *
service_info(const char *node)
{
	struct pgn_xml *q = pgn_xml_new(NS_DISCO_INFO, "query"), *id;
	char var[128];

	if (q == NULL ||
	    (node != NULL && pgn_xml_set_attr(q, "node", node) != 0) ||
	    (id = pgn_xml_add_child(q, NS_DISCO_INFO, "identity")) == NULL ||
	    pgn_xml_set_attr(id, "category", "pubsub") != 0 ||
	    pgn_xml_set_attr(id, "type", node != NULL ? "leaf" : "service") !=
		    0 ||
	    add_feature_el(q, NS_DISCO_INFO) < 0 ||
	    add_feature_el(q, NS_DISCO_ITEMS) < 0 ||
	    add_feature_el(q, PS_NS) < 0)
		goto fail;
	for (size_t i = 0; node == NULL && features[i] != NULL; i++) {
		snprintf(var, sizeof(var), PS_NS "#%s", features[i]);
		if (add_feature_el(q, var) < 0)
			goto fail;
	}
	return q;
fail:
	pgn_xml_free(q);
	return NULL;
}

static void
info_send(struct ps_req *r)
{
	struct pgn_xml *q = service_info(r->node);

	if (q == NULL)
		ps_nomem(r);
	else
		ps_finish(r, q);
}

/* disco#items: the nodes the requester may see, in name order. */
struct listing {
	struct ps_req *r;
	size_t n, pending;
	char **nodes;
	char *ok;
};

static void
listing_free(struct listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->nodes[i]);
	free(l->nodes);
	free(l->ok);
	free(l);
}

static void
listing_done(struct listing *l)
{
	struct ps_req *r = l->r;
	struct pgn_xml *q = r->answer;

	r->answer = NULL;
	for (size_t i = 0; i < l->n; i++) {
		struct pgn_xml *it;
		if (!l->ok[i])
			continue;
		if ((it = pgn_xml_add_child(q, NS_DISCO_ITEMS, "item")) ==
			    NULL ||
		    pgn_xml_set_attr(it, "jid", r->service) != 0 ||
		    pgn_xml_set_attr(it, "node", l->nodes[i]) != 0) {
			pgn_xml_free(q);
			listing_free(l);
			ps_nomem(r);
			return;
		}
	}
	listing_free(l);
	ps_finish(r, q);
}

struct check {
	struct listing *l;
	size_t i;
};

static void
node_checked(int err, int allowed, void *arg)
{
	struct check *c = arg;
	struct listing *l = c->l;

	l->ok[c->i] = err == 0 && allowed;
	free(c);
	if (--l->pending == 0)
		listing_done(l);
}

static void
nodes_read(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	struct listing *l;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL ||
	    (res->nrows > 0 &&
	     ((l->nodes = calloc((size_t)res->nrows, sizeof(char *))) == NULL ||
	      (l->ok = calloc((size_t)res->nrows, 1)) == NULL))) {
		if (l != NULL)
			listing_free(l);
		ps_nomem(r);
		return;
	}
	l->r = r;
	l->pending = 1; /* the loop's own, so that no callback ends it */
	for (int i = 0; i < res->nrows; i++) {
		struct ps_config cfg;
		struct ps_node_ref n;
		struct check *c;
		const char *aff;
		int a;

		if ((l->nodes[i] = strdup(pgn_store_value(res, i, 0))) == NULL)
			break;
		l->n++;
		if (r->is_owner) { /* the PEP account sees all */
			l->ok[i] = 1;
			continue;
		}
		if (ps_config_decode(&cfg, pgn_store_value(res, i, 1),
				     r->e->pep) == -ENOMEM ||
		    (c = calloc(1, sizeof(*c))) == NULL) {
			ps_config_clear(&cfg);
			continue;
		}
		n.id = strtoll(pgn_store_value(res, i, 2), NULL, 10);
		n.service = r->service;
		n.node = l->nodes[i];
		n.config = &cfg;
		c->l = l;
		c->i = (size_t)i;
		l->pending++;
		aff = pgn_store_value(res, i, 3);
		a = aff != NULL ? ps_affiliation_parse(aff) : -1;
		if (ps_access_check(r->e, &n, r->from,
				    a > 0 ? (enum ps_affiliation)a
					  : PS_AFF_NONE,
				    node_checked, c) < 0) {
			l->pending--;
			free(c);
		}
		ps_config_clear(&cfg);
	}
	if (--l->pending == 0)
		listing_done(l);
}

/* disco#items of one node: its items' ids (XEP-0060 §5.5). */
static void
node_items_read(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	struct pgn_xml *q = r->answer;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	for (int i = 0; i < res->nrows; i++) {
		struct pgn_xml *it =
			pgn_xml_add_child(q, NS_DISCO_ITEMS, "item");
		if (it == NULL ||
		    pgn_xml_set_attr(it, "jid", r->service) != 0 ||
		    pgn_xml_set_attr(it, "name", pgn_store_value(res, i, 0)) !=
			    0) {
			ps_nomem(r);
			return;
		}
	}
	r->answer = NULL;
	ps_finish(r, q);
}

static void
node_items_query(struct ps_req *r)
{
	if (ps_store_items(r->e, r->node_id, PS_PAGE_NEWEST, NULL,
			   r->e->limits.max_page, node_items_read, r) < 0)
		ps_fail_store(r, NULL);
}

/* A disco request to service (the PEP bare JID or the domain). */
static int
handle_disco(struct ps_engine *e, struct pgn_event *ev, const char *service,
	     int info)
{
	struct pgn_stanza *st = ev->stanza;
	struct ps_req *r;
	const struct pgn_xml *q;

	if (st->from == NULL)
		return PGN_EVENT_PASS;
	if ((r = ps_req_new(e, service, st->from->full)) == NULL ||
	    (r->hold = pgn_event_hold(ev)) == NULL) {
		ps_req_free(r);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	q = pgn_xml_first_child(pgn_hold_stanza(r->hold)->xml);
	r->op = PS_OP_DISCO;
	r->el = q;
	if (ps_set_node(r, pgn_xml_attr(q, "node")) < 0) {
		ps_nomem(r);
		return PGN_EVENT_HANDLED;
	}
	if (info) {
		if (r->node == NULL) {
			struct pgn_xml *a = service_info(NULL);
			if (a == NULL)
				ps_nomem(r);
			else
				ps_finish(r, a);
		} else {
			ps_load_visible(r, info_send); /* §5.3 */
		}
		return PGN_EVENT_HANDLED;
	}
	if ((r->answer = pgn_xml_new(NS_DISCO_ITEMS, "query")) == NULL ||
	    (r->node != NULL &&
	     pgn_xml_set_attr(r->answer, "node", r->node) != 0)) {
		ps_nomem(r);
		return PGN_EVENT_HANDLED;
	}
	if (r->node != NULL)
		ps_load_visible(r, node_items_query);
	else if (ps_store_nodes_for(e, service, r->from_bare,
				    e->limits.max_nodes, nodes_read, r) < 0)
		ps_fail_store(r, NULL);
	return PGN_EVENT_HANDLED;
}

/* disco#info of a PEP node; the account's own disco#info (no node) is
 * mod_disco's. */
static int
on_pep_info(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *q = pgn_xml_first_child(ev->stanza->xml);

	if (q == NULL || pgn_xml_attr(q, "node") == NULL)
		return PGN_EVENT_PASS;
	return handle_disco(arg, ev, ev->stanza->to->bare, 1);
}

static int
on_pep_items(struct pgn_event *ev, void *arg)
{
	return handle_disco(arg, ev, ev->stanza->to->bare, 0);
}

/* Everything addressed to the generic service's domain. */
static int
on_service(struct pgn_event *ev, void *arg)
{
	struct ps_engine *e = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *q = pgn_xml_first_child(st->xml);
	const char *ns = q != NULL ? pgn_xml_ns(q) : NULL;
	int get, set;

	if (st->kind != PGN_STANZA_IQ || st->type == NULL)
		return PGN_EVENT_PASS;
	get = strcmp(st->type, "get") == 0;
	set = strcmp(st->type, "set") == 0;
	if (!get && !set)
		return PGN_EVENT_HANDLED; /* results and errors: dropped */
	if (st->to->node != NULL || st->to->resource != NULL || ns == NULL)
		return PGN_EVENT_PASS;
	if (get && strcmp(pgn_xml_name(q), "query") == 0 &&
	    (strcmp(ns, NS_DISCO_INFO) == 0 || strcmp(ns, NS_DISCO_ITEMS) == 0))
		return handle_disco(e, ev, e->domain,
				    strcmp(ns, NS_DISCO_INFO) == 0);
	if (strcmp(pgn_xml_name(q), "pubsub") == 0 &&
	    (strcmp(ns, PS_NS) == 0 || strcmp(ns, PS_NS_OWNER) == 0))
		return ps_handle_iq(e, ev, e->domain);
	return PGN_EVENT_PASS;
}

int
ps_disco_load(struct ps_engine *e)
{
	char var[128];
	int rc;

	if (!e->pep)
		return pgn_module_add_domain(e->m, e->domain, on_service, e);
	/* Node disco#info before mod_disco's, which knows no nodes. */
	if ((rc = pgn_module_hook(e->m, "iq-get/bare/" NS_DISCO_INFO ":query",
				  on_pep_info, e, PGN_PRIO_OBSERVER)) < 0)
		return rc;

	/* XEP-0163 §6.1: the account is a pubsub/pep service. */
	if ((rc = pgn_module_add_account_identity(e->m, "pubsub", "pep",
						  NULL)) < 0 ||
	    (rc = pgn_module_add_account_feature(e->m, PS_NS)) < 0)
		return rc;
	/* The host lists them too, as other servers do: Profanity looks
	 * for publish-options in the server's disco#info only, and without
	 * it publishes its OMEMO device list with no options (presence
	 * access: strangers cannot fetch it) or, from 0.14, no bundle. */
	for (size_t i = 0; features[i] != NULL; i++) {
		snprintf(var, sizeof(var), PS_NS "#%s", features[i]);
		if ((rc = pgn_module_add_account_feature(e->m, var)) < 0 ||
		    (rc = pgn_module_add_feature(e->m, var)) < 0)
			return rc;
	}
	for (size_t i = 0; pep_features[i] != NULL; i++) {
		snprintf(var, sizeof(var), PS_NS "#%s", pep_features[i]);
		if ((rc = pgn_module_add_account_feature(e->m, var)) < 0 ||
		    (rc = pgn_module_add_feature(e->m, var)) < 0)
			return rc;
	}
	/* Before mod_disco's handler, which lists no nodes. */
	return pgn_module_hook(e->m, "iq-get/bare/" NS_DISCO_ITEMS ":query",
			       on_pep_items, e, PGN_PRIO_OBSERVER);
}
