/* Events: a map from name to a handler array sorted by priority (high
 * first; equal priorities keep registration order).  Firing copies
 * nothing: handlers must not add or remove hooks of the same event while
 * it fires (modules hook at load time only). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "pigeon/map.h"

struct handler {
	pgn_hook_fn fn;
	void *arg;
	int priority;
	const void *owner;
};

struct hlist {
	struct handler *h;
	size_t n;
};

struct pgn_events {
	struct pgn_map *by_name; /* name -> struct hlist */
};

struct pgn_events *
pgn_events_new(void)
{
	struct pgn_events *evs = calloc(1, sizeof(*evs));
	if (evs == NULL)
		return NULL;
	evs->by_name = pgn_map_new();
	if (evs->by_name == NULL) {
		free(evs);
		return NULL;
	}
	return evs;
}

static void
free_list(void *value)
{
	struct hlist *l = value;
	free(l->h);
	free(l);
}

void
pgn_events_free(struct pgn_events *evs)
{
	if (evs == NULL)
		return;
	pgn_map_free_values(evs->by_name, free_list);
	free(evs);
}

int
pgn_events_add(struct pgn_events *evs, const char *name, pgn_hook_fn fn,
	       void *arg, int priority, const void *owner)
{
	struct hlist *l = pgn_map_get(evs->by_name, name);
	if (l == NULL) {
		l = calloc(1, sizeof(*l));
		if (l == NULL || pgn_map_set(evs->by_name, name, l) != 0) {
			free(l);
			return -ENOMEM;
		}
	}
	struct handler *h = realloc(l->h, (l->n + 1) * sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	l->h = h;
	size_t pos = l->n;
	while (pos > 0 && h[pos - 1].priority < priority)
		pos--;
	memmove(&h[pos + 1], &h[pos], (l->n - pos) * sizeof(*h));
	h[pos] = (struct handler){ fn, arg, priority, owner };
	l->n++;
	return 0;
}

static int
remove_owner(const char *key, uint64_t id, void *value, void *arg)
{
	struct hlist *l = value;
	size_t j = 0;
	for (size_t i = 0; i < l->n; i++)
		if (l->h[i].owner != arg)
			l->h[j++] = l->h[i];
	l->n = j;
	return 0;
}

void
pgn_events_remove_owner(struct pgn_events *evs, const void *owner)
{
	pgn_map_foreach(evs->by_name, remove_owner, (void *)owner);
}

static int
fire_from(const struct hlist *l, size_t start, struct pgn_event *ev)
{
	for (size_t i = start; i < l->n; i++) {
		ev->pos_priority = l->h[i].priority;
		ev->pos_fn = l->h[i].fn;
		ev->pos_arg = l->h[i].arg;
		if (l->h[i].fn(ev, l->h[i].arg) == PGN_EVENT_HANDLED)
			return PGN_EVENT_HANDLED;
	}
	return PGN_EVENT_PASS;
}

int
pgn_events_fire(struct pgn_events *evs, struct pgn_event *ev)
{
	struct hlist *l = pgn_map_get(evs->by_name, ev->name);
	if (l == NULL)
		return PGN_EVENT_PASS;
	return fire_from(l, 0, ev);
}

int
pgn_events_fire_after(struct pgn_events *evs, struct pgn_event *ev,
		      int priority, pgn_hook_fn fn, void *arg)
{
	struct hlist *l = pgn_map_get(evs->by_name, ev->name);
	size_t start = 0;

	if (l == NULL)
		return PGN_EVENT_PASS;
	/* After the handler itself if it is still there, else after every
	 * handler of its priority or higher. */
	while (start < l->n && l->h[start].priority > priority)
		start++;
	for (size_t i = start; i < l->n && l->h[i].priority == priority; i++)
		if (l->h[i].fn == fn && l->h[i].arg == arg)
			return fire_from(l, i + 1, ev);
	while (start < l->n && l->h[start].priority == priority)
		start++;
	return fire_from(l, start, ev);
}

int
pgn_events_has(const struct pgn_events *evs, const char *name)
{
	struct hlist *l = pgn_map_get(evs->by_name, name);
	return l != NULL && l->n > 0;
}
