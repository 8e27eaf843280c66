/* SCRAM credentials (RFC 5802 §3, RFC 7677): derivation from a password,
 * the PLAIN password check against them, and their text form for the
 * store.  The SASL exchange itself is in sasl.c. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stringprep.h>

#include "pigeon/base64.h"
#include "pigeon/scram.h"

/* Beyond this PBKDF2 is a denial of service, not a security margin. */
#define SCRAM_MAX_ITERATIONS 10000000u

size_t
pgn_hash_len(enum pgn_hash h)
{
	switch (h) {
	case PGN_HASH_SHA1:
		return 20;
	case PGN_HASH_SHA256:
		return 32;
	}
	return 0;
}

static const EVP_MD *
scram_md(enum pgn_hash h)
{
	return h == PGN_HASH_SHA1 ? EVP_sha1() : EVP_sha256();
}

/* SASLprep (RFC 4013).  Stored strings must not hold unassigned code
 * points, queries may (RFC 4013 §2 via RFC 3454 §7).  *out is wiped and
 * freed by the caller. */
int
pgn_scram_saslprep(const char *in, int stored, char **out)
{
	*out = NULL;
	if (stringprep_profile(in, out, "SASLprep",
			       stored ? STRINGPREP_NO_UNASSIGNED : 0) !=
	    STRINGPREP_OK) {
		free(*out);
		*out = NULL;
		return -EINVAL;
	}
	if ((*out)[0] == '\0') {
		free(*out);
		*out = NULL;
		return -EINVAL;
	}
	return 0;
}

void
pgn_scram_wipe_free(char *s)
{
	if (!s)
		return;
	sodium_memzero(s, strlen(s));
	free(s);
}

int
pgn_scram_hmac(enum pgn_hash h, const unsigned char *key, size_t keylen,
	       const void *data, size_t len, unsigned char *out)
{
	unsigned int olen = (unsigned int)pgn_hash_len(h);

	return HMAC(scram_md(h), key, (int)keylen, data, len, out, &olen) ?
		       0 :
		       -ENOMEM;
}

int
pgn_scram_digest(enum pgn_hash h, const unsigned char *data, size_t len,
		 unsigned char *out)
{
	return EVP_Digest(data, len, out, NULL, scram_md(h), NULL) == 1 ?
		       0 :
		       -ENOMEM;
}

/* Fills k from the prepared password for one hash (RFC 5802 §3). */
static int
scram_derive_one(enum pgn_hash h, const char *prepped,
		 const unsigned char *salt, size_t salt_len, unsigned iter,
		 struct pgn_scram_key *k)
{
	size_t hl = pgn_hash_len(h);
	unsigned char salted[PGN_SCRAM_MAX_KEY], client_key[PGN_SCRAM_MAX_KEY];
	int rc = -ENOMEM;

	memset(k, 0, sizeof(*k));
	if (PKCS5_PBKDF2_HMAC(prepped, (int)strlen(prepped), salt,
			      (int)salt_len, (int)iter, scram_md(h), (int)hl,
			      salted) != 1)
		goto fail;
	if (pgn_scram_hmac(h, salted, hl, "Client Key", 10, client_key) < 0 ||
	    pgn_scram_digest(h, client_key, hl, k->stored_key) < 0 ||
	    pgn_scram_hmac(h, salted, hl, "Server Key", 10, k->server_key) < 0)
		goto fail;
	rc = 0;
fail:
	sodium_memzero(salted, sizeof(salted));
	sodium_memzero(client_key, sizeof(client_key));
	return rc;
}

int
pgn_scram_derive(const char *password, const unsigned char *salt,
		 size_t salt_len, unsigned iterations,
		 struct pgn_scram_creds *out)
{
	char *prepped = NULL;
	int rc = -EINVAL;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!password || iterations == 0 ||
	    iterations > SCRAM_MAX_ITERATIONS)
		goto fail;
	if (salt) {
		if (salt_len == 0 || salt_len > sizeof(out->salt))
			goto fail;
		memcpy(out->salt, salt, salt_len);
		out->salt_len = salt_len;
	} else {
		if (sodium_init() < 0) {
			rc = -ENOMEM;
			goto fail;
		}
		randombytes_buf(out->salt, PGN_SCRAM_SALT_LEN);
		out->salt_len = PGN_SCRAM_SALT_LEN;
	}
	out->iterations = iterations;
	if ((rc = pgn_scram_saslprep(password, 1, &prepped)) < 0)
		goto fail;
	for (int h = 0; h < PGN_HASH_COUNT; h++) {
		rc = scram_derive_one((enum pgn_hash)h, prepped, out->salt,
				      out->salt_len, iterations, &out->keys[h]);
		if (rc < 0)
			goto fail;
	}
	pgn_scram_wipe_free(prepped);
	return 0;
fail:
	pgn_scram_wipe_free(prepped);
	memset(out, 0, sizeof(*out));
	return rc;
}

int
pgn_scram_check_password(const struct pgn_scram_creds *creds,
			 const char *password)
{
	static const unsigned char zero[PGN_SCRAM_MAX_KEY];
	struct pgn_scram_key k;
	enum pgn_hash h = PGN_HASH_SHA256;
	char *prepped = NULL;
	int rc;

	if (!creds || !password || creds->salt_len == 0 ||
	    creds->salt_len > sizeof(creds->salt) || creds->iterations == 0 ||
	    creds->iterations > SCRAM_MAX_ITERATIONS)
		return -EINVAL;
	/* A password that cannot be prepared cannot have been stored. */
	if (pgn_scram_saslprep(password, 0, &prepped) < 0)
		return 0;
	/* Accounts imported with SHA-1 keys only have no SHA-256 ones. */
	if (CRYPTO_memcmp(creds->keys[PGN_HASH_SHA256].stored_key, zero,
			  sizeof(zero)) == 0)
		h = PGN_HASH_SHA1;
	rc = scram_derive_one(h, prepped, creds->salt, creds->salt_len,
			      creds->iterations, &k);
	pgn_scram_wipe_free(prepped);
	if (rc < 0)
		goto out;
	rc = CRYPTO_memcmp(k.stored_key, creds->keys[h].stored_key,
			   pgn_hash_len(h)) == 0;
out:
	sodium_memzero(&k, sizeof(k));
	return rc;
}

/* Decodes one stored base64 field into out (cap bytes).  Returns the
 * length, or -EINVAL if it is empty, malformed or longer than cap. */
static int
scram_b64_decode(const char *in, unsigned char *out, size_t cap)
{
	size_t len = strlen(in), n;
	unsigned char *buf;

	/* Refuse before allocating: a stored field is a few dozen bytes. */
	if (len == 0 || len / 4 * 3 > cap + 2)
		return -EINVAL;
	if (pgn_base64_decode(in, len, &buf, &n) < 0)
		return -EINVAL;
	if (n > cap) {
		free(buf);
		return -EINVAL;
	}
	memcpy(out, buf, n);
	sodium_memzero(buf, n);
	free(buf);
	return (int)n;
}

int
pgn_scram_creds_encode(const struct pgn_scram_creds *creds,
		       char **salt_b64, char **sha1_stored_b64,
		       char **sha1_server_b64, char **sha256_stored_b64,
		       char **sha256_server_b64)
{
	char **outs[5] = { salt_b64, sha1_stored_b64, sha1_server_b64,
			   sha256_stored_b64, sha256_server_b64 };
	const unsigned char *src[5];
	size_t lens[5];
	size_t l1 = pgn_hash_len(PGN_HASH_SHA1);
	size_t l256 = pgn_hash_len(PGN_HASH_SHA256);
	int i;

	for (i = 0; i < 5; i++) {
		if (!outs[i])
			return -EINVAL;
		*outs[i] = NULL;
	}
	if (!creds || creds->salt_len == 0 ||
	    creds->salt_len > sizeof(creds->salt))
		return -EINVAL;
	src[0] = creds->salt;
	lens[0] = creds->salt_len;
	src[1] = creds->keys[PGN_HASH_SHA1].stored_key;
	src[2] = creds->keys[PGN_HASH_SHA1].server_key;
	lens[1] = lens[2] = l1;
	src[3] = creds->keys[PGN_HASH_SHA256].stored_key;
	src[4] = creds->keys[PGN_HASH_SHA256].server_key;
	lens[3] = lens[4] = l256;
	for (i = 0; i < 5; i++) {
		*outs[i] = pgn_base64_encode(src[i], lens[i]);
		if (!*outs[i])
			goto fail;
	}
	return 0;
fail:
	for (i = 0; i < 5; i++) {
		free(*outs[i]);
		*outs[i] = NULL;
	}
	return -ENOMEM;
}

int
pgn_scram_creds_decode(const char *salt_b64, unsigned iterations,
		       const char *sha1_stored_b64,
		       const char *sha1_server_b64,
		       const char *sha256_stored_b64,
		       const char *sha256_server_b64,
		       struct pgn_scram_creds *out)
{
	const char *ins[4] = { sha1_stored_b64, sha1_server_b64,
			       sha256_stored_b64, sha256_server_b64 };
	unsigned char buf[PGN_SCRAM_MAX_KEY];
	int n;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!salt_b64 || iterations == 0 || iterations > SCRAM_MAX_ITERATIONS)
		goto fail;
	n = scram_b64_decode(salt_b64, out->salt, sizeof(out->salt));
	if (n <= 0)
		goto fail;
	out->salt_len = (size_t)n;
	out->iterations = iterations;
	for (int i = 0; i < 4; i++) {
		enum pgn_hash h = i < 2 ? PGN_HASH_SHA1 : PGN_HASH_SHA256;
		struct pgn_scram_key *k = &out->keys[h];

		if (!ins[i])
			goto fail;
		n = scram_b64_decode(ins[i], buf, sizeof(buf));
		if (n < 0 || (size_t)n != pgn_hash_len(h))
			goto fail;
		memcpy(i % 2 == 0 ? k->stored_key : k->server_key, buf,
		       (size_t)n);
	}
	return 0;
fail:
	memset(out, 0, sizeof(*out));
	return -EINVAL;
}
