/* JIDs (RFC 7622): split, prepare with libidn stringprep, keep in one
 * allocation.  A JID is immutable once built, so it can be shared by
 * pointer between a stanza and its routing summary without copies. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <stringprep.h>

#include "pigeon/jid.h"

/* RFC 7622 §3.1: every part is at most 1023 bytes once prepared. */
#define JID_PART_MAX 1023
/* Scratch size for preparing one part in place.  The input may be longer
 * than 1023 bytes (mapping can delete characters), but anything that needs
 * more room than this could never prepare down to a valid part, so the
 * bound keeps the work on untrusted input small. */
#define JID_PREP_BUF 4096

enum jid_part {
	JID_NODE,
	JID_DOMAIN,
	JID_RESOURCE,
};

/* Copies in[0..len) to buf and prepares it there with the profile of
 * part.  Returns 0 or -EINVAL (too long, prohibited code point, bad
 * UTF-8, empty). */
static int
jid_prep_part(enum jid_part part, const char *in, size_t len, char *buf)
{
	int rc;

	if (len == 0 || len >= JID_PREP_BUF || memchr(in, '\0', len))
		return -EINVAL;
	memcpy(buf, in, len);
	buf[len] = '\0';

	switch (part) {
	case JID_NODE:
		rc = stringprep_xmpp_nodeprep(buf, JID_PREP_BUF);
		break;
	case JID_DOMAIN:
		rc = stringprep_nameprep(buf, JID_PREP_BUF);
		break;
	case JID_RESOURCE:
		rc = stringprep_xmpp_resourceprep(buf, JID_PREP_BUF);
		break;
	default:
		return -EINVAL;
	}
	if (rc != STRINGPREP_OK)
		return -EINVAL;
	len = strlen(buf);
	if (len == 0 || len > JID_PART_MAX)
		return -EINVAL;
	return 0;
}

/* IDNA2003 treats these as label separators too (RFC 3490 §3.1);
 * returns the byte length of the separator at p, or 0. */
static size_t
jid_dot_len(const unsigned char *p, size_t avail)
{
	if (avail >= 1 && p[0] == '.')
		return 1;
	if (avail < 3)
		return 0;
	/* U+3002 IDEOGRAPHIC FULL STOP */
	if (p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x82)
		return 3;
	/* U+FF0E FULLWIDTH FULL STOP */
	if (p[0] == 0xef && p[1] == 0xbc && p[2] == 0x8e)
		return 3;
	/* U+FF61 HALFWIDTH IDEOGRAPHIC FULL STOP */
	if (p[0] == 0xef && p[1] == 0xbd && p[2] == 0xa1)
		return 3;
	return 0;
}

/* Label rules on the prepared domain: no empty label, and ASCII limited
 * to letters, digits, '-' and '_' ('_' because service and component
 * names use it).  Non-ASCII labels were checked by Nameprep. */
static int
jid_check_labels(const char *d)
{
	size_t label = 0;
	int ascii_only = 1;

	for (const unsigned char *p = (const unsigned char *)d;; p++) {
		if (*p == '.' || *p == '\0') {
			if (label == 0)
				return -EINVAL;
			/* DNS limit; only measurable for ASCII labels
			 * without converting to the A-label form. */
			if (ascii_only && label > 63)
				return -EINVAL;
			if (*p == '\0')
				return 0;
			label = 0;
			ascii_only = 1;
			continue;
		}
		label++;
		if (*p >= 0x80) {
			ascii_only = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return -EINVAL;
	}
}

/* IP literals are kept exactly as written: "[v6]" or dotted IPv4. */
static int
jid_ip_literal(const char *in, size_t len, char *buf)
{
	unsigned char addr[16];

	if (len < 3 || len >= 64)
		return 0;
	if (in[0] == '[' && in[len - 1] == ']') {
		memcpy(buf, in + 1, len - 2);
		buf[len - 2] = '\0';
		if (inet_pton(AF_INET6, buf, addr) != 1)
			return 0;
	} else {
		memcpy(buf, in, len);
		buf[len] = '\0';
		if (inet_pton(AF_INET, buf, addr) != 1)
			return 0;
	}
	memcpy(buf, in, len);
	buf[len] = '\0';
	return 1;
}

/* Prepares a domainpart into buf (JID_PREP_BUF bytes). */
static int
jid_prep_domain(const char *in, size_t len, char *buf)
{
	char tmp[JID_PREP_BUF];
	size_t n = 0, dl;
	int rc;

	if (len == 0 || len >= JID_PREP_BUF)
		return -EINVAL;
	if (jid_ip_literal(in, len, buf))
		return 0;

	/* Map every IDNA label separator to '.', then strip one final
	 * dot (RFC 7622 §3.2) before Nameprep sees the string. */
	for (size_t i = 0; i < len;) {
		dl = jid_dot_len((const unsigned char *)in + i, len - i);
		if (dl) {
			tmp[n++] = '.';
			i += dl;
		} else {
			tmp[n++] = in[i++];
		}
	}
	if (n > 0 && tmp[n - 1] == '.')
		n--;
	rc = jid_prep_part(JID_DOMAIN, tmp, n, buf);
	if (rc < 0)
		return rc;
	return jid_check_labels(buf);
}

/* Builds the single allocation from already prepared parts:
 * [struct][full][bare][node][domain][resource]. */
static struct pgn_jid *
jid_build(const char *node, const char *domain, const char *resource)
{
	size_t nl = node ? strlen(node) : 0;
	size_t dl = strlen(domain);
	size_t rl = resource ? strlen(resource) : 0;
	size_t bare_len = (node ? nl + 1 : 0) + dl;
	size_t full_len = bare_len + (resource ? rl + 1 : 0);
	struct pgn_jid *jid;
	char *p, *full, *bare;

	jid = malloc(sizeof(*jid) + full_len + 1 + bare_len + 1 + nl + 1 +
		     dl + 1 + rl + 1);
	if (!jid)
		return NULL;
	p = (char *)(jid + 1);

	full = p;
	if (node) {
		memcpy(p, node, nl);
		p += nl;
		*p++ = '@';
	}
	memcpy(p, domain, dl);
	p += dl;
	if (resource) {
		*p++ = '/';
		memcpy(p, resource, rl);
		p += rl;
	}
	*p++ = '\0';

	bare = p;
	memcpy(bare, full, bare_len);
	p += bare_len;
	*p++ = '\0';

	jid->full = full;
	jid->bare = bare;
	jid->node = NULL;
	if (node) {
		memcpy(p, node, nl + 1);
		jid->node = p;
		p += nl + 1;
	}
	memcpy(p, domain, dl + 1);
	jid->domain = p;
	p += dl + 1;
	jid->resource = NULL;
	if (resource) {
		memcpy(p, resource, rl + 1);
		jid->resource = p;
	}
	return jid;
}

/* Prepares the three raw parts (lengths given; node/resource NULL when
 * absent) and builds the JID. */
static int
jid_from_parts(const char *node, size_t nl, const char *domain, size_t dl,
	       const char *resource, size_t rl, struct pgn_jid **out)
{
	char nbuf[JID_PREP_BUF], dbuf[JID_PREP_BUF], rbuf[JID_PREP_BUF];
	struct pgn_jid *jid;
	int rc;

	if (node && (rc = jid_prep_part(JID_NODE, node, nl, nbuf)) < 0)
		goto fail;
	if ((rc = jid_prep_domain(domain, dl, dbuf)) < 0)
		goto fail;
	if (resource &&
	    (rc = jid_prep_part(JID_RESOURCE, resource, rl, rbuf)) < 0)
		goto fail;
	jid = jid_build(node ? nbuf : NULL, dbuf, resource ? rbuf : NULL);
	if (!jid) {
		rc = -ENOMEM;
		goto fail;
	}
	*out = jid;
	return 0;
fail:
	*out = NULL;
	return rc;
}

int
pgn_jid_parse(const char *s, struct pgn_jid **out)
{
	const char *slash, *at, *domain, *end;
	const char *node = NULL, *resource = NULL;
	size_t nl = 0, rl = 0;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!s)
		return -EINVAL;

	/* RFC 7622 §3.1: the resource starts after the first '/', and the
	 * node ends at the first '@' of what comes before it; so
	 * "a.example.com/b@example.net" has no node. */
	end = s + strlen(s);
	slash = strchr(s, '/');
	if (slash) {
		resource = slash + 1;
		rl = (size_t)(end - resource);
		end = slash;
	}
	at = memchr(s, '@', (size_t)(end - s));
	domain = s;
	if (at) {
		node = s;
		nl = (size_t)(at - s);
		domain = at + 1;
	}
	/* A separator with nothing after (or before) it is an error, not
	 * an absent part. */
	if ((node && nl == 0) || (resource && rl == 0) || domain == end)
		return -EINVAL;
	return jid_from_parts(node, nl, domain, (size_t)(end - domain),
			      resource, rl, out);
}

int
pgn_jid_make(const char *node, const char *domain, const char *resource,
	     struct pgn_jid **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!domain)
		return -EINVAL;
	return jid_from_parts(node, node ? strlen(node) : 0, domain,
			      strlen(domain), resource,
			      resource ? strlen(resource) : 0, out);
}

struct pgn_jid *
pgn_jid_bare_copy(const struct pgn_jid *jid)
{
	if (!jid)
		return NULL;
	return jid_build(jid->node, jid->domain, NULL);
}

struct pgn_jid *
pgn_jid_copy(const struct pgn_jid *jid)
{
	if (!jid)
		return NULL;
	return jid_build(jid->node, jid->domain, jid->resource);
}

int
pgn_jid_with_resource(const struct pgn_jid *jid, const char *resource,
		      struct pgn_jid **out)
{
	char rbuf[JID_PREP_BUF];
	struct pgn_jid *n;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!jid)
		return -EINVAL;
	/* node and domain are prepared already; only the new part is. */
	if (resource &&
	    (rc = jid_prep_part(JID_RESOURCE, resource, strlen(resource),
				rbuf)) < 0)
		return rc;
	n = jid_build(jid->node, jid->domain, resource ? rbuf : NULL);
	if (!n)
		return -ENOMEM;
	*out = n;
	return 0;
}

void
pgn_jid_free(struct pgn_jid *jid)
{
	free(jid);
}

/* Shared body of the three single-part preparation functions. */
static int
jid_prep_dup(enum jid_part part, const char *in, char **out)
{
	char buf[JID_PREP_BUF];
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!in)
		return -EINVAL;
	if (part == JID_DOMAIN)
		rc = jid_prep_domain(in, strlen(in), buf);
	else
		rc = jid_prep_part(part, in, strlen(in), buf);
	if (rc < 0)
		return rc;
	*out = strdup(buf);
	return *out ? 0 : -ENOMEM;
}

int
pgn_jid_nodeprep(const char *in, char **out)
{
	return jid_prep_dup(JID_NODE, in, out);
}

int
pgn_jid_nameprep(const char *in, char **out)
{
	return jid_prep_dup(JID_DOMAIN, in, out);
}

int
pgn_jid_resourceprep(const char *in, char **out)
{
	return jid_prep_dup(JID_RESOURCE, in, out);
}

int
pgn_jid_equal(const struct pgn_jid *a, const struct pgn_jid *b)
{
	if (a == b)
		return 1;
	if (!a || !b)
		return 0;
	/* Both are prepared, so byte equality is JID equality. */
	return strcmp(a->full, b->full) == 0;
}
