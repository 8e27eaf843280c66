/* The "roster" service (pgn_module_provide), served by mod_roster: other
 * modules ask it about a local user's contacts instead of reading its
 * tables or keeping copies.  A user of it declares
 * .depends = (const char *const[]){"mod_roster", NULL} and looks it up
 * with pgn_host_service(host, PGN_ROSTER_SERVICE, &instance). */
#ifndef PIGEON_ROSTER_H
#define PIGEON_ROSTER_H

#include <stddef.h>

#define PGN_ROSTER_SERVICE "roster"

/* Subscription states (RFC 6121 §3), as a mask of those asked for. */
#define PGN_SUB_NONE 0x1u
#define PGN_SUB_TO 0x2u
#define PGN_SUB_FROM 0x4u
#define PGN_SUB_BOTH 0x8u
#define PGN_SUB_ANY 0xfu

/* err 0 and found 1 or 0; or err < 0 (the store failed) and found 0. */
typedef void (*pgn_roster_found_fn)(int err, int found, void *arg);

/* One roster item as the service gives it out (borrowed for the call). */
struct pgn_roster_contact {
	const char *jid;    /* prepared bare JID */
	unsigned sub;       /* one PGN_SUB_* bit */
	const char *groups; /* its groups joined by '\n'; "" for none */
};
/* err 0 and the n items asked for (any order); or err < 0 and n 0. */
typedef void (*pgn_roster_list_fn)(int err, size_t n,
				   const struct pgn_roster_contact *items,
				   void *arg);

struct pgn_roster_service {
	/* Whether contact (a prepared bare JID) is an item of the roster
	 * of user (the bare JID of an account of the provider's host) with
	 * a subscription in mask.  fn runs exactly once: at once from
	 * memory while the user's roster is loaded (a session is online),
	 * else after one store read, which sees every change made before
	 * the call.  0, or -ENOMEM (fn never runs). */
	int (*has_contact)(void *instance, const char *user,
			   const char *contact, unsigned mask,
			   pgn_roster_found_fn fn, void *arg);
	/* The items of user's roster with a subscription in mask (for PEP:
	 * the contacts that get the owner's notifications, PGN_SUB_FROM |
	 * PGN_SUB_BOTH; the owners a contact follows, PGN_SUB_TO |
	 * PGN_SUB_BOTH).  fn runs exactly once, as for has_contact: from
	 * memory while the roster is loaded, else after one store read.  0,
	 * or -ENOMEM (fn never runs). */
	int (*contacts)(void *instance, const char *user, unsigned mask,
			pgn_roster_list_fn fn, void *arg);
	/* Whether contact is an item of user's roster with a subscription
	 * in mask and in at least one of groups (joined by '\n'; NULL or ""
	 * matches no group): the pubsub#roster_groups_allowed of the
	 * "roster" access model (XEP-0060 §4.5).  As has_contact. */
	int (*in_groups)(void *instance, const char *user, const char *contact,
			 unsigned mask, const char *groups,
			 pgn_roster_found_fn fn, void *arg);
};

#endif
