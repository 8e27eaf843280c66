/* XML element trees and the incremental XMPP stream parser (expat).
 *
 * A tree is owned by whoever holds its root; pgn_xml_free() on the root
 * frees every node below.  Children are owned by their parent and must not
 * be freed on their own (use pgn_xml_unlink() first to take one out).
 * Names are local names; namespaces are kept resolved in `ns` (never NULL
 * on an element made by the parser).  An element created with ns == NULL
 * inherits its parent's namespace when serialised. */
#ifndef PIGEON_XML_H
#define PIGEON_XML_H

#include <stddef.h>

struct evbuffer;

struct pgn_xml;

/* Creates a detached element.  ns may be NULL (inherit).  Returns NULL on
 * allocation failure.  The caller owns the result. */
struct pgn_xml *pgn_xml_new(const char *ns, const char *name);
/* Frees a root and all its descendants.  NULL is allowed. */
void pgn_xml_free(struct pgn_xml *el);
/* Deep copy; the caller owns the result. */
struct pgn_xml *pgn_xml_copy(const struct pgn_xml *el);

const char *pgn_xml_name(const struct pgn_xml *el);
/* The element's own namespace, or NULL if it inherits. */
const char *pgn_xml_ns(const struct pgn_xml *el);
struct pgn_xml *pgn_xml_parent(const struct pgn_xml *el);
/* Changes the element's namespace to one of the stream content namespaces
 * (jabber:client, jabber:component:accept, jabber:server) or NULL
 * (inherit).  0, or -EINVAL for any other namespace. */
int pgn_xml_set_ns(struct pgn_xml *el, const char *ns);

/* Attribute lookup by name ("type", "xml:lang" for the XML namespace). */
const char *pgn_xml_attr(const struct pgn_xml *el, const char *name);
/* Sets (copies) or, with value NULL, removes an attribute. 0 or -ENOMEM. */
int pgn_xml_set_attr(struct pgn_xml *el, const char *name, const char *value);
/* Iterates attributes: i from 0; returns 0 and fills name/value, -1 at end. */
int pgn_xml_attr_at(const struct pgn_xml *el, size_t i, const char **name,
		    const char **value);
size_t pgn_xml_attr_count(const struct pgn_xml *el);

/* Appends a new element child and returns it (owned by parent). */
struct pgn_xml *pgn_xml_add_child(struct pgn_xml *parent, const char *ns,
				  const char *name);
/* Appends an existing detached tree as the last child; parent takes it. */
void pgn_xml_append(struct pgn_xml *parent, struct pgn_xml *child);
/* Detaches el from its parent; the caller then owns it. */
void pgn_xml_unlink(struct pgn_xml *el);
/* Appends character data (copied, not escaped: it is escaped on output). */
int pgn_xml_add_text(struct pgn_xml *el, const char *text, size_t len);

/* First element child matching ns and name; either may be NULL (any). */
struct pgn_xml *pgn_xml_child(const struct pgn_xml *el, const char *ns,
			      const char *name);
/* Element children only, in document order. */
struct pgn_xml *pgn_xml_first_child(const struct pgn_xml *el);
struct pgn_xml *pgn_xml_next(const struct pgn_xml *el);
/* Concatenated character data of el's direct text children; malloc'd
 * (caller frees), "" if none, NULL on allocation failure. */
char *pgn_xml_text(const struct pgn_xml *el);
/* Text of the first child element (ns, name), malloc'd, or NULL. */
char *pgn_xml_child_text(const struct pgn_xml *el, const char *ns,
			 const char *name);

/* Serialises el.  parent_ns is the namespace in scope where el is written
 * (e.g. "jabber:client" for a stanza on a c2s stream); an xmlns attribute
 * is written wherever an element's namespace differs from its context.
 * Returns 0 or -ENOMEM. */
int pgn_xml_write(const struct pgn_xml *el, const char *parent_ns,
		  struct evbuffer *out);
/* Same, into a malloc'd NUL-terminated string the caller frees. */
char *pgn_xml_to_string(const struct pgn_xml *el, const char *parent_ns);
/* Escapes text for element content or attribute values into out. */
int pgn_xml_escape(struct evbuffer *out, const char *s, size_t len);

/* ---- stream parser ---------------------------------------------------- */

struct pgn_xml_limits {
	size_t max_stanza_bytes; /* bytes of one top-level stanza */
	unsigned max_depth;      /* element depth inside a stanza */
	unsigned max_attrs;      /* attributes on one element */
	unsigned max_children;   /* element children of one element */
};

/* Fixed bounds on every stream header (they are not configurable: a real
 * header is a few hundred bytes).  Bytes count everything before the end
 * of the root's start tag (XML declaration and whitespace included);
 * declarations count xmlns and xmlns:prefix on the root; attributes are
 * bounded by the smaller of this and max_attrs. */
#define PGN_XML_MAX_HEADER_BYTES 4096
#define PGN_XML_MAX_HEADER_NS 16
#define PGN_XML_MAX_HEADER_ATTRS 16
/* Bytes of an xml:lang value, on any element (a language tag, RFC 5646:
 * real ones are well under this). */
#define PGN_XML_MAX_LANG 64

/* Why the parser stopped; the stream layer maps these to stream errors. */
enum pgn_xml_error {
	PGN_XML_ERR_NONE = 0,
	PGN_XML_ERR_NOT_WELL_FORMED, /* -> not-well-formed */
	PGN_XML_ERR_RESTRICTED,      /* DTD, comment, PI, entity -> restricted-xml */
	PGN_XML_ERR_TOO_BIG,         /* size/depth/attrs/children -> policy-violation */
	PGN_XML_ERR_BAD_NAMESPACE,   /* stream root not in the stream namespace -> invalid-namespace */
	PGN_XML_ERR_BAD_FORMAT,      /* text at stream level, etc. -> bad-format */
	PGN_XML_ERR_NOMEM,
	PGN_XML_ERR_BAD_ENCODING,    /* not UTF-8 (RFC 6120 11.6) -> unsupported-encoding */
};

struct pgn_xml_parser_cbs {
	/* The stream root opened.  attrs: NULL-terminated name/value pairs
	 * (names as in pgn_xml_attr: "to", "from", "version", "xml:lang",
	 * "id").  default_ns: the default namespace declared on the root
	 * ("jabber:client", "jabber:component:accept", ...) or NULL. */
	void (*stream_open)(void *ud, const char **attrs, const char *default_ns);
	/* A complete top-level element; the callee takes ownership.  A
	 * message, presence or iq in the root's default namespace that has
	 * no xml:lang gets the root's, if it had one (RFC 6120 8.1.5). */
	void (*stanza)(void *ud, struct pgn_xml *stanza);
	/* </stream:stream> arrived. */
	void (*stream_close)(void *ud);
	/* Parsing failed; the parser is dead until reset. */
	void (*error)(void *ud, enum pgn_xml_error err, const char *detail);
};

struct pgn_xml_parser;

/* limits and cbs are copied.  Returns NULL on allocation failure. */
struct pgn_xml_parser *pgn_xml_parser_new(const struct pgn_xml_limits *limits,
					  const struct pgn_xml_parser_cbs *cbs,
					  void *ud);
void pgn_xml_parser_free(struct pgn_xml_parser *p);
/* Hands the parser's callbacks a new ud (a connection moving to another
 * session on stream resumption). */
void pgn_xml_parser_set_userdata(struct pgn_xml_parser *p, void *ud);
/* Feeds bytes.  Callbacks run from inside.  A callback may call
 * pgn_xml_parser_reset() (after STARTTLS or SASL success): the rest of
 * the current buffer is then discarded and the next feed starts a new
 * stream.  A callback must not free the parser; set a flag and free it
 * after feed returns.  Returns 0, or -1 after the error callback ran. */
int pgn_xml_parser_feed(struct pgn_xml_parser *p, const char *buf, size_t len);
/* Requests a fresh parser state for a new stream header. */
void pgn_xml_parser_reset(struct pgn_xml_parser *p);
/* Bytes of the stanza being parsed now (for memory accounting). */
size_t pgn_xml_parser_pending(const struct pgn_xml_parser *p);
/* Gives expat's state back while the stream is idle: possible between
 * stanzas of an open stream when every byte fed has been parsed (no
 * partial token or stanza held), never from inside a callback.  The next
 * feed resumes transparently: callbacks, namespaces (the root's default
 * and prefixed declarations), limits and errors are as if the parser had
 * never been parked.  Returns 1 if the parser is parked now, 0 if it
 * cannot be (it is then unchanged).  Resuming costs a new expat parser,
 * so callers park after a read, not after each stanza.  It replays only
 * the root's namespace context, and only when that is short: a stream
 * whose root declares more is never parked, so that no header makes a
 * resume cost more than the usual one. */
int pgn_xml_parser_park(struct pgn_xml_parser *p);

/* Parses elements serialised earlier with jabber:client in scope (what
 * modules keep in the store) and appends them to parent, which takes
 * them.  0, -EINVAL if data is not well-formed (parent may have some of
 * the elements then) or -ENOMEM. */
int pgn_xml_parse_into(struct pgn_xml *parent, const char *data, size_t len);

#endif
