/*
 * omemo-xml.c: the text, XML and base64 helpers of tests/tools/omemo-client
 * (a growing string that escapes XML, event-line escaping, stanza lookups).
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omemo-client.h"

/* Prints text on one line: \n, \r and \ escaped, so that a message can
 * never forge an event line. */
void
print_escaped(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char ch = text[i];

		if (ch == '\n')
			fputs("\\n", stdout);
		else if (ch == '\r')
			fputs("\\r", stdout);
		else if (ch == '\\')
			fputs("\\\\", stdout);
		else if (ch == '\0')
			fputs("\\0", stdout);
		else
			fputc(ch, stdout);
	}
}

void
sb_add(struct sb *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
sb_printf(struct sb *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->oom = 1;
		return;
	}
	sb_add(b, tmp, (size_t)n);
}

/* XML-escapes s (text or attribute value). */
void
sb_esc(struct sb *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': sb_add(b, "&amp;", 5); break;
		case '<': sb_add(b, "&lt;", 4); break;
		case '>': sb_add(b, "&gt;", 4); break;
		case '\'': sb_add(b, "&apos;", 6); break;
		case '"': sb_add(b, "&quot;", 6); break;
		default: sb_add(b, s, 1);
		}
	}
}

void
sb_b64(struct sb *b, xmpp_ctx_t *ctx, const uint8_t *data, size_t len)
{
	char *s = xmpp_base64_encode(ctx, data, len);

	if (!s) {
		b->oom = 1;
		return;
	}
	sb_add(b, s, strlen(s));
	xmpp_free(ctx, s);
}

char *
sb_take(struct sb *b)
{
	if (b->oom) {
		free(b->p);
		return NULL;
	}
	return b->p ? b->p : strdup("");
}

char *
bare_of(const char *jid)
{
	const char *slash = jid ? strchr(jid, '/') : NULL;

	if (!jid)
		return NULL;
	return slash ? strndup(jid, (size_t)(slash - jid)) : strdup(jid);
}

/* The text of child `name` (any namespace) of el, allocated by libstrophe
 * (xmpp_free) or NULL. */
char *
child_text(xmpp_stanza_t *el, const char *name)
{
	xmpp_stanza_t *ch = el ? xmpp_stanza_get_child_by_name(el, name) : NULL;

	return ch ? xmpp_stanza_get_text(ch) : NULL;
}

/* Decodes base64 text; *out is malloc'd (free()).  0 or -1. */
int
b64_decode(xmpp_ctx_t *ctx, const char *text, uint8_t **out, size_t *len)
{
	unsigned char *bin = NULL;
	size_t n = 0;

	if (!text)
		return -1;
	xmpp_base64_decode_bin(ctx, text, strlen(text), &bin, &n);
	if (!bin)
		return -1;
	*out = malloc(n ? n : 1);
	if (*out)
		memcpy(*out, bin, n);
	xmpp_free(ctx, bin);
	*len = n;
	return *out ? 0 : -1;
}

const char *
error_condition(xmpp_stanza_t *st)
{
	xmpp_stanza_t *err = xmpp_stanza_get_child_by_name(st, "error");

	for (xmpp_stanza_t *ch = err ? xmpp_stanza_get_children(err) : NULL; ch;
	     ch = xmpp_stanza_get_next(ch)) {
		const char *ns = xmpp_stanza_get_ns(ch);

		if (ns && strcmp(ns, NS_STANZAS) == 0 &&
		    strcmp(xmpp_stanza_get_name(ch), "text") != 0)
			return xmpp_stanza_get_name(ch);
	}
	return "undefined-condition";
}

/* Finds the first <item/> payload element named `name` in a pubsub items
 * result (or event). */
xmpp_stanza_t *
item_payload(xmpp_stanza_t *st, const char *name)
{
	xmpp_stanza_t *items = NULL, *ps;

	ps = xmpp_stanza_get_child_by_name(st, "pubsub");
	if (!ps)
		ps = xmpp_stanza_get_child_by_name(st, "event");
	if (ps)
		items = xmpp_stanza_get_child_by_name(ps, "items");
	for (xmpp_stanza_t *it = items ? xmpp_stanza_get_children(items) : NULL; it;
	     it = xmpp_stanza_get_next(it)) {
		xmpp_stanza_t *p;

		if (!xmpp_stanza_get_name(it) ||
		    strcmp(xmpp_stanza_get_name(it), "item") != 0)
			continue;
		p = xmpp_stanza_get_child_by_name_and_ns(it, name, NS_OMEMO);
		if (p)
			return p;
	}
	return NULL;
}

unsigned long
attr_ulong(xmpp_stanza_t *el, const char *name)
{
	const char *v = el ? xmpp_stanza_get_attribute(el, name) : NULL;
	char *end;
	unsigned long n;

	if (!v)
		return 0;
	errno = 0;
	n = strtoul(v, &end, 10);
	return errno || *end ? 0 : n;
}

