/* Unit tests for the c2s stream kind (src/xmpp/c2s.c) and the output chain
 * of stream.c, without a running server: a hand-made server with one host
 * and a memory connection (a pgn_conn_ops that parses what the test feeds
 * and captures what the stream writes). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <event2/event.h>

#include "conn.h"
#include "host.h"
#include "pigeon/map.h"
#include "route.h"
#include "router.h"
#include "server.h"
#include "stream.h"

/* ---- the memory connection -------------------------------------------- */

struct mem_conn {
	struct pgn_conn c;
	struct pgn_xml_parser *parser;
	int reading;
	int tls_started;
};

/* Everything written to the last connection, across its free. */
static char out[65536];
static size_t outlen;
static int freed;

static void
put(const char *s, size_t n)
{
	ck_assert_uint_lt(outlen + n, sizeof(out));
	memcpy(out + outlen, s, n);
	outlen += n;
	out[outlen] = '\0';
}

static void
puts_(const char *s)
{
	put(s, strlen(s));
}

static void mem_read(struct pgn_conn *c) { (void)c; }

static size_t
mem_copy(const struct pgn_conn_span *span, void *dst)
{
	memcpy(dst, (const char *)span->where + span->off, span->len);
	return span->len;
}

static int
mem_write_xml(struct pgn_conn *c, const struct pgn_xml *xml,
	      struct pgn_conn_span *span)
{
	char *text = pgn_xml_to_string(xml, PGN_NS_CLIENT);
	size_t off = outlen;

	(void)c;
	if (text == NULL)
		return -ENOMEM;
	puts_(text);
	free(text);
	if (span != NULL) {
		/* (Only read before the next write.) */
		span->copy = mem_copy;
		span->where = out;
		span->off = off;
		span->len = outlen - off;
	}
	return 0;
}

static int
mem_write_raw(struct pgn_conn *c, const char *data, size_t len)
{
	(void)c;
	put(data, len);
	return 0;
}

static int
mem_write_header(struct pgn_conn *c, const char *ns, const char *from)
{
	puts_("<stream:stream xmlns='");
	puts_(ns);
	puts_("'");
	if (from != NULL) {
		puts_(" from='");
		puts_(from);
		puts_("'");
	}
	puts_(" id='");
	puts_(c->stream_id);
	puts_("'>");
	return 0;
}

static int
mem_write_stream_el(struct pgn_conn *c, const struct pgn_xml *el)
{
	(void)c;
	puts_("<stream:");
	puts_(pgn_xml_name(el));
	puts_(">");
	for (struct pgn_xml *k = pgn_xml_first_child(el); k != NULL;
	     k = pgn_xml_next(k)) {
		char *text = pgn_xml_to_string(k, PGN_NS_CLIENT);
		puts_(text);
		free(text);
	}
	puts_("</stream:");
	puts_(pgn_xml_name(el));
	puts_(">");
	return 0;
}

static int
mem_write_error(struct pgn_conn *c, const char *condition, const char *text)
{
	(void)c;
	puts_("<stream:error><");
	puts_(condition);
	puts_("/>");
	if (text != NULL) {
		puts_("<text>");
		puts_(text);
		puts_("</text>");
	}
	puts_("</stream:error></stream:stream>");
	return 0;
}

static int
mem_write_close(struct pgn_conn *c)
{
	(void)c;
	puts_("</stream:stream>");
	return 0;
}

static int
mem_start_tls(struct pgn_conn *c, struct pgn_tls *tls)
{
	(void)tls;
	((struct mem_conn *)c)->tls_started = 1;
	return 0;
}

static void
mem_restart(struct pgn_conn *c)
{
	pgn_xml_parser_reset(((struct mem_conn *)c)->parser);
	pgn_conn_drop_pending(c);
	c->header_sent = 0;
}

static void
mem_set_reading(struct pgn_conn *c, int on)
{
	((struct mem_conn *)c)->reading = on;
}

static size_t mem_pending(const struct pgn_conn *c) { (void)c; return 0; }
static int mem_has_input(const struct pgn_conn *c) { (void)c; return 0; }
static void mem_set_low(struct pgn_conn *c, size_t low) { (void)c; (void)low; }
static void mem_kick(struct pgn_conn *c) { (void)c; }
static void mem_detach(struct pgn_conn *c) { ((struct mem_conn *)c)->reading = 0; }

static void
mem_free(struct pgn_conn *c)
{
	struct mem_conn *m = (struct mem_conn *)c;

	pgn_xml_parser_free(m->parser);
	pgn_conn_drop_pending(c);
	free(m);
	freed++;
}

static const struct pgn_conn_ops mem_ops = {
	.name = "memory",
	.read = mem_read,
	.write_xml = mem_write_xml,
	.write_raw = mem_write_raw,
	.write_header = mem_write_header,
	.write_stream_el = mem_write_stream_el,
	.write_error = mem_write_error,
	.write_close = mem_write_close,
	.start_tls = mem_start_tls,
	.restart = mem_restart,
	.set_reading = mem_set_reading,
	.pending = mem_pending,
	.has_input = mem_has_input,
	.set_low_watermark = mem_set_low,
	.kick = mem_kick,
	.detach = mem_detach,
	.free = mem_free,
};

/* ---- a server with one host, by hand ---------------------------------- */

static struct pgn_server srv;
static struct pgn_config cfg;
static struct pgn_cfg_host host_cfg = { .name = "localhost" };
static struct pgn_cfg_listen listen_cfg = { .kind = PGN_LISTEN_C2S,
					    .port = 5222 };
static struct pgn_listener listener = { .srv = &srv, .cfg = &listen_cfg };
static struct pgn_host *host;

static void
reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pgn_stream_reap(arg);
}

static void
setup(void)
{
	memset(&srv, 0, sizeof(srv));
	memset(&cfg, 0, sizeof(cfg));
	cfg.limits.max_stanza_size = 65536;
	cfg.limits.max_depth = 32;
	cfg.limits.max_attrs = 64;
	cfg.limits.max_children = 256;
	cfg.limits.negotiation_timeout = 30;
	cfg.limits.max_unacked = 100;
	cfg.limits.max_unacked_bytes = 1 << 20;
	cfg.limits.max_unacked_bytes_per_account = 1 << 22;
	srv.cfg = &cfg;
	srv.base = event_base_new();
	srv.sessions = pgn_map_new();
	srv.reaper = event_new(srv.base, -1, 0, reaper_cb, &srv);
	srv.routes = pgn_routes_new(pgn_router_remote_default);
	host = pgn_host_new(&srv, &host_cfg);
	srv.hosts = &host;
	srv.nhosts = 1;
	ck_assert_ptr_nonnull(srv.base);
	ck_assert_ptr_nonnull(srv.sessions);
	ck_assert_ptr_nonnull(srv.routes);
	ck_assert_ptr_nonnull(host);
	ck_assert_int_eq(pgn_router_add_host(&srv, host), 0);
	outlen = 0;
	out[0] = '\0';
	freed = 0;
}

static void
teardown(void)
{
	event_base_loop(srv.base, EVLOOP_NONBLOCK); /* the reaper */
	pgn_host_free(host);
	pgn_routes_free(srv.routes);
	event_free(srv.reaper);
	pgn_map_free(srv.sessions);
	event_base_free(srv.base);
}

static struct pgn_session *
open_session(void)
{
	struct pgn_xml_limits xl = { .max_stanza_bytes = 65536,
				     .max_depth = 32,
				     .max_attrs = 64,
				     .max_children = 256 };
	struct mem_conn *m = calloc(1, sizeof(*m));
	struct pgn_session *s;

	ck_assert_ptr_nonnull(m);
	m->c.ops = &mem_ops;
	m->reading = 1;
	strcpy(m->c.peer, "192.0.2.1");
	m->parser = pgn_xml_parser_new(&xl, &pgn_conn_parser_cbs, m);
	ck_assert_ptr_nonnull(m->parser);
	s = pgn_stream_new(&srv, &listener, &pgn_c2s_ops, &m->c);
	ck_assert_ptr_nonnull(s);
	return s;
}

/* Feeds text to the session's connection as if the peer had sent it. */
static void
feed(struct pgn_session *s, const char *text)
{
	struct mem_conn *m = (struct mem_conn *)s->conn;
	pgn_xml_parser_feed(m->parser, text, strlen(text));
}

static void
close_session(struct pgn_session *s)
{
	pgn_stream_destroy(s);
	event_base_loop(srv.base, EVLOOP_NONBLOCK);
}

#define HEADER(ns, to, version)                                             \
	"<?xml version='1.0'?><stream:stream xmlns='" ns "' "                \
	"xmlns:stream='http://etherx.jabber.org/streams' to='" to "'"        \
	version ">"

/* ---- negotiation ------------------------------------------------------- */

START_TEST(header_gets_features)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:client", "localhost", " version='1.0'"));
	ck_assert_int_eq(s->state, PGN_ST_NEGOTIATING);
	ck_assert_ptr_nonnull(strstr(out, "<stream:stream xmlns='jabber:client' "
					  "from='localhost' id='"));
	ck_assert_ptr_nonnull(strstr(out, s->conn->stream_id));
	/* No TLS configured: SASL at once, SCRAM only (PLAIN needs TLS). */
	ck_assert_ptr_nonnull(strstr(out, "<stream:features><mechanisms "));
	ck_assert_ptr_nonnull(strstr(out, ">SCRAM-SHA-256</mechanism>"));
	ck_assert_ptr_null(strstr(out, ">PLAIN<"));
	ck_assert_ptr_null(strstr(out, "starttls"));
	ck_assert_ptr_nonnull(strstr(out, "</stream:features>"));
	ck_assert_ptr_null(strstr(out, "stream:error"));
	close_session(s);
	ck_assert_int_eq(freed, 1);
}
END_TEST

START_TEST(wrong_namespace)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:server", "localhost", " version='1.0'"));
	/* Our header first (RFC 6120 §4.9.1.2), then the error; closed. */
	ck_assert_ptr_nonnull(strstr(out, "<stream:stream "));
	ck_assert_ptr_nonnull(
		strstr(out, "<stream:error><invalid-namespace/>"));
	ck_assert_ptr_null(strstr(out, "features"));
	/* Nothing left to write: closed at once, freed by the reaper. */
	ck_assert_int_eq(s->state, PGN_ST_DEAD);
	event_base_loop(srv.base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(freed, 1);
}
END_TEST

START_TEST(wrong_version)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:client", "localhost", ""));
	ck_assert_ptr_nonnull(
		strstr(out, "<stream:error><unsupported-version/>"));
	ck_assert_int_eq(s->state, PGN_ST_DEAD);
}
END_TEST

START_TEST(unknown_host)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:client", "elsewhere.example", " version='1.0'"));
	/* No 'from': we do not know which host it wanted. */
	ck_assert_ptr_nonnull(strstr(out, "<stream:stream xmlns='jabber:client' "
					  "id='"));
	ck_assert_ptr_nonnull(strstr(out, "<stream:error><host-unknown/>"));
	ck_assert_int_eq(s->state, PGN_ST_DEAD);
}
END_TEST

START_TEST(stanza_before_auth)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:client", "localhost", " version='1.0'"));
	outlen = 0;
	feed(s, "<message to='bob@localhost'><body>hi</body></message>");
	ck_assert_str_eq(out, "<stream:error><not-authorized/></stream:error>"
			      "</stream:stream>");
	ck_assert_int_eq(s->state, PGN_ST_DEAD);
}
END_TEST

START_TEST(iq_before_auth)
{
	struct pgn_session *s = open_session();

	/* No module takes a pre-authentication iq (in-band registration). */
	feed(s, HEADER("jabber:client", "localhost", " version='1.0'"));
	outlen = 0;
	feed(s, "<iq type='get' id='1'><query xmlns='jabber:iq:register'/>"
		"</iq>");
	ck_assert_ptr_nonnull(strstr(out, "<not-authorized/>"));
	ck_assert_int_eq(s->state, PGN_ST_DEAD);
}
END_TEST

START_TEST(bad_sasl_mechanism)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:client", "localhost", " version='1.0'"));
	outlen = 0;
	feed(s, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
		"mechanism='X-UNKNOWN'>=</auth>");
	ck_assert_str_eq(out, "<failure xmlns=\"urn:ietf:params:xml:ns:"
			      "xmpp-sasl\"><invalid-mechanism/></failure>");
	/* A failure is not the end (RFC 6120 §6.4.5: retries). */
	ck_assert_int_eq(s->state, PGN_ST_NEGOTIATING);
	close_session(s);
}
END_TEST

START_TEST(peer_closes)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:client", "localhost", " version='1.0'"));
	outlen = 0;
	feed(s, "</stream:stream>");
	ck_assert_str_eq(out, "</stream:stream>");
	ck_assert_int_eq(s->state, PGN_ST_DEAD);
}
END_TEST

START_TEST(not_well_formed)
{
	struct pgn_session *s = open_session();

	feed(s, HEADER("jabber:client", "localhost", " version='1.0'"));
	outlen = 0;
	feed(s, "<message><body>x</message>");
	ck_assert_ptr_nonnull(strstr(out, "<stream:error><not-well-formed/>"));
	ck_assert_int_eq(s->state, PGN_ST_DEAD);
}
END_TEST

/* ---- the output chain ---------------------------------------------------- */

static char trace[64];

static int
filter_a(struct pgn_session *s, const struct pgn_xml *xml, void *arg)
{
	(void)s;
	(void)xml;
	strcat(trace, "a");
	return *(int *)arg;
}

static int
filter_b(struct pgn_session *s, const struct pgn_xml *xml, void *arg)
{
	(void)s;
	(void)xml;
	strcat(trace, "b");
	return *(int *)arg;
}

static struct pgn_xml *
message(void)
{
	struct pgn_xml *m = pgn_xml_new(PGN_NS_CLIENT, "message");
	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(pgn_xml_set_attr(m, "to", "u@localhost/r"), 0);
	return m;
}

START_TEST(filters_in_priority_order)
{
	struct pgn_session *s = open_session();
	struct pgn_xml *m = message();
	int go = 0, take = 1, refuse = -EPERM;
	const struct pgn_module *mod = (const struct pgn_module *)&go;

	s->state = PGN_ST_BOUND; /* (as after binding) */
	ck_assert_int_eq(pgn_session_add_filter(s, mod, 0, filter_a, &go), 0);
	ck_assert_int_eq(pgn_session_add_filter(s, mod, 10, filter_b, &go), 0);
	trace[0] = '\0';
	ck_assert_int_eq(pgn_stream_send_xml(s, m), 0);
	ck_assert_str_eq(trace, "ba");
	ck_assert_str_eq(out, "<message to=\"u@localhost/r\"/>");

	/* A direct send skips the module filters. */
	trace[0] = '\0';
	outlen = 0;
	ck_assert_int_eq(pgn_stream_send_direct(s, m), 0);
	ck_assert_str_eq(trace, "");
	ck_assert_uint_eq(outlen, strlen("<message to=\"u@localhost/r\"/>"));

	/* Taken by the first: the second never sees it, nothing written. */
	pgn_session_remove_filter(s, mod, filter_b, NULL);
	ck_assert_int_eq(pgn_session_add_filter(s, mod, 10, filter_b, &take),
			 0);
	trace[0] = '\0';
	outlen = 0;
	ck_assert_int_eq(pgn_stream_send_xml(s, m), 0);
	ck_assert_str_eq(trace, "b");
	ck_assert_uint_eq(outlen, 0);

	/* Refused: the sender gets the error. */
	pgn_session_remove_filter(s, mod, filter_b, NULL);
	ck_assert_int_eq(pgn_session_add_filter(s, mod, 10, filter_b, &refuse),
			 0);
	ck_assert_int_eq(pgn_stream_send_xml(s, m), -EPERM);
	ck_assert_uint_eq(outlen, 0);

	/* The module's filters go with its data (unload, session end). */
	pgn_session_drop_data(s, mod);
	ck_assert_ptr_null(s->filters);
	pgn_xml_free(m);
	s->state = PGN_ST_NEGOTIATING;
	close_session(s);
}
END_TEST

START_TEST(filters_only_when_bound)
{
	struct pgn_session *s = open_session();
	struct pgn_xml *m = message();
	int take = 1;
	const struct pgn_module *mod = (const struct pgn_module *)&take;

	/* Before binding a module filter does not apply (the stream's own
	 * replies). */
	ck_assert_int_eq(pgn_session_add_filter(s, mod, 0, filter_a, &take),
			 0);
	trace[0] = '\0';
	ck_assert_int_eq(pgn_stream_send_xml(s, m), 0);
	ck_assert_str_eq(trace, "");
	ck_assert_str_eq(out, "<message to=\"u@localhost/r\"/>");
	pgn_xml_free(m);
	close_session(s);
}
END_TEST

static Suite *
c2s_suite(void)
{
	Suite *s = suite_create("c2s");
	TCase *tc = tcase_create("negotiation");
	TCase *tf = tcase_create("output chain");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, header_gets_features);
	tcase_add_test(tc, wrong_namespace);
	tcase_add_test(tc, wrong_version);
	tcase_add_test(tc, unknown_host);
	tcase_add_test(tc, stanza_before_auth);
	tcase_add_test(tc, iq_before_auth);
	tcase_add_test(tc, bad_sasl_mechanism);
	tcase_add_test(tc, peer_closes);
	tcase_add_test(tc, not_well_formed);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(tf, setup, teardown);
	tcase_add_test(tf, filters_in_priority_order);
	tcase_add_test(tf, filters_only_when_bound);
	suite_add_tcase(s, tf);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(c2s_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
