/* XEP-0054 vcard-temp and XEP-0153 vCard-based avatars.
 *
 * Every account has at most one vCard, stored serialised with the SHA-1
 * of its decoded PHOTO/BINVAL in the store's per-user key-value store
 * (pgn_kv_*, namespace "vcard", keys "vcard" and "photo_hash").  Anyone may read a user's vCard; only the user sets it.
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
 * Option max_size (bytes, default 65536): largest vCard accepted, counted
 * on its serialised form, i.e. what is stored and sent back. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "pigeon/base64.h"
#include "pigeon/log.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_VCARD "vcard-temp"
#define NS_VCARD_UPDATE "vcard-temp:x:update"
/* Our namespace and keys in the key-value store. */
#define KV_NS "vcard"
#define KEY_VCARD "vcard"
#define KEY_HASH "photo_hash"

#define MAX_MAX_SIZE (16L * 1024 * 1024)
#define HASH_HEX_LEN 40

struct vcard {
	struct pgn_module *m;
	size_t max_size;
};

/* Per session: the account's stored photo hash. */
struct vsess {
	int loaded;                  /* 0 until the store answered */
	char hash[HASH_HEX_LEN + 1]; /* "" when the vCard has no photo */
};

/* ---- photo hash (XEP-0153 §3.1: SHA-1 of the image, not of base64) ------- */

/* Fills hex with the lowercase SHA-1 of the vCard's decoded PHOTO/BINVAL,
 * or "" when there is none (no BINVAL, or one with only whitespace).
 * Whitespace in the base64 is skipped (XEP-0153 §4.6: clients wrap it in
 * lines); anything else that is not canonical base64 is refused.  0,
 * -EINVAL (not base64) or -ENOMEM. */
static int
photo_hash(const struct pgn_xml *vcard, char hex[HASH_HEX_LEN + 1])
{
	struct pgn_xml *photo = pgn_xml_child(vcard, NS_VCARD, "PHOTO");
	struct pgn_xml *binval =
		photo != NULL ? pgn_xml_child(photo, NS_VCARD, "BINVAL") : NULL;
	unsigned char md[EVP_MAX_MD_SIZE], *img = NULL;
	unsigned mdlen = 0;
	size_t imglen = 0;
	char *text;
	int rc;

	hex[0] = '\0';
	if (binval == NULL)
		return 0;
	if ((text = pgn_xml_text(binval)) == NULL)
		return -ENOMEM;
	rc = pgn_base64_decode_ws(text, strlen(text), &img, &imglen);
	free(text);
	if (rc < 0 || imglen == 0)
		goto out;
	rc = -ENOMEM;
	if (EVP_Digest(img, imglen, md, &mdlen, EVP_sha1(), NULL) != 1 ||
	    mdlen * 2 > HASH_HEX_LEN)
		goto out;
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	rc = 0;
out:
	free(img);
	return rc;
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

/* ---- set ----------------------------------------------------------------- */

struct set_req {
	struct vcard *vc;
	struct pgn_hold *hold;
	char *bare;
	char hash[HASH_HEX_LEN + 1];
};

static void
set_session_hash(struct pgn_session *s, struct vcard *vc, const char *hash)
{
	struct vsess *vs = pgn_session_get_data(s, vc->m);
	if (vs == NULL)
		return; /* the load at session start failed: stay neutral */
	snprintf(vs->hash, sizeof(vs->hash), "%s", hash);
	vs->loaded = 1;
}

static void
stored_vcard(uint64_t owner, void *arg, int err)
{
	struct set_req *sr = arg;
	struct pgn_server *srv = pgn_module_server(sr->vc->m);

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN, "mod_vcard: storing the vCard of %s "
				      "failed: %s",
			sr->bare, strerror(-err));
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
		goto out;
	}
	/* Every session of the account advertises the new hash from now
	 * on (XEP-0153 §3.1), before the client's next presence. */
	for (struct pgn_session *s = pgn_user_sessions(srv, sr->bare);
	     s != NULL; s = pgn_session_next(s))
		set_session_hash(s, sr->vc, sr->hash);
	pgn_log(PGN_LOG_DEBUG, "mod_vcard: stored the vCard of %s (photo %s)",
		sr->bare, sr->hash[0] != '\0' ? sr->hash : "none");
	pgn_hold_answer(sr->hold, NULL, NULL, NULL, NULL);
out:
	free(sr->bare);
	free(sr);
}

static int
on_set(struct pgn_event *ev, void *arg)
{
	struct vcard *vc = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *vcard = pgn_xml_first_child(st->xml);
	struct set_req *sr = NULL;
	char *data = NULL;
	char hash[HASH_HEX_LEN + 1];
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
	rc = photo_hash(vcard, hash);
	if (rc == -EINVAL) {
		error_now(ev, "modify", "bad-request",
			  "PHOTO/BINVAL is not base64");
		free(data);
		return PGN_EVENT_HANDLED;
	}
	if (rc < 0)
		goto nomem;
	if ((sr = calloc(1, sizeof(*sr))) == NULL ||
	    (sr->bare = strdup(st->to->bare)) == NULL)
		goto nomem;
	memcpy(sr->hash, hash, sizeof(hash));
	sr->vc = vc;
	values[0] = data;
	values[1] = hash;
	if ((sr->hold = pgn_event_hold(ev)) == NULL)
		goto nomem;
	/* Both keys in one transaction. */
	if (pgn_kv_put(pgn_server_store(ev->server), KV_NS, st->to->domain,
		       st->to->node, 2, keys, values, 0, stored_vcard,
		       sr) < 0) {
		pgn_hold_answer(sr->hold, NULL, "wait", "internal-server-error",
				NULL);
		free(sr->bare);
		free(sr);
	}
	free(data);
	return PGN_EVENT_HANDLED;
nomem:
	if (sr != NULL)
		free(sr->bare);
	free(sr);
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
	if (photo == NULL)
		return PGN_EVENT_PASS; /* "not ready yet" (§4.1): as sent */
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
	free(pgn_module_data(m));
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
	{ .name = NULL },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_vcard",
	.description = "vcard-temp (XEP-0054) and avatar hashes (XEP-0153)",
	.options = vcard_options,
	.hooks = vcard_hooks,
	.load = vcard_load,
	.unload = vcard_unload,
};
