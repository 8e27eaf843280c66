/*
 * strophe_client: a small libstrophe client for the end-to-end tests
 * (tests/e2e/test_strophe.py).  It checks that a second, independent XMPP
 * implementation (besides slixmpp) can use Pigeon: STARTTLS, SASL, bind,
 * presence, messages and XEP-0199 pings.
 *
 *   strophe_client --jid alice@localhost/strophe --password PW
 *                  --host 127.0.0.1 --port N
 *                  [--cafile FILE | --tls-trust]
 *                  [--send-to JID --body TEXT]
 *                  [--expect-body TEXT] [--ping JID]
 *                  [--timeout SECONDS] [--verbose]
 *
 * Standard output gets one machine-readable line per event, flushed at
 * once so that a test can wait for "CONNECTED" before it sends:
 *   CONNECTED <bound jid>
 *   SENT to=<jid>
 *   RECEIVED from=<jid> body=<text>      (newlines and '\' escaped)
 *   PONG <jid>
 *   DONE
 * Failures go to standard error as "ERROR ..." lines.  Exit status: 0 when
 * everything asked for happened, 1 on failure (including authentication
 * failure and an error reply to the ping), 2 on timeout, 64 on bad usage.
 */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <strophe.h>

#define SC_EXIT_OK 0
#define SC_EXIT_FAIL 1
#define SC_EXIT_TIMEOUT 2
#define SC_EXIT_USAGE 64

#define SC_NS_PING "urn:xmpp:ping"
#define SC_PING_ID "strophe-client-ping-1"

struct sc_options {
	const char *jid;
	const char *password;
	const char *host;
	unsigned short port;
	const char *cafile;
	int tls_trust;
	const char *send_to;
	const char *body;
	const char *expect_body;
	const char *ping;
	double timeout;
	int verbose;
};

/* Everything the callbacks share; owned by main(). */
struct sc_state {
	const struct sc_options *opt;
	xmpp_ctx_t *ctx;
	int connected;   /* session established (bound) */
	int disconnected;/* the connection is gone, for whatever reason */
	int failed;      /* something went wrong: exit non-zero */
	int got_body;    /* the expected body arrived */
	int got_pong;    /* the ping result arrived */
};

static void
sc_error(struct sc_state *st, const char *fmt, ...)
{
	va_list ap;

	st->failed = 1;
	fputs("ERROR ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static double
sc_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints text on one line: '\n', '\r' and '\' are escaped so that a body
 * can never forge another event line. */
static void
sc_print_escaped(const char *text)
{
	for (const char *p = text; *p; p++) {
		if (*p == '\n')
			fputs("\\n", stdout);
		else if (*p == '\r')
			fputs("\\r", stdout);
		else if (*p == '\\')
			fputs("\\\\", stdout);
		else
			fputc(*p, stdout);
	}
}

static int
sc_done(const struct sc_state *st)
{
	const struct sc_options *o = st->opt;

	return st->connected && (!o->expect_body || st->got_body) &&
	       (!o->ping || st->got_pong);
}

static int
sc_on_message(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	struct sc_state *st = userdata;
	const char *from = xmpp_stanza_get_from(stanza);
	const char *type = xmpp_stanza_get_type(stanza);
	char *body;

	if (type && strcmp(type, "error") == 0) {
		sc_error(st, "message error from %s", from ? from : "(none)");
		return 1;
	}
	body = xmpp_message_get_body(stanza);
	if (!body)
		return 1; /* chat states, receipts...: not ours */
	printf("RECEIVED from=%s body=", from ? from : "");
	sc_print_escaped(body);
	putchar('\n');
	fflush(stdout);
	if (st->opt->expect_body && strcmp(body, st->opt->expect_body) == 0)
		st->got_body = 1;
	xmpp_free(st->ctx, body);
	return 1;
}

static int
sc_on_pong(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
	struct sc_state *st = userdata;
	const char *type = xmpp_stanza_get_type(stanza);
	const char *from = xmpp_stanza_get_from(stanza);

	if (!type || strcmp(type, "result") != 0) {
		sc_error(st, "ping %s: got type=%s", st->opt->ping,
			 type ? type : "(none)");
		return 0;
	}
	/* RFC 6120 10.3.3: a reply from the server may carry our domain or no
	 * from at all; anything else is not the entity we pinged. */
	if (from && strcmp(from, st->opt->ping) != 0) {
		sc_error(st, "ping %s: reply from %s", st->opt->ping, from);
		return 0;
	}
	st->got_pong = 1;
	printf("PONG %s\n", st->opt->ping);
	fflush(stdout);
	return 0; /* one-shot */
}

static int
sc_send_presence(xmpp_conn_t *conn, struct sc_state *st)
{
	xmpp_stanza_t *pres = xmpp_presence_new(st->ctx);

	if (!pres)
		return -1;
	xmpp_send(conn, pres);
	xmpp_stanza_release(pres);
	return 0;
}

static int
sc_send_message(xmpp_conn_t *conn, struct sc_state *st)
{
	char *id = xmpp_uuid_gen(st->ctx);
	xmpp_stanza_t *msg;
	int rc = -1;

	msg = xmpp_message_new(st->ctx, "chat", st->opt->send_to, id);
	if (!msg)
		goto fail;
	if (xmpp_message_set_body(msg, st->opt->body) != XMPP_EOK)
		goto fail;
	xmpp_send(conn, msg);
	printf("SENT to=%s\n", st->opt->send_to);
	fflush(stdout);
	rc = 0;
fail:
	if (msg)
		xmpp_stanza_release(msg);
	if (id)
		xmpp_free(st->ctx, id);
	return rc;
}

static int
sc_send_ping(xmpp_conn_t *conn, struct sc_state *st)
{
	xmpp_stanza_t *iq, *ping = NULL;
	int rc = -1;

	iq = xmpp_iq_new(st->ctx, "get", SC_PING_ID);
	if (!iq)
		goto fail;
	ping = xmpp_stanza_new(st->ctx);
	if (!ping || xmpp_stanza_set_name(ping, "ping") != XMPP_EOK ||
	    xmpp_stanza_set_ns(ping, SC_NS_PING) != XMPP_EOK ||
	    xmpp_stanza_set_to(iq, st->opt->ping) != XMPP_EOK ||
	    xmpp_stanza_add_child(iq, ping) != XMPP_EOK)
		goto fail;
	xmpp_id_handler_add(conn, sc_on_pong, SC_PING_ID, st);
	xmpp_send(conn, iq);
	rc = 0;
fail:
	if (ping)
		xmpp_stanza_release(ping);
	if (iq)
		xmpp_stanza_release(iq);
	return rc;
}

static void
sc_on_conn(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
	   xmpp_stream_error_t *stream_error, void *userdata)
{
	struct sc_state *st = userdata;
	const char *bound;

	if (event != XMPP_CONN_CONNECT) {
		if (!st->connected)
			sc_error(st, "could not log in (error %d%s)", error,
				 stream_error ? ", stream error" : "");
		else if (!sc_done(st) && !st->failed)
			sc_error(st, "disconnected early (error %d)", error);
		st->disconnected = 1;
		return;
	}
	if (!xmpp_conn_is_secured(conn)) {
		sc_error(st, "session is not encrypted");
		xmpp_disconnect(conn);
		return;
	}
	st->connected = 1;
	bound = xmpp_conn_get_bound_jid(conn);
	printf("CONNECTED %s\n", bound ? bound : "");
	fflush(stdout);

	xmpp_handler_add(conn, sc_on_message, NULL, "message", NULL, st);
	if (sc_send_presence(conn, st) < 0 ||
	    (st->opt->send_to && sc_send_message(conn, st) < 0) ||
	    (st->opt->ping && sc_send_ping(conn, st) < 0)) {
		sc_error(st, "out of memory building a stanza");
		xmpp_disconnect(conn);
	}
}

static void
sc_usage(FILE *out)
{
	fputs("usage: strophe_client --jid JID --password PW --host HOST --port N\n"
	      "         [--cafile FILE | --tls-trust] [--send-to JID --body TEXT]\n"
	      "         [--expect-body TEXT] [--ping JID] [--timeout S] [--verbose]\n",
	      out);
}

static int
sc_parse(int argc, char **argv, struct sc_options *o)
{
	static const struct option longopts[] = {
		{"jid", required_argument, NULL, 'j'},
		{"password", required_argument, NULL, 'p'},
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'P'},
		{"cafile", required_argument, NULL, 'c'},
		{"tls-trust", no_argument, NULL, 'T'},
		{"send-to", required_argument, NULL, 's'},
		{"body", required_argument, NULL, 'b'},
		{"expect-body", required_argument, NULL, 'e'},
		{"ping", required_argument, NULL, 'i'},
		{"timeout", required_argument, NULL, 't'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char *end;
	long port;
	int c;

	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->port = 5222;
	o->timeout = 10.0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': o->jid = optarg; break;
		case 'p': o->password = optarg; break;
		case 'H': o->host = optarg; break;
		case 'P':
			errno = 0;
			port = strtol(optarg, &end, 10);
			if (errno || *end || port < 1 || port > 65535) {
				fprintf(stderr, "bad --port %s\n", optarg);
				return -1;
			}
			o->port = (unsigned short)port;
			break;
		case 'c': o->cafile = optarg; break;
		case 'T': o->tls_trust = 1; break;
		case 's': o->send_to = optarg; break;
		case 'b': o->body = optarg; break;
		case 'e': o->expect_body = optarg; break;
		case 'i': o->ping = optarg; break;
		case 't':
			o->timeout = strtod(optarg, &end);
			if (*end || !(o->timeout > 0)) {
				fprintf(stderr, "bad --timeout %s\n", optarg);
				return -1;
			}
			break;
		case 'v': o->verbose = 1; break;
		case 'h': sc_usage(stdout); exit(SC_EXIT_OK);
		default: return -1;
		}
	}
	if (optind != argc || !o->jid || !o->password ||
	    !o->send_to != !o->body) {
		sc_usage(stderr);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct sc_options opt;
	struct sc_state st;
	xmpp_log_t *log = NULL;
	xmpp_ctx_t *ctx = NULL;
	xmpp_conn_t *conn = NULL;
	double deadline, grace;
	int rc = SC_EXIT_FAIL;
	long flags;

	if (sc_parse(argc, argv, &opt) < 0)
		return SC_EXIT_USAGE;
	memset(&st, 0, sizeof(st));
	st.opt = &opt;
	/* libstrophe writes with send() and no MSG_NOSIGNAL: a late write
	 * (its XEP-0198 <a/> answering the server's <r/> while the streams
	 * close) to a socket the server has already closed must be an error,
	 * not a kill, as in any real client. */
	signal(SIGPIPE, SIG_IGN);

	xmpp_initialize();
	if (opt.verbose)
		log = xmpp_get_default_logger(XMPP_LEVEL_DEBUG);
	ctx = xmpp_ctx_new(NULL, log);
	if (!ctx)
		goto fail;
	st.ctx = ctx;
	conn = xmpp_conn_new(ctx);
	if (!conn)
		goto fail;

	/* STARTTLS is mandatory: a server that does not offer it fails the
	 * test.  The test certificate is self-signed, so either verify it
	 * against the file the tests made (--cafile) or trust it blindly. */
	flags = XMPP_CONN_FLAG_MANDATORY_TLS;
	if (opt.tls_trust)
		flags |= XMPP_CONN_FLAG_TRUST_TLS;
	if (xmpp_conn_set_flags(conn, flags) != XMPP_EOK) {
		sc_error(&st, "xmpp_conn_set_flags failed");
		goto fail;
	}
	if (opt.cafile)
		xmpp_conn_set_cafile(conn, opt.cafile);
	xmpp_conn_set_jid(conn, opt.jid);
	xmpp_conn_set_pass(conn, opt.password);

	if (xmpp_connect_client(conn, opt.host, opt.port, sc_on_conn, &st) !=
	    XMPP_EOK) {
		sc_error(&st, "cannot connect to %s:%u", opt.host, opt.port);
		goto fail;
	}

	deadline = sc_now() + opt.timeout;
	while (!st.disconnected && !st.failed && !sc_done(&st)) {
		if (sc_now() >= deadline) {
			fprintf(stderr, "TIMEOUT after %.1f s (connected=%d "
				"body=%d pong=%d)\n", opt.timeout, st.connected,
				st.got_body, st.got_pong);
			rc = SC_EXIT_TIMEOUT;
			goto fail;
		}
		xmpp_run_once(ctx, 50);
	}

	/* Close the stream politely and let libstrophe flush what is queued
	 * (the message we sent); a short grace period bounds it. */
	if (!st.disconnected) {
		xmpp_disconnect(conn);
		grace = sc_now() + 5.0;
		while (!st.disconnected && sc_now() < grace)
			xmpp_run_once(ctx, 50);
	}
	if (!st.failed && sc_done(&st)) {
		puts("DONE");
		rc = SC_EXIT_OK;
	}
fail:
	fflush(stdout);
	if (conn)
		xmpp_conn_release(conn);
	if (ctx)
		xmpp_ctx_free(ctx);
	xmpp_shutdown();
	return rc;
}
