/* The server's one tracker of the iq requests it sends (pgn_send_iq):
 * answers are matched by (id, peer) in the router, before any event, and
 * handed to the requester's callback; a request without an answer times
 * out once.  The pure part (no routing) is unit-tested. */
#ifndef PIGEON_IQ_H
#define PIGEON_IQ_H

#include <stddef.h>
#include <stdint.h>

#include "pigeon/module.h"

struct event_base;
struct pgn_iq_tracker;

/* Requests waiting at most this many at once in a server (-EAGAIN past
 * it): modules bound their own, this bounds their sum. */
#define PGN_IQ_MAX_PENDING 100000
/* The longest id pgn_iq_tracker_add writes, with its NUL. */
#define PGN_IQ_ID_LEN 32

struct pgn_iq_tracker *pgn_iq_tracker_new(struct event_base *base);
/* Frees t and every waiting request; no callback runs. */
void pgn_iq_tracker_free(struct pgn_iq_tracker *t);
/* Registers a request of owner to peer (a prepared full JID, copied);
 * writes its id (PGN_IQ_ID_LEN bytes) and *handle.  The request counts
 * as "being sent" until pgn_iq_tracker_sent(): an answer that arrives
 * meanwhile is kept and given on the next loop turn, so the callback
 * never runs inside the sender's call.  0, -ENOMEM or -EAGAIN (full). */
int pgn_iq_tracker_add(struct pgn_iq_tracker *t, const void *owner,
		       const char *peer, uint64_t timeout_ms, pgn_iq_fn fn,
		       void *arg, char *id, uint64_t *handle);
void pgn_iq_tracker_sent(struct pgn_iq_tracker *t, uint64_t handle);
/* 1 when st (an iq result or error) answers a waiting request: t took
 * st and the callback runs (now, or on the next loop turn if the request
 * is still being sent); 0 when it answers nothing (st untouched). */
int pgn_iq_tracker_answer(struct pgn_iq_tracker *t, struct pgn_stanza *st);
/* Forgets owner's request without calling its callback.  0, or -ENOENT
 * when it is not waiting (answered, timed out, cancelled, not owner's). */
int pgn_iq_tracker_cancel(struct pgn_iq_tracker *t, const void *owner,
			  uint64_t handle);
/* Forgets every request of owner (a module that unloads). */
void pgn_iq_tracker_cancel_owner(struct pgn_iq_tracker *t, const void *owner);
size_t pgn_iq_tracker_count(const struct pgn_iq_tracker *t);

/* The stanza error condition of an iq error ("service-unavailable"), or
 * "undefined-condition" when it names none.  Borrowed from st. */
const char *pgn_iq_error_condition(const struct pgn_stanza *st);

#endif
