/* Streams: one TCP (or TLS) connection carrying an XMPP stream.  The same
 * object is the client session once bound ("struct pgn_session" in the
 * module API).  Layers: bufferevent (plain or OpenSSL) -> expat parser ->
 * negotiation (c2s.c, component.c) -> router. */
#ifndef PIGEON_STREAM_H
#define PIGEON_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "pigeon/module.h"
#include "pigeon/scram.h"

struct bufferevent;
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
	PGN_ST_TLS_PENDING,     /* <proceed/> queued, switching to TLS */
	PGN_ST_BOUND,           /* c2s: resource bound; component: accepted */
	PGN_ST_HIBERNATED,      /* c2s: connection lost, kept for resumption
				   (XEP-0198); no transport */
	PGN_ST_CLOSING,         /* closing tag or error sent, flushing */
	PGN_ST_DEAD,            /* waiting for the reaper */
};

/* One module's data on a session (pgn_session_set_data). */
struct pgn_sdata {
	struct pgn_sdata *next;
	const struct pgn_module *owner;
	void *data;
	void (*free_fn)(void *);
};

/* A stanza received while an asynchronous step was pending. */
struct pgn_pending {
	struct pgn_pending *next;
	struct pgn_xml *xml;
};

struct pgn_session {
	uint64_t id;
	struct pgn_server *srv;
	const struct pgn_listener *listener;
	enum pgn_stream_kind kind;
	enum pgn_stream_state state;
	struct bufferevent *bev;
	int fd;
	SSL *ssl;
	unsigned secure : 1;        /* TLS established */
	unsigned direct_tls : 1;
	unsigned authenticated : 1;
	unsigned header_sent : 1;
	unsigned busy : 1;          /* waiting for storage / crypto */
	unsigned available : 1;     /* sent available broadcast presence */
	unsigned in_users : 1;      /* linked in srv->users */
	unsigned was_bound : 1;     /* session-ended not fired yet */
	unsigned sasl_tries;
	int priority;
	/* Low 32 bits of the monotonic µs time of the read that produced the
	 * oldest stanza queued here and not yet written to the socket, 0 when
	 * none (the "flushed" histogram, latency.h).  32 bits fill the hole
	 * after priority: the session does not grow. */
	uint32_t unflushed_us;
	struct pgn_xml_parser *parser;
	struct pgn_host *host;      /* c2s: the stream's host */
	char *domain;               /* component: its domain */
	char stream_id[24];
	char peer[64];              /* peer address for logs and rate limits */
	struct pgn_sasl *sasl;
	char *authcid;              /* prepared node of the authenticated user */
	struct pgn_jid *jid;        /* bound full JID */
	struct pgn_session *next_res; /* other resources of the same account */
	struct pgn_pending *pending;
	unsigned npending;
	unsigned holds;             /* pgn_session_hold() count (modules) */
	struct pgn_xml *presence;   /* last broadcast presence (modules) */
	struct pgn_sdata *sdata;    /* per-module data */
	pgn_send_filter_fn filter;  /* pgn_session_set_send_filter */
	void *filter_arg;
	const struct pgn_module *filter_owner;
	struct event *timer;        /* negotiation / idle / keepalive */
	uint64_t last_read;         /* monotonic ms */
	uint64_t last_write;
	struct pgn_session *next_dead;
	struct pgn_sm *sm;          /* stream management, NULL until enabled */
	uint64_t resume_of;         /* sm.c: this stream resumes that session */
	uint64_t ping_sent;         /* ms our XEP-0199 ping left, 0 if none */
	unsigned want_drain : 1;    /* fire session-drained (congested) */
};

/* Bound, connected or hibernated: a place for stanzas to its full JID. */
static inline int
pgn_stream_bound(const struct pgn_session *s)
{
	return s->state == PGN_ST_BOUND || s->state == PGN_ST_HIBERNATED;
}

/* Accepts a new connection on fd for listener l (takes the fd, and the
 * place counted for peer in srv->conns: a session owns that place while
 * it has a connection, s->bev != NULL, and gives it back when the
 * connection closes). */
void pgn_stream_accept(struct pgn_server *srv, const struct pgn_listener *l,
		       int fd, const char *peer);
/* Serialises and queues a stanza (the caller keeps it), through the
 * session's send filter if any.  0, or -EPIPE when the stream is closing
 * (nothing sent) or -ENOMEM. */
int pgn_stream_send_xml(struct pgn_session *s, const struct pgn_xml *xml);
/* The same without the filter. */
int pgn_stream_send_direct(struct pgn_session *s, const struct pgn_xml *xml);
/* Queues raw bytes. */
void pgn_stream_send_raw(struct pgn_session *s, const char *data, size_t len);
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
/* Opens our side of the stream (header) with default namespace ns. */
void pgn_stream_send_header(struct pgn_session *s, const char *ns,
			    const char *from);
/* Switch to TLS after <proceed/> has been flushed. */
int pgn_stream_start_tls(struct pgn_session *s);
/* Stops reading while an asynchronous step is pending; resume replays
 * the stanzas that arrived in between. */
void pgn_stream_suspend(struct pgn_session *s);
void pgn_stream_resume(struct pgn_session *s);
/* Frees the per-module data of owner (all of it when owner is NULL). */
void pgn_session_drop_data(struct pgn_session *s,
			   const struct pgn_module *owner);
/* Drops stanzas queued before a stream restart. */
void pgn_stream_drop_pending(struct pgn_session *s);
/* The stream is established: the timer now checks idleness and sends
 * whitespace keepalives instead of the negotiation deadline. */
void pgn_stream_established(struct pgn_session *s);
/* Finds a live session by id (async completions). */
struct pgn_session *pgn_stream_find(struct pgn_server *srv, uint64_t id);
uint64_t pgn_now_ms(void);

/* The connection is lost (EOF, error, unanswered ping): hibernate the
 * session when stream management may resume it, else destroy it. */
void pgn_stream_lost(struct pgn_session *s);
/* Moves the connection (socket, TLS, parser, queued input) of from onto
 * to and to's onto from, callbacks included. */
void pgn_stream_swap_transport(struct pgn_session *a, struct pgn_session *b);
/* Runs sm's deferred step of s from the loop (its timer, now or later;
 * replaces the pending timeout). */
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
/* The stanza just written at output offset mark..end (or, with no
 * transport, in buf) is kept until acknowledged.  0 or -ENOMEM. */
int pgn_sm_track(struct pgn_session *s, size_t mark);
int pgn_sm_queue_xml(struct pgn_session *s, const struct pgn_xml *xml);
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

/* c2s.c */
void pgn_c2s_stream_open(struct pgn_session *s, const char **attrs,
			 const char *default_ns);
void pgn_c2s_element(struct pgn_session *s, struct pgn_xml *xml);
void pgn_c2s_closed(struct pgn_session *s);
/* component.c */
void pgn_component_stream_open(struct pgn_session *s, const char **attrs,
			       const char *default_ns);
void pgn_component_element(struct pgn_session *s, struct pgn_xml *xml);
void pgn_component_closed(struct pgn_session *s);

#endif
