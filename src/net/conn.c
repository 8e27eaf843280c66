/* The TCP + XML connection: a bufferevent (plain, or OpenSSL for direct
 * TLS and after STARTTLS) and the incremental expat parser.  The only
 * file that writes to a client socket. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "pigeon/log.h"
#include "pigeon/module.h" /* PGN_NS_CLIENT */
#include "pigeon/xml.h"
#include "tls.h"

#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"

/* (The socket and the loop are the bufferevent's: bufferevent_getfd,
 * bufferevent_get_base.) */
struct tcp_conn {
	struct pgn_conn c;
	struct bufferevent *bev;
	struct pgn_xml_parser *parser;
};

static void tcp_read_cb(struct bufferevent *bev, void *arg);
static void tcp_write_cb(struct bufferevent *bev, void *arg);
static void tcp_event_cb(struct bufferevent *bev, short what, void *arg);

void
pgn_conn_drop_pending(struct pgn_conn *c)
{
	while (c->pending != NULL) {
		struct pgn_pending *p = c->pending;
		c->pending = p->next;
		pgn_xml_free(p->xml);
		free(p);
	}
	c->npending = 0;
}

/* ---- parser callbacks: up to the owner (any XML transport) ------------- */

static void
on_open(void *ud, const char **attrs, const char *default_ns)
{
	struct pgn_conn *c = ud;
	c->cbs->open(c->owner, attrs, default_ns);
}

static void
on_element(void *ud, struct pgn_xml *xml)
{
	struct pgn_conn *c = ud;
	c->cbs->element(c->owner, xml);
}

static void
on_close(void *ud)
{
	struct pgn_conn *c = ud;
	c->cbs->closed(c->owner);
}

static void
on_error(void *ud, enum pgn_xml_error err, const char *detail)
{
	struct pgn_conn *c = ud;
	c->cbs->error(c->owner, err, detail);
}

const struct pgn_xml_parser_cbs pgn_conn_parser_cbs = {
	.stream_open = on_open,
	.stanza = on_element,
	.stream_close = on_close,
	.error = on_error,
};

/* ---- operations --------------------------------------------------------- */

static struct evbuffer *
output(const struct tcp_conn *t)
{
	return bufferevent_get_output(t->bev);
}

static void
tcp_read(struct pgn_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	struct evbuffer *in = bufferevent_get_input(t->bev);

	while (evbuffer_get_length(in) > 0) {
		if (t->c.closing || t->c.tls_pending || t->parser == NULL) {
			evbuffer_drain(in, evbuffer_get_length(in));
			break;
		}
		size_t n = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, n);
		int rc = pgn_xml_parser_feed(t->parser, p, n);
		evbuffer_drain(in, n);
		if (rc != 0)
			break;
	}
	/* An idle stream keeps no expat state (~10 KiB) between reads;
	 * a no-op inside a stanza (pgn_xml_parser_park). */
	if (t->parser != NULL)
		pgn_xml_parser_park(t->parser);
}

static size_t tcp_copy(const struct pgn_conn_span *span, void *dst);

static int
tcp_write_xml(struct pgn_conn *c, const struct pgn_xml *xml,
	      struct pgn_conn_span *span)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	struct evbuffer *out = output(t);
	size_t mark = evbuffer_get_length(out);

	/* Stanzas are kept in jabber:client internally; written with that
	 * namespace in scope they carry no xmlns, which reads as the
	 * stream's own content namespace on c2s and component streams
	 * alike. */
	if (pgn_xml_write(xml, PGN_NS_CLIENT, out) != 0)
		return -ENOMEM;
	if (span != NULL) {
		span->copy = tcp_copy;
		span->where = out;
		span->off = mark;
		span->len = evbuffer_get_length(out) - mark;
	}
	return 0;
}

static size_t
tcp_copy(const struct pgn_conn_span *span, void *dst)
{
	struct evbuffer *out = (struct evbuffer *)span->where;
	struct evbuffer_ptr pos;

	if (evbuffer_ptr_set(out, &pos, span->off, EVBUFFER_PTR_SET) != 0 ||
	    evbuffer_copyout_from(out, &pos, dst, span->len) !=
		    (ev_ssize_t)span->len)
		return 0;
	return span->len;
}

static int
tcp_write_raw(struct pgn_conn *c, const char *data, size_t len)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	return bufferevent_write(t->bev, data, len) == 0 ? 0 : -ENOMEM;
}

static int
tcp_write_header(struct pgn_conn *c, const char *ns, const char *from)
{
	struct evbuffer *out = output((struct tcp_conn *)c);

	evbuffer_add_printf(out,
			    "<?xml version='1.0'?><stream:stream xmlns='%s' "
			    "xmlns:stream='" NS_STREAMS "' id='%s'",
			    ns, c->stream_id);
	if (from != NULL) {
		evbuffer_add_printf(out, " from='");
		pgn_xml_escape(out, from, strlen(from));
		evbuffer_add_printf(out, "'");
	}
	evbuffer_add_printf(out, " version='1.0' xml:lang='en'>");
	c->header_sent = 1;
	return 0;
}

static int
tcp_write_stream_el(struct pgn_conn *c, const struct pgn_xml *el)
{
	struct evbuffer *out = output((struct tcp_conn *)c);
	const char *name = pgn_xml_name(el);

	/* The stream prefix, which the generic serialiser does not
	 * write: the wrapper by hand, the children as usual. */
	evbuffer_add_printf(out, "<stream:%s>", name);
	for (struct pgn_xml *k = pgn_xml_first_child(el); k != NULL;
	     k = pgn_xml_next(k))
		if (pgn_xml_write(k, PGN_NS_CLIENT, out) != 0)
			return -ENOMEM;
	evbuffer_add_printf(out, "</stream:%s>", name);
	return 0;
}

static int
tcp_write_error(struct pgn_conn *c, const char *condition, const char *text)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	struct evbuffer *out = output(t);

	evbuffer_add_printf(out, "<stream:error><%s xmlns='" NS_STREAM_ERRORS
				 "'/>",
			    condition);
	if (text != NULL) {
		evbuffer_add_printf(out, "<text xmlns='" NS_STREAM_ERRORS
					 "' xml:lang='en'>");
		pgn_xml_escape(out, text, strlen(text));
		evbuffer_add_printf(out, "</text>");
	}
	evbuffer_add_printf(out, "</stream:error></stream:stream>");
	t->c.closing = 1;
	return 0;
}

static int
tcp_write_close(struct pgn_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	t->c.closing = 1;
	return evbuffer_add_printf(output(t), "</stream:stream>") < 0 ? -ENOMEM
								       : 0;
}

static void
tcp_setup(struct tcp_conn *t)
{
	if (t->c.secure)
		bufferevent_openssl_set_allow_dirty_shutdown(t->bev, 1);
	bufferevent_setcb(t->bev, tcp_read_cb, tcp_write_cb, tcp_event_cb, t);
	bufferevent_enable(t->bev, EV_READ | EV_WRITE);
}

/* Replaces the plain bufferevent with an OpenSSL one on the same fd,
 * with the SSL made by tcp_start_tls. */
static int
switch_to_tls(struct tcp_conn *t)
{
	struct bufferevent *bev;

	/* The plain bufferevent must not close the fd it hands over. */
	bufferevent_setcb(t->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(t->bev, EV_READ | EV_WRITE);
	bev = bufferevent_openssl_socket_new(
		bufferevent_get_base(t->bev), bufferevent_getfd(t->bev),
		t->c.ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return -ENOMEM; /* (the SSL is freed with the connection) */
	/* Free the old one only now: its options do not include
	 * CLOSE_ON_FREE after bufferevent_setfd(-1). */
	bufferevent_setfd(t->bev, -1);
	bufferevent_free(t->bev);
	t->bev = bev;
	t->c.secure = 1;
	t->c.tls_pending = 0;
	tcp_setup(t);
	return 0;
}

static int
tcp_start_tls(struct pgn_conn *c, struct pgn_tls *tls)
{
	if (c->ssl != NULL)
		return -EALREADY;
	if ((c->ssl = pgn_tls_new_ssl(tls, 0)) == NULL)
		return -ENOMEM;
	/* Switch once <proceed/> has left (the write callback; never
	 * here, inside the parser's callback). */
	c->tls_pending = 1;
	c->header_sent = 0;
	return 0;
}

static void
tcp_restart(struct pgn_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	pgn_xml_parser_reset(t->parser);
	pgn_conn_drop_pending(c);
	c->header_sent = 0;
}

static void
tcp_set_reading(struct pgn_conn *c, int on)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	if (on)
		bufferevent_enable(t->bev, EV_READ);
	else
		bufferevent_disable(t->bev, EV_READ);
}

static size_t
tcp_pending(const struct pgn_conn *c)
{
	return evbuffer_get_length(output((const struct tcp_conn *)c));
}

static int
tcp_has_input(const struct pgn_conn *c)
{
	const struct tcp_conn *t = (const struct tcp_conn *)c;
	return evbuffer_get_length(bufferevent_get_input(t->bev)) > 0;
}

static void
tcp_set_low_watermark(struct pgn_conn *c, size_t low)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	bufferevent_setwatermark(t->bev, EV_WRITE, low, 0);
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
 * the event runs leave in the same write.  The owner calls it only on
 * established streams: TLS negotiation keeps its own write callbacks. */
static void
tcp_kick(struct pgn_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	event_active(&t->bev->ev_write, EV_WRITE, 1);
}

static void
tcp_detach(struct pgn_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	t->c.closing = 1;
	bufferevent_setcb(t->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(t->bev, EV_READ | EV_WRITE);
}

static void
tcp_free(struct pgn_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	if (c == NULL)
		return;
	if (c->ssl != NULL && SSL_is_init_finished(c->ssl)) {
		/* Say goodbye at the TLS layer too (close_notify), so
		 * clients do not see a truncation; best effort on a
		 * non-blocking socket. */
		SSL_shutdown(c->ssl);
		ERR_clear_error();
	}
	if (c->tls_pending && c->ssl != NULL)
		SSL_free(c->ssl); /* not the bufferevent's yet */
	if (t->bev != NULL)
		bufferevent_free(t->bev); /* closes the fd, frees SSL */
	pgn_xml_parser_free(t->parser);
	pgn_conn_drop_pending(c);
	free(t);
}

static const struct pgn_conn_ops tcp_ops = {
	.name = "tcp",
	.read = tcp_read,
	.write_xml = tcp_write_xml,
	.write_raw = tcp_write_raw,
	.write_header = tcp_write_header,
	.write_stream_el = tcp_write_stream_el,
	.write_error = tcp_write_error,
	.write_close = tcp_write_close,
	.start_tls = tcp_start_tls,
	.restart = tcp_restart,
	.set_reading = tcp_set_reading,
	.pending = tcp_pending,
	.has_input = tcp_has_input,
	.set_low_watermark = tcp_set_low_watermark,
	.kick = tcp_kick,
	.detach = tcp_detach,
	.free = tcp_free,
};

/* ---- bufferevent callbacks --------------------------------------------- */

static void
tcp_read_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *t = arg;
	(void)bev;
	t->c.cbs->readable(t->c.owner);
}

static void
tcp_write_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *t = arg;

	if (t->c.tls_pending && evbuffer_get_length(output(t)) == 0 &&
	    !t->c.closing && switch_to_tls(t) != 0) {
		t->c.cbs->lost(t->c.owner);
		return;
	}
	(void)bev;
	t->c.cbs->drained(t->c.owner);
}

static void
tcp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tcp_conn *t = arg;

	if (what & BEV_EVENT_CONNECTED) {
		pgn_log(PGN_LOG_DEBUG, "%s: TLS established", t->c.peer);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (what & BEV_EVENT_ERROR && t->c.secure) {
			unsigned long e = bufferevent_get_openssl_error(bev);
			if (e != 0)
				pgn_log(PGN_LOG_INFO, "%s: TLS error: %s",
					t->c.peer, ERR_reason_error_string(e));
		}
		t->c.cbs->lost(t->c.owner);
	}
}

struct pgn_conn *
pgn_tcp_conn_new(struct event_base *base, int fd, SSL *ssl,
		 const struct pgn_xml_limits *xl, const char *peer)
{
	struct tcp_conn *t = calloc(1, sizeof(*t));

	if (t == NULL)
		goto fail;
	t->c.ops = &tcp_ops;
	snprintf(t->c.peer, sizeof(t->c.peer), "%s", peer);
	t->parser = pgn_xml_parser_new(xl, &pgn_conn_parser_cbs, t);
	if (t->parser == NULL)
		goto fail;
	if (ssl != NULL) {
		t->bev = bufferevent_openssl_socket_new(
			base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
			BEV_OPT_CLOSE_ON_FREE);
		t->c.ssl = ssl;
		t->c.direct_tls = 1;
		t->c.secure = 1;
	} else {
		t->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (t->bev == NULL)
		goto fail;
	ssl = NULL;
	tcp_setup(t);
	return &t->c;
fail:
	if (ssl != NULL)
		SSL_free(ssl);
	if (t != NULL)
		pgn_xml_parser_free(t->parser);
	free(t);
	close(fd);
	return NULL;
}
