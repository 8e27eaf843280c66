/* Chained hash map.  Grows by doubling when the load passes 1.  The
 * buckets are allocated on the first insert: many maps (a session's
 * directed presences, a roster's pending requests) stay empty for life,
 * and an idle session's memory is counted in bytes (doc/performance.md).
 *
 * String keys are mostly chosen by clients (JIDs, stanza ids), so they are
 * hashed with SipHash (libsodium's crypto_shorthash) under a key drawn at
 * random once per process: without the key nobody can compute a set of
 * names that fall into one bucket and turn lookups into list walks. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

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

static unsigned char hash_key[crypto_shorthash_KEYBYTES];
static uint64_t id_key;
static pthread_once_t hash_key_once = PTHREAD_ONCE_INIT;

static void
hash_key_init(void)
{
	/* sodium_init() fails only when no entropy source can be opened;
	 * randombytes_buf() would then abort, which is what we want: a
	 * predictable key is the weakness this replaces. */
	if (sodium_init() < 0)
		abort();
	randombytes_buf(hash_key, sizeof(hash_key));
	memcpy(&id_key, hash_key, sizeof(id_key));
}

static uint64_t
hash_str(const char *s, size_t len)
{
	unsigned char out[crypto_shorthash_BYTES];
	uint64_t h;

	crypto_shorthash(out, (const unsigned char *)s, len, hash_key);
	memcpy(&h, out, sizeof(h));
	return h;
}

/* Numeric keys are ids the server assigns (session and connection
 * counters), never chosen by a client: a mixer (MurmurHash3's finaliser)
 * is enough, and the key only keeps the bucket order unpredictable. */
static uint64_t
hash_id(uint64_t x)
{
	x ^= id_key;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

struct pgn_map *
pgn_map_new(void)
{
	pthread_once(&hash_key_once, hash_key_init);
	return calloc(1, sizeof(struct pgn_map));
}

void
pgn_map_free_values(struct pgn_map *m, void (*free_value)(void *value))
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i];
		while (e != NULL) {
			struct entry *n = e->next;
			if (free_value != NULL)
				free_value(e->value);
			free(e);
			e = n;
		}
	}
	free(m->buckets);
	free(m);
}

void
pgn_map_free(struct pgn_map *m)
{
	pgn_map_free_values(m, NULL);
}

size_t
pgn_map_count(const struct pgn_map *m)
{
	return m->count;
}

size_t
pgn_map_max_chain(const struct pgn_map *m)
{
	size_t max = 0;

	for (size_t i = 0; i < m->nbuckets; i++) {
		size_t n = 0;

		for (const struct entry *e = m->buckets[i]; e != NULL;
		     e = e->next)
			n++;
		if (n > max)
			max = n;
	}
	return max;
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
map_set(struct pgn_map *m, uint64_t h, const char *key, size_t klen,
	uint64_t id, void *value)
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
	struct entry *e = *find_slot(m, hash_str(key, strlen(key)), key, 0);
	return e != NULL ? e->value : NULL;
}

int
pgn_map_set(struct pgn_map *m, const char *key, void *value)
{
	size_t len = strlen(key);

	return map_set(m, hash_str(key, len), key, len, 0, value);
}

void *
pgn_map_del(struct pgn_map *m, const char *key)
{
	return map_del(m, hash_str(key, strlen(key)), key, 0);
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
	return map_set(m, hash_id(key), NULL, 0, key, value);
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
