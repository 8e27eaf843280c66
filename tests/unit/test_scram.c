/* Unit tests for SCRAM credentials and the SASL server state machine.
 * The client side is a minimal SCRAM client written here with OpenSSL,
 * so the RFC 5802 / RFC 7677 vectors check both sides independently. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "pigeon/scram.h"

/* ---- test-side SCRAM client -------------------------------------------- */

static const EVP_MD *
t_md(enum pgn_hash h)
{
	return h == PGN_HASH_SHA1 ? EVP_sha1() : EVP_sha256();
}

static void
t_hmac(enum pgn_hash h, const unsigned char *key, size_t keylen,
       const void *data, size_t len, unsigned char *out)
{
	unsigned int olen = 0;

	ck_assert_ptr_nonnull(HMAC(t_md(h), key, (int)keylen, data, len, out,
				   &olen));
	ck_assert_uint_eq(olen, pgn_hash_len(h));
}

static char *
t_b64(const unsigned char *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	ck_assert_ptr_nonnull(out);
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* Test-only decoder: EVP_DecodeBlock counts padding as zero bytes. */
static size_t
t_unb64(const char *in, unsigned char *out)
{
	size_t len = strlen(in);
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);

	ck_assert_int_ge(n, 0);
	if (len >= 1 && in[len - 1] == '=')
		n--;
	if (len >= 2 && in[len - 2] == '=')
		n--;
	return (size_t)n;
}

struct t_client {
	enum pgn_hash hash;
	const char *password;
	char cnonce[32];
	char *gs2;
	unsigned char cb[64];
	size_t cb_len;
	char bare[256];
	char nonce[256];
	unsigned char salt[64];
	size_t salt_len;
	unsigned iter;
	char server_first[512];
	char auth_msg[2048];
	unsigned char server_sig[PGN_SCRAM_MAX_KEY];
};

/* Computes ClientProof (base64 into proof_b64) and the expected server
 * signature for the given AuthMessage, as RFC 5802 §3 says a client does. */
static void
t_client_proof(enum pgn_hash h, const char *password,
	       const unsigned char *salt, size_t salt_len, unsigned iter,
	       const char *auth_msg, char **proof_b64,
	       unsigned char *server_sig)
{
	size_t hl = pgn_hash_len(h);
	unsigned char salted[32], ckey[32], skey[32], stored[32], sig[32];
	unsigned char proof[32];

	ck_assert_int_eq(PKCS5_PBKDF2_HMAC(password, (int)strlen(password),
					   salt, (int)salt_len, (int)iter,
					   t_md(h), (int)hl, salted),
			 1);
	t_hmac(h, salted, hl, "Client Key", 10, ckey);
	ck_assert_int_eq(EVP_Digest(ckey, hl, stored, NULL, t_md(h), NULL),
			 1);
	t_hmac(h, stored, hl, auth_msg, strlen(auth_msg), sig);
	for (size_t i = 0; i < hl; i++)
		proof[i] = ckey[i] ^ sig[i];
	*proof_b64 = t_b64(proof, hl);
	t_hmac(h, salted, hl, "Server Key", 10, skey);
	t_hmac(h, skey, hl, auth_msg, strlen(auth_msg), server_sig);
}

/* ---- RFC vectors --------------------------------------------------------- */

struct t_vector {
	enum pgn_hash hash;
	const char *bare, *server_first, *final_wo_proof, *salt_b64;
	const char *proof, *verifier;
};

static const struct t_vector vectors[] = {
	{ /* RFC 5802 §5 */
	  PGN_HASH_SHA1, "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
	  "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,"
	  "i=4096",
	  "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
	  "QSXCR+Q6sek8bf92", "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
	  "rmF9pqV8S7suAoZWja4dJRkFsKQ=" },
	{ /* RFC 7677 §3 */
	  PGN_HASH_SHA256, "n=user,r=rOprNGfwEbeRWgbNEkqO",
	  "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	  "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
	  "W22ZaJ0SNY7soEsUEjb6gQ==",
	  "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	  "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" },
};

START_TEST(test_rfc_vectors)
{
	const struct t_vector *v = &vectors[_i];
	enum pgn_hash h = v->hash;
	size_t hl = pgn_hash_len(h);
	struct pgn_scram_creds creds;
	unsigned char salt[64], sig[32], ckey[32], stored[32], proof[32];
	unsigned char server_sig[32];
	char auth_msg[512], *proof_b64, *b;
	size_t salt_len;

	salt_len = t_unb64(v->salt_b64, salt);
	snprintf(auth_msg, sizeof(auth_msg), "%s,%s,%s", v->bare,
		 v->server_first, v->final_wo_proof);

	/* The test client reproduces the RFC's proof and verifier. */
	t_client_proof(h, "pencil", salt, salt_len, 4096, auth_msg,
		       &proof_b64, server_sig);
	ck_assert_str_eq(proof_b64, v->proof);
	b = t_b64(server_sig, hl);
	ck_assert_str_eq(b, v->verifier);
	free(b);
	free(proof_b64);

	/* pgn_scram_derive gives keys that verify the RFC proof and sign
	 * like the RFC server. */
	ck_assert_int_eq(pgn_scram_derive("pencil", salt, salt_len, 4096,
					  &creds),
			 0);
	ck_assert_uint_eq(creds.salt_len, salt_len);
	ck_assert_uint_eq(creds.iterations, 4096);
	t_hmac(h, creds.keys[h].server_key, hl, auth_msg, strlen(auth_msg),
	       sig);
	b = t_b64(sig, hl);
	ck_assert_str_eq(b, v->verifier);
	free(b);
	ck_assert_uint_eq(t_unb64(v->proof, proof), hl);
	t_hmac(h, creds.keys[h].stored_key, hl, auth_msg, strlen(auth_msg),
	       sig);
	for (size_t i = 0; i < hl; i++)
		ckey[i] = proof[i] ^ sig[i];
	EVP_Digest(ckey, hl, stored, NULL, t_md(h), NULL);
	ck_assert_mem_eq(stored, creds.keys[h].stored_key, hl);

	ck_assert_int_eq(pgn_scram_check_password(&creds, "pencil"), 1);
	ck_assert_int_eq(pgn_scram_check_password(&creds, "pencil2"), 0);
}
END_TEST

/* The RFC client-first goes through pgn_sasl; the server nonce is
 * random, so the rest of the exchange is recomputed by the client. */
START_TEST(test_rfc_through_sasl)
{
	const struct t_vector *v = &vectors[_i];
	const char *mech = v->hash == PGN_HASH_SHA1 ? "SCRAM-SHA-1" :
						      "SCRAM-SHA-256";
	struct pgn_scram_creds creds;
	struct pgn_sasl *s;
	unsigned char salt[64], *out = NULL, server_sig[32];
	size_t salt_len, outlen = 0;
	char first[128], final[512], auth_msg[1024], *sf, *proof, *sig;
	const char *cnonce = strstr(v->bare, "r=") + 2;

	salt_len = t_unb64(v->salt_b64, salt);
	ck_assert_int_eq(pgn_scram_derive("pencil", salt, salt_len, 4096,
					  &creds),
			 0);
	s = pgn_sasl_new(mech, NULL);
	ck_assert_ptr_nonnull(s);
	snprintf(first, sizeof(first), "n,,%s", v->bare);
	ck_assert_int_eq(pgn_sasl_step(s, (unsigned char *)first,
				       strlen(first), &out, &outlen),
			 PGN_SASL_NEED_CREDS);
	ck_assert_ptr_null(out);
	ck_assert_str_eq(pgn_sasl_username(s), "user");
	ck_assert_ptr_null(pgn_sasl_authzid(s));
	ck_assert_int_eq(pgn_sasl_set_creds(s, &creds, &out, &outlen),
			 PGN_SASL_CONTINUE);
	ck_assert_ptr_nonnull(out);
	sf = strndup((char *)out, outlen);
	free(out);
	ck_assert_int_eq(strncmp(sf, "r=", 2), 0);
	ck_assert_int_eq(strncmp(sf + 2, cnonce, strlen(cnonce)), 0);
	{
		char tail[64];

		snprintf(tail, sizeof(tail), ",s=%s,i=4096", v->salt_b64);
		ck_assert_str_eq(sf + strlen(sf) - strlen(tail), tail);
	}
	*strchr(sf, ',') = '\0';
	snprintf(final, sizeof(final), "c=biws,r=%s", sf + 2);
	sf[strlen(sf)] = ',';
	snprintf(auth_msg, sizeof(auth_msg), "%s,%s,%s", v->bare, sf, final);
	t_client_proof(v->hash, "pencil", salt, salt_len, 4096, auth_msg,
		       &proof, server_sig);
	strcat(final, ",p=");
	strcat(final, proof);
	ck_assert_int_eq(pgn_sasl_step(s, (unsigned char *)final,
				       strlen(final), &out, &outlen),
			 PGN_SASL_SUCCESS);
	sig = t_b64(server_sig, pgn_hash_len(v->hash));
	ck_assert_uint_eq(outlen, 2 + strlen(sig));
	ck_assert_int_eq(memcmp(out, "v=", 2), 0);
	ck_assert_int_eq(memcmp(out + 2, sig, strlen(sig)), 0);
	free(out);
	free(sig);
	free(proof);
	free(sf);
	pgn_sasl_free(s);
}
END_TEST

/* ---- full exchanges ------------------------------------------------------ */

static struct pgn_scram_creds pencil_creds;

static void
setup_creds(void)
{
	ck_assert_int_eq(pgn_scram_derive("pencil", NULL, 0,
					  PGN_SCRAM_DEFAULT_ITERATIONS,
					  &pencil_creds),
			 0);
}

static const unsigned char exporter_data[32] = "exporter-exporter-exporter-01234";
static const unsigned char endpoint_data[32] = "endpoint-endpoint-endpoint-01234";

static const struct pgn_sasl_tls tls_none = { .secure = 0 };
static const struct pgn_sasl_tls tls_plain = { .secure = 1 };
static const struct pgn_sasl_tls tls_both = {
	.secure = 1,
	.exporter = exporter_data,
	.exporter_len = 32,
	.endpoint = endpoint_data,
	.endpoint_len = 32,
};
static const struct pgn_sasl_tls tls_endpoint = {
	.secure = 1,
	.endpoint = endpoint_data,
	.endpoint_len = 32,
};

struct t_exchange {
	const char *mech;
	const struct pgn_sasl_tls *tls;
	const char *gs2;          /* gs2 header the client sends */
	const char *c_gs2;        /* gs2 header it repeats in c= (NULL: same) */
	const unsigned char *cb;  /* binding data the client puts in c= */
	size_t cb_len;
	const char *user;         /* saslname as sent (escaped) */
	const char *password;
	int unknown;              /* set_creds(NULL) */
	const char *fake_nonce;   /* wrong r= in client-final, or NULL */
};

/* Runs an exchange; returns the last status, leaves *sp for inspection
 * and the server-first message in server_first (if reached). */
static enum pgn_sasl_status
t_run(const struct t_exchange *x, struct pgn_sasl **sp, char **server_first)
{
	enum pgn_hash h = strstr(x->mech, "256") ? PGN_HASH_SHA256 :
						   PGN_HASH_SHA1;
	struct pgn_sasl *s;
	enum pgn_sasl_status st;
	unsigned char *out = NULL, salt[64], server_sig[32], cbin[256];
	size_t outlen = 0, salt_len, n;
	char msg[1024], final[1024], auth_msg[2048], *sf, *nonce, *cb64;
	char *proof, *sig, *p;
	const char *bare, *c_gs2 = x->c_gs2 ? x->c_gs2 : x->gs2;
	unsigned iter;

	*server_first = NULL;
	s = pgn_sasl_new(x->mech, x->tls);
	ck_assert_ptr_nonnull(s);
	*sp = s;
	snprintf(msg, sizeof(msg), "%sn=%s,r=Cl1entN0nce+/", x->gs2,
		 x->user);
	bare = msg + strlen(x->gs2);
	st = pgn_sasl_step(s, (unsigned char *)msg, strlen(msg), &out,
			   &outlen);
	ck_assert_ptr_null(out);
	if (st != PGN_SASL_NEED_CREDS)
		return st;
	st = pgn_sasl_set_creds(s, x->unknown ? NULL : &pencil_creds, &out,
				&outlen);
	if (st != PGN_SASL_CONTINUE) {
		ck_assert_ptr_null(out);
		return st;
	}
	sf = strndup((char *)out, outlen);
	free(out);
	*server_first = sf;

	/* r=<nonce>,s=<salt>,i=<iter> */
	ck_assert_int_eq(strncmp(sf, "r=Cl1entN0nce+/", 15), 0);
	p = strstr(sf, ",s=");
	ck_assert_ptr_nonnull(p);
	nonce = strndup(sf + 2, (size_t)(p - sf - 2));
	ck_assert_uint_gt(strlen(nonce), 15 + 16);
	{
		char salt_b64[128];
		const char *i = strstr(p, ",i=");

		ck_assert_ptr_nonnull(i);
		snprintf(salt_b64, sizeof(salt_b64), "%.*s",
			 (int)(i - p - 3), p + 3);
		salt_len = t_unb64(salt_b64, salt);
		iter = (unsigned)strtoul(i + 3, NULL, 10);
	}
	ck_assert_uint_eq(salt_len, 16);
	ck_assert_uint_eq(iter, PGN_SCRAM_DEFAULT_ITERATIONS);

	n = strlen(c_gs2);
	memcpy(cbin, c_gs2, n);
	if (x->cb_len)
		memcpy(cbin + n, x->cb, x->cb_len);
	cb64 = t_b64(cbin, n + x->cb_len);
	snprintf(final, sizeof(final), "c=%s,r=%s", cb64,
		 x->fake_nonce ? x->fake_nonce : nonce);
	snprintf(auth_msg, sizeof(auth_msg), "%s,%s,%s", bare, sf, final);
	t_client_proof(h, x->password, salt, salt_len, iter, auth_msg, &proof,
		       server_sig);
	strcat(final, ",p=");
	strcat(final, proof);
	st = pgn_sasl_step(s, (unsigned char *)final, strlen(final), &out,
			   &outlen);
	if (st == PGN_SASL_SUCCESS) {
		sig = t_b64(server_sig, pgn_hash_len(h));
		ck_assert_uint_eq(outlen, 2 + strlen(sig));
		ck_assert_int_eq(memcmp(out, "v=", 2), 0);
		ck_assert_int_eq(memcmp(out + 2, sig, strlen(sig)), 0);
		free(sig);
	} else {
		ck_assert_ptr_null(out);
	}
	free(out);
	free(cb64);
	free(proof);
	free(nonce);
	return st;
}

static const struct {
	struct t_exchange x;
	enum pgn_sasl_status status;
	const char *condition;
} exchanges[] = {
	/* 0 */ { { "SCRAM-SHA-1", &tls_none, "n,,", NULL, NULL, 0, "user",
		    "pencil", 0, NULL },
		  PGN_SASL_SUCCESS, NULL },
	/* 1 */ { { "SCRAM-SHA-256", &tls_none, "n,,", NULL, NULL, 0, "user",
		    "pencil", 0, NULL },
		  PGN_SASL_SUCCESS, NULL },
	/* 2 */ { { "SCRAM-SHA-256-PLUS", &tls_both, "p=tls-exporter,,", NULL,
		    exporter_data, 32, "user", "pencil", 0, NULL },
		  PGN_SASL_SUCCESS, NULL },
	/* 3 */ { { "SCRAM-SHA-1-PLUS", &tls_both, "p=tls-server-end-point,,",
		    NULL, endpoint_data, 32, "user", "pencil", 0, NULL },
		  PGN_SASL_SUCCESS, NULL },
	/* 4: wrong password */
	{ { "SCRAM-SHA-256", &tls_none, "n,,", NULL, NULL, 0, "user",
	    "pencil2", 0, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 5: unknown user fails only at the end */
	{ { "SCRAM-SHA-256", &tls_none, "n,,", NULL, NULL, 0, "nobody",
	    "pencil", 1, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 6: "y" while we would have offered -PLUS: downgrade */
	{ { "SCRAM-SHA-256", &tls_both, "y,,", NULL, NULL, 0, "user",
	    "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 7: "y" without TLS is honest */
	{ { "SCRAM-SHA-256", &tls_none, "y,,", NULL, NULL, 0, "user",
	    "pencil", 0, NULL },
	  PGN_SASL_SUCCESS, NULL },
	/* 8: "y" over TLS without binding data is honest too */
	{ { "SCRAM-SHA-1", &tls_plain, "y,,", NULL, NULL, 0, "user",
	    "pencil", 0, NULL },
	  PGN_SASL_SUCCESS, NULL },
	/* 9: binding data of another connection */
	{ { "SCRAM-SHA-256-PLUS", &tls_both, "p=tls-exporter,,", NULL,
	    endpoint_data, 32, "user", "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 10: no binding data at all in c= */
	{ { "SCRAM-SHA-256-PLUS", &tls_both, "p=tls-exporter,,", NULL, NULL,
	    0, "user", "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 11: c= does not repeat the gs2 header */
	{ { "SCRAM-SHA-256", &tls_none, "n,a=juliet,", "n,,", NULL, 0,
	    "user", "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 12: binding type we do not have on this connection */
	{ { "SCRAM-SHA-256-PLUS", &tls_endpoint, "p=tls-exporter,,", NULL,
	    exporter_data, 32, "user", "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 13: unknown binding type */
	{ { "SCRAM-SHA-256-PLUS", &tls_both, "p=tls-unique,,", NULL,
	    exporter_data, 32, "user", "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 14: -PLUS without binding */
	{ { "SCRAM-SHA-256-PLUS", &tls_both, "n,,", NULL, NULL, 0, "user",
	    "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "malformed-request" },
	/* 15: binding on a non-PLUS mechanism */
	{ { "SCRAM-SHA-256", &tls_both, "p=tls-exporter,,", NULL,
	    exporter_data, 32, "user", "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "malformed-request" },
	/* 16: nonce not ours */
	{ { "SCRAM-SHA-1", &tls_none, "n,,", NULL, NULL, 0, "user", "pencil",
	    0, "Cl1entN0nce+/forged" },
	  PGN_SASL_FAILURE, "not-authorized" },
	/* 17: authzid with escapes; username goes through SASLprep */
	{ { "SCRAM-SHA-256", &tls_none, "n,a=a=2Cb=3Dc,", NULL, NULL, 0,
	    "us\xc2\xad" "er", "pencil", 0, NULL },
	  PGN_SASL_SUCCESS, NULL },
	/* 18: bad escape in the authzid */
	{ { "SCRAM-SHA-256", &tls_none, "n,a=a=2Xb,", NULL, NULL, 0, "user",
	    "pencil", 0, NULL },
	  PGN_SASL_FAILURE, "malformed-request" },
	/* 19: unknown user with the right password still fails */
	{ { "SCRAM-SHA-1-PLUS", &tls_both, "p=tls-exporter,,", NULL,
	    exporter_data, 32, "ghost", "pencil", 1, NULL },
	  PGN_SASL_FAILURE, "not-authorized" },
};

START_TEST(test_exchange)
{
	struct pgn_sasl *s = NULL;
	char *sf = NULL;
	enum pgn_sasl_status st;
	unsigned char *out = (unsigned char *)1;
	size_t outlen = 1;

	st = t_run(&exchanges[_i].x, &s, &sf);
	ck_assert_msg(st == exchanges[_i].status, "exchange %d: status %d",
		      _i, (int)st);
	if (exchanges[_i].condition)
		ck_assert_str_eq(pgn_sasl_condition(s),
				 exchanges[_i].condition);
	else
		ck_assert_ptr_null(pgn_sasl_condition(s));

	/* Nothing moves after the end. */
	ck_assert_int_eq(pgn_sasl_step(s, (const unsigned char *)"x", 1, &out,
				       &outlen),
			 PGN_SASL_FAILURE);
	ck_assert_ptr_null(out);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_ptr_nonnull(pgn_sasl_condition(s));
	ck_assert_int_eq(pgn_sasl_set_creds(s, &pencil_creds, &out, &outlen),
			 PGN_SASL_FAILURE);
	free(sf);
	pgn_sasl_free(s);
}
END_TEST

START_TEST(test_authzid_username)
{
	struct pgn_sasl *s = NULL;
	char *sf = NULL;

	ck_assert_int_eq(t_run(&exchanges[17].x, &s, &sf), PGN_SASL_SUCCESS);
	ck_assert_str_eq(pgn_sasl_authzid(s), "a,b=c");
	ck_assert_str_eq(pgn_sasl_username(s), "user");
	free(sf);
	pgn_sasl_free(s);
}
END_TEST

/* An unknown user gets the same salt every time, like a real account. */
START_TEST(test_unknown_user_stable)
{
	struct pgn_sasl *s1 = NULL, *s2 = NULL, *s3 = NULL;
	char *sf1 = NULL, *sf2 = NULL, *sf3 = NULL;
	struct t_exchange x = exchanges[5].x;

	t_run(&x, &s1, &sf1);
	t_run(&x, &s2, &sf2);
	x.user = "somebody-else";
	t_run(&x, &s3, &sf3);
	ck_assert_ptr_nonnull(sf1);
	ck_assert_ptr_nonnull(sf2);
	ck_assert_ptr_nonnull(sf3);
	ck_assert_str_eq(strstr(sf1, ",s="), strstr(sf2, ",s="));
	ck_assert_str_ne(strstr(sf1, ",s="), strstr(sf3, ",s="));
	/* Server nonces differ. */
	ck_assert_str_ne(sf1, sf2);
	free(sf1);
	free(sf2);
	free(sf3);
	pgn_sasl_free(s1);
	pgn_sasl_free(s2);
	pgn_sasl_free(s3);
}
END_TEST

/* ---- malformed messages --------------------------------------------------- */

static const struct {
	const char *msg;
	size_t len; /* 0: strlen */
	const char *condition;
} bad_first[] = {
	{ "x,,n=user,r=abc", 0, "malformed-request" },
	{ "n,n=user,r=abc", 0, "malformed-request" },
	{ "n,,m=ext,n=user,r=abc", 0, "malformed-request" },
	{ "n,,n=user", 0, "malformed-request" },
	{ "n,,r=abc", 0, "malformed-request" },
	{ "n,,n=,r=abc", 0, "malformed-request" },
	{ "n,,n=user,r=", 0, "malformed-request" },
	{ "n,,n=user,r=abc,m=x", 0, "malformed-request" },
	{ "n,,n=user,r=abc,", 0, "malformed-request" },
	{ "n,,n=us=zzer,r=abc", 0, "malformed-request" },
	{ "n,,n=user=,r=abc", 0, "malformed-request" },
	{ "n,,n=user,r=a\x7f" "bc", 0, "malformed-request" },
	{ "n,,n=user\0x,r=abc", 17, "malformed-request" },
	{ "n,a=,n=user,r=abc", 0, "malformed-request" },
	{ "p=,,n=user,r=abc", 0, "malformed-request" },
	{ "p=tls exporter,,n=user,r=abc", 0, "malformed-request" },
	{ "n", 0, "malformed-request" },
	{ "n,", 0, "malformed-request" },
	{ "n,,", 0, "malformed-request" },
	{ "n,,n=\x07,r=abc", 0, "not-authorized" }, /* SASLprep: control */
	{ "n,,n=\xff,r=abc", 0, "not-authorized" }, /* not UTF-8 */
};

START_TEST(test_bad_first)
{
	struct pgn_sasl *s = pgn_sasl_new("SCRAM-SHA-256", &tls_none);
	unsigned char *out = NULL;
	size_t outlen = 0;
	size_t len = bad_first[_i].len ? bad_first[_i].len :
					 strlen(bad_first[_i].msg);

	ck_assert_ptr_nonnull(s);
	ck_assert_msg(pgn_sasl_step(s, (const unsigned char *)bad_first[_i].msg,
				    len, &out, &outlen) == PGN_SASL_FAILURE,
		      "accepted: %s", bad_first[_i].msg);
	ck_assert_ptr_null(out);
	ck_assert_str_eq(pgn_sasl_condition(s), bad_first[_i].condition);
	pgn_sasl_free(s);
}
END_TEST

/* Reaches the client-final step of SHA-256 without TLS; returns the
 * combined nonce (caller frees). */
static char *
t_to_final(struct pgn_sasl **sp)
{
	static const char first[] = "n,,n=user,r=abcdef";
	struct pgn_sasl *s = pgn_sasl_new("SCRAM-SHA-256", &tls_none);
	unsigned char *out = NULL;
	size_t outlen = 0;
	char *sf, *nonce;

	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(pgn_sasl_step(s, (const unsigned char *)first,
				       strlen(first), &out, &outlen),
			 PGN_SASL_NEED_CREDS);
	ck_assert_int_eq(pgn_sasl_set_creds(s, &pencil_creds, &out, &outlen),
			 PGN_SASL_CONTINUE);
	sf = strndup((char *)out, outlen);
	free(out);
	nonce = strndup(sf + 2, (size_t)(strchr(sf, ',') - sf - 2));
	free(sf);
	*sp = s;
	return nonce;
}

static const struct {
	const char *fmt; /* %s = nonce */
	const char *condition;
} bad_final[] = {
	{ "c=biws,r=%s", "malformed-request" },
	{ "c=biws,r=%s,p=", "malformed-request" },
	{ "c=biws,r=%s,p=AAAA", "malformed-request" },
	{ "c=biws,r=%s,p=!!!!", "malformed-request" },
	{ "c=bi ws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "malformed-request" },
	{ "c=biw,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "malformed-request" },
	{ "r=%s,c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "malformed-request" },
	{ "c=biws,r=%s,m=x,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "malformed-request" },
	{ "c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,r=%s",
	  "malformed-request" },
	/* well-formed but wrong */
	{ "c=eSws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "not-authorized" },
	{ "c=biws,r=%sX,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "not-authorized" },
	{ "c=biws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "not-authorized" },
	{ "c=biws,r=%s,x=ext,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	  "not-authorized" },
};

START_TEST(test_bad_final)
{
	struct pgn_sasl *s = NULL;
	char *nonce = t_to_final(&s), msg[512];
	unsigned char *out = NULL;
	size_t outlen = 0;

	snprintf(msg, sizeof(msg), bad_final[_i].fmt, nonce);
	ck_assert_msg(pgn_sasl_step(s, (unsigned char *)msg, strlen(msg), &out,
				    &outlen) == PGN_SASL_FAILURE,
		      "accepted: %s", msg);
	ck_assert_ptr_null(out);
	ck_assert_str_eq(pgn_sasl_condition(s), bad_final[_i].condition);
	free(nonce);
	pgn_sasl_free(s);
}
END_TEST

START_TEST(test_order)
{
	struct pgn_sasl *s = pgn_sasl_new("SCRAM-SHA-1", NULL);
	static const char first[] = "n,,n=user,r=abcdef";
	unsigned char *out = NULL;
	size_t outlen = 0;

	/* No initial response: one empty challenge, then the message. */
	ck_assert_int_eq(pgn_sasl_step(s, NULL, 0, &out, &outlen),
			 PGN_SASL_CONTINUE);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(pgn_sasl_step(s, (const unsigned char *)first,
				       strlen(first), &out, &outlen),
			 PGN_SASL_NEED_CREDS);
	/* A response before the credentials are in is out of order. */
	ck_assert_int_eq(pgn_sasl_step(s, (const unsigned char *)first,
				       strlen(first), &out, &outlen),
			 PGN_SASL_FAILURE);
	ck_assert_str_eq(pgn_sasl_condition(s), "malformed-request");
	pgn_sasl_free(s);

	/* Two empty messages are not a protocol. */
	s = pgn_sasl_new("SCRAM-SHA-1", NULL);
	ck_assert_int_eq(pgn_sasl_step(s, NULL, 0, &out, &outlen),
			 PGN_SASL_CONTINUE);
	ck_assert_int_eq(pgn_sasl_step(s, NULL, 0, &out, &outlen),
			 PGN_SASL_FAILURE);
	pgn_sasl_free(s);

	/* set_creds before any message. */
	s = pgn_sasl_new("SCRAM-SHA-256", NULL);
	ck_assert_int_eq(pgn_sasl_set_creds(s, &pencil_creds, &out, &outlen),
			 PGN_SASL_FAILURE);
	ck_assert_ptr_null(out);
	pgn_sasl_free(s);

	/* Oversized input. */
	s = pgn_sasl_new("SCRAM-SHA-256", NULL);
	{
		char *big = malloc(100000);

		memset(big, 'a', 100000);
		memcpy(big, "n,,n=", 5);
		ck_assert_int_eq(pgn_sasl_step(s, (unsigned char *)big,
					       100000, &out, &outlen),
				 PGN_SASL_FAILURE);
		free(big);
	}
	pgn_sasl_free(s);
	pgn_sasl_free(NULL);
}
END_TEST

/* ---- PLAIN ------------------------------------------------------------------ */

static enum pgn_sasl_status
t_plain(const char *msg, size_t len, const char *password_check,
	int unknown, struct pgn_sasl **sp)
{
	struct pgn_sasl *s = pgn_sasl_new("PLAIN", &tls_plain);
	unsigned char *out = NULL;
	size_t outlen = 0;
	enum pgn_sasl_status st;
	int ok;

	ck_assert_ptr_nonnull(s);
	*sp = s;
	st = pgn_sasl_step(s, (const unsigned char *)msg, len, &out, &outlen);
	ck_assert_ptr_null(out);
	if (st != PGN_SASL_NEED_CREDS)
		return st;
	ck_assert_ptr_null(pgn_sasl_password(s));
	st = pgn_sasl_set_creds(s, unknown ? NULL : &pencil_creds, &out,
				&outlen);
	ck_assert_ptr_null(out);
	if (st != PGN_SASL_NEED_PASSWORD_CHECK)
		return st;
	ck_assert_ptr_nonnull(pgn_sasl_password(s));
	ck_assert_str_eq(pgn_sasl_password(s), password_check);
	ok = pgn_scram_check_password(&pencil_creds, pgn_sasl_password(s));
	ck_assert_int_ge(ok, 0);
	st = pgn_sasl_password_result(s, ok);
	ck_assert_ptr_null(pgn_sasl_password(s));
	return st;
}

START_TEST(test_plain)
{
	struct pgn_sasl *s;

	ck_assert_int_eq(t_plain("\0user\0pencil", 12, "pencil", 0, &s),
			 PGN_SASL_SUCCESS);
	ck_assert_str_eq(pgn_sasl_username(s), "user");
	ck_assert_ptr_null(pgn_sasl_authzid(s));
	ck_assert_ptr_null(pgn_sasl_condition(s));
	ck_assert_int_eq(pgn_sasl_password_result(s, 1), PGN_SASL_FAILURE);
	pgn_sasl_free(s);

	ck_assert_int_eq(t_plain("juliet@example.com\0USER\0pencil", 30,
				 "pencil", 0, &s),
			 PGN_SASL_SUCCESS);
	ck_assert_str_eq(pgn_sasl_authzid(s), "juliet@example.com");
	/* SASLprep does not fold case; the caller's nodeprep does. */
	ck_assert_str_eq(pgn_sasl_username(s), "USER");
	pgn_sasl_free(s);

	ck_assert_int_eq(t_plain("\0user\0pencil2", 13, "pencil2", 0, &s),
			 PGN_SASL_FAILURE);
	ck_assert_str_eq(pgn_sasl_condition(s), "not-authorized");
	pgn_sasl_free(s);

	ck_assert_int_eq(t_plain("\0nobody\0pencil", 14, "pencil", 1, &s),
			 PGN_SASL_FAILURE);
	ck_assert_str_eq(pgn_sasl_condition(s), "not-authorized");
	pgn_sasl_free(s);

	/* Password SASLprep: soft hyphen maps to nothing. */
	ck_assert_int_eq(t_plain("\0user\0pen\xc2\xad" "cil", 14,
				 "pen\xc2\xad" "cil", 0, &s),
			 PGN_SASL_SUCCESS);
	pgn_sasl_free(s);
}
END_TEST

static const struct {
	const char *msg;
	size_t len;
} bad_plain[] = {
	{ "user\0pencil", 11 },
	{ "\0\0pencil", 8 },
	{ "\0user\0", 6 },
	{ "a\0b\0c\0d", 7 },
	{ "userpencil", 10 },
};

START_TEST(test_plain_malformed)
{
	struct pgn_sasl *s;

	ck_assert_int_eq(t_plain(bad_plain[_i].msg, bad_plain[_i].len, NULL,
				 0, &s),
			 PGN_SASL_FAILURE);
	ck_assert_str_eq(pgn_sasl_condition(s), "malformed-request");
	pgn_sasl_free(s);
}
END_TEST

START_TEST(test_mechs)
{
	ck_assert_ptr_null(pgn_sasl_new("PLAIN", &tls_none));
	ck_assert_ptr_null(pgn_sasl_new("PLAIN", NULL));
	ck_assert_ptr_null(pgn_sasl_new("SCRAM-SHA-256-PLUS", &tls_plain));
	ck_assert_ptr_null(pgn_sasl_new("SCRAM-SHA-1-PLUS", &tls_none));
	ck_assert_ptr_null(pgn_sasl_new("DIGEST-MD5", &tls_both));
	ck_assert_ptr_null(pgn_sasl_new("scram-sha-1", &tls_both));
	ck_assert_ptr_null(pgn_sasl_new(NULL, &tls_both));

	ck_assert_int_eq(pgn_sasl_mech_allowed("PLAIN", &tls_none), 0);
	ck_assert_int_eq(pgn_sasl_mech_allowed("PLAIN", &tls_plain), 1);
	ck_assert_int_eq(pgn_sasl_mech_allowed("SCRAM-SHA-1", &tls_none), 1);
	ck_assert_int_eq(pgn_sasl_mech_allowed("SCRAM-SHA-256", NULL), 1);
	ck_assert_int_eq(pgn_sasl_mech_allowed("SCRAM-SHA-256-PLUS",
					       &tls_plain),
			 0);
	ck_assert_int_eq(pgn_sasl_mech_allowed("SCRAM-SHA-256-PLUS",
					       &tls_endpoint),
			 1);
	ck_assert_int_eq(pgn_sasl_mech_allowed("SCRAM-SHA-1-PLUS", &tls_both),
			 1);
	/* Binding data without TLS means nothing. */
	{
		struct pgn_sasl_tls t = tls_both;

		t.secure = 0;
		ck_assert_int_eq(pgn_sasl_mech_allowed("SCRAM-SHA-1-PLUS", &t),
				 0);
	}
	ck_assert_int_eq(pgn_sasl_mech_allowed("X-OAUTH2", &tls_both), 0);
}
END_TEST

/* ---- credentials ------------------------------------------------------------ */

START_TEST(test_creds_codec)
{
	struct pgn_scram_creds c2;
	char *salt, *s1, *v1, *s256, *v256;

	ck_assert_int_eq(pgn_scram_creds_encode(&pencil_creds, &salt, &s1, &v1,
						&s256, &v256),
			 0);
	ck_assert_uint_eq(strlen(salt), 24);
	ck_assert_uint_eq(strlen(s1), 28);
	ck_assert_uint_eq(strlen(s256), 44);
	ck_assert_int_eq(pgn_scram_creds_decode(salt, 4096, s1, v1, s256, v256,
						&c2),
			 0);
	ck_assert_uint_eq(c2.salt_len, pencil_creds.salt_len);
	ck_assert_mem_eq(c2.salt, pencil_creds.salt, c2.salt_len);
	ck_assert_uint_eq(c2.iterations, 4096);
	ck_assert_mem_eq(&c2.keys, &pencil_creds.keys, sizeof(c2.keys));
	ck_assert_int_eq(pgn_scram_check_password(&c2, "pencil"), 1);

	/* Wrong lengths, bad base64, missing parts. */
	ck_assert_int_eq(pgn_scram_creds_decode(salt, 4096, s256, v1, s256,
						v256, &c2),
			 -EINVAL);
	ck_assert_int_eq(pgn_scram_creds_decode("QUJD=", 4096, s1, v1, s256,
						v256, &c2),
			 -EINVAL);
	ck_assert_int_eq(pgn_scram_creds_decode("Q UJ", 4096, s1, v1, s256,
						v256, &c2),
			 -EINVAL);
	ck_assert_int_eq(pgn_scram_creds_decode("", 4096, s1, v1, s256, v256,
						&c2),
			 -EINVAL);
	ck_assert_int_eq(pgn_scram_creds_decode(salt, 0, s1, v1, s256, v256,
						&c2),
			 -EINVAL);
	ck_assert_int_eq(pgn_scram_creds_decode(salt, 4096, NULL, v1, s256,
						v256, &c2),
			 -EINVAL);
	ck_assert_int_eq(pgn_scram_creds_decode("QUI=", 4096, s1, v1, s256,
						v256, &c2),
			 0);
	ck_assert_uint_eq(c2.salt_len, 2);
	ck_assert_int_eq(pgn_scram_creds_decode("QQ==", 4096, s1, v1, s256,
						v256, &c2),
			 0);
	ck_assert_uint_eq(c2.salt_len, 1);
	free(salt);
	free(s1);
	free(v1);
	free(s256);
	free(v256);
}
END_TEST

START_TEST(test_derive_saslprep)
{
	struct pgn_scram_creds a, b;
	static const unsigned char salt[] = "0123456789abcdef";

	/* RFC 4013 §3 examples: the same password once prepared. */
	ck_assert_int_eq(pgn_scram_derive("I\xc2\xadX", salt, 16, 64, &a), 0);
	ck_assert_int_eq(pgn_scram_derive("IX", salt, 16, 64, &b), 0);
	ck_assert_mem_eq(&a.keys, &b.keys, sizeof(a.keys));
	ck_assert_int_eq(pgn_scram_check_password(&b, "I\xc2\xadX"), 1);
	ck_assert_int_eq(pgn_scram_check_password(&b, "\xe2\x85\xa8"), 1);
	ck_assert_int_eq(pgn_scram_check_password(&b, "ix"), 0);
	ck_assert_int_eq(pgn_scram_derive("\xc2\xaa", salt, 16, 64, &a), 0);
	ck_assert_int_eq(pgn_scram_derive("a", salt, 16, 64, &b), 0);
	ck_assert_mem_eq(&a.keys, &b.keys, sizeof(a.keys));

	/* Prohibited or impossible inputs. */
	ck_assert_int_eq(pgn_scram_derive("\x07", salt, 16, 64, &a), -EINVAL);
	ck_assert_int_eq(pgn_scram_derive("\xd8\xa7" "1", salt, 16, 64, &a),
			 -EINVAL);
	ck_assert_int_eq(pgn_scram_derive("", salt, 16, 64, &a), -EINVAL);
	ck_assert_int_eq(pgn_scram_derive("\xff", salt, 16, 64, &a), -EINVAL);
	ck_assert_int_eq(pgn_scram_derive(NULL, salt, 16, 64, &a), -EINVAL);
	ck_assert_int_eq(pgn_scram_derive("x", salt, 16, 0, &a), -EINVAL);
	ck_assert_int_eq(pgn_scram_derive("x", salt, 0, 64, &a), -EINVAL);
	ck_assert_int_eq(pgn_scram_derive("x", salt, 65, 64, &a), -EINVAL);
	ck_assert_int_eq(pgn_scram_check_password(&b, "\x07"), 0);

	/* Random salts differ. */
	ck_assert_int_eq(pgn_scram_derive("x", NULL, 0, 64, &a), 0);
	ck_assert_int_eq(pgn_scram_derive("x", NULL, 0, 64, &b), 0);
	ck_assert_uint_eq(a.salt_len, PGN_SCRAM_SALT_LEN);
	ck_assert_mem_ne(a.salt, b.salt, PGN_SCRAM_SALT_LEN);

	ck_assert_uint_eq(pgn_hash_len(PGN_HASH_SHA1), 20);
	ck_assert_uint_eq(pgn_hash_len(PGN_HASH_SHA256), 32);
}
END_TEST

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *
scram_suite(void)
{
	Suite *s = suite_create("scram");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_unchecked_fixture(tc, setup_creds, NULL);
	tcase_add_loop_test(tc, test_rfc_vectors, 0, NELEM(vectors));
	tcase_add_loop_test(tc, test_rfc_through_sasl, 0, NELEM(vectors));
	tcase_add_loop_test(tc, test_exchange, 0, NELEM(exchanges));
	tcase_add_test(tc, test_authzid_username);
	tcase_add_test(tc, test_unknown_user_stable);
	tcase_add_loop_test(tc, test_bad_first, 0, NELEM(bad_first));
	tcase_add_loop_test(tc, test_bad_final, 0, NELEM(bad_final));
	tcase_add_test(tc, test_order);
	tcase_add_test(tc, test_plain);
	tcase_add_loop_test(tc, test_plain_malformed, 0, NELEM(bad_plain));
	tcase_add_test(tc, test_mechs);
	tcase_add_test(tc, test_creds_codec);
	tcase_add_test(tc, test_derive_saslprep);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(scram_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
