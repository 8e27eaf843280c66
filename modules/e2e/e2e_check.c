/* The "E2E required" policy's pure part: see e2e_check.h and doc/e2e.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e_check.h"

#define NS_CLIENT "jabber:client"

static int
str_eq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* An end-to-end payload of one of the namespaces the policy accepts.
 * Its content is not looked at: the server cannot tell ciphertext from
 * anything else (doc/e2e.md, "Security considerations"). */
static int
is_e2e_payload(const char *ns, const char *name)
{
	switch (name[0]) {
	case 'e':
		return strcmp(name, "encrypted") == 0 &&
		       (str_eq(ns, E2E_NS_AXOLOTL) || str_eq(ns, E2E_NS_OMEMO2));
	case 'o':
		return strcmp(name, "openpgp") == 0 && str_eq(ns, E2E_NS_OPENPGP);
	case 'x':
		return name[1] == '\0' && str_eq(ns, E2E_NS_PGP_LEGACY);
	default:
		return 0;
	}
}

enum e2e_verdict
e2e_classify(const struct pgn_xml *msg, const char *type)
{
	int body = 0;

	if (msg == NULL || !str_eq(pgn_xml_name(msg), "message"))
		return E2E_OTHER;
	/* RFC 6121 §5.2.2: chat, normal, and a type that is absent or
	 * unknown (read as normal) are what a person writes to a person. */
	if (str_eq(type, "groupchat") || str_eq(type, "headline") ||
	    str_eq(type, "error"))
		return E2E_OTHER;
	for (const struct pgn_xml *c = pgn_xml_first_child(msg); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *ns = pgn_xml_ns(c), *name = pgn_xml_name(c);

		if (is_e2e_payload(ns, name))
			return E2E_ENCRYPTED;
		if ((ns == NULL || strcmp(ns, NS_CLIENT) == 0) &&
		    strcmp(name, "body") == 0)
			body = 1;
	}
	return body ? E2E_PLAINTEXT : E2E_NO_BODY;
}

int
e2e_exempt_parse(char *const *items, size_t n, struct e2e_exempt *ex,
		 char *err, size_t errlen)
{
	ex->bare = NULL;
	ex->n = 0;
	if (n == 0)
		return 0;
	if ((ex->bare = calloc(n, sizeof(*ex->bare))) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct pgn_jid *j = NULL;
		int rc = pgn_jid_parse(items[i], &j);

		if (rc == -ENOMEM)
			return rc;
		if (rc != 0 || j->resource != NULL) {
			snprintf(err, errlen,
				 "exempt: '%s' is not a bare JID or a domain",
				 items[i]);
			pgn_jid_free(j);
			return -EINVAL;
		}
		ex->bare[ex->n] = strdup(j->bare);
		pgn_jid_free(j);
		if (ex->bare[ex->n] == NULL)
			return -ENOMEM;
		ex->n++;
	}
	return 0;
}

void
e2e_exempt_free(struct e2e_exempt *ex)
{
	for (size_t i = 0; i < ex->n; i++)
		free(ex->bare[i]);
	free(ex->bare);
	ex->bare = NULL;
	ex->n = 0;
}

/* A short list (bots, a few components) read on every plaintext
 * message only: a linear scan is cheaper than anything to maintain. */
int
e2e_exempt_match(const struct e2e_exempt *ex, const struct pgn_jid *jid)
{
	for (size_t i = 0; i < ex->n; i++) {
		const char *e = ex->bare[i];

		if (strcmp(e, jid->bare) == 0 ||
		    (strchr(e, '@') == NULL && strcmp(e, jid->domain) == 0))
			return 1;
	}
	return 0;
}
