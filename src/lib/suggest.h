/* "Did you mean ...?" for names an admin types: config options, module
 * names, pigeonctl commands. */
#ifndef PIGEON_SUGGEST_H
#define PIGEON_SUGGEST_H

#include <stddef.h>

/* Levenshtein distance between a and b (insertions, deletions and
 * substitutions count one each); SIZE_MAX when either is longer than
 * PGN_SUGGEST_MAX_LEN (names are short; a long string is not a typo of
 * one and the table stays on the stack). */
#define PGN_SUGGEST_MAX_LEN 64
size_t pgn_suggest_distance(const char *a, const char *b);

/* The candidate closest to word, if it is close enough to be a typo of
 * it: at most 1 edit for words up to 4 characters, else 2 (or a third of
 * the length for long names).  candidates is NULL-terminated; ties go to
 * the first.  Returns a borrowed pointer into candidates, or NULL (also
 * when word is one of them: that is no typo). */
const char *pgn_suggest(const char *word, const char *const *candidates);

/* The same over a table of structs whose first member is the name
 * (const char *), stride bytes apart, ending with a NULL name. */
const char *pgn_suggest_table(const char *word, const void *table,
			      size_t stride);

#endif
