/* Micro-benchmark of src/lib/map.c on the server's hot lookups: users by
 * bare JID (string keys) and sessions by id.  Prints nanoseconds per
 * lookup; compare two builds of map.c by linking each in turn:
 *   cc -O2 -Iinclude bench/map-bench.c src/lib/map.c -lsodium -pthread
 * Usage: map-bench [ENTRIES] [ROUNDS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pigeon/map.h"

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int
main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
	size_t rounds = argc > 2 ? strtoul(argv[2], NULL, 10) : 200;
	struct pgn_map *users = pgn_map_new(), *ids = pgn_map_new();
	char (*keys)[48] = calloc(n, sizeof(*keys));
	volatile uintptr_t sink = 0;
	double t0, str_ns, id_ns;

	if (users == NULL || ids == NULL || keys == NULL || n == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		snprintf(keys[i], sizeof(keys[i]), "user%zu@example.org", i);
		if (pgn_map_set(users, keys[i], keys[i]) != 0 ||
		    pgn_map_set_id(ids, i + 1, keys[i]) != 0)
			return 1;
	}
	t0 = now_ns();
	for (size_t r = 0; r < rounds; r++)
		for (size_t i = 0; i < n; i++)
			sink += (uintptr_t)pgn_map_get(users, keys[i]);
	str_ns = (now_ns() - t0) / (double)(rounds * n);
	t0 = now_ns();
	for (size_t r = 0; r < rounds; r++)
		for (size_t i = 0; i < n; i++)
			sink += (uintptr_t)pgn_map_get_id(ids, i + 1);
	id_ns = (now_ns() - t0) / (double)(rounds * n);
	printf("entries %zu: string key %.1f ns/lookup, id key %.1f ns/lookup\n",
	       n, str_ns, id_ns);
	pgn_map_free(users);
	pgn_map_free(ids);
	free(keys);
	return sink == 1; /* keeps the lookups from being optimised away */
}
