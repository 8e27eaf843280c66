/* Unit tests for src/lib/latency.c: the log-linear buckets (every value falls
 * in the bucket whose range holds it, with less than 1/64 relative width),
 * the percentile ranks (rounded up, clamped to the largest value seen) and
 * the reset. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "latency.h"

static struct pgn_lat_hist *
hist_new(void)
{
	struct pgn_lat_hist *h = calloc(1, sizeof(*h));

	ck_assert_ptr_nonnull(h);
	return h;
}

/* |got - want| <= want / 64: the bucket width bound. */
static void
assert_near(uint64_t got, uint64_t want)
{
	uint64_t d = got > want ? got - want : want - got;

	ck_assert_msg(d * PGN_LAT_SUB <= want, "got %llu, want %llu",
		      (unsigned long long)got, (unsigned long long)want);
}

START_TEST(buckets_cover_values)
{
	uint64_t v;

	/* Small values are exact. */
	for (v = 0; v < 2 * PGN_LAT_SUB; v++) {
		ck_assert_uint_eq(pgn_lat_bucket(v), v);
		ck_assert_uint_eq(pgn_lat_bucket_low((unsigned)v), v);
	}
	/* Above: v lies in [low(i), low(i + 1)) and the bucket is narrower
	 * than 1/64 of its values; indexes never decrease. */
	unsigned prev = 0;
	for (v = 1; v < ((uint64_t)1 << 62); v += v / 7 + 1) {
		unsigned i = pgn_lat_bucket(v);

		ck_assert_uint_lt(i, PGN_LAT_BUCKETS - 1);
		ck_assert_uint_ge(i, prev);
		prev = i;
		ck_assert_uint_le(pgn_lat_bucket_low(i), v);
		ck_assert_uint_gt(pgn_lat_bucket_low(i + 1), v);
		if (v >= PGN_LAT_SUB)
			ck_assert_uint_le((pgn_lat_bucket_low(i + 1) -
					   pgn_lat_bucket_low(i)) *
						  PGN_LAT_SUB,
					  pgn_lat_bucket_low(i));
	}
	/* The largest value has a bucket too. */
	ck_assert_uint_eq(pgn_lat_bucket(UINT64_MAX), PGN_LAT_BUCKETS - 1);
}
END_TEST

START_TEST(empty_is_zero)
{
	struct pgn_lat_hist *h = hist_new();

	ck_assert_uint_eq(pgn_lat_hist_pct(h, 0.5), 0);
	ck_assert_uint_eq(pgn_lat_hist_pct(h, 0.999), 0);
	free(h);
}
END_TEST

START_TEST(uniform_percentiles)
{
	struct pgn_lat_hist *h = hist_new();

	/* 1..1000 µs, in ns, in a scrambled order. */
	for (uint64_t i = 0; i < 1000; i++)
		pgn_lat_hist_add(h, ((i * 379) % 1000 + 1) * 1000);
	ck_assert_uint_eq(h->count, 1000);
	ck_assert_uint_eq(h->max, 1000000);
	ck_assert_uint_eq(h->sum, 500500ull * 1000);
	assert_near(pgn_lat_hist_pct(h, 0.50), 500000);
	assert_near(pgn_lat_hist_pct(h, 0.99), 990000);
	assert_near(pgn_lat_hist_pct(h, 0.999), 999000);
	ck_assert_uint_eq(pgn_lat_hist_pct(h, 1.0), 1000000);
	assert_near(pgn_lat_hist_pct(h, 0.001), 1000);
	free(h);
}
END_TEST

START_TEST(tail_rank_rounds_up)
{
	struct pgn_lat_hist *h = hist_new();

	/* 990 fast and 10 slow: the 990th value (p99) is still fast... */
	for (int i = 0; i < 990; i++)
		pgn_lat_hist_add(h, 10000);
	for (int i = 0; i < 10; i++)
		pgn_lat_hist_add(h, 5000000);
	assert_near(pgn_lat_hist_pct(h, 0.99), 10000);
	assert_near(pgn_lat_hist_pct(h, 0.991), 5000000);
	assert_near(pgn_lat_hist_pct(h, 0.999), 5000000);
	/* ...one more slow one and p99 (the 991st of 1001 ranks up to
	 * 991) is slow. */
	pgn_lat_hist_add(h, 5000000);
	assert_near(pgn_lat_hist_pct(h, 0.99), 5000000);
	free(h);
}
END_TEST

START_TEST(clamped_to_max)
{
	struct pgn_lat_hist *h = hist_new();

	/* The middle of the bucket would be above the only value. */
	pgn_lat_hist_add(h, 1000003);
	ck_assert_uint_eq(pgn_lat_hist_pct(h, 0.5), 1000003);
	ck_assert_uint_eq(pgn_lat_hist_pct(h, 0.999), 1000003);
	pgn_lat_hist_reset(h);
	ck_assert_uint_eq(h->count, 0);
	ck_assert_uint_eq(h->max, 0);
	ck_assert_uint_eq(pgn_lat_hist_pct(h, 0.5), 0);
	pgn_lat_hist_add(h, 7);
	ck_assert_uint_eq(pgn_lat_hist_pct(h, 0.5), 7);
	free(h);
}
END_TEST

START_TEST(clamped_to_min)
{
	struct pgn_lat_hist *h = hist_new();
	/* The top value of a wide bucket: its middle is below it. */
	uint64_t top = pgn_lat_bucket_low(pgn_lat_bucket(1000000) + 1) - 1;

	pgn_lat_hist_add(h, top);
	pgn_lat_hist_add(h, top);
	pgn_lat_hist_add(h, 5000000);
	ck_assert_uint_eq(h->min, top);
	ck_assert_uint_eq(pgn_lat_hist_pct(h, 0.5), top);
	pgn_lat_hist_reset(h);
	pgn_lat_hist_add(h, 9);
	ck_assert_uint_eq(h->min, 9);
	free(h);
}
END_TEST

START_TEST(clock_moves_forward)
{
	uint64_t a = pgn_lat_now_ns(), b = pgn_lat_now_ns();

	ck_assert_uint_gt(a, 0);
	ck_assert_uint_ge(b, a);
}
END_TEST

static Suite *
latency_suite(void)
{
	Suite *s = suite_create("latency");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, buckets_cover_values);
	tcase_add_test(tc, empty_is_zero);
	tcase_add_test(tc, uniform_percentiles);
	tcase_add_test(tc, tail_rank_rounds_up);
	tcase_add_test(tc, clamped_to_max);
	tcase_add_test(tc, clamped_to_min);
	tcase_add_test(tc, clock_moves_forward);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(latency_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
