/* The "pep" service (pgn_module_provide), served by mod_pep: other modules
 * of the host read and write a local account's PEP nodes through the
 * same engine that clients use (access rules aside: the caller acts for
 * the account's owner), so their notifications and limits apply.  For
 * the bridges: XEP-0398 (vCard <-> PEP avatar, mod_vcard) and XEP-0411
 * (private XML bookmarks <-> XEP-0402, mod_private).  A user declares
 * .depends = (const char *const[]){"mod_pep", NULL} (or looks the
 * service up and does without it when mod_pep is not loaded).
 *
 * user is an account's bare JID ("alice@example.org", prepared).  XML
 * arguments are borrowed (copied as needed); XML given to callbacks is
 * borrowed for the call. */
#ifndef PIGEON_PEP_H
#define PIGEON_PEP_H

#include <stddef.h>

#define PGN_PEP_SERVICE "pep"

struct pgn_module;
struct pgn_xml;

/* err 0, or negative: -ENOENT (no such node or item), -EACCES
 * (precondition-not-met: the node's configuration differs from the
 * options), -EFBIG (a limit), -EIO (the store). */
typedef void (*pgn_pep_done_fn)(int err, void *arg);
/* items: the <item/> elements (pubsub namespace, with their payload),
 * newest first; n may be 0. */
typedef void (*pgn_pep_items_fn)(int err, size_t n,
				 const struct pgn_xml *const *items,
				 void *arg);
/* Called after an item was published to (retracted: item NULL, item_id
 * set) a node of a watched name, on any account of the host, whoever
 * published it (a client or a module). */
typedef void (*pgn_pep_watch_fn)(const char *user, const char *node,
				 const char *item_id,
				 const struct pgn_xml *item, void *arg);

struct pgn_pep_service {
	/* Publishes item (an <item id='..'> element whose child is the
	 * payload; without id the engine makes one) to user's node,
	 * creating it with the publish-options form options (a
	 * jabber:x:data submit form, or NULL for the defaults) or checking
	 * them against the node as a client's publish does.  fn may be
	 * NULL.  0, or -ENOMEM/-EINVAL (fn never runs). */
	int (*publish)(void *instance, const char *user, const char *node,
		       const struct pgn_xml *item,
		       const struct pgn_xml *options, pgn_pep_done_fn fn,
		       void *arg);
	int (*retract)(void *instance, const char *user, const char *node,
		       const char *item_id, pgn_pep_done_fn fn, void *arg);
	/* The items of user's node, newest first: the one with id item_id
	 * (not NULL), else at most max (0: the engine's page limit). */
	int (*items)(void *instance, const char *user, const char *node,
		     const char *item_id, size_t max, pgn_pep_items_fn fn,
		     void *arg);
	/* Calls fn after each publish or retract on a node named node, until
	 * the watcher's module unloads (pass it as m).  0 or -ENOMEM. */
	int (*watch)(void *instance, struct pgn_module *m, const char *node,
		     pgn_pep_watch_fn fn, void *arg);
	/* Removes every watch of m (its unload: mod_pep, which it
	 * depends on, is still loaded then). */
	void (*unwatch)(void *instance, struct pgn_module *m);
};

#endif
