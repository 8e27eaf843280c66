/* XEP-0115: Entity Capabilities.
 *
 * The server's own caps: a <c/> in the stream features (XEP-0115 §6.3)
 * whose ver is the §5.1 hash of the host's disco#info (the identities and
 * features its modules registered; no forms), and the answer to a
 * disco#info query for node#ver (§6.2), the same information with the
 * node echoed.  That answer lives here rather than in mod_disco because
 * only this module knows the ver; other nodes still reach mod_disco.
 *
 * Clients' caps: the <c/> of a client's available presence is kept per
 * session.  An unknown (hash, ver) is looked up in the store (table caps,
 * schemas/<driver>/008_caps.sql), and if absent the server asks that
 * client for disco#info of node#ver, verifies the answer (§5.4: well
 * formed, and its hash is the ver) and caches the features in memory and
 * in the store, so no other client with the same ver is ever asked.
 * Only one lookup per (hash, ver) runs at a time.  Legacy caps (no
 * 'hash', before version 1.5) cannot be verified and are only recorded.
 *
 * caps_session_features() is the lookup PEP will use to filter +notify
 * features: other modules reach it through the "caps" service
 * (pigeon/caps.h).
 *
 * Options: node (default https://pigeon.invalid/caps); cache_size
 * (entries kept in memory, default 10000). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "pigeon/caps.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_CAPS "http://jabber.org/protocol/caps"
#define NS_INFO "http://jabber.org/protocol/disco#info"
#define NS_XDATA "jabber:x:data"

#define MAX_CACHE_SIZE 10000000L
#define MAX_NODE_LEN 1024
#define MAX_VER_LEN 128  /* base64 of SHA-512 is 88 */
#define MAX_HASH_LEN 16
#define MAX_PENDING 4096 /* disco#info queries waiting for an answer */
/* A client that does not answer within this long is not asked again
 * until another client shows the same caps. */
#define QUERY_TIMEOUT_MS (60 * 1000)
#define VER_BUF 96

/* A module watching sessions' features (pigeon/caps.h). */
struct watcher {
	struct watcher *next;
	struct pgn_module *m;
	pgn_caps_watch_fn fn;
	void *arg;
};

struct caps {
	struct pgn_module *m;
	struct watcher *watchers;
	/* Sessions whose caps are being looked up or verified: session id
	 * -> struct wait, so that watchers are told once they are known. */
	struct pgn_map *waiting;
	const char *node;
	unsigned long cache_size;
	struct pgn_map *known;    /* "hash/ver" -> features (char *) */
	struct pgn_map *inflight; /* "hash/ver" -> the module: lookup runs */
	struct pgn_map *pending;  /* pgn_send_iq handle -> struct pending */
};

/* A session waiting for the features of key; old: its features before
 * (borrowed from the cache, which never frees an entry; NULL: none). */
struct wait {
	char *key;
	const char *old;
};

static void
wait_free(void *p)
{
	struct wait *w = p;
	if (w != NULL)
		free(w->key);
	free(w);
}

/* Per session: the caps of its last available presence. */
struct csess {
	char *node, *ver, *hash;
	char *key; /* "hash/ver", NULL when the hash is not supported */
};

/* A disco#info query sent to a client (the argument of its answer). */
struct pending {
	struct caps *c;
	uint64_t handle;
	uint64_t session;
	char *key;
	char *jid; /* the full JID asked: only it may answer */
	char *ver;
	const EVP_MD *md;
};

/* ---- strings ------------------------------------------------------------- */

struct sbuf {
	char *p;
	size_t len, cap;
	int nomem;
};

static void
sb_add(struct sbuf *b, const char *s)
{
	size_t n = strlen(s);
	if (b->nomem)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (p == NULL) {
			b->nomem = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n + 1);
	b->len += n;
}

/* Gives the string away (the caller frees); NULL on allocation
 * failure. */
static char *
sb_take(struct sbuf *b)
{
	char *p;
	if (b->nomem) {
		free(b->p);
		return NULL;
	}
	p = b->p != NULL ? b->p : strdup("");
	b->p = NULL;
	b->len = b->cap = 0;
	return p;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
has_duplicates(char **v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (strcmp(v[i - 1], v[i]) == 0)
			return 1;
	return 0;
}

static void
free_strv(char **v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static const char *
attr_or_empty(const struct pgn_xml *el, const char *name)
{
	const char *v = pgn_xml_attr(el, name);
	return v != NULL ? v : "";
}

static size_t
count_children(const struct pgn_xml *el)
{
	size_t n = 0;
	for (struct pgn_xml *c = pgn_xml_first_child(el); c != NULL;
	     c = pgn_xml_next(c))
		n++;
	return n;
}

static int
is(const struct pgn_xml *el, const char *ns, const char *name)
{
	const char *ens = pgn_xml_ns(el);
	return ens != NULL && strcmp(ens, ns) == 0 &&
	       strcmp(pgn_xml_name(el), name) == 0;
}

/* ---- the verification string (XEP-0115 §5.1, checks of §5.4) ------------- */

/* The texts of el's <value/> children, sorted.  NULL on allocation
 * failure (*n 0 and a non-NULL empty array otherwise). */
static char **
field_values(const struct pgn_xml *field, size_t *n)
{
	size_t max = count_children(field);
	char **v = calloc(max + 1, sizeof(*v));

	*n = 0;
	if (v == NULL)
		return NULL;
	for (struct pgn_xml *c = pgn_xml_first_child(field); c != NULL;
	     c = pgn_xml_next(c)) {
		if (!is(c, NS_XDATA, "value"))
			continue;
		if ((v[*n] = pgn_xml_text(c)) == NULL) {
			free_strv(v, *n);
			return NULL;
		}
		(*n)++;
	}
	qsort(v, *n, sizeof(*v), cmp_str);
	return v;
}

/* One XEP-0128 form as it enters S: "FORM_TYPE<" then each other field
 * "var<" followed by its sorted values "value<".  Sets *piece (malloc'd)
 * to NULL for a form that must be ignored (no hidden FORM_TYPE).  0,
 * -EINVAL (ill-formed response) or -ENOMEM. */
static int
form_piece(const struct pgn_xml *x, char **form_type, char **piece)
{
	size_t nfields = count_children(x), nf = 0;
	char **vars = calloc(nfields + 1, sizeof(*vars));
	struct sbuf b = { 0 };
	int found = 0, rc = -ENOMEM;

	*form_type = *piece = NULL;
	if (vars == NULL)
		return -ENOMEM;
	for (struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
	     f = pgn_xml_next(f)) {
		const char *var;
		if (!is(f, NS_XDATA, "field"))
			continue;
		var = attr_or_empty(f, "var");
		if (strcmp(var, "FORM_TYPE") == 0) {
			size_t nv;
			char **v;
			if (found) {
				rc = -EINVAL;
				goto out;
			}
			found = 1;
			if (strcmp(attr_or_empty(f, "type"), "hidden") != 0) {
				rc = 0; /* ignored form (§5.4 3.6) */
				goto out;
			}
			if ((v = field_values(f, &nv)) == NULL)
				goto out;
			/* Several values must all be equal (§5.4 3.5). */
			if (nv > 1 && strcmp(v[0], v[nv - 1]) != 0) {
				free_strv(v, nv);
				rc = -EINVAL;
				goto out;
			}
			*form_type = nv > 0 ? strdup(v[0]) : strdup("");
			free_strv(v, nv);
			if (*form_type == NULL)
				goto out;
			continue;
		}
		/* Sorted below; fields sharing a var keep document
		 * order. */
		if ((vars[nf] = strdup(var)) == NULL)
			goto out;
		nf++;
	}
	if (!found) {
		rc = 0;
		goto out;
	}
	qsort(vars, nf, sizeof(*vars), cmp_str);
	sb_add(&b, *form_type);
	sb_add(&b, "<");
	for (size_t i = 0; i < nf; i++) {
		if (i > 0 && strcmp(vars[i], vars[i - 1]) == 0)
			continue; /* all fields of that var were added */
		for (struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
		     f = pgn_xml_next(f)) {
			size_t nv;
			char **v;
			if (!is(f, NS_XDATA, "field") ||
			    strcmp(attr_or_empty(f, "var"), vars[i]) != 0)
				continue;
			if ((v = field_values(f, &nv)) == NULL)
				goto out;
			sb_add(&b, vars[i]);
			sb_add(&b, "<");
			for (size_t j = 0; j < nv; j++) {
				sb_add(&b, v[j]);
				sb_add(&b, "<");
			}
			free_strv(v, nv);
		}
	}
	if ((*piece = sb_take(&b)) == NULL)
		goto out;
	rc = 0;
out:
	free(b.p);
	free_strv(vars, nf);
	if (*piece == NULL) {
		free(*form_type);
		*form_type = NULL;
	}
	return rc;
}

struct form {
	char *type;
	char *piece;
};

static int
cmp_form(const void *a, const void *b)
{
	return strcmp(((const struct form *)a)->type,
		      ((const struct form *)b)->type);
}

/* Builds the verification string S of a disco#info <query/> into *s
 * (malloc'd) and, if features is not NULL, the sorted features joined by
 * newlines.  0, -EINVAL when the response is ill-formed (§5.4: duplicate
 * identity, feature or FORM_TYPE; a newline in a feature, which the
 * cache cannot hold) or -ENOMEM. */
static int
verification_string(const struct pgn_xml *q, char **s, char **features)
{
	size_t n = count_children(q), ni = 0, nf = 0, nx = 0;
	char **ids = calloc(n + 1, sizeof(*ids));
	char **feats = calloc(n + 1, sizeof(*feats));
	struct form *forms = calloc(n + 1, sizeof(*forms));
	struct sbuf b = { 0 }, fb = { 0 };
	int rc = -ENOMEM;

	*s = NULL;
	if (features != NULL)
		*features = NULL;
	if (ids == NULL || feats == NULL || forms == NULL)
		goto out;
	for (struct pgn_xml *c = pgn_xml_first_child(q); c != NULL;
	     c = pgn_xml_next(c)) {
		if (is(c, NS_INFO, "identity")) {
			struct sbuf ib = { 0 };
			sb_add(&ib, attr_or_empty(c, "category"));
			sb_add(&ib, "/");
			sb_add(&ib, attr_or_empty(c, "type"));
			sb_add(&ib, "/");
			sb_add(&ib, attr_or_empty(c, "xml:lang"));
			sb_add(&ib, "/");
			sb_add(&ib, attr_or_empty(c, "name"));
			if ((ids[ni] = sb_take(&ib)) == NULL)
				goto out;
			ni++;
		} else if (is(c, NS_INFO, "feature")) {
			if ((feats[nf] = strdup(attr_or_empty(c, "var"))) ==
			    NULL)
				goto out;
			if (strchr(feats[nf++], '\n') != NULL) {
				rc = -EINVAL;
				goto out;
			}
		} else if (is(c, NS_XDATA, "x")) {
			rc = form_piece(c, &forms[nx].type, &forms[nx].piece);
			if (rc < 0)
				goto out;
			rc = -ENOMEM;
			if (forms[nx].piece != NULL)
				nx++;
		}
	}
	/* Sorting on the formatted identities is what the libraries that
	 * generate most vers do (i;octet on "category/type/lang/name"). */
	qsort(ids, ni, sizeof(*ids), cmp_str);
	qsort(feats, nf, sizeof(*feats), cmp_str);
	qsort(forms, nx, sizeof(*forms), cmp_form);
	if (has_duplicates(ids, ni) || has_duplicates(feats, nf)) {
		rc = -EINVAL;
		goto out;
	}
	for (size_t i = 1; i < nx; i++)
		if (strcmp(forms[i - 1].type, forms[i].type) == 0) {
			rc = -EINVAL;
			goto out;
		}
	for (size_t i = 0; i < ni; i++) {
		sb_add(&b, ids[i]);
		sb_add(&b, "<");
	}
	for (size_t i = 0; i < nf; i++) {
		sb_add(&b, feats[i]);
		sb_add(&b, "<");
		if (i > 0)
			sb_add(&fb, "\n");
		sb_add(&fb, feats[i]);
	}
	for (size_t i = 0; i < nx; i++)
		sb_add(&b, forms[i].piece);
	if ((*s = sb_take(&b)) == NULL)
		goto out;
	if (features != NULL && (*features = sb_take(&fb)) == NULL) {
		free(*s);
		*s = NULL;
		goto out;
	}
	rc = 0;
out:
	free(b.p);
	free(fb.p);
	free_strv(ids, ni);
	free_strv(feats, nf);
	if (forms != NULL)
		for (size_t i = 0; i < nx; i++) {
			free(forms[i].type);
			free(forms[i].piece);
		}
	free(forms);
	return rc;
}

/* The hash functions of the IANA registry that clients use (§5.1). */
static const EVP_MD *
caps_md(const char *name)
{
	if (name == NULL)
		return NULL;
	if (strcmp(name, "sha-1") == 0)
		return EVP_sha1();
	if (strcmp(name, "sha-224") == 0)
		return EVP_sha224();
	if (strcmp(name, "sha-256") == 0)
		return EVP_sha256();
	if (strcmp(name, "sha-384") == 0)
		return EVP_sha384();
	if (strcmp(name, "sha-512") == 0)
		return EVP_sha512();
	return NULL;
}

/* ver = base64(md(S)).  0, -EINVAL or -ENOMEM. */
static int
caps_ver(const struct pgn_xml *q, const EVP_MD *md, char ver[VER_BUF],
	 char **features)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	char *s;
	int rc = verification_string(q, &s, features);

	if (rc < 0)
		return rc;
	if (EVP_Digest(s, strlen(s), d, &dlen, md, NULL) != 1 ||
	    4 * ((dlen + 2) / 3) + 1 > VER_BUF) {
		free(s);
		if (features != NULL) {
			free(*features);
			*features = NULL;
		}
		return -ENOMEM;
	}
	free(s);
	EVP_EncodeBlock((unsigned char *)ver, d, (int)dlen);
	return 0;
}

/* ---- the server's caps --------------------------------------------------- */

/* Computed each time: modules loaded after this one add features, and
 * hashing a few hundred bytes costs less than tracking changes. */
static int
host_ver(const struct pgn_host *h, char ver[VER_BUF])
{
	struct pgn_xml *q = pgn_host_disco_info(h, NULL);
	int rc;
	if (q == NULL)
		return -ENOMEM;
	rc = caps_ver(q, EVP_sha1(), ver, NULL);
	pgn_xml_free(q);
	return rc;
}

static int
on_features(struct pgn_event *ev, void *arg)
{
	struct caps *c = arg;
	struct pgn_xml *features = ev->data, *el;
	char ver[VER_BUF];

	if (features == NULL || host_ver(ev->host, ver) != 0)
		return PGN_EVENT_PASS;
	el = pgn_xml_add_child(features, NS_CAPS, "c");
	if (el == NULL || pgn_xml_set_attr(el, "hash", "sha-1") != 0 ||
	    pgn_xml_set_attr(el, "node", c->node) != 0 ||
	    pgn_xml_set_attr(el, "ver", ver) != 0)
		pgn_log(PGN_LOG_WARN, "mod_caps: out of memory");
	return PGN_EVENT_PASS;
}

/* disco#info of node#ver (§6.2); any other node goes on to mod_disco. */
static int
on_disco_node(struct pgn_event *ev, void *arg)
{
	struct caps *c = arg;
	struct pgn_xml *req = pgn_xml_first_child(ev->stanza->xml);
	const char *node = pgn_xml_attr(req, "node");
	size_t nlen = strlen(c->node);
	char ver[VER_BUF];
	struct pgn_xml *q;

	if (node == NULL || strncmp(node, c->node, nlen) != 0 ||
	    node[nlen] != '#' || host_ver(ev->host, ver) != 0 ||
	    strcmp(node + nlen + 1, ver) != 0)
		return PGN_EVENT_PASS;
	if ((q = pgn_host_disco_info(ev->host, node)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
}

/* ---- clients' caps: cache ------------------------------------------------ */

static void
csess_free(void *p)
{
	struct csess *cs = p;
	if (cs == NULL)
		return;
	free(cs->node);
	free(cs->ver);
	free(cs->hash);
	free(cs->key);
	free(cs);
}

static void
pending_free(struct pending *p)
{
	if (p == NULL)
		return;
	free(p->key);
	free(p->jid);
	free(p->ver);
	free(p);
}

/* Keeps features (copied) for key in memory, within cache_size. */
static void
remember(struct caps *c, const char *key, const char *features)
{
	char *copy;
	if (pgn_map_get(c->known, key) != NULL ||
	    pgn_map_count(c->known) >= c->cache_size)
		return;
	if ((copy = strdup(features)) == NULL)
		return;
	if (pgn_map_set(c->known, key, copy) != 0)
		free(copy);
}

/* The verified features of session s (sorted, joined by newlines), or
 * NULL while they are unknown.  For PEP (XEP-0163 §4: +notify). */
static const char *
caps_session_features(const struct caps *c, const struct pgn_session *s)
{
	const struct csess *cs = pgn_session_get_data(s, c->m);
	if (cs == NULL || cs->key == NULL)
		return NULL;
	return pgn_map_get(c->known, cs->key);
}

/* ---- watchers -------------------------------------------------------------- */

static void
fire(struct caps *c, struct pgn_session *s, const char *old,
     const char *features)
{
	for (struct watcher *w = c->watchers; w != NULL; w = w->next)
		w->fn(s, old, features, w->arg);
}

struct woken {
	const char *key;
	uint64_t *ids;
	size_t n, cap;
	int nomem;
};

static int
collect_waiting(const char *key, uint64_t id, void *value, void *arg)
{
	struct woken *wk = arg;
	const struct wait *w = value;
	(void)key;
	if (strcmp(w->key, wk->key) != 0 || wk->nomem)
		return 0;
	if (wk->n == wk->cap) {
		size_t cap = wk->cap ? wk->cap * 2 : 8;
		uint64_t *v = realloc(wk->ids, cap * sizeof(*v));
		if (v == NULL) {
			wk->nomem = 1;
			return 0;
		}
		wk->ids = v;
		wk->cap = cap;
	}
	wk->ids[wk->n++] = id;
	return 0;
}

/* key's features are known now: the sessions waiting for them are told
 * (those still there with those caps). */
static void
wake(struct caps *c, const char *key, const char *features)
{
	struct woken wk = { .key = key };
	const char **olds;

	pgn_map_foreach(c->waiting, collect_waiting, &wk);
	olds = calloc(wk.n + 1, sizeof(*olds));
	for (size_t i = 0; i < wk.n; i++) {
		struct wait *w = pgn_map_del_id(c->waiting, wk.ids[i]);
		if (olds != NULL)
			olds[i] = w->old;
		wait_free(w);
	}
	for (size_t i = 0; olds != NULL && i < wk.n; i++) {
		struct pgn_session *s =
			pgn_session_find(pgn_module_server(c->m), wk.ids[i]);
		const struct csess *cs =
			s != NULL ? pgn_session_get_data(s, c->m) : NULL;
		if (cs != NULL && cs->key != NULL &&
		    strcmp(cs->key, key) == 0 && pgn_session_available(s) &&
		    (olds[i] == NULL || strcmp(olds[i], features) != 0))
			fire(c, s, olds[i], features);
	}
	free(olds);
	free(wk.ids);
}

/* ---- clients' caps: asking ----------------------------------------------- */

static void answered(const struct pgn_stanza *reply, const char *condition,
		     void *arg);

static void
send_query(struct caps *c, struct pgn_session *s, const struct csess *cs)
{
	const struct pgn_jid *jid = pgn_session_jid(s);
	struct pending *p = NULL;
	struct pgn_xml *q = NULL;
	char *node = NULL;

	if (pgn_map_count(c->pending) >= MAX_PENDING || jid == NULL)
		goto fail;
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->key = strdup(cs->key)) == NULL ||
	    (p->jid = strdup(jid->full)) == NULL ||
	    (p->ver = strdup(cs->ver)) == NULL ||
	    (node = malloc(strlen(cs->node) + strlen(cs->ver) + 2)) == NULL)
		goto fail;
	p->c = c;
	p->session = pgn_session_id(s);
	p->md = caps_md(cs->hash);
	sprintf(node, "%s#%s", cs->node, cs->ver);
	if ((q = pgn_xml_new(NS_INFO, "query")) == NULL ||
	    pgn_xml_set_attr(q, "node", node) != 0)
		goto fail;
	pgn_log(PGN_LOG_DEBUG, "session %llu: mod_caps: asking %s for %s",
		(unsigned long long)p->session, p->jid, node);
	free(node);
	node = NULL;
	if (pgn_send_iq(c->m, pgn_host_name(pgn_module_host(c->m)), p->jid,
			"get", q, QUERY_TIMEOUT_MS, answered, p,
			&p->handle) < 0) { /* takes q */
		q = NULL;
		goto fail;
	}
	q = NULL;
	if (pgn_map_set_id(c->pending, p->handle, p) != 0) {
		pgn_iq_cancel(c->m, p->handle);
		goto fail;
	}
	return;
fail:
	pgn_xml_free(q);
	free(node);
	pgn_map_del(c->inflight, cs->key);
	pending_free(p);
}

struct lookup {
	struct caps *c;
	char *key;
};

static void
looked_up(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct lookup *l = arg;
	struct caps *c = l->c;
	struct pgn_session *s;
	const char *features;
	const struct csess *cs;

	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_caps: lookup failed: %s",
			res->errmsg);
		pgn_map_del(c->inflight, l->key);
		goto out;
	}
	features = res->nrows > 0 ? pgn_store_value(res, 0, 0) : NULL;
	if (features != NULL) {
		remember(c, l->key, features);
		pgn_map_del(c->inflight, l->key);
		wake(c, l->key, features);
		goto out;
	}
	/* Unknown: ask the client, if it is still there with those caps. */
	s = pgn_session_find(pgn_module_server(c->m), owner);
	cs = s != NULL ? pgn_session_get_data(s, c->m) : NULL;
	if (cs == NULL || cs->key == NULL || strcmp(cs->key, l->key) != 0) {
		pgn_map_del(c->inflight, l->key);
		goto out;
	}
	send_query(c, s, cs);
out:
	free(l->key);
	free(l);
}

static void
start_lookup(struct caps *c, struct pgn_session *s, const struct csess *cs)
{
	struct lookup *l = calloc(1, sizeof(*l));
	const char *params[2] = { cs->hash, cs->ver };

	if (l == NULL || (l->key = strdup(cs->key)) == NULL ||
	    pgn_map_set(c->inflight, cs->key, c) != 0)
		goto fail;
	l->c = c;
	if (pgn_store_query(pgn_server_store(pgn_module_server(c->m)),
			    "SELECT features FROM caps WHERE hash = $1 AND "
			    "ver = $2",
			    2, params, pgn_session_id(s), looked_up, l) < 0) {
		pgn_map_del(c->inflight, cs->key);
		goto fail;
	}
	return;
fail:
	if (l != NULL)
		free(l->key);
	free(l);
}

static int
same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	       (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static struct csess *
csess_new(const char *node, const char *ver, const char *hash)
{
	struct csess *cs = calloc(1, sizeof(*cs));
	if (cs == NULL || (cs->node = strdup(node)) == NULL ||
	    (cs->ver = strdup(ver)) == NULL ||
	    (hash != NULL && (cs->hash = strdup(hash)) == NULL))
		goto fail;
	if (caps_md(hash) != NULL) {
		cs->key = malloc(strlen(hash) + strlen(ver) + 2);
		if (cs->key == NULL)
			goto fail;
		sprintf(cs->key, "%s/%s", hash, ver);
	}
	return cs;
fail:
	csess_free(cs);
	return NULL;
}

/* Modifier (60): reads the caps of the client's available presence and
 * never stops it. */
static int
on_presence(struct pgn_event *ev, void *arg)
{
	struct caps *c = arg;
	struct pgn_session *s = ev->origin;
	struct pgn_xml *el;
	const char *node, *ver, *hash, *old, *now;
	struct csess *cs;
	struct wait *w;
	int had_caps;

	if (s == NULL || ev->stanza->type != NULL)
		return PGN_EVENT_PASS;
	if ((el = pgn_xml_child(ev->stanza->xml, NS_CAPS, "c")) == NULL)
		return PGN_EVENT_PASS;
	node = pgn_xml_attr(el, "node");
	ver = pgn_xml_attr(el, "ver");
	hash = pgn_xml_attr(el, "hash");
	if (node == NULL || ver == NULL || node[0] == '\0' || ver[0] == '\0' ||
	    strlen(node) > MAX_NODE_LEN || strlen(ver) > MAX_VER_LEN ||
	    (hash != NULL && strlen(hash) > MAX_HASH_LEN))
		return PGN_EVENT_PASS;
	cs = pgn_session_get_data(s, c->m);
	if (cs != NULL && strcmp(cs->node, node) == 0 &&
	    strcmp(cs->ver, ver) == 0 && same(cs->hash, hash))
		return PGN_EVENT_PASS; /* unchanged */
	/* Cached features are never freed (remember() only adds): old
	 * stays valid.  A session with caps before is not at its initial
	 * presence. */
	had_caps = cs != NULL;
	old = had_caps ? caps_session_features(c, s) : NULL;
	wait_free(pgn_map_del_id(c->waiting, pgn_session_id(s)));
	if ((cs = csess_new(node, ver, hash)) == NULL ||
	    pgn_session_set_data(s, c->m, cs, csess_free) != 0) {
		csess_free(cs);
		return PGN_EVENT_PASS;
	}
	if (cs->key == NULL) {
		pgn_log(PGN_LOG_DEBUG,
			"session %llu: mod_caps: caps without a supported "
			"hash, not verified",
			(unsigned long long)pgn_session_id(s));
		return PGN_EVENT_PASS;
	}
	if ((now = caps_session_features(c, s)) != NULL) {
		pgn_log(PGN_LOG_DEBUG, "session %llu: mod_caps: %s known",
			(unsigned long long)pgn_session_id(s), cs->key);
		if (had_caps && (old == NULL || strcmp(old, now) != 0))
			fire(c, s, old, now);
		return PGN_EVENT_PASS;
	}
	if ((w = calloc(1, sizeof(*w))) != NULL &&
	    ((w->key = strdup(cs->key)) == NULL ||
	     pgn_map_set_id(c->waiting, pgn_session_id(s), w) != 0))
		wait_free(w);
	else if (w != NULL)
		w->old = old;
	if (pgn_map_get(c->inflight, cs->key) == NULL)
		start_lookup(c, s, cs);
	return PGN_EVENT_PASS;
}

static void
cache_verified(struct caps *c, const struct pending *p, const char *features)
{
	const char *hash = strchr(p->key, '/');
	char *h = strndup(p->key, (size_t)(hash - p->key));
	const char *params[3] = { h, p->ver, features };

	remember(c, p->key, features);
	if (h == NULL)
		return;
	/* Fire and forget: the store logs a failure, and the memory cache
	 * already has it. */
	if (pgn_store_query(pgn_server_store(pgn_module_server(c->m)),
			    "INSERT INTO caps (hash, ver, features) VALUES "
			    "($1, $2, $3) ON CONFLICT (hash, ver) DO NOTHING",
			    3, params, 0, NULL, NULL) < 0)
		pgn_log(PGN_LOG_WARN, "mod_caps: cannot store %s", p->key);
	free(h);
}

/* The answer to one of our queries (or its timeout). */
static void
answered(const struct pgn_stanza *reply, const char *condition, void *arg)
{
	struct pending *p = arg;
	struct caps *c = p->c;
	struct pgn_xml *q;
	char *features = NULL;
	char ver[VER_BUF];
	int rc;

	pgn_map_del_id(c->pending, p->handle);
	pgn_map_del(c->inflight, p->key);
	if (reply == NULL || condition != NULL ||
	    (q = pgn_xml_child(reply->xml, NS_INFO, "query")) == NULL) {
		pgn_log(PGN_LOG_DEBUG, "mod_caps: %s gave no disco#info (%s)",
			p->jid, condition != NULL ? condition : "empty");
		goto out;
	}
	rc = caps_ver(q, p->md, ver, &features);
	if (rc < 0 || strcmp(ver, p->ver) != 0) {
		/* §5.4: not cached; the next client with this ver is
		 * asked again. */
		pgn_log(PGN_LOG_INFO,
			"mod_caps: disco#info of %s does not match %s (%s)",
			p->jid, p->key,
			rc == -EINVAL ? "ill-formed" : "hash differs");
		goto out;
	}
	cache_verified(c, p, features);
	pgn_log(PGN_LOG_INFO, "mod_caps: verified %s from %s", p->key, p->jid);
	wake(c, p->key, features);
out:
	free(features);
	pending_free(p);
}

struct drop {
	struct caps *c;
	uint64_t session;
};

static int
drop_pending(const char *key, uint64_t id, void *value, void *arg)
{
	struct drop *d = arg;
	struct pending *p = value;
	(void)key;
	if (p->session != d->session)
		return 0;
	pgn_iq_cancel(d->c->m, p->handle);
	pgn_map_del_id(d->c->pending, id);
	pgn_map_del(d->c->inflight, p->key);
	pending_free(p);
	return 0;
}

/* A client that leaves unanswered frees its query, so that the next
 * client with those caps is asked. */
static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct drop d = { arg, pgn_session_id(ev->origin) };
	pgn_map_foreach(d.c->pending, drop_pending, &d);
	wait_free(pgn_map_del_id(d.c->waiting, d.session));
	return PGN_EVENT_PASS;
}

/* ---- module -------------------------------------------------------------- */


static void
free_pending_value(void *value)
{
	pending_free(value);
}

static void
caps_free(struct caps *c)
{
	if (c == NULL)
		return;
	pgn_map_free_values(c->known, free);
	pgn_map_free_values(c->pending, free_pending_value);
	pgn_map_free(c->inflight);
	pgn_map_free_values(c->waiting, wait_free);
	while (c->watchers != NULL) {
		struct watcher *w = c->watchers;
		c->watchers = w->next;
		free(w);
	}
	free(c);
}

/* The "caps" service (pigeon/caps.h). */
static const char *
svc_session_features(void *instance, const struct pgn_session *s)
{
	return caps_session_features(instance, s);
}

static int
svc_watch(void *instance, struct pgn_module *m, pgn_caps_watch_fn fn,
	  void *arg)
{
	struct caps *c = instance;
	struct watcher *w = calloc(1, sizeof(*w)), **p = &c->watchers;
	if (w == NULL)
		return -ENOMEM;
	w->m = m;
	w->fn = fn;
	w->arg = arg;
	while (*p != NULL)
		p = &(*p)->next;
	*p = w;
	return 0;
}

static void
svc_unwatch(void *instance, struct pgn_module *m)
{
	struct caps *c = instance;
	struct watcher **p = &c->watchers;
	while (*p != NULL) {
		struct watcher *w = *p;
		if (w->m == m) {
			*p = w->next;
			free(w);
		} else {
			p = &w->next;
		}
	}
}

static const struct pgn_caps_service caps_service = {
	.session_features = svc_session_features,
	.watch = svc_watch,
	.unwatch = svc_unwatch,
};

static int
caps_load(struct pgn_module *m)
{
	struct caps *c = calloc(1, sizeof(*c));
	int rc = -ENOMEM;

	if (c == NULL)
		return -ENOMEM;
	c->m = m;
	c->node = pgn_module_opt_str(m, "node");
	c->cache_size = (unsigned long)pgn_module_opt_int(m, "cache_size");
	if (c->node[0] == '\0' || strchr(c->node, '#') != NULL) {
		pgn_log(PGN_LOG_ERROR, "mod_caps: node must be a URI without "
				       "'#'");
		rc = -EINVAL;
		goto fail;
	}
	rc = -ENOMEM;
	if ((c->known = pgn_map_new()) == NULL ||
	    (c->inflight = pgn_map_new()) == NULL ||
	    (c->pending = pgn_map_new()) == NULL ||
	    (c->waiting = pgn_map_new()) == NULL)
		goto fail;
	pgn_module_set_data(m, c);
	if ((rc = pgn_module_provide(m, PGN_CAPS_SERVICE, &caps_service, c)) <
	    0)
		goto fail;
	return 0;
fail:
	pgn_module_set_data(m, NULL);
	caps_free(c);
	return rc;
}

static void
caps_unload(struct pgn_module *m)
{
	caps_free(pgn_module_data(m));
}

static const struct pgn_module_opt caps_options[] = {
	{ .name = "node", .type = PGN_OPT_STRING,
	  .def = "https://pigeon.invalid/caps",
	  .doc = "the server's caps node (a URI without '#')" },
	{ .name = "cache_size", .type = PGN_OPT_INT, .def = "10000", .min = 0,
	  .max = MAX_CACHE_SIZE, .doc = "verified caps kept in memory" },
	{ .name = NULL },
};

static const struct pgn_module_hook_def caps_hooks[] = {
	{"stream-features", on_features, PGN_PRIO_HANDLER},
	/* Before mod_disco (a handler), which knows no nodes. */
	{"iq-get/host/" NS_INFO ":query", on_disco_node, PGN_PRIO_OBSERVER},
	{"pre-presence/self", on_presence, PGN_PRIO_INSPECT},
	{"session-ended", on_session_ended, PGN_PRIO_HANDLER},
	{NULL, NULL, 0},
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_caps",
	.description = "Entity capabilities (XEP-0115)",
	.options = caps_options,
	.hooks = caps_hooks,
	.load = caps_load,
	.unload = caps_unload,
};
