/* What every stream does whatever its kind and transport: the queue of
 * stanzas that arrive while it is busy, timers, stream errors, closing,
 * the output chain (filters) and the deferred free.  The kind (c2s,
 * component) is a pgn_stream_ops chosen at accept time; the transport a
 * pgn_conn (conn.h).
 *
 * Sessions are never freed inside a callback: pgn_stream_destroy() marks
 * the session dead, unlinks it from every table and queues it for the
 * reaper event, which frees it on the next loop iteration (the Redis
 * freeClientAsync pattern). */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "pigeon/map.h"
#include "pigeon/log.h"
#include "pigeon/xml.h"
#include "connlimit.h"
#include "host.h"
#include "latency.h"
#include "server.h"
#include "stream.h"
#include "tls.h"

#define MAX_PENDING 32
#define CLOSE_GRACE_SECONDS 5
#define REAP_TRIM_EVERY 4096

static void timer_cb(evutil_socket_t fd, short what, void *arg);

uint64_t
pgn_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct pgn_session *
pgn_stream_find(struct pgn_server *srv, uint64_t id)
{
	struct pgn_session *s = pgn_map_get_id(srv->sessions, id);
	return s != NULL && s->state != PGN_ST_DEAD ? s : NULL;
}

uint64_t
pgn_session_id(const struct pgn_session *s)
{
	return s->id;
}

const struct pgn_jid *
pgn_session_jid(const struct pgn_session *s)
{
	/* Set at binding and kept until the session is freed, so that
	 * session-ended handlers still see who it was. */
	return s->jid;
}

/* ---- stream kinds ------------------------------------------------------ */

/* Which stream kind and transport a listener's connections get.  A new
 * stream kind (s2s) is a file with its pgn_stream_ops and one line here. */
static const struct {
	enum pgn_listen_kind listen;
	const struct pgn_stream_ops *ops;
	unsigned direct_tls : 1; /* TLS from the first byte (XEP-0368) */
} kinds[] = {
	{ PGN_LISTEN_C2S, &pgn_c2s_ops, 0 },
	{ PGN_LISTEN_C2S_TLS, &pgn_c2s_ops, 1 },
	{ PGN_LISTEN_COMPONENT, &pgn_component_ops, 0 },
};

/* ---- connection callbacks ------------------------------------------------ */

static int
gone(const struct pgn_session *s)
{
	return s->state == PGN_ST_CLOSING || s->state == PGN_ST_DEAD;
}

static void
on_readable(void *owner)
{
	struct pgn_session *s = owner;
	struct pgn_server *srv = s->srv;
	/* Stanzas routed from here to other sessions are timed from now
	 * (note_queued); saved and restored because a read callback can run
	 * inside another (pgn_stream_resume). */
	uint64_t outer_ns = srv->read_ns, outer_sid = srv->read_sid;

	srv->read_ns = pgn_lat_now_ns();
	srv->read_sid = s->id;
	s->conn->last_read = srv->read_ns / 1000000;
	s->conn->ops->read(s->conn);
	srv->read_ns = outer_ns;
	srv->read_sid = outer_sid;
}

static void
on_stream_open(void *owner, const char **attrs, const char *default_ns)
{
	struct pgn_session *s = owner;
	if (!gone(s))
		s->ops->open(s, attrs, default_ns);
}

static void
on_stanza(void *owner, struct pgn_xml *xml)
{
	struct pgn_session *s = owner;
	struct pgn_conn *c = s->conn;

	if (gone(s)) {
		pgn_xml_free(xml);
		return;
	}
	if (s->busy || s->holds > 0) {
		/* An asynchronous step (storage, crypto) is pending: keep order
		 * by queueing, within a small bound. */
		struct pgn_pending *p, **pp = &c->pending;
		if (c->npending >= MAX_PENDING ||
		    (p = calloc(1, sizeof(*p))) == NULL) {
			pgn_xml_free(xml);
			pgn_stream_error(s, "policy-violation",
					 "too many stanzas while busy");
			return;
		}
		p->xml = xml;
		while (*pp != NULL)
			pp = &(*pp)->next;
		*pp = p;
		c->npending++;
		return;
	}
	s->ops->element(s, xml);
}

static void
on_stream_close(void *owner)
{
	struct pgn_session *s = owner;
	if (!gone(s))
		pgn_stream_close(s);
}

static void
on_parse_error(void *owner, enum pgn_xml_error err, const char *detail)
{
	struct pgn_session *s = owner;
	const char *cond;

	switch (err) {
	case PGN_XML_ERR_RESTRICTED:
		cond = "restricted-xml";
		break;
	case PGN_XML_ERR_TOO_BIG:
		cond = "policy-violation";
		break;
	case PGN_XML_ERR_BAD_NAMESPACE:
		cond = "invalid-namespace";
		break;
	case PGN_XML_ERR_BAD_FORMAT:
		cond = "bad-format";
		break;
	case PGN_XML_ERR_NOMEM:
		cond = "resource-constraint";
		break;
	case PGN_XML_ERR_BAD_ENCODING:
		cond = "unsupported-encoding";
		break;
	default:
		cond = "not-well-formed";
		break;
	}
	pgn_log(PGN_LOG_INFO, "session %llu: %s (%s)",
		(unsigned long long)s->id, cond, detail ? detail : "");
	pgn_stream_error(s, cond, NULL);
}

static void
on_lost(void *owner)
{
	pgn_stream_lost(owner);
}

static void
on_drained(void *owner)
{
	struct pgn_session *s = owner;
	struct pgn_conn *c = s->conn;

	if (s->want_drain)
		pgn_stream_check_drained(s);
	if (c->ops->pending(c) > 0)
		return;
	if (c->unflushed_us != 0) {
		/* Everything queued is in the kernel now: the oldest stanza
		 * waited this long since its read.  Modulo 2^32 µs (71 min). */
		uint32_t now_us = (uint32_t)(pgn_lat_now_ns() / 1000);
		pgn_lat_hist_add(&s->srv->latency->flushed,
				 (uint64_t)(uint32_t)(now_us - c->unflushed_us) *
					 1000);
		c->unflushed_us = 0;
	}
	if (s->state == PGN_ST_CLOSING)
		pgn_stream_destroy(s);
}

static const struct pgn_conn_cbs conn_cbs = {
	.readable = on_readable,
	.open = on_stream_open,
	.element = on_stanza,
	.closed = on_stream_close,
	.error = on_parse_error,
	.lost = on_lost,
	.drained = on_drained,
};

/* ---- set-up ---------------------------------------------------------- */

static void
arm_timer(struct pgn_session *s, unsigned seconds)
{
	struct timeval tv = { seconds > 0 ? seconds : 1, 0 };
	evtimer_add(s->timer, &tv);
}

/* Closes the connection of s (and gives back its place). */
static void
free_conn(struct pgn_session *s)
{
	if (s->conn == NULL)
		return;
	pgn_connlimit_release(s->srv->conns, s->conn->peer);
	s->conn->ops->free(s->conn);
	s->conn = NULL;
}

struct pgn_session *
pgn_stream_new(struct pgn_server *srv, const struct pgn_listener *l,
	       const struct pgn_stream_ops *ops, struct pgn_conn *conn)
{
	struct pgn_session *s = calloc(1, sizeof(*s));
	unsigned char rnd[10];

	if (s == NULL) {
		conn->ops->free(conn);
		return NULL;
	}
	s->srv = srv;
	s->listener = l;
	s->ops = ops;
	s->kind = ops->kind;
	s->conn = conn;
	s->id = pgn_server_next_id(srv);
	pgn_conn_set_owner(conn, &conn_cbs, s);
	conn->last_read = conn->last_write = pgn_now_ms();
	/* The id must be unpredictable (component handshakes hash it):
	 * hex of 10 random bytes. */
	randombytes_buf(rnd, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(conn->stream_id + 2 * i, 3, "%02x", rnd[i]);
	s->timer = evtimer_new(srv->base, timer_cb, s);
	if (s->timer == NULL || pgn_map_set_id(srv->sessions, s->id, s) != 0) {
		if (s->timer != NULL)
			event_free(s->timer);
		conn->ops->free(conn);
		free(s);
		return NULL;
	}
	arm_timer(s, srv->cfg->limits.negotiation_timeout);
	return s;
}

void
pgn_stream_accept(struct pgn_server *srv, const struct pgn_listener *l,
		  int fd, const char *peer)
{
	const struct pgn_cfg_limits *lim = &srv->cfg->limits;
	struct pgn_xml_limits xl = {
		.max_stanza_bytes = lim->max_stanza_size,
		.max_depth = lim->max_depth,
		.max_attrs = lim->max_attrs,
		.max_children = lim->max_children,
	};
	struct pgn_session *s;
	struct pgn_conn *conn;
	SSL *ssl = NULL;
	size_t k = 0;

	while (k < sizeof(kinds) / sizeof(kinds[0]) &&
	       kinds[k].listen != l->cfg->kind)
		k++;
	if (k == sizeof(kinds) / sizeof(kinds[0])) {
		close(fd);
		goto fail;
	}
	if (kinds[k].direct_tls &&
	    (ssl = pgn_tls_new_ssl(srv->tls, 1)) == NULL) {
		close(fd);
		goto fail;
	}
	/* (Takes fd and ssl, even when it fails.) */
	conn = pgn_tcp_conn_new(srv->base, fd, ssl, &xl, peer);
	if (conn == NULL ||
	    (s = pgn_stream_new(srv, l, kinds[k].ops, conn)) == NULL)
		goto fail;
	pgn_log(PGN_LOG_DEBUG, "session %llu: accepted from %s on port %d%s",
		(unsigned long long)s->id, peer, l->cfg->port,
		kinds[k].direct_tls ? " (direct TLS)" : "");
	return;
fail:
	pgn_log(PGN_LOG_WARN, "cannot accept connection from %s", peer);
	pgn_connlimit_release(srv->conns, peer);
}

/* ---- output -------------------------------------------------------------- */

/* A peer that does not read must not make us buffer without end: past
 * this much queued output the stream is closed (resource-constraint). */
static size_t
max_output(const struct pgn_session *s)
{
	size_t n = s->srv->cfg->limits.max_stanza_size * 16;
	return n < (size_t)4 << 20 ? (size_t)4 << 20 : n;
}

/* Flow control for modules (pgn_session_congested): a writer waits while
 * the output is over a quarter of the limit, or the client has not
 * acknowledged half of what stream management may keep for it.  One
 * batch written under these marks stays well under both limits. */
static size_t
output_low(const struct pgn_session *s)
{
	return max_output(s) / 4;
}

/* 1 when too much output waits, or the stream kind says it has too much
 * of its own (stream management's unacknowledged bytes). */
static int
congested(struct pgn_session *s)
{
	if (s->conn != NULL && s->conn->ops->pending(s->conn) > output_low(s))
		return 1;
	return s->ops->congested != NULL && s->ops->congested(s);
}

int
pgn_session_congested(struct pgn_session *s)
{
	if (!congested(s))
		return 0;
	s->want_drain = 1;
	/* The drained callback runs when the output gets down to the mark
	 * (libevent's write low watermark), not only once it is empty. */
	if (s->conn != NULL)
		s->conn->ops->set_low_watermark(s->conn, output_low(s));
	return 1;
}

void
pgn_stream_check_drained(struct pgn_session *s)
{
	struct pgn_event ev = { .name = "session-drained", .origin = s };

	if (!s->want_drain || !pgn_stream_bound(s) || congested(s))
		return;
	s->want_drain = 0;
	if (s->conn != NULL)
		s->conn->ops->set_low_watermark(s->conn, 0);
	if (s->host != NULL)
		pgn_host_fire(s->host, &ev);
}

/* After a write: stamps it, and closes a stream whose peer does not read. */
static void
wrote(struct pgn_session *s, uint64_t now_ms)
{
	s->conn->last_write = now_ms;
	if (!gone(s) && s->conn->ops->pending(s->conn) > max_output(s))
		pgn_stream_error(s, "resource-constraint",
				 "too much unread output");
}

/* Writes xml, or else len bytes of data, to a live stream's connection. */
static inline void
send_out(struct pgn_session *s, const struct pgn_xml *xml, const char *data,
	 size_t len)
{
	if (s->state == PGN_ST_DEAD || s->conn == NULL)
		return;
	if (xml != NULL)
		s->conn->ops->write_xml(s->conn, xml, NULL);
	else
		s->conn->ops->write_raw(s->conn, data, len);
	wrote(s, pgn_now_ms());
}

void
pgn_stream_send_raw(struct pgn_session *s, const char *data, size_t len)
{
	send_out(s, NULL, data, len);
}

void
pgn_stream_send_nonza(struct pgn_session *s, const struct pgn_xml *xml)
{
	send_out(s, xml, NULL, 0);
}

void
pgn_stream_send_stream_el(struct pgn_session *s, const struct pgn_xml *el)
{
	if (s->state == PGN_ST_DEAD || s->conn == NULL)
		return;
	if (s->conn->ops->write_stream_el(s->conn, el) != 0)
		pgn_stream_error(s, "resource-constraint", NULL);
}

/* A stanza read from another session in the current read callback has
 * reached s's output buffer: one sample of the "queued" histogram, and
 * s's wait for the socket starts unless an older stanza already waits. */
static void
note_queued(struct pgn_session *s, uint64_t now_ns)
{
	struct pgn_server *srv = s->srv;

	if (srv->read_ns == 0 || srv->read_sid == s->id)
		return;
	pgn_lat_hist_add(&srv->latency->queued, now_ns - srv->read_ns);
	if (s->conn->unflushed_us == 0)
		s->conn->unflushed_us = (uint32_t)(srv->read_ns / 1000) | 1;
}

static size_t
copy_bytes(const struct pgn_conn_span *span, void *dst)
{
	memcpy(dst, (const char *)span->where + span->off, span->len);
	return span->len;
}

/* The bytes stage of the chain: 1 when a filter kept a copy, or <0. */
static int
run_written(struct pgn_session *s, const struct pgn_conn_span *span)
{
	int kept = 0;

	for (struct pgn_sfilter *f = s->filters; f != NULL; f = f->next) {
		int rc;
		if (f->written == NULL)
			continue;
		if ((rc = f->written(s, span, f->arg)) < 0)
			return rc;
		kept |= rc;
	}
	return kept;
}

static int
has_written(const struct pgn_session *s)
{
	for (const struct pgn_sfilter *f = s->filters; f != NULL; f = f->next)
		if (f->written != NULL)
			return 1;
	return 0;
}

/* A hibernated session has no connection: what its chain keeps (the
 * stream management queue) waits for the client to resume. */
static int
write_hibernated(struct pgn_session *s, const struct pgn_xml *xml)
{
	char *text = pgn_xml_to_string(xml, PGN_NS_CLIENT);
	struct pgn_conn_span span = { .copy = copy_bytes, .where = text };
	int rc;

	if (text == NULL)
		return -ENOMEM;
	span.len = strlen(text);
	rc = run_written(s, &span);
	free(text);
	return rc < 0 ? rc : rc > 0 ? 0 : -EPIPE;
}

/* The end of the chain: serialised onto the connection. */
static int
write_out(struct pgn_session *s, const struct pgn_xml *xml)
{
	struct pgn_conn *c = s->conn;
	struct pgn_conn_span span;
	size_t before;
	uint64_t now_ns;
	int kept = 0, track;

	if (s->state == PGN_ST_HIBERNATED)
		return write_hibernated(s, xml);
	if (gone(s) || c == NULL)
		return -EPIPE;
	track = has_written(s);
	before = c->ops->pending(c);
	if (c->ops->write_xml(c, xml, track ? &span : NULL) != 0)
		return -ENOMEM;
	if (track && (kept = run_written(s, &span)) < 0)
		return kept;
	now_ns = pgn_lat_now_ns();
	note_queued(s, now_ns);
	wrote(s, now_ns / 1000000);
	if (before == 0 && s->state == PGN_ST_BOUND)
		c->ops->kick(c);
	/* Over the output limit the stream is being closed: what was queued
	 * may never leave.  A stanza a filter kept (stream management) goes
	 * back to the router with that copy when the session ends: taken,
	 * or it would be stored twice. */
	if (!kept && gone(s))
		return -EPIPE;
	return 0;
}

static int
send_chain(struct pgn_session *s, const struct pgn_xml *xml, int direct)
{
	for (struct pgn_sfilter *f = s->filters; f != NULL; f = f->next) {
		int rc;
		if (f->fn == NULL || (direct && !f->always))
			continue;
		if ((rc = f->fn(s, xml, f->arg)) > 0)
			return 0; /* taken */
		if (rc < 0)
			return rc;
	}
	return write_out(s, xml);
}

int
pgn_stream_send_xml(struct pgn_session *s, const struct pgn_xml *xml)
{
	/* Module filters see what goes to a bound session only. */
	return send_chain(s, xml, !pgn_stream_bound(s));
}

int
pgn_stream_send_direct(struct pgn_session *s, const struct pgn_xml *xml)
{
	return send_chain(s, xml, 1);
}

void
pgn_stream_add_filter(struct pgn_session *s, struct pgn_sfilter *f)
{
	struct pgn_sfilter **pp = &s->filters;

	/* After those of the same priority: the first added runs first. */
	while (*pp != NULL && (*pp)->priority >= f->priority)
		pp = &(*pp)->next;
	f->next = *pp;
	*pp = f;
}

void
pgn_stream_remove_filter(struct pgn_session *s, struct pgn_sfilter *f)
{
	for (struct pgn_sfilter **pp = &s->filters; *pp != NULL;
	     pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			f->next = NULL;
			return;
		}
}

void
pgn_stream_send_header(struct pgn_session *s, const char *from)
{
	if (s->conn == NULL || s->conn->header_sent)
		return;
	s->conn->ops->write_header(s->conn, s->ops->ns, from);
	s->conn->header_sent = 1;
	s->conn->last_write = pgn_now_ms();
}

/* A stream error or close before our header (RFC 6120 §4.9.1.2) still
 * opens our side of the stream first. */
static void
ensure_header(struct pgn_session *s)
{
	pgn_stream_send_header(s, s->ops->local_name != NULL
					  ? s->ops->local_name(s)
					  : NULL);
}

static void
start_closing(struct pgn_session *s)
{
	s->state = PGN_ST_CLOSING;
	s->conn->ops->set_reading(s->conn, 0);
	/* A peer that never reads must not keep us waiting forever. */
	evtimer_del(s->timer);
	arm_timer(s, CLOSE_GRACE_SECONDS);
	if (s->conn->ops->pending(s->conn) == 0)
		pgn_stream_destroy(s);
}

/* Ends the stream with the stream error condition (and text), or with a
 * plain </stream:stream> when condition is NULL. */
static void
end_stream(struct pgn_session *s, const char *condition, const char *text)
{
	if (gone(s))
		return;
	if (s->conn == NULL) {
		/* Hibernated: no connection to tell. */
		pgn_stream_destroy(s);
		return;
	}
	ensure_header(s);
	if (condition != NULL) {
		s->conn->ops->write_error(s->conn, condition, text);
		pgn_log(PGN_LOG_INFO, "session %llu: stream error %s",
			(unsigned long long)s->id, condition);
	} else {
		s->conn->ops->write_close(s->conn);
	}
	start_closing(s);
}

void
pgn_stream_error(struct pgn_session *s, const char *condition,
		 const char *text)
{
	end_stream(s, condition, text);
}

void
pgn_stream_close(struct pgn_session *s)
{
	end_stream(s, NULL, NULL);
}

void
pgn_stream_destroy(struct pgn_session *s)
{
	if (s->state == PGN_ST_DEAD)
		return;
	/* Let the stream kind unlink the session (router tables,
	 * session-ended event) while it is still whole. */
	if (s->ops->ended != NULL)
		s->ops->ended(s);
	s->state = PGN_ST_DEAD;
	if (s->conn != NULL)
		s->conn->ops->detach(s->conn);
	evtimer_del(s->timer);
	pgn_map_del_id(s->srv->sessions, s->id);
	s->next_dead = s->srv->dead;
	s->srv->dead = s;
	event_active(s->srv->reaper, EV_TIMEOUT, 0);
	pgn_log(PGN_LOG_DEBUG, "session %llu: closed",
		(unsigned long long)s->id);
}

void
pgn_stream_reap(struct pgn_server *srv)
{
	while (srv->dead != NULL) {
		struct pgn_session *s = srv->dead;
		srv->dead = s->next_dead;
		free_conn(s);
		event_free(s->timer);
		pgn_sasl_free(s->sasl);
		pgn_jid_free(s->jid);
		free(s->authcid);
		free(s->domain);
		pgn_xml_free(s->presence);
		pgn_session_drop_data(s, NULL);
		if (s->ops->free != NULL)
			s->ops->free(s);
		free(s);
		srv->reaped++;
	}
	/* After many sessions went (a mass disconnect), give the freed heap
	 * back: glibc keeps it otherwise (doc/performance.md: 214 MB kept
	 * after 10,000 sessions closed, 47 MB after a trim).  Rare enough
	 * that the walk over the heap does not matter. */
	if (srv->reaped >= REAP_TRIM_EVERY) {
		srv->reaped = 0;
		malloc_trim(0);
	}
}

void
pgn_stream_restart(struct pgn_session *s)
{
	s->conn->ops->restart(s->conn);
}

int
pgn_stream_start_tls(struct pgn_session *s)
{
	s->conn->ops->restart(s->conn);
	return s->conn->ops->start_tls(s->conn, s->srv->tls);
}

void
pgn_stream_suspend(struct pgn_session *s)
{
	s->busy = 1;
	s->conn->ops->set_reading(s->conn, 0);
}

void
pgn_stream_resume(struct pgn_session *s)
{
	s->busy = 0;
	while (!s->busy && s->holds == 0 && s->conn != NULL &&
	       s->conn->pending != NULL && !gone(s)) {
		struct pgn_pending *p = s->conn->pending;
		s->conn->pending = p->next;
		s->conn->npending--;
		struct pgn_xml *xml = p->xml;
		free(p);
		s->ops->element(s, xml);
	}
	if (!s->busy && s->holds == 0 && !gone(s) && s->conn != NULL) {
		s->conn->ops->set_reading(s->conn, 1);
		/* Bytes that arrived while reading was off are parsed now. */
		if (s->conn->ops->has_input(s->conn))
			on_readable(s);
	}
}

/* Seconds between checks of an established stream: often enough for
 * both the keepalive and the idle timeout. */
static unsigned
idle_tick(const struct pgn_session *s)
{
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	unsigned next = lim->keepalive_interval;
	if (next == 0 || (lim->idle_timeout > 0 && lim->idle_timeout < next))
		next = lim->idle_timeout;
	if (lim->ping_interval > 0 && (next == 0 || lim->ping_interval < next))
		next = lim->ping_interval;
	if (s->conn != NULL && s->conn->ping_sent != 0 &&
	    lim->ping_timeout < next)
		next = lim->ping_timeout;
	return next > 0 ? next : 60;
}

/* XEP-0199: no answer (no byte at all) within ping_timeout to the ping
 * the stream kind sent means the connection is dead.  Returns 1 when
 * the session was hibernated or closed. */
static int
check_ping(struct pgn_session *s, uint64_t now)
{
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	struct pgn_conn *c = s->conn;

	if (lim->ping_interval == 0 || c->ping_sent == 0)
		return 0;
	if (c->last_read >= c->ping_sent) {
		c->ping_sent = 0;
		return 0;
	}
	if (now - c->ping_sent < (uint64_t)lim->ping_timeout * 1000)
		return 0;
	pgn_log(PGN_LOG_INFO, "session %llu: no answer to ping in %u s",
		(unsigned long long)s->id, lim->ping_timeout);
	if (s->ops->resumable != NULL && s->ops->resumable(s) > 0)
		pgn_stream_lost(s);
	else
		pgn_stream_error(s, "connection-timeout", "no answer to ping");
	return 1;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pgn_session *s = arg;
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	uint64_t now = pgn_now_ms();

	(void)fd;
	(void)what;
	switch (s->state) {
	case PGN_ST_DEAD:
		return;
	case PGN_ST_CLOSING:
		pgn_stream_destroy(s);
		return;
	case PGN_ST_HIBERNATED:
		/* Not resumed in time, or too much waiting for it. */
		pgn_log(PGN_LOG_INFO, "session %llu: hibernation over",
			(unsigned long long)s->id);
		pgn_stream_destroy(s);
		return;
	case PGN_ST_BOUND:
		if (check_ping(s, now))
			return;
		if (s->conn->ping_sent == 0 && s->ops->tick != NULL &&
		    s->ops->tick(s, now))
			return;
		if (lim->idle_timeout > 0 &&
		    now - s->conn->last_read >=
			    (uint64_t)lim->idle_timeout * 1000) {
			pgn_stream_error(s, "connection-timeout", NULL);
			return;
		}
		if (lim->keepalive_interval > 0 &&
		    now - s->conn->last_write >=
			    (uint64_t)lim->keepalive_interval * 1000)
			pgn_stream_send_raw(s, " ", 1);
		break;
	default:
		if (s->ops->kicked != NULL && s->ops->kicked(s))
			return;
		pgn_stream_error(s, "connection-timeout",
				 "negotiation took too long");
		return;
	}
	arm_timer(s, idle_tick(s));
}

/* Called by the stream kind when the stream is established: from now on
 * the timer checks idleness instead of the negotiation deadline. */
void
pgn_stream_established(struct pgn_session *s)
{
	evtimer_del(s->timer);
	arm_timer(s, idle_tick(s));
}

void
pgn_stream_kick_after(struct pgn_session *s, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
			      (suseconds_t)(ms % 1000) * 1000 };
	evtimer_del(s->timer);
	evtimer_add(s->timer, &tv);
}

void
pgn_stream_kick(struct pgn_session *s)
{
	pgn_stream_kick_after(s, 0);
}

void
pgn_stream_lost(struct pgn_session *s)
{
	unsigned keep;

	if (s->state == PGN_ST_DEAD)
		return;
	keep = s->ops->resumable != NULL ? s->ops->resumable(s) : 0;
	if (keep == 0) {
		pgn_stream_destroy(s);
		return;
	}
	/* Keep the session (bound, available, in every table) without its
	 * connection until the client resumes or resume_timeout passes. */
	free_conn(s);
	s->busy = 0;
	s->state = PGN_ST_HIBERNATED;
	evtimer_del(s->timer);
	arm_timer(s, keep);
	if (s->ops->hibernated != NULL)
		s->ops->hibernated(s);
}

void
pgn_stream_swap_transport(struct pgn_session *a, struct pgn_session *b)
{
	struct pgn_conn *c = a->conn;
	const struct pgn_listener *l = a->listener;

	a->conn = b->conn;
	b->conn = c;
	a->listener = b->listener;
	b->listener = l;
	if (a->conn != NULL)
		pgn_conn_set_owner(a->conn, &conn_cbs, a);
	if (b->conn != NULL)
		pgn_conn_set_owner(b->conn, &conn_cbs, b);
}
