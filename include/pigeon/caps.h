/* The "caps" service (pgn_module_provide), served by mod_caps: what a
 * client session supports, as verified from its XEP-0115 capabilities.
 * For PEP (XEP-0163 §4: "+notify" features).  A user declares
 * .depends = (const char *const[]){"mod_caps", NULL} and looks it up with
 * pgn_host_service(host, PGN_CAPS_SERVICE, &instance). */
#ifndef PIGEON_CAPS_H
#define PIGEON_CAPS_H

#define PGN_CAPS_SERVICE "caps"

struct pgn_module;
struct pgn_session;

/* The verified features of session s changed after its available
 * presence was handled: they became known later (a store read, or the
 * client's disco#info answer verified), or a later presence announced
 * other caps that were already known.  old: the features before (NULL:
 * unknown), features: the new ones (both sorted and joined by newlines,
 * borrowed for the call).  Not called for the caps of a session's first
 * available presence when they are known at once: the "initial-presence"
 * event that follows covers them. */
typedef void (*pgn_caps_watch_fn)(struct pgn_session *s, const char *old,
				  const char *features, void *arg);

struct pgn_caps_service {
	/* The verified disco#info features of session s (sorted, joined
	 * by newlines; borrowed until the loop runs again), or NULL while
	 * they are unknown (not announced, or being verified). */
	const char *(*session_features)(void *instance,
					const struct pgn_session *s);
	/* Calls fn on each such change until unwatch(m), which m's unload
	 * must call (mod_caps, which m depends on, is still loaded then).
	 * 0 or -ENOMEM. */
	int (*watch)(void *instance, struct pgn_module *m,
		     pgn_caps_watch_fn fn, void *arg);
	/* Removes every watch of m. */
	void (*unwatch)(void *instance, struct pgn_module *m);
};

#endif
