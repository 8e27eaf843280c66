/* Connections counted per peer address and in all, so that one client
 * cannot take every file descriptor (limits.max_connections_per_ip,
 * limits.max_connections). */
#ifndef PIGEON_CONNLIMIT_H
#define PIGEON_CONNLIMIT_H

#include <stddef.h>

struct pgn_connlimit;

/* per_ip, total: the limits, 0 for none.  NULL on allocation failure. */
struct pgn_connlimit *pgn_connlimit_new(unsigned per_ip, unsigned total);
void pgn_connlimit_free(struct pgn_connlimit *c);
/* Counts one more connection from peer (a numeric address, borrowed):
 * 0, or without counting it -EMFILE when the total is reached, -EPERM
 * when peer's address (its /64 for IPv6) is at per_ip, -ENOMEM. */
int pgn_connlimit_admit(struct pgn_connlimit *c, const char *peer);
/* Gives back a place taken by a successful admit of the same peer. */
void pgn_connlimit_release(struct pgn_connlimit *c, const char *peer);
unsigned pgn_connlimit_count(const struct pgn_connlimit *c);
/* The key peer is counted under: the IPv4 address, or the /64 of an IPv6
 * one (a single host usually gets a whole /64).  Writes at most len bytes
 * to out. */
void pgn_connlimit_key(const char *peer, char *out, size_t len);

#endif
