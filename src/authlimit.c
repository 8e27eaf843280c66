/* Failed-authentication tracking per peer address.  Bounded: when the
 * table is full it is cleared, which errs on the side of availability. */
#include <stdint.h>
#include <stdlib.h>

#include "authlimit.h"
#include "pigeon/map.h"
#include "stream.h"

#define MAX_TRACKED 65536
#define FORGET_MS (10 * 60 * 1000)
#define MAX_DELAY_MS 30000

struct fails {
	unsigned count;
	uint64_t last;
};

struct pgn_limits {
	struct pgn_map *addrs;
	unsigned base_ms;
};

struct pgn_limits *
pgn_limits_new(unsigned base_ms)
{
	struct pgn_limits *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->base_ms = base_ms;
	if ((l->addrs = pgn_map_new()) == NULL) {
		free(l);
		return NULL;
	}
	return l;
}

static int
free_entry(const char *key, uint64_t id, void *value, void *arg)
{
	free(value);
	return 0;
}

static void
clear(struct pgn_limits *l)
{
	pgn_map_foreach(l->addrs, free_entry, NULL);
	pgn_map_free(l->addrs);
	l->addrs = pgn_map_new();
}

void
pgn_limits_free(struct pgn_limits *l)
{
	if (l == NULL)
		return;
	pgn_map_foreach(l->addrs, free_entry, NULL);
	pgn_map_free(l->addrs);
	free(l);
}

unsigned
pgn_limits_auth_failed(struct pgn_limits *l, const char *addr)
{
	uint64_t now = pgn_now_ms();
	struct fails *f;

	if (l->addrs == NULL || l->base_ms == 0)
		return 0;
	f = pgn_map_get(l->addrs, addr);
	if (f == NULL) {
		if (pgn_map_count(l->addrs) >= MAX_TRACKED)
			clear(l);
		if (l->addrs == NULL || (f = calloc(1, sizeof(*f))) == NULL)
			return 0;
		if (pgn_map_set(l->addrs, addr, f) != 0) {
			free(f);
			return 0;
		}
	}
	if (now - f->last > FORGET_MS)
		f->count = 0;
	f->last = now;
	f->count++;
	/* A single typo costs nothing; guessing gets slower and slower. */
	if (f->count < 2)
		return 0;
	uint64_t d = (uint64_t)l->base_ms << (f->count - 2 > 15 ? 15 : f->count - 2);
	return d > MAX_DELAY_MS ? MAX_DELAY_MS : (unsigned)d;
}

void
pgn_limits_auth_ok(struct pgn_limits *l, const char *addr)
{
	if (l->addrs != NULL)
		free(pgn_map_del(l->addrs, addr));
}
