/* The layout of an XML element tree (see xml.c), shared by the tree code
 * (xml.c) and the stream parser that builds trees (xml_parser.c).  Not a
 * public header: modules see only pigeon/xml.h.
 *
 * Layout: every element is one allocation holding the node, its local
 * name, its namespace and (when made by the parser or copied) its
 * attributes as a small array of name/value pointers.  Setting an
 * attribute later moves the attributes into a block of their own.  Text
 * children are one allocation each; elements and text share one sibling
 * list so that mixed content keeps its order.
 *
 * Attribute names: plain names as written; attributes in the XML
 * namespace as "xml:lang"; attributes in any other namespace keep expat's
 * "URI local" form and get a generated prefix when serialised.
 *
 * The small helpers are inline here: the parser calls them once per
 * element and attribute, as it did when both were one file. */
#ifndef PIGEON_XML_NODE_H
#define PIGEON_XML_NODE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pigeon/xml.h"

#define XML_NS_URI "http://www.w3.org/XML/1998/namespace"
#define STREAM_NS_URI "http://etherx.jabber.org/streams"
#define NS_SEP ' '
#define XML_LANG_ATTR XML_NS_URI " lang" /* as expat reports xml:lang */

enum { NODE_ELEMENT = 0, NODE_TEXT = 1 };

/* Element attributes live inside the element's own allocation. */
#define EL_ATTRS_INLINE 0x01

struct xml_node {
	struct xml_node *next;
	unsigned char kind;
	unsigned char flags;
};

struct xml_text {
	struct xml_node n;
	size_t len;
	char data[];
};

struct pgn_xml {
	struct xml_node n; /* first: a node pointer converts to the element */
	struct pgn_xml *parent;
	struct xml_node *first;
	struct xml_node *last;
	const char *name;
	const char *ns;      /* NULL: inherits */
	const char **attrv;  /* 2 * nattrs: name, value, ... */
	uint32_t nattrs;
	uint32_t nelems;     /* element children, for the children limit */
};

#define AS_EL(node) ((struct pgn_xml *)(node))
#define AS_CEL(node) ((const struct pgn_xml *)(node))
#define AS_TEXT(node) ((struct xml_text *)(node))
#define AS_CTEXT(node) ((const struct xml_text *)(node))

/* If raw is expat's "URI local" for the XML namespace, its local part. */
static inline const char *
xml_ns_local(const char *raw)
{
	size_t l = sizeof(XML_NS_URI) - 1;

	if (strncmp(raw, XML_NS_URI, l) == 0 && raw[l] == NS_SEP)
		return raw + l + 1;
	return NULL;
}

static inline size_t
attr_name_len(const char *raw)
{
	const char *local = xml_ns_local(raw);

	return local ? 4 + strlen(local) : strlen(raw);
}

/* Writes the public form of an attribute name; returns the byte after
 * its NUL. */
static inline char *
attr_name_put(char *dst, const char *raw)
{
	const char *local = xml_ns_local(raw);
	size_t l;

	if (local) {
		memcpy(dst, "xml:", 4);
		dst += 4;
		raw = local;
	}
	l = strlen(raw);
	memcpy(dst, raw, l + 1);
	return dst + l + 1;
}

static inline char *
str_put(char *dst, const char *s, size_t len)
{
	memcpy(dst, s, len);
	dst[len] = '\0';
	return dst + len + 1;
}

static inline void
node_append(struct pgn_xml *parent, struct xml_node *node)
{
	node->next = NULL;
	if (parent->last)
		parent->last->next = node;
	else
		parent->first = node;
	parent->last = node;
	if (node->kind == NODE_ELEMENT) {
		AS_EL(node)->parent = parent;
		parent->nelems++;
	}
}

/* One allocation for the node, its names and its attributes.  atts is a
 * name/value array of natts pairs whose names may be in expat's form;
 * lang, if not NULL, is added as one more attribute, xml:lang (atts must
 * not have one).  Returns the new element (caller owns) or NULL. */
struct pgn_xml *pgn_xml_el_create(const char *ns, size_t nslen,
				  const char *name, size_t namelen,
				  const char *const *atts, size_t natts,
				  const char *lang);

#endif
