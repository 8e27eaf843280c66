/* Delivery latency inside the server: how long a stanza spends between the
 * read that brought it in and the moment its bytes reach the recipient's
 * output buffer ("queued") or the recipient's socket ("flushed").  A
 * stanza held on the way (the archive commits first, XEP-0198 durable
 * before acknowledged) keeps its read time in the hold, so the wait for
 * the store is counted too.
 *
 * The histogram is log-linear over nanoseconds: values below
 * PGN_LAT_SUB are exact, above that every power of two is cut into
 * PGN_LAT_SUB equal buckets, so a percentile is off by less than
 * 1/PGN_LAT_SUB (1.6 %).  It is preallocated: recording is a few
 * instructions, no allocation, no sort (doc/performance.md, "Latency
 * tail").  The load tool (bench/pigeon-load) measures with the same
 * histogram, so both sides' figures have the same resolution. */
#ifndef PIGEON_LATENCY_H
#define PIGEON_LATENCY_H

#include <stdint.h>

#define PGN_LAT_SUB_BITS 6
#define PGN_LAT_SUB (1u << PGN_LAT_SUB_BITS)
#define PGN_LAT_BUCKETS ((64 - PGN_LAT_SUB_BITS + 1) * PGN_LAT_SUB)

struct pgn_lat_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;   /* meaningful once count > 0 */
	uint64_t max;
	uint64_t b[PGN_LAT_BUCKETS];
};

/* The two histograms of the server (struct pgn_server owns one). */
struct pgn_latency {
	struct pgn_lat_hist queued;  /* read -> recipient's output buffer */
	struct pgn_lat_hist flushed; /* read -> written to the socket */
};

/* CLOCK_MONOTONIC in nanoseconds: precise, and a vDSO call where the
 * clock source allows it (tsc, kvm-clock). */
uint64_t pgn_lat_now_ns(void);

/* Bucket of value v, and the smallest value of bucket i (exposed for the
 * unit test). */
unsigned pgn_lat_bucket(uint64_t v);
uint64_t pgn_lat_bucket_low(unsigned i);

void pgn_lat_hist_add(struct pgn_lat_hist *h, uint64_t ns);
/* The q-quantile (0 < q <= 1) in nanoseconds: the middle of the bucket
 * holding the ceil(q * count)-th smallest value, clamped to [min, max];
 * 0 when empty. */
uint64_t pgn_lat_hist_pct(const struct pgn_lat_hist *h, double q);
void pgn_lat_hist_reset(struct pgn_lat_hist *h);

#endif
