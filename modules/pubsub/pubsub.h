/* The PubSub engine (XEP-0060) shared by its two services: mod_pep
 * (XEP-0163, one service per account at the user's bare JID) and
 * mod_pubsub (a generic service at pubsub.<host>).  Internal to those two
 * modules: both .so files are built from these sources (Makefile.am).
 * Design: doc/design/pubsub.md.
 *
 * Files:
 *   config.c  node configuration: defaults, data forms (node_config and
 *             publish-options), the store encoding
 *   store.c   the tables of schemas/<driver>/014_pubsub.sql
 *   engine.c  the protocol: the pubsub and pubsub#owner iq requests,
 *             errors, disco, limits
 *   notify.c  who gets event notifications and last items, and who may
 *             see a node (access models): +notify through mod_caps,
 *             presence/roster through mod_roster, subscriptions
 *   ctl.c     pigeonctl commands and stats figures (SQL on the tables)
 *   mod_pep.c, mod_pubsub.c  the two module definitions
 *
 * Every name here starts with ps_; nothing is exported from the .so but
 * pgn_module_def (the module loader looks up only that). */
#ifndef PIGEON_PUBSUB_H
#define PIGEON_PUBSUB_H

#include <stddef.h>
#include <stdint.h>

#include "pigeon/module.h"
#include "pigeon/store.h"

#define PS_NS "http://jabber.org/protocol/pubsub"
#define PS_NS_OWNER PS_NS "#owner"
#define PS_NS_EVENT PS_NS "#event"
#define PS_NS_ERRORS PS_NS "#errors"
#define PS_FORM_NODE_CONFIG PS_NS "#node_config"
#define PS_FORM_PUBLISH_OPTIONS PS_NS "#publish-options"
#define PS_FORM_SUBSCRIBE_OPTIONS PS_NS "#subscribe_options"
#define PS_NS_XDATA "jabber:x:data"
#define PS_NS_RSM "http://jabber.org/protocol/rsm"

/* ---- node configuration (config.c) ---- */

enum ps_access {
	PS_ACCESS_OPEN = 0,
	PS_ACCESS_PRESENCE,
	PS_ACCESS_ROSTER,
	PS_ACCESS_WHITELIST,
	PS_ACCESS_AUTHORIZE,
};

enum ps_publish_model {
	PS_PUBLISH_PUBLISHERS = 0,
	PS_PUBLISH_SUBSCRIBERS,
	PS_PUBLISH_OPEN,
};

enum ps_send_last {
	PS_SEND_LAST_NEVER = 0,
	PS_SEND_LAST_ON_SUB,
	PS_SEND_LAST_ON_SUB_AND_PRESENCE,
};

enum ps_notification_type {
	PS_NOTIFY_HEADLINE = 0,
	PS_NOTIFY_NORMAL,
};

/* pubsub#max_items = "max": as many as the service's limit allows. */
#define PS_MAX_ITEMS_MAX (-1L)

struct ps_config {
	enum ps_access access_model;
	enum ps_publish_model publish_model;
	enum ps_send_last send_last_published_item;
	enum ps_notification_type notification_type;
	long max_items;             /* >= 1, or PS_MAX_ITEMS_MAX */
	unsigned persist_items : 1;
	unsigned deliver_payloads : 1;
	unsigned deliver_notifications : 1;
	unsigned notify_retract : 1;
	unsigned notify_delete : 1;
	unsigned notify_config : 1;
	unsigned presence_based_delivery : 1;
	/* Owned strings, NULL when unset.  roster_groups_allowed: the
	 * groups, joined by '\n' (access_model roster). */
	char *title;
	char *type;                 /* pubsub#type: the payload namespace */
	char *roster_groups_allowed;
};

/* The defaults of a new node: PEP (XEP-0163 §8: presence access, one
 * item, send last on subscription and presence) or a generic service
 * (open access, persistent items, send last never). */
void ps_config_default(struct ps_config *c, int pep);
/* Frees the strings (c itself is the caller's). */
void ps_config_clear(struct ps_config *c);
/* Deep copy into dst (which is overwritten, not cleared).  0 or -ENOMEM. */
int ps_config_copy(struct ps_config *dst, const struct ps_config *src);

/* Applies a submitted jabber:x:data form (FORM_TYPE node_config or
 * publish-options) to c.  Fields of other namespaces that the engine
 * does not know are skipped for publish-options only when the form says
 * so (XEP-0060 §7.1.5); an unknown pubsub# field or a bad value fails
 * with -EINVAL and *bad names the field (borrowed from x).  max_items is
 * capped by max_items_limit ("max" becomes PS_MAX_ITEMS_MAX).  c is
 * unchanged on failure.  0, -EINVAL, -ENOMEM. */
int ps_config_apply_form(struct ps_config *c, const struct pgn_xml *x,
			 long max_items_limit, const char **bad);
/* XEP-0060 §7.1.5: whether the publish-options form x is satisfied by
 * the existing node's configuration c: 1 yes, 0 no (the publish fails
 * with precondition-not-met), -EINVAL for a malformed form. */
int ps_config_satisfies(const struct ps_config *c, const struct pgn_xml *x);
/* The node_config form of c (type 'form': owner configure get, default
 * configuration).  Caller owns it.  NULL on allocation failure. */
struct pgn_xml *ps_config_form(const struct ps_config *c, const char *node);
/* The store encoding: "key=value\n" lines.  encode: malloc'd string or
 * NULL.  decode: starts from the defaults of pep, applies what the text
 * says, ignores unknown keys (older or newer versions); 0 or -EINVAL. */
char *ps_config_encode(const struct ps_config *c);
int ps_config_decode(struct ps_config *c, const char *text, int pep);

/* ---- affiliations ---- */
enum ps_affiliation {
	PS_AFF_NONE = 0,
	PS_AFF_OUTCAST,
	PS_AFF_MEMBER,
	PS_AFF_PUBLISH_ONLY,
	PS_AFF_PUBLISHER,
	PS_AFF_OWNER,
};
const char *ps_affiliation_name(enum ps_affiliation a);
/* -1 for an unknown name. */
int ps_affiliation_parse(const char *name);

/* ---- the engine ---- */

/* Limits (module options; doc/modules.md). */
struct ps_limits {
	long max_nodes;      /* nodes per PEP account / per generic service owner */
	long max_item_size;  /* bytes of one item's payload */
	long max_bytes;      /* payload bytes per PEP account */
	long max_items;      /* what pubsub#max_items "max" means */
	long max_page;       /* items in one retrieval without RSM (XEP-0059) */
};

struct ps_notify; /* notify.c's state */

/* One per module instance (mod_pep or mod_pubsub on a host). */
struct ps_engine {
	struct pgn_module *m;
	struct pgn_host *host;
	struct pgn_store *store;
	int pep;              /* 1: mod_pep; 0: mod_pubsub */
	char *domain;         /* mod_pubsub: its service domain; NULL for PEP */
	struct ps_limits limits;
	struct ps_notify *notify;
	/* The last item timestamp given out (ts grows strictly). */
	int64_t last_ts;
	void *priv;           /* engine.c's own state */
};

/* A node as the notification and access code sees it (all borrowed for
 * the call).  service: the PEP owner's bare JID, or the domain. */
struct ps_node_ref {
	int64_t id;           /* pubsub_node.id */
	const char *service;
	const char *node;
	const struct ps_config *config;
};

/* ---- notifications and access (notify.c) ----
 * The engine calls these after the store committed the change. */
/* Sets up the hooks notifications need (presence, caps, sessions).
 * Called from the module's load after the engine; 0 or negative. */
int ps_notify_init(struct ps_engine *e);
void ps_notify_free(struct ps_engine *e);
/* A new or replaced item: item is <item id='..'>payload</item> in
 * the pubsub#event namespace's shape (the notify code copies what it
 * sends; without deliver_payloads it sends the id only).  publisher is
 * the full JID that published, for pubsub#itemreply (may be NULL). */
void ps_notify_publish(struct ps_engine *e, const struct ps_node_ref *n,
		       const struct pgn_xml *item, const char *publisher);
void ps_notify_retract(struct ps_engine *e, const struct ps_node_ref *n,
		       const char *item_id);
void ps_notify_purge(struct ps_engine *e, const struct ps_node_ref *n);
/* The node is about to be deleted: called before the engine queues its
 * DELETE, and the store runs queries in order, so a query notify.c
 * queues here still sees the node's subscriptions. */
void ps_notify_delete(struct ps_engine *e, const struct ps_node_ref *n,
		      const char *redirect_uri);
void ps_notify_config(struct ps_engine *e, const struct ps_node_ref *n);

/* Whether requester (a full or bare JID) may see node n: subscribe,
 * retrieve items, get notifications, find it in disco#items.  aff is
 * the requester's affiliation on the node (the engine knows it: PEP
 * owner -> PS_AFF_OWNER).  fn runs exactly once, maybe before this
 * returns (open model, owner, outcast), else after a roster lookup:
 * err 0 and allowed 1/0, or err < 0.  0, or -ENOMEM (fn never runs). */
typedef void (*ps_access_fn)(int err, int allowed, void *arg);
int ps_access_check(struct ps_engine *e, const struct ps_node_ref *n,
		    const char *requester, enum ps_affiliation aff,
		    ps_access_fn fn, void *arg);
/* Notifications routed since the module loaded (for stats). */
uint64_t ps_notify_sent(const struct ps_engine *e);

/* ---- the tables (store.c) ----
 * Each call queues its SQL (0, or a negative error: cb never runs) and
 * cb gets the result of the last statement. */
#define PS_MAX_IDS 32 /* item ids in one retrieval by id */

/* Columns: id, config, the affiliation of jid (NULL: none). */
int ps_store_node_get(struct ps_engine *e, const char *service,
		      const char *node, const char *jid, pgn_store_cb cb,
		      void *arg);
/* The service's first max nodes by name.  Columns: node, config, id. */
int ps_store_nodes(struct ps_engine *e, const char *service, long max,
		   pgn_store_cb cb, void *arg);
/* One row: nodes (PEP: of the service; generic: owned by owner), payload
 * bytes (PEP; 0 otherwise). */
int ps_store_usage(struct ps_engine *e, const char *service,
		   const char *owner, pgn_store_cb cb, void *arg);

/* One publish in one transaction: create the node (when create), store
 * the item (when item_id is set) and trim the node to max_items.  The
 * result: one row, the node's id. */
struct ps_store_publish {
	const char *service, *node;
	int create;
	const char *username;  /* create, PEP: the owning account */
	const char *owner;     /* create, generic: the owner affiliation */
	const char *config;    /* create: encoded configuration */
	const char *item_id, *publisher, *payload;
	int64_t ts;
	long max_items;        /* >= 1 */
};
int ps_store_publish(struct ps_engine *e, const struct ps_store_publish *p,
		     pgn_store_cb cb, void *arg);
/* res->changes: 0 when there was no such item. */
int ps_store_retract(struct ps_engine *e, int64_t node_id,
		     const char *item_id, pgn_store_cb cb, void *arg);
int ps_store_purge(struct ps_engine *e, int64_t node_id, pgn_store_cb cb,
		   void *arg);
int ps_store_node_delete(struct ps_engine *e, int64_t node_id,
			 pgn_store_cb cb, void *arg);
/* Writes config and trims the items to max_items (>= 1). */
int ps_store_configure(struct ps_engine *e, int64_t node_id,
		       const char *config, long max_items, pgn_store_cb cb,
		       void *arg);

/* Which items a retrieval reads: the newest, the oldest, those older
 * or newer than the item ref. */
enum ps_page { PS_PAGE_NEWEST, PS_PAGE_OLDEST, PS_PAGE_OLDER, PS_PAGE_NEWER };
/* At most max items.  Columns: item_id, publisher, payload, ts, the
 * node's item count.  NEWEST and OLDER come newest first, the others
 * oldest first. */
int ps_store_items(struct ps_engine *e, int64_t node_id, enum ps_page how,
		   const char *ref, long max, pgn_store_cb cb, void *arg);
/* Items by id (1..PS_MAX_IDS), newest first; same columns. */
int ps_store_items_by_id(struct ps_engine *e, int64_t node_id, size_t n,
			 const char *const *ids, pgn_store_cb cb, void *arg);
/* Columns: jid, affiliation. */
int ps_store_affiliations(struct ps_engine *e, int64_t node_id,
			  pgn_store_cb cb, void *arg);
/* Columns: jid, subid, state. */
int ps_store_subscriptions(struct ps_engine *e, int64_t node_id,
			   pgn_store_cb cb, void *arg);
/* Owner sets: n rows of affiliations (subs 0) or subscriptions (subs 1:
 * values are states, subids the new rows' ids); value "none" deletes. */
int ps_store_set_rows(struct ps_engine *e, int64_t node_id, int subs,
		      size_t n, const char *const *jids,
		      const char *const *values, const char *const *subids,
		      pgn_store_cb cb, void *arg);
/* Result: one row, the subscription's subid (an existing one is kept). */
int ps_store_subscribe(struct ps_engine *e, int64_t node_id, const char *jid,
		       const char *subid, pgn_store_cb cb, void *arg);
int ps_store_unsubscribe(struct ps_engine *e, int64_t node_id,
			 const char *jid, pgn_store_cb cb, void *arg);
/* An entity's subscriptions (subs 1; columns node, jid, subid, state)
 * or affiliations (columns node, affiliation) on the service, of one
 * node when node is not NULL. */
int ps_store_entity(struct ps_engine *e, int subs, const char *service,
		    const char *bare, const char *full, const char *node,
		    pgn_store_cb cb, void *arg);
/* Generic service: a deleted account's affiliations and subscriptions,
 * and the nodes it alone owned. */
int ps_store_forget_jid(struct ps_engine *e, const char *bare);

/* ---- pigeonctl (ctl.c) ----
 * The commands and the `pigeonctl stats` figures of the two modules
 * (.commands = ps_pep_commands / ps_pubsub_commands, .stats =
 * ps_ctl_stats); their arg is the module's data, which must be the
 * instance's struct ps_engine.  doc/design/pubsub.md, man/pigeonctl.8. */
extern const struct pgn_module_cmd ps_pep_commands[];
extern const struct pgn_module_cmd ps_pubsub_commands[];
void ps_ctl_stats(struct pgn_command *cmd, int argc, char *const *argv,
		  void *arg);

/* ---- engine.c, for the module files ---- */
/* The limit options both modules declare (doc/modules.md), as rows of a
 * pgn_module_opt table, and their reading into e->limits. */
#define PS_LIMIT_OPTIONS                                                    \
	{.name = "max_nodes", .type = PGN_OPT_INT, .def = "256", .min = 1,  \
	 .max = 1000000, .doc = "nodes per account (PEP) or per owner"},    \
	{.name = "max_item_size", .type = PGN_OPT_INT, .def = "262144",     \
	 .min = 64, .max = 16777216, .doc = "bytes of one item's payload"}, \
	{.name = "max_bytes", .type = PGN_OPT_INT, .def = "4194304",        \
	 .min = 1024, .max = 1073741824,                                    \
	 .doc = "payload bytes per account (PEP)"},                         \
	{.name = "max_items", .type = PGN_OPT_INT, .def = "1000", .min = 1, \
	 .max = 100000, .doc = "items a node keeps at most (what 'max' means)"}, \
	{.name = "max_page", .type = PGN_OPT_INT, .def = "100", .min = 1,   \
	 .max = 10000, .doc = "items in one retrieval (XEP-0059 pages)"}
void ps_limits_read(struct ps_engine *e);
/* Sets up the engine (e->m, e->host, e->pep, e->domain set by the
 * module; limits read here).  0 or negative. */
int ps_engine_load(struct ps_engine *e);
void ps_engine_unload(struct ps_engine *e);
/* The load and unload of both modules: a new engine as m's data
 * (domain, taken: the generic service's, NULL for PEP), ps_engine_load,
 * then ps_notify_init; unload undoes it in reverse.  0 or negative. */
int ps_module_load(struct pgn_module *m, int pep, char *domain);
void ps_module_unload(struct pgn_module *m);

#endif
