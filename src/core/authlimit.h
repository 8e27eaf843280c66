/* Slow-down of password and secret guessing (SASL, component handshakes),
 * per peer address, per account and per address-and-account pair. */
#ifndef PIGEON_AUTHLIMIT_H
#define PIGEON_AUTHLIMIT_H

struct pgn_limits;

enum pgn_auth_outcome {
	PGN_AUTH_OK,     /* the secret was right */
	PGN_AUTH_FAILED, /* a wrong secret: counted */
	PGN_AUTH_ERROR,  /* any other end (malformed, storage error): not
			  * counted, but answered as late as the others */
};

/* base_ms: what an attempt waits once its address, account or pair has two
 * failures; it doubles with each further failure up to 30 s, and failures
 * are forgotten after 10 minutes without one.  0 turns throttling off. */
struct pgn_limits *pgn_limits_new(unsigned base_ms);
void pgn_limits_free(struct pgn_limits *l);
/* Records the end of an attempt from addr (numeric, borrowed) for account
 * (borrowed; "node@host", a component's domain, or NULL when the attempt
 * failed before naming one) and returns how long (ms) to hold its answer.
 * The delay does not depend on the outcome, so that an early answer does
 * not tell a success from a failure; and answers to one throttled address
 * or account are spaced by it, so that guessing in parallel gains
 * nothing.  A success clears its account's and pair's failures only: not
 * the address's, nor other accounts'. */
unsigned pgn_limits_auth_result(struct pgn_limits *l, const char *addr,
				const char *account,
				enum pgn_auth_outcome outcome);

#endif
