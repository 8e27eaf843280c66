/* The module API: the only header a module needs.
 *
 * After Prosody's design: named events, handlers in priority order (high
 * first), the first handler that returns PGN_EVENT_HANDLED stops the
 * chain, and unloading a module removes all its hooks.  A module is a
 * .so exporting one const descriptor `pgn_module_def` whose ABI version the
 * loader checks; it keeps its state in its instance (no globals) so it can
 * be loaded per host.
 *
 * Stanza events (as in Prosody).  For a stanza a local client sends:
 *   "pre-<kind>/<addr>" on the SENDER's host (outbound filters: blocking,
 *       presence broadcast).  addr is "host", "bare", "full", or "self"
 *       when the client sent no 'to' (the core then addresses it to the
 *       user's bare JID: <presence/> without 'to' is "pre-presence/self").
 *       Fired only for stanzas from a session (pgn_route_from), never for
 *       server-generated ones (pgn_route).
 * then, on the DESTINATION host when it is local (inbound):
 *   "iq-<type>/<addr>/<ns>:<name>"  (iq get/set, by payload)
 *   "<kind>/<addr>"                 ("message/bare", "presence/full", ...)
 *   built-in RFC 6121 rules; for a message nobody available can take:
 *   "message/offline", then service-unavailable.
 * Kinds: message, presence, iq.  Any stanza handler may hold the stanza
 * (pgn_event_hold) while it waits for storage and resume routing later.
 *
 * Session events (origin set, stanza NULL unless said):
 *   "stream-features"   data: the <features/> element being built; the
 *                       session may not be authenticated yet (never
 *                       fired while a required STARTTLS is pending)
 *   "session-started"   resource bound; a handler may pgn_session_hold()
 *                       the session while it loads the user's data
 *   "initial-presence"  the session's first available presence has been
 *                       routed (stanza: that presence); offline delivery
 *   "session-ended"     however the session ended; it is already unbound
 *                       (not in pgn_user_sessions) but still whole
 *   "iq-get/preauth/<ns>:<name>", "iq-set/preauth/<ns>:<name>"
 *                       an iq from a client that has not authenticated
 *                       (in-band registration); stanza->from is NULL and
 *                       pgn_event_reply/error answer on the stream
 *   "nonza/<ns>:<name>" a bound client sent a top-level element outside
 *                       jabber:client that the core does not handle
 *                       (XEP-0352 <inactive/>); data: the element
 *                       (borrowed).  Unhandled: unsupported-stanza-type.
 *   "session-hibernated" stream management (XEP-0198) keeps the session
 *                       after its connection was lost: it stays bound and
 *                       available, stanzas to it wait in its queue
 *   "session-resumed"   a new connection resumed a session (hibernated or
 *                       not); the module state of the session is kept
 *   "session-drained"   after pgn_session_congested() said 1: the
 *                       session can take more (once per such call)
 *
 * Account events (origin and stanza NULL; data: struct pgn_account_event):
 *   "account-removing"  the account is about to be deleted (its rows are
 *                       still there; store reads queued now run before
 *                       the deletion)
 *   "account-removed"   the deletion finished: err 0, or it failed
 */
#ifndef PIGEON_MODULE_H
#define PIGEON_MODULE_H

#include <stdint.h>

#include "pigeon/jid.h"
#include "pigeon/xml.h"

#define PGN_MODULE_ABI 4

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

/* A statement that must commit in the same transaction as the write
 * that accepts the message for later (offline storage), and not at all
 * if the message is bounced instead: the archive's rows of a message to
 * a user without an available resource (doc/architecture.md, "Storage
 * failures").  Owned by the stanza, freed with it. */
struct pgn_stanza_write {
	struct pgn_stanza_write *next;
	char *sql;
	int nparams;
	char **params; /* NULL entries are SQL NULL */
};

/* A stanza with its routing summary parsed once.  Owns xml, to, from
 * and writes. */
struct pgn_stanza {
	struct pgn_xml *xml;
	unsigned to_self : 1;  /* a client sent it without 'to' */
	/* Set by the sender's archive (mod_mam) for a message to a host
	 * that archives too: the sender's copy is written there, in the
	 * same statement as the recipient's, once the message is accepted
	 * (so a bounced message is in neither archive).  New stanzas,
	 * error replies included, start without it. */
	unsigned archive_sender : 1;
	struct pgn_stanza_write *writes; /* in order; see above */
	enum pgn_stanza_kind kind;
	const char *type;      /* points into xml; NULL if absent */
	const char *id;        /* points into xml; NULL if absent */
	struct pgn_jid *to;    /* NULL if absent */
	struct pgn_jid *from;  /* stamped by the server */
};

struct pgn_event;
struct pgn_route_ctx;
/* Returns PGN_EVENT_HANDLED to stop the chain (the handler then owns the
 * outcome: it replied, or held the stanza with pgn_event_hold), or
 * PGN_EVENT_PASS. */
typedef int (*pgn_hook_fn)(struct pgn_event *ev, void *arg);

struct pgn_event {
	const char *name;
	struct pgn_server *server;
	struct pgn_host *host;       /* NULL for server-wide events */
	struct pgn_session *origin;  /* sender's session, or NULL */
	struct pgn_stanza *stanza;   /* NULL for non-stanza events */
	void *data;                  /* event specific */
	/* Core only: the router's state and the running handler, so that
	 * pgn_event_hold() can resume exactly after it; and the client
	 * stanza this event is part of (holds, ack tickets and what is
	 * routed with pgn_event_route count for it; NULL: none). */
	void *route;
	int pos_priority;
	pgn_hook_fn pos_fn;
	void *pos_arg;
	const struct pgn_route_ctx *ctx;
};

/* Data of "account-removing" / "account-removed" (borrowed). */
struct pgn_account_event {
	const char *user; /* nodeprep'ed */
	const char *host;
	const char *bare; /* user@host */
	int err;          /* "account-removed": 0, -ENOENT, other errors */
};

#define PGN_EVENT_PASS 0
#define PGN_EVENT_HANDLED 1


/* ---- hook priorities ----
 * Handlers run from the highest priority down (doc/modules.md has the
 * table with the reasons).  Use these names, not numbers, so that the
 * order of all modules can be read in one place. */
#define PGN_PRIO_FILTER 100     /* decide whether the stanza goes anywhere
				 * (blocking) */
#define PGN_PRIO_EARLY 90       /* a resent duplicate stops here; answers
				 * to the module's own requests */
#define PGN_PRIO_INSPECT 60     /* reads presence before modifiers (caps) */
#define PGN_PRIO_MODIFIER 50    /* adjusts presence before its broadcast
				 * (vCard avatar hash) */
#define PGN_PRIO_COPY_SENT 40   /* copies of what a user sends (carbons) */
#define PGN_PRIO_ARCHIVE_OUT 30 /* storage of what a user sends (mam) */
#define PGN_PRIO_ARCHIVE_IN 20  /* storage of what a user receives (mam) */
#define PGN_PRIO_OBSERVER 10    /* sees the stanza before its handler
				 * (last activity, caps nodes) */
#define PGN_PRIO_COPY 5         /* copies of what a user receives
				 * (carbons) */
#define PGN_PRIO_NOTIFY 3       /* notifications about it (push) */
#define PGN_PRIO_HANDLER 0      /* do the work (iq handlers, presence) */
#define PGN_PRIO_DELIVERY -5    /* last word before the built-in delivery
				 * rules (offline backlog order) */
#define PGN_PRIO_FALLBACK -10
#define PGN_PRIO_LAST -100      /* end of the chain: nothing refused it */

/* ---- declarations ----
 * A module says in its pgn_module_def what it offers; the core checks
 * and registers it, and undoes it on unload.  load() keeps only what
 * cannot be declared (state, stores, per-host feature lists). */

/* Option types.  Values are written in pigeon.yml as scalars; a list as
 * a YAML sequence ([a, b] or "- a" lines) or a scalar whose items are
 * separated by commas or white space ("a, b"). */
enum pgn_opt_type {
	PGN_OPT_BOOL = 1, /* true/false, yes/no, on/off, 1/0 */
	PGN_OPT_INT,      /* decimal integer in [min, max] */
	PGN_OPT_STRING,   /* any text */
	PGN_OPT_ENUM,     /* one of values[] */
	PGN_OPT_LIST,     /* words (JIDs, names): at most max items when
			   * max > 0, each at most PGN_OPT_LIST_ITEM_MAX
			   * bytes, none containing a comma or space */
};

#define PGN_OPT_LIST_ITEM_MAX 1023

/* One option.  The core refuses a config that names an option the module
 * does not declare (with a "did you mean"), or a value of the wrong type
 * or out of range, naming the module, the option and the line, in
 * `pigeond -t` as at start. */
struct pgn_module_opt {
	const char *name;          /* "max_items"; NULL ends the table */
	enum pgn_opt_type type;
	const char *def;           /* default, as it would be written in
				    * pigeon.yml ("100", "false", "drop_oldest");
				    * checked like a value; NULL only for a
				    * string that is unset by default */
	long min, max;             /* PGN_OPT_INT: inclusive range */
	const char *const *values; /* PGN_OPT_ENUM: NULL-terminated */
	const char *doc;           /* one line, for doc and errors */
};

struct pgn_command;
/* argv[0..argc-1] are the arguments (not the command name), borrowed
 * until the reply.  arg: the module's data (pgn_module_data) for a
 * declared command. */
typedef void (*pgn_command_fn)(struct pgn_command *cmd, int argc,
			       char *const *argv, void *arg);

/* A pigeonctl command served by the module.  The server registers it for
 * each instance while the module is loaded; `pigeonctl help` lists it and
 * a wrong number of arguments gets its usage, from the server. */
struct pgn_module_cmd {
	const char *name;  /* "get_roster"; NULL ends the table */
	int nargs;         /* exact number of arguments */
	const char *args;  /* "USER HOST": nargs words, for usage and help */
	const char *help;  /* one line */
	pgn_command_fn fn;
	int host_arg;      /* 1-based argument naming the host whose instance
			    * answers; 0: any one instance (a command that
			    * is not per host) */
};

/* A hook registered by the core right after load() succeeded, with the
 * module's data (pgn_module_data) as arg, as if load() had called
 * pgn_module_hook(m, event, fn, data, priority). */
struct pgn_module_hook_def {
	const char *event; /* NULL ends the table */
	pgn_hook_fn fn;
	int priority;      /* PGN_PRIO_... */
};

struct pgn_module_def {
	unsigned abi;             /* PGN_MODULE_ABI */
	const char *name;         /* "mod_ping" */
	const char *description;
	/* Tables ending with a NULL name; each may be NULL. */
	const struct pgn_module_opt *options;
	const struct pgn_module_cmd *commands;
	const struct pgn_module_hook_def *hooks;
	/* Contributes to `pigeonctl stats` (see pgn_module_stats), with the
	 * module's data as arg; NULL: no figures. */
	pgn_command_fn stats;
	/* Sets up the module's state (pgn_module_set_data) and registers
	 * what cannot be declared; returns 0 or a negative error.  Options
	 * are already checked.  On failure the module frees its own state;
	 * the core removes what was registered. */
	int (*load)(struct pgn_module *m);
	/* Frees module data.  Hooks, features, commands, figures and timers
	 * are removed by the core (freeing a timer here too is harmless). */
	void (*unload)(struct pgn_module *m);
	/* ---- services between modules (keep at the end) ----
	 * Names of the modules this one needs on the same host ("mod_roster"),
	 * NULL-terminated, or NULL: loading it without them is a
	 * configuration error, and they load (and so provide their services)
	 * before it and unload after it. */
	const char *const *depends;
};

/* ---- module instance ---- */
int pgn_module_hook(struct pgn_module *m, const char *event, pgn_hook_fn fn,
		    void *arg, int priority);
/* Adds a disco#info feature / identity of the host, removed on unload. */
int pgn_module_add_feature(struct pgn_module *m, const char *var);
/* Adds a feature of the host's accounts: disco#info of a user's bare JID
 * lists it to the user (XEP-0313 §7 archive, XEP-0357 §4.1 push). */
int pgn_module_add_account_feature(struct pgn_module *m, const char *var);
int pgn_module_add_identity(struct pgn_module *m, const char *category,
			    const char *type, const char *name);
/* Adds an identity of the host's accounts: disco#info of a user's bare
 * JID lists it to anyone (XEP-0163 §6.1: pubsub/pep). */
int pgn_module_add_account_identity(struct pgn_module *m,
				    const char *category, const char *type,
				    const char *name);
/* Adds a copy of form, an XEP-0128 extended form (<x xmlns='jabber:x:data'
 * type='result'> with a FORM_TYPE field), to the host's disco#info
 * (pgn_host_disco_info: so mod_disco answers it and mod_caps hashes it),
 * removed on unload.  0, -EINVAL (not such a form), -EEXIST (the host
 * has a form of that FORM_TYPE already), -ENOMEM. */
int pgn_module_add_disco_form(struct pgn_module *m,
			      const struct pgn_xml *form);
/* The value of a declared option, or its declared default.  Checked
 * before load() runs, so these cannot fail; asking for an option the
 * module did not declare (of that type) is a bug: logged, and 0 / NULL
 * returned. */
long pgn_module_opt_int(const struct pgn_module *m, const char *name);
int pgn_module_opt_bool(const struct pgn_module *m, const char *name);
/* The text as written (or the default), mostly for PGN_OPT_STRING and
 * PGN_OPT_ENUM; NULL for an unset string.  Borrowed, valid while the
 * module is loaded. */
const char *pgn_module_opt_str(const struct pgn_module *m, const char *name);
/* PGN_OPT_ENUM: the index of the value in the option's values[]. */
int pgn_module_opt_enum(const struct pgn_module *m, const char *name);
/* PGN_OPT_LIST: the items in order, as a NULL-terminated array, and
 * their number in *n (n may be NULL).  One allocation that the caller
 * frees with free(); NULL on allocation failure (or for an undeclared
 * option, logged). */
char **pgn_module_opt_list(const struct pgn_module *m, const char *name,
			   size_t *n);
void *pgn_module_data(const struct pgn_module *m);
void pgn_module_set_data(struct pgn_module *m, void *data);
struct pgn_host *pgn_module_host(const struct pgn_module *m);
struct pgn_server *pgn_module_server(const struct pgn_module *m);

/* ---- hosts ---- */
const char *pgn_host_name(const struct pgn_host *h);
/* The local host named name (prepared, as in a JID), or NULL.
 * Borrowed: valid while the server runs. */
struct pgn_host *pgn_server_host(const struct pgn_server *srv,
				 const char *name);
/* Calls fn for each disco feature var of the host (sorted, unique). */
void pgn_host_foreach_feature(const struct pgn_host *h,
			      void (*fn)(const char *var, void *arg),
			      void *arg);
void pgn_host_foreach_account_feature(const struct pgn_host *h,
				      void (*fn)(const char *var, void *arg),
				      void *arg);
void pgn_host_foreach_account_identity(
	const struct pgn_host *h,
	void (*fn)(const char *category, const char *type, const char *name,
		   void *arg),
	void *arg);
void pgn_host_foreach_identity(const struct pgn_host *h,
			       void (*fn)(const char *category,
					  const char *type, const char *name,
					  void *arg),
			       void *arg);
/* A new <query xmlns='http://jabber.org/protocol/disco#info'/> (with
 * node='node' when node is not NULL) listing the host's identities and
 * features: the host's disco#info answer, and what XEP-0115 hashes.  The
 * caller owns it (pgn_xml_free).  NULL on allocation failure. */
struct pgn_xml *pgn_host_disco_info(const struct pgn_host *h,
				    const char *node);

/* ---- stanzas ---- */
/* Builds the summary of xml (takes ownership of xml).  NULL if to/from are
 * malformed (*bad_jid set) or on allocation failure. */
struct pgn_stanza *pgn_stanza_new(struct pgn_xml *xml, int *bad_jid);
void pgn_stanza_free(struct pgn_stanza *st);
/* Appends a write to st->writes (sql and params are copied).  0 or
 * -ENOMEM. */
int pgn_stanza_add_write(struct pgn_stanza *st, const char *sql,
			 int nparams, const char *const *params);
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
/* The same with an application-specific condition app (taken; NULL for
 * none), e.g. <unsupported xmlns='...pubsub#errors' feature='..'/> or
 * <blocked xmlns='urn:xmpp:blocking:errors'/>. */
struct pgn_stanza *pgn_stanza_error_reply_app(const struct pgn_stanza *st,
					      const char *type,
					      const char *condition,
					      const char *text,
					      struct pgn_xml *app);
/* Appends <error type code><condition/>[<text/>][app]</error> to the
 * stanza element xml: the one way the server writes a stanza error, so
 * that each carries its XEP-0086 legacy code.  app is taken (NULL for
 * none).  Returns the <error/> (borrowed from xml), or NULL when out of
 * memory (xml unchanged, app freed). */
struct pgn_xml *pgn_stanza_add_error(struct pgn_xml *xml, const char *type,
				     const char *condition, const char *text,
				     struct pgn_xml *app);
/* XEP-0086: the legacy error code of a defined condition (e.g. 404 for
 * "item-not-found"); 500 (undefined-condition's) for one it does not
 * know. */
int pgn_stanza_error_code(const char *condition);

/* ---- sessions ---- */
/* The bound full JID of a client session, or NULL before binding. */
const struct pgn_jid *pgn_session_jid(const struct pgn_session *s);
uint64_t pgn_session_id(const struct pgn_session *s);

/* Frees st after routing an error reply for it (none for errors and iq
 * results, RFC 6120 §8.3.1).  Takes st.  Inside a handler use
 * pgn_event_bounce (see "routing"). */
void pgn_stanza_bounce(struct pgn_server *srv, struct pgn_stanza *st,
		       const char *type, const char *condition);
void pgn_event_bounce(struct pgn_event *ev, struct pgn_stanza *st,
		      const char *type, const char *condition);

/* ---- sessions: more ---- */
/* First bound session of the account bare ("user@host"), or NULL; then
 * pgn_session_next() for the others.  Borrowed pointers, valid until the
 * loop runs again. */
struct pgn_session *pgn_user_sessions(struct pgn_server *srv,
				      const char *bare);
struct pgn_session *pgn_session_next(const struct pgn_session *s);
/* The priority that a message to the bare JID goes to (RFC 6121 §8.5.2):
 * the highest non-negative priority of the account's available
 * sessions, or -1 when none would take it. */
int pgn_user_top_priority(struct pgn_server *srv, const char *bare);
/* A live stream by id (asynchronous completions), or NULL. */
struct pgn_session *pgn_session_find(struct pgn_server *srv, uint64_t id);
struct pgn_host *pgn_session_host(const struct pgn_session *s);
struct pgn_server *pgn_session_server(const struct pgn_session *s);
/* Peer address ("127.0.0.1"), for logs and rate limits. */
const char *pgn_session_peer(const struct pgn_session *s);
int pgn_session_authenticated(const struct pgn_session *s);
/* Sent available presence (and not unavailable since) and is not
 * closing; and its priority. */
int pgn_session_available(const struct pgn_session *s);
int pgn_session_priority(const struct pgn_session *s);
/* The session's last broadcast presence as recorded by the presence
 * module (borrowed), or NULL. */
const struct pgn_xml *pgn_session_presence(const struct pgn_session *s);
/* Records a copy of xml (NULL clears).  0 or -ENOMEM. */
int pgn_session_set_presence(struct pgn_session *s, const struct pgn_xml *xml);
/* Serialises xml onto the session's stream as is (the caller keeps
 * xml).  No routing, no events: the caller addressed it.  0, or -EPIPE
 * when the stream is closing (not sent, or queued behind a stream error
 * for a peer that stopped reading: treat it as undelivered), -ENOMEM. */
int pgn_session_send(struct pgn_session *s, const struct pgn_xml *xml);
/* Stops processing the session's incoming stanzas (they queue, in order)
 * until as many pgn_session_release() calls: for loading user data in
 * "session-started".  Counted; safe on a session that closes meanwhile. */
void pgn_session_hold(struct pgn_session *s);
void pgn_session_release(struct pgn_session *s);
/* Closes the stream with a stream error (condition, optional text), or
 * cleanly when condition is NULL. */
void pgn_session_close(struct pgn_session *s, const char *condition,
		       const char *text);
/* Per-session data of module m (one slot per module instance); freed
 * with free_fn when the session is freed or m is unloaded.  Setting
 * replaces (and frees) the old value; NULL clears.  0 or -ENOMEM. */
void *pgn_session_get_data(const struct pgn_session *s,
			   const struct pgn_module *m);
int pgn_session_set_data(struct pgn_session *s, const struct pgn_module *m,
			 void *data, void (*free_fn)(void *));
/* Closes every session of bare with the stream error condition. */
void pgn_user_kick(struct pgn_server *srv, const char *bare,
		   const char *condition, const char *text);

/* ---- routing ----
 * Every routing belongs to a context: the client stanza it is part of
 * (XEP-0198: that stanza is acknowledged only once the holds and tickets
 * taken in its routing are done, see below).  What a handler routes on
 * behalf of the stanza it handles (replies, a presence broadcast, a
 * bounce, an offline hand-over) belongs to it too: route it with the
 * event, pgn_event_route / _route_from / _bounce / _undelivered (and
 * pgn_event_reply / _error).  Code that continues a handler after
 * storage finishes its hold (pgn_hold_resume, pgn_hold_bounce) or, once
 * the hold is taken, sends as the server.  The context-less calls are for
 * the stanzas the server originates on its own (timers, pigeonctl,
 * storage callbacks after a hold is gone): nobody's ack waits for them. */
/* Routes st (takes ownership; st->from must be set) as the router does
 * for any stanza: local sessions, hosts, components, errors.  Fires no
 * pre- events. */
void pgn_route(struct pgn_server *srv, struct pgn_stanza *st);
void pgn_event_route(struct pgn_event *ev, struct pgn_stanza *st);
/* Routes st as if origin had sent it: "pre-<kind>/<addr>" first on the
 * origin's host (so outbound filters such as blocking apply), then as
 * pgn_route.  origin may be closing (still whole in session-ended). */
void pgn_route_from(struct pgn_session *origin, struct pgn_stanza *st);
void pgn_event_route_from(struct pgn_event *ev, struct pgn_session *origin,
			  struct pgn_stanza *st);

/* ---- routes: domains a module owns ----
 * A module may own a service domain (conference.<host>, pubsub.<host>,
 * upload.<host>): every stanza to it or to a JID at it comes to fn as
 * the event "route/service" (ev->host: the module's host; ev->data: the
 * domain; origin and stanza as for any stanza event).  fn returns
 * PGN_EVENT_HANDLED when it took the stanza (replied, held or dropped
 * it), PGN_EVENT_PASS to have it bounced with service-unavailable.  A
 * hold taken there ends with pgn_hold_take (there is no chain after it).
 * The route goes when the module unloads.  0, -EEXIST when the domain is
 * a local host, a component or another module's, -EINVAL, -ENOMEM. */
int pgn_module_add_domain(struct pgn_module *m, const char *domain,
			  pgn_hook_fn fn, void *arg);
/* 0, or -ENOENT when m does not own domain. */
int pgn_module_remove_domain(struct pgn_module *m, const char *domain);
/* The remote route (federation): every stanza to a domain that is not
 * local, not a component and not a service comes to fn as "route/remote"
 * (ev->host: the module's host); PGN_EVENT_PASS answers as without it
 * (remote-server-not-found, or service-unavailable for a configured
 * component that is not connected).  One module at a time: -EEXIST.
 * Removed on unload. */
int pgn_module_set_remote_route(struct pgn_module *m, pgn_hook_fn fn,
				void *arg);
/* Calls fn for each service domain that modules of h registered (for
 * disco#items), in no particular order. */
void pgn_host_foreach_service(const struct pgn_host *h,
			      void (*fn)(const char *domain, void *arg),
			      void *arg);

/* Convenience for handlers: route an iq result / error for ev->stanza
 * (on the stream itself for a "preauth" iq). */
void pgn_event_reply(struct pgn_event *ev, struct pgn_xml *payload);
void pgn_event_error(struct pgn_event *ev, const char *type,
		     const char *condition);
/* The same with a text (may be NULL) and an application-specific
 * condition app (taken; may be NULL). */
void pgn_event_error_app(struct pgn_event *ev, const char *type,
			 const char *condition, const char *text,
			 struct pgn_xml *app);
/* For a "stream-features" handler offering a feature of bound sessions
 * (roster versioning, client state indication): the <features/> being
 * built (ev->data) when the stream's client has authenticated, else
 * NULL.  Borrowed. */
struct pgn_xml *pgn_event_client_features(const struct pgn_event *ev);

/* ---- holding a stanza while waiting for storage ----
 * A handler of a stanza event may take the stanza and its place in the
 * chain, return PGN_EVENT_HANDLED, and later either resume routing where
 * it stopped (the handlers after it, then the built-in rules) or finish
 * it itself.  The hold survives the sender going away. */
struct pgn_hold;
/* NULL (and nothing taken) on allocation failure or when the event has
 * no stanza; the handler then decides synchronously.  The stanza of a
 * session event (a preauth iq, initial-presence) can be held too, to
 * answer later: resuming such a hold just frees it. */
struct pgn_hold *pgn_event_hold(struct pgn_event *ev);
/* The held stanza (borrowed; the handler may modify it). */
struct pgn_stanza *pgn_hold_stanza(const struct pgn_hold *h);
/* Continues routing after the holding handler.  Frees h. */
void pgn_hold_resume(struct pgn_hold *h);
/* Gives the stanza to the caller (who owns it now) and frees h. */
struct pgn_stanza *pgn_hold_take(struct pgn_hold *h);
/* Answers the held stanza with a stanza error (as pgn_stanza_bounce;
 * text: a human-readable <text/>, or NULL) within the routing it was
 * held in, so that its acknowledgement waits for that error too; then
 * frees it and h.  For a handler whose storage failed. */
void pgn_hold_bounce(struct pgn_hold *h, const char *type,
		     const char *condition, const char *text);
/* Answers a held iq and frees h: a result carrying payload (taken; may
 * be NULL), or, when condition is set, that error with text (may be
 * NULL; payload is then freed).  The answer is routed as pgn_route does
 * once the hold is released.  0, or -ENOMEM when the answer could not be
 * built (nothing was sent; the caller may log it). */
int pgn_hold_answer(struct pgn_hold *h, struct pgn_xml *payload,
		    const char *type, const char *condition, const char *text);

/* ---- acknowledgement and durability (XEP-0198) ----
 * A stanza a client sent counts as handled, and is acknowledged to a
 * client using stream management, only once its routing has finished:
 * every hold taken on it (pgn_event_hold) was resumed or taken, and every
 * ticket taken on it is done.  A module that writes a stanza to storage
 * asynchronously while letting it go on (the archive) takes a ticket in
 * its handler and finishes it once the write is durable, so that an
 * acknowledged message survives a crash. */
struct pgn_ack_ticket;
/* NULL when there is nothing to wait for (a stanza the server made, or
 * out of memory: then the ack is not delayed).  Works in a resumed hold
 * too: the ticket belongs to the stanza the client sent. */
struct pgn_ack_ticket *pgn_event_ack_ticket(struct pgn_event *ev);
/* Frees t; safe after the sender has gone.  NULL is a no-op. */
void pgn_ack_ticket_done(struct pgn_ack_ticket *t);

/* ---- stream management and client state ---- */
/* The session's connection is gone but stream management keeps it for
 * resumption: stanzas sent to it queue (pgn_session_send returns 0). */
int pgn_session_hibernating(const struct pgn_session *s);
/* Stanzas written to the session and not yet acknowledged by its client
 * (0 without stream management). */
unsigned pgn_session_unacked(const struct pgn_session *s);
/* Flow control for a module that writes much to one session (an offline
 * backlog): 1 when the session has enough waiting for its client already
 * (output not yet written to the socket over a quarter of the output
 * limit, or with stream management unacknowledged bytes over half of
 * limits.max_unacked_bytes), and then "session-drained" (origin = s) is
 * fired once when both are back under those marks; 0 when the module can
 * write more now.  A session that ends first fires only session-ended. */
int pgn_session_congested(struct pgn_session *s);
/* The output chain of a session (Prosody's stanzas/out filters): every
 * stanza about to be written to a bound client session (not stream-level
 * elements), through pgn_session_send and the router alike, passes the
 * session's filters, highest priority first (the first added first among
 * equals), before it is serialised.  A filter returns 0 to let the stanza
 * go on, 1 when it took it (dropped it, or kept a copy to send later
 * itself with pgn_session_send_direct, which skips the module filters;
 * the sender then sees it as delivered), or a negative errno to refuse it
 * (not written; the sender sees it as undelivered).  The core's stream
 * management tracking (XEP-0198) runs last, on direct sends too: what a
 * filter holds back is not counted as sent until it is written. */
#define PGN_FILTER_PRIO_DEFAULT 0
#define PGN_FILTER_PRIO_CSI 0             /* mod_csi (XEP-0352) */
#define PGN_FILTER_PRIO_LAST (-1000000)   /* the core's: stream management */
typedef int (*pgn_send_filter_fn)(struct pgn_session *s,
				  const struct pgn_xml *xml, void *arg);
/* Adds fn(arg) to the chain of s for module m; it is removed when m is
 * unloaded or the session is freed.  0 or -ENOMEM. */
int pgn_session_add_filter(struct pgn_session *s, const struct pgn_module *m,
			   int priority, pgn_send_filter_fn fn, void *arg);
/* Removes m's filter fn (with arg, or any arg when arg is NULL). */
void pgn_session_remove_filter(struct pgn_session *s,
			       const struct pgn_module *m,
			       pgn_send_filter_fn fn, void *arg);
/* The earlier one-filter API: m's filters are replaced by fn at
 * PGN_FILTER_PRIO_DEFAULT (fn NULL: removed). */
void pgn_session_set_send_filter(struct pgn_session *s,
				 const struct pgn_module *m,
				 pgn_send_filter_fn fn, void *arg);
int pgn_session_send_direct(struct pgn_session *s, const struct pgn_xml *xml);
/* Handles st (taken) as a stanza its addressee's session could not take:
 * a message goes to "message/offline" on the addressee's host (or its
 * sender gets service-unavailable), an iq request gets
 * recipient-unavailable, presence is dropped.  For a module that queued
 * stanzas for a session that ended.  Inside a handler use
 * pgn_event_undelivered (see "routing"). */
void pgn_stanza_undelivered(struct pgn_server *srv, struct pgn_stanza *st);
void pgn_event_undelivered(struct pgn_event *ev, struct pgn_stanza *st);

/* ---- storage ---- */
struct pgn_store;
struct pgn_worker;
/* The server's store (pigeon/store.h) and crypto worker (for
 * pigeon/account.h). */
struct pgn_store *pgn_server_store(const struct pgn_server *srv);
struct pgn_worker *pgn_server_crypto(const struct pgn_server *srv);

/* ---- pigeonctl commands served by modules ----
 * Declared in pgn_module_def.commands (no core table to edit); when
 * several hosts load the module, the instance whose host is named by the
 * command's host argument answers. */
/* Answers exactly once, now or later (status PGN_CTL_OK / _ERROR /
 * _USAGE; text may be NULL or end without a newline).  Frees cmd; if
 * pigeonctl went away meanwhile the answer is dropped. */
void pgn_command_reply(struct pgn_command *cmd, int status, const char *text);
/* Contributes figures to `pigeonctl stats`: fn is called with argc 0 for
 * each request and answers with pgn_command_reply, now or later, with
 * "name value" lines (names [a-z0-9_]); the core prints them as
 * "name@host value".  An error answer is counted in stats_failed.
 * Usually declared (pgn_module_def.stats) rather than called. */
int pgn_module_stats(struct pgn_module *m, pgn_command_fn fn, void *arg);

/* ---- timers ----
 * One-shot timers on the server's loop for a module (retention sweeps,
 * rate limits).  The core stops and frees the timers a module still has
 * when it unloads (after its unload(), which may free them itself). */
struct pgn_timer;
typedef void (*pgn_timer_fn)(void *arg);
struct pgn_timer *pgn_timer_new(struct pgn_module *m, pgn_timer_fn fn,
				void *arg);
/* (Re)arms t to fire once after ms milliseconds. */
void pgn_timer_start(struct pgn_timer *t, uint64_t ms);
void pgn_timer_stop(struct pgn_timer *t);
/* Stops and frees t; NULL is a no-op. */
void pgn_timer_free(struct pgn_timer *t);

/* ---- services: one module serving others on its host ----
 * A service is a named const table of functions (its header in
 * include/pigeon/, e.g. pigeon/roster.h) and the provider's instance,
 * which every function takes first.  The provider registers it in its
 * load (removed when it unloads); a user declares the provider in
 * pgn_module_def.depends and looks the service up when it needs it (a
 * scan of the host's few modules) or once in its load.  Both pointers
 * stay valid while the user is loaded. */
/* 0, -EEXIST (another module of the host provides name), -ENOMEM. */
int pgn_module_provide(struct pgn_module *m, const char *name,
		       const void *ops, void *instance);
/* The table of the service name on h and (when instance is not NULL) its
 * instance, or NULL when no module of h provides it. */
const void *pgn_host_service(const struct pgn_host *h, const char *name,
			     void **instance);

/* ---- services: iq requests to other entities ----
 * One tracker in the core for every module.  pgn_send_iq sends
 * <iq type='type' from='from' to='to' id='(chosen by the core)'> with
 * payload (taken, also on failure; may be NULL) and calls fn exactly
 * once, never inside pgn_send_iq itself:
 *   reply the result or error iq addressed back from 'to' with that id
 *         (borrowed during the call; the router does not route it on),
 *         condition NULL for a result, the stanza error condition
 *         ("service-unavailable") for an error;
 *   reply NULL, condition "remote-server-timeout" after timeout_ms.
 * fn is not called after pgn_iq_cancel(m, handle) nor once m unloads
 * (the module frees arg itself then).  *handle (may be NULL) is set
 * before the iq is routed.  0, -EINVAL (bad JID), -ENOMEM, -EAGAIN (the
 * server has too many requests waiting): then fn is never called. */
typedef void (*pgn_iq_fn)(const struct pgn_stanza *reply,
			  const char *condition, void *arg);
int pgn_send_iq(struct pgn_module *m, const char *from, const char *to,
		const char *type, struct pgn_xml *payload, uint64_t timeout_ms,
		pgn_iq_fn fn, void *arg, uint64_t *handle);
/* 0, or -ENOENT when the request of m is no longer waiting. */
int pgn_iq_cancel(struct pgn_module *m, uint64_t handle);

/* ---- server ---- */
const char *pgn_server_version(void);
/* Seconds since the server started. */
long pgn_server_uptime(const struct pgn_server *srv);

#endif
