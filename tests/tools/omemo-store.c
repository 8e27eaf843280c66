/*
 * omemo-store.c: the parts of tests/tools/omemo-client that libomemo-c
 * leaves to its user: a crypto provider on OpenSSL 3 (random, HMAC-SHA256,
 * SHA-512, AES-CBC/CTR for the ratchet) and the in-memory stores (sessions,
 * pre-keys, signed pre-keys, identities).  Plus AES-128-GCM, which legacy
 * OMEMO (eu.siacs.conversations.axolotl) uses for the message payload.
 *
 * Trust is blind (every identity is trusted): these are test clients.
 * Nothing is persisted; a device lives as long as its process (the client
 * disconnects and reconnects in the same process to play "offline").
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "omemo-client.h"

/* ---- generic records ---------------------------------------------------- */

static int
oc_name_eq(const struct oc_rec *r, const char *name, size_t name_len)
{
	if (!name)
		return r->name == NULL;
	return r->name && strlen(r->name) == name_len &&
	       memcmp(r->name, name, name_len) == 0;
}

static struct oc_rec *
oc_rec_find(struct oc_rec *list, const char *name, size_t name_len, uint32_t id)
{
	for (struct oc_rec *r = list; r; r = r->next)
		if (r->id == id && oc_name_eq(r, name, name_len))
			return r;
	return NULL;
}

/* Replaces or adds the record (name, id); copies data.  0 or SG_ERR_NOMEM. */
static int
oc_rec_put(struct oc_rec **list, const char *name, size_t name_len, uint32_t id,
	   const uint8_t *data, size_t len)
{
	struct oc_rec *r = oc_rec_find(*list, name, name_len, id);
	signal_buffer *buf = signal_buffer_create(data, len);

	if (!buf)
		return SG_ERR_NOMEM;
	if (r) {
		signal_buffer_bzero_free(r->buf);
		r->buf = buf;
		return 0;
	}
	r = calloc(1, sizeof(*r));
	if (!r || (name && !(r->name = strndup(name, name_len)))) {
		free(r);
		signal_buffer_free(buf);
		return SG_ERR_NOMEM;
	}
	r->id = id;
	r->buf = buf;
	r->next = *list;
	*list = r;
	return 0;
}

static int
oc_rec_del(struct oc_rec **list, const char *name, size_t name_len, uint32_t id)
{
	for (struct oc_rec **p = list; *p; p = &(*p)->next) {
		struct oc_rec *r = *p;

		if (r->id == id && oc_name_eq(r, name, name_len)) {
			*p = r->next;
			signal_buffer_bzero_free(r->buf);
			free(r->name);
			free(r);
			return 1;
		}
	}
	return 0;
}

void
oc_rec_free_all(struct oc_rec **list)
{
	while (*list) {
		struct oc_rec *r = *list;

		*list = r->next;
		signal_buffer_bzero_free(r->buf);
		free(r->name);
		free(r);
	}
}

/* ---- crypto provider (OpenSSL 3) ---------------------------------------- */

static int
oc_random(uint8_t *data, size_t len, void *user_data)
{
	return RAND_bytes(data, (int)len) == 1 ? 0 : SG_ERR_UNKNOWN;
}

static int
oc_hmac_init(void **hmac_context, const uint8_t *key, size_t key_len,
	     void *user_data)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
						 (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	EVP_MAC_free(mac); /* the context holds its own reference */
	if (!c || !EVP_MAC_init(c, key, key_len, params)) {
		EVP_MAC_CTX_free(c);
		return SG_ERR_UNKNOWN;
	}
	*hmac_context = c;
	return 0;
}

static int
oc_hmac_update(void *hmac_context, const uint8_t *data, size_t data_len,
	       void *user_data)
{
	return EVP_MAC_update(hmac_context, data, data_len) ? 0 : SG_ERR_UNKNOWN;
}

static int
oc_hmac_final(void *hmac_context, signal_buffer **output, void *user_data)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	size_t n = 0;

	if (!EVP_MAC_final(hmac_context, md, &n, sizeof(md)))
		return SG_ERR_UNKNOWN;
	*output = signal_buffer_create(md, n);
	return *output ? 0 : SG_ERR_NOMEM;
}

static void
oc_hmac_cleanup(void *hmac_context, void *user_data)
{
	EVP_MAC_CTX_free(hmac_context);
}

static int
oc_sha512_init(void **digest_context, void *user_data)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	if (!c || !EVP_DigestInit_ex(c, EVP_sha512(), NULL)) {
		EVP_MD_CTX_free(c);
		return SG_ERR_UNKNOWN;
	}
	*digest_context = c;
	return 0;
}

static int
oc_sha512_update(void *digest_context, const uint8_t *data, size_t data_len,
		 void *user_data)
{
	return EVP_DigestUpdate(digest_context, data, data_len) ? 0 : SG_ERR_UNKNOWN;
}

static int
oc_sha512_final(void *digest_context, signal_buffer **output, void *user_data)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	/* the library reuses the context after final: re-initialise it */
	if (!EVP_DigestFinal_ex(digest_context, md, &n) ||
	    !EVP_DigestInit_ex(digest_context, EVP_sha512(), NULL))
		return SG_ERR_UNKNOWN;
	*output = signal_buffer_create(md, n);
	return *output ? 0 : SG_ERR_NOMEM;
}

static void
oc_sha512_cleanup(void *digest_context, void *user_data)
{
	EVP_MD_CTX_free(digest_context);
}

static const EVP_CIPHER *
oc_aes(int cipher, size_t key_len)
{
	if (cipher == SG_CIPHER_AES_CBC_PKCS5) {
		switch (key_len) {
		case 16: return EVP_aes_128_cbc();
		case 24: return EVP_aes_192_cbc();
		case 32: return EVP_aes_256_cbc();
		}
	} else if (cipher == SG_CIPHER_AES_CTR_NOPADDING) {
		switch (key_len) {
		case 16: return EVP_aes_128_ctr();
		case 24: return EVP_aes_192_ctr();
		case 32: return EVP_aes_256_ctr();
		}
	}
	return NULL;
}

static int
oc_aes_run(signal_buffer **output, int cipher, const uint8_t *key,
	   size_t key_len, const uint8_t *iv, size_t iv_len, const uint8_t *in,
	   size_t in_len, int enc)
{
	const EVP_CIPHER *ev = oc_aes(cipher, key_len);
	EVP_CIPHER_CTX *c = NULL;
	uint8_t *out = NULL;
	int n1 = 0, n2 = 0, rc = SG_ERR_UNKNOWN;

	if (!ev || iv_len != 16 || in_len > INT32_MAX - 64)
		return SG_ERR_INVAL;
	c = EVP_CIPHER_CTX_new();
	out = malloc(in_len + 32);
	if (!c || !out) {
		rc = SG_ERR_NOMEM;
		goto fail;
	}
	if (!EVP_CipherInit_ex(c, ev, NULL, key, iv, enc) ||
	    !EVP_CipherUpdate(c, out, &n1, in, (int)in_len) ||
	    !EVP_CipherFinal_ex(c, out + n1, &n2))
		goto fail;
	*output = signal_buffer_create(out, (size_t)n1 + (size_t)n2);
	rc = *output ? 0 : SG_ERR_NOMEM;
fail:
	EVP_CIPHER_CTX_free(c);
	free(out);
	return rc;
}

static int
oc_encrypt(signal_buffer **output, int cipher, const uint8_t *key,
	   size_t key_len, const uint8_t *iv, size_t iv_len,
	   const uint8_t *plaintext, size_t plaintext_len, void *user_data)
{
	return oc_aes_run(output, cipher, key, key_len, iv, iv_len, plaintext,
			  plaintext_len, 1);
}

static int
oc_decrypt(signal_buffer **output, int cipher, const uint8_t *key,
	   size_t key_len, const uint8_t *iv, size_t iv_len,
	   const uint8_t *ciphertext, size_t ciphertext_len, void *user_data)
{
	return oc_aes_run(output, cipher, key, key_len, iv, iv_len, ciphertext,
			  ciphertext_len, 0);
}

int
oc_gcm(int enc, const uint8_t key[16], const uint8_t iv[12], uint8_t tag[16],
       const uint8_t *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, rc = -1;

	if (!c || len > INT32_MAX)
		goto fail;
	if (!EVP_CipherInit_ex(c, EVP_aes_128_gcm(), NULL, key, iv, enc))
		goto fail;
	if (!enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag))
		goto fail;
	if (len && !EVP_CipherUpdate(c, out, &n, in, (int)len))
		goto fail;
	if (!EVP_CipherFinal_ex(c, out + n, &n)) /* the tag check, decrypting */
		goto fail;
	if (enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag))
		goto fail;
	rc = 0;
fail:
	EVP_CIPHER_CTX_free(c);
	return rc;
}

/* ---- stores ---------------------------------------------------------------- */

static int
oc_load_session(signal_buffer **record, signal_buffer **user_record,
		const signal_protocol_address *a, void *user_data)
{
	struct oc_keys *k = user_data;
	struct oc_rec *r = oc_rec_find(k->sessions, a->name, a->name_len,
				       (uint32_t)a->device_id);

	if (!r)
		return 0;
	*record = signal_buffer_copy(r->buf);
	return *record ? 1 : SG_ERR_NOMEM;
}

static int
oc_sub_device_sessions(signal_int_list **sessions, const char *name,
		       size_t name_len, void *user_data)
{
	struct oc_keys *k = user_data;
	signal_int_list *l = signal_int_list_alloc();

	if (!l)
		return SG_ERR_NOMEM;
	for (struct oc_rec *r = k->sessions; r; r = r->next)
		if (oc_name_eq(r, name, name_len))
			signal_int_list_push_back(l, (int)r->id);
	*sessions = l;
	return (int)signal_int_list_size(l);
}

static int
oc_store_session(const signal_protocol_address *a, uint8_t *record,
		 size_t record_len, uint8_t *user_record, size_t user_record_len,
		 void *user_data)
{
	struct oc_keys *k = user_data;

	return oc_rec_put(&k->sessions, a->name, a->name_len,
			  (uint32_t)a->device_id, record, record_len);
}

static int
oc_contains_session(const signal_protocol_address *a, void *user_data)
{
	struct oc_keys *k = user_data;

	return oc_rec_find(k->sessions, a->name, a->name_len,
			   (uint32_t)a->device_id) != NULL;
}

static int
oc_delete_session(const signal_protocol_address *a, void *user_data)
{
	struct oc_keys *k = user_data;

	return oc_rec_del(&k->sessions, a->name, a->name_len,
			  (uint32_t)a->device_id);
}

static int
oc_delete_all_sessions(const char *name, size_t name_len, void *user_data)
{
	struct oc_keys *k = user_data;
	int n = 0;

	for (struct oc_rec *r = k->sessions, *next; r; r = next) {
		next = r->next;
		if (oc_name_eq(r, name, name_len))
			n += oc_rec_del(&k->sessions, name, name_len, r->id);
	}
	return n;
}

/* The pre-key and signed pre-key stores: the same calls on two lists. */
static int
oc_load_key(struct oc_rec *list, signal_buffer **record, uint32_t id)
{
	struct oc_rec *r = oc_rec_find(list, NULL, 0, id);

	if (!r)
		return SG_ERR_INVALID_KEY_ID;
	*record = signal_buffer_copy(r->buf);
	return *record ? SG_SUCCESS : SG_ERR_NOMEM;
}

static int
oc_load_pre_key(signal_buffer **record, uint32_t id, void *user_data)
{
	return oc_load_key(((struct oc_keys *)user_data)->pre_keys, record, id);
}

static int
oc_store_pre_key(uint32_t id, uint8_t *record, size_t len, void *user_data)
{
	struct oc_keys *k = user_data;

	return oc_rec_put(&k->pre_keys, NULL, 0, id, record, len);
}

static int
oc_contains_pre_key(uint32_t id, void *user_data)
{
	return oc_rec_find(((struct oc_keys *)user_data)->pre_keys, NULL, 0, id) != NULL;
}

static int
oc_remove_pre_key(uint32_t id, void *user_data)
{
	struct oc_keys *k = user_data;

	oc_rec_del(&k->pre_keys, NULL, 0, id);
	k->pre_keys_used++;
	return 0;
}

static int
oc_load_signed_pre_key(signal_buffer **record, uint32_t id, void *user_data)
{
	return oc_load_key(((struct oc_keys *)user_data)->signed_pre_keys, record, id);
}

static int
oc_store_signed_pre_key(uint32_t id, uint8_t *record, size_t len, void *user_data)
{
	struct oc_keys *k = user_data;

	return oc_rec_put(&k->signed_pre_keys, NULL, 0, id, record, len);
}

static int
oc_contains_signed_pre_key(uint32_t id, void *user_data)
{
	return oc_rec_find(((struct oc_keys *)user_data)->signed_pre_keys, NULL, 0,
			   id) != NULL;
}

static int
oc_remove_signed_pre_key(uint32_t id, void *user_data)
{
	struct oc_keys *k = user_data;

	oc_rec_del(&k->signed_pre_keys, NULL, 0, id);
	return 0;
}

static int
oc_get_identity_key_pair(signal_buffer **public_data, signal_buffer **private_data,
			 void *user_data)
{
	struct oc_keys *k = user_data;
	int rc;

	rc = ec_public_key_serialize(public_data,
				     ratchet_identity_key_pair_get_public(k->identity));
	if (rc < 0)
		return rc;
	rc = ec_private_key_serialize(private_data,
				      ratchet_identity_key_pair_get_private(k->identity));
	if (rc < 0) {
		signal_buffer_free(*public_data);
		*public_data = NULL;
	}
	return rc;
}

static int
oc_get_registration_id(void *user_data, uint32_t *registration_id)
{
	struct oc_keys *k = user_data;

	/* legacy OMEMO: the registration id is the device id */
	*registration_id = k->device_id;
	return 0;
}

static int
oc_save_identity(const signal_protocol_address *a, uint8_t *key_data,
		 size_t key_len, void *user_data)
{
	struct oc_keys *k = user_data;

	if (!key_data) {
		oc_rec_del(&k->identities, a->name, a->name_len,
			   (uint32_t)a->device_id);
		return 0;
	}
	return oc_rec_put(&k->identities, a->name, a->name_len,
			  (uint32_t)a->device_id, key_data, key_len);
}

static int
oc_is_trusted_identity(const signal_protocol_address *a, uint8_t *key_data,
		       size_t key_len, void *user_data)
{
	return 1; /* blind trust: a test client */
}

/* ---- set-up --------------------------------------------------------------- */

int
oc_keys_init(struct oc_keys *k)
{
	signal_crypto_provider cp = {
		.random_func = oc_random,
		.hmac_sha256_init_func = oc_hmac_init,
		.hmac_sha256_update_func = oc_hmac_update,
		.hmac_sha256_final_func = oc_hmac_final,
		.hmac_sha256_cleanup_func = oc_hmac_cleanup,
		.sha512_digest_init_func = oc_sha512_init,
		.sha512_digest_update_func = oc_sha512_update,
		.sha512_digest_final_func = oc_sha512_final,
		.sha512_digest_cleanup_func = oc_sha512_cleanup,
		.encrypt_func = oc_encrypt,
		.decrypt_func = oc_decrypt,
		.user_data = k,
	};
	signal_protocol_session_store ss = {
		.load_session_func = oc_load_session,
		.get_sub_device_sessions_func = oc_sub_device_sessions,
		.store_session_func = oc_store_session,
		.contains_session_func = oc_contains_session,
		.delete_session_func = oc_delete_session,
		.delete_all_sessions_func = oc_delete_all_sessions,
		.user_data = k,
	};
	signal_protocol_pre_key_store ps = {
		.load_pre_key = oc_load_pre_key,
		.store_pre_key = oc_store_pre_key,
		.contains_pre_key = oc_contains_pre_key,
		.remove_pre_key = oc_remove_pre_key,
		.user_data = k,
	};
	signal_protocol_signed_pre_key_store sps = {
		.load_signed_pre_key = oc_load_signed_pre_key,
		.store_signed_pre_key = oc_store_signed_pre_key,
		.contains_signed_pre_key = oc_contains_signed_pre_key,
		.remove_signed_pre_key = oc_remove_signed_pre_key,
		.user_data = k,
	};
	signal_protocol_identity_key_store is = {
		.get_identity_key_pair = oc_get_identity_key_pair,
		.get_local_registration_id = oc_get_registration_id,
		.save_identity = oc_save_identity,
		.is_trusted_identity = oc_is_trusted_identity,
		.user_data = k,
	};
	signal_protocol_key_helper_pre_key_list_node *head = NULL;
	session_signed_pre_key *spk = NULL;
	uint32_t id = 0;
	int rc;

	if (signal_context_create(&k->gctx, k) < 0 ||
	    signal_context_set_crypto_provider(k->gctx, &cp) < 0 ||
	    signal_protocol_store_context_create(&k->store, k->gctx) < 0 ||
	    signal_protocol_store_context_set_session_store(k->store, &ss) < 0 ||
	    signal_protocol_store_context_set_pre_key_store(k->store, &ps) < 0 ||
	    signal_protocol_store_context_set_signed_pre_key_store(k->store, &sps) < 0 ||
	    signal_protocol_store_context_set_identity_key_store(k->store, &is) < 0)
		return -1;
	/* device ids: 1 .. 2^31-1 (XEP-0384) */
	while (id == 0) {
		if (RAND_bytes((uint8_t *)&id, sizeof(id)) != 1)
			return -1;
		id &= 0x7fffffffu;
	}
	k->device_id = id;
	if (signal_protocol_key_helper_generate_identity_key_pair(&k->identity,
								  k->gctx) < 0)
		return -1;
	rc = signal_protocol_key_helper_generate_pre_keys(&head, 1, OC_PRE_KEYS,
							  k->gctx);
	if (rc < 0)
		return -1;
	for (signal_protocol_key_helper_pre_key_list_node *n = head; n;
	     n = signal_protocol_key_helper_key_list_next(n)) {
		if (signal_protocol_pre_key_store_key(
			    k->store, signal_protocol_key_helper_key_list_element(n)) < 0) {
			signal_protocol_key_helper_key_list_free(head);
			return -1;
		}
	}
	signal_protocol_key_helper_key_list_free(head);
	k->next_pre_key_id = OC_PRE_KEYS + 1;
	k->signed_pre_key_id = 1;
	if (signal_protocol_key_helper_generate_signed_pre_key(
		    &spk, k->identity, k->signed_pre_key_id,
		    (uint64_t)time(NULL) * 1000, k->gctx) < 0)
		return -1;
	rc = signal_protocol_signed_pre_key_store_key(k->store, spk);
	SIGNAL_UNREF(spk);
	return rc < 0 ? -1 : 0;
}

int
oc_replace_pre_keys(struct oc_keys *k)
{
	signal_protocol_key_helper_pre_key_list_node *head = NULL;
	unsigned n = k->pre_keys_used;
	int rc = 0;

	if (n == 0)
		return 0;
	if (signal_protocol_key_helper_generate_pre_keys(&head, k->next_pre_key_id, n,
							  k->gctx) < 0)
		return -1;
	for (signal_protocol_key_helper_pre_key_list_node *p = head; p && rc == 0;
	     p = signal_protocol_key_helper_key_list_next(p))
		if (signal_protocol_pre_key_store_key(
			    k->store, signal_protocol_key_helper_key_list_element(p)) < 0)
			rc = -1;
	signal_protocol_key_helper_key_list_free(head);
	if (rc < 0)
		return -1;
	k->next_pre_key_id += n;
	k->pre_keys_used = 0;
	return (int)n;
}

void
oc_keys_free(struct oc_keys *k)
{
	if (k->store)
		signal_protocol_store_context_destroy(k->store);
	if (k->identity)
		SIGNAL_UNREF(k->identity);
	if (k->gctx)
		signal_context_destroy(k->gctx);
	oc_rec_free_all(&k->sessions);
	oc_rec_free_all(&k->pre_keys);
	oc_rec_free_all(&k->signed_pre_keys);
	oc_rec_free_all(&k->identities);
}

int
oc_has_session(struct oc_keys *k, const char *jid, uint32_t device_id)
{
	return oc_rec_find(k->sessions, jid, strlen(jid), device_id) != NULL;
}
