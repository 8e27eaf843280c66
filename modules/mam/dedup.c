/* mod_mam: resent messages (XEP-0359 origin-id). */
#include "mam.h"

/* Resent messages: the origin-ids of the user's newest messages (sent,
 * or to oneself), among the newest rows of the archive. */
static const char sql_dedup_load[] =
        "SELECT with_bare, origin_id FROM (SELECT id, with_bare, origin_id, "
        "outgoing FROM mam_messages WHERE host = $1 AND username = $2 "
        "ORDER BY id DESC LIMIT " DEDUP_SCAN_STR ") AS r "
        "WHERE origin_id IS NOT NULL AND (outgoing = 1 OR with_bare = $3) "
        "ORDER BY id";

/* ---- resent messages (XEP-0359 origin-id) ----
 *
 * A client that could not resume its stream (XEP-0198) sends its
 * unacknowledged messages again, with the same origin-id.  Each sender
 * has a window of the hashes of its DEDUP_WINDOW newest (recipient,
 * origin-id) pairs, recorded at the end of the outbound chain (priority
 * -100: the message was not refused by a filter or the archive).  At
 * priority 90 (after blocking, 100; before sent carbons, 40, the archive,
 * 30, and delivery) a message whose pair is in the window is accepted
 * and dropped: the sender's ack goes as for the first copy, nothing is
 * delivered, stored offline, copied or archived again.  A window is
 * filled from the archive's newest rows (origin_id column) by the first
 * message with an origin-id after a restart or DEDUP_IDLE_SECS unused,
 * held for that one read (not at log-in: a log-in would cost one more
 * statement whether the user sends or not). */

enum dstate { D_NONE, D_LOADING, D_LOADED };

struct dwait {
	struct dwait *next;
	struct pgn_hold *hold;
};

struct dwin {
	struct mam *mm;
	char *bare; /* the map key */
	char *user;
	enum dstate state;
	uint64_t *h; /* a ring of n (<= cap) hashes, next written at pos */
	unsigned n, cap, pos;
	time_t used;
	struct dwait *waiters, **wait_tail;
};

/* FNV-1a, 64 bits, over "to\0origin".  Only the sender's own messages
 * share its window, so a collision a sender makes hurts no one else. */
static uint64_t
dedup_hash(const char *to, const char *origin)
{
	uint64_t h = 14695981039346656037ULL;
	const char *parts[2] = {to, origin};

	for (int i = 0; i < 2; i++) {
		for (const unsigned char *c = (const unsigned char *)parts[i];
		     *c != '\0'; c++) {
			h ^= *c;
			h *= 1099511628211ULL;
		}
		h ^= 0xff; /* the separator */
		h *= 1099511628211ULL;
	}
	return h;
}

/* The origin-id of a 1:1 message of a local user of this host, or NULL. */
static const char *
dedup_origin(const struct mam *mm, const struct pgn_stanza *st)
{
	const char *origin = NULL;

	if (st == NULL || st->kind != PGN_STANZA_MESSAGE || st->from == NULL ||
	    st->to == NULL || st->from->node == NULL ||
	    strcmp(st->from->domain, mm->host) != 0 ||
	    str_eq(st->type, "groupchat") || str_eq(st->type, "headline") ||
	    str_eq(st->type, "error"))
		return NULL;
	for (const struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c))
		if (is_el(c, NS_SID, "origin-id")) {
			origin = pgn_xml_attr(c, "id");
			break;
		}
	if (origin == NULL || origin[0] == '\0' ||
	    strlen(origin) > MAX_ORIGIN_ID_LEN)
		return NULL;
	return origin;
}

static int
dwin_has(const struct dwin *w, uint64_t h)
{
	for (unsigned i = 0; i < w->n; i++)
		if (w->h[i] == h)
			return 1;
	return 0;
}

/* Grows by doubling up to DEDUP_WINDOW, then overwrites the oldest. */
static void
dwin_add(struct dwin *w, uint64_t h)
{
	if (dwin_has(w, h))
		return;
	if (w->n == w->cap && w->cap < DEDUP_WINDOW) {
		unsigned cap = w->cap ? w->cap * 2 : 8;
		uint64_t *nh = realloc(w->h, cap * sizeof(*nh));
		if (nh != NULL) {
			w->h = nh;
			w->cap = cap;
			w->pos = w->n;
		}
	}
	if (w->cap == 0)
		return;
	w->h[w->pos] = h;
	w->pos = (w->pos + 1) % w->cap;
	if (w->n < w->cap)
		w->n++;
}

static void
dwin_free(struct dwin *w)
{
	if (w == NULL)
		return;
	/* Only at unload: nothing can be routed any more. */
	while (w->waiters != NULL) {
		struct dwait *d = w->waiters;
		w->waiters = d->next;
		pgn_stanza_free(pgn_hold_take(d->hold));
		free(d);
	}
	free(w->h);
	free(w->user);
	free(w->bare);
	free(w);
}

/* The sender's window, made if needed while fewer than MAX_DEDUP_USERS
 * exist (past that, messages go unchecked until the sweep makes room). */
static struct dwin *
dwin_get(struct mam *mm, const char *bare, const char *user)
{
	struct dwin *w = pgn_map_get(mm->dedup, bare);

	if (w == NULL) {
		if (pgn_map_count(mm->dedup) >= MAX_DEDUP_USERS)
			return NULL;
		if ((w = calloc(1, sizeof(*w))) == NULL ||
		    (w->bare = strdup(bare)) == NULL ||
		    (w->user = strdup(user)) == NULL ||
		    pgn_map_set(mm->dedup, bare, w) != 0) {
			dwin_free(w);
			return NULL;
		}
		w->mm = mm;
		w->wait_tail = &w->waiters;
	}
	w->used = time(NULL);
	return w;
}

/* Held messages of a window just read, in order: each is checked after
 * the one before it went through (and was recorded). */
static void
dwin_run_waiters(struct dwin *w)
{
	struct dwait *d = w->waiters, *next;

	w->waiters = NULL;
	w->wait_tail = &w->waiters;
	for (; d != NULL; d = next) {
		struct pgn_stanza *st = pgn_hold_stanza(d->hold);
		const char *origin = dedup_origin(w->mm, st);

		next = d->next;
		if (origin != NULL &&
		    dwin_has(w, dedup_hash(st->to->bare, origin))) {
			w->mm->dedup_dropped++;
			pgn_stanza_free(pgn_hold_take(d->hold));
		} else {
			pgn_hold_resume(d->hold);
		}
		free(d);
	}
}

static void
dwin_loaded(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct dwin *w = arg;

	(void)owner;
	if (res->error != 0)
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: cannot read the recent origin-ids of %s: "
		        "%s",
		        w->mm->host, w->bare, res->errmsg);
	else
		for (int i = 0; i < res->nrows; i++) {
			const char *to = pgn_store_value(res, i, 0);
			const char *origin = pgn_store_value(res, i, 1);
			if (to != NULL && origin != NULL)
				dwin_add(w, dedup_hash(to, origin));
		}
	/* Failed: checked against what is recorded from now on. */
	w->state = D_LOADED;
	dwin_run_waiters(w);
}

static void
dwin_load(struct dwin *w)
{
	const char *params[3] = {w->mm->host, w->user, w->bare};

	if (w->state != D_NONE)
		return;
	/* The rows queued are read too (the store answers in order). */
	flush_rows(w->mm);
	if (pgn_store_query(w->mm->store, sql_dedup_load, 3, params, 0,
	                    dwin_loaded, w) != 0) {
		w->state = D_LOADED;
		dwin_run_waiters(w);
		return;
	}
	w->state = D_LOADING;
}

int
on_dedup_check(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	struct pgn_stanza *st = ev->stanza;
	const char *origin = dedup_origin(mm, st);
	struct dwin *w;
	struct dwait *d;

	if (origin == NULL ||
	    (w = dwin_get(mm, st->from->bare, st->from->node)) == NULL)
		return PGN_EVENT_PASS;
	if (w->state == D_LOADED) {
		if (!dwin_has(w, dedup_hash(st->to->bare, origin)))
			return PGN_EVENT_PASS;
		/* Taken as the first copy was: no error, acknowledged. */
		mm->dedup_dropped++;
		pgn_log(PGN_LOG_DEBUG,
		        "mod_mam %s: a message of %s resent with the same "
		        "origin-id, not delivered again",
		        mm->host, st->from->bare);
		return PGN_EVENT_HANDLED;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL ||
	    (d->hold = pgn_event_hold(ev)) == NULL) {
		free(d);
		return PGN_EVENT_PASS;
	}
	*w->wait_tail = d;
	w->wait_tail = &d->next;
	dwin_load(w);
	return PGN_EVENT_HANDLED;
}

/* The end of the outbound chain: the message goes to its recipient. */
int
on_dedup_record(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	struct pgn_stanza *st = ev->stanza;
	const char *origin = dedup_origin(mm, st);
	struct dwin *w;

	if (origin != NULL &&
	    (w = pgn_map_get(mm->dedup, st->from->bare)) != NULL)
		dwin_add(w, dedup_hash(st->to->bare, origin));
	return PGN_EVENT_PASS;
}

int
sweep_dedup(const char *key, uint64_t id, void *value, void *arg)
{
	struct dwin *w = value;
	time_t now = *(const time_t *)arg;

	(void)id;
	if (w->state != D_LOADING && w->waiters == NULL &&
	    now - w->used >= DEDUP_IDLE_SECS) {
		pgn_map_del(w->mm->dedup, key);
		dwin_free(w);
	}
	return 0;
}

void
free_dedup_value(void *value)
{
	dwin_free(value);
}
