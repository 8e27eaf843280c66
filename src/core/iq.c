/* One tracker of the iq requests the server sends for its modules
 * (pgn_send_iq): ids are "pgn-N" with N a per-server counter, so an
 * answer is found by parsing its id, and it counts only if it comes from
 * the JID the request went to (the router stamps 'from', a client cannot
 * forge it).  Each request has one timer: its timeout, or (0 ms) the
 * delivery of an answer that came while the request was being sent. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "iq.h"
#include "pigeon/map.h"
#include "server.h"

#define ID_PREFIX "pgn-"

struct pgn_iq_tracker {
	struct event_base *base;
	struct pgn_map *waiting; /* N -> struct iq_wait */
	uint64_t next;
};

struct iq_wait {
	struct pgn_iq_tracker *t;
	uint64_t n;
	const void *owner;
	char *peer;
	pgn_iq_fn fn;
	void *arg;
	struct event *timer;
	struct pgn_stanza *reply; /* came while sending; given by the timer */
	unsigned sending : 1;
};

static void
wait_free(void *p)
{
	struct iq_wait *w = p;

	if (w == NULL)
		return;
	if (w->timer != NULL)
		event_free(w->timer);
	pgn_stanza_free(w->reply);
	free(w->peer);
	free(w);
}

const char *
pgn_iq_error_condition(const struct pgn_stanza *st)
{
	const struct pgn_xml *err = pgn_xml_child(st->xml, NULL, "error");
	const struct pgn_xml *c;

	if (err != NULL)
		for (c = pgn_xml_first_child(err); c != NULL;
		     c = pgn_xml_next(c)) {
			const char *ns = pgn_xml_ns(c);
			if (ns != NULL && strcmp(ns, PGN_NS_STANZAS) == 0 &&
			    strcmp(pgn_xml_name(c), "text") != 0)
				return pgn_xml_name(c);
		}
	return "undefined-condition";
}

/* Forgets w, then calls its callback with its answer (or the timeout):
 * the callback may send or cancel other requests. */
static void
wait_finish(struct iq_wait *w)
{
	const struct pgn_stanza *r = w->reply;
	const char *condition = "remote-server-timeout";

	pgn_map_del_id(w->t->waiting, w->n);
	if (r != NULL)
		condition = r->type != NULL && strcmp(r->type, "error") == 0
				    ? pgn_iq_error_condition(r)
				    : NULL;
	w->fn(r, condition, w->arg);
	wait_free(w);
}

static void
wait_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	wait_finish(arg);
}

struct pgn_iq_tracker *
pgn_iq_tracker_new(struct event_base *base)
{
	struct pgn_iq_tracker *t = calloc(1, sizeof(*t));

	if (t == NULL || (t->waiting = pgn_map_new()) == NULL) {
		free(t);
		return NULL;
	}
	t->base = base;
	return t;
}

void
pgn_iq_tracker_free(struct pgn_iq_tracker *t)
{
	if (t == NULL)
		return;
	pgn_map_free_values(t->waiting, wait_free);
	free(t);
}

int
pgn_iq_tracker_add(struct pgn_iq_tracker *t, const void *owner,
		   const char *peer, uint64_t timeout_ms, pgn_iq_fn fn,
		   void *arg, char *id, uint64_t *handle)
{
	struct timeval tv = { (time_t)(timeout_ms / 1000),
			      (suseconds_t)(timeout_ms % 1000) * 1000 };
	struct iq_wait *w;

	if (pgn_map_count(t->waiting) >= PGN_IQ_MAX_PENDING)
		return -EAGAIN;
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->peer = strdup(peer)) == NULL ||
	    (w->timer = evtimer_new(t->base, wait_timer, w)) == NULL)
		goto fail;
	w->t = t;
	w->n = ++t->next;
	w->owner = owner;
	w->fn = fn;
	w->arg = arg;
	w->sending = 1;
	if (pgn_map_set_id(t->waiting, w->n, w) != 0)
		goto fail;
	evtimer_add(w->timer, &tv);
	snprintf(id, PGN_IQ_ID_LEN, ID_PREFIX "%" PRIu64, w->n);
	*handle = w->n;
	return 0;
fail:
	wait_free(w);
	return -ENOMEM;
}

void
pgn_iq_tracker_sent(struct pgn_iq_tracker *t, uint64_t handle)
{
	struct iq_wait *w = pgn_map_get_id(t->waiting, handle);

	if (w != NULL)
		w->sending = 0;
}

int
pgn_iq_tracker_answer(struct pgn_iq_tracker *t, struct pgn_stanza *st)
{
	static const struct timeval now = { 0, 0 };
	struct iq_wait *w;
	const char *id = st->id;
	char *end;
	uint64_t n;

	if (t == NULL || st->kind != PGN_STANZA_IQ || st->type == NULL ||
	    (strcmp(st->type, "result") != 0 &&
	     strcmp(st->type, "error") != 0) ||
	    id == NULL || strncmp(id, ID_PREFIX, strlen(ID_PREFIX)) != 0 ||
	    st->from == NULL)
		return 0;
	id += strlen(ID_PREFIX);
	if (*id < '1' || *id > '9')
		return 0;
	errno = 0;
	n = strtoull(id, &end, 10);
	if (errno != 0 || *end != '\0' ||
	    (w = pgn_map_get_id(t->waiting, n)) == NULL || w->reply != NULL ||
	    strcmp(w->peer, st->from->full) != 0)
		return 0;
	w->reply = st;
	if (w->sending)
		evtimer_add(w->timer, &now);
	else
		wait_finish(w);
	return 1;
}

int
pgn_iq_tracker_cancel(struct pgn_iq_tracker *t, const void *owner,
		      uint64_t handle)
{
	struct iq_wait *w = t != NULL ? pgn_map_get_id(t->waiting, handle)
				      : NULL;

	if (w == NULL || w->owner != owner)
		return -ENOENT;
	pgn_map_del_id(t->waiting, handle);
	wait_free(w);
	return 0;
}

struct owner_drop {
	struct pgn_iq_tracker *t;
	const void *owner;
};

static int
drop_owned(const char *key, uint64_t id, void *value, void *arg)
{
	struct owner_drop *d = arg;
	struct iq_wait *w = value;

	(void)key;
	if (w->owner == d->owner) {
		pgn_map_del_id(d->t->waiting, id);
		wait_free(w);
	}
	return 0;
}

void
pgn_iq_tracker_cancel_owner(struct pgn_iq_tracker *t, const void *owner)
{
	struct owner_drop d = { t, owner };

	if (t != NULL)
		pgn_map_foreach(t->waiting, drop_owned, &d);
}

size_t
pgn_iq_tracker_count(const struct pgn_iq_tracker *t)
{
	return t != NULL ? pgn_map_count(t->waiting) : 0;
}

/* ---- the module API ---------------------------------------------------- */

int
pgn_send_iq(struct pgn_module *m, const char *from, const char *to,
	    const char *type, struct pgn_xml *payload, uint64_t timeout_ms,
	    pgn_iq_fn fn, void *arg, uint64_t *handle)
{
	struct pgn_server *srv = pgn_module_server(m);
	struct pgn_xml *iq = NULL;
	struct pgn_stanza *st = NULL;
	char id[PGN_IQ_ID_LEN];
	uint64_t n = 0;
	int bad = 0, rc = -ENOMEM;

	if (srv->iq == NULL && (srv->iq = pgn_iq_tracker_new(srv->base)) == NULL)
		goto fail;
	if ((iq = pgn_xml_new(PGN_NS_CLIENT, "iq")) == NULL ||
	    pgn_xml_set_attr(iq, "type", type) != 0 ||
	    pgn_xml_set_attr(iq, "from", from) != 0 ||
	    pgn_xml_set_attr(iq, "to", to) != 0)
		goto fail;
	if (payload != NULL)
		pgn_xml_append(iq, payload);
	payload = NULL;
	if ((st = pgn_stanza_new(iq, &bad)) == NULL) { /* takes iq */
		iq = NULL;
		rc = bad ? -EINVAL : -ENOMEM;
		goto fail;
	}
	iq = NULL;
	if (st->to == NULL || st->from == NULL) {
		rc = -EINVAL;
		goto fail;
	}
	if ((rc = pgn_iq_tracker_add(srv->iq, m, st->to->full, timeout_ms, fn,
				     arg, id, &n)) < 0)
		goto fail;
	if (pgn_xml_set_attr(st->xml, "id", id) != 0) {
		pgn_iq_tracker_cancel(srv->iq, m, n);
		rc = -ENOMEM;
		goto fail;
	}
	pgn_stanza_refresh(st);
	if (handle != NULL)
		*handle = n;
	pgn_route(srv, st);
	pgn_iq_tracker_sent(srv->iq, n);
	return 0;
fail:
	pgn_xml_free(payload);
	pgn_xml_free(iq);
	pgn_stanza_free(st);
	return rc;
}

int
pgn_iq_cancel(struct pgn_module *m, uint64_t handle)
{
	return pgn_iq_tracker_cancel(pgn_module_server(m)->iq, m, handle);
}
