/* libFuzzer target for the SASL server state machine (src/lib/sasl.c,
 * src/lib/scram.c, src/lib/base64.c).
 *
 * Input: byte 0 selects the mechanism (SCRAM-SHA-256, SCRAM-SHA-1-PLUS,
 * PLAIN) and which channel-binding data the "TLS connection" has; the
 * rest is split at the first '\n' into the client-first and the
 * client-final message.
 *
 * A fuzzer cannot guess the random server nonce nor compute a proof, so
 * the client-final message may use placeholders that the harness fills
 * in from the exchange, the way a real client would:
 *   @N  the combined nonce from server-first
 *   @C  base64 of the gs2 header plus this connection's binding data
 *   @P  the correct proof for the password "pencil"
 * Accounts: "user" exists (creds derived once, 16 PBKDF2 iterations to
 * keep it fast); every other name goes through the unknown-user path. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "pigeon/base64.h"
#include "pigeon/scram.h"

#define FUZZ_PASSWORD "pencil"
#define FUZZ_USER "user"
#define FUZZ_ITERATIONS 16

static struct pgn_scram_creds fuzz_creds;
static unsigned char fuzz_salted[PGN_HASH_COUNT][PGN_SCRAM_MAX_KEY];

static const EVP_MD *
md_of(enum pgn_hash h)
{
	return h == PGN_HASH_SHA1 ? EVP_sha1() : EVP_sha256();
}

static void
fuzz_init(void)
{
	static const unsigned char salt[PGN_SCRAM_SALT_LEN] = "fuzz-salt-16byte";

	if (pgn_scram_derive(FUZZ_PASSWORD, salt, sizeof(salt),
			     FUZZ_ITERATIONS, &fuzz_creds) != 0)
		abort();
	for (int h = 0; h < PGN_HASH_COUNT; h++)
		if (PKCS5_PBKDF2_HMAC(FUZZ_PASSWORD, strlen(FUZZ_PASSWORD),
				      salt, sizeof(salt), FUZZ_ITERATIONS,
				      md_of((enum pgn_hash)h),
				      (int)pgn_hash_len((enum pgn_hash)h),
				      fuzz_salted[h]) != 1)
			abort();
}

/* Growable byte string. */
struct str {
	char *p;
	size_t len, cap;
};

static void
str_add(struct str *s, const void *d, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		s->cap = (s->len + n + 1) * 2;
		s->p = realloc(s->p, s->cap);
		if (!s->p)
			abort();
	}
	memcpy(s->p + s->len, d, n);
	s->len += n;
	s->p[s->len] = '\0';
}

/* The client proof for auth_msg (RFC 5802 §3). */
static char *
client_proof(enum pgn_hash h, const char *auth_msg, size_t auth_len)
{
	size_t hl = pgn_hash_len(h);
	unsigned char ckey[PGN_SCRAM_MAX_KEY], stored[PGN_SCRAM_MAX_KEY];
	unsigned char sig[PGN_SCRAM_MAX_KEY], proof[PGN_SCRAM_MAX_KEY];
	unsigned int len = (unsigned int)hl;

	if (!HMAC(md_of(h), fuzz_salted[h], (int)hl, (const unsigned char *)"Client Key",
		  10, ckey, &len) ||
	    EVP_Digest(ckey, hl, stored, NULL, md_of(h), NULL) != 1 ||
	    !HMAC(md_of(h), stored, (int)hl, (const unsigned char *)auth_msg,
		  auth_len, sig, &len))
		abort();
	for (size_t i = 0; i < hl; i++)
		proof[i] = ckey[i] ^ sig[i];
	return pgn_base64_encode(proof, hl);
}

/* Expands the placeholders of the client-final message. */
static struct str
expand_final(const char *in, size_t len, enum pgn_hash h,
	     const char *server_first, const char *client_first,
	     size_t cf_len, const unsigned char *cb, size_t cb_len)
{
	struct str out = { 0 };
	const char *nonce = "", *ne;
	size_t nonce_len = 0;

	if (strncmp(server_first, "r=", 2) == 0) {
		nonce = server_first + 2;
		ne = strchr(nonce, ',');
		nonce_len = ne ? (size_t)(ne - nonce) : strlen(nonce);
	}
	str_add(&out, "", 0);
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '@' && i + 1 < len && in[i + 1] == 'N') {
			str_add(&out, nonce, nonce_len);
			i++;
		} else if (in[i] == '@' && i + 1 < len && in[i + 1] == 'C') {
			/* gs2 header: client-first up to its second ','. */
			const char *c1 = memchr(client_first, ',', cf_len);
			const char *c2 = c1 ? memchr(c1 + 1, ',',
					cf_len - (size_t)(c1 + 1 - client_first)) : NULL;
			size_t gl = c2 ? (size_t)(c2 + 1 - client_first) : 0;
			unsigned char *raw = malloc(gl + cb_len + 1);
			char *b64;

			if (!raw)
				abort();
			memcpy(raw, client_first, gl);
			if (cb_len)
				memcpy(raw + gl, cb, cb_len);
			b64 = pgn_base64_encode(raw, gl + cb_len);
			if (!b64)
				abort();
			str_add(&out, b64, strlen(b64));
			free(b64);
			free(raw);
			i++;
		} else if (in[i] == '@' && i + 1 < len && in[i + 1] == 'P') {
			/* AuthMessage = client-first-bare "," server-first
			 * "," client-final-without-proof, where the latter is
			 * what was written so far minus the trailing ",p=". */
			const char *c1 = memchr(client_first, ',', cf_len);
			const char *c2 = c1 ? memchr(c1 + 1, ',',
					cf_len - (size_t)(c1 + 1 - client_first)) : NULL;
			struct str am = { 0 };
			size_t wl = out.len;
			char *proof;

			if (c2)
				str_add(&am, c2 + 1,
					cf_len - (size_t)(c2 + 1 - client_first));
			str_add(&am, ",", 1);
			str_add(&am, server_first, strlen(server_first));
			str_add(&am, ",", 1);
			if (wl >= 3 && memcmp(out.p + wl - 3, ",p=", 3) == 0)
				wl -= 3;
			str_add(&am, out.p, wl);
			proof = client_proof(h, am.p, am.len);
			if (!proof)
				abort();
			str_add(&out, proof, strlen(proof));
			free(proof);
			free(am.p);
			i++;
		} else {
			str_add(&out, in + i, 1);
		}
	}
	return out;
}

static const char *const mechs[] = { "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
				     "PLAIN", "SCRAM-SHA-1",
				     "SCRAM-SHA-256-PLUS" };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	static const unsigned char exporter[32] = "exporter-0123456789abcdef012345";
	static const unsigned char endpoint[32] = "endpoint-0123456789abcdef012345";
	static const unsigned char unique[12] = "unique-01234";
	struct pgn_sasl_tls tls = { 0 };
	struct pgn_sasl *s;
	enum pgn_sasl_status st;
	const char *mech, *first, *final, *nl;
	size_t first_len, final_len;
	unsigned char *out = NULL;
	size_t outlen = 0;
	enum pgn_hash h;
	uint8_t sel;

	if (!ready) {
		fuzz_init();
		ready = 1;
	}
	if (size < 1)
		return 0;
	sel = data[0];
	/* Mostly the three mechanisms of the brief; the other two
	 * sometimes, so that -PLUS/non-PLUS mixes are tried both ways. */
	mech = mechs[(sel & 0x07) < 6 ? (sel & 0x07) % 3 : 3 + ((sel & 0x07) - 6)];
	h = strstr(mech, "SHA-1") ? PGN_HASH_SHA1 : PGN_HASH_SHA256;
	tls.secure = !(sel & 0x08) || strcmp(mech, "PLAIN") == 0 ||
		     strstr(mech, "PLUS");
	if (sel & 0x10) {
		tls.exporter = exporter;
		tls.exporter_len = sizeof(exporter);
	}
	if (sel & 0x20) {
		tls.endpoint = endpoint;
		tls.endpoint_len = sizeof(endpoint);
	}
	if (sel & 0x40) {
		tls.unique = unique;
		tls.unique_len = sizeof(unique);
	}
	if (strstr(mech, "PLUS") && !tls.exporter && !tls.endpoint) {
		tls.exporter = exporter;
		tls.exporter_len = sizeof(exporter);
	}

	first = (const char *)data + 1;
	nl = memchr(first, '\n', size - 1);
	first_len = nl ? (size_t)(nl - first) : size - 1;
	final = nl ? nl + 1 : NULL;
	final_len = nl ? size - 1 - first_len - 1 : 0;

	s = pgn_sasl_new(mech, &tls);
	if (!s)
		abort(); /* every selected mechanism is allowed here */

	st = pgn_sasl_step(s, (const unsigned char *)first, first_len, &out,
			   &outlen);
	free(out);
	out = NULL;
	if (st == PGN_SASL_CONTINUE && first_len == 0) {
		/* Empty initial response: the first message comes now. */
		st = pgn_sasl_step(s, (const unsigned char *)final, final_len,
				   &out, &outlen);
		free(out);
		out = NULL;
		first = final;
		first_len = final_len;
		final = NULL;
		final_len = 0;
	}
	if (st == PGN_SASL_NEED_CREDS) {
		const char *user = pgn_sasl_username(s);
		const struct pgn_scram_creds *creds;

		if (!user)
			abort();
		(void)pgn_sasl_authzid(s);
		creds = strcmp(user, FUZZ_USER) == 0 ? &fuzz_creds : NULL;
		st = pgn_sasl_set_creds(s, creds, &out, &outlen);
		if (st == PGN_SASL_NEED_PASSWORD_CHECK) {
			const char *pw = pgn_sasl_password(s);
			int ok;

			if (!pw)
				abort();
			ok = pgn_scram_check_password(creds, pw);
			st = pgn_sasl_password_result(s, ok == 1);
			if ((st == PGN_SASL_SUCCESS) != (ok == 1))
				abort();
		} else if (st == PGN_SASL_CONTINUE) {
			char *server_first;
			struct str fin;

			if (!out || outlen == 0)
				abort();
			server_first = malloc(outlen + 1);
			if (!server_first)
				abort();
			memcpy(server_first, out, outlen);
			server_first[outlen] = '\0';
			free(out);
			out = NULL;
			/* The binding data the client chose by name. */
			const unsigned char *cb = NULL;
			size_t cb_len = 0;

#define CB_IS(name) (first_len > sizeof("p=" name) - 1 && \
		     memcmp(first, "p=" name ",", sizeof("p=" name)) == 0)
			if (CB_IS("tls-exporter")) {
				cb = tls.exporter;
				cb_len = tls.exporter_len;
			} else if (CB_IS("tls-server-end-point")) {
				cb = tls.endpoint;
				cb_len = tls.endpoint_len;
			} else if (CB_IS("tls-unique")) {
				cb = tls.unique;
				cb_len = tls.unique_len;
			}
#undef CB_IS
			fin = expand_final(final ? final : "", final_len, h,
					   server_first, first, first_len, cb,
					   cb ? cb_len : 0);
			st = pgn_sasl_step(s, (const unsigned char *)fin.p,
					   fin.len, &out, &outlen);
			if (st == PGN_SASL_SUCCESS &&
			    (!out || outlen < 3 || memcmp(out, "v=", 2) != 0 ||
			     !creds))
				abort();
			free(out);
			out = NULL;
			free(fin.p);
			free(server_first);
		} else {
			free(out);
			out = NULL;
		}
	}
	if (st == PGN_SASL_FAILURE && !pgn_sasl_condition(s))
		abort();
	/* Anything after the end is refused, never crashes. */
	st = pgn_sasl_step(s, (const unsigned char *)"x", 1, &out, &outlen);
	free(out);
	pgn_sasl_free(s);
	return 0;
}
