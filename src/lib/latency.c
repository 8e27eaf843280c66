/* Log-linear latency histograms (see latency.h). */
#include <string.h>
#include <time.h>

#include "latency.h"

uint64_t
pgn_lat_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

unsigned
pgn_lat_bucket(uint64_t v)
{
	unsigned e;

	if (v < PGN_LAT_SUB)
		return (unsigned)v;
	/* e: position of the top bit; the PGN_LAT_SUB_BITS bits below it
	 * pick the sub-bucket. */
	e = 63u - (unsigned)__builtin_clzll(v);
	return (e - PGN_LAT_SUB_BITS + 1) * PGN_LAT_SUB +
	       (unsigned)((v >> (e - PGN_LAT_SUB_BITS)) & (PGN_LAT_SUB - 1));
}

uint64_t
pgn_lat_bucket_low(unsigned i)
{
	unsigned e, sub;

	if (i < PGN_LAT_SUB)
		return i;
	e = i / PGN_LAT_SUB + PGN_LAT_SUB_BITS - 1;
	sub = i % PGN_LAT_SUB;
	return (uint64_t)(PGN_LAT_SUB + sub) << (e - PGN_LAT_SUB_BITS);
}

/* Width of bucket i (1 for the exact ones). */
static uint64_t
bucket_width(unsigned i)
{
	if (i < 2 * PGN_LAT_SUB)
		return 1;
	return (uint64_t)1 << (i / PGN_LAT_SUB - 1);
}

void
pgn_lat_hist_add(struct pgn_lat_hist *h, uint64_t ns)
{
	if (h->count == 0 || ns < h->min)
		h->min = ns;
	h->count++;
	h->sum += ns;
	if (ns > h->max)
		h->max = ns;
	h->b[pgn_lat_bucket(ns)]++;
}

uint64_t
pgn_lat_hist_pct(const struct pgn_lat_hist *h, double q)
{
	uint64_t want, seen = 0;

	if (h->count == 0)
		return 0;
	/* The rank, rounded up: p99 of 100 values is the 99th. */
	want = (uint64_t)(q * (double)h->count);
	if ((double)want < q * (double)h->count)
		want++;
	if (want == 0)
		want = 1;
	if (want > h->count)
		want = h->count;
	for (unsigned i = 0; i < PGN_LAT_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			/* The bucket's middle may lie outside what was seen. */
			uint64_t v = pgn_lat_bucket_low(i) + bucket_width(i) / 2;
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

void
pgn_lat_hist_reset(struct pgn_lat_hist *h)
{
	memset(h, 0, sizeof(*h));
}
