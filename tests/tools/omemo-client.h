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

#endif
