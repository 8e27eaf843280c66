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
 * Bookmarks (XEP-0402 §"Compatibility", urn:xmpp:bookmarks:1#compat):
 * with mod_pep on the host (the "pep" service of pigeon/pep.h, looked up
 * when first needed: mod_pep may load after this module or not at all),
 * the rooms of a private <storage xmlns='storage:bookmarks'/> are the
 * items of the account's PEP node urn:xmpp:bookmarks:1, one per room JID,
 * so that old (XEP-0049) and new (XEP-0402) clients of a user share them
 * (see "Bookmarks" below).  Without mod_pep, storage:bookmarks is stored
 * like any other namespace.
 *
 * Options: max_size (bytes, default 65536): the serialised data of one
 * set; max_namespaces (default 100): namespaces stored per account;
 * bookmarks_conversion (default true): the bookmarks bridge.  XEP-0049
 * defines no disco feature, so none is advertised for it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/log.h"
#include "pigeon/module.h"
#include "pigeon/pep.h"
#include "pigeon/store.h"

#include "bookmarks.h"

#define NS_PRIVATE "jabber:iq:private"

#define MAX_MAX_SIZE (16L * 1024 * 1024)
#define MAX_MAX_NAMESPACES 100000
/* Namespaces in one set (one transaction of the key-value store). */
#define MAX_SET_NAMESPACES 64
/* Our namespace in the key-value store. */
#define KV_NS "private"

#define NS_BM_COMPAT "urn:xmpp:bookmarks:1#compat"

struct priv {
	struct pgn_module *m;
	size_t max_size;
	unsigned long max_namespaces;
	int conversion; /* option bookmarks_conversion */
	/* The "pep" service once found; valid while both are loaded. */
	const struct pgn_pep_service *pep;
	void *pep_inst;
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

/* Answers the held get with data as stored (NULL: nothing stored, the
 * element as asked, §2.3).  Frees nothing else. */
static void
answer_stored(struct pgn_hold *hold, const char *data)
{
	struct pgn_stanza *req = pgn_hold_stanza(hold);
	struct pgn_xml *asked = pgn_xml_first_child(req->xml); /* query */
	struct pgn_xml *q = pgn_xml_new(NS_PRIVATE, "query");

	if (q == NULL)
		goto nomem;
	if (data == NULL) {
		struct pgn_xml *c = pgn_xml_copy(pgn_xml_first_child(asked));
		if (c == NULL)
			goto nomem;
		pgn_xml_append(q, c);
	} else if (pgn_xml_parse_into(q, data, strlen(data)) != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: stored data of %s does "
				      "not parse",
			req->to->bare);
		pgn_xml_free(q);
		pgn_hold_answer(hold, NULL, "wait", "internal-server-error",
				NULL);
		return;
	}
	pgn_hold_answer(hold, q, NULL, NULL, NULL);
	return;
nomem:
	pgn_xml_free(q);
	pgn_hold_answer(hold, NULL, "wait", "resource-constraint", NULL);
}

/* ---- Bookmarks: storage:bookmarks <-> urn:xmpp:bookmarks:1 ---------------
 * XEP-0402 §"Compatibility" (the #compat feature on the account):
 * - a private set of storage:bookmarks is stored as before, then each of
 *   its <conference/>s becomes an item (id: the room JID) of the PEP node
 *   urn:xmpp:bookmarks:1, published with the publish-options XEP-0402
 *   requires (whitelist, max_items=max, persist, never send the last
 *   item); items whose room is no longer listed are retracted; unchanged
 *   ones are left (no notification, as the XEP says).  The set is
 *   answered after PEP, so the next read of either protocol sees it.
 * - a private get of storage:bookmarks is built at each read: the rooms
 *   from the PEP items, everything else (<url/> bookmarks, which XEP-0402
 *   has no place for) from the stored copy.  So an item a new client
 *   publishes or retracts is seen at once, with no copy to keep in step.
 * - until the node exists (an account with bookmarks from before mod_pep
 *   was enabled), the stored copy is the truth: it is converted when the
 *   user's next session starts (XEP-0411 §5's advice) and a get shows it.
 * The engine refuses a publish to a node configured otherwise
 * (precondition-not-met): then nothing is converted, as XEP-0411 §6
 * requires when the node would not be the user's alone. */

/* The "pep" service, or NULL without mod_pep (or with the bridge off);
 * found lazily since mod_pep may load after this module.  Sessions start
 * only once every module is loaded, so the first one settles it. */
static const struct pgn_pep_service *
pep_lookup(struct priv *pv)
{
	const struct pgn_pep_service *pep;
	void *inst = NULL;

	if (!pv->conversion)
		return NULL;
	if (pv->pep != NULL)
		return pv->pep;
	pep = pgn_host_service(pgn_module_host(pv->m), PGN_PEP_SERVICE, &inst);
	if (pep == NULL)
		return NULL;
	/* XEP-0402: announced on the account. */
	if (pgn_module_add_account_feature(pv->m, NS_BM_COMPAT) < 0)
		return NULL; /* out of memory: tried again next time */
	pv->pep = pep;
	pv->pep_inst = inst;
	return pep;
}

/* One conversion of a legacy list to the node. */
struct bm_sync {
	struct priv *pv;
	struct pgn_hold *hold; /* the private set, or NULL (at login) */
	char *bare;
	struct pgn_xml *legacy; /* a wrapper around the <storage/>s */
	int only_new;           /* at login: only while there is no node */
	size_t pending;         /* PEP requests out, +1 while issuing */
	int refused;            /* precondition-not-met seen */
	/* The rooms to retract once every publish is done (none is when
	 * one was refused: all or nothing). */
	size_t nretract;
	char **retract;
};

static void
bm_sync_free(struct bm_sync *bs)
{
	if (bs == NULL)
		return;
	for (size_t i = 0; i < bs->nretract; i++)
		free(bs->retract[i]);
	free(bs->retract);
	free(bs->bare);
	pgn_xml_free(bs->legacy);
	free(bs);
}

static void
bm_sync_finish(struct bm_sync *bs)
{
	if (bs->refused)
		pgn_log(PGN_LOG_INFO, "mod_private: the bookmarks node of %s "
				      "is not configured as XEP-0402 says: "
				      "bookmarks not converted",
			bs->bare);
	/* The private data is stored whatever PEP said. */
	if (bs->hold != NULL)
		pgn_hold_answer(bs->hold, NULL, NULL, NULL, NULL);
	bm_sync_free(bs);
}

static void bm_op_done(int err, void *arg);

/* Second phase: the retractions. */
static void
bm_retract_all(struct bm_sync *bs)
{
	struct priv *pv = bs->pv;
	size_t n = bs->nretract;

	bs->nretract = 0; /* the phase runs once */
	bs->pending = 1;  /* held while issuing */
	for (size_t i = 0; i < n; i++) {
		if (!bs->refused) {
			bs->pending++;
			if (pv->pep->retract(pv->pep_inst, bs->bare, NS_BM,
					     bs->retract[i], bm_op_done,
					     bs) < 0)
				bm_op_done(-ENOMEM, bs);
		}
		free(bs->retract[i]);
	}
	bm_op_done(0, bs);
}

static void
bm_op_done(int err, void *arg)
{
	struct bm_sync *bs = arg;

	if (err == -EACCES)
		bs->refused = 1;
	else if (err != 0 && err != -ENOENT)
		pgn_log(PGN_LOG_WARN, "mod_private: converting the bookmarks "
				      "of %s: %s",
			bs->bare, strerror(-err));
	if (--bs->pending > 0)
		return;
	if (bs->nretract > 0)
		bm_retract_all(bs);
	else
		bm_sync_finish(bs);
}

static void
bm_sync_items(int err, size_t n, const struct pgn_xml *const *items,
	      void *arg)
{
	struct bm_sync *bs = arg;
	struct priv *pv = bs->pv;
	struct pgn_xml **wanted = NULL, *options = NULL;
	size_t nw = 0;

	if (err == -ENOENT)
		n = 0; /* no node yet: the publish creates it */
	else if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: reading the bookmarks of "
				      "%s failed: %s",
			bs->bare, strerror(-err));
		goto done;
	} else if (bs->only_new)
		goto done; /* converted before */
	if ((wanted = calloc(MAX_BOOKMARKS, sizeof(*wanted))) == NULL ||
	    bm_wanted(bs->legacy, wanted, &nw) < 0 ||
	    (options = bm_options()) == NULL) {
		pgn_log(PGN_LOG_WARN, "mod_private: converting the bookmarks "
				      "of %s: out of memory",
			bs->bare);
		goto done;
	}
	/* The rooms no longer listed, retracted after the publishes. */
	if (n > 0 && (bs->retract = calloc(n, sizeof(*bs->retract))) == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		const char *id = pgn_xml_attr(items[i], "id");
		size_t j = 0;
		if (id == NULL)
			continue;
		while (j < nw && strcmp(pgn_xml_attr(wanted[j], "id"), id) != 0)
			j++;
		if (j < nw)
			continue;
		if ((bs->retract[bs->nretract] = strdup(id)) == NULL)
			goto nomem;
		bs->nretract++;
	}
	bs->pending = 1; /* held while issuing */
	for (size_t i = 0; i < nw; i++) {
		if (bm_unchanged(wanted[i], n, items))
			continue;
		bs->pending++;
		if (pv->pep->publish(pv->pep_inst, bs->bare, NS_BM, wanted[i],
				     options, bm_op_done, bs) < 0)
			bm_op_done(-ENOMEM, bs);
	}
	for (size_t i = 0; i < nw; i++)
		pgn_xml_free(wanted[i]);
	free(wanted);
	pgn_xml_free(options);
	bm_op_done(0, bs); /* the issuing token */
	return;
nomem:
	pgn_log(PGN_LOG_WARN, "mod_private: converting the bookmarks of %s: "
			      "out of memory",
		bs->bare);
done:
	if (wanted != NULL)
		for (size_t i = 0; i < nw; i++)
			pgn_xml_free(wanted[i]);
	free(wanted);
	pgn_xml_free(options);
	bm_sync_finish(bs);
}

/* Converts data (the stored storage:bookmarks elements) to the node of
 * bare.  Takes hold (answered at the end; may be NULL). */
static void
bm_sync_start(struct priv *pv, const char *bare, const char *data,
	      struct pgn_hold *hold, int only_new)
{
	struct bm_sync *bs = calloc(1, sizeof(*bs));

	if (bs == NULL || (bs->bare = strdup(bare)) == NULL ||
	    (bs->legacy = pgn_xml_new(NULL, "wrap")) == NULL ||
	    pgn_xml_parse_into(bs->legacy, data, strlen(data)) != 0)
		goto fail;
	bs->pv = pv;
	bs->hold = hold;
	bs->only_new = only_new;
	if (pv->pep->items(pv->pep_inst, bare, NS_BM, NULL, MAX_BOOKMARKS,
			   bm_sync_items, bs) < 0) {
		bs->hold = NULL;
		goto fail;
	}
	return;
fail:
	pgn_log(PGN_LOG_WARN, "mod_private: cannot convert the bookmarks of %s",
		bare);
	bm_sync_free(bs);
	if (hold != NULL)
		pgn_hold_answer(hold, NULL, NULL, NULL, NULL);
}

/* A private get of storage:bookmarks. */
struct bm_get {
	struct priv *pv;
	struct pgn_hold *hold;
	char *stored; /* the stored copy, NULL if none */
};

static void
bm_got_items(int err, size_t n, const struct pgn_xml *const *items,
	     void *arg)
{
	struct bm_get *bg = arg;
	struct pgn_xml *q = NULL, *storage, *wrap = NULL;

	if (err == -ENOENT) {
		answer_stored(bg->hold, bg->stored); /* not converted yet */
		goto out;
	}
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: reading the bookmarks "
				      "failed: %s",
			strerror(-err));
		pgn_hold_answer(bg->hold, NULL, "wait", "internal-server-error",
				NULL);
		goto out;
	}
	if ((q = pgn_xml_new(NS_PRIVATE, "query")) == NULL ||
	    (storage = pgn_xml_add_child(q, NS_BM_LEGACY, "storage")) == NULL)
		goto nomem;
	/* What XEP-0402 does not hold (<url/>s) from the stored copy. */
	if (bg->stored != NULL &&
	    ((wrap = pgn_xml_new(NULL, "wrap")) == NULL ||
	     pgn_xml_parse_into(wrap, bg->stored, strlen(bg->stored)) != 0))
		goto nomem;
	for (struct pgn_xml *st = wrap != NULL ? pgn_xml_first_child(wrap) : NULL;
	     st != NULL; st = pgn_xml_next(st)) {
		struct pgn_xml *next;
		if (!bm_is(st, NS_BM_LEGACY, "storage"))
			continue;
		for (struct pgn_xml *e = pgn_xml_first_child(st); e != NULL;
		     e = next) {
			next = pgn_xml_next(e);
			if (bm_is(e, NS_BM_LEGACY, "conference"))
				continue;
			pgn_xml_unlink(e);
			pgn_xml_append(storage, e);
		}
	}
	/* The rooms, oldest first as a list is read. */
	for (size_t i = n; i-- > 0;) {
		int nomem;
		struct pgn_xml *lc = bm_legacy_from_item(items[i], &nomem);
		if (lc == NULL) {
			if (nomem)
				goto nomem;
			continue;
		}
		pgn_xml_append(storage, lc);
	}
	pgn_hold_answer(bg->hold, q, NULL, NULL, NULL);
	goto out;
nomem:
	pgn_xml_free(q);
	pgn_hold_answer(bg->hold, NULL, "wait", "resource-constraint", NULL);
out:
	pgn_xml_free(wrap);
	free(bg->stored);
	free(bg);
}

static void
bm_got_stored(uint64_t owner, void *arg, int err, const char *data)
{
	struct bm_get *bg = arg;
	struct priv *pv = bg->pv;
	const char *bare;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: loading failed: %s",
			strerror(-err));
		goto fail;
	}
	if (data != NULL && (bg->stored = strdup(data)) == NULL)
		goto fail;
	bare = pgn_hold_stanza(bg->hold)->to->bare;
	if (pv->pep->items(pv->pep_inst, bare, NS_BM, NULL, MAX_BOOKMARKS,
			   bm_got_items, bg) < 0)
		goto fail;
	return;
fail:
	pgn_hold_answer(bg->hold, NULL, "wait", "internal-server-error", NULL);
	free(bg->stored);
	free(bg);
}

/* Takes hold. */
static void
bm_get_start(struct priv *pv, struct pgn_hold *hold)
{
	struct pgn_stanza *st = pgn_hold_stanza(hold);
	struct bm_get *bg = calloc(1, sizeof(*bg));

	if (bg == NULL) {
		pgn_hold_answer(hold, NULL, "wait", "resource-constraint",
				NULL);
		return;
	}
	bg->pv = pv;
	bg->hold = hold;
	if (pgn_kv_get(pgn_server_store(pgn_module_server(pv->m)), KV_NS,
		       st->to->domain, st->to->node, NS_BM_LEGACY, 0,
		       bm_got_stored, bg) < 0) {
		pgn_hold_answer(hold, NULL, "wait", "internal-server-error",
				NULL);
		free(bg);
	}
}

/* At login: the stored bookmarks of an account whose node does not exist
 * yet are converted, so that XEP-0402 clients see them. */
static void
bm_login_got(uint64_t owner, void *arg, int err, const char *data)
{
	struct pgn_session *s;
	struct priv *pv = arg;
	const struct pgn_jid *jid;

	if (err != 0 || data == NULL || strstr(data, "<conference") == NULL)
		return;
	s = pgn_session_find(pgn_module_server(pv->m), owner);
	if (s == NULL || (jid = pgn_session_jid(s)) == NULL)
		return; /* the next login does it */
	bm_sync_start(pv, jid->bare, data, NULL, 1);
}

static int
on_session_started(struct pgn_event *ev, void *arg)
{
	struct priv *pv = arg;
	const struct pgn_jid *jid = pgn_session_jid(ev->origin);

	if (jid == NULL || jid->node == NULL || pep_lookup(pv) == NULL)
		return PGN_EVENT_PASS;
	if (pgn_kv_get(pgn_server_store(ev->server), KV_NS, jid->domain,
		       jid->node, NS_BM_LEGACY, pgn_session_id(ev->origin),
		       bm_login_got, pv) < 0)
		pgn_log(PGN_LOG_WARN, "session %llu: mod_private: cannot "
				      "read the bookmarks",
			(unsigned long long)pgn_session_id(ev->origin));
	return PGN_EVENT_PASS;
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

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_private: loading failed: %s",
			strerror(-err));
		pgn_hold_answer(g->hold, NULL, "wait", "internal-server-error",
				NULL);
	} else {
		answer_stored(g->hold, data);
	}
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
	if (bm_is(child, NS_BM_LEGACY, "storage") && pep_lookup(pv) != NULL) {
		struct pgn_hold *hold = pgn_event_hold(ev);
		if (hold == NULL)
			pgn_event_error(ev, "wait", "resource-constraint");
		else
			bm_get_start(pv, hold);
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
		set_req_free(sr);
		return;
	}
	for (size_t i = 0; i < sr->n; i++) {
		char bare[3072];
		if (strcmp(sr->ns[i], NS_BM_LEGACY) != 0 ||
		    pep_lookup(sr->pv) == NULL)
			continue;
		/* Stored: now the same rooms in PEP, answered after that. */
		snprintf(bare, sizeof(bare), "%s@%s", sr->user, sr->host);
		bm_sync_start(sr->pv, bare, sr->data[i], sr->hold, 0);
		set_req_free(sr);
		return;
	}
	pgn_hold_answer(sr->hold, NULL, NULL, NULL, NULL);
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
	pv->conversion = pgn_module_opt_bool(m, "bookmarks_conversion");
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
	{"session-started", on_session_started, PGN_PRIO_HANDLER},
	{NULL, NULL, 0},
};

static const struct pgn_module_opt private_options[] = {
	{ .name = "max_size", .type = PGN_OPT_INT, .def = "65536", .min = 1,
	  .max = MAX_MAX_SIZE, .doc = "bytes stored per account" },
	{ .name = "max_namespaces", .type = PGN_OPT_INT, .def = "100",
	  .min = 1, .max = MAX_MAX_NAMESPACES,
	  .doc = "namespaces stored per account" },
	{ .name = "bookmarks_conversion", .type = PGN_OPT_BOOL, .def = "true",
	  .doc = "XEP-0402 #compat: storage:bookmarks <-> PEP (with mod_pep)" },
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
