/* Connections: the transport half of a stream, as an object with an
 * operations table (Redis's ConnectionType, nginx's recv/send).
 *
 * A connection owns its socket (or whatever carries the bytes), TLS, the
 * stream parser and the stanzas parsed but not yet handled.  It knows
 * nothing of XMPP negotiation: it parses input into stream events that it
 * hands up to its owner (a session) through callbacks, and writes what the
 * owner gives it (elements, the stream header, errors, raw bytes).  Stream
 * management resumption moves a connection from one session to another by
 * changing its owner (pgn_conn_set_owner).
 *
 * The first implementation is TCP + XML (plain or OpenSSL bufferevent,
 * expat parser): pgn_tcp_conn_new().  A WebSocket (RFC 7395), BOSH or
 * compact binary transport is one more implementation of pgn_conn_ops. */
#ifndef PIGEON_CONN_H
#define PIGEON_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "pigeon/xml.h"

struct event_base;
struct pgn_tls;
struct pgn_xml;
typedef struct ssl_st SSL;

/* A stanza parsed while its owner was busy (storage, crypto): kept in
 * order until the owner replays it. */
struct pgn_pending {
	struct pgn_pending *next;
	struct pgn_xml *xml;
};

/* What a connection tells its owner.  Every callback gets the owner
 * (pgn_conn_set_owner).  The owner may close the connection from any of
 * them, but frees it only from the loop (never inside a callback). */
struct pgn_conn_cbs {
	/* Input is waiting: the owner sets up its context (latency
	 * timing) and calls pgn_conn_read(), which feeds the parser. */
	void (*readable)(void *owner);
	/* The peer opened its stream (header attributes, name/value
	 * pairs, NULL-terminated; the default namespace it declared). */
	void (*open)(void *owner, const char **attrs, const char *default_ns);
	/* A top-level element (taken). */
	void (*element)(void *owner, struct pgn_xml *xml);
	/* The peer closed its stream (</stream:stream>). */
	void (*closed)(void *owner);
	/* Malformed input (err as pgn_xml_parser reports it). */
	void (*error)(void *owner, enum pgn_xml_error err, const char *detail);
	/* The connection is gone (EOF, socket or TLS error). */
	void (*lost)(void *owner);
	/* Output was written (the buffer went down to the low watermark
	 * or empty); pgn_conn_pending() tells how much is left. */
	void (*drained)(void *owner);
};

/* The bytes of one element just written (for output filters that keep
 * a copy, such as stream management): read them with pgn_conn_copy(). */
struct pgn_conn_span {
	/* Copies the len bytes to dst; len, or 0 on failure. */
	size_t (*copy)(const struct pgn_conn_span *span, void *dst);
	const void *where; /* the implementation's (an evbuffer, bytes) */
	size_t off;
	size_t len;
};

static inline size_t
pgn_conn_span_copy(const struct pgn_conn_span *span, void *dst)
{
	return span->copy(span, dst);
}

struct pgn_conn;

struct pgn_conn_ops {
	const char *name;
	/* Feeds the input received so far to the parser (callbacks run). */
	void (*read)(struct pgn_conn *c);
	/* Serialises xml (its namespace PGN_NS_CLIENT is the stream's
	 * content namespace).  span, when not NULL, says where its bytes
	 * are until the next write.  0 or -ENOMEM. */
	int (*write_xml)(struct pgn_conn *c, const struct pgn_xml *xml,
			 struct pgn_conn_span *span);
	int (*write_raw)(struct pgn_conn *c, const char *data, size_t len);
	/* Our stream header (content namespace ns, from may be NULL). */
	int (*write_header)(struct pgn_conn *c, const char *ns,
			    const char *from);
	/* A stream-level element with the stream prefix (features). */
	int (*write_stream_el)(struct pgn_conn *c, const struct pgn_xml *el);
	/* <stream:error> (text may be NULL), then the end of our stream. */
	int (*write_error)(struct pgn_conn *c, const char *condition,
			   const char *text);
	/* The end of our stream. */
	int (*write_close)(struct pgn_conn *c);
	/* Once the output has left, switch to TLS (STARTTLS) with a
	 * server SSL of tls; input until then is discarded.  0 or -errno. */
	int (*start_tls)(struct pgn_conn *c, struct pgn_tls *tls);
	/* A new stream starts on this connection (after STARTTLS or SASL):
	 * the parser forgets the old one. */
	void (*restart)(struct pgn_conn *c);
	/* Stop / resume reading. */
	void (*set_reading)(struct pgn_conn *c, int on);
	/* Output not yet handed to the kernel. */
	size_t (*pending)(const struct pgn_conn *c);
	/* Input received and not parsed yet (reading was off). */
	int (*has_input)(const struct pgn_conn *c);
	/* drained is called when the output falls to low (0: empty). */
	void (*set_low_watermark)(struct pgn_conn *c, size_t low);
	/* Write output queued on an idle connection in this loop turn. */
	void (*kick)(struct pgn_conn *c);
	/* No more reading or callbacks: the owner is going.  Output may
	 * still leave until free. */
	void (*detach)(struct pgn_conn *c);
	/* Closes the socket (TLS close_notify first when established) and
	 * frees everything. */
	void (*free)(struct pgn_conn *c);
};

/* The part every implementation shares (embedded first).  Kept small:
 * one per connected session (doc/performance.md, idle RSS). */
struct pgn_conn {
	const struct pgn_conn_ops *ops;
	const struct pgn_conn_cbs *cbs;
	void *owner;
	SSL *ssl;                   /* NULL without TLS */
	unsigned secure : 1;        /* TLS established or negotiated */
	unsigned direct_tls : 1;    /* XEP-0368 */
	unsigned header_sent : 1;   /* our stream header is out */
	unsigned closing : 1;       /* our stream ended: input is discarded */
	unsigned tls_pending : 1;   /* STARTTLS once the output has left */
	unsigned npending : 16;     /* stanzas in pending */
	/* Low 32 bits of the monotonic µs time of the read that produced
	 * the oldest stanza queued here and not yet written, 0 when none
	 * (the "flushed" histogram, latency.h). */
	uint32_t unflushed_us;
	/* Parsed, waiting for the owner (it may be busy). */
	struct pgn_pending *pending;
	uint64_t last_read;         /* monotonic ms */
	uint64_t last_write;
	uint64_t ping_sent;         /* ms our XEP-0199 ping left, 0 if none */
	char stream_id[24];         /* our header's id (random hex) */
	char peer[48];              /* peer address (INET6_ADDRSTRLEN fits) */
};

/* A TCP connection on fd (taken: closed on failure too); with ssl (taken)
 * TLS is negotiated at once (direct TLS).  xl bounds the parser.  NULL on
 * failure. */
struct pgn_conn *pgn_tcp_conn_new(struct event_base *base, int fd, SSL *ssl,
				  const struct pgn_xml_limits *xl,
				  const char *peer);

static inline void
pgn_conn_set_owner(struct pgn_conn *c, const struct pgn_conn_cbs *cbs,
		   void *owner)
{
	c->cbs = cbs;
	c->owner = owner;
}

/* Parser callbacks that hand a stream up to the owner of the connection
 * given as the parser's ud (for transports that parse XML). */
extern const struct pgn_xml_parser_cbs pgn_conn_parser_cbs;

/* Frees the stanzas parsed and not handled. */
void pgn_conn_drop_pending(struct pgn_conn *c);

#endif
