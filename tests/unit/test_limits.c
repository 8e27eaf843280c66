/* Unit tests for src/net/connlimit.c (connections per address and in all) and
 * src/core/authlimit.c (authentication throttling per address, account and
 * pair).  The calls of one test run within a few milliseconds, which the
 * delays (hundreds of ms) dwarf. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>

#include <check.h>

#include "authlimit.h"
#include "connlimit.h"

START_TEST(conn_per_ip_and_total)
{
	struct pgn_connlimit *c = pgn_connlimit_new(2, 4);

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pgn_connlimit_admit(c, "192.0.2.1"), 0);
	ck_assert_int_eq(pgn_connlimit_admit(c, "192.0.2.1"), 0);
	ck_assert_int_eq(pgn_connlimit_admit(c, "192.0.2.1"), -EPERM);
	ck_assert_int_eq(pgn_connlimit_admit(c, "192.0.2.2"), 0);
	ck_assert_int_eq(pgn_connlimit_admit(c, "192.0.2.3"), 0);
	ck_assert_uint_eq(pgn_connlimit_count(c), 4);
	ck_assert_int_eq(pgn_connlimit_admit(c, "192.0.2.4"), -EMFILE);
	pgn_connlimit_release(c, "192.0.2.1");
	ck_assert_uint_eq(pgn_connlimit_count(c), 3);
	ck_assert_int_eq(pgn_connlimit_admit(c, "192.0.2.1"), 0);
	/* Giving back what was never taken changes nothing. */
	pgn_connlimit_release(c, "198.51.100.9");
	ck_assert_uint_eq(pgn_connlimit_count(c), 4);
	pgn_connlimit_free(c);
}
END_TEST

START_TEST(conn_ipv6_by_64)
{
	struct pgn_connlimit *c = pgn_connlimit_new(2, 0);
	char key[64];

	pgn_connlimit_key("2001:db8:1:2:aaaa::1", key, sizeof(key));
	ck_assert_str_eq(key, "2001:db8:1:2::/64");
	pgn_connlimit_key("::ffff:192.0.2.7", key, sizeof(key));
	ck_assert_str_eq(key, "192.0.2.7");
	ck_assert_int_eq(pgn_connlimit_admit(c, "2001:db8:1:2::1"), 0);
	ck_assert_int_eq(pgn_connlimit_admit(c, "2001:db8:1:2::2"), 0);
	ck_assert_int_eq(pgn_connlimit_admit(c, "2001:db8:1:2:ffff::3"), -EPERM);
	ck_assert_int_eq(pgn_connlimit_admit(c, "2001:db8:1:3::1"), 0);
	pgn_connlimit_free(c);
}
END_TEST

START_TEST(conn_unlimited)
{
	struct pgn_connlimit *c = pgn_connlimit_new(0, 0);

	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(pgn_connlimit_admit(c, "127.0.0.1"), 0);
	for (int i = 0; i < 1000; i++)
		pgn_connlimit_release(c, "127.0.0.1");
	ck_assert_uint_eq(pgn_connlimit_count(c), 0);
	pgn_connlimit_free(c);
}
END_TEST

START_TEST(auth_success_waits_like_failure)
{
	struct pgn_limits *a = pgn_limits_new(1000);
	struct pgn_limits *b = pgn_limits_new(1000);

	for (int i = 0; i < 2; i++) {
		ck_assert_uint_eq(pgn_limits_auth_result(a, "192.0.2.1", "u@h",
							 PGN_AUTH_FAILED), 0);
		ck_assert_uint_eq(pgn_limits_auth_result(b, "192.0.2.1", "u@h",
							 PGN_AUTH_FAILED), 0);
	}
	unsigned ok = pgn_limits_auth_result(a, "192.0.2.1", "u@h", PGN_AUTH_OK);
	unsigned bad = pgn_limits_auth_result(b, "192.0.2.1", "u@h",
					      PGN_AUTH_FAILED);
	ck_assert_uint_eq(ok, 1000);
	ck_assert_uint_eq(bad, 1000);
	pgn_limits_free(a);
	pgn_limits_free(b);
}
END_TEST

START_TEST(auth_success_clears_its_account_only)
{
	struct pgn_limits *l = pgn_limits_new(100);

	for (int i = 0; i < 3; i++)
		pgn_limits_auth_result(l, "192.0.2.1", "victim@h",
				       PGN_AUTH_FAILED);
	/* Logging in to one's own account from there ... */
	ck_assert_uint_gt(pgn_limits_auth_result(l, "192.0.2.1", "own@h",
						 PGN_AUTH_OK), 0);
	/* ... neither clears the address ... */
	ck_assert_uint_gt(pgn_limits_auth_result(l, "192.0.2.1", "other@h",
						 PGN_AUTH_ERROR), 0);
	/* ... nor the victim, throttled from any address ... */
	ck_assert_uint_gt(pgn_limits_auth_result(l, "198.51.100.1", "victim@h",
						 PGN_AUTH_ERROR), 0);
	/* ... while the owner's success clears the account. */
	pgn_limits_auth_result(l, "192.0.2.1", "victim@h", PGN_AUTH_OK);
	ck_assert_uint_eq(pgn_limits_auth_result(l, "198.51.100.2", "victim@h",
						 PGN_AUTH_OK), 0);
	/* No account named: the address alone. */
	ck_assert_uint_gt(pgn_limits_auth_result(l, "192.0.2.1", NULL,
						 PGN_AUTH_ERROR), 0);
	ck_assert_uint_eq(pgn_limits_auth_result(l, "203.0.113.1", NULL,
						 PGN_AUTH_FAILED), 0);
	pgn_limits_free(l);
}
END_TEST

START_TEST(auth_parallel_guesses_are_spaced)
{
	struct pgn_limits *l = pgn_limits_new(200);
	unsigned d1, d2, d3;

	for (int i = 0; i < 2; i++)
		pgn_limits_auth_result(l, "192.0.2.1", "u@h", PGN_AUTH_FAILED);
	/* Three answers due at once: each waits for the one before. */
	d1 = pgn_limits_auth_result(l, "192.0.2.1", "u@h", PGN_AUTH_FAILED);
	d2 = pgn_limits_auth_result(l, "192.0.2.1", "u@h", PGN_AUTH_FAILED);
	d3 = pgn_limits_auth_result(l, "192.0.2.1", "u@h", PGN_AUTH_FAILED);
	ck_assert_uint_ge(d1, 190);
	ck_assert_uint_ge(d2, d1 + 390);
	ck_assert_uint_ge(d3, d2 + 790);
	pgn_limits_free(l);
}
END_TEST

START_TEST(auth_off)
{
	struct pgn_limits *l = pgn_limits_new(0);

	for (int i = 0; i < 10; i++)
		ck_assert_uint_eq(pgn_limits_auth_result(l, "192.0.2.1", "u@h",
							 PGN_AUTH_FAILED), 0);
	pgn_limits_free(l);
}
END_TEST

static Suite *
limits_suite(void)
{
	Suite *s = suite_create("limits");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, conn_per_ip_and_total);
	tcase_add_test(tc, conn_ipv6_by_64);
	tcase_add_test(tc, conn_unlimited);
	tcase_add_test(tc, auth_success_waits_like_failure);
	tcase_add_test(tc, auth_success_clears_its_account_only);
	tcase_add_test(tc, auth_parallel_guesses_are_spaced);
	tcase_add_test(tc, auth_off);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(limits_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
