/* A small chained hash map with string or 64-bit keys.  Keys of string
 * maps are copied; values are borrowed (the map never frees them). */
#ifndef PIGEON_MAP_H
#define PIGEON_MAP_H

#include <stddef.h>
#include <stdint.h>

struct pgn_map;

struct pgn_map *pgn_map_new(void);
void pgn_map_free(struct pgn_map *m);
/* Frees the map and, first, each value with free_value (for a map that
 * owns its values; free_value must not touch the map).  NULL is a no-op. */
void pgn_map_free_values(struct pgn_map *m, void (*free_value)(void *value));
size_t pgn_map_count(const struct pgn_map *m);

void *pgn_map_get(const struct pgn_map *m, const char *key);
/* Inserts or replaces.  0 or -ENOMEM. */
int pgn_map_set(struct pgn_map *m, const char *key, void *value);
/* Removes and returns the value, or NULL. */
void *pgn_map_del(struct pgn_map *m, const char *key);

void *pgn_map_get_id(const struct pgn_map *m, uint64_t key);
int pgn_map_set_id(struct pgn_map *m, uint64_t key, void *value);
void *pgn_map_del_id(struct pgn_map *m, uint64_t key);

/* Length of the longest bucket chain: how evenly the keys spread (for
 * tests and diagnostics; walks every bucket). */
size_t pgn_map_max_chain(const struct pgn_map *m);

/* Iteration that tolerates deleting the current entry. */
typedef int (*pgn_map_iter_fn)(const char *key, uint64_t id, void *value,
			       void *arg);
/* Stops early when fn returns non-zero. */
void pgn_map_foreach(const struct pgn_map *m, pgn_map_iter_fn fn, void *arg);

#endif
