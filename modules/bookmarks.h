/* Bookmark conversions between XEP-0048 (<storage xmlns='storage:bookmarks'>,
 * in XEP-0049 private storage) and XEP-0402 (one item per room in the PEP
 * node urn:xmpp:bookmarks:1), for mod_private's bridge.  Pure functions on
 * XML trees (modules/bookmarks.c); results are new trees or strings the
 * caller frees, arguments are borrowed. */
#ifndef PIGEON_MODULES_BOOKMARKS_H
#define PIGEON_MODULES_BOOKMARKS_H

#include <stddef.h>

#include "pigeon/xml.h"

#define NS_BM_LEGACY "storage:bookmarks"
#define NS_BM "urn:xmpp:bookmarks:1"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_XDATA "jabber:x:data"
/* Rooms converted per account (what the engine's max_items=max keeps by
 * default; private max_size bounds them too). */
#define MAX_BOOKMARKS 1000

#pragma GCC visibility push(hidden)

/* Whether e is <name xmlns='ns'/>. */
int bm_is(const struct pgn_xml *e, const char *ns, const char *name);
/* A legacy <conference jid=.../> as the XEP-0402 item
 *   <item id=jid><conference xmlns=NS_BM name autojoin='true'?><nick/>
 *   <password/><extensions>(its other children)</extensions></conference>
 *   </item>
 * in the pubsub namespace.  NULL: no jid (*nomem 0) or out of memory
 * (*nomem 1). */
struct pgn_xml *bm_item_from_legacy(const struct pgn_xml *lc, int *nomem);
/* The XEP-0402 item as a legacy <conference jid=id autojoin='true|false'>
 * (the <extensions/> children become its own).  NULL: not a bookmark
 * (*nomem 0) or out of memory (*nomem 1). */
struct pgn_xml *bm_legacy_from_item(const struct pgn_xml *item, int *nomem);
/* item in the form bm_item_from_legacy gives, serialised, so that two
 * spellings of one bookmark compare equal; NULL: not a bookmark or out
 * of memory. */
char *bm_canonical(const struct pgn_xml *item);
/* XEP-0402's publish-options form (whitelist, max_items=max, persist,
 * send_last_published_item=never); NULL when out of memory. */
struct pgn_xml *bm_options(void);
/* The items wanted for the <storage/>s that are legacy's children: one
 * per room (the first of a JID wins, rooms without one are skipped), at
 * most MAX_BOOKMARKS, into out (MAX_BOOKMARKS slots; the caller frees
 * each of *n).  0 or -ENOMEM. */
int bm_wanted(const struct pgn_xml *legacy, struct pgn_xml **out, size_t *n);
/* Whether existing[0..n) holds wanted's room unchanged. */
int bm_unchanged(const struct pgn_xml *wanted, size_t n,
		 const struct pgn_xml *const *existing);

#pragma GCC visibility pop

#endif
