/* XEP-0049: Private XML storage (jabber:iq:private).
 *
 * A user stores and reads back arbitrary XML of its own, per namespace:
 * an iq set stores, for each namespace present in <query/>, all the
 * children of that namespace (XEP-0049 §2.3 allows several elements of
 * one namespace); a get names one namespace with one (usually empty)
 * child and receives what was stored, or the element as sent when
 * nothing was.  Kept in the store's per-user key-value store
 * (pgn_kv_*), namespace "private", one key per XML namespace.
 *
 * Errors (XEP-0049 §2.3 and §3): another account, or the server itself,
 * as the target -> forbidden; no child, a child without its own
 * namespace or in a reserved one ('jabber:...', 'http://jabber.org/...',
 * 'vcard-temp') -> not-acceptable; a get naming more than one element ->
 * bad-request ("Bad Format" is no RFC 6120 stanza condition).
 *
 * Options: max_size (bytes, default 65536): the serialised data of one
 * set; max_namespaces (default 100): namespaces stored per account.
 * XEP-0049 defines no disco feature, so none is advertised. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/log.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_PRIVATE "jabber:iq:private"

#define MAX_MAX_SIZE (16L * 1024 * 1024)
#define MAX_MAX_NAMESPACES 100000
/* Namespaces in one set (one transaction of the key-value store). */
#define MAX_SET_NAMESPACES 64
/* Our namespace in the key-value store. */
#define KV_NS "private"

struct priv {
	struct pgn_module *m;
	size_t max_size;
	unsigned long max_namespaces;
};

/* ---- checks -------------------------------------------------------------- */

/* XEP-0049 §2.3: data must be in a namespace of its own, and reserved
 * namespaces are refused. */
static int
namespace_acceptable(const char *ns)
{
	if (ns == NULL || ns[0] == '\0')
		return 0;
	return strncmp(ns, "jabber:", 7) != 0 &&
	       strncmp(ns, "http://jabber.org/", 18) != 0 &&
	       strcmp(ns, "vcard-temp") != 0;
}

/* The checks common to get and set; answers and returns 1 when the
 * request is refused. */
static int
refuse(struct pgn_event *ev, const struct pgn_xml *query)
{
	const struct pgn_stanza *st = ev->stanza;

	if (st->from == NULL || st->to->node == NULL ||
	    strcmp(st->from->bare, st->to->bare) != 0) {
		pgn_event_error(ev, "auth", "forbidden");
		return 1;
	}
	if (pgn_xml_first_child(query) == NULL) {
		pgn_event_error(ev, "modify", "not-acceptable");
		return 1;
	}
	for (struct pgn_xml *c = pgn_xml_first_child(query); c != NULL;
	     c = pgn_xml_next(c))
		if (!namespace_acceptable(pgn_xml_ns(c))) {
			pgn_event_error(ev, "modify", "not-acceptable");
			return 1;
		}
	return 0;
}

/* ---- get ----------------------------------------------------------------- */

struct get_req {
	struct priv *pv;
	struct pgn_hold *hold;
};

static void
got_data(uint64_t owner, void *arg, int err, const char *data)
{
	struct get_req *g = arg;
	struct pgn_stanza *req = pgn_hold_stanza(g->hold);
	struct pgn_xml *asked = pgn_xml_first_child(req->xml); /* query */
	struct pgn_xml *q = pgn_xml_new(NS_PRIVATE, "query");

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: loading failed: %s",
			strerror(-err));
		pgn_xml_free(q);
		pgn_hold_answer(g->hold, NULL, "wait", "internal-server-error",
				NULL);
		goto out;
	}
	if (q == NULL)
		goto nomem;
	if (data == NULL) {
		/* Nothing stored: the element as asked (§2.3). */
		struct pgn_xml *c = pgn_xml_copy(pgn_xml_first_child(asked));
		if (c == NULL)
			goto nomem;
		pgn_xml_append(q, c);
	} else if (pgn_xml_parse_into(q, data, strlen(data)) != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: stored data of %s does "
				      "not parse",
			req->to->bare);
		pgn_xml_free(q);
		pgn_hold_answer(g->hold, NULL, "wait", "internal-server-error",
				NULL);
		goto out;
	}
	pgn_hold_answer(g->hold, q, NULL, NULL, NULL);
out:
	free(g);
	return;
nomem:
	pgn_xml_free(q);
	pgn_hold_answer(g->hold, NULL, "wait", "resource-constraint", NULL);
	free(g);
}

static int
on_get(struct pgn_event *ev, void *arg)
{
	struct priv *pv = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *query = pgn_xml_first_child(st->xml);
	struct pgn_xml *child;
	struct get_req *g;

	if (refuse(ev, query))
		return PGN_EVENT_HANDLED;
	child = pgn_xml_first_child(query);
	if (pgn_xml_next(child) != NULL) {
		/* §2.3: one namespace per get. */
		pgn_event_error(ev, "modify", "bad-request");
		return PGN_EVENT_HANDLED;
	}
	g = calloc(1, sizeof(*g));
	if (g == NULL || (g->hold = pgn_event_hold(ev)) == NULL) {
		free(g);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	g->pv = pv;
	if (pgn_kv_get(pgn_server_store(ev->server), KV_NS, st->to->domain,
		       st->to->node, pgn_xml_ns(child), 0, got_data, g) < 0) {
		pgn_hold_answer(g->hold, NULL, "wait", "internal-server-error",
				NULL);
		free(g);
	}
	return PGN_EVENT_HANDLED;
}

/* ---- set ----------------------------------------------------------------- */

/* The namespaces of one set with, for each, the serialisation of all its
 * elements in document order. */
struct set_req {
	struct priv *pv;
	struct pgn_hold *hold;
	char *host, *user;
	size_t n;
	char *ns[MAX_SET_NAMESPACES];
	char *data[MAX_SET_NAMESPACES];
};

static void
set_req_free(struct set_req *sr)
{
	if (sr == NULL)
		return;
	for (size_t i = 0; i < sr->n; i++) {
		free(sr->ns[i]);
		free(sr->data[i]);
	}
	free(sr->host);
	free(sr->user);
	free(sr);
}

/* Appends s to *acc (malloc'd).  0 or -ENOMEM. */
static int
append(char **acc, const char *s)
{
	size_t a = *acc != NULL ? strlen(*acc) : 0, b = strlen(s);
	char *p = realloc(*acc, a + b + 1);
	if (p == NULL)
		return -ENOMEM;
	memcpy(p + a, s, b + 1);
	*acc = p;
	return 0;
}

/* Groups query's children by namespace into sr.  0, -E2BIG (too many
 * namespaces or bytes) or -ENOMEM. */
static int
collect(struct set_req *sr, const struct pgn_xml *query, size_t max_size)
{
	size_t total = 0;

	for (struct pgn_xml *c = pgn_xml_first_child(query); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *ns = pgn_xml_ns(c);
		size_t i;
		char *s;
		int rc;

		for (i = 0; i < sr->n; i++)
			if (strcmp(sr->ns[i], ns) == 0)
				break;
		if (i == sr->n) {
			if (sr->n == MAX_SET_NAMESPACES)
				return -E2BIG;
			if ((sr->ns[i] = strdup(ns)) == NULL)
				return -ENOMEM;
			sr->n++;
		}
		if ((s = pgn_xml_to_string(c, PGN_NS_CLIENT)) == NULL)
			return -ENOMEM;
		total += strlen(s);
		rc = total > max_size ? -E2BIG : append(&sr->data[i], s);
		free(s);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static void
stored(uint64_t owner, void *arg, int err)
{
	struct set_req *sr = arg;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: storing for %s@%s "
				      "failed: %s",
			sr->user, sr->host, strerror(-err));
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
	} else {
		pgn_hold_answer(sr->hold, NULL, NULL, NULL, NULL);
	}
	set_req_free(sr);
}

/* All namespaces of the set in one transaction: a set is all or
 * nothing. */
static void
write_all(struct set_req *sr)
{
	if (pgn_kv_put(pgn_server_store(pgn_module_server(sr->pv->m)), KV_NS,
		       sr->host, sr->user, sr->n, (const char *const *)sr->ns,
		       (const char *const *)sr->data, 0, stored, sr) < 0) {
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
		set_req_free(sr);
	}
}

/* The quota check came back: the namespaces the account has. */
static void
counted(uint64_t owner, void *arg, int err, size_t n, const char *const *keys)
{
	struct set_req *sr = arg;
	unsigned long others = 0;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: counting for %s@%s "
				      "failed: %s",
			sr->user, sr->host, strerror(-err));
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
		set_req_free(sr);
		return;
	}
	/* Those this set does not write. */
	for (size_t i = 0; i < n; i++) {
		size_t j = 0;
		while (j < sr->n && strcmp(sr->ns[j], keys[i]) != 0)
			j++;
		others += j == sr->n;
	}
	if (others + sr->n > sr->pv->max_namespaces) {
		char text[96];
		snprintf(text, sizeof(text),
			 "at most %lu namespaces may be stored",
			 sr->pv->max_namespaces);
		pgn_hold_answer(sr->hold, NULL, "cancel", "resource-constraint",
				text);
		set_req_free(sr);
		return;
	}
	write_all(sr);
}

static int
on_set(struct pgn_event *ev, void *arg)
{
	struct priv *pv = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *query = pgn_xml_first_child(st->xml);
	struct set_req *sr;
	int rc;

	if (refuse(ev, query))
		return PGN_EVENT_HANDLED;
	if ((sr = calloc(1, sizeof(*sr))) == NULL ||
	    (sr->host = strdup(st->to->domain)) == NULL ||
	    (sr->user = strdup(st->to->node)) == NULL)
		goto nomem;
	sr->pv = pv;
	rc = collect(sr, query, pv->max_size);
	if (rc == -E2BIG) {
		char text[96];
		snprintf(text, sizeof(text),
			 "at most %zu bytes in %d namespaces per request",
			 pv->max_size, MAX_SET_NAMESPACES);
		struct pgn_stanza *r = pgn_stanza_error_reply(
			st, "modify", "not-acceptable", text);
		if (r != NULL)
			pgn_event_route(ev, r);
		set_req_free(sr);
		return PGN_EVENT_HANDLED;
	}
	if (rc < 0)
		goto nomem;
	/* The quota counts the namespaces stored besides the ones this set
	 * writes.  Two concurrent sets of one account may pass it
	 * together: the excess is bounded by the account's sessions. */
	if ((sr->hold = pgn_event_hold(ev)) == NULL)
		goto nomem;
	if (pgn_kv_keys(pgn_server_store(ev->server), KV_NS, sr->host,
			sr->user, 0, counted, sr) < 0) {
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
		set_req_free(sr);
	}
	return PGN_EVENT_HANDLED;
nomem:
	set_req_free(sr);
	pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}

/* To the server itself, or to anybody else's account: never (§2.3). */
static int
on_forbidden(struct pgn_event *ev, void *arg)
{
	(void)arg;
	pgn_event_error(ev, "auth", "forbidden");
	return PGN_EVENT_HANDLED;
}

/* ---- module -------------------------------------------------------------- */

static int
private_load(struct pgn_module *m)
{
	struct priv *pv = calloc(1, sizeof(*pv));

	if (pv == NULL)
		return -ENOMEM;
	pv->m = m;
	pv->max_size = (size_t)pgn_module_opt_int(m, "max_size");
	pv->max_namespaces = (unsigned long)pgn_module_opt_int(m,
							       "max_namespaces");
	pgn_module_set_data(m, pv);
	return 0;
}

static void
private_unload(struct pgn_module *m)
{
	free(pgn_module_data(m));
}

static const struct pgn_module_hook_def private_hooks[] = {
	{"iq-get/bare/" NS_PRIVATE ":query", on_get, PGN_PRIO_HANDLER},
	{"iq-set/bare/" NS_PRIVATE ":query", on_set, PGN_PRIO_HANDLER},
	{"iq-get/host/" NS_PRIVATE ":query", on_forbidden, PGN_PRIO_HANDLER},
	{"iq-set/host/" NS_PRIVATE ":query", on_forbidden, PGN_PRIO_HANDLER},
	{NULL, NULL, 0},
};

static const struct pgn_module_opt private_options[] = {
	{ .name = "max_size", .type = PGN_OPT_INT, .def = "65536", .min = 1,
	  .max = MAX_MAX_SIZE, .doc = "bytes stored per account" },
	{ .name = "max_namespaces", .type = PGN_OPT_INT, .def = "100",
	  .min = 1, .max = MAX_MAX_NAMESPACES,
	  .doc = "namespaces stored per account" },
	{ .name = NULL },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_private",
	.description = "Private XML storage (XEP-0049)",
	.options = private_options,
	.hooks = private_hooks,
	.load = private_load,
	.unload = private_unload,
};
