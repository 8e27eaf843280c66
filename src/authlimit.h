/* Per-address slow-down of failed authentications. */
#ifndef PIGEON_AUTHLIMIT_H
#define PIGEON_AUTHLIMIT_H

struct pgn_limits;

/* base_ms: delay after the second failure; it doubles with each further
 * failure up to 30 s, and is forgotten after 10 minutes without one. */
struct pgn_limits *pgn_limits_new(unsigned base_ms);
void pgn_limits_free(struct pgn_limits *l);
/* Records a failure from addr; returns the delay (ms) to apply. */
unsigned pgn_limits_auth_failed(struct pgn_limits *l, const char *addr);
void pgn_limits_auth_ok(struct pgn_limits *l, const char *addr);

#endif
