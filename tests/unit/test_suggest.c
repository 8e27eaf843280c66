/* The "did you mean" helper (src/lib/suggest.c). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "suggest.h"

START_TEST(distance_basics)
{
	ck_assert_uint_eq(pgn_suggest_distance("", ""), 0);
	ck_assert_uint_eq(pgn_suggest_distance("abc", ""), 3);
	ck_assert_uint_eq(pgn_suggest_distance("", "abc"), 3);
	ck_assert_uint_eq(pgn_suggest_distance("kitten", "sitting"), 3);
	ck_assert_uint_eq(pgn_suggest_distance("max_items", "max_items"), 0);
	/* One deletion, one insertion, one substitution, a swap (two). */
	ck_assert_uint_eq(pgn_suggest_distance("max_iems", "max_items"), 1);
	ck_assert_uint_eq(pgn_suggest_distance("max_itemss", "max_items"), 1);
	ck_assert_uint_eq(pgn_suggest_distance("max_itens", "max_items"), 1);
	ck_assert_uint_eq(pgn_suggest_distance("max_itmes", "max_items"), 2);
	/* Symmetric. */
	ck_assert_uint_eq(pgn_suggest_distance("quota", "qouta"),
			  pgn_suggest_distance("qouta", "quota"));
}
END_TEST

START_TEST(distance_too_long)
{
	char big[PGN_SUGGEST_MAX_LEN + 2];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_uint_eq(pgn_suggest_distance(big, "a"), SIZE_MAX);
	ck_assert_uint_eq(pgn_suggest_distance("a", big), SIZE_MAX);
	/* Exactly the limit still counts. */
	big[PGN_SUGGEST_MAX_LEN] = '\0';
	ck_assert_uint_eq(pgn_suggest_distance(big, ""), PGN_SUGGEST_MAX_LEN);
	ck_assert_ptr_null(pgn_suggest(big, (const char *const[]){ "a", NULL }));
}
END_TEST

static const char *const options[] = { "max_page", "max_age_days",
				       "max_messages", "max_bytes",
				       "quota_policy", NULL };

START_TEST(suggest_picks_closest)
{
	ck_assert_str_eq(pgn_suggest("max_pages", options), "max_page");
	ck_assert_str_eq(pgn_suggest("max_mesages", options), "max_messages");
	ck_assert_str_eq(pgn_suggest("quota_polciy", options), "quota_policy");
	ck_assert_str_eq(pgn_suggest("max_byte", options), "max_bytes");
}
END_TEST

START_TEST(suggest_none_when_far_or_exact)
{
	ck_assert_ptr_null(pgn_suggest("retention", options));
	ck_assert_ptr_null(pgn_suggest("", options));
	/* An exact name is no typo. */
	ck_assert_ptr_null(pgn_suggest("max_page", options));
	/* Short words allow one edit only: "min" is not "max". */
	ck_assert_ptr_null(
		pgn_suggest("min", (const char *const[]){ "max", NULL }));
	ck_assert_str_eq(
		pgn_suggest("mx", (const char *const[]){ "max", NULL }), "max");
	ck_assert_ptr_null(pgn_suggest("x", (const char *const[]){ NULL }));
	ck_assert_ptr_null(pgn_suggest(NULL, options));
	ck_assert_ptr_null(pgn_suggest("x", NULL));
}
END_TEST

struct named {
	const char *name;
	int other;
};

START_TEST(suggest_over_table)
{
	static const struct named t[] = { { "node", 1 }, { "cache_size", 2 },
					  { NULL, 0 } };

	ck_assert_str_eq(pgn_suggest_table("cache_sise", t, sizeof(t[0])),
			 "cache_size");
	ck_assert_str_eq(pgn_suggest_table("nod", t, sizeof(t[0])), "node");
	ck_assert_ptr_null(pgn_suggest_table("ttl", t, sizeof(t[0])));
	/* Ties go to the first. */
	ck_assert_str_eq(
		pgn_suggest("ab", (const char *const[]){ "aa", "bb", NULL }),
		"aa");
}
END_TEST

static Suite *
suggest_suite(void)
{
	Suite *s = suite_create("suggest");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, distance_basics);
	tcase_add_test(tc, distance_too_long);
	tcase_add_test(tc, suggest_picks_closest);
	tcase_add_test(tc, suggest_none_when_far_or_exact);
	tcase_add_test(tc, suggest_over_table);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(suggest_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
