/* The incremental XMPP stream parser (expat): bytes in, the stream
 * root's attributes and one element tree per stanza out, with limits on
 * size, depth, attributes and children checked while the bytes arrive.
 * Idle streams park (give expat's state back) between stanzas.  The trees
 * it builds are xml.c's (layout in xml_node.h). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>
#include <sodium.h>

#include "pigeon/xml.h"
#include "xml_node.h"

/* Input is handed to expat in slices so that the size limit is checked
 * while a huge token is still arriving, not after it completed. */
#define FEED_SLICE 4096

/* A replay of the stream root (see parser_resume) longer than this is
 * not kept: such a stream is never parked.  The usual replay is under
 * 100 bytes; with this bound a resume costs the same whatever header the
 * peer sent (a replay as long as the header cost as much as parsing the
 * header again, for every byte a peer chose to send on its own). */
#define REPLAY_MAX 128

/* First size of the text accumulation buffer; it is freed when each
 * stanza ends, so an idle stream holds none. */
#define TEXT_INIT 256

/* Expat 2.6 may defer parsing a partial token until much more data has
 * arrived; an XMPP peer then waits forever for the answer to a stanza we
 * have not parsed.  Distributions backport the feature into older
 * versions (Debian's 2.5.0 has it), so look the function up weakly when
 * the header's version predates it. */
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
#define HAVE_REPARSE_DEFERRAL_CALL 1
#elif defined(__GNUC__) && defined(__ELF__)
extern XML_Bool XMLCALL XML_SetReparseDeferralEnabled(XML_Parser parser,
						      XML_Bool enabled)
	__attribute__((weak));
#define HAVE_REPARSE_DEFERRAL_WEAK 1
#endif

/* ---- stream parser ---------------------------------------------------- */

struct pgn_xml_parser {
	XML_Parser xp;           /* NULL until the first feed of a stream */
	struct pgn_xml_limits lim;
	struct pgn_xml_parser_cbs cbs;
	void *ud;
	struct pgn_xml *stanza;  /* being built; owned here */
	struct pgn_xml *cur;     /* innermost open element of stanza */
	/* Character data not yet added to cur.  While the stream root is
	 * parsed (depth 0, no stanza), the same buffer collects the root's
	 * prefixed namespace declarations, "prefix\0uri\0"... (see
	 * replay_save). */
	char *text;
	size_t text_len;
	size_t text_cap;
	char *default_ns;        /* declared on the stream root */
	/* The stream root's xml:lang, or NULL if it had none (or ""):
	 * stamped on the stanzas that have none (RFC 6120 8.1.5); at most
	 * PGN_XML_MAX_LANG bytes.  Kept across parks. */
	char *lang;
	/* Parking (pgn_xml_parser_park): an idle stream gives expat's
	 * state (about 10 KiB) back between stanzas and gets a new parser
	 * on its next bytes, primed with a replay of the stream root's
	 * start tag.  root_replay is kept only when the usual replay,
	 * <stream:stream xmlns:stream=... xmlns=default_ns>, would not
	 * restore the same namespace context.  Only the namespace context
	 * is replayed, and only up to REPLAY_MAX bytes (no_park beyond). */
	char *root_replay;
	/* Why, for the error callback: a static string, or, when expat
	 * itself failed (xml_code), formatted from expat's position only
	 * when reported, so that every idle stream does not carry a
	 * message buffer. */
	const char *detail;
	/* Stream offsets (expat byte indexes): fed counts all input given to
	 * xp; mark is where the data we still hold starts (the current
	 * stanza's start tag, or the end of the last stream-level event), so
	 * fed - mark bounds both the stanza and expat's unparsed tail.  A
	 * resume rebases both on the new parser's indexes (only their
	 * difference matters). */
	unsigned long long fed;
	unsigned long long mark;
	/* expat's hash salt, drawn once per stream parser: expat would
	 * otherwise ask the kernel for entropy on every parser it creates
	 * (each stream restart, each resume after a park). */
	unsigned long salt;
	unsigned depth;          /* 0 before the root, 1 in it, 2+ in a stanza */
	unsigned header_ns;      /* namespace declarations on the root */
	enum pgn_xml_error err;  /* set: dead until reset */
	enum XML_Error xml_code;
	/* Where the resumed parser's input starts in the stream, as line
	 * and column, and the column where the replay ends in it: error
	 * details then give stream positions (they wrap past 2^32, which
	 * only a log line would show). */
	unsigned line_base;
	unsigned col_base;
	unsigned replay_col;
	unsigned in_expat : 1;
	unsigned in_feed : 1;
	unsigned reset_pending : 1;
	unsigned parked : 1;     /* depth 1, no expat, nothing buffered */
	unsigned resumed : 1;    /* xp was primed with a replay */
	unsigned replaying : 1;  /* the replay is being parsed: no callbacks */
	unsigned opened : 1;     /* the root's start tag was seen */
	unsigned no_park : 1;    /* the root's replay would exceed REPLAY_MAX */
};

static int
parser_stopped(const struct pgn_xml_parser *p)
{
	return p->err != PGN_XML_ERR_NONE || p->reset_pending;
}

/* Called from expat handlers only; the error callback runs from feed once
 * expat has returned, so that callbacks never see expat half-way. */
static void
parser_fail(struct pgn_xml_parser *p, enum pgn_xml_error err,
	    const char *detail)
{
	if (p->err != PGN_XML_ERR_NONE)
		return;
	p->err = err;
	p->detail = detail;
	XML_StopParser(p->xp, XML_FALSE);
}

static unsigned long long
event_end(const struct pgn_xml_parser *p)
{
	XML_Index idx = XML_GetCurrentByteIndex(p->xp);
	int count = XML_GetCurrentByteCount(p->xp);

	if (idx < 0)
		return p->fed;
	return (unsigned long long)idx + (unsigned long long)(count > 0 ? count : 0);
}

/* Line (from 1) and column (from 0) of expat's current position in the
 * stream, across resumes: the replay took line 1 up to replay_col. */
static void
parser_position(const struct pgn_xml_parser *p, unsigned long *line,
		unsigned long *col)
{
	unsigned long l = (unsigned long)XML_GetCurrentLineNumber(p->xp);
	unsigned long c = (unsigned long)XML_GetCurrentColumnNumber(p->xp);

	if (p->resumed) {
		if (l <= 1) {
			l = p->line_base;
			c = p->col_base + (c >= p->replay_col ? c - p->replay_col : 0);
		} else {
			l = p->line_base + l - 1;
		}
	}
	*line = l;
	*col = c;
}

static int
check_stanza_size(struct pgn_xml_parser *p)
{
	if (p->lim.max_stanza_bytes &&
	    event_end(p) - p->mark > p->lim.max_stanza_bytes) {
		parser_fail(p, PGN_XML_ERR_TOO_BIG, "stanza too large");
		return -1;
	}
	return 0;
}

static int
flush_text(struct pgn_xml_parser *p)
{
	if (!p->text_len)
		return 0;
	if (pgn_xml_add_text(p->cur, p->text, p->text_len) < 0) {
		parser_fail(p, PGN_XML_ERR_NOMEM, "out of memory");
		return -1;
	}
	p->text_len = 0;
	return 0;
}

/* ---- parking: the replay of the stream root ---------------------------- */

static void
release_text_buffer(struct pgn_xml_parser *p)
{
	free(p->text);
	p->text = NULL;
	p->text_len = 0;
	p->text_cap = 0;
}

/* Bytes of a namespace URI written as a '-quoted attribute value that
 * reads back as the same URI (attribute normalisation included). */
static size_t
replay_esc_len(const char *s)
{
	size_t n = 0;

	for (; *s; s++) {
		switch (*s) {
		case '&': n += 5; break;  /* &amp; */
		case '<': n += 4; break;  /* &lt; */
		case '\'': n += 6; break; /* &apos; */
		case '\t': n += 4; break; /* &#9; */
		case '\n': n += 5; break; /* &#10; */
		case '\r': n += 5; break; /* &#13; */
		default: n++; break;
		}
	}
	return n;
}

static char *
replay_esc_put(char *d, const char *s)
{
	for (; *s; s++) {
		const char *rep;

		switch (*s) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '\'': rep = "&apos;"; break;
		case '\t': rep = "&#9;"; break;
		case '\n': rep = "&#10;"; break;
		case '\r': rep = "&#13;"; break;
		default: *d++ = *s; continue;
		}
		memcpy(d, rep, strlen(rep));
		d += strlen(rep);
	}
	return d;
}

/* A start tag <prefix:stream ...> (<stream ...> when plen is 0) with the
 * prefixed declarations of decls ("prefix\0uri\0"..., declen bytes) and
 * the default namespace: the same namespace context as the original
 * root.  Malloc'd, NUL-terminated; NULL on allocation failure. */
static char *
replay_build(const char *prefix, size_t plen, const char *decls,
	     size_t declen, const char *default_ns)
{
	size_t size = 1 + plen + 1 + 6 + 1 + 1, off;
	const char *d;
	char *out, *o;

	for (off = 0; off < declen;) {
		const char *pre = decls + off, *uri = pre + strlen(pre) + 1;

		size += 7 + strlen(pre) + 2 + replay_esc_len(uri) + 1;
		off = (size_t)(uri - decls) + strlen(uri) + 1;
	}
	if (default_ns)
		size += 8 + replay_esc_len(default_ns) + 1;
	out = malloc(size);
	if (!out)
		return NULL;
	o = out;
	*o++ = '<';
	if (plen) {
		memcpy(o, prefix, plen);
		o += plen;
		*o++ = ':';
	}
	memcpy(o, "stream", 6);
	o += 6;
	for (d = decls; d < decls + declen;) {
		const char *uri = d + strlen(d) + 1;

		memcpy(o, " xmlns:", 7);
		o += 7;
		memcpy(o, d, strlen(d));
		o += strlen(d);
		memcpy(o, "='", 2);
		o += 2;
		o = replay_esc_put(o, uri);
		*o++ = '\'';
		d = uri + strlen(uri) + 1;
	}
	if (default_ns) {
		memcpy(o, " xmlns='", 8);
		o += 8;
		o = replay_esc_put(o, default_ns);
		*o++ = '\'';
	}
	*o++ = '>';
	*o = '\0';
	return out;
}

/* The prefix of the root's qname as written (expat reports resolved
 * names only): read from the raw start tag, which begins at the current
 * event.  Falls back to a prefix bound to the stream namespace. */
static const char *
root_prefix(struct pgn_xml_parser *p, size_t *plen)
{
	int offset = 0, size = 0;
	const char *buf = XML_GetInputContext(p->xp, &offset, &size);
	size_t off;

	if (buf && offset >= 0 && offset < size && buf[offset] == '<') {
		int i;

		for (i = offset + 1; i < size; i++) {
			char c = buf[i];

			if (c == ':') {
				*plen = (size_t)(i - offset - 1);
				return buf + offset + 1;
			}
			if (c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
			    c == '/' || c == '>')
				break;
		}
		if (i < size) {
			*plen = 0;
			return "";
		}
	}
	for (off = 0; off < p->text_len;) {
		const char *pre = p->text + off, *uri = pre + strlen(pre) + 1;

		if (strcmp(uri, STREAM_NS_URI) == 0) {
			*plen = strlen(pre);
			return pre;
		}
		off = (size_t)(uri - p->text) + strlen(uri) + 1;
	}
	*plen = 0;
	return "";
}

/* Called when the root opened: keeps a replay of it if the usual one
 * would not restore the same namespace context, and marks the stream as
 * never to be parked if the replay would exceed REPLAY_MAX.  0 or
 * -ENOMEM. */
static int
replay_save(struct pgn_xml_parser *p)
{
	static const char usual[] = "stream\0" STREAM_NS_URI;
	size_t plen;
	const char *prefix = root_prefix(p, &plen);
	int is_usual = plen == 6 && memcmp(prefix, "stream", 6) == 0 &&
		       p->text_len == sizeof(usual) &&
		       memcmp(p->text, usual, sizeof(usual)) == 0;
	char *replay;

	free(p->root_replay);
	p->root_replay = NULL;
	/* Built once here to learn its length (the usual one is built again
	 * on each resume rather than kept by every idle stream). */
	replay = replay_build(prefix, plen, p->text, p->text_len,
			      p->default_ns);
	if (!replay)
		return -ENOMEM;
	p->no_park = strlen(replay) > REPLAY_MAX;
	if (is_usual || p->no_park)
		free(replay);
	else
		p->root_replay = replay;
	release_text_buffer(p);
	return 0;
}

static void
open_root(struct pgn_xml_parser *p, const XML_Char *name,
	  const XML_Char **atts, size_t natts)
{
	const char **pairs;
	size_t size, i;
	char *s;

	if (strcmp(name, STREAM_NS_URI " stream") != 0) {
		parser_fail(p, PGN_XML_ERR_BAD_NAMESPACE,
			    "stream root is not <stream> in " STREAM_NS_URI);
		return;
	}
	p->opened = 1;
	if (event_end(p) > PGN_XML_MAX_HEADER_BYTES) {
		parser_fail(p, PGN_XML_ERR_TOO_BIG, "stream header too large");
		return;
	}
	if (natts > PGN_XML_MAX_HEADER_ATTRS) {
		parser_fail(p, PGN_XML_ERR_TOO_BIG,
			    "too many attributes on the stream header");
		return;
	}
	for (i = 0; i < natts; i++)
		if (strcmp(atts[2 * i], XML_LANG_ATTR) == 0 &&
		    atts[2 * i + 1][0] != '\0') {
			size_t l = strlen(atts[2 * i + 1]);

			p->lang = malloc(l + 1);
			if (!p->lang) {
				parser_fail(p, PGN_XML_ERR_NOMEM,
					    "out of memory");
				return;
			}
			memcpy(p->lang, atts[2 * i + 1], l + 1);
		}
	if (replay_save(p) < 0) {
		parser_fail(p, PGN_XML_ERR_NOMEM, "out of memory");
		return;
	}
	size = (2 * natts + 1) * sizeof(char *);
	for (i = 0; i < natts; i++)
		size += attr_name_len(atts[2 * i]) + 1;
	pairs = malloc(size);
	if (!pairs) {
		parser_fail(p, PGN_XML_ERR_NOMEM, "out of memory");
		return;
	}
	s = (char *)(pairs + 2 * natts + 1);
	for (i = 0; i < natts; i++) {
		pairs[2 * i] = s;
		s = attr_name_put(s, atts[2 * i]);
		pairs[2 * i + 1] = atts[2 * i + 1];
	}
	pairs[2 * natts] = NULL;
	p->depth = 1;
	p->mark = event_end(p);
	if (p->cbs.stream_open)
		p->cbs.stream_open(p->ud, pairs, p->default_ns);
	free(pairs);
}

/* A message, presence or iq in the stream's content namespace. */
static int
is_stanza(const struct pgn_xml_parser *p, const char *ns, size_t nslen,
	  const char *local)
{
	if (!p->default_ns || strlen(p->default_ns) != nslen ||
	    memcmp(ns, p->default_ns, nslen) != 0)
		return 0;
	return strcmp(local, "message") == 0 ||
	       strcmp(local, "presence") == 0 || strcmp(local, "iq") == 0;
}

static void XMLCALL
on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct pgn_xml_parser *p = ud;
	const char *sep, *local, *ns, *lang = NULL;
	struct pgn_xml *el;
	size_t natts = 0, nslen;
	int has_lang = 0;

	if (parser_stopped(p))
		return;
	if (p->replaying) {
		/* The replayed root of a resumed stream: already reported. */
		p->depth = 1;
		return;
	}
	while (atts[2 * natts])
		natts++;
	if (p->lim.max_attrs && natts > p->lim.max_attrs) {
		parser_fail(p, PGN_XML_ERR_TOO_BIG, "too many attributes");
		return;
	}
	for (size_t i = 0; i < natts; i++)
		if (strcmp(atts[2 * i], XML_LANG_ATTR) == 0) {
			if (strlen(atts[2 * i + 1]) > PGN_XML_MAX_LANG) {
				parser_fail(p, PGN_XML_ERR_TOO_BIG,
					    "xml:lang too long");
				return;
			}
			has_lang = 1;
		}
	if (p->depth == 0) {
		open_root(p, name, atts, natts);
		return;
	}
	if (p->depth == 1) {
		XML_Index idx = XML_GetCurrentByteIndex(p->xp);

		/* mark is the stanza's start until it ends. */
		p->mark = idx < 0 ? p->fed : (unsigned long long)idx;
	}
	if (check_stanza_size(p) < 0)
		return;
	/* p->depth is the new element's depth counted from the stanza. */
	if (p->lim.max_depth && p->depth > p->lim.max_depth) {
		parser_fail(p, PGN_XML_ERR_TOO_BIG, "elements nested too deeply");
		return;
	}
	if (p->cur) {
		if (p->lim.max_children &&
		    p->cur->nelems >= p->lim.max_children) {
			parser_fail(p, PGN_XML_ERR_TOO_BIG,
				    "too many child elements");
			return;
		}
		if (flush_text(p) < 0)
			return;
	}
	/* An element in the XML namespace (<xml:x/>) has no use in XMPP
	 * and no serialisation that re-parses (that namespace cannot be a
	 * default one): refused like any other bad namespace. */
	if (xml_ns_local(name) != NULL) {
		parser_fail(p, PGN_XML_ERR_BAD_NAMESPACE,
			    "element in the XML namespace");
		return;
	}
	sep = strrchr(name, NS_SEP);
	if (sep) {
		ns = name;
		nslen = (size_t)(sep - name);
		local = sep + 1;
	} else {
		/* No namespace at all: "" rather than NULL, which would
		 * mean "inherit". */
		ns = "";
		nslen = 0;
		local = name;
	}
	/* RFC 6120 8.1.5: a stanza without xml:lang is in the stream's
	 * language; saying so on it keeps that true wherever it is routed. */
	if (p->depth == 1 && p->lang && !has_lang &&
	    is_stanza(p, ns, nslen, local))
		lang = p->lang;
	el = pgn_xml_el_create(ns, nslen, local, strlen(local), atts, natts,
			       lang);
	if (!el) {
		parser_fail(p, PGN_XML_ERR_NOMEM, "out of memory");
		return;
	}
	if (p->cur)
		node_append(p->cur, &el->n);
	else
		p->stanza = el;
	p->cur = el;
	p->depth++;
}

static void XMLCALL
on_end(void *ud, const XML_Char *name)
{
	struct pgn_xml_parser *p = ud;
	struct pgn_xml *st;

	if (parser_stopped(p))
		return;
	if (p->depth >= 2) {
		if (check_stanza_size(p) < 0 || flush_text(p) < 0)
			return;
		p->depth--;
		if (p->depth > 1) {
			p->cur = p->cur->parent;
			return;
		}
		st = p->stanza;
		p->stanza = NULL;
		p->cur = NULL;
		p->mark = event_end(p);
		/* Idle streams are the common case: keep no text buffer
		 * between stanzas (flush_text copied it into the tree). */
		release_text_buffer(p);
		if (p->cbs.stanza)
			p->cbs.stanza(p->ud, st);
		else
			pgn_xml_free(st);
		return;
	}
	p->depth = 0;
	p->mark = event_end(p);
	if (p->cbs.stream_close)
		p->cbs.stream_close(p->ud);
}

static void XMLCALL
on_text(void *ud, const XML_Char *s, int len)
{
	struct pgn_xml_parser *p = ud;
	size_t n = len > 0 ? (size_t)len : 0, i;

	if (parser_stopped(p))
		return;
	if (p->depth >= 2) {
		if (check_stanza_size(p) < 0)
			return;
		if (n > p->text_cap - p->text_len) {
			size_t cap = p->text_cap ? p->text_cap : TEXT_INIT;
			char *t;

			while (cap - p->text_len < n) {
				if (cap > SIZE_MAX / 2) {
					parser_fail(p, PGN_XML_ERR_NOMEM,
						    "out of memory");
					return;
				}
				cap *= 2;
			}
			t = realloc(p->text, cap);
			if (!t) {
				parser_fail(p, PGN_XML_ERR_NOMEM, "out of memory");
				return;
			}
			p->text = t;
			p->text_cap = cap;
		}
		memcpy(p->text + p->text_len, s, n);
		p->text_len += n;
		return;
	}
	/* Between stanzas only whitespace (keepalives) is allowed. */
	for (i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
			parser_fail(p, PGN_XML_ERR_BAD_FORMAT,
				    "character data at stream level");
			return;
		}
	p->mark = event_end(p);
}

static void XMLCALL
on_ns_start(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct pgn_xml_parser *p = ud;
	size_t l;

	if (parser_stopped(p) || p->depth != 0 || p->replaying)
		return;
	if (++p->header_ns > PGN_XML_MAX_HEADER_NS) {
		parser_fail(p, PGN_XML_ERR_TOO_BIG,
			    "too many namespace declarations on the stream "
			    "header");
		return;
	}
	if (prefix) {
		/* Kept for the replay after a park (see replay_save). */
		size_t pl = strlen(prefix) + 1, ul = uri ? strlen(uri) + 1 : 1;
		char *d = realloc(p->text, p->text_len + pl + ul);

		if (!d) {
			parser_fail(p, PGN_XML_ERR_NOMEM, "out of memory");
			return;
		}
		memcpy(d + p->text_len, prefix, pl);
		memcpy(d + p->text_len + pl, uri ? uri : "", ul);
		p->text = d;
		p->text_len += pl + ul;
		p->text_cap = p->text_len;
		return;
	}
	/* Declarations are reported before the element carrying them, so at
	 * depth 0 this is the stream root's default namespace. */
	free(p->default_ns);
	p->default_ns = NULL;
	if (!uri || !*uri)
		return;
	l = strlen(uri);
	p->default_ns = malloc(l + 1);
	if (!p->default_ns) {
		parser_fail(p, PGN_XML_ERR_NOMEM, "out of memory");
		return;
	}
	memcpy(p->default_ns, uri, l + 1);
}

/* ASCII case-insensitive equality, whatever the locale. */
static int
ascii_caseeq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char x = *a >= 'A' && *a <= 'Z' ? (char)(*a + 32) : *a;
		char y = *b >= 'A' && *b <= 'Z' ? (char)(*b + 32) : *b;

		if (x != y)
			return 0;
	}
	return *a == *b;
}

/* RFC 6120 11.6: XMPP is UTF-8 only; a declaration of anything else is
 * an unsupported-encoding stream error rather than something to ignore
 * (expat is told the input is UTF-8 whatever it declares). */
static void XMLCALL
on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
	    int standalone)
{
	struct pgn_xml_parser *p = ud;

	(void)version;
	(void)standalone;
	if (parser_stopped(p))
		return;
	if (encoding && !ascii_caseeq(encoding, "UTF-8"))
		parser_fail(p, PGN_XML_ERR_BAD_ENCODING,
			    "encoding other than UTF-8 declared");
}

static void XMLCALL
on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
	   const XML_Char *pubid, int has_internal_subset)
{
	parser_fail(ud, PGN_XML_ERR_RESTRICTED, "DTD not allowed");
}

static void XMLCALL
on_comment(void *ud, const XML_Char *data)
{
	parser_fail(ud, PGN_XML_ERR_RESTRICTED, "comment not allowed");
}

static void XMLCALL
on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	parser_fail(ud, PGN_XML_ERR_RESTRICTED,
		    "processing instruction not allowed");
}

static void XMLCALL
on_entity_decl(void *ud, const XML_Char *name, int is_param,
	       const XML_Char *value, int value_len, const XML_Char *base,
	       const XML_Char *sysid, const XML_Char *pubid,
	       const XML_Char *notation)
{
	parser_fail(ud, PGN_XML_ERR_RESTRICTED, "entity declaration not allowed");
}

static void XMLCALL
on_skipped_entity(void *ud, const XML_Char *name, int is_param)
{
	parser_fail(ud, PGN_XML_ERR_RESTRICTED, "entity reference not allowed");
}

static int
parser_start(struct pgn_xml_parser *p)
{
	/* XMPP is UTF-8 only (RFC 6120 §11.6); forcing it also ignores any
	 * other encoding an XML declaration claims. */
	p->xp = XML_ParserCreateNS("UTF-8", NS_SEP);
	if (!p->xp)
		return -ENOMEM;
	XML_SetHashSalt(p->xp, p->salt);
	XML_SetUserData(p->xp, p);
	XML_SetElementHandler(p->xp, on_start, on_end);
	XML_SetCharacterDataHandler(p->xp, on_text);
	XML_SetStartNamespaceDeclHandler(p->xp, on_ns_start);
	XML_SetXmlDeclHandler(p->xp, on_xml_decl);
	XML_SetStartDoctypeDeclHandler(p->xp, on_doctype);
	XML_SetCommentHandler(p->xp, on_comment);
	XML_SetProcessingInstructionHandler(p->xp, on_pi);
	XML_SetEntityDeclHandler(p->xp, on_entity_decl);
	XML_SetSkippedEntityHandler(p->xp, on_skipped_entity);
	/* Never read external DTD pieces; DTDs are refused anyway. */
	XML_SetParamEntityParsing(p->xp, XML_PARAM_ENTITY_PARSING_NEVER);
#if defined(HAVE_REPARSE_DEFERRAL_CALL)
	XML_SetReparseDeferralEnabled(p->xp, XML_FALSE);
#elif defined(HAVE_REPARSE_DEFERRAL_WEAK)
	if (XML_SetReparseDeferralEnabled)
		XML_SetReparseDeferralEnabled(p->xp, XML_FALSE);
#endif
	return 0;
}

/* Back to the state before a stream header; never while expat runs.
 * Everything but what the owner gave (limits, callbacks, userdata), the
 * hash salt and the feed-in-progress flags goes back to zero. */
static void
parser_clear(struct pgn_xml_parser *p)
{
	struct pgn_xml_parser kept = {
		.lim = p->lim,
		.cbs = p->cbs,
		.ud = p->ud,
		.salt = p->salt,
		.in_expat = p->in_expat,
		.in_feed = p->in_feed,
	};

	if (p->xp)
		XML_ParserFree(p->xp);
	pgn_xml_free(p->stanza);
	free(p->text);
	free(p->default_ns);
	free(p->lang);
	free(p->root_replay);
	*p = kept;
}

struct pgn_xml_parser *
pgn_xml_parser_new(const struct pgn_xml_limits *limits,
		   const struct pgn_xml_parser_cbs *cbs, void *ud)
{
	struct pgn_xml_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	if (limits)
		p->lim = *limits;
	if (cbs)
		p->cbs = *cbs;
	p->ud = ud;
	/* 0 would make expat draw its own. */
	do
		randombytes_buf(&p->salt, sizeof(p->salt));
	while (p->salt == 0);
	return p;
}

void
pgn_xml_parser_set_userdata(struct pgn_xml_parser *p, void *ud)
{
	p->ud = ud;
}

void
pgn_xml_parser_free(struct pgn_xml_parser *p)
{
	if (!p)
		return;
	parser_clear(p);
	free(p);
}

int
pgn_xml_parser_park(struct pgn_xml_parser *p)
{
	unsigned long line, col;

	if (p->parked)
		return 1;
	/* Only between stanzas of an open stream, with every byte fed
	 * turned into events (fed == mark: expat holds no partial token),
	 * and never from inside a callback. */
	if (!p->xp || p->in_feed || p->err != PGN_XML_ERR_NONE ||
	    p->reset_pending || p->depth != 1 || p->stanza ||
	    p->fed != p->mark || p->no_park)
		return 0;
	/* Outside a callback, after a parse that consumed everything, this
	 * is the position of the next byte. */
	parser_position(p, &line, &col);
	XML_ParserFree(p->xp);
	p->xp = NULL;
	release_text_buffer(p);
	p->line_base = (unsigned)line;
	p->col_base = (unsigned)col;
	p->resumed = 0;
	p->parked = 1;
	return 1;
}

/* A new expat for a parked stream, put back inside the stream root by
 * parsing a replay of its start tag (no callbacks run for it).  Limits,
 * offsets and the default namespace live in p and carry over. */
static int
parser_resume(struct pgn_xml_parser *p)
{
	static const char usual[] = "stream\0" STREAM_NS_URI;
	char *hdr = p->root_replay;
	enum XML_Status st;
	size_t len;

	if (parser_start(p) < 0)
		return -ENOMEM;
	if (!hdr)
		hdr = replay_build("stream", 6, usual, sizeof(usual),
				   p->default_ns);
	if (!hdr)
		goto fail;
	len = strlen(hdr);
	p->depth = 0; /* the replay's root brings it back to 1 */
	p->replaying = 1;
	p->in_expat = 1;
	st = XML_Parse(p->xp, hdr, (int)len, XML_FALSE);
	p->in_expat = 0;
	p->replaying = 0;
	if (hdr != p->root_replay)
		free(hdr);
	if (st != XML_STATUS_OK || p->depth != 1) {
		p->depth = 1;
		goto fail;
	}
	/* fed == mark when parked: both now point after the replay. */
	p->fed = len;
	p->mark = len;
	p->replay_col = (unsigned)XML_GetCurrentColumnNumber(p->xp);
	p->resumed = 1;
	p->parked = 0;
	return 0;
fail:
	XML_ParserFree(p->xp);
	p->xp = NULL;
	return -ENOMEM;
}

static enum pgn_xml_error
map_expat_error(enum XML_Error code)
{
	switch (code) {
	case XML_ERROR_NO_MEMORY:
		return PGN_XML_ERR_NOMEM;
	case XML_ERROR_UNDEFINED_ENTITY:
	case XML_ERROR_RECURSIVE_ENTITY_REF:
	case XML_ERROR_BINARY_ENTITY_REF:
	case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
	case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
	case XML_ERROR_PARAM_ENTITY_REF:
	case XML_ERROR_ENTITY_DECLARED_IN_PE:
	case XML_ERROR_NOT_STANDALONE:
		return PGN_XML_ERR_RESTRICTED;
	default:
		return PGN_XML_ERR_NOT_WELL_FORMED;
	}
}

/* expat detects UTF-16 from a stream's first two bytes (with or without
 * a byte order mark) even when told the input is UTF-8, and would then
 * parse it.  A UTF-8 stream never starts with 0xFE or 0xFF, nor has a
 * NUL in either byte (RFC 6120 11.6: UTF-8 only).  Checked on the bytes
 * at stream offsets 0 and 1, before expat sees them. */
static int
check_first_bytes(struct pgn_xml_parser *p, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len && p->fed + i < 2; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (c == 0 || (p->fed + i == 0 && (c == 0xfe || c == 0xff))) {
			p->err = PGN_XML_ERR_BAD_ENCODING;
			p->detail = "not UTF-8";
			return -1;
		}
	}
	return 0;
}

int
pgn_xml_parser_feed(struct pgn_xml_parser *p, const char *buf, size_t len)
{
	enum XML_Status st;

	if (p->err != PGN_XML_ERR_NONE)
		return -1;
	if (!p->xp && (p->parked ? parser_resume(p) : parser_start(p)) < 0) {
		p->err = PGN_XML_ERR_NOMEM;
		p->detail = "out of memory";
		goto report;
	}
	if (p->fed < 2 && check_first_bytes(p, buf, len) < 0)
		goto report;
	p->in_feed = 1;
	while (len > 0) {
		size_t n = len < FEED_SLICE ? len : FEED_SLICE;

		p->fed += n;
		p->in_expat = 1;
		st = XML_Parse(p->xp, buf, (int)n, XML_FALSE);
		p->in_expat = 0;
		buf += n;
		len -= n;
		if (p->reset_pending) {
			/* Requested by a callback: the rest of this input
			 * belongs to the old stream (or is TLS data). */
			parser_clear(p);
			p->in_feed = 0;
			return 0;
		}
		if (p->err != PGN_XML_ERR_NONE)
			break;
		if (st == XML_STATUS_ERROR) {
			p->xml_code = XML_GetErrorCode(p->xp);
			p->err = map_expat_error(p->xml_code);
			break;
		}
		/* Covers a token expat is still buffering (one huge start
		 * tag or attribute value) as well as the open stanza. */
		if (p->lim.max_stanza_bytes &&
		    p->fed - p->mark > p->lim.max_stanza_bytes) {
			p->err = PGN_XML_ERR_TOO_BIG;
			p->detail = "stanza too large";
			break;
		}
		/* A root start tag still arriving (open_root checks the
		 * one that completed). */
		if (!p->opened && p->fed > PGN_XML_MAX_HEADER_BYTES) {
			p->err = PGN_XML_ERR_TOO_BIG;
			p->detail = "stream header too large";
			break;
		}
	}
	p->in_feed = 0;
	if (p->err == PGN_XML_ERR_NONE)
		return 0;
report:
	/* The error callback may reset the parser; that must not free
	 * expat under our feet, so it is deferred through in_feed. */
	p->in_feed = 1;
	if (p->cbs.error) {
		char msg[192];
		const char *detail = p->detail ? p->detail : "";

		if (p->xml_code != XML_ERROR_NONE && p->xp) {
			unsigned long line, col;

			/* expat still holds the failing position. */
			parser_position(p, &line, &col);
			snprintf(msg, sizeof(msg), "line %lu, column %lu: %s",
				 line, col, XML_ErrorString(p->xml_code));
			detail = msg;
		}
		p->cbs.error(p->ud, p->err, detail);
	}
	p->in_feed = 0;
	if (p->reset_pending)
		parser_clear(p);
	return -1;
}

void
pgn_xml_parser_reset(struct pgn_xml_parser *p)
{
	if (p->in_feed) {
		p->reset_pending = 1;
		if (p->in_expat)
			XML_StopParser(p->xp, XML_FALSE);
		return;
	}
	parser_clear(p);
}

size_t
pgn_xml_parser_pending(const struct pgn_xml_parser *p)
{
	if (!p->xp)
		return 0;
	return (size_t)(p->fed - p->mark);
}

/* ---- parsing stored fragments ------------------------------------------ */

struct frag {
	struct pgn_xml *parent;
	int failed;
};

static void
frag_open(void *ud, const char **attrs, const char *default_ns)
{
	(void)ud;
	(void)attrs;
	(void)default_ns;
}

/* Takes el (the parser gives it away). */
static void
frag_element(void *ud, struct pgn_xml *el)
{
	struct frag *f = ud;
	pgn_xml_append(f->parent, el);
}

static void
frag_close(void *ud)
{
	(void)ud;
}

static void
frag_error(void *ud, enum pgn_xml_error err, const char *detail)
{
	struct frag *f = ud;
	(void)err;
	(void)detail;
	f->failed = 1;
}

int
pgn_xml_parse_into(struct pgn_xml *parent, const char *data, size_t len)
{
	/* The stream parser is the one XML parser: the data goes inside a
	 * stream header.  Limits as large as a stream may be configured
	 * with, so whatever a client could send parses back. */
	static const char head[] =
		"<stream:stream xmlns='jabber:client' "
		"xmlns:stream='http://etherx.jabber.org/streams'>";
	static const char tail[] = "</stream:stream>";
	struct pgn_xml_limits lim = { len + 1, 256, 1024, 1048576 };
	struct pgn_xml_parser_cbs cbs = { frag_open, frag_element, frag_close,
					  frag_error };
	struct frag f = { parent, 0 };
	struct pgn_xml_parser *p = pgn_xml_parser_new(&lim, &cbs, &f);

	if (p == NULL)
		return -ENOMEM;
	if (pgn_xml_parser_feed(p, head, sizeof(head) - 1) != 0 ||
	    pgn_xml_parser_feed(p, data, len) != 0 ||
	    pgn_xml_parser_feed(p, tail, sizeof(tail) - 1) != 0)
		f.failed = 1;
	pgn_xml_parser_free(p);
	return f.failed ? -EINVAL : 0;
}
