/* libFuzzer target for JID parsing and preparation (src/lib/jid.c).
 *
 * The input is one NUL-terminated string.  A valid JID must be a fixed
 * point: parsing its prepared full form again gives the same full and
 * bare forms (stringprep profiles are idempotent, and the parts must not
 * be re-split differently, e.g. by a '@' or '/' that preparation
 * introduced). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/jid.h"

static void
check_same(const char *what, const char *a, const char *b)
{
	if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0)) {
		fprintf(stderr, "jid %s differs: '%s' vs '%s'\n", what,
			a ? a : "(null)", b ? b : "(null)");
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pgn_jid *j = NULL, *j2 = NULL, *b = NULL, *c = NULL;
	char *s;
	int rc;

	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	rc = pgn_jid_parse(s, &j);
	if (rc < 0) {
		if (j != NULL)
			abort();
		free(s);
		return 0;
	}
	if (!j || !j->domain || !j->full || !j->bare)
		abort();

	rc = pgn_jid_parse(j->full, &j2);
	if (rc < 0) {
		fprintf(stderr, "jid: '%s' parsed, its full form '%s' does not (%d)\n",
			s, j->full, rc);
		abort();
	}
	check_same("full", j->full, j2->full);
	check_same("bare", j->bare, j2->bare);
	check_same("node", j->node, j2->node);
	check_same("domain", j->domain, j2->domain);
	check_same("resource", j->resource, j2->resource);
	if (!pgn_jid_equal(j, j2))
		abort();

	/* The derived forms must agree with the parsed one. */
	b = pgn_jid_bare_copy(j);
	if (b) {
		check_same("bare copy", b->full, j->bare);
		pgn_jid_free(b);
	}
	c = pgn_jid_copy(j);
	if (c) {
		check_same("copy", c->full, j->full);
		pgn_jid_free(c);
	}
	if (pgn_jid_make(j->node, j->domain, j->resource, &c) == 0) {
		check_same("make", c->full, j->full);
		pgn_jid_free(c);
	}
	pgn_jid_free(j2);
	pgn_jid_free(j);
	free(s);
	return 0;
}
