/* Server side of SASL PLAIN and SCRAM-SHA-1/-256(-PLUS) (RFC 4616,
 * RFC 5802, RFC 7677, RFC 5929, RFC 9266).  Pure state machine: the
 * caller does the base64 of the XMPP elements, the account lookup and the
 * PBKDF2 of PLAIN off the event loop. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stringprep.h>

#include "pigeon/base64.h"
#include "pigeon/scram.h"

/* One SASL message is a few hundred bytes; anything far bigger is an
 * attack on memory or on SASLprep. */
#define SASL_MAX_MSG 8192
/* Server part of the nonce: 18 random bytes are 24 base64 chars. */
#define SASL_SNONCE_BYTES 18
/* Channel-binding data is a hash or a 32-byte exporter value. */
#define SASL_MAX_CB 1024

enum sasl_mech {
	MECH_PLAIN,
	MECH_SCRAM,
};

enum sasl_state {
	ST_START,        /* waiting for the first client message */
	ST_NEED_CREDS,   /* waiting for pgn_sasl_set_creds */
	ST_NEED_CHECK,   /* PLAIN: waiting for pgn_sasl_password_result */
	ST_SCRAM_FINAL,  /* SCRAM: server-first sent, waiting client-final */
	ST_DONE,
	ST_FAILED,
};

enum sasl_cbind {
	CBIND_N,  /* client does not support channel binding */
	CBIND_Y,  /* client does, but thinks the server does not */
	CBIND_P,  /* client uses channel binding */
};

struct pgn_sasl {
	enum sasl_mech mech;
	enum pgn_hash hash;
	int plus;
	enum sasl_state state;
	int empty_challenge_sent;
	const char *condition;

	int secure;
	unsigned char *exporter;
	size_t exporter_len;
	unsigned char *endpoint;
	size_t endpoint_len;
	unsigned char *unique;
	size_t unique_len;

	char *username;
	char *authzid;
	char *password; /* PLAIN only, wiped on free */

	/* SCRAM */
	char *gs2_header; /* bytes up to and including the second ',' */
	size_t gs2_len;
	const unsigned char *cb; /* points into exporter or endpoint */
	size_t cb_len;
	char *client_first_bare;
	char *server_first;
	char *nonce; /* client nonce + server nonce */
	int unknown_user;
	struct pgn_scram_key key;
};

static const struct {
	const char *name;
	enum sasl_mech mech;
	enum pgn_hash hash;
	int plus;
} sasl_mechs[] = {
	{ "SCRAM-SHA-1", MECH_SCRAM, PGN_HASH_SHA1, 0 },
	{ "SCRAM-SHA-1-PLUS", MECH_SCRAM, PGN_HASH_SHA1, 1 },
	{ "SCRAM-SHA-256", MECH_SCRAM, PGN_HASH_SHA256, 0 },
	{ "SCRAM-SHA-256-PLUS", MECH_SCRAM, PGN_HASH_SHA256, 1 },
	{ "PLAIN", MECH_PLAIN, PGN_HASH_SHA256, 0 },
};
#define SASL_NMECHS (sizeof(sasl_mechs) / sizeof(sasl_mechs[0]))

/* Key for the fake salts of unknown users.  Written once per process
 * under pthread_once, read-only afterwards: it must be the same for every
 * connection, or asking twice would reveal that a user does not exist. */
static unsigned char sasl_fake_key[32];
static pthread_once_t sasl_fake_once = PTHREAD_ONCE_INIT;

static void
sasl_fake_key_init(void)
{
	randombytes_buf(sasl_fake_key, sizeof(sasl_fake_key));
}

/* ---- helpers ------------------------------------------------------------ */

static char *
sasl_strndup(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static enum pgn_sasl_status
sasl_fail(struct pgn_sasl *s, const char *condition)
{
	s->state = ST_FAILED;
	s->condition = condition;
	/* Nothing secret is needed after a failure. */
	pgn_scram_wipe_free(s->password);
	s->password = NULL;
	sodium_memzero(&s->key, sizeof(s->key));
	return PGN_SASL_FAILURE;
}

/* Hands buf over to the caller's out/outlen. */
static void
sasl_give(unsigned char *buf, size_t len, unsigned char **out,
	  size_t *outlen)
{
	if (out)
		*out = buf;
	else
		free(buf);
	if (outlen)
		*outlen = len;
}

static int
sasl_plus_possible(const struct pgn_sasl_tls *tls)
{
	return tls && tls->secure &&
	       ((tls->exporter && tls->exporter_len) ||
		(tls->endpoint && tls->endpoint_len));
}

/* ---- life cycle --------------------------------------------------------- */

int
pgn_sasl_mech_allowed(const char *mech, const struct pgn_sasl_tls *tls)
{
	if (!mech)
		return 0;
	for (size_t i = 0; i < SASL_NMECHS; i++) {
		if (strcmp(mech, sasl_mechs[i].name) != 0)
			continue;
		if (sasl_mechs[i].mech == MECH_PLAIN)
			return tls && tls->secure;
		if (sasl_mechs[i].plus)
			return sasl_plus_possible(tls);
		return 1;
	}
	return 0;
}

static int
sasl_copy_cb(const unsigned char *src, size_t len, unsigned char **dst,
	     size_t *dstlen)
{
	if (!src || len == 0 || len > SASL_MAX_CB)
		return 0;
	*dst = malloc(len);
	if (!*dst)
		return -ENOMEM;
	memcpy(*dst, src, len);
	*dstlen = len;
	return 0;
}

struct pgn_sasl *
pgn_sasl_new(const char *mech, const struct pgn_sasl_tls *tls)
{
	struct pgn_sasl *s;
	size_t i;

	if (!pgn_sasl_mech_allowed(mech, tls))
		return NULL;
	if (sodium_init() < 0)
		return NULL;
	if (pthread_once(&sasl_fake_once, sasl_fake_key_init) != 0)
		return NULL;
	for (i = 0; i < SASL_NMECHS; i++)
		if (strcmp(mech, sasl_mechs[i].name) == 0)
			break;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->mech = sasl_mechs[i].mech;
	s->hash = sasl_mechs[i].hash;
	s->plus = sasl_mechs[i].plus;
	s->state = ST_START;
	if (tls && tls->secure) {
		s->secure = 1;
		if (sasl_copy_cb(tls->exporter, tls->exporter_len,
				 &s->exporter, &s->exporter_len) < 0 ||
		    sasl_copy_cb(tls->endpoint, tls->endpoint_len,
				 &s->endpoint, &s->endpoint_len) < 0 ||
		    sasl_copy_cb(tls->unique, tls->unique_len, &s->unique,
				 &s->unique_len) < 0)
			goto fail;
	}
	return s;
fail:
	pgn_sasl_free(s);
	return NULL;
}

void
pgn_sasl_free(struct pgn_sasl *s)
{
	if (!s)
		return;
	free(s->exporter);
	free(s->endpoint);
	free(s->unique);
	free(s->username);
	free(s->authzid);
	pgn_scram_wipe_free(s->password);
	free(s->gs2_header);
	free(s->client_first_bare);
	free(s->server_first);
	free(s->nonce);
	sodium_memzero(s, sizeof(*s));
	free(s);
}

/* ---- PLAIN (RFC 4616) --------------------------------------------------- */

static enum pgn_sasl_status
sasl_plain_first(struct pgn_sasl *s, const unsigned char *in, size_t inlen)
{
	const unsigned char *nul1, *nul2, *end = in + inlen;
	size_t zlen, clen, plen;
	char *authcid = NULL;
	int rc;

	/* authzid NUL authcid NUL passwd, with exactly two NULs. */
	nul1 = memchr(in, '\0', inlen);
	if (!nul1)
		return sasl_fail(s, "malformed-request");
	nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
	if (!nul2 || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)))
		return sasl_fail(s, "malformed-request");
	zlen = (size_t)(nul1 - in);
	clen = (size_t)(nul2 - nul1 - 1);
	plen = (size_t)(end - nul2 - 1);
	if (clen == 0 || plen == 0)
		return sasl_fail(s, "malformed-request");

	if (zlen && !(s->authzid = sasl_strndup((const char *)in, zlen)))
		goto nomem;
	if (!(authcid = sasl_strndup((const char *)nul1 + 1, clen)))
		goto nomem;
	if (!(s->password = sasl_strndup((const char *)nul2 + 1, plen)))
		goto nomem;
	rc = pgn_scram_saslprep(authcid, 0, &s->username);
	free(authcid);
	if (rc < 0)
		return sasl_fail(s, "not-authorized");
	s->state = ST_NEED_CREDS;
	return PGN_SASL_NEED_CREDS;
nomem:
	free(authcid);
	return sasl_fail(s, "temporary-auth-failure");
}

/* ---- SCRAM (RFC 5802) --------------------------------------------------- */

/* Decodes a saslname (RFC 5802 §5.1: ',' as "=2C", '=' as "=3D") from
 * p[0..len); any other '=' is an error.  Returns 0, -EINVAL or -ENOMEM. */
static int
sasl_saslname(const char *p, size_t len, char **out)
{
	char *d, *q;

	*out = NULL;
	if (len == 0)
		return -EINVAL;
	q = d = malloc(len + 1);
	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		if (p[i] != '=') {
			*q++ = p[i];
			continue;
		}
		if (len - i >= 3 && p[i + 1] == '2' && p[i + 2] == 'C')
			*q++ = ',';
		else if (len - i >= 3 && p[i + 1] == '3' && p[i + 2] == 'D')
			*q++ = '=';
		else {
			free(d);
			return -EINVAL;
		}
		i += 2;
	}
	*q = '\0';
	*out = d;
	return 0;
}

/* Length of the attribute value starting at p (up to ',' or the end). */
static size_t
sasl_attr_len(const char *p)
{
	const char *c = strchr(p, ',');

	return c ? (size_t)(c - p) : strlen(p);
}

/* Checks ",x=value" extensions from p to the end of the string. */
static int
sasl_check_extensions(const char *p)
{
	while (*p) {
		if (*p != ',' || !((p[1] >= 'a' && p[1] <= 'z') ||
				   (p[1] >= 'A' && p[1] <= 'Z')) ||
		    p[2] != '=')
			return -EINVAL;
		/* 'm' is reserved: no extension is understood, so it must
		 * fail (RFC 5802 §5.1). */
		if (p[1] == 'm')
			return -EINVAL;
		p += 3;
		p += sasl_attr_len(p);
	}
	return 0;
}

static int
sasl_nonce_ok(const char *p, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e ||
		    p[i] == ',')
			return 0;
	return 1;
}

static int
sasl_cb_name_ok(const char *p, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = p[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

static enum pgn_sasl_status
sasl_scram_first(struct pgn_sasl *s, const char *msg)
{
	const char *p = msg, *cbname = NULL, *bare;
	size_t cbname_len = 0, len;
	enum sasl_cbind cbind;
	char *user = NULL;
	int rc;

	/* gs2-header: gs2-cbind-flag "," [ "a=" saslname ] "," */
	if (p[0] == 'n' && p[1] == ',') {
		cbind = CBIND_N;
		p += 2;
	} else if (p[0] == 'y' && p[1] == ',') {
		cbind = CBIND_Y;
		p += 2;
	} else if (p[0] == 'p' && p[1] == '=') {
		cbind = CBIND_P;
		cbname = p + 2;
		cbname_len = sasl_attr_len(cbname);
		if (!sasl_cb_name_ok(cbname, cbname_len) ||
		    cbname[cbname_len] != ',')
			return sasl_fail(s, "malformed-request");
		p = cbname + cbname_len + 1;
	} else {
		return sasl_fail(s, "malformed-request");
	}
	if (p[0] == 'a' && p[1] == '=') {
		len = sasl_attr_len(p + 2);
		if (p[2 + len] != ',')
			return sasl_fail(s, "malformed-request");
		rc = sasl_saslname(p + 2, len, &s->authzid);
		if (rc == -ENOMEM)
			return sasl_fail(s, "temporary-auth-failure");
		if (rc < 0)
			return sasl_fail(s, "malformed-request");
		p += 2 + len;
	}
	if (p[0] != ',')
		return sasl_fail(s, "malformed-request");
	p++;
	s->gs2_len = (size_t)(p - msg);
	bare = p;

	/* Channel-binding policy (RFC 5802 §6). */
	switch (cbind) {
	case CBIND_P:
		if (!s->plus)
			return sasl_fail(s, "malformed-request");
		if (cbname_len == 12 &&
		    memcmp(cbname, "tls-exporter", 12) == 0 && s->exporter) {
			s->cb = s->exporter;
			s->cb_len = s->exporter_len;
		} else if (cbname_len == 20 &&
			   memcmp(cbname, "tls-server-end-point", 20) == 0 &&
			   s->endpoint) {
			s->cb = s->endpoint;
			s->cb_len = s->endpoint_len;
		} else if (cbname_len == 10 &&
			   memcmp(cbname, "tls-unique", 10) == 0 && s->unique) {
			/* Not advertised (XEP-0440 lists exporter and
			 * end-point), accepted because deployed clients such
			 * as slixmpp 1.8 still pick it. */
			s->cb = s->unique;
			s->cb_len = s->unique_len;
		} else {
			return sasl_fail(s, "not-authorized");
		}
		break;
	case CBIND_Y:
		if (s->plus)
			return sasl_fail(s, "malformed-request");
		/* The client could bind but believes we cannot: we would
		 * have offered -PLUS here, so someone removed it. */
		if (s->secure && (s->exporter || s->endpoint))
			return sasl_fail(s, "not-authorized");
		break;
	case CBIND_N:
		if (s->plus)
			return sasl_fail(s, "malformed-request");
		break;
	}

	/* client-first-message-bare: n=user,r=nonce[,ext...]; a leading
	 * reserved "m=" is refused like every mandatory extension. */
	if (p[0] != 'n' || p[1] != '=')
		return sasl_fail(s, "malformed-request");
	len = sasl_attr_len(p + 2);
	rc = sasl_saslname(p + 2, len, &user);
	if (rc == -ENOMEM)
		return sasl_fail(s, "temporary-auth-failure");
	if (rc < 0)
		return sasl_fail(s, "malformed-request");
	rc = pgn_scram_saslprep(user, 0, &s->username);
	free(user);
	if (rc < 0)
		return sasl_fail(s, "not-authorized");
	p += 2 + len;
	if (p[0] != ',' || p[1] != 'r' || p[2] != '=')
		return sasl_fail(s, "malformed-request");
	p += 3;
	len = sasl_attr_len(p);
	if (!sasl_nonce_ok(p, len))
		return sasl_fail(s, "malformed-request");
	if (!(s->nonce = sasl_strndup(p, len)))
		return sasl_fail(s, "temporary-auth-failure");
	if (sasl_check_extensions(p + len) < 0)
		return sasl_fail(s, "malformed-request");

	if (!(s->gs2_header = sasl_strndup(msg, s->gs2_len)) ||
	    !(s->client_first_bare = strdup(bare)))
		return sasl_fail(s, "temporary-auth-failure");
	s->state = ST_NEED_CREDS;
	return PGN_SASL_NEED_CREDS;
}

static enum pgn_sasl_status
sasl_scram_server_first(struct pgn_sasl *s,
			const struct pgn_scram_creds *creds,
			unsigned char **out, size_t *outlen)
{
	unsigned char snonce[SASL_SNONCE_BYTES], fake[32];
	const unsigned char *salt;
	size_t salt_len;
	unsigned iterations;
	char *snonce_b64 = NULL, *salt_b64 = NULL, *nonce = NULL;
	unsigned char *buf;
	size_t n;
	int len;

	if (creds) {
		if (creds->salt_len == 0 ||
		    creds->salt_len > sizeof(creds->salt) ||
		    creds->iterations == 0)
			return sasl_fail(s, "temporary-auth-failure");
		salt = creds->salt;
		salt_len = creds->salt_len;
		iterations = creds->iterations;
		s->key = creds->keys[s->hash];
	} else {
		/* Unknown user: a salt that is stable per name (asking twice
		 * gives the same answer, as for a real account) and random
		 * keys so that the final step costs the same and fails. */
		if (pgn_scram_hmac(PGN_HASH_SHA256, sasl_fake_key,
			      sizeof(sasl_fake_key), s->username,
			      strlen(s->username), fake) < 0)
			return sasl_fail(s, "temporary-auth-failure");
		salt = fake;
		salt_len = PGN_SCRAM_SALT_LEN;
		iterations = PGN_SCRAM_DEFAULT_ITERATIONS;
		randombytes_buf(&s->key, sizeof(s->key));
		s->unknown_user = 1;
	}

	randombytes_buf(snonce, sizeof(snonce));
	if (!(snonce_b64 = pgn_base64_encode(snonce, sizeof(snonce))) ||
	    !(salt_b64 = pgn_base64_encode(salt, salt_len)))
		goto nomem;
	n = strlen(s->nonce) + strlen(snonce_b64) + 1;
	if (!(nonce = malloc(n)))
		goto nomem;
	snprintf(nonce, n, "%s%s", s->nonce, snonce_b64);
	free(s->nonce);
	s->nonce = nonce;

	n = strlen(nonce) + strlen(salt_b64) + 32;
	if (!(s->server_first = malloc(n)))
		goto nomem;
	len = snprintf(s->server_first, n, "r=%s,s=%s,i=%u", nonce, salt_b64,
		       iterations);
	if (len < 0 || (size_t)len >= n)
		goto nomem;
	free(snonce_b64);
	free(salt_b64);

	buf = (unsigned char *)strdup(s->server_first);
	if (!buf)
		return sasl_fail(s, "temporary-auth-failure");
	sasl_give(buf, (size_t)len, out, outlen);
	s->state = ST_SCRAM_FINAL;
	return PGN_SASL_CONTINUE;
nomem:
	free(snonce_b64);
	free(salt_b64);
	return sasl_fail(s, "temporary-auth-failure");
}

/* Verifies the proof of the client-final message.  Returns 1 if it
 * proves knowledge of the password, 0 if not, <0 on error. */
static int
sasl_scram_verify(struct pgn_sasl *s, const char *auth_msg,
		  const unsigned char *proof)
{
	size_t hl = pgn_hash_len(s->hash);
	unsigned char sig[PGN_SCRAM_MAX_KEY], ckey[PGN_SCRAM_MAX_KEY];
	unsigned char stored[PGN_SCRAM_MAX_KEY];
	int rc = -ENOMEM;

	if (pgn_scram_hmac(s->hash, s->key.stored_key, hl, auth_msg,
		      strlen(auth_msg), sig) < 0)
		goto fail;
	for (size_t i = 0; i < hl; i++)
		ckey[i] = proof[i] ^ sig[i];
	if (pgn_scram_digest(s->hash, ckey, hl, stored) < 0)
		goto fail;
	rc = CRYPTO_memcmp(stored, s->key.stored_key, hl) == 0;
fail:
	sodium_memzero(sig, sizeof(sig));
	sodium_memzero(ckey, sizeof(ckey));
	sodium_memzero(stored, sizeof(stored));
	return rc;
}

static enum pgn_sasl_status
sasl_scram_final(struct pgn_sasl *s, const char *msg, unsigned char **out,
		 size_t *outlen)
{
	size_t hl = pgn_hash_len(s->hash), len, cblen, plen;
	unsigned char *cbind = NULL, *proof = NULL, sig[PGN_SCRAM_MAX_KEY];
	const char *p = msg, *last;
	char *auth_msg = NULL, *v = NULL, *sig_b64 = NULL;
	const char *cond;
	int rc, ok;

	/* c=cbind,r=nonce[,ext...],p=proof; the proof is the last attribute
	 * and base64 has no ',', so it starts after the last ','. */
	last = strrchr(msg, ',');
	cond = "malformed-request";
	if (!last || last[1] != 'p' || last[2] != '=')
		goto fail;
	if (p[0] != 'c' || p[1] != '=')
		goto fail;
	len = sasl_attr_len(p + 2);
	if (pgn_base64_decode(p + 2, len, &cbind, &cblen) < 0)
		goto fail;
	p += 2 + len;
	if (p[0] != ',' || p[1] != 'r' || p[2] != '=')
		goto fail;
	p += 3;
	len = sasl_attr_len(p);
	if (p + len > last)
		goto fail;
	/* Extensions between the nonce and the proof are checked on a
	 * copy that ends before ",p=". */
	{
		char *ext = sasl_strndup(p + len, (size_t)(last - p - len));
		int erc;

		if (!ext) {
			cond = "temporary-auth-failure";
			goto fail;
		}
		erc = sasl_check_extensions(ext);
		free(ext);
		if (erc < 0)
			goto fail;
	}
	if (pgn_base64_decode(last + 3, strlen(last + 3), &proof, &plen) < 0 ||
	    plen != hl)
		goto fail;

	/* The channel-binding attribute must repeat our gs2 header and, for
	 * "p=", the binding data of this TLS connection. */
	cond = "not-authorized";
	if (cblen != s->gs2_len + s->cb_len ||
	    memcmp(cbind, s->gs2_header, s->gs2_len) != 0 ||
	    (s->cb_len &&
	     CRYPTO_memcmp(cbind + s->gs2_len, s->cb, s->cb_len) != 0))
		goto fail;
	if (strlen(s->nonce) != len || memcmp(p, s->nonce, len) != 0)
		goto fail;

	/* AuthMessage = client-first-bare "," server-first ","
	 *               client-final-without-proof */
	cond = "temporary-auth-failure";
	len = strlen(s->client_first_bare) + strlen(s->server_first) +
	      (size_t)(last - msg) + 3;
	if (!(auth_msg = malloc(len)))
		goto fail;
	snprintf(auth_msg, len, "%s,%s,%.*s", s->client_first_bare,
		 s->server_first, (int)(last - msg), msg);

	rc = sasl_scram_verify(s, auth_msg, proof);
	if (rc < 0)
		goto fail;
	ok = rc == 1 && !s->unknown_user;
	cond = "not-authorized";
	if (!ok)
		goto fail;

	cond = "temporary-auth-failure";
	if (pgn_scram_hmac(s->hash, s->key.server_key, hl, auth_msg,
		      strlen(auth_msg), sig) < 0)
		goto fail;
	if (!(sig_b64 = pgn_base64_encode(sig, hl)))
		goto fail;
	len = strlen(sig_b64) + 3;
	if (!(v = malloc(len)))
		goto fail;
	snprintf(v, len, "v=%s", sig_b64);

	free(cbind);
	free(proof);
	free(auth_msg);
	free(sig_b64);
	sodium_memzero(&s->key, sizeof(s->key));
	sasl_give((unsigned char *)v, strlen(v), out, outlen);
	s->state = ST_DONE;
	return PGN_SASL_SUCCESS;
fail:
	free(cbind);
	free(proof);
	free(auth_msg);
	free(sig_b64);
	free(v);
	return sasl_fail(s, cond);
}

/* ---- public state machine ----------------------------------------------- */

/* Start of a call that may answer with out/outlen: clears them, and
 * fails unless s is in state a or b.  PGN_SASL_CONTINUE means go on;
 * anything else is the call's result. */
static enum pgn_sasl_status
sasl_enter(struct pgn_sasl *s, unsigned char **out, size_t *outlen,
	   enum sasl_state a, enum sasl_state b)
{
	if (out)
		*out = NULL;
	if (outlen)
		*outlen = 0;
	if (!s || s->state == ST_FAILED)
		return PGN_SASL_FAILURE;
	if (s->state != a && s->state != b)
		return sasl_fail(s, "malformed-request");
	return PGN_SASL_CONTINUE;
}

enum pgn_sasl_status
pgn_sasl_step(struct pgn_sasl *s, const unsigned char *in, size_t inlen,
	      unsigned char **out, size_t *outlen)
{
	enum pgn_sasl_status st;
	char *msg;

	st = sasl_enter(s, out, outlen, ST_START, ST_SCRAM_FINAL);
	if (st != PGN_SASL_CONTINUE)
		return st;
	if (inlen > SASL_MAX_MSG || (inlen && !in))
		return sasl_fail(s, "malformed-request");

	/* <auth/> without initial response: the client's first message
	 * comes in a <response/> to an empty challenge (RFC 6120 §6.4.2). */
	if (inlen == 0 && s->state == ST_START && !s->empty_challenge_sent) {
		s->empty_challenge_sent = 1;
		return PGN_SASL_CONTINUE;
	}
	if (inlen == 0)
		return sasl_fail(s, "malformed-request");

	if (s->mech == MECH_PLAIN)
		return sasl_plain_first(s, in, inlen);

	/* SCRAM messages are text without NUL. */
	if (memchr(in, '\0', inlen))
		return sasl_fail(s, "malformed-request");
	if (!(msg = sasl_strndup((const char *)in, inlen)))
		return sasl_fail(s, "temporary-auth-failure");
	if (s->state == ST_START)
		st = sasl_scram_first(s, msg);
	else
		st = sasl_scram_final(s, msg, out, outlen);
	free(msg);
	return st;
}

const char *
pgn_sasl_username(const struct pgn_sasl *s)
{
	return s ? s->username : NULL;
}

const char *
pgn_sasl_authzid(const struct pgn_sasl *s)
{
	return s ? s->authzid : NULL;
}

enum pgn_sasl_status
pgn_sasl_set_creds(struct pgn_sasl *s, const struct pgn_scram_creds *creds,
		   unsigned char **out, size_t *outlen)
{
	enum pgn_sasl_status st;

	st = sasl_enter(s, out, outlen, ST_NEED_CREDS, ST_NEED_CREDS);
	if (st != PGN_SASL_CONTINUE)
		return st;
	if (s->mech == MECH_PLAIN) {
		if (!creds)
			return sasl_fail(s, "not-authorized");
		s->state = ST_NEED_CHECK;
		return PGN_SASL_NEED_PASSWORD_CHECK;
	}
	return sasl_scram_server_first(s, creds, out, outlen);
}

const char *
pgn_sasl_password(const struct pgn_sasl *s)
{
	if (!s || s->state != ST_NEED_CHECK)
		return NULL;
	return s->password;
}

enum pgn_sasl_status
pgn_sasl_password_result(struct pgn_sasl *s, int ok)
{
	if (!s)
		return PGN_SASL_FAILURE;
	if (s->state == ST_FAILED)
		return PGN_SASL_FAILURE;
	if (s->state != ST_NEED_CHECK)
		return sasl_fail(s, "malformed-request");
	if (ok != 1)
		return sasl_fail(s, "not-authorized");
	pgn_scram_wipe_free(s->password);
	s->password = NULL;
	s->state = ST_DONE;
	return PGN_SASL_SUCCESS;
}

const char *
pgn_sasl_condition(const struct pgn_sasl *s)
{
	if (!s)
		return "temporary-auth-failure";
	return s->state == ST_FAILED ? s->condition : NULL;
}
