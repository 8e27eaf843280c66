/* mod_mam: the preferences (XEP-0441), cached per user. */
#include "mam.h"

/* ---- SQL (the same text on SQLite and PostgreSQL) ---- */

/* No row: no such account. */
static const char sql_prefs_load[] =
        "SELECT p.default_mode, p.always_jids, p.never_jids, c.n, c.bytes "
        "FROM accounts a "
        "LEFT JOIN mam_prefs p ON p.host = a.host AND p.username = a.username "
        "LEFT JOIN mam_counts c ON c.host = a.host AND c.username = a.username "
        "WHERE a.host = $1 AND a.username = $2";
static const char sql_prefs_store[] =
        "INSERT INTO mam_prefs (host, username, default_mode, always_jids, "
        "never_jids) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host, username) "
        "DO UPDATE SET default_mode = excluded.default_mode, "
        "always_jids = excluded.always_jids, never_jids = excluded.never_jids";
static const char *const mode_names[] = {"always", "never", "roster"};

/* ---- preferences cache ---- */

static void
prefs_lists_clear(struct uprefs *p)
{
	strv_free(p->always, p->nalways);
	strv_free(p->never, p->nnever);
	p->always = p->never = NULL;
	p->nalways = p->nnever = 0;
}

void
prefs_free(struct uprefs *p)
{
	if (p == NULL)
		return;
	/* Only at unload: nothing can be routed any more. */
	while (p->waiters != NULL) {
		struct waiter *w = p->waiters;
		p->waiters = w->next;
		if (w->hold != NULL)
			pgn_stanza_free(pgn_hold_take(w->hold));
		free(w);
	}
	prefs_lists_clear(p);
	free(p->user);
	free(p->bare);
	free(p);
}

void
free_prefs_value(void *value)
{
	prefs_free(value);
}

/* The user's entry, made if needed (always for a session, else while
 * fewer than MAX_CACHED are cached).  NULL on allocation failure or when
 * full. */
struct uprefs *
prefs_get(struct mam *mm, const char *bare, const char *user, int session)
{
	struct uprefs *p = pgn_map_get(mm->prefs, bare);

	if (p == NULL) {
		if (!session && pgn_map_count(mm->prefs) >= MAX_CACHED) {
			pgn_log(PGN_LOG_WARN,
			        "mod_mam %s: %d users cached, "
			        "not archiving for %s now",
			        mm->host, MAX_CACHED, bare);
			return NULL;
		}
		if ((p = calloc(1, sizeof(*p))) == NULL ||
		    (p->bare = strdup(bare)) == NULL ||
		    (p->user = strdup(user)) == NULL ||
		    pgn_map_set(mm->prefs, bare, p) != 0) {
			pgn_log(PGN_LOG_ERROR,
			        "mod_mam %s: out of memory for "
			        "the preferences of %s",
			        mm->host, bare);
			prefs_free(p);
			return NULL;
		}
		p->mm = mm;
		p->state = P_NONE;
		p->wait_tail = &p->waiters;
	}
	p->used = time(NULL);
	return p;
}

/* XEP-0441 "JID matching": a listed full JID matches that full JID, a
 * listed bare JID any resource of it. */
static int
listed(char *const *v, size_t n, const struct pgn_jid *peer)
{
	return strv_has(v, n, peer->bare) ||
	       (peer->resource != NULL && strv_has(v, n, peer->full));
}

/* Whether a message of p's user with peer is archived.  final: the
 * store was just read for it, so what is cached decides (V_NEED is never
 * returned; what cannot be told is not archived).  V_ROSTER: ask
 * roster_ask(). */
enum verdict
decide(const struct uprefs *p, const struct pgn_jid *peer, int final)
{
	if (p->state == P_NOACCOUNT)
		return V_NO;
	if (p->state != P_LOADED)
		return final ? V_NO : V_NEED;
	/* In both lists: privacy first. */
	if (listed(p->never, p->nnever, peer))
		return V_NO;
	if (listed(p->always, p->nalways, peer))
		return V_YES;
	switch (p->def) {
	case MODE_ALWAYS:
		return V_YES;
	case MODE_NEVER:
		return V_NO;
	case MODE_ROSTER:
		/* Notes to oneself are part of one's conversations. */
		if (strcmp(peer->bare, p->bare) == 0)
			return V_YES;
		return V_ROSTER;
	}
	return V_NO;
}

/* Archives and lets go the messages held while the queue was full, in
 * order, as far as there is room.  Routing one may hold the next message
 * behind them (the list is walked from its head each time). */
void
drain_overflow(struct mam *mm)
{
	while (mm->over_head != NULL && !queue_full(mm)) {
		struct waiter *w = mm->over_head;
		struct pgn_stanza *st = pgn_hold_stanza(w->hold);
		const struct pgn_jid *owner = w->outgoing ? st->from : st->to;
		const struct pgn_jid *peer = w->outgoing ? st->to : st->from;
		struct uprefs *p;
		enum verdict v;

		if ((mm->over_head = w->next) == NULL)
			mm->over_tail = &mm->over_head;
		mm->nover--;
		mm->over_bytes -= w->bytes;
		p = prefs_get(mm, owner->bare, owner->node, 0);
		v = p != NULL ? decide(p, peer, 0) : V_NO;
		if (v == V_NEED || v == V_ROSTER) {
			/* Its decision needs the store after all. */
			w->next = NULL;
			*p->wait_tail = w;
			p->wait_tail = &w->next;
			prefs_load(p);
			continue;
		}
		settle(mm, w->hold, w->outgoing, v, p);
		free(w);
	}
}

/* A question to mod_roster about the first waiter of p (peer). */
struct roster_ask {
	struct uprefs *p;
	char *peer;
	int sync; /* still inside has_contact() */
	int done, err, found;
};

static void run_waiters(struct uprefs *p);

/* The peer of a held message. */
static const struct pgn_jid *
waiter_peer(const struct waiter *w)
{
	const struct pgn_stanza *st = pgn_hold_stanza(w->hold);

	return w->outgoing ? st->to : st->from;
}

static enum verdict
roster_verdict(const struct uprefs *p, int err, int found)
{
	if (err != 0)
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: cannot read the roster of %s, not "
		        "archiving",
		        p->mm->host, p->bare);
	return err == 0 && found ? V_YES : V_NO;
}

static void
roster_answered(int err, int found, void *arg)
{
	struct roster_ask *a = arg;
	struct uprefs *p = a->p;
	struct waiter *w = p->waiters;

	a->done = 1;
	a->err = err;
	a->found = found;
	if (a->sync)
		return; /* roster_ask() reads it */
	p->loading = 0;
	/* The answer is about the first waiter, if it is still first. */
	if (w != NULL && w->hold != NULL && !w->pass &&
	    strcmp(waiter_peer(w)->bare, a->peer) == 0) {
		enum verdict v = decide(p, waiter_peer(w), 1);
		if (v == V_ROSTER)
			v = roster_verdict(p, err, found);
		if ((p->waiters = w->next) == NULL)
			p->wait_tail = &p->waiters;
		settle(p->mm, w->hold, w->outgoing, v, p);
		free(w);
	}
	free(a->peer);
	free(a);
	/* Routing may have asked again meanwhile. */
	if (!p->loading)
		run_waiters(p);
}

/* Is peer in the roster of p's user?  V_YES or V_NO when mod_roster
 * answered at once (or cannot be asked: not archived); V_NEED when the
 * answer comes later to roster_answered(), for the first waiter of p
 * (p->loading is set until then). */
enum verdict
roster_ask(struct uprefs *p, const struct pgn_jid *peer)
{
	struct mam *mm = p->mm;
	const struct pgn_roster_service *roster;
	struct roster_ask *a;
	void *inst;
	enum verdict v;

	roster = pgn_host_service(pgn_module_host(mm->m), PGN_ROSTER_SERVICE,
	                          &inst);
	if (roster == NULL || (a = calloc(1, sizeof(*a))) == NULL)
		return V_NO;
	if ((a->peer = strdup(peer->bare)) == NULL)
		goto fail;
	a->p = p;
	a->sync = 1;
	if (roster->has_contact(inst, p->bare, peer->bare, PGN_SUB_ANY,
	                        roster_answered, a) != 0)
		goto fail;
	if (!a->done) {
		a->sync = 0;
		p->loading = 1;
		return V_NEED;
	}
	v = roster_verdict(p, a->err, a->found);
	free(a->peer);
	free(a);
	return v;
fail:
	free(a->peer);
	free(a);
	return V_NO;
}

/* The load p waited for is over: decide the held messages with what is
 * cached now, release the held sessions.  A message for which mod_roster
 * answers later stops the run: it and the rest wait (before anything
 * queued meanwhile) for roster_answered(). */
static void
run_waiters(struct uprefs *p)
{
	struct mam *mm = p->mm;
	struct waiter *w = p->waiters, *next;

	/* Routing may come back here for the same user: work on a
	 * detached list (p itself is only freed by the sweep). */
	p->waiters = NULL;
	p->wait_tail = &p->waiters;
	for (; w != NULL; w = next) {
		next = w->next;
		if (w->hold == NULL) {
			struct pgn_session *s =
			        pgn_session_find(mm->srv, w->sid);
			if (s != NULL)
				pgn_session_release(s);
		} else if (w->pass) {
			/* Not archived: behind the rows of the messages
			 * settled before it. */
			pass_behind(p, w->hold);
		} else {
			enum verdict v = decide(p, waiter_peer(w), 1);
			if (v == V_ROSTER && !p->loading)
				v = roster_ask(p, waiter_peer(w));
			if (v == V_ROSTER || v == V_NEED) {
				/* Asked (or an ask runs already): this one
				 * and the rest keep their place in front. */
				struct waiter *last = w;
				while (last->next != NULL)
					last = last->next;
				if ((last->next = p->waiters) == NULL)
					p->wait_tail = &last->next;
				p->waiters = w;
				return;
			}
			settle(mm, w->hold, w->outgoing, v, p);
		}
		free(w);
	}
}

static void
prefs_loaded(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct uprefs *p = arg;
	const char *mode;

	(void)owner;
	p->loading = 0;
	prefs_lists_clear(p);
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: cannot read the archiving "
		        "preferences of %s: %s",
		        p->mm->host, p->bare, res->errmsg);
		p->state = P_FAILED;
	} else if (res->nrows == 0) {
		p->state = P_NOACCOUNT;
	} else {
		mode = pgn_store_value(res, 0, 0);
		p->qn = store_int(res, 0, 3) + p->dn;
		p->qbytes = store_int(res, 0, 4) + p->dbytes;
		p->def = str_eq(mode, "never")    ? MODE_NEVER
		         : str_eq(mode, "roster") ? MODE_ROSTER
		                                  : MODE_ALWAYS;
		if (strv_split(pgn_store_value(res, 0, 1), &p->always,
		               &p->nalways) != 0 ||
		    strv_split(pgn_store_value(res, 0, 2), &p->never,
		               &p->nnever) != 0) {
			prefs_lists_clear(p);
			p->state = P_FAILED;
		} else {
			p->state = P_LOADED;
		}
	}
	run_waiters(p);
}

/* Reads what p lacks (the preferences); the waiters run when it is
 * there.  Nothing to read, or the read cannot be queued: they run now. */
void
prefs_load(struct uprefs *p)
{
	const char *params[2] = {p->mm->host, p->user};

	if (p->loading)
		return;
	if (p->state != P_LOADED) {
		/* The counters read must include every row queued before
		 * (the store answers in order); later ones are added. */
		if (p->mm->max_messages > 0 || p->mm->max_bytes > 0)
			flush_rows(p->mm);
		p->dn = p->dbytes = 0;
		if (pgn_store_query(p->mm->store, sql_prefs_load, 2, params, 0,
		                    prefs_loaded, p) == 0) {
			p->loading = 1;
			return;
		}
	}
	run_waiters(p);
}

/* ---- preferences (XEP-0441) ---- */

static struct pgn_xml *
prefs_element(const char *ns, enum mode def, char *const *always,
              size_t nalways, char *const *never, size_t nnever)
{
	struct pgn_xml *p = pgn_xml_new(ns, "prefs"), *a, *n;

	if (p == NULL || pgn_xml_set_attr(p, "default", mode_names[def]) != 0 ||
	    (a = pgn_xml_add_child(p, ns, "always")) == NULL ||
	    (n = pgn_xml_add_child(p, ns, "never")) == NULL)
		goto fail;
	for (size_t i = 0; i < nalways; i++)
		if (add_text_child(a, ns, "jid", always[i]) != 0)
			goto fail;
	for (size_t i = 0; i < nnever; i++)
		if (add_text_child(n, ns, "jid", never[i]) != 0)
			goto fail;
	return p;
fail:
	pgn_xml_free(p);
	return NULL;
}

int
on_prefs_get(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	const char *ns = request_ns(ev->stanza);
	struct uprefs *p;
	struct pgn_xml *x;

	if (!from_owner(ev)) {
		pgn_event_error(ev, "cancel", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	p = pgn_map_get(mm->prefs, ev->stanza->to->bare);
	if (p == NULL || p->state != P_LOADED) {
		/* session-started could not read them. */
		pgn_event_error(ev, "wait", "internal-server-error");
		return PGN_EVENT_HANDLED;
	}
	if ((x = prefs_element(ns, p->def, p->always, p->nalways, p->never,
	                       p->nnever)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, x);
	return PGN_EVENT_HANDLED;
}

static void
prefs_write_free(struct prefs_write *w)
{
	if (w == NULL)
		return;
	strv_free(w->always, w->nalways);
	strv_free(w->never, w->nnever);
	free(w->bare);
	free(w);
}

/* The <jid/> children of list into a new sorted vector.  0, -EINVAL
 * (jid-malformed), -E2BIG or -ENOMEM. */
static int
read_jids(const struct pgn_xml *list, const char *ns, char ***out, size_t *n)
{
	size_t len = 0;
	char **v = NULL;
	int rc = 0;

	*out = NULL;
	*n = 0;
	for (const struct pgn_xml *c = list != NULL ? pgn_xml_first_child(list)
	                                            : NULL;
	     c != NULL; c = pgn_xml_next(c)) {
		struct pgn_jid *j = NULL;
		char *t, **nv;
		if (!is_el(c, ns, "jid"))
			continue;
		if (len >= MAX_PREF_JIDS) {
			rc = -E2BIG;
			goto fail;
		}
		if ((t = pgn_xml_text(c)) == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = pgn_jid_parse(t, &j);
		free(t);
		if (rc != 0)
			goto fail;
		nv = realloc(v, (len + 1) * sizeof(*nv));
		if (nv == NULL || (nv[len] = strdup(j->full)) == NULL) {
			if (nv != NULL)
				v = nv;
			pgn_jid_free(j);
			rc = -ENOMEM;
			goto fail;
		}
		pgn_jid_free(j);
		v = nv;
		len++;
	}
	*n = strv_sort_unique(v, len);
	*out = v;
	return 0;
fail:
	strv_free(v, len);
	return rc;
}

static void
prefs_stored(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct prefs_write *w = arg;
	struct mam *mm = w->mm;
	struct uprefs *p;
	struct pgn_xml *x;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: storing the preferences of "
		        "%s failed: %s",
		        mm->host, w->bare, res->errmsg);
		answer_held(mm, w->hold, w->sid, NULL, "wait",
		            "internal-server-error");
		prefs_write_free(w);
		return;
	}
	/* In force from now on. */
	if ((p = pgn_map_get(mm->prefs, w->bare)) != NULL) {
		prefs_lists_clear(p);
		p->state = P_LOADED;
		p->def = w->def;
		p->always = w->always;
		p->nalways = w->nalways;
		p->never = w->never;
		p->nnever = w->nnever;
		w->always = w->never = NULL;
		w->nalways = w->nnever = 0;
		x = prefs_element(w->ns, p->def, p->always, p->nalways,
		                  p->never, p->nnever);
	} else {
		x = prefs_element(w->ns, w->def, w->always, w->nalways,
		                  w->never, w->nnever);
	}
	if (x == NULL)
		answer_held(mm, w->hold, w->sid, NULL, "wait",
		            "resource-constraint");
	else
		answer_held(mm, w->hold, w->sid, x, NULL, NULL);
	prefs_write_free(w);
}

int
on_prefs_set(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *req = pgn_xml_first_child(st->xml);
	const char *ns = request_ns(st);
	const char *def = pgn_xml_attr(req, "default");
	struct prefs_write *w = NULL;
	char *always_s = NULL, *never_s = NULL;
	const char *params[5];
	int rc;

	if (!from_owner(ev)) {
		pgn_event_error(ev, "cancel", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	if (def == NULL ||
	    (strcmp(def, "always") != 0 && strcmp(def, "never") != 0 &&
	     strcmp(def, "roster") != 0)) {
		pgn_event_error(ev, "modify", "bad-request");
		return PGN_EVENT_HANDLED;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->bare = strdup(st->to->bare)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	w->mm = mm;
	w->ns = ns;
	w->sid = pgn_session_id(ev->origin);
	w->def = def[0] == 'a'   ? MODE_ALWAYS
	         : def[0] == 'n' ? MODE_NEVER
	                         : MODE_ROSTER;
	if ((rc = read_jids(pgn_xml_child(req, ns, "always"), ns, &w->always,
	                    &w->nalways)) != 0 ||
	    (rc = read_jids(pgn_xml_child(req, ns, "never"), ns, &w->never,
	                    &w->nnever)) != 0)
		goto fail;
	rc = -ENOMEM;
	if ((always_s = strv_join(w->always, w->nalways)) == NULL ||
	    (never_s = strv_join(w->never, w->nnever)) == NULL)
		goto fail;
	params[0] = mm->host;
	params[1] = st->to->node;
	params[2] = mode_names[w->def];
	params[3] = always_s;
	params[4] = never_s;
	if ((w->hold = pgn_event_hold(ev)) == NULL)
		goto fail;
	if (pgn_store_query(mm->store, sql_prefs_store, 5, params, w->sid,
	                    prefs_stored, w) != 0) {
		answer_held(mm, w->hold, w->sid, NULL, "wait",
		            "internal-server-error");
		prefs_write_free(w);
	}
	free(always_s);
	free(never_s);
	return PGN_EVENT_HANDLED;
fail:
	free(always_s);
	free(never_s);
	prefs_write_free(w);
	if (rc == -EINVAL)
		pgn_event_error(ev, "modify", "jid-malformed");
	else if (rc == -E2BIG)
		pgn_event_error(ev, "modify", "not-acceptable");
	else
		pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}
