/* SCRAM (RFC 5802, RFC 7677) credentials and the server side of the SASL
 * mechanisms SCRAM-SHA-1, SCRAM-SHA-256, their -PLUS variants and PLAIN.
 * Pure logic: no I/O, no event loop, so it is unit-tested alone.
 * Passwords are never stored: only salt, iteration count, StoredKey and
 * ServerKey per hash. */
#ifndef PIGEON_SCRAM_H
#define PIGEON_SCRAM_H

#include <stddef.h>

enum pgn_hash {
	PGN_HASH_SHA1 = 0,
	PGN_HASH_SHA256 = 1,
};
#define PGN_HASH_COUNT 2
#define PGN_SCRAM_MAX_KEY 32
#define PGN_SCRAM_SALT_LEN 16
#define PGN_SCRAM_DEFAULT_ITERATIONS 4096

struct pgn_scram_key {
	unsigned char stored_key[PGN_SCRAM_MAX_KEY];
	unsigned char server_key[PGN_SCRAM_MAX_KEY];
};

/* What the store keeps for one account. */
struct pgn_scram_creds {
	unsigned char salt[64];
	size_t salt_len;
	unsigned iterations;
	struct pgn_scram_key keys[PGN_HASH_COUNT];
};

size_t pgn_hash_len(enum pgn_hash h);

/* Derives creds from a password (already SASLprep'ed by the caller or raw;
 * this function applies SASLprep itself).  salt NULL = random salt.
 * Heavy (PBKDF2): call it off the event loop.  0, -EINVAL or -ENOMEM. */
int pgn_scram_derive(const char *password, const unsigned char *salt,
		     size_t salt_len, unsigned iterations,
		     struct pgn_scram_creds *out);
/* Checks a clear password (PLAIN) against creds in constant time.
 * Heavy (PBKDF2).  Returns 1 if it matches, 0 if not, <0 on error. */
int pgn_scram_check_password(const struct pgn_scram_creds *creds,
			     const char *password);

/* Text form for storage: base64 of salt/keys. Caller frees the strings. */
int pgn_scram_creds_encode(const struct pgn_scram_creds *creds,
			   char **salt_b64, char **sha1_stored_b64,
			   char **sha1_server_b64, char **sha256_stored_b64,
			   char **sha256_server_b64);
int pgn_scram_creds_decode(const char *salt_b64, unsigned iterations,
			   const char *sha1_stored_b64,
			   const char *sha1_server_b64,
			   const char *sha256_stored_b64,
			   const char *sha256_server_b64,
			   struct pgn_scram_creds *out);

/* ---- primitives shared by scram.c and sasl.c ---------------------------- */

/* SASLprep (RFC 4013) into *out (caller wipes and frees it with
 * pgn_scram_wipe_free); stored != 0 refuses unassigned code points (a
 * string to store), 0 allows them (a query).  0 or -EINVAL, also for an
 * empty result. */
int pgn_scram_saslprep(const char *in, int stored, char **out);
/* Zeroes the string, then frees it; NULL is a no-op. */
void pgn_scram_wipe_free(char *s);
/* HMAC(key, data) and H(data) with hash h into out (pgn_hash_len(h)
 * bytes).  0 or -ENOMEM. */
int pgn_scram_hmac(enum pgn_hash h, const unsigned char *key, size_t keylen,
		   const void *data, size_t len, unsigned char *out);
int pgn_scram_digest(enum pgn_hash h, const unsigned char *data, size_t len,
		     unsigned char *out);

/* ---- SASL server state machine --------------------------------------- */

enum pgn_sasl_status {
	PGN_SASL_CONTINUE = 0,   /* send *out as <challenge/> */
	PGN_SASL_NEED_CREDS,     /* look up pgn_sasl_username(); then set_creds */
	PGN_SASL_NEED_PASSWORD_CHECK, /* PLAIN: run check_password off-loop,
				       * then pgn_sasl_password_result() */
	PGN_SASL_SUCCESS,        /* send <success/> with *out (may be empty) */
	PGN_SASL_FAILURE,        /* send <failure/> with pgn_sasl_condition() */
};

/* Channel-binding data of the TLS connection, copied by pgn_sasl_new. */
struct pgn_sasl_tls {
	int secure;                    /* 1 if the stream is TLS-protected */
	const unsigned char *exporter; /* tls-exporter (RFC 9266), or NULL */
	size_t exporter_len;
	const unsigned char *endpoint; /* tls-server-end-point, or NULL */
	size_t endpoint_len;
	const unsigned char *unique;   /* tls-unique (RFC 5929), or NULL;
					* accepted, never advertised */
	size_t unique_len;
};

struct pgn_sasl;

/* Mechanism names: "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
 * "SCRAM-SHA-256-PLUS", "PLAIN".  Returns NULL if the mechanism is unknown
 * or not allowed (PLAIN without TLS, -PLUS without channel binding). */
struct pgn_sasl *pgn_sasl_new(const char *mech, const struct pgn_sasl_tls *tls);
/* Wipes secrets and frees. */
void pgn_sasl_free(struct pgn_sasl *s);
/* 1 if mech may be offered given tls (used to build <mechanisms/>). */
int pgn_sasl_mech_allowed(const char *mech, const struct pgn_sasl_tls *tls);

/* Feeds the decoded client data of <auth/> or <response/>.  On CONTINUE or
 * SUCCESS, *out and *outlen hold raw bytes to base64 (caller frees *out). */
enum pgn_sasl_status pgn_sasl_step(struct pgn_sasl *s, const unsigned char *in,
				   size_t inlen, unsigned char **out,
				   size_t *outlen);
/* After NEED_CREDS: the authentication identity (SASLprep'ed; a JID
 * nodepart is prepared by the caller). */
const char *pgn_sasl_username(const struct pgn_sasl *s);
/* Requested authorization identity or NULL. */
const char *pgn_sasl_authzid(const struct pgn_sasl *s);
/* Gives the creds found (NULL = no such user; the exchange then fails
 * without telling the client that the user is unknown). Returns the next
 * status as pgn_sasl_step does. */
enum pgn_sasl_status pgn_sasl_set_creds(struct pgn_sasl *s,
					const struct pgn_scram_creds *creds,
					unsigned char **out, size_t *outlen);
/* PLAIN: the clear password to check (valid until the next call). */
const char *pgn_sasl_password(const struct pgn_sasl *s);
/* PLAIN: reports the check's result (1 ok, 0 bad). */
enum pgn_sasl_status pgn_sasl_password_result(struct pgn_sasl *s, int ok);
/* RFC 6120 §6.5 condition after FAILURE: "not-authorized",
 * "malformed-request", "invalid-mechanism", "invalid-authzid",
 * "encryption-required", "incorrect-encoding", "aborted",
 * "temporary-auth-failure". */
const char *pgn_sasl_condition(const struct pgn_sasl *s);

#endif
