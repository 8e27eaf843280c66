/* JIDs (RFC 7622): parsed and prepared once, immutable afterwards.
 * Preparation uses libidn stringprep profiles (Nodeprep, Nameprep,
 * Resourceprep); each part is limited to 1023 bytes after preparation. */
#ifndef PIGEON_JID_H
#define PIGEON_JID_H

#include <stddef.h>

struct pgn_jid {
	const char *node;     /* NULL if absent */
	const char *domain;   /* never NULL */
	const char *resource; /* NULL if absent */
	const char *full;     /* node@domain/resource as prepared */
	const char *bare;     /* node@domain or domain */
};

/* Parses and prepares s.  On success stores a new JID (caller frees with
 * pgn_jid_free) and returns 0; returns -EINVAL if s is not a valid JID
 * (the caller answers jid-malformed) or -ENOMEM. */
int pgn_jid_parse(const char *s, struct pgn_jid **out);
/* Builds and prepares from parts (node, resource may be NULL). */
int pgn_jid_make(const char *node, const char *domain, const char *resource,
		 struct pgn_jid **out);
/* Copy of the bare part (resource dropped); caller frees. */
struct pgn_jid *pgn_jid_bare_copy(const struct pgn_jid *jid);
struct pgn_jid *pgn_jid_copy(const struct pgn_jid *jid);
/* Copy with another resource (NULL = bare); caller frees. */
int pgn_jid_with_resource(const struct pgn_jid *jid, const char *resource,
			  struct pgn_jid **out);
void pgn_jid_free(struct pgn_jid *jid);
/* Prepares one part alone; *out is malloc'd.  0, -EINVAL or -ENOMEM. */
int pgn_jid_nodeprep(const char *in, char **out);
int pgn_jid_nameprep(const char *in, char **out);
int pgn_jid_resourceprep(const char *in, char **out);
/* 1 if equal full JIDs, 0 otherwise. */
int pgn_jid_equal(const struct pgn_jid *a, const struct pgn_jid *b);

#endif
