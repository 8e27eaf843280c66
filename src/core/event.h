/* Named events with prioritised handlers (one table per host). */
#ifndef PIGEON_EVENT_H
#define PIGEON_EVENT_H

#include "pigeon/module.h"

struct pgn_events;

struct pgn_events *pgn_events_new(void);
void pgn_events_free(struct pgn_events *ev);
/* owner identifies the module, so that its hooks can be removed at once. */
int pgn_events_add(struct pgn_events *evs, const char *name, pgn_hook_fn fn,
		   void *arg, int priority, const void *owner);
void pgn_events_remove_owner(struct pgn_events *evs, const void *owner);
/* Runs handlers of ev->name in priority order; returns PGN_EVENT_HANDLED
 * as soon as one handles it, else PGN_EVENT_PASS. */
int pgn_events_fire(struct pgn_events *evs, struct pgn_event *ev);
/* The same, starting after the handler (priority, fn, arg) that held the
 * stanza (see pgn_event_hold). */
int pgn_events_fire_after(struct pgn_events *evs, struct pgn_event *ev,
			  int priority, pgn_hook_fn fn, void *arg);
int pgn_events_has(const struct pgn_events *evs, const char *name);

#endif
