/* Internal to engine.c and owner.c: one PubSub request on its way
 * through the store.  Not part of the contract of pubsub.h. */
#ifndef PIGEON_PUBSUB_ENGINE_H
#define PIGEON_PUBSUB_ENGINE_H

#include "pigeon/pep.h"
#include "pubsub.h"

/* Bytes of a node name or an item id we accept. */
#define PS_MAX_NAME 1024
/* Rows of one owner affiliations / subscriptions set. */
#define PS_MAX_ROWS 100
/* Affiliations, likewise subscriptions, of one node (owner sets). */
#define PS_MAX_NODE_ROWS 10000

enum ps_op {
	PS_OP_NONE = 0, /* not implemented */
	PS_OP_SKIP,	/* a companion element (publish-options) */
	PS_OP_PUBLISH,
	PS_OP_RETRACT,
	PS_OP_CREATE,
	PS_OP_SUBSCRIBE,
	PS_OP_UNSUBSCRIBE,
	PS_OP_ITEMS,
	PS_OP_SUBSCRIPTIONS,
	PS_OP_AFFILIATIONS,
	PS_OP_OWNER, /* the pubsub#owner requests (owner.c) */
	PS_OP_DISCO,
};

struct ps_priv {
	struct watch *watches; /* pep.h watchers (PEP only) */
};

struct ps_req {
	struct ps_engine *e;
	/* An iq: held until answered (its tree holds el).  A module's call:
	 * hold NULL, tree owned here, done / items_fn called once. */
	struct pgn_hold *hold;
	struct pgn_xml *tree;
	pgn_pep_done_fn done;
	pgn_pep_items_fn items_fn;
	void *arg;
	/* Owner requests and disco keep their answer here while it grows. */
	struct pgn_xml *answer;

	enum ps_op op;
	const struct pgn_xml *el; /* the operation element (borrowed) */
	void (*step)(struct ps_req *);
	void (*then)(struct ps_req *); /* ps_load_visible's */
	char *service; /* PEP: the owner's bare JID; else the domain */
	char *user;    /* PEP: the owner's username */
	char *from;    /* the requester, full JID (a module: the owner) */
	char *from_bare;
	int is_owner; /* PEP: the requester is the account */
	const char *node;
	char *node_buf; /* an instant node's generated name */

	/* The node, once loaded. */
	int exists;
	int64_t node_id;
	struct ps_config cfg;
	enum ps_affiliation aff;

	/* publish, create */
	int create, retried;
	struct ps_config newcfg;
	const struct pgn_xml *options; /* publish-options <x/> */
	const struct pgn_xml *payload_el;
	const char *item_ns;
	char *item_id;
	char *payload;
	int notify; /* retract: -1 unset, 0, 1 */
	/* items */
	const char *ids[PS_MAX_IDS];
	size_t nids;
	int by_id, rsm;
	enum ps_page page;
	char *page_ref; /* RSM after/before (owned) */
	long max;
	/* subscribe */
	char *sub_jid; /* prepared, as given (bare or full) */
};

struct ps_req *ps_req_new(struct ps_engine *e, const char *service,
			  const char *from);
void ps_req_free(struct ps_req *r);
void ps_req_start(struct ps_req *r, const struct pgn_xml *ps, int set);
int ps_handle_iq(struct ps_engine *e, struct pgn_event *ev,
		 const char *service);

/* Answers (and frees r): a result carrying payload (taken), or an error
 * with its pubsub#errors child ps_cond (NULL: none; feature: its
 * 'feature' attribute). */
void ps_finish(struct ps_req *r, struct pgn_xml *payload);
void ps_fail(struct ps_req *r, const char *type, const char *cond,
	     const char *ps_cond, const char *feature);
void ps_fail_store(struct ps_req *r, const struct pgn_store_result *res);
void ps_nomem(struct ps_req *r);
/* ps_nomem for -ENOMEM, else the error (type, cond, ps_cond). */
void ps_fail_rc(struct ps_req *r, int rc, const char *type, const char *cond,
		const char *ps_cond);
/* Sets r->node to a copy of node (NULL: none).  0 or -ENOMEM. */
int ps_set_node(struct ps_req *r, const char *node);
/* Answers item-not-found and returns 1 when r's node does not exist. */
int ps_no_node(struct ps_req *r);
void ps_fail_access(struct ps_req *r);
struct pgn_xml *ps_answer(const char *ns, const char *name, const char *node,
			  struct pgn_xml **child);

/* Loads r->node with the requester's affiliation, then step(r). */
void ps_load_node(struct ps_req *r, void (*step)(struct ps_req *));
/* Loads the node, then step(r) when it exists and the requester may
 * see it (else the error). */
void ps_load_visible(struct ps_req *r, void (*step)(struct ps_req *));
/* step(r) when the access model admits the requester, else the error. */
void ps_check_access(struct ps_req *r, void (*step)(struct ps_req *));
struct ps_node_ref ps_ref(const struct ps_req *r);
long ps_max_items(const struct ps_engine *e, const struct ps_config *c);
int ps_may_create(const struct ps_req *r);
void ps_check_usage(struct ps_req *r);
void ps_create_write(struct ps_req *r);
void ps_random_id(char *buf, size_t len);
int ps_xml_set_row(struct pgn_xml *el, const struct pgn_store_result *res,
		   int i, const char *const *names);
int64_t ps_next_ts(struct ps_engine *e);

/* pep_service.c */
extern const struct pgn_pep_service ps_pep_ops;
/* The watchers of r's node (PEP): a publish (item: the <item/> in the
 * pubsub namespace) or a retract (item NULL) of r->item_id. */
void ps_run_watchers(struct ps_req *r, const struct pgn_xml *item);
void ps_watches_free(struct ps_engine *e);

/* owner.c */
void ps_owner_start(struct ps_req *r, const struct pgn_xml *ps, int set);
int ps_disco_load(struct ps_engine *e);

#endif
