/* Edit distance for "did you mean" hints.  Two rows of the classic
 * dynamic programme, bounded lengths so that nothing is allocated. */
#include <stdint.h>
#include <string.h>

#include "suggest.h"

size_t
pgn_suggest_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t prev[PGN_SUGGEST_MAX_LEN + 1], cur[PGN_SUGGEST_MAX_LEN + 1];

	if (la > PGN_SUGGEST_MAX_LEN || lb > PGN_SUGGEST_MAX_LEN)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			size_t m = del < ins ? del : ins;

			cur[j] = m < sub ? m : sub;
		}
		memcpy(prev, cur, (lb + 1) * sizeof(prev[0]));
	}
	return prev[lb];
}

/* How many edits still read as a typo of a word of len characters: one
 * in a short word (else "max" would suggest "min"), two in most names,
 * a third of a long one. */
static size_t
max_edits(size_t len)
{
	if (len <= 4)
		return 1;
	if (len <= 8)
		return 2;
	return len / 3;
}

const char *
pgn_suggest_table(const char *word, const void *table, size_t stride)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX;

	if (word == NULL || table == NULL)
		return NULL;
	for (const char *p = table;; p += stride) {
		const char *name;
		size_t d;

		memcpy(&name, p, sizeof(name));
		if (name == NULL)
			break;
		d = pgn_suggest_distance(word, name);
		if (d < best_d) {
			best_d = d;
			best = name;
		}
	}
	if (best == NULL || best_d == 0 || best_d > max_edits(strlen(word)))
		return NULL;
	return best;
}

const char *
pgn_suggest(const char *word, const char *const *candidates)
{
	return pgn_suggest_table(word, candidates, sizeof(*candidates));
}
