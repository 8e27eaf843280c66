/* libFuzzer target for the incremental XMPP stream parser (src/lib/xml.c).
 *
 * Input: byte 0 picks where the rest is split into two feeds (so expat
 * and our offsets see a token cut at every possible place); the rest is
 * the stream as a peer would send it.  Every stanza delivered is
 * serialised, re-parsed inside a fresh stream header and must serialise
 * to the same bytes: a difference means the serialiser wrote something
 * the parser reads back differently (an escaping or namespace bug).  A
 * stanza named "reset" makes the callback reset the parser, as after
 * STARTTLS or SASL success, so the rest of that feed must be dropped
 * safely and the next feed start a new stream.  Between the two feeds the
 * parser is parked when it can be, as the stream layer does after each
 * read, so the second feed may run on a resumed parser. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/xml.h"

/* Realistic, but small enough that the fuzzer reaches them. */
static const struct pgn_xml_limits fuzz_limits = {
	.max_stanza_bytes = 8192,
	.max_depth = 16,
	.max_attrs = 16,
	.max_children = 64,
};

struct fuzz_ctx {
	struct pgn_xml_parser *p;
	int stream_open;
	int errors;
	const char *ns;        /* default namespace of the outer stream */
	char ns_buf[256];
};

/* ---- round-trip check -------------------------------------------------- */

struct rt_ctx {
	struct pgn_xml *got;
	int count;
	int error;
};

static void
rt_stanza(void *ud, struct pgn_xml *st)
{
	struct rt_ctx *c = ud;

	c->count++;
	if (c->got == NULL)
		c->got = st;
	else
		pgn_xml_free(st);
}

static void
rt_error(void *ud, enum pgn_xml_error err, const char *detail)
{
	struct rt_ctx *c = ud;

	(void)detail;
	c->error = (int)err ? (int)err : -1;
}

static void
roundtrip(const struct pgn_xml *st, const char *scope)
{
	static const struct pgn_xml_parser_cbs cbs = {
		.stanza = rt_stanza,
		.error = rt_error,
	};
	/* The copy must re-parse within the same limits, except size: an
	 * escaped serialisation can be longer than the input was. */
	struct pgn_xml_limits lim = fuzz_limits;
	struct rt_ctx c = { 0 };
	struct pgn_xml_parser *p;
	char *s1, *s2, *doc;
	size_t n;

	s1 = pgn_xml_to_string(st, scope);
	if (!s1)
		abort();
	lim.max_stanza_bytes = 0;
	p = pgn_xml_parser_new(&lim, &cbs, &c);
	if (!p)
		abort();
	n = strlen(s1) + strlen(scope) + 200;
	doc = malloc(n);
	if (!doc)
		abort();
	snprintf(doc, n,
		 "<stream:stream xmlns='%s' "
		 "xmlns:stream='http://etherx.jabber.org/streams' "
		 "to='example.com' version='1.0'>%s",
		 scope, s1);
	if (pgn_xml_parser_feed(p, doc, strlen(doc)) < 0 || c.error ||
	    c.count != 1 || !c.got) {
		fprintf(stderr,
			"round-trip: re-parse failed (err %d, %d stanzas)\n"
			"scope: %s\nserialised: %s\n",
			c.error, c.count, scope, s1);
		abort();
	}
	s2 = pgn_xml_to_string(c.got, scope);
	if (!s2)
		abort();
	if (strcmp(s1, s2) != 0) {
		fprintf(stderr,
			"round-trip mismatch\nscope: %s\nfirst:  %s\nsecond: %s\n",
			scope, s1, s2);
		abort();
	}
	/* A copy serialises like its original. */
	{
		struct pgn_xml *cp = pgn_xml_copy(c.got);
		char *s3;

		if (!cp)
			abort();
		s3 = pgn_xml_to_string(cp, scope);
		if (!s3 || strcmp(s1, s3) != 0) {
			fprintf(stderr, "copy mismatch\nfirst: %s\ncopy:  %s\n",
				s1, s3 ? s3 : "(null)");
			abort();
		}
		free(s3);
		pgn_xml_free(cp);
	}
	free(s2);
	free(doc);
	free(s1);
	pgn_xml_free(c.got);
	pgn_xml_parser_free(p);
}

/* ---- the stream under test --------------------------------------------- */

static void
on_open(void *ud, const char **attrs, const char *default_ns)
{
	struct fuzz_ctx *c = ud;

	/* Touch every attribute: they must be valid strings. */
	for (size_t i = 0; attrs[i]; i += 2)
		if (strlen(attrs[i]) + strlen(attrs[i + 1]) == SIZE_MAX)
			abort();
	c->stream_open = 1;
	/* Stanzas are written in the stream's content namespace; the
	 * stream layer refuses any other, so only these are used as the
	 * scope of the round trip (a peer-chosen URI could be one that XML
	 * forbids binding, which says nothing about our serialiser). */
	c->ns = "jabber:client";
	if (default_ns && (strcmp(default_ns, "jabber:server") == 0 ||
			   strcmp(default_ns, "jabber:component:accept") == 0)) {
		snprintf(c->ns_buf, sizeof(c->ns_buf), "%s", default_ns);
		c->ns = c->ns_buf;
	}
}

static void
on_stanza(void *ud, struct pgn_xml *st)
{
	struct fuzz_ctx *c = ud;
	char *text;

	/* Exercise the accessors a stream handler uses. */
	(void)pgn_xml_attr(st, "to");
	(void)pgn_xml_attr(st, "xml:lang");
	text = pgn_xml_text(st);
	free(text);
	(void)pgn_xml_child(st, "urn:ietf:params:xml:ns:xmpp-sasl", NULL);
	for (struct pgn_xml *ch = pgn_xml_first_child(st); ch;
	     ch = pgn_xml_next(ch))
		(void)pgn_xml_name(ch);

	roundtrip(st, c->ns ? c->ns : "jabber:client");
	/* And as it would be written on another stream. */
	roundtrip(st, "jabber:server");

	/* What the router does before forwarding: stamp from, drop id,
	 * move to another content namespace, then write it out.  This takes
	 * the attributes out of the element's own allocation. */
	{
		struct pgn_xml *cp = pgn_xml_copy(st);
		const char *to;

		if (!cp)
			abort();
		to = pgn_xml_attr(cp, "to");
		if (pgn_xml_set_attr(cp, "from", to ? to : "a@b/c") < 0 ||
		    pgn_xml_set_attr(cp, "id", NULL) < 0 ||
		    pgn_xml_set_attr(cp, "to", pgn_xml_attr(cp, "from")) < 0 ||
		    pgn_xml_set_ns(cp, "jabber:server") < 0)
			abort();
		if (pgn_xml_attr(cp, "id") || !pgn_xml_attr(cp, "from"))
			abort();
		roundtrip(cp, "jabber:server");
		pgn_xml_free(cp);
	}

	if (strcmp(pgn_xml_name(st), "reset") == 0) {
		pgn_xml_parser_reset(c->p);
		c->stream_open = 0;
	}
	pgn_xml_free(st);
}

static void
on_close(void *ud)
{
	struct fuzz_ctx *c = ud;

	c->stream_open = 0;
}

static void
on_error(void *ud, enum pgn_xml_error err, const char *detail)
{
	struct fuzz_ctx *c = ud;

	(void)err;
	if (strlen(detail) > 1000)
		abort();
	c->errors++;
	/* As the stream layer might after some errors: start over. */
	if (err == PGN_XML_ERR_BAD_FORMAT)
		pgn_xml_parser_reset(c->p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct pgn_xml_parser_cbs cbs = {
		.stream_open = on_open,
		.stanza = on_stanza,
		.stream_close = on_close,
		.error = on_error,
	};
	struct fuzz_ctx c = { 0 };
	size_t split;
	const char *buf;
	size_t len;

	if (size < 1)
		return 0;
	split = data[0];
	buf = (const char *)data + 1;
	len = size - 1;
	if (split > len)
		split = len;
	c.ns = "jabber:client";
	c.p = pgn_xml_parser_new(&fuzz_limits, &cbs, &c);
	if (!c.p)
		return 0;
	(void)pgn_xml_parser_feed(c.p, buf, split);
	(void)pgn_xml_parser_pending(c.p);
	if (pgn_xml_parser_park(c.p) == 1 && pgn_xml_parser_pending(c.p) != 0)
		abort();
	(void)pgn_xml_parser_feed(c.p, buf + split, len - split);
	(void)pgn_xml_parser_pending(c.p);
	pgn_xml_parser_free(c.p);
	return 0;
}
