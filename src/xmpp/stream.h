/* Streams: an XMPP stream on a connection (conn.h).  The same object is
 * the client session once bound ("struct pgn_session" in the module
 * API).  Layers: connection (bytes <-> elements: TCP+XML, later
 * WebSocket...) -> stream (this: pending queue, timers, errors, output
 * chain) -> stream kind (c2s.c, component.c: pgn_stream_ops) -> router. */
#ifndef PIGEON_STREAM_H
#define PIGEON_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "pigeon/module.h"
#include "pigeon/scram.h"

struct event;
struct pgn_server;
struct pgn_host;
struct pgn_listener;
struct pgn_xml_parser;
typedef struct ssl_st SSL;

#define PGN_NS_STREAMS "http://etherx.jabber.org/streams"
#define PGN_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define PGN_NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define PGN_NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define PGN_NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define PGN_NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define PGN_NS_COMPONENT "jabber:component:accept"
#define PGN_NS_SASL_CB "urn:xmpp:sasl-cb:0"

enum pgn_stream_kind {
	PGN_STREAM_C2S = 0,
	PGN_STREAM_COMPONENT,
};

enum pgn_stream_state {
	PGN_ST_WAIT_HEADER = 0, /* waiting for <stream:stream> */
	PGN_ST_NEGOTIATING,     /* features sent: starttls / auth / bind */
	PGN_ST_BOUND,           /* c2s: resource bound; component: accepted */
	PGN_ST_HIBERNATED,      /* c2s: connection lost, kept for resumption
				   (XEP-0198); no transport */
	PGN_ST_CLOSING,         /* closing tag or error sent, flushing */
	PGN_ST_DEAD,            /* waiting for the reaper */
};

/* A stream kind (c2s, component; later s2s): what a stream does with
 * what its connection parses, chosen at accept time by the listener's
 * kind (the table in stream.c).  stream.c does the rest: the pending
 * queue, timers, errors, closing, the output chain.  Only open and
 * element are required. */
struct pgn_stream_ops {
	const char *name;
	enum pgn_stream_kind kind;
	const char *ns;            /* the content namespace of our header */
	/* The peer's header (attributes and default namespace). */
	void (*open)(struct pgn_session *s, const char **attrs,
		     const char *default_ns);
	/* A top-level element (taken). */
	void (*element)(struct pgn_session *s, struct pgn_xml *xml);
	/* The 'from' of a header we send before knowing better (an error
	 * before the peer's header was understood), or NULL. */
	const char *(*local_name)(const struct pgn_session *s);
	/* The stream ends: unlink the session from every table while it
	 * is whole (router, session-ended). */
	void (*ended)(struct pgn_session *s);
	/* Seconds the session may wait for a resumption when its
	 * connection is lost (0: it ends); then hibernated() is called. */
	unsigned (*resumable)(const struct pgn_session *s);
	void (*hibernated)(struct pgn_session *s);
	/* The established stream's timer: 1 when the session ended. */
	int (*tick)(struct pgn_session *s, uint64_t now_ms);
	/* The timer of a stream before it is established fired; 1 when
	 * that was a deferred step of the kind (not the deadline). */
	int (*kicked)(struct pgn_session *s);
	/* The kind's own backlog for pgn_session_congested (1: too much). */
	int (*congested)(struct pgn_session *s);
	/* Frees the kind's state (the session is being freed). */
	void (*free)(struct pgn_session *s);
};

extern const struct pgn_stream_ops pgn_c2s_ops;
extern const struct pgn_stream_ops pgn_component_ops;

/* One module's data on a session (pgn_session_set_data). */
struct pgn_sdata {
	struct pgn_sdata *next;
	const struct pgn_module *owner;
	void *data;
	void (*free_fn)(void *);
};

/* The output chain of a session (Prosody's stanzas/out, bytes/out):
 * filters sorted by priority, highest first.  A stanza written to the
 * session passes each filter's stanza stage (fn: 0 go on, 1 taken, <0
 * refused: not written, the error returned), is serialised onto the
 * connection, and then each filter's bytes stage (written: 1 when it
 * kept a copy) sees its bytes.  A direct send (pgn_stream_send_direct)
 * runs only the filters marked always.  The node is the owner's memory
 * (pgn_stream_add_filter) or the core's (module filters). */
struct pgn_sfilter {
	struct pgn_sfilter *next;
	int priority;
	unsigned always : 1;   /* also for direct sends */
	unsigned alloced : 1;  /* freed by the core (module filters) */
	const struct pgn_module *owner;
	pgn_send_filter_fn fn;
	int (*written)(struct pgn_session *s, const struct pgn_conn_span *span,
		       void *arg);
	void *arg;
};

struct pgn_session {
	uint64_t id;
	struct pgn_server *srv;
	const struct pgn_listener *listener;
	const struct pgn_stream_ops *ops;
	enum pgn_stream_kind kind;
	enum pgn_stream_state state;
	/* The transport: NULL while hibernated (and once freed). */
	struct pgn_conn *conn;
	unsigned authenticated : 1;
	unsigned busy : 1;          /* waiting for storage / crypto */
	unsigned available : 1;     /* sent available broadcast presence */
	unsigned in_users : 1;      /* linked in srv->users */
	unsigned was_bound : 1;     /* session-ended not fired yet */
	unsigned want_drain : 1;    /* fire session-drained (congested) */
	unsigned sasl_tries;
	int priority;
	unsigned holds;             /* pgn_session_hold() count (modules) */
	struct pgn_host *host;      /* c2s: the stream's host */
	char *domain;               /* component: its domain */
	struct pgn_sasl *sasl;
	char *authcid;              /* prepared node of the authenticated user */
	struct pgn_jid *jid;        /* bound full JID */
	struct pgn_session *next_res; /* other resources of the same account */
	struct pgn_xml *presence;   /* last broadcast presence (modules) */
	struct pgn_sdata *sdata;    /* per-module data */
	struct pgn_sfilter *filters; /* the output chain */
	struct event *timer;        /* negotiation / idle / keepalive */
	struct pgn_session *next_dead;
	struct pgn_sm *sm;          /* stream management, NULL until enabled */
	uint64_t resume_of;         /* sm.c: this stream resumes that session */
};

/* Bound, connected or hibernated: a place for stanzas to its full JID. */
static inline int
pgn_stream_bound(const struct pgn_session *s)
{
	return s->state == PGN_ST_BOUND || s->state == PGN_ST_HIBERNATED;
}

/* Accepts a new connection on fd for listener l (takes the fd, and the
 * place counted for peer in srv->conns: a session owns that place while
 * it has a connection, s->conn != NULL, and gives it back when the
 * connection closes).  The listener's kind chooses the stream kind and
 * the transport (the table in stream.c). */
void pgn_stream_accept(struct pgn_server *srv, const struct pgn_listener *l,
		       int fd, const char *peer);
/* A new stream of kind ops on conn (taken, freed on failure); NULL on
 * failure.  For pgn_stream_accept and for tests with a memory
 * connection. */
struct pgn_session *pgn_stream_new(struct pgn_server *srv,
				   const struct pgn_listener *l,
				   const struct pgn_stream_ops *ops,
				   struct pgn_conn *conn);
/* Writes a stanza (the caller keeps it) through the session's output
 * chain.  0 (written, or taken by a filter), or -EPIPE when the stream
 * is closing (nothing sent) or -ENOMEM. */
int pgn_stream_send_xml(struct pgn_session *s, const struct pgn_xml *xml);
/* The same through only the filters marked always (stream management):
 * what a filter that held stanzas writes, and the stream's own replies. */
int pgn_stream_send_direct(struct pgn_session *s, const struct pgn_xml *xml);
/* Writes a stream-level element (a nonza: SASL, STARTTLS, stream
 * management) as is: no filters. */
void pgn_stream_send_nonza(struct pgn_session *s, const struct pgn_xml *xml);
/* Queues raw bytes (stream-level, no filters). */
void pgn_stream_send_raw(struct pgn_session *s, const char *data, size_t len);
/* Writes a stream-level element with the stream prefix (features). */
void pgn_stream_send_stream_el(struct pgn_session *s,
			       const struct pgn_xml *el);
/* Links f (the caller's memory, unlinked before it is freed) into the
 * output chain of s by its priority. */
void pgn_stream_add_filter(struct pgn_session *s, struct pgn_sfilter *f);
void pgn_stream_remove_filter(struct pgn_session *s, struct pgn_sfilter *f);
/* Sends <stream:error> with condition (RFC 6120 §4.9.3) and optional text,
 * then closes the stream once flushed. */
void pgn_stream_error(struct pgn_session *s, const char *condition,
		      const char *text);
/* Sends </stream:stream> and closes once flushed. */
void pgn_stream_close(struct pgn_session *s);
/* Closes at once (connection lost). */
void pgn_stream_destroy(struct pgn_session *s);
/* Frees sessions marked dead (called from the reaper event). */
void pgn_stream_reap(struct pgn_server *srv);
/* Opens our side of the stream (header) with the kind's namespace. */
void pgn_stream_send_header(struct pgn_session *s, const char *from);
/* A new stream starts on the connection (SASL success): the parser and
 * the queued input forget the old one. */
void pgn_stream_restart(struct pgn_session *s);
/* STARTTLS: a new stream inside TLS once what is queued has left. */
int pgn_stream_start_tls(struct pgn_session *s);
/* Stops reading while an asynchronous step is pending; resume replays
 * the stanzas that arrived in between. */
void pgn_stream_suspend(struct pgn_session *s);
void pgn_stream_resume(struct pgn_session *s);
/* Frees the per-module data and filters of owner (all of them when owner
 * is NULL). */
void pgn_session_drop_data(struct pgn_session *s,
			   const struct pgn_module *owner);
/* The stream is established: the timer now checks idleness and sends
 * whitespace keepalives instead of the negotiation deadline. */
void pgn_stream_established(struct pgn_session *s);
/* Finds a live session by id (async completions). */
struct pgn_session *pgn_stream_find(struct pgn_server *srv, uint64_t id);
uint64_t pgn_now_ms(void);

/* The connection is lost (EOF, error, unanswered ping): hibernate the
 * session when its kind may resume it, else destroy it. */
void pgn_stream_lost(struct pgn_session *s);
/* Gives a the connection of b and b that of a (resumption). */
void pgn_stream_swap_transport(struct pgn_session *a, struct pgn_session *b);
/* Runs the kind's deferred step of s from the loop (its timer, now or
 * later; replaces the pending timeout). */
void pgn_stream_kick(struct pgn_session *s);
/* Fires "session-drained" when a module asked (pgn_session_congested)
 * and the session's output and unacknowledged bytes are back under their
 * low watermarks. */
void pgn_stream_check_drained(struct pgn_session *s);
void pgn_stream_kick_after(struct pgn_session *s, uint64_t ms);

/* sm.c: stream management (XEP-0198). */
/* How many of nqueued unacknowledged stanzas an <a h/> acknowledges when
 * the previous h was acked (counters wrap at 2^32): 0 and *n, or -ERANGE
 * when h is more than was sent. */
int pgn_sm_newly_acked(uint32_t acked, uint32_t h, unsigned nqueued,
		       unsigned *n);
/* Handles <enable/>, <resume/>, <r/>, <a/> from an authenticated client;
 * 1 when xml was one of them (consumed). */
int pgn_sm_element(struct pgn_session *s, struct pgn_xml *xml);
/* Adds <sm/> to the features of an authenticated stream. */
int pgn_sm_features(struct pgn_session *s, struct pgn_xml *features);
/* The seam for unit tests of holds and acks (tests/unit/test_router.c):
 * gives s a stream management state as <enable/> would (no resumption,
 * nothing sent); 0 or -ENOMEM.  handled: the h that s would answer. */
int pgn_sm_attach(struct pgn_session *s);
uint32_t pgn_sm_handled(const struct pgn_session *s);
/* A stanza from the client begins / has been routed (acks count it then,
 * unless holds or tickets taken meanwhile are still running).  begin
 * fills *ctx, the routing context to route it with (empty without stream
 * management); end takes the same ctx. */
void pgn_sm_stanza_begin(struct pgn_session *s, struct pgn_route_ctx *ctx);
void pgn_sm_stanza_end(struct pgn_session *s, const struct pgn_route_ctx *ctx);
/* Checked before a stanza is written to s: when s already keeps
 * limits.max_unacked stanzas, or max_unacked_bytes, or its account
 * max_unacked_bytes_per_account, the queue is handed back now and s ends
 * (resource-constraint; a hibernated one from the loop).  1 then (the
 * stanza must not be written), else 0. */
int pgn_sm_full(struct pgn_session *s);
/* Sends <r/> unless one is outstanding (or s is not connected). */
void pgn_sm_request_ack(struct pgn_session *s);
/* The bytes kept for the client's ack. */
size_t pgn_sm_unacked_bytes(const struct pgn_session *s);
/* The session ended for good: unacked stanzas are handed back
 * (pgn_stanza_undelivered); frees the state. */
void pgn_sm_ended(struct pgn_session *s);
void pgn_sm_free(struct pgn_session *s);
/* Seconds a hibernated session waits. */
unsigned pgn_sm_timeout(const struct pgn_session *s);
/* Can this session be hibernated instead of ended? */
int pgn_sm_resumable(const struct pgn_session *s);
/* The connection was lost and the session hibernates / the timer of a
 * stream finishing a resumption fired. */
void pgn_sm_hibernated(struct pgn_session *s);
void pgn_sm_kicked(struct pgn_session *s);

#endif
