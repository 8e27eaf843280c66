/* Unit tests for src/lib/map.c: lookups on a map that never had an entry
 * (no buckets are allocated until the first insert), growth past many
 * doublings, replacement, deletion and iteration, for string and id
 * keys. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <check.h>

#include "pigeon/map.h"

/* FNV-1a, the map's hash before it was keyed: anyone could compute it. */
static uint64_t
fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static int
count_fn(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key;
	(void)id;
	(void)value;
	(*(size_t *)arg)++;
	return 0;
}

START_TEST(empty_map)
{
	struct pgn_map *m = pgn_map_new();
	size_t n = 0;

	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(pgn_map_count(m), 0);
	ck_assert_ptr_null(pgn_map_get(m, "nobody"));
	ck_assert_ptr_null(pgn_map_del(m, "nobody"));
	ck_assert_ptr_null(pgn_map_get_id(m, 42));
	ck_assert_ptr_null(pgn_map_del_id(m, 42));
	pgn_map_foreach(m, count_fn, &n);
	ck_assert_uint_eq(n, 0);
	pgn_map_free(m);
}
END_TEST

START_TEST(string_keys)
{
	struct pgn_map *m = pgn_map_new();
	static int vals[5000];
	char key[32];
	size_t n = 0;

	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "user%d@example.org", i);
		ck_assert_int_eq(pgn_map_set(m, key, &vals[i]), 0);
	}
	ck_assert_uint_eq(pgn_map_count(m), 5000);
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "user%d@example.org", i);
		ck_assert_ptr_eq(pgn_map_get(m, key), &vals[i]);
	}
	/* Replacing keeps the count. */
	ck_assert_int_eq(pgn_map_set(m, "user7@example.org", &vals[0]), 0);
	ck_assert_uint_eq(pgn_map_count(m), 5000);
	ck_assert_ptr_eq(pgn_map_get(m, "user7@example.org"), &vals[0]);
	for (int i = 0; i < 5000; i += 2) {
		snprintf(key, sizeof(key), "user%d@example.org", i);
		ck_assert_ptr_nonnull(pgn_map_del(m, key));
	}
	ck_assert_uint_eq(pgn_map_count(m), 2500);
	ck_assert_ptr_null(pgn_map_get(m, "user0@example.org"));
	ck_assert_ptr_eq(pgn_map_get(m, "user1@example.org"), &vals[1]);
	pgn_map_foreach(m, count_fn, &n);
	ck_assert_uint_eq(n, 2500);
	pgn_map_free(m);
}
END_TEST

START_TEST(id_keys)
{
	struct pgn_map *m = pgn_map_new();
	static int v;

	ck_assert_int_eq(pgn_map_set_id(m, UINT64_MAX, &v), 0);
	ck_assert_int_eq(pgn_map_set_id(m, 0, &v), 0);
	ck_assert_ptr_eq(pgn_map_get_id(m, UINT64_MAX), &v);
	ck_assert_ptr_eq(pgn_map_del_id(m, 0), &v);
	ck_assert_ptr_null(pgn_map_get_id(m, 0));
	ck_assert_uint_eq(pgn_map_count(m), 1);
	pgn_map_free(m);
	pgn_map_free(NULL);
}
END_TEST

/* Keys an attacker could compute to land in one bucket of an unkeyed
 * hash (here: equal in the low 11 bits of FNV-1a, 2048 buckets) must
 * spread out once the hash is keyed with a secret. */
START_TEST(chosen_keys_spread)
{
	enum { NKEYS = 1500 };
	struct pgn_map *m = pgn_map_new();
	static char keys[NKEYS][40];
	static int val;
	size_t found = 0;

	ck_assert_ptr_nonnull(m);
	for (uint64_t i = 0; found < NKEYS; i++) {
		snprintf(keys[found], sizeof(keys[found]), "u%llu@example.org",
			 (unsigned long long)i);
		if ((fnv1a(keys[found]) & 2047) == 0)
			found++;
	}
	for (size_t i = 0; i < NKEYS; i++)
		ck_assert_int_eq(pgn_map_set(m, keys[i], &val), 0);
	ck_assert_uint_eq(pgn_map_count(m), NKEYS);
	/* Unkeyed, every key would share one chain of 1500; a random
	 * function puts at most a handful in any of 2048 buckets. */
	ck_assert_uint_lt(pgn_map_max_chain(m), 16);
	for (size_t i = 0; i < NKEYS; i++)
		ck_assert_ptr_eq(pgn_map_get(m, keys[i]), &val);
	pgn_map_free(m);
}
END_TEST

static int freed_sum;

static void
count_free(void *value)
{
	freed_sum += *(int *)value;
	free(value);
}

/* Every value is handed to free_value once, deleted ones not at all. */
START_TEST(free_values)
{
	struct pgn_map *m = pgn_map_new();
	char key[16];

	freed_sum = 0;
	for (int i = 1; i <= 100; i++) {
		int *v = malloc(sizeof(*v));

		ck_assert_ptr_nonnull(v);
		*v = i;
		snprintf(key, sizeof(key), "k%d", i);
		ck_assert_int_eq(pgn_map_set(m, key, v), 0);
	}
	free(pgn_map_del(m, "k100"));
	pgn_map_free_values(m, count_free);
	ck_assert_int_eq(freed_sum, 99 * 100 / 2);
	pgn_map_free_values(NULL, count_free);
	ck_assert_int_eq(freed_sum, 99 * 100 / 2);
}
END_TEST

static Suite *
map_suite(void)
{
	Suite *s = suite_create("map");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, empty_map);
	tcase_add_test(tc, string_keys);
	tcase_add_test(tc, id_keys);
	tcase_add_test(tc, chosen_keys_spread);
	tcase_add_test(tc, free_values);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(map_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
