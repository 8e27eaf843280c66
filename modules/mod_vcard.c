/* XEP-0054 vcard-temp and XEP-0153 vCard-based avatars, and the XEP-0398
 * bridge to XEP-0084 PEP avatars.
 *
 * Every account has at most one vCard, stored serialised with the SHA-1
 * of its decoded PHOTO/BINVAL in the store's per-user key-value store
 * (pgn_kv_*, namespace "vcard", keys "vcard" and "photo_hash").  Anyone
 * may read a user's vCard; only the user sets it.
 * The photo hash is also kept in each of the user's sessions (loaded when
 * the session starts, refreshed on every set) so that the presence the
 * user sends can carry the right hash (XEP-0153 §3.1) without waiting for
 * the store.
 *
 * No vCard: the owner gets an empty <vCard/> (XEP-0054 §3.1 allows it,
 * and clients then simply show nothing), anybody else item-not-found
 * (§3.3 requires an error; item-not-found does not tell whether the
 * account exists).
 *
 * With mod_pep on the host (the "pep" service of pigeon/pep.h, looked up
 * when first needed: mod_pep may load after this module or not at all),
 * the XEP-0398 bridge ("PEP avatars" below): a PEP avatar (XEP-0084)
 * becomes the vCard's PHOTO and every session's hash, a vCard PHOTO
 * becomes a PEP avatar.  Without mod_pep nothing of it runs.
 *
 * Options: max_size (bytes, default 65536): largest vCard accepted,
 * counted on its serialised form, i.e. what is stored and sent back; it
 * also bounds the PEP avatar copied into the vCard.  pep_conversion
 * (default true): the XEP-0398 bridge. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "pigeon/base64.h"
#include "pigeon/log.h"
#include "pigeon/module.h"
#include "pigeon/pep.h"
#include "pigeon/store.h"

#define NS_VCARD "vcard-temp"
#define NS_VCARD_UPDATE "vcard-temp:x:update"
#define NS_AVATAR_DATA "urn:xmpp:avatar:data"
#define NS_AVATAR_META "urn:xmpp:avatar:metadata"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_CONVERSION "urn:xmpp:pep-vcard-conversion:0"
/* Our namespace and keys in the key-value store. */
#define KV_NS "vcard"
#define KEY_VCARD "vcard"
#define KEY_HASH "photo_hash"

#define MAX_MAX_SIZE (16L * 1024 * 1024)
#define HASH_HEX_LEN 40

struct vcard {
	struct pgn_module *m;
	size_t max_size;
	int conversion; /* option pep_conversion */
	/* The "pep" service once found and watched (avatar.c below); valid
	 * while both modules are loaded. */
	const struct pgn_pep_service *pep;
	void *pep_inst;
};

/* Per session: the account's stored photo hash. */
struct vsess {
	int loaded;                  /* 0 until the store answered */
	char hash[HASH_HEX_LEN + 1]; /* "" when the vCard has no photo */
};

/* ---- photo hash (XEP-0153 §3.1: SHA-1 of the image, not of base64) ------- */

/* XEP-0153 §3.1 and XEP-0084 §4.2 use the same id: the lowercase hex
 * SHA-1 of the image bytes.  0 or -ENOMEM. */
static int
sha1_hex(const unsigned char *img, size_t len, char hex[HASH_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (EVP_Digest(img, len, md, &mdlen, EVP_sha1(), NULL) != 1 ||
	    mdlen * 2 > HASH_HEX_LEN)
		return -ENOMEM;
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* Fills hex with the lowercase SHA-1 of the vCard's decoded PHOTO/BINVAL,
 * or "" when there is none (no BINVAL, or one with only whitespace).
 * Whitespace in the base64 is skipped (XEP-0153 §4.6: clients wrap it in
 * lines); anything else that is not canonical base64 is refused.  When
 * img is not NULL it receives the decoded image (caller frees; NULL
 * without a photo) and *imglen its length.  0, -EINVAL (not base64) or
 * -ENOMEM. */
static int
photo_decode(const struct pgn_xml *vcard, char hex[HASH_HEX_LEN + 1],
	     unsigned char **imgp, size_t *imglenp)
{
	struct pgn_xml *photo = pgn_xml_child(vcard, NS_VCARD, "PHOTO");
	struct pgn_xml *binval =
		photo != NULL ? pgn_xml_child(photo, NS_VCARD, "BINVAL") : NULL;
	unsigned char *img = NULL;
	size_t imglen = 0;
	char *text;
	int rc;

	hex[0] = '\0';
	if (imgp != NULL)
		*imgp = NULL;
	if (binval == NULL)
		return 0;
	if ((text = pgn_xml_text(binval)) == NULL)
		return -ENOMEM;
	rc = pgn_base64_decode_ws(text, strlen(text), &img, &imglen);
	free(text);
	if (rc < 0 || imglen == 0)
		goto out;
	if ((rc = sha1_hex(img, imglen, hex)) < 0)
		goto out;
	if (imgp != NULL) {
		*imgp = img;
		*imglenp = imglen;
		img = NULL;
	}
out:
	free(img);
	return rc;
}

/* XEP-0084 §4.2.1 requires a type; the vCard may have none. */
static const char *
image_type(const unsigned char *p, size_t n)
{
	if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
		return "image/png";
	if (n >= 3 && memcmp(p, "\xff\xd8\xff", 3) == 0)
		return "image/jpeg";
	if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 ||
		       memcmp(p, "GIF89a", 6) == 0))
		return "image/gif";
	if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
		return "image/webp";
	return "image/png"; /* the format XEP-0084 §4.2.1 makes mandatory */
}

/* A copy of the MIME type s without surrounding whitespace (caller
 * frees), or NULL when s is NULL, empty, implausibly long, or memory is
 * short (the type is then guessed). */
static char *
type_dup(const char *s)
{
	size_t n;

	if (s == NULL)
		return NULL;
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' ||
			 s[n - 1] == '\r' || s[n - 1] == '\n'))
		n--;
	return n > 0 && n <= 64 ? strndup(s, n) : NULL;
}

static void
error_now(struct pgn_event *ev, const char *type, const char *cond,
	  const char *text)
{
	struct pgn_stanza *r =
		pgn_stanza_error_reply(ev->stanza, type, cond, text);
	if (r != NULL)
		pgn_event_route(ev, r);
}

/* ---- get ----------------------------------------------------------------- */

struct get_req {
	struct vcard *vc;
	struct pgn_hold *hold;
	int own; /* the requester asks for its own vCard */
};

static void
got_vcard(uint64_t owner, void *arg, int err, const char *data)
{
	struct get_req *g = arg;
	struct pgn_xml *wrap = NULL, *vcard;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_vcard: loading a vCard failed: %s",
			strerror(-err));
		pgn_hold_answer(g->hold, NULL, "wait", "internal-server-error",
				NULL);
		goto out;
	}
	if (data == NULL) {
		if (g->own)
			pgn_hold_answer(g->hold, pgn_xml_new(NS_VCARD, "vCard"),
					NULL, NULL, NULL);
		else
			pgn_hold_answer(g->hold, NULL, "cancel",
					"item-not-found", NULL);
		goto out;
	}
	wrap = pgn_xml_new(NULL, "wrap");
	if (wrap == NULL || pgn_xml_parse_into(wrap, data, strlen(data)) != 0 ||
	    (vcard = pgn_xml_first_child(wrap)) == NULL) {
		pgn_log(PGN_LOG_WARN,
			"mod_vcard: a stored vCard does not parse");
		pgn_hold_answer(g->hold, NULL, "wait", "internal-server-error",
				NULL);
		goto out;
	}
	pgn_xml_unlink(vcard);
	pgn_hold_answer(g->hold, vcard, NULL, NULL, NULL);
out:
	pgn_xml_free(wrap);
	free(g);
}

static int
on_get(struct pgn_event *ev, void *arg)
{
	struct vcard *vc = arg;
	struct pgn_stanza *st = ev->stanza;
	struct get_req *g = calloc(1, sizeof(*g));

	if (g == NULL || (g->hold = pgn_event_hold(ev)) == NULL) {
		free(g);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	g->vc = vc;
	g->own = st->from != NULL && strcmp(st->from->bare, st->to->bare) == 0;
	if (pgn_kv_get(pgn_server_store(ev->server), KV_NS, st->to->domain,
		       st->to->node, KEY_VCARD, 0, got_vcard, g) < 0) {
		pgn_hold_answer(g->hold, NULL, "wait", "internal-server-error",
				NULL);
		free(g);
	}
	return PGN_EVENT_HANDLED;
}

/* The server's own vCard: empty, the host describes itself in disco. */
static int
on_get_host(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *v = pgn_xml_new(NS_VCARD, "vCard");
	(void)arg;
	if (v == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, v);
	return PGN_EVENT_HANDLED;
}

/* ---- the "pep" service ------------------------------------------------- */

static void on_avatar_meta(const char *user, const char *node,
			   const char *item_id, const struct pgn_xml *item,
			   void *arg);

/* The "pep" service, watched the first time it is found, or NULL without
 * mod_pep (or with pep_conversion off).  Looked up when needed rather
 * than in load: mod_pep may load after this module.  Sessions start only
 * once every module is loaded, so the first session-started settles it. */
static const struct pgn_pep_service *
pep_lookup(struct vcard *vc)
{
	const struct pgn_pep_service *pep;
	void *inst = NULL;

	if (!vc->conversion)
		return NULL;
	if (vc->pep != NULL)
		return vc->pep;
	pep = pgn_host_service(pgn_module_host(vc->m), PGN_PEP_SERVICE, &inst);
	if (pep == NULL)
		return NULL;
	if (pep->watch(inst, vc->m, NS_AVATAR_META, on_avatar_meta, vc) < 0)
		return NULL; /* out of memory: tried again next time */
	/* XEP-0398 §2: on the account, now that the conversion runs. */
	if (pgn_module_add_account_feature(vc->m, NS_CONVERSION) < 0)
		pgn_log(PGN_LOG_WARN, "mod_vcard: cannot announce %s",
			NS_CONVERSION);
	vc->pep = pep;
	vc->pep_inst = inst;
	return pep;
}

/* ---- set ----------------------------------------------------------------- */

struct set_req {
	struct vcard *vc;
	struct pgn_hold *hold;
	char *bare;
	char hash[HASH_HEX_LEN + 1];
	/* For the PEP copy (XEP-0398 §3.2): the decoded image (NULL: no
	 * photo) and its PHOTO/TYPE (NULL: none given). */
	unsigned char *img;
	size_t imglen;
	char *type;
	int publish; /* the photo changed: copy it to PEP */
};

static void
set_req_free(struct set_req *sr)
{
	if (sr == NULL)
		return;
	free(sr->bare);
	free(sr->img);
	free(sr->type);
	free(sr);
}

static void
set_session_hash(struct pgn_session *s, struct vcard *vc, const char *hash)
{
	struct vsess *vs = pgn_session_get_data(s, vc->m);
	if (vs == NULL)
		return; /* the load at session start failed: stay neutral */
	snprintf(vs->hash, sizeof(vs->hash), "%s", hash);
	vs->loaded = 1;
}

/* Every session of the account advertises hash from now on (XEP-0153
 * §3.1), before the client's next presence. */
static void
set_user_hash(struct vcard *vc, const char *bare, const char *hash)
{
	struct pgn_server *srv = pgn_module_server(vc->m);

	for (struct pgn_session *s = pgn_user_sessions(srv, bare); s != NULL;
	     s = pgn_session_next(s))
		set_session_hash(s, vc, hash);
}

static void vcard_to_pep(struct set_req *sr);

static void
stored_vcard(uint64_t owner, void *arg, int err)
{
	struct set_req *sr = arg;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_vcard: storing the vCard of %s "
				      "failed: %s",
			sr->bare, strerror(-err));
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
		set_req_free(sr);
		return;
	}
	set_user_hash(sr->vc, sr->bare, sr->hash);
	pgn_log(PGN_LOG_DEBUG, "mod_vcard: stored the vCard of %s (photo %s)",
		sr->bare, sr->hash[0] != '\0' ? sr->hash : "none");
	if (sr->publish) {
		vcard_to_pep(sr); /* answers and frees */
		return;
	}
	pgn_hold_answer(sr->hold, NULL, NULL, NULL, NULL);
	set_req_free(sr);
}

static int
on_set(struct pgn_event *ev, void *arg)
{
	struct vcard *vc = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *vcard = pgn_xml_first_child(st->xml);
	struct set_req *sr = NULL;
	struct vsess *vs;
	char *data = NULL;
	char text[96];
	static const char *const keys[2] = { KEY_VCARD, KEY_HASH };
	const char *values[2];
	int rc;

	/* XEP-0054 §3.2: only the account itself. */
	if (st->from == NULL || strcmp(st->from->bare, st->to->bare) != 0) {
		pgn_event_error(ev, "auth", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	if ((data = pgn_xml_to_string(vcard, PGN_NS_CLIENT)) == NULL)
		goto nomem;
	if (strlen(data) > vc->max_size) {
		snprintf(text, sizeof(text), "the vCard exceeds %zu bytes",
			 vc->max_size);
		error_now(ev, "modify", "not-acceptable", text);
		free(data);
		return PGN_EVENT_HANDLED;
	}
	if ((sr = calloc(1, sizeof(*sr))) == NULL ||
	    (sr->bare = strdup(st->to->bare)) == NULL)
		goto nomem;
	rc = photo_decode(vcard, sr->hash, &sr->img, &sr->imglen);
	if (rc == -EINVAL) {
		error_now(ev, "modify", "bad-request",
			  "PHOTO/BINVAL is not base64");
		set_req_free(sr);
		free(data);
		return PGN_EVENT_HANDLED;
	}
	if (rc < 0)
		goto nomem;
	sr->vc = vc;
	/* Copied to PEP only when the photo changed (the stored hash, as
	 * the sender's session knows it): a client that sets its whole
	 * vCard again for a new nickname republishes nothing. */
	vs = ev->origin != NULL ? pgn_session_get_data(ev->origin, vc->m)
				: NULL;
	sr->publish = pep_lookup(vc) != NULL &&
		      (vs == NULL || !vs->loaded ?
			       sr->hash[0] != '\0' :
			       strcmp(vs->hash, sr->hash) != 0);
	if (sr->publish && sr->img != NULL) {
		struct pgn_xml *photo = pgn_xml_child(vcard, NS_VCARD, "PHOTO");
		char *t = pgn_xml_child_text(photo, NS_VCARD, "TYPE");
		sr->type = type_dup(t);
		free(t);
	}
	values[0] = data;
	values[1] = sr->hash;
	if ((sr->hold = pgn_event_hold(ev)) == NULL)
		goto nomem;
	/* Both keys in one transaction. */
	if (pgn_kv_put(pgn_server_store(ev->server), KV_NS, st->to->domain,
		       st->to->node, 2, keys, values, 0, stored_vcard,
		       sr) < 0) {
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
		set_req_free(sr);
	}
	free(data);
	return PGN_EVENT_HANDLED;
nomem:
	set_req_free(sr);
	free(data);
	pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}

/* The server's vCard is not the users' to change (XEP-0054 §3.2). */
static int
on_set_host(struct pgn_event *ev, void *arg)
{
	(void)arg;
	pgn_event_error(ev, "auth", "forbidden");
	return PGN_EVENT_HANDLED;
}

/* ---- PEP avatars (XEP-0398) ---------------------------------------------
 * vCard -> PEP (§3.2): after a set whose photo changed, the image is
 * published to urn:xmpp:avatar:data (item id: its SHA-1), then one <info/>
 * to urn:xmpp:avatar:metadata; a photo removed publishes an empty
 * <metadata/> (XEP-0084 §4.5, "avatar disabled").  The iq is answered
 * after both, so the client's next read sees them.  Nodes are created
 * with the engine's defaults (XEP-0084: presence access), an existing
 * node keeps its configuration.
 *
 * PEP -> vCard (§3.1): the watch on urn:xmpp:avatar:metadata sees every
 * publish; the <info/> without url names the data item, whose image
 * (checked against its SHA-1, bounded by max_size) replaces the vCard's
 * PHOTO, and every session's hash changes at once (XEP-0153).
 *
 * No loop: the PEP -> vCard direction writes the store only, never PEP;
 * and the watch sees this module's own metadata publish after the vCard
 * with that hash is stored, so it finds the stored hash equal and stops. */

/* <item id='id'><child xmlns='ns'/></item> in the pubsub namespace, with
 * child returned in *childp.  NULL on allocation failure. */
static struct pgn_xml *
new_item(const char *id, const char *ns, const char *name,
	 struct pgn_xml **childp)
{
	struct pgn_xml *item = pgn_xml_new(NS_PUBSUB, "item");

	if (item == NULL || (id != NULL && pgn_xml_set_attr(item, "id", id)) ||
	    (*childp = pgn_xml_add_child(item, ns, name)) == NULL) {
		pgn_xml_free(item);
		return NULL;
	}
	return item;
}

static void
published_meta(int err, void *arg)
{
	struct set_req *sr = arg;

	if (err != 0)
		pgn_log(PGN_LOG_WARN, "mod_vcard: publishing the avatar "
				      "metadata of %s failed: %s",
			sr->bare, strerror(-err));
	/* The vCard is stored whatever PEP said. */
	pgn_hold_answer(sr->hold, NULL, NULL, NULL, NULL);
	set_req_free(sr);
}

/* Publishes the metadata of sr's photo, or an empty <metadata/> when it
 * has none.  Answers and frees sr (now or in published_meta). */
static void
publish_meta(struct set_req *sr)
{
	struct vcard *vc = sr->vc;
	struct pgn_xml *item, *meta, *info;
	char bytes[32];

	item = new_item(sr->img != NULL ? sr->hash : NULL, NS_AVATAR_META,
			"metadata", &meta);
	if (item == NULL)
		goto fail;
	if (sr->img != NULL) {
		const char *type = sr->type;
		snprintf(bytes, sizeof(bytes), "%zu", sr->imglen);
		if ((info = pgn_xml_add_child(meta, NS_AVATAR_META, "info")) ==
			    NULL ||
		    pgn_xml_set_attr(info, "bytes", bytes) != 0 ||
		    pgn_xml_set_attr(info, "id", sr->hash) != 0 ||
		    pgn_xml_set_attr(info, "type",
				     type != NULL ? type
						  : image_type(sr->img,
							       sr->imglen)) != 0)
			goto fail;
	}
	if (vc->pep->publish(vc->pep_inst, sr->bare, NS_AVATAR_META, item, NULL,
			     published_meta, sr) < 0)
		goto fail;
	pgn_xml_free(item);
	return;
fail:
	pgn_xml_free(item);
	published_meta(-ENOMEM, sr);
}

static void
published_data(int err, void *arg)
{
	struct set_req *sr = arg;

	if (err != 0) {
		/* No metadata pointing at data that is not there. */
		pgn_log(PGN_LOG_WARN, "mod_vcard: publishing the avatar of %s "
				      "failed: %s",
			sr->bare, strerror(-err));
		pgn_hold_answer(sr->hold, NULL, NULL, NULL, NULL);
		set_req_free(sr);
		return;
	}
	publish_meta(sr);
}

/* The vCard of sr is stored and its photo changed: copy it to PEP.
 * Answers the set and frees sr. */
static void
vcard_to_pep(struct set_req *sr)
{
	struct vcard *vc = sr->vc;
	struct pgn_xml *item = NULL, *data;
	char *b64 = NULL;

	if (sr->img == NULL) {
		publish_meta(sr);
		return;
	}
	/* Canonical base64: the vCard's may be wrapped in lines. */
	if ((b64 = pgn_base64_encode(sr->img, sr->imglen)) == NULL ||
	    (item = new_item(sr->hash, NS_AVATAR_DATA, "data", &data)) ==
		    NULL ||
	    pgn_xml_add_text(data, b64, strlen(b64)) != 0 ||
	    vc->pep->publish(vc->pep_inst, sr->bare, NS_AVATAR_DATA, item,
			     NULL, published_data, sr) < 0) {
		free(b64);
		pgn_xml_free(item);
		published_data(-ENOMEM, sr);
		return;
	}
	free(b64);
	pgn_xml_free(item);
}

/* One PEP -> vCard conversion. */
struct conv {
	struct vcard *vc;
	char *bare;                   /* the account */
	const char *node, *domain;    /* point into split */
	char *split;                  /* bare with '@' cut */
	char hash[HASH_HEX_LEN + 1];  /* "" = avatar disabled */
	char id[HASH_HEX_LEN + 1];    /* the item id as published */
	char *type;                   /* <info type/>, may be NULL */
	char *b64;                    /* the image, canonical base64 */
};

static void
conv_free(struct conv *c)
{
	if (c == NULL)
		return;
	free(c->bare);
	free(c->split);
	free(c->type);
	free(c->b64);
	free(c);
}

static void
conv_stored(uint64_t owner, void *arg, int err)
{
	struct conv *c = arg;

	(void)owner;
	if (err != 0)
		pgn_log(PGN_LOG_WARN, "mod_vcard: storing the PEP avatar of %s "
				      "in the vCard failed: %s",
			c->bare, strerror(-err));
	else {
		set_user_hash(c->vc, c->bare, c->hash);
		pgn_log(PGN_LOG_DEBUG, "mod_vcard: PEP avatar of %s -> vCard "
				       "(photo %s)",
			c->bare, c->hash[0] != '\0' ? c->hash : "none");
	}
	conv_free(c);
}

/* The vCard with its PHOTO replaced by c's (removed when c has none):
 * serialised, malloc'd; NULL on failure (logged). */
static char *
vcard_with_photo(struct conv *c, const char *stored)
{
	struct pgn_xml *wrap = NULL, *vcard = NULL, *photo, *next;
	char *out = NULL;

	if (stored != NULL) {
		wrap = pgn_xml_new(NULL, "wrap");
		if (wrap == NULL ||
		    pgn_xml_parse_into(wrap, stored, strlen(stored)) != 0 ||
		    (vcard = pgn_xml_first_child(wrap)) == NULL)
			goto out;
	} else if ((vcard = wrap = pgn_xml_new(NS_VCARD, "vCard")) == NULL) {
		goto out;
	}
	for (struct pgn_xml *e = pgn_xml_first_child(vcard); e != NULL;
	     e = next) {
		next = pgn_xml_next(e);
		if (strcmp(pgn_xml_name(e), "PHOTO") == 0 &&
		    pgn_xml_ns(e) != NULL && strcmp(pgn_xml_ns(e), NS_VCARD) == 0) {
			pgn_xml_unlink(e);
			pgn_xml_free(e);
		}
	}
	if (c->hash[0] != '\0') {
		const char *type = c->type != NULL ? c->type : "image/png";
		struct pgn_xml *t, *bv;
		if ((photo = pgn_xml_add_child(vcard, NS_VCARD, "PHOTO")) ==
			    NULL ||
		    (t = pgn_xml_add_child(photo, NS_VCARD, "TYPE")) == NULL ||
		    pgn_xml_add_text(t, type, strlen(type)) != 0 ||
		    (bv = pgn_xml_add_child(photo, NS_VCARD, "BINVAL")) ==
			    NULL ||
		    pgn_xml_add_text(bv, c->b64, strlen(c->b64)) != 0)
			goto out;
	}
	out = pgn_xml_to_string(vcard, PGN_NS_CLIENT);
out:
	if (out == NULL)
		pgn_log(PGN_LOG_WARN, "mod_vcard: cannot build the vCard of %s "
				      "for its PEP avatar",
			c->bare);
	pgn_xml_free(wrap);
	return out;
}

static void
conv_got_vcard(uint64_t owner, void *arg, int err, const char *stored)
{
	struct conv *c = arg;
	static const char *const keys[2] = { KEY_VCARD, KEY_HASH };
	const char *values[2];
	char *data = NULL;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_vcard: loading the vCard of %s "
				      "failed: %s",
			c->bare, strerror(-err));
		goto fail;
	}
	if ((data = vcard_with_photo(c, stored)) == NULL)
		goto fail;
	if (strlen(data) > c->vc->max_size) {
		pgn_log(PGN_LOG_INFO, "mod_vcard: the PEP avatar of %s does not "
				      "fit a vCard of %zu bytes: not copied",
			c->bare, c->vc->max_size);
		goto fail;
	}
	values[0] = data;
	values[1] = c->hash;
	if (pgn_kv_put(pgn_server_store(pgn_module_server(c->vc->m)), KV_NS,
		       c->domain, c->node, 2, keys, values, 0, conv_stored,
		       c) < 0)
		goto fail;
	free(data);
	return;
fail:
	free(data);
	conv_free(c);
}

static void
conv_load_vcard(struct conv *c)
{
	if (pgn_kv_get(pgn_server_store(pgn_module_server(c->vc->m)), KV_NS,
		       c->domain, c->node, KEY_VCARD, 0, conv_got_vcard,
		       c) < 0)
		conv_free(c);
}

static void
conv_got_data(int err, size_t n, const struct pgn_xml *const *items,
	      void *arg)
{
	struct conv *c = arg;
	struct pgn_xml *data;
	unsigned char *img = NULL;
	size_t imglen = 0;
	char hex[HASH_HEX_LEN + 1];
	char *text = NULL;

	if (err != 0 || n == 0 ||
	    (data = pgn_xml_child(items[0], NS_AVATAR_DATA, "data")) == NULL) {
		/* XEP-0084 §4.1: data before metadata; a client that did
		 * otherwise gets no vCard copy. */
		pgn_log(PGN_LOG_INFO, "mod_vcard: no avatar data %s for %s",
			c->hash, c->bare);
		goto fail;
	}
	if ((text = pgn_xml_text(data)) == NULL)
		goto fail;
	/* Bounded before decoding: it could not fit the vCard anyway. */
	if (strlen(text) > c->vc->max_size) {
		pgn_log(PGN_LOG_INFO, "mod_vcard: the PEP avatar of %s exceeds "
				      "%zu bytes: not copied to the vCard",
			c->bare, c->vc->max_size);
		goto fail;
	}
	if (pgn_base64_decode_ws(text, strlen(text), &img, &imglen) < 0 ||
	    imglen == 0 || sha1_hex(img, imglen, hex) < 0 ||
	    strcmp(hex, c->hash) != 0) {
		/* §3.1: SHOULD verify the hash.  A wrong one would make
		 * XEP-0153 clients fetch the vCard again and again. */
		pgn_log(PGN_LOG_INFO, "mod_vcard: avatar data %s of %s is not "
				      "base64 of an image with that SHA-1",
			c->hash, c->bare);
		goto fail;
	}
	if (c->type == NULL)
		c->type = strdup(image_type(img, imglen));
	if (c->type == NULL || (c->b64 = pgn_base64_encode(img, imglen)) == NULL)
		goto fail;
	free(img);
	free(text);
	conv_load_vcard(c);
	return;
fail:
	free(img);
	free(text);
	conv_free(c);
}

static void
conv_got_hash(uint64_t owner, void *arg, int err, const char *stored)
{
	struct conv *c = arg;
	struct vcard *vc = c->vc;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_vcard: loading the photo hash of %s "
				      "failed: %s",
			c->bare, strerror(-err));
		goto fail;
	}
	if (strcmp(stored != NULL ? stored : "", c->hash) == 0)
		goto fail; /* already the vCard's: ours, or no change */
	if (c->hash[0] == '\0') {
		conv_load_vcard(c);
		return;
	}
	if (vc->pep->items(vc->pep_inst, c->bare, NS_AVATAR_DATA, c->id, 1,
			   conv_got_data, c) < 0)
		goto fail;
	return;
fail:
	conv_free(c);
}

/* The item's hash: the id of the first <info/> without url (§3.1: the
 * vCard can hold only inline data) in lowercase, "" for an empty
 * <metadata/>; *id: the id as written, which names the data item.  0, or
 * -ENOENT when there is nothing to convert. */
static int
meta_pick(const struct pgn_xml *meta, char hash[HASH_HEX_LEN + 1],
	  const char **id_out, const char **type)
{
	int infos = 0;

	hash[0] = '\0';
	*type = NULL;
	for (struct pgn_xml *e = pgn_xml_first_child(meta); e != NULL;
	     e = pgn_xml_next(e)) {
		const char *id;
		size_t i;

		if (strcmp(pgn_xml_name(e), "info") != 0)
			continue;
		infos++;
		if (pgn_xml_attr(e, "url") != NULL ||
		    (id = pgn_xml_attr(e, "id")) == NULL ||
		    strlen(id) != HASH_HEX_LEN)
			continue;
		for (i = 0; i < HASH_HEX_LEN; i++) {
			char ch = id[i];
			if (ch >= 'A' && ch <= 'F')
				ch = (char)(ch - 'A' + 'a');
			if (!((ch >= '0' && ch <= '9') ||
			      (ch >= 'a' && ch <= 'f')))
				break;
			hash[i] = ch;
		}
		if (i < HASH_HEX_LEN)
			continue;
		hash[HASH_HEX_LEN] = '\0';
		*id_out = id;
		*type = pgn_xml_attr(e, "type");
		return 0;
	}
	hash[0] = '\0';
	return infos == 0 ? 0 : -ENOENT;
}

static void
on_avatar_meta(const char *user, const char *node, const char *item_id,
	       const struct pgn_xml *item, void *arg)
{
	struct vcard *vc = arg;
	struct pgn_xml *meta;
	struct conv *c = NULL;
	const char *type, *id = "";
	char *at;

	(void)node;
	(void)item_id;
	/* A retraction leaves the vCard: XEP-0084 disables an avatar with
	 * an empty <metadata/>, which comes here as a publish. */
	if (item == NULL ||
	    (meta = pgn_xml_child(item, NS_AVATAR_META, "metadata")) == NULL)
		return;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		goto nomem;
	if (meta_pick(meta, c->hash, &id, &type) < 0) {
		conv_free(c); /* only external URLs: nothing to copy */
		return;
	}
	c->vc = vc;
	memcpy(c->id, id, strlen(id) + 1); /* "" or HASH_HEX_LEN chars */
	if ((c->bare = strdup(user)) == NULL ||
	    (c->split = strdup(user)) == NULL)
		goto nomem;
	c->type = type_dup(type);
	if ((at = strchr(c->split, '@')) == NULL) {
		conv_free(c);
		return;
	}
	*at = '\0';
	c->node = c->split;
	c->domain = at + 1;
	if (pgn_kv_get(pgn_server_store(pgn_module_server(vc->m)), KV_NS,
		       c->domain, c->node, KEY_HASH, 0, conv_got_hash, c) < 0)
		goto nomem;
	return;
nomem:
	pgn_log(PGN_LOG_WARN, "mod_vcard: the PEP avatar of %s is not copied "
			      "to the vCard: out of memory",
		user);
	conv_free(c);
}

/* ---- session start: load the hash ---------------------------------------- */

static void
loaded_hash(uint64_t owner, void *arg, int err, const char *h)
{
	struct vcard *vc = arg;
	struct pgn_session *s = pgn_session_find(pgn_module_server(vc->m),
						 owner);

	if (s == NULL)
		return; /* gone meanwhile: nothing to release */
	if (err != 0) {
		/* Without the hash, presences pass unchanged: better than
		 * advertising a wrong avatar. */
		pgn_log(PGN_LOG_WARN,
			"session %llu: mod_vcard: loading the photo hash "
			"failed: %s",
			(unsigned long long)owner, strerror(-err));
		pgn_session_set_data(s, vc->m, NULL, NULL);
	} else {
		set_session_hash(s, vc, h != NULL ? h : "");
	}
	pgn_session_release(s);
}

static int
on_session_started(struct pgn_event *ev, void *arg)
{
	struct vcard *vc = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *jid = pgn_session_jid(s);
	struct vsess *vs;

	if (jid == NULL || jid->node == NULL)
		return PGN_EVENT_PASS;
	(void)pep_lookup(vc); /* the first session finds mod_pep */
	if ((vs = calloc(1, sizeof(*vs))) == NULL)
		return PGN_EVENT_PASS;
	if (pgn_session_set_data(s, vc->m, vs, free) != 0) {
		free(vs);
		return PGN_EVENT_PASS;
	}
	/* Hold the session so that its first presence already has the
	 * hash. */
	pgn_session_hold(s);
	if (pgn_kv_get(pgn_server_store(ev->server), KV_NS, jid->domain,
		       jid->node, KEY_HASH, pgn_session_id(s), loaded_hash,
		       vc) < 0) {
		pgn_session_set_data(s, vc->m, NULL, NULL);
		pgn_session_release(s);
	}
	return PGN_EVENT_PASS;
}

/* ---- presence: XEP-0153 §3.1 --------------------------------------------- */

/* Replaces x's <photo/> by one holding hash.  0 or -ENOMEM. */
static int
set_photo(struct pgn_xml *x, struct pgn_xml *old, const char *hash)
{
	struct pgn_xml *photo;

	if (old != NULL) {
		pgn_xml_unlink(old);
		pgn_xml_free(old);
	}
	photo = pgn_xml_add_child(x, NS_VCARD_UPDATE, "photo");
	if (photo == NULL)
		return -ENOMEM;
	if (hash[0] != '\0' && pgn_xml_add_text(photo, hash, strlen(hash)) != 0)
		return -ENOMEM;
	return 0;
}

static int
on_presence(struct pgn_event *ev, void *arg)
{
	struct vcard *vc = arg;
	struct pgn_stanza *st = ev->stanza;
	struct vsess *vs;
	struct pgn_xml *x, *photo;
	char *cur = NULL;

	if (ev->origin == NULL || st->type != NULL)
		return PGN_EVENT_PASS; /* only available presence */
	vs = pgn_session_get_data(ev->origin, vc->m);
	if (vs == NULL || !vs->loaded)
		return PGN_EVENT_PASS;
	x = pgn_xml_child(st->xml, NS_VCARD_UPDATE, "x");
	if (x == NULL) {
		/* A client unaware of XEP-0153: advertise the stored photo
		 * for it, as the other resources would. */
		if (vs->hash[0] == '\0')
			return PGN_EVENT_PASS;
		x = pgn_xml_add_child(st->xml, NS_VCARD_UPDATE, "x");
		if (x == NULL || set_photo(x, NULL, vs->hash) != 0)
			pgn_log(PGN_LOG_WARN,
				"session %llu: mod_vcard: out of memory",
				(unsigned long long)pgn_session_id(ev->origin));
		return PGN_EVENT_PASS;
	}
	photo = pgn_xml_child(x, NS_VCARD_UPDATE, "photo");
	if (photo == NULL) {
		/* XEP-0153 §4.1 lets a client say "not ready yet" with an
		 * empty <x/>; XEP-0398 §4 (the server knows the hash)
		 * requires it to be filled in. */
		if (set_photo(x, NULL, vs->hash) != 0)
			pgn_log(PGN_LOG_WARN,
				"session %llu: mod_vcard: out of memory",
				(unsigned long long)pgn_session_id(ev->origin));
		return PGN_EVENT_PASS;
	}
	cur = pgn_xml_text(photo);
	if (cur != NULL && strcmp(cur, vs->hash) == 0 &&
	    pgn_xml_first_child(photo) == NULL) {
		free(cur);
		return PGN_EVENT_PASS;
	}
	free(cur);
	if (set_photo(x, photo, vs->hash) != 0)
		pgn_log(PGN_LOG_WARN, "session %llu: mod_vcard: out of memory",
			(unsigned long long)pgn_session_id(ev->origin));
	return PGN_EVENT_PASS;
}

/* ---- module -------------------------------------------------------------- */

static int
vcard_load(struct pgn_module *m)
{
	struct vcard *vc = calloc(1, sizeof(*vc));
	int rc;

	if (vc == NULL)
		return -ENOMEM;
	vc->m = m;
	vc->max_size = (size_t)pgn_module_opt_int(m, "max_size");
	vc->conversion = pgn_module_opt_bool(m, "pep_conversion");
	pgn_module_set_data(m, vc);
	if ((rc = pgn_module_add_feature(m, NS_VCARD)) < 0)
		goto fail;
	return 0;
fail:
	pgn_module_set_data(m, NULL);
	free(vc);
	return rc;
}

static void
vcard_unload(struct pgn_module *m)
{
	struct vcard *vc = pgn_module_data(m);
	const struct pgn_pep_service *pep;
	void *inst = NULL;

	/* Looked up again: mod_pep, loaded after this module, has unloaded
	 * first and taken its watches with it. */
	if (vc != NULL && vc->pep != NULL &&
	    (pep = pgn_host_service(pgn_module_host(m), PGN_PEP_SERVICE,
				    &inst)) != NULL)
		pep->unwatch(inst, m);
	free(vc);
}

static const struct pgn_module_hook_def vcard_hooks[] = {
	{"iq-get/bare/" NS_VCARD ":vCard", on_get, PGN_PRIO_HANDLER},
	{"iq-set/bare/" NS_VCARD ":vCard", on_set, PGN_PRIO_HANDLER},
	{"iq-get/host/" NS_VCARD ":vCard", on_get_host, PGN_PRIO_HANDLER},
	{"iq-set/host/" NS_VCARD ":vCard", on_set_host, PGN_PRIO_HANDLER},
	{"session-started", on_session_started, PGN_PRIO_HANDLER},
	/* Modifier: before mod_roster broadcasts (a handler). */
	{"pre-presence/self", on_presence, PGN_PRIO_MODIFIER},
	/* XEP-0153 §4.1: directed presence carries it too. */
	{"pre-presence/bare", on_presence, PGN_PRIO_MODIFIER},
	{"pre-presence/full", on_presence, PGN_PRIO_MODIFIER},
	{NULL, NULL, 0},
};

static const struct pgn_module_opt vcard_options[] = {
	{ .name = "max_size", .type = PGN_OPT_INT, .def = "65536", .min = 1,
	  .max = MAX_MAX_SIZE, .doc = "bytes of one stored vCard" },
	{ .name = "pep_conversion", .type = PGN_OPT_BOOL, .def = "true",
	  .doc = "XEP-0398: PEP avatars <-> vCard photo (with mod_pep)" },
	{ .name = NULL },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_vcard",
	.description = "vcard-temp (XEP-0054), avatar hashes (XEP-0153), PEP conversion (XEP-0398)",
	.options = vcard_options,
	.hooks = vcard_hooks,
	.load = vcard_load,
	.unload = vcard_unload,
};
