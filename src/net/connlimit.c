/* Connection counts per address.  The map holds the count itself in the
 * value pointer (never 0: an address with no connection is removed), so
 * a connection costs no allocation beyond the map entry. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connlimit.h"
#include "pigeon/map.h"

struct pgn_connlimit {
	struct pgn_map *addrs;  /* key -> (uintptr_t) count */
	unsigned per_ip;
	unsigned total;
	unsigned count;
};

struct pgn_connlimit *
pgn_connlimit_new(unsigned per_ip, unsigned total)
{
	struct pgn_connlimit *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->per_ip = per_ip;
	c->total = total;
	if ((c->addrs = pgn_map_new()) == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

void
pgn_connlimit_free(struct pgn_connlimit *c)
{
	if (c == NULL)
		return;
	pgn_map_free(c->addrs);
	free(c);
}

void
pgn_connlimit_key(const char *peer, char *out, size_t len)
{
	unsigned char a[16];
	char buf[INET6_ADDRSTRLEN];

	snprintf(out, len, "%s", peer);
	if (strchr(peer, ':') == NULL || inet_pton(AF_INET6, peer, a) != 1)
		return;
	static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0,
						    0, 0, 0, 0, 0xff, 0xff };
	if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
		if (inet_ntop(AF_INET, a + 12, buf, sizeof(buf)) != NULL)
			snprintf(out, len, "%s", buf);
		return;
	}
	memset(a + 8, 0, 8);
	if (inet_ntop(AF_INET6, a, buf, sizeof(buf)) != NULL)
		snprintf(out, len, "%s/64", buf);
}

int
pgn_connlimit_admit(struct pgn_connlimit *c, const char *peer)
{
	char key[INET6_ADDRSTRLEN + 4];
	uintptr_t n;

	if (c->total != 0 && c->count >= c->total)
		return -EMFILE;
	pgn_connlimit_key(peer, key, sizeof(key));
	n = (uintptr_t)pgn_map_get(c->addrs, key);
	if (c->per_ip != 0 && n >= c->per_ip)
		return -EPERM;
	if (pgn_map_set(c->addrs, key, (void *)(n + 1)) != 0)
		return -ENOMEM;
	c->count++;
	return 0;
}

void
pgn_connlimit_release(struct pgn_connlimit *c, const char *peer)
{
	char key[INET6_ADDRSTRLEN + 4];
	uintptr_t n;

	if (c == NULL)
		return;
	pgn_connlimit_key(peer, key, sizeof(key));
	n = (uintptr_t)pgn_map_get(c->addrs, key);
	if (n == 0)
		return; /* not counted: nothing to give back */
	if (n == 1)
		pgn_map_del(c->addrs, key);
	else
		pgn_map_set(c->addrs, key, (void *)(n - 1)); /* replaces */
	if (c->count > 0)
		c->count--;
}

unsigned
pgn_connlimit_count(const struct pgn_connlimit *c)
{
	return c->count;
}
