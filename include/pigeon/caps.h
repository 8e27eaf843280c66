/* The "caps" service (pgn_module_provide), served by mod_caps: what a
 * client session supports, as verified from its XEP-0115 capabilities.
 * For PEP (XEP-0163 §4: "+notify" features).  A user declares
 * .depends = (const char *const[]){"mod_caps", NULL} and looks it up with
 * pgn_host_service(host, PGN_CAPS_SERVICE, &instance). */
#ifndef PIGEON_CAPS_H
#define PIGEON_CAPS_H

#define PGN_CAPS_SERVICE "caps"

struct pgn_session;

struct pgn_caps_service {
	/* The verified disco#info features of session s (sorted, joined
	 * by newlines; borrowed until the loop runs again), or NULL while
	 * they are unknown (not announced, or being verified). */
	const char *(*session_features)(void *instance,
					const struct pgn_session *s);
};

#endif
