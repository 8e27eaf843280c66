/* The "blocking" service (pgn_module_provide), served by mod_blocking:
 * whether a local user blocks a JID (XEP-0191), for stanzas the server
 * sends on a user's behalf without routing them from the user's session
 * (pgn_route fires no outbound "pre-" filters): PEP notifications and
 * last items (modules/pubsub/notify.c).  A user of it looks it up with
 * pgn_host_service(host, PGN_BLOCKING_SERVICE, &instance) and does
 * without when mod_blocking is not loaded. */
#ifndef PIGEON_BLOCKING_H
#define PIGEON_BLOCKING_H

#define PGN_BLOCKING_SERVICE "blocking"

/* err 0 and blocked 1 or 0; or err < 0 (the list could not be read:
 * callers fail closed) and blocked 1. */
typedef void (*pgn_blocking_fn)(int err, int blocked, void *arg);

struct pgn_blocking_service {
	/* Whether the block list of user (the bare JID of an account of
	 * the provider's host; any other JID blocks nothing) matches jid
	 * (full or bare; XEP-0016 "JID Matching").  fn runs exactly once:
	 * at once while the list is cached (the user has a session), else
	 * after it loaded (one store read shared by the calls made
	 * meanwhile).  0, or -EINVAL (jid malformed), -ENOMEM: fn never
	 * runs. */
	int (*blocks)(void *instance, const char *user, const char *jid,
		      pgn_blocking_fn fn, void *arg);
};

#endif
