/* XML element trees: construction, attributes, children, copies and
 * the serialiser.  The layout is in xml_node.h; the stream parser that
 * builds trees from bytes is xml_parser.c.
 *
 * Walks over a tree (free, copy, write) are iterative: a tree built with
 * no depth limit must not overflow the C stack. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pigeon/xml.h"
#include "xml_node.h"

/* ---- element construction --------------------------------------------- */

struct pgn_xml *
pgn_xml_el_create(const char *ns, size_t nslen, const char *name,
		  size_t namelen, const char *const *atts, size_t natts,
		  const char *lang)
{
	struct pgn_xml *el;
	size_t size, i, nall = natts + (lang != NULL);
	char *p;

	if (nall > UINT32_MAX)
		return NULL;
	size = sizeof(*el) + 2 * nall * sizeof(char *) + namelen + 1;
	if (ns)
		size += nslen + 1;
	for (i = 0; i < natts; i++)
		size += attr_name_len(atts[2 * i]) + 1 +
			strlen(atts[2 * i + 1]) + 1;
	if (lang)
		size += sizeof("xml:lang") + strlen(lang) + 1;
	el = malloc(size);
	if (!el)
		return NULL;
	memset(el, 0, sizeof(*el));
	el->n.kind = NODE_ELEMENT;
	el->n.flags = EL_ATTRS_INLINE;
	el->attrv = nall ? (const char **)(el + 1) : NULL;
	el->nattrs = (uint32_t)nall;
	p = (char *)(el + 1) + 2 * nall * sizeof(char *);
	el->name = p;
	p = str_put(p, name, namelen);
	if (ns) {
		el->ns = p;
		p = str_put(p, ns, nslen);
	}
	for (i = 0; i < natts; i++) {
		const char *v = atts[2 * i + 1];

		el->attrv[2 * i] = p;
		p = attr_name_put(p, atts[2 * i]);
		el->attrv[2 * i + 1] = p;
		p = str_put(p, v, strlen(v));
	}
	if (lang) {
		el->attrv[2 * natts] = p;
		p = str_put(p, "xml:lang", sizeof("xml:lang") - 1);
		el->attrv[2 * natts + 1] = p;
		str_put(p, lang, strlen(lang));
	}
	return el;
}

static void
el_free_one(struct pgn_xml *el)
{
	if (!(el->n.flags & EL_ATTRS_INLINE))
		free(el->attrv);
	free(el);
}

/* The namespace in force on el: its own, or the nearest ancestor's. */
static const char *
el_effective_ns(const struct pgn_xml *el)
{
	for (; el; el = el->parent)
		if (el->ns)
			return el->ns;
	return NULL;
}

struct pgn_xml *
pgn_xml_new(const char *ns, const char *name)
{
	if (!name)
		return NULL;
	return pgn_xml_el_create(ns, ns ? strlen(ns) : 0, name, strlen(name),
				 NULL, 0, NULL);
}

void
pgn_xml_free(struct pgn_xml *root)
{
	struct pgn_xml *el;
	struct xml_node *node;

	if (!root)
		return;
	/* Freeing a child in place would leave its parent pointing at freed
	 * memory; take it out first rather than corrupt the tree. */
	pgn_xml_unlink(root);
	el = root;
	node = el->first;
	for (;;) {
		if (!node) {
			struct xml_node *next = el->n.next;
			struct pgn_xml *parent = el->parent;
			int done = el == root;

			el_free_one(el);
			if (done)
				break;
			el = parent;
			node = next;
			continue;
		}
		if (node->kind == NODE_TEXT) {
			struct xml_node *next = node->next;

			free(node);
			node = next;
			continue;
		}
		el = AS_EL(node);
		node = el->first;
	}
}

struct pgn_xml *
pgn_xml_copy(const struct pgn_xml *root)
{
	const struct pgn_xml *src = root;
	const struct xml_node *node;
	struct pgn_xml *dst_root, *dst;
	const char *ns;

	if (!root)
		return NULL;
	/* The copy is detached, so it takes the namespace it had in place
	 * rather than inheriting from a parent it no longer has. */
	ns = el_effective_ns(root);
	dst_root = pgn_xml_el_create(ns, ns ? strlen(ns) : 0, root->name,
				     strlen(root->name), root->attrv,
				     root->nattrs, NULL);
	if (!dst_root)
		return NULL;
	dst = dst_root;
	node = root->first;
	for (;;) {
		const struct pgn_xml *child;
		struct pgn_xml *c;

		if (!node) {
			if (src == root)
				break;
			node = src->n.next;
			src = src->parent;
			dst = dst->parent;
			continue;
		}
		if (node->kind == NODE_TEXT) {
			const struct xml_text *t = AS_CTEXT(node);

			if (pgn_xml_add_text(dst, t->data, t->len) < 0)
				goto fail;
			node = node->next;
			continue;
		}
		child = AS_CEL(node);
		c = pgn_xml_el_create(child->ns,
				      child->ns ? strlen(child->ns) : 0,
				      child->name, strlen(child->name),
				      child->attrv, child->nattrs, NULL);
		if (!c)
			goto fail;
		node_append(dst, &c->n);
		src = child;
		dst = c;
		node = child->first;
	}
	return dst_root;
fail:
	pgn_xml_free(dst_root);
	return NULL;
}

const char *
pgn_xml_name(const struct pgn_xml *el)
{
	return el->name;
}

const char *
pgn_xml_ns(const struct pgn_xml *el)
{
	return el->ns;
}

struct pgn_xml *
pgn_xml_parent(const struct pgn_xml *el)
{
	return el->parent;
}

/* Only the stream content namespaces can be switched (a component's
 * stanzas become jabber:client inside the server); they point at static
 * strings so the element's single allocation stays untouched. */
int
pgn_xml_set_ns(struct pgn_xml *el, const char *ns)
{
	static const char *const known[] = { "jabber:client",
					     "jabber:component:accept",
					     "jabber:server", NULL };
	if (ns == NULL) {
		el->ns = NULL;
		return 0;
	}
	for (int i = 0; known[i] != NULL; i++)
		if (strcmp(ns, known[i]) == 0) {
			el->ns = known[i];
			return 0;
		}
	return -EINVAL;
}

/* ---- attributes ------------------------------------------------------- */

const char *
pgn_xml_attr(const struct pgn_xml *el, const char *name)
{
	uint32_t i;

	for (i = 0; i < el->nattrs; i++)
		if (strcmp(el->attrv[2 * i], name) == 0)
			return el->attrv[2 * i + 1];
	return NULL;
}

int
pgn_xml_set_attr(struct pgn_xml *el, const char *name, const char *value)
{
	size_t n = el->nattrs, newn, size = 0, i, j;
	size_t found = SIZE_MAX;
	const char **v;
	char *p;

	if (!name)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (strcmp(el->attrv[2 * i], name) == 0) {
			found = i;
			break;
		}
	if (found == SIZE_MAX && !value)
		return 0;
	newn = n + (found == SIZE_MAX) - (value == NULL);
	if (newn > UINT32_MAX)
		return -ENOMEM;
	/* Rebuild the attributes as one block.  name and value may point
	 * into the old block, so it is released only at the end. */
	v = NULL;
	if (newn) {
		size = 2 * newn * sizeof(char *);
		for (i = 0; i < n; i++)
			if (i != found)
				size += strlen(el->attrv[2 * i]) + 1 +
					strlen(el->attrv[2 * i + 1]) + 1;
		if (value)
			size += strlen(name) + 1 + strlen(value) + 1;
		v = malloc(size);
		if (!v)
			return -ENOMEM;
		p = (char *)(v + 2 * newn);
		for (i = 0, j = 0; i <= n; i++) {
			const char *an, *av;

			if (i == found || (i == n && found == SIZE_MAX)) {
				if (!value)
					continue;
				an = name;
				av = value;
			} else if (i == n) {
				break;
			} else {
				an = el->attrv[2 * i];
				av = el->attrv[2 * i + 1];
			}
			v[2 * j] = p;
			p = str_put(p, an, strlen(an));
			v[2 * j + 1] = p;
			p = str_put(p, av, strlen(av));
			j++;
		}
	}
	if (!(el->n.flags & EL_ATTRS_INLINE))
		free(el->attrv);
	el->n.flags &= (unsigned char)~EL_ATTRS_INLINE;
	el->attrv = v;
	el->nattrs = (uint32_t)newn;
	return 0;
}

int
pgn_xml_attr_at(const struct pgn_xml *el, size_t i, const char **name,
		const char **value)
{
	if (i >= el->nattrs)
		return -1;
	if (name)
		*name = el->attrv[2 * i];
	if (value)
		*value = el->attrv[2 * i + 1];
	return 0;
}

size_t
pgn_xml_attr_count(const struct pgn_xml *el)
{
	return el->nattrs;
}

/* ---- children --------------------------------------------------------- */

struct pgn_xml *
pgn_xml_add_child(struct pgn_xml *parent, const char *ns, const char *name)
{
	struct pgn_xml *c = pgn_xml_new(ns, name);

	if (c)
		node_append(parent, &c->n);
	return c;
}

void
pgn_xml_append(struct pgn_xml *parent, struct pgn_xml *child)
{
	pgn_xml_unlink(child);
	node_append(parent, &child->n);
}

void
pgn_xml_unlink(struct pgn_xml *el)
{
	struct pgn_xml *parent = el->parent;
	struct xml_node *prev = NULL, *n;

	if (!parent)
		return;
	for (n = parent->first; n && n != &el->n; n = n->next)
		prev = n;
	if (n) {
		if (prev)
			prev->next = el->n.next;
		else
			parent->first = el->n.next;
		if (parent->last == &el->n)
			parent->last = prev;
		parent->nelems--;
	}
	el->parent = NULL;
	el->n.next = NULL;
}

int
pgn_xml_add_text(struct pgn_xml *el, const char *text, size_t len)
{
	struct xml_text *t;

	if (!len)
		return 0;
	if (!text)
		return -EINVAL;
	if (len > SIZE_MAX - sizeof(*t) - 1)
		return -ENOMEM;
	t = malloc(sizeof(*t) + len + 1);
	if (!t)
		return -ENOMEM;
	t->n.kind = NODE_TEXT;
	t->n.flags = 0;
	t->len = len;
	str_put(t->data, text, len);
	node_append(el, &t->n);
	return 0;
}

struct pgn_xml *
pgn_xml_child(const struct pgn_xml *el, const char *ns, const char *name)
{
	const struct xml_node *n;
	const char *inherited = NULL;
	int have_inherited = 0;

	for (n = el->first; n; n = n->next) {
		const struct pgn_xml *c;
		const char *cns;

		if (n->kind != NODE_ELEMENT)
			continue;
		c = AS_CEL(n);
		if (name && strcmp(c->name, name) != 0)
			continue;
		if (ns) {
			cns = c->ns;
			if (!cns) {
				if (!have_inherited) {
					inherited = el_effective_ns(el);
					have_inherited = 1;
				}
				cns = inherited;
			}
			if (!cns || strcmp(cns, ns) != 0)
				continue;
		}
		return AS_EL(n);
	}
	return NULL;
}

struct pgn_xml *
pgn_xml_first_child(const struct pgn_xml *el)
{
	const struct xml_node *n;

	for (n = el->first; n; n = n->next)
		if (n->kind == NODE_ELEMENT)
			return AS_EL(n);
	return NULL;
}

struct pgn_xml *
pgn_xml_next(const struct pgn_xml *el)
{
	const struct xml_node *n;

	for (n = el->n.next; n; n = n->next)
		if (n->kind == NODE_ELEMENT)
			return AS_EL(n);
	return NULL;
}

char *
pgn_xml_text(const struct pgn_xml *el)
{
	const struct xml_node *n;
	size_t len = 0;
	char *s, *p;

	for (n = el->first; n; n = n->next)
		if (n->kind == NODE_TEXT)
			len += AS_CTEXT(n)->len;
	s = malloc(len + 1);
	if (!s)
		return NULL;
	p = s;
	for (n = el->first; n; n = n->next)
		if (n->kind == NODE_TEXT) {
			memcpy(p, AS_CTEXT(n)->data, AS_CTEXT(n)->len);
			p += AS_CTEXT(n)->len;
		}
	*p = '\0';
	return s;
}

char *
pgn_xml_child_text(const struct pgn_xml *el, const char *ns,
		   const char *name)
{
	const struct pgn_xml *c = pgn_xml_child(el, ns, name);

	return c ? pgn_xml_text(c) : NULL;
}

/* ---- serialiser ------------------------------------------------------- */

static int
put(struct evbuffer *out, const char *s, size_t len)
{
	return evbuffer_add(out, s, len) == 0 ? 0 : -ENOMEM;
}

static int
puts_(struct evbuffer *out, const char *s)
{
	return put(out, s, strlen(s));
}

/* attr: escape for a quoted attribute value, where quotes and the
 * whitespace that attribute normalisation would turn into spaces must be
 * written as references to survive a re-parse. */
static int
escape(struct evbuffer *out, const char *s, size_t len, int attr)
{
	size_t i, run = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *rep;

		switch (c) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break; /* "]]>" is not allowed in text */
		case '"': rep = attr ? "&quot;" : NULL; break;
		case '\'': rep = attr ? "&apos;" : NULL; break;
		case '\t': rep = attr ? "&#9;" : NULL; break;
		case '\n': rep = attr ? "&#10;" : NULL; break;
		case '\r': rep = "&#13;"; break; /* else read back as \n */
		default:
			/* Other C0 controls cannot appear in XML 1.0 at all,
			 * even as references: drop them so the output stays
			 * parseable. */
			rep = c < 0x20 ? "" : NULL;
			break;
		}
		if (!rep)
			continue;
		if (put(out, s + run, i - run) < 0 || puts_(out, rep) < 0)
			return -ENOMEM;
		run = i + 1;
	}
	return put(out, s + run, len - run);
}

int
pgn_xml_escape(struct evbuffer *out, const char *s, size_t len)
{
	/* The attribute form is valid in element content too. */
	return escape(out, s, len, 1);
}

static int
is_xmlns_attr(const char *name)
{
	return strcmp(name, "xmlns") == 0 || strncmp(name, "xmlns:", 6) == 0;
}

/* Writes "<name ...>" (or "/>" when el has no children).  scope is the
 * namespace in force around el. */
static int
write_open(const struct pgn_xml *el, const char *scope, struct evbuffer *out)
{
	char pfx[32];
	uint32_t i, j;

	if (put(out, "<", 1) < 0 || puts_(out, el->name) < 0)
		return -ENOMEM;
	if (el->ns && strcmp(el->ns, scope) != 0) {
		if (puts_(out, " xmlns=\"") < 0 ||
		    escape(out, el->ns, strlen(el->ns), 1) < 0 ||
		    put(out, "\"", 1) < 0)
			return -ENOMEM;
	}
	for (i = 0; i < el->nattrs; i++) {
		const char *name = el->attrv[2 * i];
		const char *value = el->attrv[2 * i + 1];
		const char *sep;

		/* Namespace declarations follow from the tree's namespaces;
		 * a stray one set by hand could only contradict them. */
		if (is_xmlns_attr(name))
			continue;
		sep = strrchr(name, NS_SEP);
		if (put(out, " ", 1) < 0)
			return -ENOMEM;
		if (!sep) {
			if (puts_(out, name) < 0)
				return -ENOMEM;
		} else if (xml_ns_local(name)) {
			if (puts_(out, "xml:") < 0 || puts_(out, sep + 1) < 0)
				return -ENOMEM;
		} else {
			size_t ulen = (size_t)(sep - name);

			/* The prefix is named after the first attribute with
			 * this URI; that one also declares it. */
			for (j = 0; j < i; j++) {
				const char *o = el->attrv[2 * j];

				if (strncmp(o, name, ulen) == 0 &&
				    o[ulen] == NS_SEP &&
				    !strchr(o + ulen + 1, NS_SEP))
					break;
			}
			snprintf(pfx, sizeof(pfx), "ns%u", (unsigned)j);
			if (j == i &&
			    (puts_(out, "xmlns:") < 0 || puts_(out, pfx) < 0 ||
			     puts_(out, "=\"") < 0 ||
			     escape(out, name, ulen, 1) < 0 ||
			     puts_(out, "\" ") < 0))
				return -ENOMEM;
			if (puts_(out, pfx) < 0 || put(out, ":", 1) < 0 ||
			    puts_(out, sep + 1) < 0)
				return -ENOMEM;
		}
		if (puts_(out, "=\"") < 0 ||
		    escape(out, value, strlen(value), 1) < 0 ||
		    put(out, "\"", 1) < 0)
			return -ENOMEM;
	}
	return puts_(out, el->first ? ">" : "/>");
}

/* The namespace in force for el's children while writing root. */
static const char *
write_scope(const struct pgn_xml *el, const struct pgn_xml *root,
	    const char *parent_ns)
{
	for (;; el = el->parent) {
		if (el->ns)
			return el->ns;
		if (el == root)
			return parent_ns;
	}
}

int
pgn_xml_write(const struct pgn_xml *root, const char *parent_ns,
	      struct evbuffer *out)
{
	const struct pgn_xml *el = root;
	const struct xml_node *node;
	const char *scope;

	if (!parent_ns)
		parent_ns = "";
	if (write_open(root, parent_ns, out) < 0)
		return -ENOMEM;
	scope = root->ns ? root->ns : parent_ns;
	node = root->first;
	if (!node)
		return 0;
	for (;;) {
		const struct pgn_xml *child;

		if (!node) {
			if (puts_(out, "</") < 0 || puts_(out, el->name) < 0 ||
			    put(out, ">", 1) < 0)
				return -ENOMEM;
			if (el == root)
				break;
			node = el->n.next;
			el = el->parent;
			scope = write_scope(el, root, parent_ns);
			continue;
		}
		if (node->kind == NODE_TEXT) {
			if (escape(out, AS_CTEXT(node)->data,
				   AS_CTEXT(node)->len, 0) < 0)
				return -ENOMEM;
			node = node->next;
			continue;
		}
		child = AS_CEL(node);
		if (write_open(child, scope, out) < 0)
			return -ENOMEM;
		if (!child->first) {
			node = node->next;
			continue;
		}
		el = child;
		if (child->ns)
			scope = child->ns;
		node = child->first;
	}
	return 0;
}

char *
pgn_xml_to_string(const struct pgn_xml *el, const char *parent_ns)
{
	struct evbuffer *buf = evbuffer_new();
	char *s = NULL;
	size_t len;

	if (!buf)
		return NULL;
	if (pgn_xml_write(el, parent_ns, buf) < 0)
		goto fail;
	len = evbuffer_get_length(buf);
	s = malloc(len + 1);
	if (!s)
		goto fail;
	if (evbuffer_remove(buf, s, len) != (int)len) {
		free(s);
		s = NULL;
		goto fail;
	}
	s[len] = '\0';
fail:
	evbuffer_free(buf);
	return s;
}
