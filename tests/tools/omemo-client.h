/*
 * omemo-client.h: shared between omemo-client.c (XMPP side) and
 * omemo-store.c (libomemo-c's crypto provider and in-memory stores).
 */
#ifndef PIGEON_TESTS_OMEMO_CLIENT_H
#define PIGEON_TESTS_OMEMO_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curve.h>
#include <key_helper.h>
#include <protocol.h>
#include <ratchet.h>
#include <session_builder.h>
#include <session_cipher.h>
#include <session_pre_key.h>
#include <signal_protocol.h>

/* pre-keys published in the bundle (XEP-0384: at least 20, 100 advised) */
#define OC_PRE_KEYS 100

/* One stored record: a session (name = bare JID, id = device id), an
 * identity (same key), a pre-key or a signed pre-key (name NULL, id = key
 * id).  A list owns its records and their buffers. */
struct oc_rec {
	struct oc_rec *next;
	char *name;
	uint32_t id;
	signal_buffer *buf;
};

/* Everything libomemo-c knows about this device. */
struct oc_keys {
	signal_context *gctx;
	signal_protocol_store_context *store;
	ratchet_identity_key_pair *identity;
	uint32_t device_id;
	uint32_t signed_pre_key_id;
	unsigned pre_keys_used;	/* consumed by key exchanges, not replaced */
	uint32_t next_pre_key_id;
	struct oc_rec *sessions;
	struct oc_rec *identities;
	struct oc_rec *pre_keys;
	struct oc_rec *signed_pre_keys;
};

/* Creates the contexts, a device id, an identity, OC_PRE_KEYS pre-keys and
 * a signed pre-key.  0 or -1. */
int oc_keys_init(struct oc_keys *k);
void oc_keys_free(struct oc_keys *k);
/* Generates a new pre-key for each one a key exchange consumed (XEP-0384:
 * the bundle is then republished).  The number made, or -1. */
int oc_replace_pre_keys(struct oc_keys *k);
int oc_has_session(struct oc_keys *k, const char *jid, uint32_t device_id);
void oc_rec_free_all(struct oc_rec **list);

/* AES-128-GCM (legacy OMEMO payload): enc 1 writes tag, enc 0 checks it.
 * out has room for len bytes.  0 or -1. */
int oc_gcm(int enc, const uint8_t key[16], const uint8_t iv[12], uint8_t tag[16],
	   const uint8_t *in, size_t len, uint8_t *out);

/* ---- omemo-xml.c: text, XML and base64 helpers of the client ------------ */
#include <strophe.h>

#define NS_OMEMO "eu.siacs.conversations.axolotl"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* A growing string; on allocation failure it stays NULL-data and
 * sb_take() returns NULL. */
struct sb {
	char *p;
	size_t len, cap;
	int oom;
};

void sb_add(struct sb *b, const char *s, size_t n);
void sb_printf(struct sb *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void sb_esc(struct sb *b, const char *s);	/* XML-escaped */
void sb_b64(struct sb *b, xmpp_ctx_t *ctx, const uint8_t *data, size_t len);
/* The string (malloc'd, caller frees), or NULL if an append failed. */
char *sb_take(struct sb *b);
/* Prints text on one line, \n, \r, \0 and \ escaped. */
void print_escaped(const char *text, size_t len);
/* The bare JID of jid, malloc'd; NULL for NULL. */
char *bare_of(const char *jid);
/* The text of el's child `name`, for xmpp_free(), or NULL. */
char *child_text(xmpp_stanza_t *el, const char *name);
/* Decodes base64; *out malloc'd.  0 or -1. */
int b64_decode(xmpp_ctx_t *ctx, const char *text, uint8_t **out, size_t *len);
/* An unsigned decimal attribute, 0 if absent or malformed. */
unsigned long attr_ulong(xmpp_stanza_t *el, const char *name);
/* The defined condition of an error stanza. */
const char *error_condition(xmpp_stanza_t *st);
/* The first <item/>'s payload element `name` (legacy OMEMO namespace) of a
 * pubsub items result or event. */
xmpp_stanza_t *item_payload(xmpp_stanza_t *st, const char *name);

#endif
