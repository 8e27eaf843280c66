/* Delivery on a local host: its inbound events, then the RFC 6120 §10 /
 * RFC 6121 §8 rules (bare JID to the highest priority resources, full
 * JID to the resource, message/offline, errors). */
#ifndef PIGEON_DELIVER_H
#define PIGEON_DELIVER_H

#include "route.h"

/* "message", "presence", "iq", "other", by enum pgn_stanza_kind. */
extern const char *const pgn_stanza_kind_names[];
/* "host", "bare" or "full": what st->to names. */
const char *pgn_stanza_addr(const struct pgn_stanza *st);
/* The route of a local host (r->host): takes st. */
void pgn_deliver_host(const struct pgn_routing *rt, struct pgn_stanza *st,
		      const struct pgn_route *r);
/* Nobody can take the message st to a user of host h now: message/offline
 * (offline storage may take it), else its sender learns. */
void pgn_deliver_offline(const struct pgn_routing *rt, struct pgn_host *h,
			 struct pgn_stanza *st);

#endif
