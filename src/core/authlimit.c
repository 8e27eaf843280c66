/* Authentication throttling.  Three counters per attempt: the address (one
 * attacker guessing many accounts), the account (many addresses guessing
 * one), and the pair (so that the account's owner clearing it with a
 * success leaves the address's record alone).  Bounded: when the table is
 * full, entries idle for FORGET_MS go first, then everything, which errs
 * on the side of availability. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "authlimit.h"
#include "connlimit.h"
#include "pigeon/map.h"
#include "stream.h"

#define MAX_TRACKED 65536
#define FORGET_MS (10 * 60 * 1000)
#define MAX_DELAY_MS 30000
/* Spacing answers can queue parallel attempts; past this the stream's
 * negotiation timeout ends them anyway. */
#define MAX_HOLD_MS FORGET_MS

struct fails {
	unsigned count;
	uint64_t last;      /* last failure */
	uint64_t busy_until; /* answers to this key are spaced up to here */
};

struct pgn_limits {
	struct pgn_map *keys; /* "a|addr", "u|account", "p|addr|account" */
	unsigned base_ms;
};

struct pgn_limits *
pgn_limits_new(unsigned base_ms)
{
	struct pgn_limits *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->base_ms = base_ms;
	if ((l->keys = pgn_map_new()) == NULL) {
		free(l);
		return NULL;
	}
	return l;
}

static int
free_stale(const char *key, uint64_t id, void *value, void *arg)
{
	struct pgn_limits *l = ((void **)arg)[0];
	uint64_t now = *(uint64_t *)((void **)arg)[1];
	struct fails *f = value;

	if (now - f->last > FORGET_MS && now >= f->busy_until)
		free(pgn_map_del(l->keys, key));
	return 0;
}

/* Makes room for n more keys.  Frees entries: no pointer into the map
 * may be held across it. */
static void
make_room(struct pgn_limits *l, uint64_t now, size_t n)
{
	void *arg[2] = { l, &now };

	if (pgn_map_count(l->keys) + n <= MAX_TRACKED)
		return;
	pgn_map_foreach(l->keys, free_stale, arg);
	if (pgn_map_count(l->keys) + n <= MAX_TRACKED)
		return;
	pgn_map_free_values(l->keys, free);
	l->keys = pgn_map_new(); /* NULL: throttling off until restart */
}

void
pgn_limits_free(struct pgn_limits *l)
{
	if (l == NULL)
		return;
	pgn_map_free_values(l->keys, free);
	free(l);
}

/* The wait of an attempt after n failures: a single typo costs nothing,
 * guessing gets slower and slower. */
static uint64_t
delay_after(const struct pgn_limits *l, unsigned n)
{
	if (n < 2)
		return 0;
	uint64_t d = (uint64_t)l->base_ms << (n - 2 > 15 ? 15 : n - 2);
	return d > MAX_DELAY_MS ? MAX_DELAY_MS : d;
}

unsigned
pgn_limits_auth_result(struct pgn_limits *l, const char *addr,
		       const char *account, enum pgn_auth_outcome outcome)
{
	char ip[64];
	char key[3][2200]; /* fits a 1023-byte node and domain (RFC 7622) */
	struct fails *f[3] = { NULL, NULL, NULL };
	uint64_t now = pgn_now_ms(), at = now;
	int nkeys = account != NULL ? 3 : 1;

	if (l->base_ms == 0)
		return 0;
	if (outcome == PGN_AUTH_FAILED && l->keys != NULL)
		make_room(l, now, (size_t)nkeys);
	if (l->keys == NULL)
		return 0;
	/* The same unit as connection counting: an IPv6 host has a /64. */
	pgn_connlimit_key(addr, ip, sizeof(ip));
	snprintf(key[0], sizeof(key[0]), "a|%s", ip);
	if (account != NULL) {
		snprintf(key[1], sizeof(key[1]), "u|%s", account);
		snprintf(key[2], sizeof(key[2]), "p|%s|%s", ip, account);
	}
	/* The wait comes from the failures before this attempt, whatever
	 * this attempt's outcome. */
	for (int i = 0; i < nkeys; i++) {
		f[i] = pgn_map_get(l->keys, key[i]);
		if (f[i] == NULL)
			continue;
		if (now - f[i]->last > FORGET_MS)
			f[i]->count = 0;
		uint64_t d = delay_after(l, f[i]->count);
		if (d == 0)
			continue;
		uint64_t t = (f[i]->busy_until > now ? f[i]->busy_until : now) + d;
		if (t > at)
			at = t;
	}
	if (at - now > MAX_HOLD_MS)
		at = now + MAX_HOLD_MS;
	for (int i = 0; i < nkeys; i++) {
		if (outcome == PGN_AUTH_OK && i > 0) {
			/* The account's owner: its record and its pair's go. */
			free(pgn_map_del(l->keys, key[i]));
			f[i] = NULL;
			continue;
		}
		if (outcome == PGN_AUTH_FAILED && f[i] == NULL) {
			if ((f[i] = calloc(1, sizeof(*f[i]))) == NULL)
				break;
			if (pgn_map_set(l->keys, key[i], f[i]) != 0) {
				free(f[i]);
				break;
			}
		}
		if (f[i] == NULL)
			continue;
		if (outcome == PGN_AUTH_FAILED) {
			f[i]->count++;
			f[i]->last = now;
		}
		if (at > now && at > f[i]->busy_until)
			f[i]->busy_until = at;
	}
	return (unsigned)(at - now);
}
