/* The PubSub protocol (XEP-0060): the pubsub requests (publish, retract,
 * items, create, subscribe ...), their errors, limits, and the requests
 * of other modules through the "pep" service (pigeon/pep.h).  The owner
 * requests (pubsub#owner) and disco are in owner.c.
 *
 * Every request becomes a struct ps_req: an iq (held while the store
 * works) or a call of another module (with its callback); both take the
 * same path, so a bridge's publish is checked, limited and notified as
 * a client's is (pep_service.c builds the request of a module's call).
 * The steps: parse (synchronous errors), load the node with the
 * requester's affiliation, check (access model through notify.c),
 * write, answer, then notify (after the commit). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>

#include "engine.h"
#include "pigeon/log.h"
#include "pigeon/pep.h"

/* ---- requests -------------------------------------------------------- */

void
ps_random_id(char *buf, size_t len)
{
	unsigned char r[8] = {0};
	static const char hex[] = "0123456789abcdef";
	size_t i;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		/* Not secret, only unique: the clock will do. */
		struct timeval tv;
		gettimeofday(&tv, NULL);
		memcpy(r, &tv, sizeof(r) < sizeof(tv) ? sizeof(r) : sizeof(tv));
	}
	for (i = 0; i < sizeof(r) && 2 * i + 2 < len; i++) {
		buf[2 * i] = hex[r[i] >> 4];
		buf[2 * i + 1] = hex[r[i] & 15];
	}
	buf[2 * i] = '\0';
}

int64_t
ps_next_ts(struct ps_engine *e)
{
	struct timeval tv;
	int64_t now;

	gettimeofday(&tv, NULL);
	now = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
	e->last_ts = now > e->last_ts ? now : e->last_ts + 1;
	return e->last_ts;
}

void
ps_req_free(struct ps_req *r)
{
	if (r == NULL)
		return;
	if (r->hold != NULL) /* never answered: should not happen */
		pgn_hold_answer(r->hold, NULL, "wait", "internal-server-error",
				NULL);
	pgn_xml_free(r->tree);
	pgn_xml_free(r->answer);
	free(r->service);
	free(r->user);
	free(r->from);
	free(r->from_bare);
	free(r->node_buf);
	free(r->item_id);
	free(r->payload);
	free(r->page_ref);
	free(r->sub_jid);
	ps_config_clear(&r->cfg);
	ps_config_clear(&r->newcfg);
	free(r);
}

/* errno of a pep.h caller for an error condition. */
static int
api_errno(const char *cond, const char *ps_cond)
{
	if (ps_cond != NULL && strcmp(ps_cond, "precondition-not-met") == 0)
		return -EACCES;
	if (strcmp(cond, "item-not-found") == 0)
		return -ENOENT;
	if (strcmp(cond, "not-acceptable") == 0 ||
	    strcmp(cond, "policy-violation") == 0)
		return -EFBIG;
	if (strcmp(cond, "internal-server-error") == 0)
		return -EIO;
	if (strcmp(cond, "bad-request") == 0)
		return -EINVAL;
	return -EPERM;
}

void
ps_fail(struct ps_req *r, const char *type, const char *cond,
	const char *ps_cond, const char *feature)
{
	if (r->hold != NULL) {
		struct pgn_server *srv = pgn_module_server(r->e->m);
		struct pgn_stanza *st = pgn_hold_take(r->hold);
		struct pgn_stanza *rep;
		struct pgn_xml *x = NULL;

		r->hold = NULL;
		if (ps_cond != NULL &&
		    ((x = pgn_xml_new(PS_NS_ERRORS, ps_cond)) == NULL ||
		     (feature != NULL &&
		      pgn_xml_set_attr(x, "feature", feature) != 0))) {
			pgn_log(PGN_LOG_WARN, "pubsub: error without its "
					      "pubsub#errors child (memory)");
			pgn_xml_free(x);
			x = NULL;
		}
		/* The pubsub#errors child as the application condition
		 * (after the defined one; the core adds XEP-0086's code). */
		rep = pgn_stanza_error_reply_app(st, type, cond, NULL, x);
		pgn_stanza_free(st);
		if (rep == NULL)
			goto out;
		pgn_route(srv, rep);
	} else if (r->done != NULL) {
		r->done(api_errno(cond, ps_cond), r->arg);
	} else if (r->items_fn != NULL) {
		r->items_fn(api_errno(cond, ps_cond), 0, NULL, r->arg);
	}
out:
	ps_req_free(r);
}

void
ps_fail_store(struct ps_req *r, const struct pgn_store_result *res)
{
	pgn_log(PGN_LOG_WARN, "pubsub: store failed for %s node %s: %s",
		r->service, r->node != NULL ? r->node : "-",
		res != NULL ? res->errmsg : "queueing");
	ps_fail(r, "wait", "internal-server-error", NULL, NULL);
}

void
ps_nomem(struct ps_req *r)
{
	ps_fail(r, "wait", "resource-constraint", NULL, NULL);
}

void
ps_fail_rc(struct ps_req *r, int rc, const char *type, const char *cond,
	   const char *ps_cond)
{
	if (rc == -ENOMEM)
		ps_nomem(r);
	else
		ps_fail(r, type, cond, ps_cond, NULL);
}

int
ps_set_node(struct ps_req *r, const char *node)
{
	free(r->node_buf);
	r->node_buf = NULL;
	r->node = NULL;
	if (node == NULL)
		return 0;
	if ((r->node_buf = strdup(node)) == NULL)
		return -ENOMEM;
	r->node = r->node_buf;
	return 0;
}

int
ps_no_node(struct ps_req *r)
{
	if (r->exists)
		return 0;
	ps_fail(r, "cancel", "item-not-found", NULL, NULL);
	return 1;
}

void
ps_finish(struct ps_req *r, struct pgn_xml *payload)
{
	if (r->hold != NULL) {
		if (pgn_hold_answer(r->hold, payload, NULL, NULL, NULL) < 0)
			pgn_log(PGN_LOG_WARN, "pubsub: answer lost (memory)");
		r->hold = NULL;
	} else {
		if (r->done != NULL)
			r->done(0, r->arg);
		pgn_xml_free(payload);
	}
	ps_req_free(r);
}

/* A new <pubsub/> answer (ns) holding one element name with node. */
struct pgn_xml *
ps_answer(const char *ns, const char *name, const char *node,
	  struct pgn_xml **child)
{
	struct pgn_xml *p = pgn_xml_new(ns, "pubsub"), *c;

	if (p == NULL || (c = pgn_xml_add_child(p, ns, name)) == NULL ||
	    (node != NULL && pgn_xml_set_attr(c, "node", node) != 0)) {
		pgn_xml_free(p);
		return NULL;
	}
	if (child != NULL)
		*child = c;
	return p;
}

/* ---- the node -------------------------------------------------------- */

struct ps_node_ref
ps_ref(const struct ps_req *r)
{
	struct ps_node_ref n = {r->node_id, r->service, r->node, &r->cfg};
	return n;
}

long
ps_max_items(const struct ps_engine *e, const struct ps_config *c)
{
	if (!c->persist_items)
		return 1; /* the last item, for send_last_published_item */
	if (c->max_items == PS_MAX_ITEMS_MAX ||
	    c->max_items > e->limits.max_items)
		return e->limits.max_items;
	return c->max_items;
}

static void
node_loaded(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	const char *aff;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	r->exists = res->nrows > 0;
	if (r->exists) {
		const char *id = pgn_store_value(res, 0, 0);
		r->node_id = strtoll(id != NULL ? id : "0", NULL, 10);
		ps_config_clear(&r->cfg);
		if (ps_config_decode(&r->cfg, pgn_store_value(res, 0, 1),
				     r->e->pep) == -ENOMEM) {
			ps_nomem(r);
			return;
		}
		aff = pgn_store_value(res, 0, 2);
		r->aff = PS_AFF_NONE;
		if (aff != NULL && ps_affiliation_parse(aff) > 0)
			r->aff = (enum ps_affiliation)ps_affiliation_parse(aff);
	}
	if (r->is_owner)
		r->aff = PS_AFF_OWNER;
	r->step(r);
}

void
ps_load_node(struct ps_req *r, void (*step)(struct ps_req *))
{
	r->step = step;
	if (ps_store_node_get(r->e, r->service, r->node, r->from_bare,
			      node_loaded, r) < 0)
		ps_fail_store(r, NULL);
}

/* The error a requester the access model refuses gets (XEP-0060
 * §6.1.3, §6.5.9). */
void
ps_fail_access(struct ps_req *r)
{
	if (r->aff == PS_AFF_OUTCAST) {
		ps_fail(r, "auth", "forbidden", NULL, NULL);
		return;
	}
	switch (r->cfg.access_model) {
	case PS_ACCESS_PRESENCE:
		ps_fail(r, "auth", "not-authorized",
			"presence-subscription-required", NULL);
		break;
	case PS_ACCESS_ROSTER:
		ps_fail(r, "auth", "not-authorized", "not-in-roster-group",
			NULL);
		break;
	case PS_ACCESS_AUTHORIZE:
		ps_fail(r, "auth", "not-authorized", "not-subscribed", NULL);
		break;
	default:
		ps_fail(r, "cancel", "not-allowed", "closed-node", NULL);
		break;
	}
}

static void
access_done(int err, int allowed, void *arg)
{
	struct ps_req *r = arg;

	if (err < 0)
		ps_fail(r, "wait", "internal-server-error", NULL, NULL);
	else if (!allowed)
		ps_fail_access(r);
	else
		r->step(r);
}

static void
visible_loaded(struct ps_req *r)
{
	if (ps_no_node(r))
		return;
	ps_check_access(r, r->then);
}

void
ps_load_visible(struct ps_req *r, void (*step)(struct ps_req *))
{
	r->then = step;
	ps_load_node(r, visible_loaded);
}

void
ps_check_access(struct ps_req *r, void (*step)(struct ps_req *))
{
	struct ps_node_ref n = ps_ref(r);

	r->step = step;
	if (r->aff == PS_AFF_OWNER || r->aff == PS_AFF_PUBLISHER) {
		step(r);
		return;
	}
	if (ps_access_check(r->e, &n, r->from, r->aff, access_done, r) < 0)
		ps_nomem(r);
}

/* ---- publish (§7.1) -------------------------------------------------- */

static void published(uint64_t owner, void *arg,
		      const struct pgn_store_result *res);
static void publish_loaded(struct ps_req *r);

static int
may_publish(const struct ps_req *r)
{
	if (r->e->pep)
		return r->is_owner;
	switch (r->aff) {
	case PS_AFF_OWNER:
	case PS_AFF_PUBLISHER:
	case PS_AFF_PUBLISH_ONLY:
		return 1;
	case PS_AFF_OUTCAST:
		return 0;
	default:
		return r->cfg.publish_model == PS_PUBLISH_OPEN;
	}
}

/* Whether the requester may create nodes here: the PEP account itself;
 * on a generic service, the accounts of its host. */
int
ps_may_create(const struct ps_req *r)
{
	const char *at;

	if (r->e->pep)
		return r->is_owner;
	at = strchr(r->from_bare, '@');
	return at != NULL && strcmp(at + 1, pgn_host_name(r->e->host)) == 0;
}

static void
publish_write(struct ps_req *r)
{
	const struct ps_config *c = r->create ? &r->newcfg : &r->cfg;
	char *enc = r->create ? ps_config_encode(&r->newcfg) : NULL;
	struct ps_store_publish p = {
		.service = r->service,
		.node = r->node,
		.create = r->create,
		.username = r->e->pep ? r->user : NULL,
		.owner = r->e->pep ? NULL : r->from_bare,
		.config = enc,
		.item_id = r->item_id,
		.publisher = r->from_bare,
		.payload = r->payload,
		.ts = ps_next_ts(r->e),
		.max_items = ps_max_items(r->e, c),
	};

	if (r->create && enc == NULL) {
		ps_nomem(r);
		return;
	}
	if (ps_store_publish(r->e, &p, published, r) < 0)
		ps_fail_store(r, NULL);
	free(enc);
}

static void
usage_checked(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	const char *nodes, *bytes;

	(void)owner;
	if (res->error != 0 || res->nrows < 1) {
		ps_fail_store(r, res);
		return;
	}
	nodes = pgn_store_value(res, 0, 0);
	bytes = pgn_store_value(res, 0, 1);
	if (r->create && nodes != NULL &&
	    strtol(nodes, NULL, 10) >= r->e->limits.max_nodes) {
		ps_fail(r, "wait", "policy-violation", NULL, NULL);
		return;
	}
	/* Approximate by design: a replaced item is counted twice. */
	if (r->e->pep && r->payload != NULL && bytes != NULL &&
	    strtoll(bytes, NULL, 10) + (long long)strlen(r->payload) >
		    r->e->limits.max_bytes) {
		ps_fail(r, "wait", "policy-violation", NULL, NULL);
		return;
	}
	if (r->op == PS_OP_CREATE)
		ps_create_write(r);
	else
		publish_write(r);
}

void
ps_check_usage(struct ps_req *r)
{
	if (!r->e->pep && !r->create) {
		publish_write(r);
		return;
	}
	if (ps_store_usage(r->e, r->service, r->from_bare, usage_checked, r) <
	    0)
		ps_fail_store(r, NULL);
}

static void
publish_loaded(struct ps_req *r)
{
	const char *bad;
	int rc;

	if (!r->exists) {
		if (!ps_may_create(r)) {
			ps_fail(r, r->e->pep ? "auth" : "cancel",
				r->e->pep ? "forbidden" : "item-not-found",
				NULL, NULL);
			return;
		}
		r->create = 1;
		ps_config_default(&r->newcfg, r->e->pep);
		if (r->options != NULL &&
		    (rc = ps_config_apply_form(&r->newcfg, r->options,
					       r->e->limits.max_items, &bad)) <
			    0) {
			ps_fail_rc(r, rc, "cancel", "conflict",
				   "precondition-not-met");
			return;
		}
		ps_check_usage(r);
		return;
	}
	if (!may_publish(r)) {
		ps_fail(r, "auth", "forbidden", NULL, NULL);
		return;
	}
	if (r->options != NULL) {
		rc = ps_config_satisfies(&r->cfg, r->options);
		if (rc == -ENOMEM) {
			ps_nomem(r);
			return;
		}
		if (rc <= 0) {
			ps_fail(r, "cancel", "conflict", "precondition-not-met",
				NULL);
			return;
		}
	}
	if (r->cfg.type != NULL && r->item_ns != NULL &&
	    strcmp(r->cfg.type, r->item_ns) != 0) {
		ps_fail(r, "modify", "bad-request", "invalid-payload", NULL);
		return;
	}
	ps_check_usage(r);
}

/* The event's <item/>: what notify.c and the watchers see. */
static struct pgn_xml *
event_item(const struct ps_req *r, const char *ns)
{
	struct pgn_xml *it = pgn_xml_new(ns, "item");

	if (it == NULL || pgn_xml_set_attr(it, "id", r->item_id) != 0)
		goto fail;
	if (r->payload_el != NULL) {
		struct pgn_xml *c = pgn_xml_copy(r->payload_el);
		if (c == NULL)
			goto fail;
		pgn_xml_append(it, c);
	}
	return it;
fail:
	pgn_xml_free(it);
	return NULL;
}

static void
published(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	struct pgn_xml *ans, *pub, *it, *ev_item, *w_item;
	struct ps_node_ref n;
	const char *id;

	(void)owner;
	if (res->error == -EEXIST && r->create && !r->retried) {
		/* Created meanwhile by another request: start over. */
		r->retried = 1;
		r->create = 0;
		ps_config_clear(&r->newcfg);
		ps_load_node(r, publish_loaded);
		return;
	}
	if (res->error != 0 || res->nrows < 1 ||
	    (id = pgn_store_value(res, 0, 0)) == NULL) {
		ps_fail_store(r, res);
		return;
	}
	r->node_id = strtoll(id, NULL, 10);
	if (r->create) {
		ps_config_clear(&r->cfg);
		r->cfg = r->newcfg;
		memset(&r->newcfg, 0, sizeof(r->newcfg));
		r->create = 0;
	}
	ans = ps_answer(PS_NS, "publish", r->node, &pub);
	it = ans != NULL ? pgn_xml_add_child(pub, PS_NS, "item") : NULL;
	if (it == NULL || pgn_xml_set_attr(it, "id", r->item_id) != 0) {
		pgn_xml_free(ans);
		ans = NULL; /* an empty result is a valid answer too */
	}
	ev_item = event_item(r, PS_NS_EVENT);
	w_item = event_item(r, PS_NS);
	n = ps_ref(r);
	/* Before the answer, which frees the request that r->node and
	 * r->item_id point into; the publisher still gets the answer
	 * first: notify.c sends after a store read. */
	if (ev_item != NULL)
		ps_notify_publish(r->e, &n, ev_item, r->from);
	else
		pgn_log(PGN_LOG_WARN,
			"pubsub: no notification for %s %s "
			"(memory)",
			r->service, r->node);
	if (w_item != NULL)
		ps_run_watchers(r, w_item);
	pgn_xml_free(ev_item);
	pgn_xml_free(w_item);
	if (r->hold != NULL) {
		pgn_hold_answer(r->hold, ans, NULL, NULL, NULL);
		r->hold = NULL;
		ans = NULL;
	}
	ps_finish(r, ans);
}

/* Parses <publish/> (and publish-options) of r->tree. */
static void
publish_start(struct ps_req *r)
{
	struct pgn_xml *item = NULL, *po;
	size_t nitems = 0, npayloads = 0;
	const char *id;

	for (struct pgn_xml *c = pgn_xml_first_child(r->el); c != NULL;
	     c = pgn_xml_next(c))
		if (strcmp(pgn_xml_name(c), "item") == 0) {
			item = c;
			nitems++;
		}
	if (nitems != 1) {
		ps_fail(r, "modify", "bad-request",
			nitems == 0 ? "item-required" : "invalid-payload",
			NULL);
		return;
	}
	for (struct pgn_xml *c = pgn_xml_first_child(item); c != NULL;
	     c = pgn_xml_next(c)) {
		r->payload_el = c;
		npayloads++;
	}
	if (npayloads != 1) {
		ps_fail(r, "modify", "bad-request",
			npayloads == 0 ? "payload-required" : "invalid-payload",
			NULL);
		return;
	}
	r->item_ns = pgn_xml_ns(r->payload_el);
	id = pgn_xml_attr(item, "id");
	if (id != NULL && (id[0] == '\0' || strlen(id) > PS_MAX_NAME)) {
		ps_fail(r, "modify", "bad-request", NULL, NULL);
		return;
	}
	if (id == NULL) {
		char buf[32];
		ps_random_id(buf, sizeof(buf));
		r->item_id = strdup(buf);
	} else {
		r->item_id = strdup(id);
	}
	r->payload = pgn_xml_to_string(r->payload_el, PGN_NS_CLIENT);
	if (r->item_id == NULL || r->payload == NULL) {
		ps_nomem(r);
		return;
	}
	if ((long)strlen(r->payload) > r->e->limits.max_item_size) {
		ps_fail(r, "modify", "not-acceptable", "payload-too-big", NULL);
		return;
	}
	po = pgn_xml_child(pgn_xml_parent(r->el), PS_NS, "publish-options");
	if (po != NULL)
		r->options = pgn_xml_child(po, PS_NS_XDATA, "x");
	ps_load_node(r, publish_loaded);
}

/* ---- retract (§7.2) -------------------------------------------------- */

static void
retracted(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	struct ps_node_ref n;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	if (res->changes == 0) {
		ps_fail(r, "cancel", "item-not-found", NULL, NULL);
		return;
	}
	n = ps_ref(r);
	/* Before the answer, which frees what r->item_id points into. */
	if (r->notify)
		ps_notify_retract(r->e, &n, r->item_id);
	ps_run_watchers(r, NULL);
	if (r->hold != NULL) {
		pgn_hold_answer(r->hold, NULL, NULL, NULL, NULL);
		r->hold = NULL;
	}
	ps_finish(r, NULL);
}

static void
retract_loaded(struct ps_req *r)
{
	if (ps_no_node(r))
		return;
	if (!(r->e->pep
		      ? r->is_owner
		      : r->aff == PS_AFF_OWNER || r->aff == PS_AFF_PUBLISHER)) {
		ps_fail(r, "auth", "forbidden", NULL, NULL);
		return;
	}
	/* §7.2.2.1: notify='true' asks for notifications; without the
	 * attribute the node's notify_retract decides. */
	if (r->notify < 0)
		r->notify = r->cfg.notify_retract;
	if (ps_store_retract(r->e, r->node_id, r->item_id, retracted, r) < 0)
		ps_fail_store(r, NULL);
}

static int
xs_bool(const char *s)
{
	if (s == NULL)
		return -1;
	return strcmp(s, "1") == 0 || strcmp(s, "true") == 0;
}

static void
retract_start(struct ps_req *r)
{
	struct pgn_xml *item = pgn_xml_child(r->el, NULL, "item");
	const char *id = item != NULL ? pgn_xml_attr(item, "id") : NULL;

	if (id == NULL || id[0] == '\0') {
		ps_fail(r, "modify", "bad-request", "item-required", NULL);
		return;
	}
	if (pgn_xml_next(item) != NULL) {
		/* One item per request keeps notifications simple. */
		ps_fail(r, "modify", "bad-request", NULL, NULL);
		return;
	}
	if ((r->item_id = strdup(id)) == NULL) {
		ps_nomem(r);
		return;
	}
	r->notify = xs_bool(pgn_xml_attr(r->el, "notify"));
	ps_load_node(r, retract_loaded);
}

/* ---- items (§6.5) ---------------------------------------------------- */

/* Appends the rows of an items query to el (newest first when rev is 0,
 * else reversed), as <item id>payload</item>. */
static int
add_items(struct pgn_xml *el, const struct pgn_store_result *res, int rev,
	  const char *ns)
{
	for (int k = 0; k < res->nrows; k++) {
		int i = rev ? res->nrows - 1 - k : k;
		const char *id = pgn_store_value(res, i, 0);
		const char *payload = pgn_store_value(res, i, 2);
		struct pgn_xml *it = pgn_xml_add_child(el, ns, "item");

		if (it == NULL || pgn_xml_set_attr(it, "id", id) != 0)
			return -ENOMEM;
		if (payload != NULL && payload[0] != '\0' &&
		    pgn_xml_parse_into(it, payload, strlen(payload)) == -ENOMEM)
			return -ENOMEM;
	}
	return 0;
}

static int
add_text(struct pgn_xml *parent, const char *name, const char *text)
{
	struct pgn_xml *c = pgn_xml_add_child(parent, PS_NS_RSM, name);

	if (c == NULL || pgn_xml_add_text(c, text, strlen(text)) != 0)
		return -ENOMEM;
	return 0;
}

static void
items_read(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	struct pgn_xml *ans, *items;
	int rev = r->page == PS_PAGE_OLDEST || r->page == PS_PAGE_NEWER;
	long count;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	if ((ans = ps_answer(PS_NS, "items", r->node, &items)) == NULL ||
	    add_items(items, res, rev, PS_NS) < 0)
		goto nomem;
	count = res->nrows > 0 ? strtol(pgn_store_value(res, 0, 4), NULL, 10)
			       : 0;
	/* XEP-0059: a page asked for with <set/>, or a node with more
	 * items than one answer holds (§6.5.4: the client pages on). */
	if (!r->by_id && (r->rsm || count > res->nrows)) {
		struct pgn_xml *set = pgn_xml_add_child(ans, PS_NS_RSM, "set");
		char buf[24];
		if (set == NULL)
			goto nomem;
		if (res->nrows > 0) {
			int first = rev ? res->nrows - 1 : 0;
			if (add_text(set, "first",
				     pgn_store_value(res, first, 0)) < 0 ||
			    add_text(set, "last",
				     pgn_store_value(res,
						     res->nrows - 1 - first,
						     0)) < 0)
				goto nomem;
		}
		snprintf(buf, sizeof(buf), "%ld", count);
		if ((res->nrows > 0 || !r->rsm) &&
		    add_text(set, "count", buf) < 0)
			goto nomem;
	}
	if (r->items_fn != NULL) {
		const struct pgn_xml *list[1024];
		size_t n = 0;
		for (struct pgn_xml *c = pgn_xml_first_child(items);
		     c != NULL && n < 1024; c = pgn_xml_next(c))
			list[n++] = c;
		r->items_fn(0, n, list, r->arg);
		r->items_fn = NULL;
		pgn_xml_free(ans);
		ps_finish(r, NULL);
		return;
	}
	ps_finish(r, ans);
	return;
nomem:
	pgn_xml_free(ans);
	ps_nomem(r);
}

static void
items_query(struct ps_req *r)
{
	int rc;

	if (r->nids > 0)
		rc = ps_store_items_by_id(r->e, r->node_id, r->nids,
					  (const char *const *)r->ids,
					  items_read, r);
	else
		rc = ps_store_items(r->e, r->node_id, r->page, r->page_ref,
				    r->max, items_read, r);
	if (rc < 0)
		ps_fail_store(r, NULL);
}

/* Reads <set/> (XEP-0059 §2) into the page to read. */
static int
parse_rsm(struct ps_req *r, const struct pgn_xml *set)
{
	char *max = pgn_xml_child_text(set, PS_NS_RSM, "max");
	struct pgn_xml *after = pgn_xml_child(set, PS_NS_RSM, "after");
	struct pgn_xml *before = pgn_xml_child(set, PS_NS_RSM, "before");
	char *end;

	r->rsm = 1;
	if (max != NULL) {
		long v = strtol(max, &end, 10);
		int ok = max[0] >= '0' && max[0] <= '9' && *end == '\0';
		free(max);
		if (!ok)
			return -EINVAL;
		if (v < r->max)
			r->max = v;
	}
	if (after != NULL) {
		r->page = PS_PAGE_OLDER;
		r->page_ref = pgn_xml_text(after);
	} else if (before != NULL) {
		r->page_ref = pgn_xml_text(before);
		if (r->page_ref != NULL && r->page_ref[0] == '\0')
			r->page = PS_PAGE_OLDEST; /* the last page */
		else
			r->page = PS_PAGE_NEWER;
	}
	if ((after != NULL || before != NULL) && r->page_ref == NULL)
		return -ENOMEM;
	return 0;
}

static void
items_start(struct ps_req *r)
{
	const char *mi = pgn_xml_attr(r->el, "max_items");
	struct pgn_xml *set =
		pgn_xml_child(pgn_xml_parent(r->el), PS_NS_RSM, "set");

	r->page = PS_PAGE_NEWEST;
	r->max = r->e->limits.max_page;
	for (struct pgn_xml *c = pgn_xml_first_child(r->el); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *id = pgn_xml_attr(c, "id");
		if (strcmp(pgn_xml_name(c), "item") != 0 || id == NULL)
			continue;
		if (r->nids == PS_MAX_IDS) {
			ps_fail(r, "modify", "policy-violation", NULL, NULL);
			return;
		}
		r->ids[r->nids++] = id;
	}
	r->by_id = r->nids > 0;
	if (mi != NULL) {
		char *end;
		long v = strtol(mi, &end, 10);
		if (mi[0] < '0' || mi[0] > '9' || *end != '\0' || v < 1) {
			ps_fail(r, "modify", "bad-request", NULL, NULL);
			return;
		}
		if (v < r->max)
			r->max = v;
	}
	if (set != NULL && !r->by_id) {
		int rc = parse_rsm(r, set);
		if (rc < 0) {
			ps_fail_rc(r, rc, "modify", "bad-request", NULL);
			return;
		}
	}
	ps_load_visible(r, items_query);
}

/* ---- create (§8.1) --------------------------------------------------- */

static void
created(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;

	(void)owner;
	if (res->error == -EEXIST) {
		ps_fail(r, "cancel", "conflict", NULL, NULL);
		return;
	}
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	ps_finish(r, ps_answer(PS_NS, "create", r->node, NULL));
}

void
ps_create_write(struct ps_req *r)
{
	char *enc = ps_config_encode(&r->newcfg);
	struct ps_store_publish p = {
		.service = r->service,
		.node = r->node,
		.create = 1,
		.username = r->e->pep ? r->user : NULL,
		.owner = r->e->pep ? NULL : r->from_bare,
		.config = enc,
		.ts = ps_next_ts(r->e),
		.max_items = 1,
	};

	if (enc == NULL) {
		ps_nomem(r);
		return;
	}
	if (ps_store_publish(r->e, &p, created, r) < 0)
		ps_fail_store(r, NULL);
	free(enc);
}

static void
create_loaded(struct ps_req *r)
{
	if (r->exists) {
		ps_fail(r, "cancel", "conflict", NULL, NULL);
		return;
	}
	ps_check_usage(r);
}

static void
create_start(struct ps_req *r)
{
	struct pgn_xml *conf =
		pgn_xml_child(pgn_xml_parent(r->el), PS_NS, "configure");
	struct pgn_xml *x =
		conf != NULL ? pgn_xml_child(conf, PS_NS_XDATA, "x") : NULL;
	const char *bad;
	int rc;

	if (!ps_may_create(r)) {
		ps_fail(r, "auth", "forbidden", NULL, NULL);
		return;
	}
	if (r->node == NULL) { /* instant node (§8.1.2) */
		char buf[32];
		ps_random_id(buf, sizeof(buf));
		if (ps_set_node(r, buf) < 0) {
			ps_nomem(r);
			return;
		}
	}
	r->create = 1;
	ps_config_default(&r->newcfg, r->e->pep);
	if (x != NULL &&
	    (rc = ps_config_apply_form(&r->newcfg, x, r->e->limits.max_items,
				       &bad)) < 0) {
		ps_fail_rc(r, rc, "modify", "not-acceptable", NULL);
		return;
	}
	ps_load_node(r, create_loaded);
}

/* ---- subscribe, unsubscribe (§6.1, §6.2) ----------------------------- */

static void
subscribed(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	struct pgn_xml *ans, *s;
	struct ps_node_ref n;
	const char *subid;

	(void)owner;
	if (res->error != 0 || res->nrows < 1) {
		ps_fail_store(r, res);
		return;
	}
	subid = pgn_store_value(res, 0, 0);
	ans = ps_answer(PS_NS, "subscription", r->node, &s);
	if (ans == NULL || pgn_xml_set_attr(s, "jid", r->sub_jid) != 0 ||
	    (subid != NULL && pgn_xml_set_attr(s, "subid", subid) != 0) ||
	    pgn_xml_set_attr(s, "subscription", "subscribed") != 0) {
		pgn_xml_free(ans);
		ps_nomem(r);
		return;
	}
	n = ps_ref(r);
	ps_notify_subscribed(r->e, &n, r->sub_jid);
	ps_finish(r, ans);
}

static void
subscribe_write(struct ps_req *r)
{
	char subid[32];

	ps_random_id(subid, sizeof(subid));
	if (ps_store_subscribe(r->e, r->node_id, r->sub_jid, subid, subscribed,
			       r) < 0)
		ps_fail_store(r, NULL);
}

/* The account's subscriptions on the service are bounded: it could
 * subscribe from any number of resources. */
static void
subs_counted(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	const char *n;

	(void)owner;
	if (res->error != 0 || res->nrows < 1 ||
	    (n = pgn_store_value(res, 0, 0)) == NULL) {
		ps_fail_store(r, res);
		return;
	}
	if (strtol(n, NULL, 10) >= r->e->limits.max_subscriptions) {
		ps_fail(r, "wait", "policy-violation", NULL, NULL);
		return;
	}
	subscribe_write(r);
}

static void
subscribe_count(struct ps_req *r)
{
	if (ps_store_sub_count(r->e, r->service, r->from_bare, subs_counted,
			       r) < 0)
		ps_fail_store(r, NULL);
}

static void
unsubscribed(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;

	(void)owner;
	if (res->error != 0)
		ps_fail_store(r, res);
	else if (res->changes == 0)
		ps_fail(r, "cancel", "unexpected-request", "not-subscribed",
			NULL);
	else
		ps_finish(r, NULL);
}

static void
unsubscribe_loaded(struct ps_req *r)
{
	if (ps_no_node(r))
		return;
	if (ps_store_unsubscribe(r->e, r->node_id, r->sub_jid, unsubscribed,
				 r) < 0)
		ps_fail_store(r, NULL);
}

static void
sub_start(struct ps_req *r)
{
	const char *jid = pgn_xml_attr(r->el, "jid");
	struct pgn_jid *j = NULL;

	/* §6.1.3.1: the JID must be the requester's (bare or full). */
	if (jid == NULL || pgn_jid_parse(jid, &j) < 0 ||
	    strcmp(j->bare, r->from_bare) != 0) {
		pgn_jid_free(j);
		ps_fail(r, "modify", "bad-request", "invalid-jid", NULL);
		return;
	}
	r->sub_jid = strdup(j->full);
	pgn_jid_free(j);
	if (r->sub_jid == NULL) {
		ps_nomem(r);
		return;
	}
	if (r->op == PS_OP_SUBSCRIBE)
		ps_load_visible(r, subscribe_count);
	else
		ps_load_node(r, unsubscribe_loaded);
}

/* Sets attribute names[k] of el to column k of row i, for each name (a
 * NULL-terminated list); SQL NULLs are skipped.  0 or -ENOMEM. */
int
ps_xml_set_row(struct pgn_xml *el, const struct pgn_store_result *res,
	       int i, const char *const *names)
{
	for (int k = 0; names[k] != NULL; k++) {
		const char *v = pgn_store_value(res, i, k);

		if (v != NULL && pgn_xml_set_attr(el, names[k], v) != 0)
			return -ENOMEM;
	}
	return 0;
}

/* ---- an entity's subscriptions and affiliations (§5.6, §5.7) --------- */

static void
entity_read(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ps_req *r = arg;
	int subs = r->op == PS_OP_SUBSCRIPTIONS;
	struct pgn_xml *ans, *list;

	(void)owner;
	if (res->error != 0) {
		ps_fail_store(r, res);
		return;
	}
	ans = ps_answer(PS_NS, subs ? "subscriptions" : "affiliations", NULL,
			&list);
	if (ans == NULL)
		goto nomem;
	for (int i = 0; i < res->nrows; i++) {
		static const char *const sub_cols[] = {"node", "jid", "subid",
						       "subscription", NULL};
		static const char *const aff_cols[] = {"node", "affiliation",
						       NULL};
		struct pgn_xml *c = pgn_xml_add_child(
			list, PS_NS, subs ? "subscription" : "affiliation");
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

static void
entity_start(struct ps_req *r)
{
	if (ps_store_entity(r->e, r->op == PS_OP_SUBSCRIPTIONS, r->service,
			    r->from_bare, r->from, r->node, entity_read, r) < 0)
		ps_fail_store(r, NULL);
}

/* ---- dispatch ------------------------------------------------------- */

static const struct {
	const char *name;
	int set; /* the iq type it comes in */
	enum ps_op op;
	void (*start)(struct ps_req *);
	const char *feature; /* pubsub#... for feature-not-implemented */
} pubsub_ops[] = {
	{"publish", 1, PS_OP_PUBLISH, publish_start, "publish"},
	{"retract", 1, PS_OP_RETRACT, retract_start, "retract-items"},
	{"create", 1, PS_OP_CREATE, create_start, "create-nodes"},
	{"subscribe", 1, PS_OP_SUBSCRIBE, sub_start, "subscribe"},
	{"unsubscribe", 1, PS_OP_UNSUBSCRIBE, sub_start, "subscribe"},
	{"items", 0, PS_OP_ITEMS, items_start, "retrieve-items"},
	{"subscriptions", 0, PS_OP_SUBSCRIPTIONS, entity_start,
	 "retrieve-subscriptions"},
	{"affiliations", 0, PS_OP_AFFILIATIONS, entity_start,
	 "retrieve-affiliations"},
	{"options", -1, PS_OP_NONE, NULL, "subscription-options"},
	{"configure", -1, PS_OP_NONE, NULL, "config-node"},
	{"publish-options", -1, PS_OP_SKIP, NULL, NULL},
	{"set", -1, PS_OP_SKIP, NULL, NULL},
};

/* A new request for e by requester from (full or bare JID) on service
 * (a bare JID or the domain).  NULL on allocation failure. */
struct ps_req *
ps_req_new(struct ps_engine *e, const char *service, const char *from)
{
	struct ps_req *r = calloc(1, sizeof(*r));
	const char *slash = from != NULL ? strchr(from, '/') : NULL;

	if (r == NULL)
		return NULL;
	r->e = e;
	r->notify = -1;
	if ((r->service = strdup(service)) == NULL ||
	    (r->from = strdup(from != NULL ? from : service)) == NULL ||
	    (r->from_bare = slash != NULL
				    ? strndup(from, (size_t)(slash - from))
				    : strdup(r->from)) == NULL)
		goto fail;
	if (e->pep) {
		const char *at = strchr(service, '@');
		if (at == NULL ||
		    (r->user = strndup(service, (size_t)(at - service))) ==
			    NULL)
			goto fail;
		r->is_owner = strcmp(r->from_bare, service) == 0;
	}
	return r;
fail:
	ps_req_free(r);
	return NULL;
}

/* Starts the request of the <pubsub/> element ps (borrowed from the held
 * stanza or from r->tree).  set: the iq type. */
void
ps_req_start(struct ps_req *r, const struct pgn_xml *ps, int set)
{
	const char *unsupported = NULL;

	for (struct pgn_xml *c = pgn_xml_first_child(ps); c != NULL;
	     c = pgn_xml_next(c)) {
		size_t i;
		for (i = 0; i < sizeof(pubsub_ops) / sizeof(pubsub_ops[0]); i++)
			if (strcmp(pubsub_ops[i].name, pgn_xml_name(c)) == 0)
				break;
		if (i == sizeof(pubsub_ops) / sizeof(pubsub_ops[0])) {
			ps_fail(r, "modify", "bad-request", NULL, NULL);
			return;
		}
		if (pubsub_ops[i].op == PS_OP_SKIP)
			continue;
		if (pubsub_ops[i].op == PS_OP_NONE) {
			unsupported = pubsub_ops[i].feature;
			continue;
		}
		if (pubsub_ops[i].set != set || r->el != NULL) {
			ps_fail(r, "modify", "bad-request", NULL, NULL);
			return;
		}
		r->el = c;
		r->op = pubsub_ops[i].op;
		r->step = pubsub_ops[i].start;
	}
	if (r->el == NULL || (unsupported != NULL && r->op != PS_OP_CREATE)) {
		if (unsupported != NULL)
			ps_fail(r, "cancel", "feature-not-implemented",
				"unsupported", unsupported);
		else
			ps_fail(r, "modify", "bad-request", NULL, NULL);
		return;
	}
	if (ps_set_node(r, pgn_xml_attr(r->el, "node")) < 0) {
		ps_nomem(r);
		return;
	}
	if (r->node != NULL &&
	    (r->node[0] == '\0' || strlen(r->node) > PS_MAX_NAME)) {
		ps_fail(r, "modify", "bad-request", "nodeid-required", NULL);
		return;
	}
	if (r->node == NULL && r->op != PS_OP_CREATE &&
	    r->op != PS_OP_SUBSCRIPTIONS && r->op != PS_OP_AFFILIATIONS) {
		ps_fail(r, "modify", "bad-request", "nodeid-required", NULL);
		return;
	}
	r->step(r);
}

/* An iq to a PEP service or the generic one: hold it and start. */
int
ps_handle_iq(struct ps_engine *e, struct pgn_event *ev, const char *service)
{
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *ps = pgn_xml_first_child(st->xml);
	int set = st->type != NULL && strcmp(st->type, "set") == 0;
	int owner_ns = strcmp(pgn_xml_ns(ps), PS_NS_OWNER) == 0;
	struct ps_req *r;

	if (st->from == NULL) {
		pgn_event_error(ev, "auth", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	if ((r = ps_req_new(e, service, st->from->full)) == NULL ||
	    (r->hold = pgn_event_hold(ev)) == NULL) {
		ps_req_free(r);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	/* The held stanza stays put until answered: ps borrows from it. */
	ps = pgn_xml_first_child(pgn_hold_stanza(r->hold)->xml);
	if (owner_ns)
		ps_owner_start(r, ps, set);
	else
		ps_req_start(r, ps, set);
	return PGN_EVENT_HANDLED;
}

/* ---- load ------------------------------------------------------------ */

static int
on_pep_iq(struct pgn_event *ev, void *arg)
{
	struct ps_engine *e = arg;

	return ps_handle_iq(e, ev, ev->stanza->to->bare);
}

static int
on_account_removed(struct pgn_event *ev, void *arg)
{
	struct ps_engine *e = arg;
	const struct pgn_account_event *ae = ev->data;

	if (ae->err == 0 && ps_store_forget_jid(e, ae->bare) < 0)
		pgn_log(PGN_LOG_WARN, "mod_pubsub: cannot forget %s", ae->bare);
	return PGN_EVENT_PASS;
}

void
ps_limits_read(struct ps_engine *e)
{
	e->limits.max_nodes = pgn_module_opt_int(e->m, "max_nodes");
	e->limits.max_item_size = pgn_module_opt_int(e->m, "max_item_size");
	e->limits.max_bytes = pgn_module_opt_int(e->m, "max_bytes");
	e->limits.max_items = pgn_module_opt_int(e->m, "max_items");
	e->limits.max_page = pgn_module_opt_int(e->m, "max_page");
	e->limits.max_subscriptions =
		pgn_module_opt_int(e->m, "max_subscriptions");
}

int
ps_engine_load(struct ps_engine *e)
{
	static const char *const pep_events[] = {
		"iq-get/bare/" PS_NS ":pubsub",
		"iq-set/bare/" PS_NS ":pubsub",
		"iq-get/bare/" PS_NS_OWNER ":pubsub",
		"iq-set/bare/" PS_NS_OWNER ":pubsub",
	};
	int rc;

	if ((e->priv = calloc(1, sizeof(struct ps_priv))) == NULL)
		return -ENOMEM;
	e->store = pgn_server_store(pgn_module_server(e->m));
	e->host = pgn_module_host(e->m);
	ps_limits_read(e);
	if (e->pep) {
		for (size_t i = 0; i < 4; i++)
			if ((rc = pgn_module_hook(e->m, pep_events[i],
						  on_pep_iq, e,
						  PGN_PRIO_HANDLER)) < 0)
				return rc;
		if ((rc = pgn_module_provide(e->m, PGN_PEP_SERVICE, &ps_pep_ops,
					     e)) < 0)
			return rc;
	} else if ((rc = pgn_module_hook(e->m, "account-removed",
					 on_account_removed, e,
					 PGN_PRIO_HANDLER)) < 0) {
		return rc;
	}
	return ps_disco_load(e);
}

int
ps_module_load(struct pgn_module *m, int pep, char *domain)
{
	struct ps_engine *e = calloc(1, sizeof(*e));
	int rc;

	if (e == NULL) {
		free(domain);
		return -ENOMEM;
	}
	e->m = m;
	e->pep = pep;
	e->domain = domain;
	pgn_module_set_data(m, e);
	if ((rc = ps_engine_load(e)) < 0 || (rc = ps_notify_init(e)) < 0) {
		ps_module_unload(m);
		pgn_module_set_data(m, NULL);
	}
	return rc;
}

void
ps_module_unload(struct pgn_module *m)
{
	struct ps_engine *e = pgn_module_data(m);

	if (e == NULL)
		return;
	ps_notify_free(e);
	ps_engine_unload(e);
	free(e->domain);
	free(e);
}

void
ps_engine_unload(struct ps_engine *e)
{
	struct ps_priv *pv = e->priv;

	if (pv == NULL)
		return;
	ps_watches_free(e);
	free(pv);
	e->priv = NULL;
}
