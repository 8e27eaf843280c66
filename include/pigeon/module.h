/* The module API: the only header a module needs.
 *
 * After Prosody's design: named events, handlers in priority order (high
 * first), the first handler that returns PGN_EVENT_HANDLED stops the
 * chain, and unloading a module removes all its hooks.  A module is a
 * .so exporting one const descriptor `pgn_module_def` whose ABI version the
 * loader checks; it keeps its state in its instance (no globals) so it can
 * be loaded per host.
 *
 * Event names:
 *   "message/bare", "message/full", "message/host"   (and presence/, iq/)
 *   "iq-get/host/<ns>:<name>", "iq-set/bare/<ns>:<name>", ...  (payload)
 *   "pre-message/bare" ... fired before the plain event
 *   "stream-features" (data: the <features/> element being built)
 *   "session-started", "session-ended"   (origin set, stanza NULL)
 */
#ifndef PIGEON_MODULE_H
#define PIGEON_MODULE_H

#include <stdint.h>

#include "pigeon/jid.h"
#include "pigeon/xml.h"

#define PGN_MODULE_ABI 1

#define PGN_NS_CLIENT "jabber:client"
#define PGN_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

struct pgn_server;
struct pgn_host;
struct pgn_session;
struct pgn_module;

enum pgn_stanza_kind {
	PGN_STANZA_MESSAGE = 0,
	PGN_STANZA_PRESENCE,
	PGN_STANZA_IQ,
	PGN_STANZA_OTHER,
};

/* A stanza with its routing summary parsed once.  Owns xml, to, from. */
struct pgn_stanza {
	struct pgn_xml *xml;
	enum pgn_stanza_kind kind;
	const char *type;      /* points into xml; NULL if absent */
	const char *id;        /* points into xml; NULL if absent */
	struct pgn_jid *to;    /* NULL if absent */
	struct pgn_jid *from;  /* stamped by the server */
};

struct pgn_event {
	const char *name;
	struct pgn_server *server;
	struct pgn_host *host;       /* NULL for server-wide events */
	struct pgn_session *origin;  /* sender's session, or NULL */
	struct pgn_stanza *stanza;   /* NULL for non-stanza events */
	void *data;                  /* event specific */
};

#define PGN_EVENT_PASS 0
#define PGN_EVENT_HANDLED 1

/* Returns PGN_EVENT_HANDLED to stop the chain (the handler then owns the
 * outcome: it replied, or took the stanza with pgn_stanza_steal), or
 * PGN_EVENT_PASS. */
typedef int (*pgn_hook_fn)(struct pgn_event *ev, void *arg);

struct pgn_module_def {
	unsigned abi;             /* PGN_MODULE_ABI */
	const char *name;         /* "mod_ping" */
	const char *description;
	/* Registers hooks and features; returns 0 or a negative error. */
	int (*load)(struct pgn_module *m);
	/* Frees module data; hooks and features are removed by the core. */
	void (*unload)(struct pgn_module *m);
};

/* ---- module instance ---- */
int pgn_module_hook(struct pgn_module *m, const char *event, pgn_hook_fn fn,
		    void *arg, int priority);
/* Adds a disco#info feature / identity of the host, removed on unload. */
int pgn_module_add_feature(struct pgn_module *m, const char *var);
int pgn_module_add_identity(struct pgn_module *m, const char *category,
			    const char *type, const char *name);
const char *pgn_module_option(const struct pgn_module *m, const char *key,
			      const char *def);
/* "true"/"yes"/"1" -> 1, "false"/"no"/"0" -> 0, else def. */
int pgn_module_option_bool(const struct pgn_module *m, const char *key,
			   int def);
void *pgn_module_data(const struct pgn_module *m);
void pgn_module_set_data(struct pgn_module *m, void *data);
struct pgn_host *pgn_module_host(const struct pgn_module *m);
struct pgn_server *pgn_module_server(const struct pgn_module *m);

/* ---- hosts ---- */
const char *pgn_host_name(const struct pgn_host *h);
/* Calls fn for each disco feature var of the host (sorted, unique). */
void pgn_host_foreach_feature(const struct pgn_host *h,
			      void (*fn)(const char *var, void *arg),
			      void *arg);
void pgn_host_foreach_identity(const struct pgn_host *h,
			       void (*fn)(const char *category,
					  const char *type, const char *name,
					  void *arg),
			       void *arg);

/* ---- stanzas ---- */
/* Builds the summary of xml (takes ownership of xml).  NULL if to/from are
 * malformed (*bad_jid set) or on allocation failure. */
struct pgn_stanza *pgn_stanza_new(struct pgn_xml *xml, int *bad_jid);
void pgn_stanza_free(struct pgn_stanza *st);
/* Sets the address (copied; NULL removes it) in the summary and the xml.
 * 0 or -ENOMEM. */
int pgn_stanza_set_to(struct pgn_stanza *st, const struct pgn_jid *jid);
int pgn_stanza_set_from(struct pgn_stanza *st, const struct pgn_jid *jid);
/* Re-reads kind/type/id after the xml was changed. */
void pgn_stanza_refresh(struct pgn_stanza *st);
/* Builds an iq result for an iq request (to/from swapped, same id).
 * payload may be NULL; the reply takes it. */
struct pgn_stanza *pgn_stanza_iq_result(const struct pgn_stanza *req,
					struct pgn_xml *payload);
/* Builds the error reply (RFC 6120 §8.3) of st: type is "cancel",
 * "modify", "auth", "wait" or "continue"; condition e.g.
 * "service-unavailable"; text may be NULL. */
struct pgn_stanza *pgn_stanza_error_reply(const struct pgn_stanza *st,
					  const char *type,
					  const char *condition,
					  const char *text);

/* ---- sessions ---- */
/* The bound full JID of a client session, or NULL before binding. */
const struct pgn_jid *pgn_session_jid(const struct pgn_session *s);
uint64_t pgn_session_id(const struct pgn_session *s);

/* ---- routing ---- */
/* Routes st (takes ownership; st->from must be set) as the router does
 * for any stanza: local sessions, hosts, components, errors. */
void pgn_route(struct pgn_server *srv, struct pgn_stanza *st);
/* Convenience for handlers: route an iq result / error for ev->stanza. */
void pgn_event_reply(struct pgn_event *ev, struct pgn_xml *payload);
void pgn_event_error(struct pgn_event *ev, const char *type,
		     const char *condition);

/* ---- server ---- */
const char *pgn_server_version(void);
/* Seconds since the server started. */
long pgn_server_uptime(const struct pgn_server *srv);

#endif
