/* mod_roster's private header: constants, state and the functions its
 * files share (mod_roster.c has the module, the "roster" service, the
 * session hooks and the helpers; cache.c the per-user cache, its loading,
 * the write-through and the roster pushes; presence.c presence and the
 * subscription state machine (RFC 6121 §3, §4) and account removal;
 * iq_roster.c jabber:iq:roster; ctl.c the pigeonctl commands).  Nothing
 * here is visible outside the module. */
#ifndef PIGEON_MOD_ROSTER_PRIV_H
#define PIGEON_MOD_ROSTER_PRIV_H

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/ctl.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/roster.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_ROSTER "jabber:iq:roster"
#define NS_ROSTERVER "urn:xmpp:features:rosterver"
#define NS_PREAPPROVAL "urn:xmpp:features:pre-approval"
#define NS_NICK "http://jabber.org/protocol/nick"

#define MAX_MAX_ITEMS 1000000
#define MAX_NAME_BYTES 1023    /* 'name' of an item */
#define MAX_GROUP_BYTES 1023   /* one <group/> */
#define MAX_GROUPS 64          /* groups of one item */
#define MAX_STATUS_BYTES 1024  /* status/nick kept with a pending request */
#define MAX_REQUEST_BYTES 4096 /* a pending request kept whole (serialised) */
#define MAX_DIRECTED 256       /* directed presence targets per session */

enum sub { SUB_NONE = 0, SUB_TO, SUB_FROM, SUB_BOTH };


struct item {
	char *jid; /* contact bare JID (prepared) */
	char *name;
	char **groups;
	size_t ngroups;
	enum sub sub;
	int ask;      /* Pending Out */
	int approved; /* pre-approved (§3.4) */
	int64_t ver;
};

struct tombstone {
	int64_t ver;
};

/* An inbound request not answered yet (Pending In).  stanza is the
 * whole request serialised without to/from (§3.1.3: delivered as it
 * came, extensions included); NULL for one too large or stored before
 * the column existed, which is rebuilt from status and nick. */
struct pending {
	char *status;
	char *nick;
	char *stanza;
};

struct roster;

/* Something waiting for a roster to be loaded. */
struct waiter {
	void (*fn)(struct roster *r, void *arg);
	void *arg;
	struct waiter *next;
};

struct rmod;

struct roster {
	struct rmod *rm;
	char *bare;
	char *user;
	char *host;
	struct pgn_map *items;   /* jid -> struct item */
	struct pgn_map *removed; /* jid -> struct tombstone */
	struct pgn_map *pending; /* jid -> struct pending */
	int64_t ver;
	int64_t min_ver;
	int exists;   /* the account exists */
	int loading;  /* queries outstanding */
	int busy;     /* running its waiters: must not be freed */
	int loaded;
	int failed;   /* load failed: the roster is not usable */
	int steps;    /* load queries answered */
	uint64_t *sids; /* sessions using the cache */
	size_t nsids, cap;
	struct waiter *waiters, **wtail;
};

struct rmod {
	struct pgn_module *m;
	struct pgn_server *srv;
	struct pgn_map *users; /* bare -> struct roster */
	struct pgn_map *removals; /* bare -> struct removal (being deleted) */
	int max_items;
	int routing;       /* > 0 while we route presence on a user's behalf */
	uint64_t push_seq; /* ids of roster pushes */
};

/* Per-session state. */
struct sstate {
	int interested; /* requested the roster (§2.1.6) */
	int available;  /* broadcast available presence (our view) */
	struct pgn_map *directed; /* full JID -> (void *)1 */
	/* The bound JID: pgn_session_jid() is NULL once the stream is
	 * closing, and "session-ended" still needs it. */
	struct pgn_jid *jid;
};


/* ---- shared between the files of the module ---- */

/* Not visible outside the module's .so. */
#pragma GCC visibility push(hidden)

extern const char *const sub_names[];
int type_is(const struct pgn_stanza *st, const char *t);
char *xstrdup(const char *s);
void item_free(struct item *it);
void pending_free(struct pending *p);
/* item_free and pending_free for pgn_map_free_values. */
void free_item_value(void *value);
void free_pending_value(void *value);
struct sstate *sstate_of(struct rmod *rm, struct pgn_session *s);
const struct pgn_jid *session_jid(struct rmod *rm, struct pgn_session *s);
char *groups_join(const struct item *it);
int groups_split(struct item *it, const char *s);
int parse_sub(const char *s);
int has_from(enum sub s);
int has_to(enum sub s);
void roster_destroy(struct roster *r);
void roster_maybe_free(struct roster *r);
int roster_add_sid(struct roster *r, uint64_t id);
void roster_del_sid(struct roster *r, uint64_t id);
int roster_wait(struct roster *r, void (*fn)(struct roster *, void *),
		void *arg);
struct roster *roster_get(struct rmod *rm, const char *bare);
void persist_pending(struct roster *r, const char *jid,
		     const struct pending *p);
int add_item_xml(struct pgn_xml *q, const struct item *it, const char *removed);
void push_one(struct rmod *rm, struct pgn_session *s, const struct item *it,
	      const char *jid, int64_t ver);
void item_changed(struct roster *r, struct item *it);
void item_remove(struct roster *r, const char *jid);
struct item *item_create(struct roster *r, const char *jid, int *full);
/* ev: the event handled (what is sent counts for its client stanza), or
 * NULL in a continuation after storage (sent as the server). */
void route_in(struct rmod *rm, struct pgn_event *ev, struct pgn_stanza *st);
void send_all_unavailable_to(struct roster *r, struct pgn_event *ev,
			     const char *jid);
void route_sub(struct roster *r, struct pgn_event *ev, const char *type,
	       const char *jid);
int on_in_presence(struct pgn_event *ev, void *arg);
struct roster *roster_of_session(struct rmod *rm, struct pgn_session *s);
int on_out_presence(struct pgn_event *ev, void *arg);
void bcast_unavailable(struct rmod *rm, struct pgn_event *ev, struct roster *r,
		       struct pgn_session *s, struct sstate *ss,
		       const struct pgn_xml *xml);
int on_self_presence(struct pgn_event *ev, void *arg);
int free_removal_cb(const char *key, uint64_t id, void *value, void *arg);
int on_account_removing(struct pgn_event *ev, void *arg);
int on_account_removed(struct pgn_event *ev, void *arg);
int cmp_jid(const void *a, const void *b);
struct item **
items_sorted(struct roster *r, int64_t after,
	     int (*cmp)(const void *, const void *), size_t *n);
int on_roster_get(struct pgn_event *ev, void *arg);
int has_ctrl(const char *s);
int on_roster_set(struct pgn_event *ev, void *arg);
void ctl_add(struct pgn_command *cmd, int argc, char *const *argv, void *arg);
void ctl_delete(struct pgn_command *cmd, int argc, char *const *argv,
		void *arg);
void ctl_get_roster(struct pgn_command *cmd, int argc, char *const *argv,
		    void *arg);

#pragma GCC visibility pop

#endif
