/* Unit tests for the element tree, the serialiser and the stream parser. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#include <malloc.h> /* mallinfo2 */
#define HAVE_MALLINFO2 1
#endif

#include <check.h>
#include <event2/buffer.h>

#include "pigeon/xml.h"

#define NS_CLIENT "jabber:client"
#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"

#define HEADER                                                               \
	"<?xml version='1.0'?>"                                              \
	"<stream:stream xmlns='jabber:client' "                              \
	"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' "  \
	"version='1.0' xml:lang='en'>"

/* ---- a recorder for parser callbacks --------------------------------- */

#define MAX_STANZAS 16

struct rec {
	struct pgn_xml_parser *p;
	char log[8192];
	size_t len;
	struct pgn_xml *stanzas[MAX_STANZAS];
	int nstanzas;
	int opens, closes, errors;
	enum pgn_xml_error err;
	char detail[256];
	int reset_on_stanza; /* reset when a stanza with this name arrives */
	const char *reset_name;
	int reset_on_error;
};

static void
rec_log(struct rec *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
	va_end(ap);
	ck_assert_int_ge(n, 0);
	ck_assert_uint_lt(r->len + (size_t)n, sizeof(r->log));
	r->len += (size_t)n;
}

static void
cb_open(void *ud, const char **attrs, const char *default_ns)
{
	struct rec *r = ud;
	size_t i;

	r->opens++;
	rec_log(r, "open[%s]", default_ns ? default_ns : "(null)");
	for (i = 0; attrs[i]; i += 2)
		rec_log(r, " %s=%s", attrs[i], attrs[i + 1]);
	rec_log(r, ";");
}

static void
cb_stanza(void *ud, struct pgn_xml *st)
{
	struct rec *r = ud;
	char *s = pgn_xml_to_string(st, NULL);

	ck_assert_ptr_nonnull(s);
	/* Big stanzas are checked by the tests themselves. */
	rec_log(r, "%s;", strlen(s) < 1024 ? s : "(big)");
	free(s);
	if (r->reset_name && strcmp(pgn_xml_name(st), r->reset_name) == 0)
		pgn_xml_parser_reset(r->p);
	if (r->nstanzas < MAX_STANZAS)
		r->stanzas[r->nstanzas] = st;
	else
		pgn_xml_free(st);
	r->nstanzas++;
}

static void
cb_close(void *ud)
{
	struct rec *r = ud;

	r->closes++;
	rec_log(r, "close;");
}

static void
cb_error(void *ud, enum pgn_xml_error err, const char *detail)
{
	struct rec *r = ud;

	r->errors++;
	r->err = err;
	snprintf(r->detail, sizeof(r->detail), "%s", detail);
	rec_log(r, "error %d;", (int)err);
	if (r->reset_on_error)
		pgn_xml_parser_reset(r->p);
}

static const struct pgn_xml_parser_cbs rec_cbs = {
	.stream_open = cb_open,
	.stanza = cb_stanza,
	.stream_close = cb_close,
	.error = cb_error,
};

static struct rec *
rec_new(const struct pgn_xml_limits *lim)
{
	struct rec *r = calloc(1, sizeof(*r));

	ck_assert_ptr_nonnull(r);
	r->p = pgn_xml_parser_new(lim, &rec_cbs, r);
	ck_assert_ptr_nonnull(r->p);
	return r;
}

static void
rec_free(struct rec *r)
{
	int i;

	for (i = 0; i < r->nstanzas && i < MAX_STANZAS; i++)
		pgn_xml_free(r->stanzas[i]);
	pgn_xml_parser_free(r->p);
	free(r);
}

static int
feed_str(struct rec *r, const char *s)
{
	return pgn_xml_parser_feed(r->p, s, strlen(s));
}

/* Feeds s whole and returns the error seen (NONE if none). */
static enum pgn_xml_error
parse_error_of(const char *s, const struct pgn_xml_limits *lim)
{
	struct rec *r = rec_new(lim);
	enum pgn_xml_error err;
	int rc = feed_str(r, s);

	err = r->errors ? r->err : PGN_XML_ERR_NONE;
	ck_assert_int_eq(rc, r->errors ? -1 : 0);
	ck_assert_int_le(r->errors, 1);
	rec_free(r);
	return err;
}

/* ---- tree ------------------------------------------------------------- */

START_TEST(tree_helpers)
{
	struct pgn_xml *iq, *q, *item, *cp, *x;
	const char *name, *value;
	char *s;

	iq = pgn_xml_new(NS_CLIENT, "iq");
	ck_assert_ptr_nonnull(iq);
	ck_assert_str_eq(pgn_xml_name(iq), "iq");
	ck_assert_str_eq(pgn_xml_ns(iq), NS_CLIENT);
	ck_assert_int_eq(pgn_xml_set_attr(iq, "type", "get"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(iq, "id", "1"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(iq, "type", "set"), 0);
	ck_assert_uint_eq(pgn_xml_attr_count(iq), 2);
	ck_assert_int_eq(pgn_xml_attr_at(iq, 0, &name, &value), 0);
	ck_assert_str_eq(name, "type");
	ck_assert_str_eq(value, "set");
	ck_assert_int_eq(pgn_xml_attr_at(iq, 1, &name, &value), 0);
	ck_assert_str_eq(name, "id");
	ck_assert_int_eq(pgn_xml_attr_at(iq, 2, &name, &value), -1);
	/* Value taken from the element itself survives the rebuild. */
	ck_assert_int_eq(pgn_xml_set_attr(iq, "to", pgn_xml_attr(iq, "id")), 0);
	ck_assert_str_eq(pgn_xml_attr(iq, "to"), "1");
	ck_assert_int_eq(pgn_xml_set_attr(iq, "id", NULL), 0);
	ck_assert_ptr_null(pgn_xml_attr(iq, "id"));
	ck_assert_int_eq(pgn_xml_set_attr(iq, "nope", NULL), 0);
	ck_assert_uint_eq(pgn_xml_attr_count(iq), 2);

	q = pgn_xml_add_child(iq, "jabber:iq:roster", "query");
	ck_assert_ptr_nonnull(q);
	ck_assert_ptr_eq(pgn_xml_parent(q), iq);
	item = pgn_xml_add_child(q, NULL, "item");
	ck_assert_ptr_nonnull(item);
	ck_assert_ptr_null(pgn_xml_ns(item));
	ck_assert_int_eq(pgn_xml_add_text(item, "hel", 3), 0);
	ck_assert_ptr_nonnull(pgn_xml_add_child(item, NULL, "b"));
	ck_assert_int_eq(pgn_xml_add_text(item, "lo", 2), 0);
	ck_assert_ptr_nonnull(pgn_xml_add_child(q, NULL, "item2"));

	ck_assert_ptr_eq(pgn_xml_child(iq, NULL, "query"), q);
	ck_assert_ptr_eq(pgn_xml_child(iq, "jabber:iq:roster", NULL), q);
	ck_assert_ptr_null(pgn_xml_child(iq, NS_CLIENT, "query"));
	/* An inheriting child matches its parent's namespace. */
	ck_assert_ptr_eq(pgn_xml_child(q, "jabber:iq:roster", "item"), item);
	ck_assert_ptr_eq(pgn_xml_first_child(q), item);
	ck_assert_str_eq(pgn_xml_name(pgn_xml_next(item)), "item2");
	ck_assert_ptr_null(pgn_xml_next(pgn_xml_next(item)));

	s = pgn_xml_text(item);
	ck_assert_str_eq(s, "hello");
	free(s);
	s = pgn_xml_child_text(q, NULL, "item");
	ck_assert_str_eq(s, "hello");
	free(s);
	s = pgn_xml_child_text(q, NULL, "item2");
	ck_assert_str_eq(s, "");
	free(s);
	ck_assert_ptr_null(pgn_xml_child_text(q, NULL, "missing"));

	cp = pgn_xml_copy(iq);
	ck_assert_ptr_nonnull(cp);
	s = pgn_xml_to_string(cp, NS_CLIENT);
	ck_assert_str_eq(s, "<iq type=\"set\" to=\"1\">"
			    "<query xmlns=\"jabber:iq:roster\">"
			    "<item>hel<b/>lo</item><item2/></query></iq>");
	free(s);
	pgn_xml_free(cp);

	/* A copy of an inheriting element takes its namespace along. */
	cp = pgn_xml_copy(item);
	ck_assert_str_eq(pgn_xml_ns(cp), "jabber:iq:roster");
	pgn_xml_free(cp);

	pgn_xml_unlink(item);
	ck_assert_ptr_null(pgn_xml_parent(item));
	ck_assert_str_eq(pgn_xml_name(pgn_xml_first_child(q)), "item2");
	x = pgn_xml_first_child(q);
	pgn_xml_unlink(x);
	ck_assert_ptr_null(pgn_xml_first_child(q));
	pgn_xml_append(q, x);
	pgn_xml_append(q, item);
	s = pgn_xml_to_string(q, NULL);
	ck_assert_str_eq(s, "<query xmlns=\"jabber:iq:roster\"><item2/>"
			    "<item>hel<b/>lo</item></query>");
	free(s);
	/* Freeing a child takes it out of its parent first. */
	pgn_xml_free(x);
	s = pgn_xml_to_string(q, "jabber:iq:roster");
	ck_assert_str_eq(s, "<query><item>hel<b/>lo</item></query>");
	free(s);
	pgn_xml_free(iq);
	pgn_xml_free(NULL);
}
END_TEST

START_TEST(serialise_escaping_and_namespaces)
{
	struct pgn_xml *m, *b, *x;
	struct evbuffer *out;
	char *s;

	m = pgn_xml_new(NS_CLIENT, "message");
	ck_assert_int_eq(pgn_xml_set_attr(m, "to", "a&b<c>\"d'e"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(m, "xml:lang", "en"), 0);
	b = pgn_xml_add_child(m, NULL, "body");
	ck_assert_int_eq(pgn_xml_add_text(b, "1 < 2 & \"3\" > 'x'", 17), 0);
	x = pgn_xml_add_child(m, "urn:x", "x");
	ck_assert_ptr_nonnull(pgn_xml_add_child(x, NULL, "y"));
	ck_assert_ptr_nonnull(pgn_xml_add_child(x, NS_CLIENT, "z"));
	ck_assert_ptr_nonnull(pgn_xml_add_child(m, NULL, "after"));
	ck_assert_int_eq(pgn_xml_set_attr(x, "urn:a foo", "1"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "urn:b bar", "2"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "urn:a baz", "3"), 0);

	s = pgn_xml_to_string(m, NS_CLIENT);
	ck_assert_str_eq(s,
		"<message to=\"a&amp;b&lt;c&gt;&quot;d&apos;e\" xml:lang=\"en\">"
		"<body>1 &lt; 2 &amp; \"3\" &gt; 'x'</body>"
		"<x xmlns=\"urn:x\" xmlns:ns0=\"urn:a\" ns0:foo=\"1\" "
		"xmlns:ns1=\"urn:b\" ns1:bar=\"2\" ns0:baz=\"3\">"
		"<y/><z xmlns=\"jabber:client\"/></x><after/></message>");
	free(s);
	s = pgn_xml_to_string(m, NULL);
	ck_assert_ptr_nonnull(strstr(s, "<message xmlns=\"jabber:client\" "));
	free(s);

	out = evbuffer_new();
	ck_assert_int_eq(pgn_xml_escape(out, "<&>\"'\x01", 6), 0);
	ck_assert_int_eq(evbuffer_get_length(out), 25);
	ck_assert_int_eq(memcmp(evbuffer_pullup(out, -1),
				"&lt;&amp;&gt;&quot;&apos;", 25), 0);
	evbuffer_free(out);
	pgn_xml_free(m);
}
END_TEST

/* Serialise, parse the result back inside a stream, serialise again. */
START_TEST(round_trip)
{
	struct pgn_xml *m, *c;
	struct rec *r = rec_new(NULL);
	char *s1, *s2, *doc;
	size_t len;

	m = pgn_xml_new(NS_CLIENT, "message");
	ck_assert_int_eq(pgn_xml_set_attr(m, "to", "x\ty\nz\r&<>\"'"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(m, "xml:lang", "fr"), 0);
	ck_assert_int_eq(pgn_xml_add_text(m, "a\r\nb]]>&<", 9), 0);
	c = pgn_xml_add_child(m, "urn:x", "x");
	ck_assert_int_eq(pgn_xml_set_attr(c, "urn:attr-ns n", "v\"'"), 0);
	ck_assert_int_eq(pgn_xml_add_text(c, "\xc3\xa9t\xc3\xa9", 6), 0);
	ck_assert_ptr_nonnull(pgn_xml_add_child(c, "", "nons"));
	ck_assert_int_eq(pgn_xml_add_text(m, "tail", 4), 0);

	s1 = pgn_xml_to_string(m, NS_CLIENT);
	ck_assert_ptr_nonnull(s1);
	len = strlen(HEADER) + strlen(s1) + 1;
	doc = malloc(len);
	snprintf(doc, len, "%s%s", HEADER, s1);
	ck_assert_int_eq(feed_str(r, doc), 0);
	ck_assert_int_eq(r->nstanzas, 1);
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[0], "to"), "x\ty\nz\r&<>\"'");
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[0], "xml:lang"), "fr");
	c = pgn_xml_child(r->stanzas[0], "urn:x", "x");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(pgn_xml_attr(c, "urn:attr-ns n"), "v\"'");
	ck_assert_str_eq(pgn_xml_ns(pgn_xml_first_child(c)), "");
	s2 = pgn_xml_to_string(r->stanzas[0], NS_CLIENT);
	ck_assert_str_eq(s1, s2);
	free(s2);
	s2 = pgn_xml_text(r->stanzas[0]);
	ck_assert_str_eq(s2, "a\r\nb]]>&<tail");
	free(s2);
	free(s1);
	free(doc);
	pgn_xml_free(m);
	rec_free(r);
}
END_TEST

/* ---- stream parser ---------------------------------------------------- */

static const char conversation[] =
	HEADER
	"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
	"<required/></starttls></stream:features>"
	" \n "
	"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
	"\n"
	"<message to='juliet@example.com' xml:lang='de'><body>Hi &amp; "
	"<![CDATA[<raw>]]>&#x263A;</body><x xmlns='urn:x'>t<y/>u</x></message>"
	"  "
	"<stream:error><not-well-formed "
	"xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
	"</stream:stream>";

static const char conversation_log[] =
	"open[jabber:client] to=example.com version=1.0 xml:lang=en;"
	"<features xmlns=\"" NS_STREAMS "\"><starttls xmlns=\"" NS_TLS
	"\"><required/></starttls></features>;"
	"<starttls xmlns=\"" NS_TLS "\"/>;"
	"<message xmlns=\"jabber:client\" to=\"juliet@example.com\" "
	"xml:lang=\"de\"><body>Hi &amp; &lt;raw&gt;\xe2\x98\xba</body>"
	"<x xmlns=\"urn:x\">t<y/>u</x></message>;"
	"<error xmlns=\"" NS_STREAMS "\"><not-well-formed "
	"xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></error>;"
	"close;";

START_TEST(stream_whole)
{
	struct rec *r = rec_new(NULL);

	ck_assert_int_eq(feed_str(r, conversation), 0);
	ck_assert_str_eq(r->log, conversation_log);
	ck_assert_int_eq(r->nstanzas, 4);
	ck_assert_str_eq(pgn_xml_ns(r->stanzas[0]), NS_STREAMS);
	ck_assert_str_eq(pgn_xml_name(r->stanzas[0]), "features");
	ck_assert_str_eq(pgn_xml_ns(r->stanzas[1]), NS_TLS);
	ck_assert_str_eq(pgn_xml_name(r->stanzas[1]), "starttls");
	ck_assert_str_eq(pgn_xml_ns(r->stanzas[2]), NS_CLIENT);
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[2], "xml:lang"), "de");
	ck_assert_str_eq(pgn_xml_ns(pgn_xml_child(r->stanzas[2], NULL, "body")),
			 NS_CLIENT);
	ck_assert_int_eq(r->opens, 1);
	ck_assert_int_eq(r->closes, 1);
	ck_assert_int_eq(r->errors, 0);
	rec_free(r);
}
END_TEST

START_TEST(stream_byte_at_a_time)
{
	struct rec *r = rec_new(NULL);
	size_t i;

	for (i = 0; conversation[i]; i++)
		ck_assert_int_eq(pgn_xml_parser_feed(r->p, conversation + i, 1),
				 0);
	ck_assert_str_eq(r->log, conversation_log);
	rec_free(r);
}
END_TEST

START_TEST(stream_large_buffer)
{
	struct pgn_xml_limits lim = { .max_stanza_bytes = 1 << 20 };
	struct rec *r = rec_new(&lim);
	size_t n = 200000, i;
	char *body = malloc(n + 64);
	char *txt;

	ck_assert_int_eq(feed_str(r, HEADER), 0);
	strcpy(body, "<message><body>");
	for (i = 0; i < n; i++)
		body[15 + i] = (char)('a' + i % 26);
	strcpy(body + 15 + n, "</body></message>");
	ck_assert_int_eq(feed_str(r, body), 0);
	ck_assert_int_eq(r->nstanzas, 1);
	txt = pgn_xml_child_text(r->stanzas[0], NS_CLIENT, "body");
	ck_assert_uint_eq(strlen(txt), n);
	ck_assert_int_eq(memcmp(txt, body + 15, n), 0);
	ck_assert_uint_eq(pgn_xml_parser_pending(r->p), 0);
	free(txt);
	free(body);
	rec_free(r);
}
END_TEST

/* A stanza must be delivered as soon as its last byte arrives, even when
 * it is one huge token (expat's reparse deferral would sit on it). */
START_TEST(stream_big_token_no_deferral)
{
	struct rec *r = rec_new(NULL);
	size_t n = 100000, i;
	char *tag = malloc(n + 32);
	const char *v;

	ck_assert_int_eq(feed_str(r, HEADER), 0);
	strcpy(tag, "<message to='");
	memset(tag + 13, 'v', n);
	strcpy(tag + 13 + n, "'/>");
	for (i = 0; i + 1000 < strlen(tag); i += 1000) {
		ck_assert_int_eq(pgn_xml_parser_feed(r->p, tag + i, 1000), 0);
		ck_assert_int_eq(r->nstanzas, 0);
	}
	ck_assert_int_eq(feed_str(r, tag + i), 0);
	ck_assert_int_eq(r->nstanzas, 1);
	v = pgn_xml_attr(r->stanzas[0], "to");
	ck_assert_uint_eq(strlen(v), n);
	/* And in one go. */
	ck_assert_int_eq(feed_str(r, tag), 0);
	ck_assert_int_eq(r->nstanzas, 2);
	free(tag);
	rec_free(r);
}
END_TEST

START_TEST(stream_open_attrs)
{
	struct rec *r = rec_new(NULL);

	ck_assert_int_eq(feed_str(r,
		"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
		"xmlns='jabber:component:accept' from='a.example' id='x&amp;1'"
		" xml:lang='de'>"), 0);
	ck_assert_str_eq(r->log, "open[jabber:component:accept] from=a.example "
				 "id=x&1 xml:lang=de;");
	rec_free(r);

	/* No default namespace declared. */
	r = rec_new(NULL);
	ck_assert_int_eq(feed_str(r,
		"<s:stream xmlns:s='http://etherx.jabber.org/streams' "
		"version='1.0'><s:features/>"), 0);
	ck_assert_str_eq(r->log, "open[(null)] version=1.0;"
				 "<features xmlns=\"" NS_STREAMS "\"/>;");
	rec_free(r);
}
END_TEST

START_TEST(stream_keepalive_and_close)
{
	struct rec *r = rec_new(NULL);

	ck_assert_int_eq(feed_str(r, HEADER " \n\t\r "), 0);
	ck_assert_uint_eq(pgn_xml_parser_pending(r->p), 0);
	ck_assert_int_eq(feed_str(r, "<presence/>"), 0);
	ck_assert_int_eq(feed_str(r, " "), 0);
	ck_assert_int_eq(feed_str(r, "\n"), 0);
	ck_assert_int_eq(feed_str(r, "<presence"), 0);
	ck_assert_uint_eq(pgn_xml_parser_pending(r->p), 9);
	ck_assert_int_eq(feed_str(r, "/> </stream:stream>"), 0);
	ck_assert_int_eq(r->nstanzas, 2);
	ck_assert_int_eq(r->closes, 1);
	ck_assert_int_eq(r->errors, 0);
	rec_free(r);
}
END_TEST

START_TEST(restricted_xml)
{
	static const char *const bad[] = {
		"<?xml version='1.0'?><!DOCTYPE stream>" HEADER,
		"<!DOCTYPE foo [<!ENTITY a 'b'>]><stream/>",
		"<!DOCTYPE lol [<!ENTITY lol 'lol'><!ENTITY lol2 "
		"'&lol;&lol;&lol;&lol;'>]><lol>&lol2;</lol>",
		"<!-- hi -->" HEADER,
		HEADER "<!-- hi -->",
		HEADER "<message><!-- hi --></message>",
		"<?php echo 1 ?>" HEADER,
		HEADER "<message><?pi x?></message>",
		HEADER "<message>&foo;</message>",
		HEADER "<message to='&foo;'/>",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum pgn_xml_error e = parse_error_of(bad[i], NULL);

		ck_assert_msg(e == PGN_XML_ERR_RESTRICTED, "case %zu: got %d",
			      i, (int)e);
	}
	/* Predefined and character references are fine. */
	ck_assert_int_eq(parse_error_of(HEADER "<m a='&lt;&#65;'>&amp;&gt;"
					"&quot;&apos;&#x41;</m>", NULL),
			 PGN_XML_ERR_NONE);
}
END_TEST

START_TEST(xml_declaration_allowed)
{
	struct rec *r = rec_new(NULL);

	ck_assert_int_eq(feed_str(r, "<?xml version='1.0' encoding='UTF-8'?>\n"
				     "<stream:stream xmlns='jabber:client' "
				     "xmlns:stream='" NS_STREAMS "'>"), 0);
	ck_assert_int_eq(r->opens, 1);
	ck_assert_int_eq(r->errors, 0);
	rec_free(r);
	/* ...but only at the very start. */
	ck_assert_int_eq(parse_error_of(HEADER "<?xml version='1.0'?>", NULL),
			 PGN_XML_ERR_NOT_WELL_FORMED);
}
END_TEST

START_TEST(not_well_formed)
{
	struct rec *r = rec_new(NULL);

	ck_assert_int_eq(feed_str(r, HEADER "<message><body></message>"), -1);
	ck_assert_int_eq(r->errors, 1);
	ck_assert_int_eq(r->err, PGN_XML_ERR_NOT_WELL_FORMED);
	ck_assert_ptr_nonnull(strstr(r->detail, "mismatched tag"));
	/* Dead until reset: input ignored, no second error callback. */
	ck_assert_int_eq(feed_str(r, "<presence/>"), -1);
	ck_assert_int_eq(r->errors, 1);
	ck_assert_int_eq(r->nstanzas, 0);
	/* A reset outside callbacks revives it for a new stream. */
	pgn_xml_parser_reset(r->p);
	ck_assert_int_eq(feed_str(r, HEADER "<presence/>"), 0);
	ck_assert_int_eq(r->opens, 2);
	ck_assert_int_eq(r->nstanzas, 1);
	rec_free(r);

	ck_assert_int_eq(parse_error_of(HEADER "<a b='1' b='2'/>", NULL),
			 PGN_XML_ERR_NOT_WELL_FORMED);
	ck_assert_int_eq(parse_error_of(HEADER "<x:a/>", NULL),
			 PGN_XML_ERR_NOT_WELL_FORMED);
	ck_assert_int_eq(parse_error_of(HEADER "<a>\xff\xfe</a>", NULL),
			 PGN_XML_ERR_NOT_WELL_FORMED);
	ck_assert_int_eq(parse_error_of(HEADER "<a>&#0;</a>", NULL),
			 PGN_XML_ERR_NOT_WELL_FORMED);
}
END_TEST

START_TEST(stream_level_text)
{
	ck_assert_int_eq(parse_error_of(HEADER "<presence/>hello", NULL),
			 PGN_XML_ERR_BAD_FORMAT);
	ck_assert_int_eq(parse_error_of(HEADER " &amp; ", NULL),
			 PGN_XML_ERR_BAD_FORMAT);
}
END_TEST

START_TEST(wrong_root)
{
	ck_assert_int_eq(parse_error_of("<stream:stream xmlns:stream='urn:bad' "
					"xmlns='jabber:client'>", NULL),
			 PGN_XML_ERR_BAD_NAMESPACE);
	ck_assert_int_eq(parse_error_of("<stream xmlns='jabber:client'>", NULL),
			 PGN_XML_ERR_BAD_NAMESPACE);
	ck_assert_int_eq(parse_error_of("<s:flux xmlns:s='" NS_STREAMS "'>",
					NULL),
			 PGN_XML_ERR_BAD_NAMESPACE);
}
END_TEST

START_TEST(limit_stanza_bytes)
{
	struct pgn_xml_limits lim = { .max_stanza_bytes = 100 };
	char big[400];
	struct rec *r;
	int i;

	/* Exactly at the limit passes; one byte more does not. */
	memset(big, 0, sizeof(big));
	strcpy(big, "<message><body>");
	memset(big + 15, 'a', 100 - 15 - 17);
	strcat(big, "</body></message>");
	ck_assert_uint_eq(strlen(big), 100);
	r = rec_new(&lim);
	ck_assert_int_eq(feed_str(r, HEADER), 0);
	ck_assert_int_eq(feed_str(r, big), 0);
	ck_assert_int_eq(r->nstanzas, 1);
	rec_free(r);

	strcpy(big, "<message><body>");
	memset(big + 15, 'a', 100 - 15 - 17 + 1);
	big[15 + 100 - 15 - 17 + 1] = '\0';
	strcat(big, "</body></message>");
	r = rec_new(&lim);
	ck_assert_int_eq(feed_str(r, HEADER), 0);
	ck_assert_int_eq(feed_str(r, big), -1);
	ck_assert_int_eq(r->err, PGN_XML_ERR_TOO_BIG);
	ck_assert_int_eq(r->nstanzas, 0);
	rec_free(r);

	/* One giant attribute value arriving in chunks is refused once the
	 * limit is crossed, long before the tag completes. */
	r = rec_new(&lim);
	ck_assert_int_eq(feed_str(r, HEADER "<message to='"), 0);
	memset(big, 'x', 40);
	big[40] = '\0';
	for (i = 0; i < 1000 && r->errors == 0; i++)
		feed_str(r, big);
	ck_assert_int_eq(r->err, PGN_XML_ERR_TOO_BIG);
	ck_assert_int_le(i, 3);
	ck_assert_int_eq(feed_str(r, big), -1);
	rec_free(r);

	/* The same byte at a time. */
	r = rec_new(&lim);
	ck_assert_int_eq(feed_str(r, HEADER "<message>"), 0);
	for (i = 0; i < 100000 && r->errors == 0; i++)
		pgn_xml_parser_feed(r->p, "y", 1);
	ck_assert_int_eq(r->err, PGN_XML_ERR_TOO_BIG);
	ck_assert_int_le(i, 100);
	rec_free(r);

	/* A huge stream header is bounded too. */
	r = rec_new(&lim);
	ck_assert_int_eq(feed_str(r, "<stream:stream to='"), 0);
	for (i = 0; i < 1000 && r->errors == 0; i++)
		feed_str(r, big);
	ck_assert_int_eq(r->err, PGN_XML_ERR_TOO_BIG);
	rec_free(r);

	/* Many small stanzas are fine: the limit is per stanza. */
	r = rec_new(&lim);
	ck_assert_int_eq(feed_str(r, HEADER), 0);
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(feed_str(r, "<presence/>  "), 0);
	ck_assert_int_eq(r->errors, 0);
	ck_assert_int_eq(r->nstanzas, 100);
	rec_free(r);
}
END_TEST

START_TEST(limit_depth_attrs_children)
{
	struct pgn_xml_limits lim = { .max_depth = 3, .max_attrs = 4,
				      .max_children = 2 };

	ck_assert_int_eq(parse_error_of(HEADER "<a><b><c/></b></a>", &lim),
			 PGN_XML_ERR_NONE);
	ck_assert_int_eq(parse_error_of(HEADER "<a><b><c><d/></c></b></a>",
					&lim),
			 PGN_XML_ERR_TOO_BIG);
	ck_assert_int_eq(parse_error_of(HEADER "<a w='0' x='1' y='2' z='3'/>",
					&lim),
			 PGN_XML_ERR_NONE);
	ck_assert_int_eq(parse_error_of(HEADER "<a v='' w='0' x='1' y='2' "
					"z='3'/>", &lim),
			 PGN_XML_ERR_TOO_BIG);
	ck_assert_int_eq(parse_error_of(HEADER "<a><b v='' w='0' x='1' y='2' "
					"z='3'/></a>", &lim),
			 PGN_XML_ERR_TOO_BIG);
	/* The stream header counts too (namespace declarations do not). */
	lim.max_attrs = 2;
	ck_assert_int_eq(parse_error_of(HEADER, &lim), PGN_XML_ERR_TOO_BIG);
	lim.max_attrs = 0;
	ck_assert_int_eq(parse_error_of(HEADER "<a><b/>t<c/></a>", &lim),
			 PGN_XML_ERR_NONE);
	ck_assert_int_eq(parse_error_of(HEADER "<a><b/><c/><d/></a>", &lim),
			 PGN_XML_ERR_TOO_BIG);
}
END_TEST

START_TEST(limit_zero_means_none)
{
	struct pgn_xml_limits lim = { 0 };
	struct rec *r = rec_new(&lim);
	struct pgn_xml *el;
	int i;

	ck_assert_int_eq(feed_str(r, HEADER "<a>"), 0);
	for (i = 0; i < 10000; i++)
		ck_assert_int_eq(feed_str(r, "<b x='1' y='2' z='3'>"), 0);
	for (i = 0; i < 10000; i++)
		ck_assert_int_eq(feed_str(r, "</b>"), 0);
	ck_assert_int_eq(feed_str(r, "</a>"), 0);
	ck_assert_int_eq(r->nstanzas, 1);
	for (i = 0, el = r->stanzas[0]; el; el = pgn_xml_first_child(el))
		i++;
	ck_assert_int_eq(i, 10001);
	el = pgn_xml_copy(r->stanzas[0]);
	pgn_xml_free(el);
	rec_free(r);
}
END_TEST

START_TEST(reset_inside_callback)
{
	struct rec *r = rec_new(NULL);

	r->reset_name = "proceed";
	/* What follows <proceed/> in the same buffer is discarded. */
	ck_assert_int_eq(feed_str(r, HEADER "<presence/><proceed xmlns='"
				  NS_TLS "'/><message>lost</message>garbage<<"),
			 0);
	ck_assert_int_eq(r->nstanzas, 2);
	ck_assert_int_eq(r->errors, 0);
	ck_assert_uint_eq(pgn_xml_parser_pending(r->p), 0);
	/* The next feed starts a new stream, header and XML declaration
	 * included. */
	ck_assert_int_eq(feed_str(r, "<?xml version='1.0'?>"
				  "<stream:stream xmlns='jabber:server' "
				  "xmlns:stream='" NS_STREAMS "' from='b'>"
				  "<message/>"), 0);
	ck_assert_int_eq(r->opens, 2);
	ck_assert_int_eq(r->nstanzas, 3);
	ck_assert_str_eq(pgn_xml_ns(r->stanzas[2]), "jabber:server");
	ck_assert_ptr_nonnull(strstr(r->log, "open[jabber:server] from=b;"));
	rec_free(r);

	/* Same, byte at a time. */
	{
		static const char in[] = HEADER "<proceed/><<";
		size_t i;

		r = rec_new(NULL);
		r->reset_name = "proceed";
		for (i = 0; in[i]; i++)
			ck_assert_int_eq(pgn_xml_parser_feed(r->p, in + i, 1),
					 (in[i + 1] ? 0 : -1));
		/* "<<" was fed after the reset: it is a new, bad stream. */
		ck_assert_int_eq(r->errors, 1);
		ck_assert_int_eq(r->err, PGN_XML_ERR_NOT_WELL_FORMED);
		rec_free(r);
	}

	/* Reset from the error callback. */
	r = rec_new(NULL);
	r->reset_on_error = 1;
	ck_assert_int_eq(feed_str(r, HEADER "text"), -1);
	ck_assert_int_eq(r->err, PGN_XML_ERR_BAD_FORMAT);
	ck_assert_int_eq(feed_str(r, HEADER "<presence/>"), 0);
	ck_assert_int_eq(r->opens, 2);
	ck_assert_int_eq(r->nstanzas, 1);
	rec_free(r);
}
END_TEST

static void
cb_open_reset(void *ud, const char **attrs, const char *default_ns)
{
	struct rec *r = ud;

	r->opens++;
	pgn_xml_parser_reset(r->p);
}

START_TEST(reset_from_stream_open)
{
	struct pgn_xml_parser_cbs cbs = rec_cbs;
	struct rec *r = calloc(1, sizeof(*r));

	cbs.stream_open = cb_open_reset;
	r->p = pgn_xml_parser_new(NULL, &cbs, r);
	ck_assert_int_eq(feed_str(r, HEADER "<a/>"), 0);
	ck_assert_int_eq(feed_str(r, HEADER "<a/>"), 0);
	ck_assert_int_eq(r->opens, 2);
	ck_assert_int_eq(r->nstanzas, 0);
	/* Freeing with a half-built stanza inside must not leak. */
	pgn_xml_parser_reset(r->p);
	rec_free(r);

	r = rec_new(NULL);
	ck_assert_int_eq(feed_str(r, HEADER "<a><b>half"), 0);
	ck_assert_uint_gt(pgn_xml_parser_pending(r->p), 0);
	rec_free(r);
}
END_TEST

/* What a module stored (serialised with jabber:client in scope) parses
 * back into the same elements; broken data is refused. */
START_TEST(parse_into_round_trip)
{
	struct pgn_xml *a = pgn_xml_new("jabber:client", "message");
	struct pgn_xml *parent = pgn_xml_new("jabber:client", "wrap");
	struct pgn_xml *bad = pgn_xml_new("jabber:client", "wrap");
	char *one, *two, *both;

	pgn_xml_set_attr(a, "to", "b@example.com");
	pgn_xml_add_text(pgn_xml_add_child(a, NULL, "body"), "x < y & z", 9);
	pgn_xml_add_child(a, "urn:xmpp:delay", "delay");
	one = pgn_xml_to_string(a, "jabber:client");
	ck_assert_ptr_nonnull(one);
	both = malloc(2 * strlen(one) + 1);
	strcpy(both, one);
	strcat(both, one);
	ck_assert_int_eq(pgn_xml_parse_into(parent, both, strlen(both)), 0);
	ck_assert_ptr_nonnull(pgn_xml_first_child(parent));
	ck_assert_ptr_nonnull(pgn_xml_next(pgn_xml_first_child(parent)));
	two = pgn_xml_to_string(pgn_xml_first_child(parent), "jabber:client");
	ck_assert_str_eq(one, two);
	ck_assert_int_eq(pgn_xml_parse_into(bad, "<a><b></a>", 10), -EINVAL);
	ck_assert_int_eq(pgn_xml_parse_into(bad, "<!DOCTYPE x><a/>", 16),
			 -EINVAL);
	free(one);
	free(two);
	free(both);
	pgn_xml_free(a);
	pgn_xml_free(parent);
	pgn_xml_free(bad);
}
END_TEST

/* ---- parking ------------------------------------------------------------ */

/* What a parser made of input: the callback log and the error detail. */
struct outcome {
	char log[8192];
	char detail[256];
	int errors;
	int parks;
};

/* Feeds doc in pieces: first the bytes before cut (if any), then the
 * rest step bytes at a time (at once when step is 0); with park set,
 * tries pgn_xml_parser_park() after every piece. */
static void
run_doc(const char *doc, const struct pgn_xml_limits *lim, size_t cut,
	size_t step, int park, struct outcome *out)
{
	struct rec *r = rec_new(lim);
	size_t len = strlen(doc), off = 0;

	r->reset_name = "proceed";
	memset(out, 0, sizeof(*out));
	if (cut > len)
		cut = len;
	while (off < len) {
		size_t n = off < cut ? cut - off : (step ? step : len - off);

		if (n > len - off)
			n = len - off;
		pgn_xml_parser_feed(r->p, doc + off, n);
		off += n;
		if (park && pgn_xml_parser_park(r->p) == 1) {
			out->parks++;
			ck_assert_uint_eq(pgn_xml_parser_pending(r->p), 0);
		}
	}
	snprintf(out->log, sizeof(out->log), "%s", r->log);
	snprintf(out->detail, sizeof(out->detail), "%s", r->detail);
	out->errors = r->errors;
	rec_free(r);
}

/* Parsing with parks in between gives exactly what parsing the same
 * pieces without parks gives (stanzas, namespaces, errors and their
 * positions): after every byte, and at every split of doc into two. */
static void
same_with_parks(const char *doc, const struct pgn_xml_limits *lim,
		size_t cut, size_t step, int *parks)
{
	struct outcome ref, o;

	run_doc(doc, lim, cut, step, 0, &ref);
	run_doc(doc, lim, cut, step, 1, &o);
	ck_assert_msg(strcmp(o.log, ref.log) == 0, "cut %zu step %zu: %s\n"
		      "want %s", cut, step, o.log, ref.log);
	ck_assert_msg(strcmp(o.detail, ref.detail) == 0,
		      "cut %zu step %zu: %s, want %s", cut, step, o.detail,
		      ref.detail);
	*parks += o.parks;
}

static void
check_parked_same(const char *doc, const struct pgn_xml_limits *lim,
		  int min_parks)
{
	size_t i, len = strlen(doc);
	int parks = 0;

	same_with_parks(doc, lim, 0, 1, &parks);
	ck_assert_msg(parks >= min_parks, "%d parks in %s", parks, doc);
	for (i = 1; i < len; i++) {
		same_with_parks(doc, lim, i, 0, &parks);
		same_with_parks(doc, lim, i, 1, &parks);
	}
}

#define S_NS "xmlns:s='" NS_STREAMS "'"
#define TEN "0123456789"

START_TEST(park_same_result)
{
	/* Stanza bytes: the stream roots below fit (they count while they
	 * arrive a byte at a time). */
	struct pgn_xml_limits lim = { .max_stanza_bytes = 256, .max_depth = 3,
				      .max_attrs = 3, .max_children = 2 };
	static const char *const ok_docs[] = {
		conversation,
		/* Another prefix for the stream, another prefix on the root
		 * (with characters the replay must escape), used by stanzas
		 * after a park. */
		"<s:stream " S_NS " xmlns='jabber:client' "
		"xmlns:q='urn:q&amp;&apos;&lt;\"&#10;&#9;&#13;x' version='1.0'>"
		"\n<q:x q:a='1'><y/></q:x>\n  <message><q:z/>t</message>"
		"<s:features/></s:stream>",
		/* The stream namespace as the default one. */
		"<stream xmlns='" NS_STREAMS "'><features/> <a xmlns=''/>"
		"</stream>",
		/* No default namespace at all. */
		"<stream:stream xmlns:stream='" NS_STREAMS "'><a/><b>x</b>"
		"</stream:stream>",
		/* Two prefixes for the stream namespace: closed with the one
		 * the root used. */
		"<b:stream xmlns:a='" NS_STREAMS "' xmlns:b='" NS_STREAMS
		"' xmlns='jabber:server'><a:features/><x/></b:stream>",
		/* The usual root, declarations in the other order, then a
		 * stream restart (reset from the callback). */
		"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		"xmlns:stream='" NS_STREAMS "'><presence/><proceed/>",
	};
	static const char *const bad_docs[] = {
		/* Closed with another prefix than the root's. */
		"<b:stream xmlns:a='" NS_STREAMS "' xmlns:b='" NS_STREAMS
		"'><x/>\n</a:stream>",
		HEADER "<a/>\n<message><body></message>",
		HEADER "<a/>\n\n  <z:a/>",
		HEADER "<a/><!-- c -->",
		HEADER "<a/><?pi x?>",
		HEADER "<a/><!DOCTYPE x>",
		HEADER "<a/>text",
		HEADER "<a/>\n<a>&foo;</a>",
		HEADER "<a/><message><body>" TEN TEN TEN TEN TEN TEN TEN TEN
		TEN TEN TEN TEN TEN TEN TEN TEN TEN TEN TEN TEN TEN TEN TEN TEN
		"</body></message>",
		HEADER "<a/><a><b><c><d/></c></b></a>",
		HEADER "<a/><a w='' x='' y='' z=''/>",
		HEADER "<a/><a><b/><c/><d/></a>",
		HEADER "<a/></stream:stream><a/>",
	};
	size_t i;

	for (i = 0; i < sizeof(ok_docs) / sizeof(ok_docs[0]); i++) {
		struct outcome o;

		check_parked_same(ok_docs[i], &lim, 2);
		run_doc(ok_docs[i], &lim, strlen(ok_docs[i]), 0, 0, &o);
		ck_assert_msg(o.errors == 0, "doc %zu: %s", i, o.log);
	}
	for (i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
		struct outcome o;

		check_parked_same(bad_docs[i], &lim, 1);
		run_doc(bad_docs[i], &lim, strlen(bad_docs[i]), 0, 0, &o);
		ck_assert_msg(o.errors == 1, "doc %zu: %s", i, o.log);
	}
}
END_TEST

START_TEST(park_when_possible)
{
	struct rec *r = rec_new(NULL);

	/* Not before the stream root, nor in its middle. */
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 0);
	ck_assert_int_eq(feed_str(r, "<stream:stream xmlns:stream='"), 0);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 0);
	ck_assert_int_eq(feed_str(r, NS_STREAMS "' xmlns='jabber:client'>"),
			 0);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 1);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 1);
	/* Not inside a stanza or a token. */
	ck_assert_int_eq(feed_str(r, "<message><body>hi</body>"), 0);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 0);
	ck_assert_int_eq(feed_str(r, "</message><pres"), 0);
	ck_assert_int_eq(r->nstanzas, 1);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 0);
	ck_assert_int_eq(feed_str(r, "ence/>\r"), 0);
	ck_assert_int_eq(r->nstanzas, 2);
	/* expat keeps a trailing CR until it sees what follows. */
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 0);
	ck_assert_int_eq(feed_str(r, "\n "), 0);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 1);
	/* The resumed stream is the same stream: its namespace and its
	 * close. */
	ck_assert_int_eq(feed_str(r, "<iq/></stream:stream>"), 0);
	ck_assert_int_eq(r->nstanzas, 3);
	ck_assert_str_eq(pgn_xml_ns(r->stanzas[2]), NS_CLIENT);
	ck_assert_int_eq(r->opens, 1);
	ck_assert_int_eq(r->closes, 1);
	/* Not after the stream ended or failed. */
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 0);
	rec_free(r);

	r = rec_new(NULL);
	ck_assert_int_eq(feed_str(r, HEADER "<a/>"), 0);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 1);
	/* A reset of a parked parser starts a new stream. */
	pgn_xml_parser_reset(r->p);
	ck_assert_int_eq(feed_str(r, "<stream:stream xmlns='jabber:server' "
				     "xmlns:stream='" NS_STREAMS "'><a/>"), 0);
	ck_assert_int_eq(r->opens, 2);
	ck_assert_str_eq(pgn_xml_ns(r->stanzas[1]), "jabber:server");
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 1);
	/* Freeing a parked parser frees everything. */
	rec_free(r);

	r = rec_new(NULL);
	ck_assert_int_eq(feed_str(r, HEADER "<a>"), 0);
	ck_assert_int_eq(feed_str(r, "</b>"), -1);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 0);
	rec_free(r);
}
END_TEST

/* The point of parking: an idle stream holds (almost) no parser memory. */
START_TEST(park_frees_memory)
{
#ifdef HAVE_MALLINFO2
	enum { N = 64 };
	struct rec *r[N];
	size_t before, after;
	int i;

	for (i = 0; i < N; i++) {
		r[i] = rec_new(NULL);
		ck_assert_int_eq(feed_str(r[i], HEADER "<presence/>"), 0);
	}
	before = mallinfo2().uordblks;
	for (i = 0; i < N; i++)
		ck_assert_int_eq(pgn_xml_parser_park(r[i]->p), 1);
	after = mallinfo2().uordblks;
	/* Sanitizer runtimes do not report through mallinfo2. */
	if (before > 0)
		ck_assert_msg(before - after > (size_t)N * 4096,
			      "parking %d parsers freed %zu bytes", N,
			      before - after);
	for (i = 0; i < N; i++) {
		ck_assert_int_eq(feed_str(r[i], "<presence/>"), 0);
		ck_assert_int_eq(r[i]->nstanzas, 2);
		rec_free(r[i]);
	}
#endif
}
END_TEST

/* ---- stream header bounds, resume cost, xml:lang, encoding --------------- */

#define ROOT_OPEN                                                            \
	"<stream:stream xmlns='jabber:client' xmlns:stream='" NS_STREAMS   \
	"' to='example.com' version='1.0'"

/* A stream header with n extra prefixed declarations whose URIs are padded
 * so that the header is about total bytes long (0: unpadded); malloc'd. */
static char *
big_header(int n, size_t total)
{
	size_t base = strlen(ROOT_OPEN) + 1, pad = 0, len;
	char *h, *o;
	int i;

	for (i = 0; i < n; i++)
		base += (size_t)snprintf(NULL, 0, " xmlns:p%d='urn:x:%d'", i, i);
	if (n > 0 && total > base)
		pad = (total - base) / (size_t)n;
	len = base + (size_t)n * pad + 1;
	h = malloc(len);
	ck_assert_ptr_nonnull(h);
	o = h + sprintf(h, "%s", ROOT_OPEN);
	for (i = 0; i < n; i++) {
		o += sprintf(o, " xmlns:p%d='urn:x:%d", i, i);
		memset(o, 'x', pad);
		o += pad;
		o += sprintf(o, "'");
	}
	strcpy(o, ">");
	return h;
}

START_TEST(header_bounds)
{
	struct rec *r;
	char *h, chunk[101];
	int i;

	/* The attack of issue 19: thousands of declarations on the root. */
	h = big_header(9000, 0);
	ck_assert_int_eq(parse_error_of(h, NULL), PGN_XML_ERR_TOO_BIG);
	free(h);
	/* As many declarations as allowed (xmlns, xmlns:stream and 14
	 * more), in as many bytes as allowed, is a header. */
	h = big_header(PGN_XML_MAX_HEADER_NS - 2, PGN_XML_MAX_HEADER_BYTES);
	ck_assert_uint_le(strlen(h), PGN_XML_MAX_HEADER_BYTES);
	ck_assert_uint_gt(strlen(h), PGN_XML_MAX_HEADER_BYTES - 16);
	ck_assert_int_eq(parse_error_of(h, NULL), PGN_XML_ERR_NONE);
	free(h);
	h = big_header(PGN_XML_MAX_HEADER_NS - 1, 0);
	ck_assert_int_eq(parse_error_of(h, NULL), PGN_XML_ERR_TOO_BIG);
	free(h);
	/* One byte too many, a byte at a time or at once. */
	h = malloc(PGN_XML_MAX_HEADER_BYTES + 64);
	ck_assert_ptr_nonnull(h);
	i = sprintf(h, "%s id='", ROOT_OPEN);
	memset(h + i, 'i', PGN_XML_MAX_HEADER_BYTES - (size_t)i - 2);
	strcpy(h + PGN_XML_MAX_HEADER_BYTES - 2, "'>");
	ck_assert_uint_eq(strlen(h), PGN_XML_MAX_HEADER_BYTES);
	ck_assert_int_eq(parse_error_of(h, NULL), PGN_XML_ERR_NONE);
	strcpy(h + PGN_XML_MAX_HEADER_BYTES - 2, "i'>");
	ck_assert_int_eq(parse_error_of(h, NULL), PGN_XML_ERR_TOO_BIG);
	free(h);
	/* A header that never ends is cut off once past the bound (the
	 * stanza size limit, 0 here, would not stop it). */
	r = rec_new(NULL);
	ck_assert_int_eq(feed_str(r, ROOT_OPEN " id='"), 0);
	memset(chunk, 'z', 100);
	chunk[100] = '\0';
	for (i = 0; i < 10000 && r->errors == 0; i++)
		feed_str(r, chunk);
	ck_assert_int_eq(r->err, PGN_XML_ERR_TOO_BIG);
	ck_assert_int_le(i, PGN_XML_MAX_HEADER_BYTES / 100 + 1);
	rec_free(r);
	/* Whitespace before the root counts. */
	h = calloc(1, PGN_XML_MAX_HEADER_BYTES + 256);
	ck_assert_ptr_nonnull(h);
	memset(h, ' ', PGN_XML_MAX_HEADER_BYTES);
	strcat(h, ROOT_OPEN ">");
	ck_assert_int_eq(parse_error_of(h, NULL), PGN_XML_ERR_TOO_BIG);
	free(h);
	/* Attributes: to, from, version, xml:lang, id and then some. */
	h = calloc(1, 1024);
	ck_assert_ptr_nonnull(h);
	strcpy(h, ROOT_OPEN);
	for (i = 2; i < PGN_XML_MAX_HEADER_ATTRS; i++)
		sprintf(h + strlen(h), " a%d='%d'", i, i);
	ck_assert_int_eq(parse_error_of(strcat(h, ">"), NULL),
			 PGN_XML_ERR_NONE);
	strcpy(h + strlen(h) - 1, " z='z'>");
	ck_assert_int_eq(parse_error_of(h, NULL), PGN_XML_ERR_TOO_BIG);
	free(h);
}
END_TEST

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds for n keepalives to a stream opened with hdr, each fed on
 * its own and followed by a park (what a read does in stream.c). */
static double
keepalive_cost(const char *hdr, int n, int *parks)
{
	struct rec *r = rec_new(NULL);
	double t0;
	int i;

	ck_assert_int_eq(feed_str(r, hdr), 0);
	ck_assert_int_eq(r->opens, 1);
	pgn_xml_parser_park(r->p);
	*parks = 0;
	t0 = cpu_now();
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(pgn_xml_parser_feed(r->p, " ", 1), 0);
		*parks += pgn_xml_parser_park(r->p);
	}
	t0 = cpu_now() - t0;
	ck_assert_int_eq(feed_str(r, "<presence/>"), 0);
	ck_assert_int_eq(r->nstanzas, 1);
	rec_free(r);
	return t0;
}

/* Resuming a parked stream must not cost more with the largest header
 * the bounds allow than with an ordinary one: a peer that sends a byte
 * at a time would otherwise buy a replay of its header with each byte.
 * CPU time of this thread, best of five, so that a loaded machine does
 * not decide (before the bounds, the largest header cost 8 to 10 times
 * the usual one; the longest replayed context costs about 1.1 times). */
START_TEST(resume_cost_bounded)
{
	/* The largest header, and the largest one whose stream is still
	 * parked (its namespace context replayed on each resume). */
	char *hostile[2] = { big_header(PGN_XML_MAX_HEADER_NS - 2,
					PGN_XML_MAX_HEADER_BYTES), NULL };
	double normal = 1e9, worst[2] = { 1e9, 1e9 };
	int i, j, parks;
	size_t len;

	for (len = strlen(ROOT_OPEN) + 20; len < PGN_XML_MAX_HEADER_BYTES;
	     len++) {
		char *h = big_header(1, len);

		keepalive_cost(h, 1, &parks);
		if (!parks) {
			free(h);
			break;
		}
		free(hostile[1]);
		hostile[1] = h;
	}
	ck_assert_ptr_nonnull(hostile[1]);

	for (i = 0; i < 5; i++) {
		double a = keepalive_cost(HEADER, 3000, &parks);

		ck_assert_int_eq(parks, 3000);
		normal = a < normal ? a : normal;
		for (j = 0; j < 2; j++) {
			double b = keepalive_cost(hostile[j], 3000, &parks);

			if (j == 1)
				ck_assert_int_eq(parks, 3000);
			worst[j] = b < worst[j] ? b : worst[j];
		}
	}
	for (j = 0; j < 2; j++) {
		ck_assert_msg(worst[j] <= 1.5 * normal + 0.001,
			      "3000 keepalives: %.4f s after a %zu-byte header, "
			      "%.4f s after the usual one", worst[j],
			      strlen(hostile[j]), normal);
		free(hostile[j]);
	}
}
END_TEST

START_TEST(xml_lang_stamped)
{
	struct rec *r = rec_new(NULL);

	/* RFC 6120 8.1.5: a stanza without xml:lang is in the stream's
	 * language; one with its own keeps it. */
	ck_assert_int_eq(feed_str(r, HEADER "<message to='a'/>"
				     "<presence xml:lang='de'/><iq/>"), 0);
	ck_assert_int_eq(pgn_xml_parser_park(r->p), 1);
	/* Also after a resume; other top-level elements, stanza names in
	 * other namespaces and children are left alone. */
	ck_assert_int_eq(feed_str(r, "<message/><starttls xmlns='" NS_TLS "'/>"
				     "<iq xmlns='urn:x'/>"
				     "<presence><show/></presence>"), 0);
	ck_assert_int_eq(r->nstanzas, 7);
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[0], "xml:lang"), "en");
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[0], "to"), "a");
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[1], "xml:lang"), "de");
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[2], "xml:lang"), "en");
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[3], "xml:lang"), "en");
	ck_assert_ptr_null(pgn_xml_attr(r->stanzas[4], "xml:lang"));
	ck_assert_ptr_null(pgn_xml_attr(r->stanzas[5], "xml:lang"));
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[6], "xml:lang"), "en");
	ck_assert_ptr_null(pgn_xml_attr(pgn_xml_first_child(r->stanzas[6]),
					"xml:lang"));
	ck_assert_uint_eq(pgn_xml_attr_count(r->stanzas[2]), 1);
	/* Serialised as the XML attribute. */
	ck_assert_ptr_nonnull(strstr(r->log, "<iq xmlns=\"jabber:client\" "
					     "xml:lang=\"en\"/>;"));
	/* A restart takes the new stream's language, or none. */
	pgn_xml_parser_reset(r->p);
	ck_assert_int_eq(feed_str(r, ROOT_OPEN " xml:lang='fr'><message/>"),
			 0);
	ck_assert_str_eq(pgn_xml_attr(r->stanzas[7], "xml:lang"), "fr");
	pgn_xml_parser_reset(r->p);
	ck_assert_int_eq(feed_str(r, ROOT_OPEN "><message/>"), 0);
	ck_assert_ptr_null(pgn_xml_attr(r->stanzas[8], "xml:lang"));
	pgn_xml_parser_reset(r->p);
	ck_assert_int_eq(feed_str(r, ROOT_OPEN " xml:lang=''><message/>"), 0);
	ck_assert_ptr_null(pgn_xml_attr(r->stanzas[9], "xml:lang"));
	rec_free(r);
}
END_TEST

START_TEST(xml_lang_bounded)
{
	char lang[PGN_XML_MAX_LANG + 2], doc[512];

	memset(lang, 'a', sizeof(lang) - 1);
	lang[sizeof(lang) - 1] = '\0';
	/* One byte over, on the root or on any element of a stanza. */
	snprintf(doc, sizeof(doc), ROOT_OPEN " xml:lang='%s'>", lang);
	ck_assert_int_eq(parse_error_of(doc, NULL), PGN_XML_ERR_TOO_BIG);
	snprintf(doc, sizeof(doc), HEADER "<message><body xml:lang='%s'/>"
		 "</message>", lang);
	ck_assert_int_eq(parse_error_of(doc, NULL), PGN_XML_ERR_TOO_BIG);
	/* At the bound: fine. */
	lang[PGN_XML_MAX_LANG] = '\0';
	snprintf(doc, sizeof(doc), ROOT_OPEN " xml:lang='%s'><message/>",
		 lang);
	ck_assert_int_eq(parse_error_of(doc, NULL), PGN_XML_ERR_NONE);
	snprintf(doc, sizeof(doc), HEADER "<message xml:lang='%s'/>", lang);
	ck_assert_int_eq(parse_error_of(doc, NULL), PGN_XML_ERR_NONE);
}
END_TEST

/* s as UTF-16 (little or big endian, with or without a byte order mark)
 * into out; its length in bytes. */
static size_t
utf16(const char *s, int big, int bom, char *out)
{
	size_t n = 0;

	if (bom) {
		out[n++] = big ? '\xfe' : '\xff';
		out[n++] = big ? '\xff' : '\xfe';
	}
	for (; *s; s++) {
		out[n++] = big ? '\0' : *s;
		out[n++] = big ? *s : '\0';
	}
	return n;
}

START_TEST(encoding_utf8_only)
{
	static const char *const bad_decl[] = {
		"<?xml version='1.0' encoding='UTF-16'?>",
		"<?xml version='1.0' encoding='ISO-8859-1'?>",
		"<?xml version='1.0' encoding=\"US-ASCII\" ?>",
	};
	char buf[1024];
	size_t i, n;
	int big, bom;

	/* RFC 6120 11.6: UTF-8 only, whatever the declaration says... */
	for (i = 0; i < sizeof(bad_decl) / sizeof(bad_decl[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s>", bad_decl[i], ROOT_OPEN);
		ck_assert_msg(parse_error_of(buf, NULL) ==
			      PGN_XML_ERR_BAD_ENCODING, "%s", bad_decl[i]);
	}
	ck_assert_int_eq(parse_error_of("<?xml version='1.0' encoding='utf-8'?>"
					ROOT_OPEN ">", NULL),
			 PGN_XML_ERR_NONE);
	/* ...or what the bytes look like: expat would switch to UTF-16 on
	 * its own. */
	for (big = 0; big < 2; big++)
		for (bom = 0; bom < 2; bom++) {
			struct rec *r = rec_new(NULL);

			n = utf16(HEADER "<message/>", big, bom, buf);
			ck_assert_int_eq(pgn_xml_parser_feed(r->p, buf, n), -1);
			ck_assert_int_eq(r->err, PGN_XML_ERR_BAD_ENCODING);
			ck_assert_int_eq(r->opens, 0);
			rec_free(r);
			/* A byte at a time. */
			r = rec_new(NULL);
			for (i = 0; i < n && r->errors == 0; i++)
				pgn_xml_parser_feed(r->p, buf + i, 1);
			ck_assert_int_eq(r->err, PGN_XML_ERR_BAD_ENCODING);
			ck_assert_int_eq(r->opens, 0);
			rec_free(r);
		}
	/* The same again after a stream restart. */
	{
		struct rec *r = rec_new(NULL);

		ck_assert_int_eq(feed_str(r, HEADER), 0);
		pgn_xml_parser_reset(r->p);
		n = utf16(HEADER, 0, 0, buf);
		ck_assert_int_eq(pgn_xml_parser_feed(r->p, buf, n), -1);
		ck_assert_int_eq(r->err, PGN_XML_ERR_BAD_ENCODING);
		rec_free(r);
	}
}
END_TEST

static Suite *
xml_suite(void)
{
	Suite *s = suite_create("xml");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, tree_helpers);
	tcase_add_test(tc, serialise_escaping_and_namespaces);
	tcase_add_test(tc, round_trip);
	tcase_add_test(tc, stream_whole);
	tcase_add_test(tc, stream_byte_at_a_time);
	tcase_add_test(tc, stream_large_buffer);
	tcase_add_test(tc, stream_big_token_no_deferral);
	tcase_add_test(tc, stream_open_attrs);
	tcase_add_test(tc, stream_keepalive_and_close);
	tcase_add_test(tc, restricted_xml);
	tcase_add_test(tc, xml_declaration_allowed);
	tcase_add_test(tc, not_well_formed);
	tcase_add_test(tc, stream_level_text);
	tcase_add_test(tc, wrong_root);
	tcase_add_test(tc, limit_stanza_bytes);
	tcase_add_test(tc, limit_depth_attrs_children);
	tcase_add_test(tc, limit_zero_means_none);
	tcase_add_test(tc, reset_inside_callback);
	tcase_add_test(tc, reset_from_stream_open);
	tcase_add_test(tc, parse_into_round_trip);
	tcase_add_test(tc, park_same_result);
	tcase_add_test(tc, park_when_possible);
	tcase_add_test(tc, park_frees_memory);
	tcase_add_test(tc, header_bounds);
	tcase_add_test(tc, resume_cost_bounded);
	tcase_add_test(tc, xml_lang_stamped);
	tcase_add_test(tc, xml_lang_bounded);
	tcase_add_test(tc, encoding_utf8_only);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(xml_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
