/* Chained hash map.  Grows by doubling when the load passes 1.  The
 * buckets are allocated on the first insert: many maps (a session's
 * directed presences, a roster's pending requests) stay empty for life,
 * and an idle session's memory is counted in bytes (doc/performance.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/map.h"

struct entry {
	struct entry *next;
	uint64_t hash;
	uint64_t id;
	void *value;
	char key[]; /* "" for id maps */
};

struct pgn_map {
	struct entry **buckets;
	size_t nbuckets;
	size_t count;
};

static uint64_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t
hash_id(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

struct pgn_map *
pgn_map_new(void)
{
	return calloc(1, sizeof(struct pgn_map));
}

void
pgn_map_free(struct pgn_map *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i];
		while (e != NULL) {
			struct entry *n = e->next;
			free(e);
			e = n;
		}
	}
	free(m->buckets);
	free(m);
}

size_t
pgn_map_count(const struct pgn_map *m)
{
	return m->count;
}

static struct entry **
find_slot(const struct pgn_map *m, uint64_t h, const char *key, uint64_t id)
{
	struct entry **pp = &m->buckets[h & (m->nbuckets - 1)];
	for (; *pp != NULL; pp = &(*pp)->next) {
		struct entry *e = *pp;
		if (e->hash != h)
			continue;
		if (key != NULL ? strcmp(e->key, key) == 0 : e->id == id)
			return pp;
	}
	return pp;
}

static void
grow(struct pgn_map *m)
{
	size_t n = m->nbuckets * 2;
	struct entry **b = calloc(n, sizeof(*b));
	if (b == NULL)
		return; /* stay at the current size; still correct */
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i];
		while (e != NULL) {
			struct entry *next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

static int
map_set(struct pgn_map *m, uint64_t h, const char *key, uint64_t id,
	void *value)
{
	if (m->nbuckets == 0) {
		if ((m->buckets = calloc(16, sizeof(*m->buckets))) == NULL)
			return -ENOMEM;
		m->nbuckets = 16;
	}
	struct entry **pp = find_slot(m, h, key, id);
	if (*pp != NULL) {
		(*pp)->value = value;
		return 0;
	}
	size_t klen = key != NULL ? strlen(key) : 0;
	struct entry *e = malloc(sizeof(*e) + klen + 1);
	if (e == NULL)
		return -ENOMEM;
	e->hash = h;
	e->id = id;
	e->value = value;
	memcpy(e->key, key != NULL ? key : "", klen + 1);
	e->next = NULL;
	*pp = e;
	if (++m->count > m->nbuckets)
		grow(m);
	return 0;
}

static void *
map_del(struct pgn_map *m, uint64_t h, const char *key, uint64_t id)
{
	if (m->count == 0)
		return NULL;
	struct entry **pp = find_slot(m, h, key, id);
	struct entry *e = *pp;
	if (e == NULL)
		return NULL;
	void *v = e->value;
	*pp = e->next;
	free(e);
	m->count--;
	return v;
}

void *
pgn_map_get(const struct pgn_map *m, const char *key)
{
	if (m->count == 0)
		return NULL;
	struct entry *e = *find_slot(m, hash_str(key), key, 0);
	return e != NULL ? e->value : NULL;
}

int
pgn_map_set(struct pgn_map *m, const char *key, void *value)
{
	return map_set(m, hash_str(key), key, 0, value);
}

void *
pgn_map_del(struct pgn_map *m, const char *key)
{
	return map_del(m, hash_str(key), key, 0);
}

void *
pgn_map_get_id(const struct pgn_map *m, uint64_t key)
{
	if (m->count == 0)
		return NULL;
	struct entry *e = *find_slot(m, hash_id(key), NULL, key);
	return e != NULL ? e->value : NULL;
}

int
pgn_map_set_id(struct pgn_map *m, uint64_t key, void *value)
{
	return map_set(m, hash_id(key), NULL, key, value);
}

void *
pgn_map_del_id(struct pgn_map *m, uint64_t key)
{
	return map_del(m, hash_id(key), NULL, key);
}

void
pgn_map_foreach(const struct pgn_map *m, pgn_map_iter_fn fn, void *arg)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i];
		while (e != NULL) {
			struct entry *next = e->next;
			if (fn(e->key, e->id, e->value, arg) != 0)
				return;
			e = next;
		}
	}
}
