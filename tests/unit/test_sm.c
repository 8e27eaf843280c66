/* Unit tests for the XEP-0198 counter arithmetic of src/xmpp/sm.c: an <a h/>
 * acknowledges h - previous stanzas modulo 2^32 (§4), across the wrap,
 * and never more than were sent. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "stream.h"

START_TEST(plain_counts)
{
	unsigned n = 99;

	ck_assert_int_eq(pgn_sm_newly_acked(0, 0, 0, &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(pgn_sm_newly_acked(0, 3, 5, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(pgn_sm_newly_acked(3, 8, 5, &n), 0);
	ck_assert_uint_eq(n, 5);
}
END_TEST

START_TEST(wraps_around)
{
	unsigned n = 0;

	/* 4294967294 acked, 4 more sent: 4294967295, 0, 1, 2. */
	ck_assert_int_eq(pgn_sm_newly_acked(UINT32_MAX - 1, 2, 4, &n), 0);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(pgn_sm_newly_acked(UINT32_MAX, 0, 1, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(pgn_sm_newly_acked(UINT32_MAX - 1, UINT32_MAX, 4, &n),
			 0);
	ck_assert_uint_eq(n, 1);
}
END_TEST

START_TEST(too_high_refused)
{
	unsigned n = 7;

	ck_assert_int_eq(pgn_sm_newly_acked(0, 6, 5, &n), -ERANGE);
	ck_assert_uint_eq(n, 7);
	/* Across the wrap too. */
	ck_assert_int_eq(pgn_sm_newly_acked(UINT32_MAX, 5, 5, &n), -ERANGE);
	/* An h older than the last one reads as a huge count: refused, not
	 * taken as "nothing new". */
	ck_assert_int_eq(pgn_sm_newly_acked(10, 9, 5, &n), -ERANGE);
}
END_TEST

static Suite *
sm_suite(void)
{
	Suite *s = suite_create("sm");
	TCase *tc = tcase_create("counters");

	tcase_add_test(tc, plain_counts);
	tcase_add_test(tc, wraps_around);
	tcase_add_test(tc, too_high_refused);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(sm_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
