/* XEP-0402 bookmarks <-> XEP-0048 storage:bookmarks: the conversions of
 * mod_private's bridge (mod_private.c, "Bookmarks"), kept apart so that
 * tests/unit/test_bookmarks.c can check them.  No I/O here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bookmarks.h"

static int
truthy(const char *v)
{
	return v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

int
bm_is(const struct pgn_xml *e, const char *ns, const char *name)
{
	const char *ens = pgn_xml_ns(e);
	return ens != NULL && strcmp(ens, ns) == 0 &&
	       strcmp(pgn_xml_name(e), name) == 0;
}

/* Copies the <nick/> and <password/> of from (namespace from_ns) to to
 * (namespace to_ns), text only: the two specs give them the same
 * meaning in their own namespaces.  0 or -ENOMEM. */
static int
copy_nick_password(struct pgn_xml *to, const char *to_ns,
		   const struct pgn_xml *from, const char *from_ns)
{
	static const char *const names[2] = { "nick", "password" };

	for (size_t i = 0; i < 2; i++) {
		struct pgn_xml *e = pgn_xml_child(from, from_ns, names[i]);
		struct pgn_xml *c;
		char *t;
		int rc = -ENOMEM;

		if (e == NULL)
			continue;
		if ((c = pgn_xml_add_child(to, to_ns, names[i])) != NULL &&
		    (t = pgn_xml_text(e)) != NULL) {
			rc = pgn_xml_add_text(c, t, strlen(t));
			free(t);
		}
		if (rc != 0)
			return -ENOMEM;
	}
	return 0;
}

/* A legacy <conference jid=.../> as the XEP-0402 item
 *   <item id=jid><conference xmlns=NS_BM name autojoin><nick/><password/>
 *   <extensions>(any other child)</extensions></conference></item>
 * (pubsub namespace; caller frees).  NULL: no jid (*nomem 0) or out of
 * memory (*nomem 1). */
struct pgn_xml *
bm_item_from_legacy(const struct pgn_xml *lc, int *nomem)
{
	const char *jid = pgn_xml_attr(lc, "jid");
	const char *name = pgn_xml_attr(lc, "name");
	struct pgn_xml *item, *c, *ext = NULL;

	*nomem = 0;
	if (jid == NULL || jid[0] == '\0')
		return NULL;
	*nomem = 1;
	if ((item = pgn_xml_new(NS_PUBSUB, "item")) == NULL ||
	    pgn_xml_set_attr(item, "id", jid) != 0 ||
	    (c = pgn_xml_add_child(item, NS_BM, "conference")) == NULL ||
	    (name != NULL && pgn_xml_set_attr(c, "name", name) != 0) ||
	    (truthy(pgn_xml_attr(lc, "autojoin")) &&
	     pgn_xml_set_attr(c, "autojoin", "true") != 0))
		goto fail;
	/* XEP-0402's schema: nick, password, extensions, in that order. */
	if (copy_nick_password(c, NS_BM, lc, NS_BM_LEGACY) != 0)
		goto fail;
	for (struct pgn_xml *e = pgn_xml_first_child(lc); e != NULL;
	     e = pgn_xml_next(e)) {
		struct pgn_xml *copy;
		if (bm_is(e, NS_BM_LEGACY, "nick") ||
		    bm_is(e, NS_BM_LEGACY, "password"))
			continue;
		if (ext == NULL &&
		    (ext = pgn_xml_add_child(c, NS_BM, "extensions")) == NULL)
			goto fail;
		if ((copy = pgn_xml_copy(e)) == NULL)
			goto fail;
		pgn_xml_append(ext, copy);
	}
	*nomem = 0;
	return item;
fail:
	pgn_xml_free(item);
	return NULL;
}

/* The XEP-0402 item as a legacy <conference/> (caller frees); NULL when
 * it is no bookmark (*nomem 0) or out of memory (*nomem 1). */
struct pgn_xml *
bm_legacy_from_item(const struct pgn_xml *item, int *nomem)
{
	const char *jid = pgn_xml_attr(item, "id");
	struct pgn_xml *c = pgn_xml_child(item, NS_BM, "conference");
	struct pgn_xml *lc, *ext;
	const char *name;

	*nomem = 0;
	if (jid == NULL || c == NULL)
		return NULL;
	*nomem = 1;
	name = pgn_xml_attr(c, "name");
	if ((lc = pgn_xml_new(NS_BM_LEGACY, "conference")) == NULL ||
	    pgn_xml_set_attr(lc, "jid", jid) != 0 ||
	    (name != NULL && pgn_xml_set_attr(lc, "name", name) != 0) ||
	    pgn_xml_set_attr(lc, "autojoin",
			     truthy(pgn_xml_attr(c, "autojoin")) ? "true"
								  : "false"))
		goto fail;
	if (copy_nick_password(lc, NS_BM_LEGACY, c, NS_BM) != 0)
		goto fail;
	ext = pgn_xml_child(c, NS_BM, "extensions");
	for (struct pgn_xml *e = ext != NULL ? pgn_xml_first_child(ext) : NULL;
	     e != NULL; e = pgn_xml_next(e)) {
		struct pgn_xml *copy = pgn_xml_copy(e);
		if (copy == NULL)
			goto fail;
		pgn_xml_append(lc, copy);
	}
	*nomem = 0;
	return lc;
fail:
	pgn_xml_free(lc);
	return NULL;
}

/* An existing item in the form bm_item_from_legacy would give it, as
 * text, to tell "unchanged" whatever attribute spelling the client used
 * (caller frees); NULL: not a bookmark, or out of memory. */
char *
bm_canonical(const struct pgn_xml *item)
{
	int nomem;
	struct pgn_xml *lc = bm_legacy_from_item(item, &nomem), *again;
	char *s = NULL;

	if (lc == NULL)
		return NULL;
	if ((again = bm_item_from_legacy(lc, &nomem)) != NULL)
		s = pgn_xml_to_string(again, NS_PUBSUB);
	pgn_xml_free(again);
	pgn_xml_free(lc);
	return s;
}

/* XEP-0402 §"Publishing": the node's options, as publish-options. */
struct pgn_xml *
bm_options(void)
{
	static const char *const fields[][2] = {
		{ "FORM_TYPE",
		  "http://jabber.org/protocol/pubsub#publish-options" },
		{ "pubsub#persist_items", "true" },
		{ "pubsub#max_items", "max" },
		{ "pubsub#send_last_published_item", "never" },
		{ "pubsub#access_model", "whitelist" },
	};
	struct pgn_xml *x = pgn_xml_new(NS_XDATA, "x"), *f, *v;

	if (x == NULL || pgn_xml_set_attr(x, "type", "submit") != 0)
		goto fail;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if ((f = pgn_xml_add_child(x, NS_XDATA, "field")) == NULL ||
		    pgn_xml_set_attr(f, "var", fields[i][0]) != 0 ||
		    (i == 0 && pgn_xml_set_attr(f, "type", "hidden") != 0) ||
		    (v = pgn_xml_add_child(f, NS_XDATA, "value")) == NULL ||
		    pgn_xml_add_text(v, fields[i][1], strlen(fields[i][1])) != 0)
			goto fail;
	}
	return x;
fail:
	pgn_xml_free(x);
	return NULL;
}

/* The wanted items (one per room, first one wins), in *out (caller
 * frees each); 0 or -ENOMEM. */
int
bm_wanted(const struct pgn_xml *legacy, struct pgn_xml **out, size_t *n)
{
	*n = 0;
	for (struct pgn_xml *st = pgn_xml_first_child(legacy); st != NULL;
	     st = pgn_xml_next(st)) {
		if (!bm_is(st, NS_BM_LEGACY, "storage"))
			continue;
		for (struct pgn_xml *lc = pgn_xml_first_child(st); lc != NULL;
		     lc = pgn_xml_next(lc)) {
			struct pgn_xml *item;
			const char *id;
			size_t j;
			int nomem;

			if (!bm_is(lc, NS_BM_LEGACY, "conference"))
				continue;
			if (*n == MAX_BOOKMARKS)
				return 0;
			if ((item = bm_item_from_legacy(lc, &nomem)) == NULL) {
				if (nomem)
					return -ENOMEM;
				continue;
			}
			id = pgn_xml_attr(item, "id");
			for (j = 0; j < *n; j++)
				if (strcmp(pgn_xml_attr(out[j], "id"), id) == 0)
					break;
			if (j < *n) {
				pgn_xml_free(item);
				continue;
			}
			out[(*n)++] = item;
		}
	}
	return 0;
}

/* Whether existing (the node's items) holds wanted unchanged. */
int
bm_unchanged(const struct pgn_xml *wanted, size_t n,
	     const struct pgn_xml *const *existing)
{
	const char *id = pgn_xml_attr(wanted, "id");
	char *a, *b;
	int same;

	for (size_t i = 0; i < n; i++) {
		const char *eid = pgn_xml_attr(existing[i], "id");
		if (eid == NULL || strcmp(eid, id) != 0)
			continue;
		a = pgn_xml_to_string(wanted, NS_PUBSUB);
		b = bm_canonical(existing[i]);
		same = a != NULL && b != NULL && strcmp(a, b) == 0;
		free(a);
		free(b);
		return same;
	}
	return 0;
}

