/* The transport half of every stream: bufferevents, the XML parser,
 * TLS upgrade, timers, stream errors and the deferred free.
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

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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

static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
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

/* ---- parser callbacks ---------------------------------------------- */

static void
on_stream_open(void *ud, const char **attrs, const char *default_ns)
{
	struct pgn_session *s = ud;
	if (s->state == PGN_ST_CLOSING || s->state == PGN_ST_DEAD)
		return;
	if (s->kind == PGN_STREAM_C2S)
		pgn_c2s_stream_open(s, attrs, default_ns);
	else
		pgn_component_stream_open(s, attrs, default_ns);
}

static void
dispatch(struct pgn_session *s, struct pgn_xml *xml)
{
	if (s->kind == PGN_STREAM_C2S)
		pgn_c2s_element(s, xml);
	else
		pgn_component_element(s, xml);
}

static void
on_stanza(void *ud, struct pgn_xml *xml)
{
	struct pgn_session *s = ud;
	if (s->state == PGN_ST_CLOSING || s->state == PGN_ST_DEAD) {
		pgn_xml_free(xml);
		return;
	}
	if (s->busy || s->holds > 0) {
		/* An asynchronous step (storage, crypto) is pending: keep order
		 * by queueing, within a small bound. */
		struct pgn_pending *p, **pp = &s->pending;
		if (s->npending >= MAX_PENDING ||
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
		s->npending++;
		return;
	}
	dispatch(s, xml);
}

static void
on_stream_close(void *ud)
{
	struct pgn_session *s = ud;
	if (s->state == PGN_ST_CLOSING || s->state == PGN_ST_DEAD)
		return;
	pgn_stream_close(s);
}

static void
on_parse_error(void *ud, enum pgn_xml_error err, const char *detail)
{
	struct pgn_session *s = ud;
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

static const struct pgn_xml_parser_cbs parser_cbs = {
	.stream_open = on_stream_open,
	.stanza = on_stanza,
	.stream_close = on_stream_close,
	.error = on_parse_error,
};

/* ---- set-up ---------------------------------------------------------- */

static void
arm_timer(struct pgn_session *s, unsigned seconds)
{
	struct timeval tv = { seconds > 0 ? seconds : 1, 0 };
	evtimer_add(s->timer, &tv);
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
	struct pgn_session *s = calloc(1, sizeof(*s));
	int direct = l->cfg->kind == PGN_LISTEN_C2S_TLS;

	if (s == NULL)
		goto fail;
	s->srv = srv;
	s->listener = l;
	s->fd = fd;
	s->id = pgn_server_next_id(srv);
	s->kind = l->cfg->kind == PGN_LISTEN_COMPONENT ? PGN_STREAM_COMPONENT
						       : PGN_STREAM_C2S;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	s->last_read = s->last_write = pgn_now_ms();
	s->parser = pgn_xml_parser_new(&xl, &parser_cbs, s);
	s->timer = evtimer_new(srv->base, timer_cb, s);
	if (s->parser == NULL || s->timer == NULL)
		goto fail;
	if (direct) {
		s->ssl = pgn_tls_new_ssl(srv->tls, 1);
		if (s->ssl == NULL)
			goto fail;
		s->bev = bufferevent_openssl_socket_new(
			srv->base, fd, s->ssl, BUFFEREVENT_SSL_ACCEPTING,
			BEV_OPT_CLOSE_ON_FREE);
		s->direct_tls = 1;
		s->secure = 1;
	} else {
		s->bev = bufferevent_socket_new(srv->base, fd,
						BEV_OPT_CLOSE_ON_FREE);
	}
	if (s->bev == NULL)
		goto fail;
	if (direct)
		bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	if (pgn_map_set_id(srv->sessions, s->id, s) != 0)
		goto fail;
	{
		/* The id must be unpredictable (component handshakes hash it):
		 * hex of 10 random bytes. */
		unsigned char rnd[10];
		randombytes_buf(rnd, sizeof(rnd));
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(s->stream_id + 2 * i, 3, "%02x", rnd[i]);
	}
	arm_timer(s, lim->negotiation_timeout);
	pgn_log(PGN_LOG_DEBUG, "session %llu: accepted from %s on port %d%s",
		(unsigned long long)s->id, peer, l->cfg->port,
		direct ? " (direct TLS)" : "");
	return;
fail:
	pgn_log(PGN_LOG_WARN, "cannot accept connection from %s", peer);
	pgn_connlimit_release(srv->conns, peer);
	if (s != NULL) {
		if (s->bev != NULL)
			bufferevent_free(s->bev); /* closes fd and SSL */
		else {
			if (s->ssl != NULL)
				SSL_free(s->ssl);
			close(fd);
		}
		if (s->timer != NULL)
			event_free(s->timer);
		pgn_xml_parser_free(s->parser);
		pgn_map_del_id(srv->sessions, s->id);
		free(s);
	} else {
		close(fd);
	}
}

/* ---- I/O --------------------------------------------------------------- */

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct pgn_session *s = arg;
	struct pgn_server *srv = s->srv;
	struct evbuffer *in = bufferevent_get_input(bev);
	/* Stanzas routed from here to other sessions are timed from now
	 * (note_queued); saved and restored because a read callback can run
	 * inside another (pgn_stream_resume). */
	uint64_t outer_ns = srv->read_ns, outer_sid = srv->read_sid;

	srv->read_ns = pgn_lat_now_ns();
	srv->read_sid = s->id;
	s->last_read = srv->read_ns / 1000000;
	while (evbuffer_get_length(in) > 0) {
		if (s->state == PGN_ST_DEAD || s->state == PGN_ST_CLOSING ||
		    s->state == PGN_ST_TLS_PENDING) {
			evbuffer_drain(in, evbuffer_get_length(in));
			break;
		}
		size_t n = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, n);
		int rc = pgn_xml_parser_feed(s->parser, p, n);
		evbuffer_drain(in, n);
		if (rc != 0)
			break;
	}
	/* An idle stream keeps no expat state (~10 KiB) between reads;
	 * a no-op inside a stanza (pgn_xml_parser_park). */
	if (s->parser != NULL)
		pgn_xml_parser_park(s->parser);
	srv->read_ns = outer_ns;
	srv->read_sid = outer_sid;
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct pgn_session *s = arg;

	if (s->want_drain)
		pgn_stream_check_drained(s);
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	if (s->unflushed_us != 0) {
		/* Everything queued is in the kernel now: the oldest stanza
		 * waited this long since its read.  Modulo 2^32 µs (71 min). */
		uint32_t now_us = (uint32_t)(pgn_lat_now_ns() / 1000);
		pgn_lat_hist_add(&s->srv->latency->flushed,
				 (uint64_t)(uint32_t)(now_us - s->unflushed_us) *
					 1000);
		s->unflushed_us = 0;
	}
	if (s->state == PGN_ST_CLOSING)
		pgn_stream_destroy(s);
	else if (s->state == PGN_ST_TLS_PENDING &&
		 pgn_stream_start_tls(s) != 0)
		pgn_stream_destroy(s);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct pgn_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		pgn_log(PGN_LOG_DEBUG, "session %llu: TLS established",
			(unsigned long long)s->id);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (what & BEV_EVENT_ERROR && s->ssl != NULL) {
			unsigned long e = bufferevent_get_openssl_error(bev);
			if (e != 0)
				pgn_log(PGN_LOG_INFO, "session %llu: TLS error: %s",
					(unsigned long long)s->id,
					ERR_reason_error_string(e));
		}
		pgn_stream_lost(s);
	}
}

int
pgn_stream_start_tls(struct pgn_session *s)
{
	struct bufferevent *bev;
	SSL *ssl = pgn_tls_new_ssl(s->srv->tls, 0);
	if (ssl == NULL)
		return -ENOMEM;
	/* The plain bufferevent must not close the fd it hands over. */
	bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	bev = bufferevent_openssl_socket_new(s->srv->base, s->fd, ssl,
					     BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return -ENOMEM;
	}
	/* Free the old one only now: its options do not include
	 * CLOSE_ON_FREE after bufferevent_setfd(-1). */
	bufferevent_setfd(s->bev, -1);
	bufferevent_free(s->bev);
	s->bev = bev;
	s->ssl = ssl;
	s->secure = 1;
	s->state = PGN_ST_WAIT_HEADER;
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bufferevent_setcb(bev, read_cb, write_cb, event_cb, s);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	return 0;
}

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

/* 0, or 1 for too much output, or 2 for too much unacknowledged: then
 * the client is asked for an ack (the writer waits, so no new stanza
 * would ask it, and a client may acknowledge only when asked). */
static int
congested(struct pgn_session *s)
{
	if (s->bev != NULL &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) > output_low(s))
		return 1;
	if (s->sm != NULL && pgn_sm_unacked_bytes(s) >
				     s->srv->cfg->limits.max_unacked_bytes / 2) {
		pgn_sm_request_ack(s);
		return 2;
	}
	return 0;
}

int
pgn_session_congested(struct pgn_session *s)
{
	if (!congested(s))
		return 0;
	s->want_drain = 1;
	/* write_cb runs when the output gets down to the mark (libevent's
	 * write low watermark), not only once it is empty. */
	if (s->bev != NULL)
		bufferevent_setwatermark(s->bev, EV_WRITE, output_low(s), 0);
	return 1;
}

void
pgn_stream_check_drained(struct pgn_session *s)
{
	struct pgn_event ev = { .name = "session-drained", .origin = s };

	if (!s->want_drain || !pgn_stream_bound(s) || congested(s))
		return;
	s->want_drain = 0;
	if (s->bev != NULL)
		bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	if (s->host != NULL)
		pgn_host_fire(s->host, &ev);
}

static void
check_output(struct pgn_session *s)
{
	if (s->state == PGN_ST_CLOSING || s->state == PGN_ST_DEAD)
		return;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) > max_output(s))
		pgn_stream_error(s, "resource-constraint",
				 "too much unread output");
}

void
pgn_stream_send_raw(struct pgn_session *s, const char *data, size_t len)
{
	if (s->state == PGN_ST_DEAD || s->bev == NULL)
		return;
	bufferevent_write(s->bev, data, len);
	s->last_write = pgn_now_ms();
	check_output(s);
}

int
pgn_stream_send_xml(struct pgn_session *s, const struct pgn_xml *xml)
{
	if (s->filter != NULL && pgn_stream_bound(s) &&
	    s->filter(s, xml, s->filter_arg) != 0)
		return 0;
	return pgn_stream_send_direct(s, xml);
}

/* Output was queued on an idle stream: write it in this turn of the loop,
 * after the callbacks already due, instead of the next one.  A bufferevent
 * only asks epoll for EPOLLOUT when output arrives, and writes when a
 * later epoll_wait says the socket is writable: one more turn (behind all
 * the reads that turn brings) and two epoll_ctl per stanza.  Activating
 * its write event is what that epoll_wait would do; the callback copes
 * with a socket that is not writable (it waits for EPOLLOUT then), and
 * the EPOLLOUT added and removed within the turn never reach the kernel
 * (the changelist, server.c).  Stanzas queued for the same stream before
 * the event runs leave in the same write.  Only on bound streams: TLS
 * negotiation keeps its own write callbacks. */
static void
kick_write(struct pgn_session *s, size_t queued_before)
{
	if (queued_before == 0 && s->state == PGN_ST_BOUND)
		event_active(&s->bev->ev_write, EV_WRITE, 1);
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
	if (s->unflushed_us == 0)
		s->unflushed_us = (uint32_t)(srv->read_ns / 1000) | 1;
}

int
pgn_stream_send_direct(struct pgn_session *s, const struct pgn_xml *xml)
{
	struct evbuffer *out;
	size_t mark;
	uint64_t now_ns;

	/* Over the stream management bounds the session ends without
	 * this stanza (the sender's router takes it as undelivered). */
	if (s->sm != NULL && pgn_sm_full(s))
		return -EPIPE;
	if (s->state == PGN_ST_HIBERNATED)
		/* Waits for the client to resume (or goes back to the
		 * router when the session times out). */
		return pgn_sm_queue_xml(s, xml);
	if (s->state == PGN_ST_DEAD || s->state == PGN_ST_CLOSING ||
	    s->bev == NULL)
		return -EPIPE;
	/* Stanzas are kept in jabber:client internally; written with that
	 * namespace in scope they carry no xmlns, which reads as the stream's
	 * own content namespace on c2s and component streams alike. */
	out = bufferevent_get_output(s->bev);
	mark = evbuffer_get_length(out);
	if (pgn_xml_write(xml, PGN_NS_CLIENT, out) != 0)
		return -ENOMEM;
	if (s->sm != NULL && pgn_sm_track(s, mark) != 0)
		return -ENOMEM;
	now_ns = pgn_lat_now_ns();
	s->last_write = now_ns / 1000000;
	note_queued(s, now_ns);
	check_output(s);
	if (s->state != PGN_ST_CLOSING && s->state != PGN_ST_DEAD)
		kick_write(s, mark);
	/* Over the output limit the stream is being closed: what was queued
	 * may never leave.  With stream management the stanza is in the
	 * queue, which goes back to the router when the session ends: taken,
	 * or it would be stored twice. */
	if (s->sm == NULL &&
	    (s->state == PGN_ST_CLOSING || s->state == PGN_ST_DEAD))
		return -EPIPE;
	return 0;
}

void
pgn_stream_send_header(struct pgn_session *s, const char *ns,
		       const char *from)
{
	struct evbuffer *out;
	if (s->header_sent || s->bev == NULL)
		return;
	out = bufferevent_get_output(s->bev);
	evbuffer_add_printf(out,
			    "<?xml version='1.0'?><stream:stream xmlns='%s' "
			    "xmlns:stream='" PGN_NS_STREAMS "' id='%s'",
			    ns, s->stream_id);
	if (from != NULL) {
		evbuffer_add_printf(out, " from='");
		pgn_xml_escape(out, from, strlen(from));
		evbuffer_add_printf(out, "'");
	}
	evbuffer_add_printf(out, " version='1.0' xml:lang='en'>");
	s->header_sent = 1;
	s->last_write = pgn_now_ms();
}

/* A stream error or close before our header (RFC 6120 §4.9.1.2) still
 * opens our side of the stream first. */
static void
ensure_header(struct pgn_session *s)
{
	if (s->kind == PGN_STREAM_C2S)
		pgn_stream_send_header(s, PGN_NS_CLIENT,
				       s->host ? pgn_host_name(s->host) : NULL);
	else
		pgn_stream_send_header(s, PGN_NS_COMPONENT, s->domain);
}

static void
start_closing(struct pgn_session *s)
{
	s->state = PGN_ST_CLOSING;
	bufferevent_disable(s->bev, EV_READ);
	/* A peer that never reads must not keep us waiting forever. */
	evtimer_del(s->timer);
	arm_timer(s, CLOSE_GRACE_SECONDS);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		pgn_stream_destroy(s);
}

void
pgn_stream_error(struct pgn_session *s, const char *condition,
		 const char *text)
{
	struct evbuffer *out;
	if (s->state == PGN_ST_DEAD || s->state == PGN_ST_CLOSING)
		return;
	if (s->bev == NULL) {
		/* Hibernated: no connection to tell. */
		pgn_stream_destroy(s);
		return;
	}
	ensure_header(s);
	out = bufferevent_get_output(s->bev);
	evbuffer_add_printf(out, "<stream:error><%s xmlns='" PGN_NS_STREAM_ERRORS
				 "'/>",
			    condition);
	if (text != NULL) {
		evbuffer_add_printf(out, "<text xmlns='" PGN_NS_STREAM_ERRORS
					 "' xml:lang='en'>");
		pgn_xml_escape(out, text, strlen(text));
		evbuffer_add_printf(out, "</text>");
	}
	evbuffer_add_printf(out, "</stream:error></stream:stream>");
	pgn_log(PGN_LOG_INFO, "session %llu: stream error %s",
		(unsigned long long)s->id, condition);
	start_closing(s);
}

void
pgn_stream_close(struct pgn_session *s)
{
	if (s->state == PGN_ST_DEAD || s->state == PGN_ST_CLOSING)
		return;
	if (s->bev == NULL) {
		pgn_stream_destroy(s);
		return;
	}
	ensure_header(s);
	evbuffer_add_printf(bufferevent_get_output(s->bev), "</stream:stream>");
	start_closing(s);
}

void
pgn_stream_destroy(struct pgn_session *s)
{
	if (s->state == PGN_ST_DEAD)
		return;
	/* Let the negotiation layer unlink the session (router tables,
	 * session-ended event) while it is still whole. */
	if (s->kind == PGN_STREAM_C2S)
		pgn_c2s_closed(s);
	else
		pgn_component_closed(s);
	s->state = PGN_ST_DEAD;
	if (s->bev != NULL) {
		bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	}
	evtimer_del(s->timer);
	pgn_map_del_id(s->srv->sessions, s->id);
	s->next_dead = s->srv->dead;
	s->srv->dead = s;
	event_active(s->srv->reaper, EV_TIMEOUT, 0);
	pgn_log(PGN_LOG_DEBUG, "session %llu: closed",
		(unsigned long long)s->id);
}

static void
free_pending(struct pgn_session *s)
{
	while (s->pending != NULL) {
		struct pgn_pending *p = s->pending;
		s->pending = p->next;
		pgn_xml_free(p->xml);
		free(p);
	}
	s->npending = 0;
}

void
pgn_stream_reap(struct pgn_server *srv)
{
	while (srv->dead != NULL) {
		struct pgn_session *s = srv->dead;
		srv->dead = s->next_dead;
		if (s->ssl != NULL && SSL_is_init_finished(s->ssl)) {
			/* Say goodbye at the TLS layer too (close_notify), so
			 * clients do not see a truncation; best effort on a
			 * non-blocking socket. */
			SSL_shutdown(s->ssl);
			ERR_clear_error();
		}
		if (s->bev != NULL) {
			bufferevent_free(s->bev); /* closes fd, frees SSL */
			pgn_connlimit_release(srv->conns, s->peer);
		}
		event_free(s->timer);
		pgn_xml_parser_free(s->parser);
		pgn_sasl_free(s->sasl);
		pgn_jid_free(s->jid);
		free(s->authcid);
		free(s->domain);
		free_pending(s);
		pgn_xml_free(s->presence);
		pgn_session_drop_data(s, NULL);
		pgn_sm_free(s);
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
pgn_stream_suspend(struct pgn_session *s)
{
	s->busy = 1;
	bufferevent_disable(s->bev, EV_READ);
}

void
pgn_stream_resume(struct pgn_session *s)
{
	s->busy = 0;
	while (!s->busy && s->holds == 0 && s->pending != NULL &&
	       s->state != PGN_ST_DEAD && s->state != PGN_ST_CLOSING) {
		struct pgn_pending *p = s->pending;
		s->pending = p->next;
		s->npending--;
		struct pgn_xml *xml = p->xml;
		free(p);
		dispatch(s, xml);
	}
	if (!s->busy && s->holds == 0 && s->state != PGN_ST_DEAD &&
	    s->state != PGN_ST_CLOSING) {
		bufferevent_enable(s->bev, EV_READ);
		/* Bytes that arrived while reading was off are parsed now. */
		if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
			read_cb(s->bev, s);
	}
}

/* Drops stanzas queued before a stream restart (they belonged to the old
 * stream). */
void
pgn_stream_drop_pending(struct pgn_session *s)
{
	free_pending(s);
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
	if (s->ping_sent != 0 && lim->ping_timeout < next)
		next = lim->ping_timeout;
	return next > 0 ? next : 60;
}

/* XEP-0199: an idle client is asked for a pong; no answer (no byte at
 * all) within ping_timeout means the connection is dead.  Returns 1 when
 * the session was hibernated or closed. */
static int
check_ping(struct pgn_session *s, uint64_t now)
{
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	char id[32];

	if (lim->ping_interval == 0)
		return 0;
	if (s->ping_sent != 0) {
		if (s->last_read >= s->ping_sent) {
			s->ping_sent = 0;
		} else if (now - s->ping_sent >=
			   (uint64_t)lim->ping_timeout * 1000) {
			pgn_log(PGN_LOG_INFO,
				"session %llu: no answer to ping in %u s",
				(unsigned long long)s->id, lim->ping_timeout);
			if (pgn_sm_resumable(s))
				pgn_stream_lost(s);
			else
				pgn_stream_error(s, "connection-timeout",
						 "no answer to ping");
			return 1;
		} else {
			return 0;
		}
	}
	if (s->kind != PGN_STREAM_C2S || s->jid == NULL ||
	    now - s->last_read < (uint64_t)lim->ping_interval * 1000)
		return 0;
	struct pgn_xml *iq = pgn_xml_new(PGN_NS_CLIENT, "iq");
	snprintf(id, sizeof(id), "pgn-ping-%lu",
		 (unsigned long)++s->srv->ping_seq);
	if (iq != NULL && pgn_xml_set_attr(iq, "type", "get") == 0 &&
	    pgn_xml_set_attr(iq, "id", id) == 0 &&
	    pgn_xml_set_attr(iq, "from", pgn_host_name(s->host)) == 0 &&
	    pgn_xml_set_attr(iq, "to", s->jid->full) == 0 &&
	    pgn_xml_add_child(iq, "urn:xmpp:ping", "ping") != NULL &&
	    pgn_stream_send_xml(s, iq) == 0)
		s->ping_sent = now;
	pgn_xml_free(iq);
	return 0;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pgn_session *s = arg;
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	uint64_t now = pgn_now_ms();

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
		if (lim->idle_timeout > 0 &&
		    now - s->last_read >= (uint64_t)lim->idle_timeout * 1000) {
			pgn_stream_error(s, "connection-timeout", NULL);
			return;
		}
		if (lim->keepalive_interval > 0 &&
		    now - s->last_write >=
			    (uint64_t)lim->keepalive_interval * 1000)
			pgn_stream_send_raw(s, " ", 1);
		break;
	default:
		if (s->resume_of != 0) {
			pgn_sm_kicked(s);
			return;
		}
		pgn_stream_error(s, "connection-timeout",
				 "negotiation took too long");
		return;
	}
	arm_timer(s, idle_tick(s));
}

/* Called by c2s/component when the stream is established: from now on the
 * timer checks idleness instead of the negotiation deadline. */
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
	if (s->state == PGN_ST_DEAD)
		return;
	if (s->kind != PGN_STREAM_C2S || !pgn_sm_resumable(s)) {
		pgn_stream_destroy(s);
		return;
	}
	/* Keep the session (bound, available, in every table) without its
	 * connection until the client resumes or resume_timeout passes. */
	bufferevent_free(s->bev); /* closes the socket and frees SSL */
	pgn_connlimit_release(s->srv->conns, s->peer);
	s->bev = NULL;
	s->ssl = NULL;
	s->fd = -1;
	s->unflushed_us = 0;
	pgn_xml_parser_free(s->parser);
	s->parser = NULL;
	free_pending(s);
	s->busy = 0;
	s->ping_sent = 0;
	s->state = PGN_ST_HIBERNATED;
	evtimer_del(s->timer);
	arm_timer(s, s->sm != NULL ? pgn_sm_timeout(s) : 1);
	pgn_sm_hibernated(s);
}

#define SWAP(a, b)                                                           \
	do {                                                                 \
		__typeof__(a) tmp_ = (a);                                    \
		(a) = (b);                                                   \
		(b) = tmp_;                                                  \
	} while (0)

static void
adopt(struct pgn_session *s)
{
	if (s->bev != NULL)
		bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
	if (s->parser != NULL)
		pgn_xml_parser_set_userdata(s->parser, s);
}

void
pgn_stream_swap_transport(struct pgn_session *a, struct pgn_session *b)
{
	char tmp[sizeof(a->peer)];
	char sid[sizeof(a->stream_id)];
	unsigned x;

	SWAP(a->bev, b->bev);
	SWAP(a->fd, b->fd);
	SWAP(a->ssl, b->ssl);
	SWAP(a->parser, b->parser);
	SWAP(a->listener, b->listener);
	SWAP(a->pending, b->pending);
	SWAP(a->npending, b->npending);
	SWAP(a->last_read, b->last_read);
	SWAP(a->last_write, b->last_write);
	SWAP(a->ping_sent, b->ping_sent);
	SWAP(a->unflushed_us, b->unflushed_us);
	x = a->secure, a->secure = b->secure, b->secure = x;
	x = a->direct_tls, a->direct_tls = b->direct_tls, b->direct_tls = x;
	x = a->header_sent, a->header_sent = b->header_sent, b->header_sent = x;
	memcpy(tmp, a->peer, sizeof(tmp));
	memcpy(a->peer, b->peer, sizeof(tmp));
	memcpy(b->peer, tmp, sizeof(tmp));
	memcpy(sid, a->stream_id, sizeof(sid));
	memcpy(a->stream_id, b->stream_id, sizeof(sid));
	memcpy(b->stream_id, sid, sizeof(sid));
	adopt(a);
	adopt(b);
}
