/* mod_mam: which messages are archived, the rows and their group
 * commit, the archiving events, and the quotas. */
#include "mam.h"

static const char sql_totals[] =
        "SELECT n, bytes FROM mam_counts WHERE host = $1 AND username = $2";
/* pigeonctl archive_stats.  At quota: one more message (of the archive's
 * average size) would not fit. */
static const char sql_stats[] =
        "SELECT count(*), COALESCE(sum(n), 0), COALESCE(sum(bytes), 0), "
        "COALESCE(sum(CASE WHEN (CAST($2 AS BIGINT) > 0 AND "
        "n >= CAST($2 AS BIGINT)) OR (CAST($3 AS BIGINT) > 0 AND "
        "bytes + bytes / n > CAST($3 AS BIGINT)) THEN 1 ELSE 0 END), 0) "
        "FROM mam_counts WHERE host = $1 AND n > 0";

/* ---- which messages are archived ---- */

/* XEP-0313 §6.1.1: chat and normal messages (a message without a type,
 * or of a type RFC 6121 §5.2.2 does not define, is normal) with content:
 * a body, a receipt (XEP-0184), a chat marker (XEP-0333) or an encrypted
 * payload (OMEMO, OpenPGP for XMPP, legacy OpenPGP).  XEP-0334:
 * <store/> archives a chat or normal message of any content (a chat
 * state alone, for one); <no-store/> and <no-permanent-store/> always
 * win.  Never groupchat (no MUC archive in a user archive here),
 * headline or error. */
int
archivable(const struct pgn_stanza *st)
{
	int content = 0, store = 0;

	if (st->kind != PGN_STANZA_MESSAGE || str_eq(st->type, "groupchat") ||
	    str_eq(st->type, "headline") || str_eq(st->type, "error"))
		return 0;
	for (const struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *name = pgn_xml_name(c);
		if (ns_is(c, NS_HINTS)) {
			if (str_eq(name, "no-store") ||
			    str_eq(name, "no-permanent-store"))
				return 0;
			if (str_eq(name, "store"))
				store = 1;
		} else if ((ns_is(c, PGN_NS_CLIENT) && str_eq(name, "body")) ||
		           ns_is(c, NS_RECEIPTS) || ns_is(c, NS_MARKERS) ||
		           is_el(c, NS_AXOLOTL, "encrypted") ||
		           is_el(c, NS_OMEMO2, "encrypted") ||
		           is_el(c, NS_OPENPGP, "openpgp") ||
		           is_el(c, NS_LEGACY_PGP, "x")) {
			content = 1;
		}
	}
	return content || store;
}

/* 1 if the stanza-id's 'by' names bare (compared prepared). */
static int
by_is(const char *by, const char *bare)
{
	struct pgn_jid *j = NULL;
	int same;

	if (by == NULL)
		return 0;
	if (strcmp(by, bare) == 0)
		return 1;
	if (pgn_jid_parse(by, &j) != 0)
		return 0;
	same = j->resource == NULL && strcmp(j->bare, bare) == 0;
	pgn_jid_free(j);
	return same;
}

/* XEP-0359 §3 rule 3 and XEP-0313 §8.3: a stanza-id claiming to be from
 * the recipient's archive can only be a forgery on the way in. */
static void
strip_stanza_ids(struct pgn_xml *xml, const char *bare)
{
	struct pgn_xml *c, *next;

	for (c = pgn_xml_first_child(xml); c != NULL; c = next) {
		next = pgn_xml_next(c);
		if (is_el(c, NS_SID, "stanza-id") &&
		    by_is(pgn_xml_attr(c, "by"), bare)) {
			pgn_xml_unlink(c);
			pgn_xml_free(c);
		}
	}
}

/* ---- archiving: rows and group commit ---- */

static void
row_free(struct row *r)
{
	if (r == NULL)
		return;
	row_free(r->pair);
	free(r->host);
	free(r->user);
	free(r->origin_id);
	free(r->with_bare);
	free(r->with_res);
	free(r->text);
	free(r);
}

/* The message's rows are committed (ok): it moves on; or they cannot be
 * written: its sender is told, and it goes nowhere, so that the archive
 * holds what was delivered.  Takes r. */
static void
row_done(struct row *r, int ok)
{
	struct pgn_hold *h = r->hold;
	struct follower *f = r->follow, *fnext;

	r->follow = NULL;
	if (r->held_for != NULL) {
		r->held_for->held--;
		if (r->held_for->last_held == r)
			r->held_for->last_held = NULL;
	}
	/* The failure itself is logged once per statement. */
	if (!ok)
		pgn_log(PGN_LOG_DEBUG,
		        "mod_mam %s: message %s of %s not "
		        "archived, bounced",
		        r->mm->host, r->sid, r->user);
	row_free(r);
	if (h != NULL) {
		if (ok)
			pgn_hold_resume(h);
		else
			pgn_hold_bounce(h, "wait", "internal-server-error",
			                NULL);
	}
	/* The messages that were not archived, in order, right after. */
	for (; f != NULL; f = fnext) {
		fnext = f->next;
		pgn_hold_resume(f->hold);
		free(f);
	}
}

/* At unload: nothing can be routed any more.  Takes r. */
void
row_drop(struct row *r)
{
	struct follower *f, *fnext;

	if (r->hold != NULL)
		pgn_stanza_free(pgn_hold_take(r->hold));
	for (f = r->follow; f != NULL; f = fnext) {
		fnext = f->next;
		pgn_stanza_free(pgn_hold_take(f->hold));
		free(f);
	}
	r->follow = NULL;
	row_free(r);
}

void
pass_behind(struct uprefs *p, struct pgn_hold *h)
{
	struct row *r = p != NULL ? p->last_held : NULL;
	struct follower *f;

	if (r == NULL || (f = calloc(1, sizeof(*f))) == NULL) {
		/* Nothing to wait for (or no memory: better early than
		 * never). */
		pgn_hold_resume(h);
		return;
	}
	f->hold = h;
	if (r->follow == NULL)
		r->follow_tail = &r->follow;
	*r->follow_tail = f;
	r->follow_tail = &f->next;
}

static void
write_done(struct mam *mm)
{
	if (--mm->inflight == 0)
		flush_rows(mm);
	drain_overflow(mm);
}

static void
row_params(struct mam *mm, struct row *r, const char *p[9])
{
	snprintf(r->ts, sizeof(r->ts), "%" PRId64, next_ts(mm));
	p[0] = r->host;
	p[1] = r->user;
	p[2] = r->ts;
	p[3] = r->sid;
	p[4] = r->origin_id;
	p[5] = r->with_bare;
	p[6] = r->with_res;
	p[7] = r->outgoing ? "1" : "0";
	p[8] = r->text;
}

static void submit_rows(struct mam *mm, struct row *head, int nrows,
                        int single);

static void
batch_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct batch *b = arg;
	struct mam *mm = b->mm;
	struct row *r = b->head, *next;
	int single = b->single;

	(void)owner;
	free(b);
	if (res->error == 0 || single || res->error == -EAGAIN) {
		/* Committed; or one message's rows; or the store was
		 * unavailable for longer than it holds requests: writing
		 * the rows one by one would only fail again. */
		/* An unavailable store logs the outage itself, once. */
		if (res->error != 0)
			pgn_log(res->error == -EAGAIN ? PGN_LOG_DEBUG
			                              : PGN_LOG_WARN,
			        "mod_mam %s: archiving failed, bouncing "
			        "the messages: %s",
			        mm->host, res->errmsg);
		for (; r != NULL; r = next) {
			next = r->next;
			row_done(r, res->error == 0);
		}
	} else {
		/* Rolled back (an account deleted meanwhile): each
		 * message alone, so that the others are kept. */
		pgn_log(PGN_LOG_DEBUG,
		        "mod_mam %s: batch refused (%s), "
		        "writing its messages one by one",
		        mm->host, res->errmsg);
		for (; r != NULL; r = next) {
			next = r->next;
			r->next = NULL;
			submit_rows(mm, r, r->pair != NULL ? 2 : 1, 1);
		}
	}
	write_done(mm);
}

/* The INSERT of the messages of the list head (nrows rows with their
 * pairs): one statement, one round trip to the store's server, one
 * commit.  *out is malloc'd (caller frees); params (9 per row) are
 * borrowed from the rows.  0 or -ENOMEM. */
static int
rows_sql(struct mam *mm, struct row *head, int nrows, char **out,
         const char **params)
{
	static const char sql_head[] =
	        "INSERT INTO mam_messages (host, username, ts, stanza_id, "
	        "origin_id, with_bare, with_resource, outgoing, stanza) "
	        "VALUES ";
	/* A replay of a statement whose COMMIT may have committed (the
	 * store runs a request again after a lost connection) finds its
	 * rows there: the ids are unique and random, so a conflict can
	 * only be the same row. */
	static const char sql_tail[] =
	        " ON CONFLICT (host, username, stanza_id) DO NOTHING";
	/* ", ($2296, $2297, CAST($2298 AS BIGINT), ...)" at most. */
	static const size_t row_sql = 128;
	char *sql;
	size_t len;
	int n = 0;

	if ((sql = malloc(sizeof(sql_head) + (size_t)nrows * row_sql +
	                  sizeof(sql_tail))) == NULL)
		return -ENOMEM;
	len = (size_t)snprintf(sql, sizeof(sql_head), "%s", sql_head);
	for (struct row *r = head; r != NULL; r = r->next) {
		/* The sender's copy first: ids follow the order of events. */
		for (struct row *x = r->pair != NULL ? r->pair : r; x != NULL;
		     x = x == r ? NULL : r) {
			int k = 1 + 9 * n;

			row_params(mm, x, &params[9 * n]);
			len += (size_t)snprintf(
			        sql + len, row_sql,
			        "%s($%d, $%d, CAST($%d AS BIGINT), $%d, $%d, "
			        "$%d, $%d, CAST($%d AS INTEGER), $%d)",
			        n > 0 ? ", " : "", k, k + 1, k + 2, k + 3,
			        k + 4, k + 5, k + 6, k + 7, k + 8);
			n++;
		}
	}
	memcpy(sql + len, sql_tail, sizeof(sql_tail));
	*out = sql;
	return 0;
}

/* Writes the messages of the list head (nrows rows with their pairs).
 * Takes the list. */
static void
submit_rows(struct mam *mm, struct row *head, int nrows, int single)
{
	const char *params[9 * STORE_BATCH] = {NULL};
	char *sql = NULL;
	struct batch *b = NULL;
	struct row *r, *next;

	if ((b = calloc(1, sizeof(*b))) == NULL ||
	    rows_sql(mm, head, nrows, &sql, params) != 0)
		goto fail;
	b->mm = mm;
	b->head = head;
	b->single = single;
	if (pgn_store_query(mm->store, sql, 9 * nrows, params, 0, batch_done,
	                    b) != 0)
		goto fail;
	free(sql);
	mm->inflight++;
	return;
fail:
	pgn_log(PGN_LOG_ERROR, "mod_mam %s: cannot queue archive rows, "
	        "bouncing the messages", mm->host);
	free(b);
	free(sql);
	for (r = head; r != NULL; r = next) {
		next = r->next;
		row_done(r, 0);
	}
}

/* What xml takes as stored text (serialised for that: only for quotas
 * and the overload path); 0 on allocation failure. */
static size_t
xml_bytes(const struct pgn_xml *xml)
{
	char *text = pgn_xml_to_string(xml, PGN_NS_CLIENT);
	size_t n = text != NULL ? strlen(text) : 0;

	free(text);
	return n;
}

/* The text r holds, with its pair. */
static size_t
row_bytes(const struct row *r)
{
	return r->len + (r->pair != NULL ? r->pair->len : 0);
}

/* Submits the queued messages, up to STORE_BATCH rows or
 * STORE_BATCH_BYTES. */
void
flush_rows(struct mam *mm)
{
	struct row *head = mm->qhead, *last = NULL, *r;
	int n = 0, k = 0;
	size_t bytes = 0;

	if (head == NULL)
		return;
	for (r = head; r != NULL; r = r->next) {
		int rows = r->pair != NULL ? 2 : 1;

		if (last != NULL && (n + rows > STORE_BATCH ||
		                     bytes + row_bytes(r) > STORE_BATCH_BYTES))
			break;
		n += rows;
		k++;
		bytes += row_bytes(r);
		last = r;
	}
	mm->queued_bytes -= bytes;
	mm->qhead = last->next;
	if (mm->qhead == NULL)
		mm->qtail = NULL;
	last->next = NULL;
	mm->queued -= (size_t)k;
	submit_rows(mm, head, n, k == 1);
}

/* Queues r (takes it): written now if nothing is being written, else
 * with the next batch. */
static void
queue_row(struct mam *mm, struct row *r)
{
	if (mm->inflight == 0) {
		submit_rows(mm, r, r->pair != NULL ? 2 : 1, 1);
		return;
	}
	if (mm->qtail != NULL)
		mm->qtail->next = r;
	else
		mm->qhead = r;
	mm->qtail = r;
	mm->queued++;
	mm->queued_bytes += row_bytes(r);
}

/* The write queue takes no more for now (the store does not keep up). */
int
queue_full(const struct mam *mm)
{
	return mm->queued >= MAX_QUEUED || mm->queued_bytes >= MAX_QUEUED_BYTES;
}

static int quota_on(const struct mam *mm);
static int quota_admit(struct mam *mm, const char *bare, size_t len);
static void quota_count(struct mam *mm, const char *bare, size_t len,
                        int queued);
static void quota_queued(struct mam *mm, const char *bare);

/* The sender's copy of st, which the recipient's host will write with
 * its own: 1 if this host's quota admits it, counted now (so that a
 * burst is not admitted whole before the first row is queued).  The
 * trim waits for the row to be queued: on this host, archive_held()
 * calls quota_queued(); another host's instance cannot, so the trim
 * runs now and sees the rows queued so far. */
static int
quota_admit_sender(struct mam *mm, const struct pgn_stanza *st)
{
	size_t len;

	if (!quota_on(mm))
		return 1;
	if ((len = xml_bytes(st->xml)) == 0)
		return 0;
	if (!quota_admit(mm, st->from->bare, len))
		return 0;
	quota_count(mm, st->from->bare, len,
	            strcmp(st->to->domain, mm->host) != 0);
	return 1;
}

/* A row for st in owner's archive (owner on host, talking with peer).
 * NULL on allocation failure. */
static struct row *
make_row(struct mam *mm, struct pgn_stanza *st, const struct pgn_jid *owner,
         const struct pgn_jid *peer, int outgoing)
{
	struct row *r;
	const char *origin = NULL;

	for (const struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c))
		if (is_el(c, NS_SID, "origin-id")) {
			origin = pgn_xml_attr(c, "id");
			break;
		}
	if (origin != NULL && strlen(origin) > MAX_ORIGIN_ID_LEN)
		origin = NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->mm = mm;
	r->outgoing = outgoing;
	/* Stored without our stanza-id: the result carries it. */
	if (make_stanza_id(mm, r->sid) != 0 ||
	    (r->host = strdup(owner->domain)) == NULL ||
	    (r->user = strdup(owner->node)) == NULL ||
	    (r->with_bare = strdup(peer->bare)) == NULL ||
	    (peer->resource != NULL &&
	     (r->with_res = strdup(peer->resource)) == NULL) ||
	    (origin != NULL && (r->origin_id = strdup(origin)) == NULL) ||
	    (r->text = pgn_xml_to_string(st->xml, PGN_NS_CLIENT)) == NULL) {
		row_free(r);
		return NULL;
	}
	r->len = strlen(r->text);
	return r;
}

/* The rows of st: on the sender's host (outgoing) the sender's copy; on
 * the recipient's, the recipient's copy (want) and the sender's when
 * the sender's host left it here (st->archive_sender), which share one
 * statement; an incoming message is stamped with its stanza id.  *out
 * is NULL when there is nothing to write.  0 or -ENOMEM. */
static int
make_rows(struct mam *mm, struct pgn_stanza *st, int outgoing, int want,
          struct row **out)
{
	struct row *r = NULL, *pair = NULL;
	struct pgn_xml *sid;

	*out = NULL;
	if (outgoing) {
		if ((r = make_row(mm, st, st->from, st->to, 1)) == NULL)
			goto fail;
		if (!quota_admit(mm, st->from->bare, r->len))
			row_free(r);
		else
			*out = r;
		return 0;
	}
	/* The sender's copy first, without our stanza-id. */
	if (st->archive_sender &&
	    (pair = make_row(mm, st, st->from, st->to, 1)) == NULL)
		goto fail;
	st->archive_sender = 0;
	if (!want) {
		*out = pair;
		return 0;
	}
	if ((r = make_row(mm, st, st->to, st->from, 0)) == NULL)
		goto fail;
	if (!quota_admit(mm, st->to->bare, r->len)) {
		/* Over the recipient's quota (refuse): delivered without a
		 * stanza id, in no archive of the recipient's. */
		row_free(r);
		*out = pair;
		return 0;
	}
	if ((sid = pgn_xml_add_child(st->xml, NS_SID, "stanza-id")) == NULL ||
	    pgn_xml_set_attr(sid, "by", st->to->bare) != 0 ||
	    pgn_xml_set_attr(sid, "id", r->sid) != 0) {
		if (sid != NULL) {
			pgn_xml_unlink(sid);
			pgn_xml_free(sid);
		}
		goto fail;
	}
	r->pair = pair;
	*out = r;
	return 0;
fail:
	pgn_log(PGN_LOG_ERROR, "mod_mam %s: cannot archive a message of %s",
	        mm->host, st->from->bare);
	row_free(r);
	row_free(pair);
	return -ENOMEM;
}

/* 1 if the router hands st to a session right after the inbound events
 * (RFC 6121 §8.5: the session of the full JID, or the available
 * resources of non-negative priority). */
static int
will_deliver(struct mam *mm, const struct pgn_stanza *st)
{
	if (st->to->resource != NULL)
		for (struct pgn_session *s =
		             pgn_user_sessions(mm->srv, st->to->bare);
		     s != NULL; s = pgn_session_next(s))
			if (strcmp(pgn_session_jid(s)->resource,
			           st->to->resource) == 0)
				return 1;
	return pgn_user_top_priority(mm->srv, st->to->bare) >= 0;
}

/* 1 if st, an incoming message, must wait for its rows to commit
 * before it moves on: someone takes it now, or earlier messages to the
 * same user still wait for theirs (p: the user's, may be NULL); if it
 * went to offline storage at once, it would be stored before them. */
static int
must_hold(struct mam *mm, const struct pgn_stanza *st, const struct uprefs *p)
{
	return will_deliver(mm, st) || (p != NULL && p->held > 0);
}

/* Nobody to deliver st to now: its rows (r, taken) go with it, to be
 * committed with its offline copy (mod_offline), or never if it is
 * bounced instead.  0 or -ENOMEM. */
static int
attach_rows(struct mam *mm, struct pgn_stanza *st, struct row *r)
{
	const char *params[18] = {NULL};
	int nrows = r->pair != NULL ? 2 : 1, rc;
	char *sql = NULL;

	rc = rows_sql(mm, r, nrows, &sql, params);
	if (rc == 0)
		rc = pgn_stanza_add_write(st, sql, 9 * nrows, params);
	free(sql);
	row_free(r);
	return rc;
}

/* A row of len bytes for owner (if any) was queued or attached, and
 * with pair the sender's copy (counted by quota_admit_sender()). */
static void
quota_count_rows(struct mam *mm, const struct pgn_stanza *st,
                 const char *owner, size_t len, int pair)
{
	if (owner != NULL)
		quota_count(mm, owner, len, 1);
	if (pair)
		quota_queued(mm, st->from->bare);
}

/* Archives the held message h (see make_rows), which moves on once its
 * rows committed, or is bounced if they cannot be.  Takes h. */
static void
archive_held(struct mam *mm, struct pgn_hold *h, int outgoing, int want)
{
	struct pgn_stanza *st = pgn_hold_stanza(h);
	struct uprefs *p = NULL;
	struct row *r;
	const char *owner = NULL;
	size_t len = 0;
	int pair = 0;

	if (queue_full(mm)) {
		/* The store does not keep up (a message that waited for the
		 * preferences; others are held before). */
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: %zu rows waiting for the "
		        "store, refusing a message",
		        mm->host, mm->queued);
		pgn_hold_bounce(h, "wait", "resource-constraint", NULL);
		return;
	}
	if (make_rows(mm, st, outgoing, want, &r) != 0)
		goto fail;
	if (r != NULL) {
		/* Owners' quotas count rows once queued (a trim then sees
		 * them) or attached to the offline copy; the sender's copy
		 * written here was counted on the sender's host. */
		len = r->len;
		if (outgoing)
			owner = st->from->bare;
		else if (r->outgoing)
			pair = 1; /* only the sender's copy */
		else {
			owner = st->to->bare;
			pair = r->pair != NULL;
		}
	}
	if (!outgoing)
		p = pgn_map_get(mm->prefs, st->to->bare);
	if (r != NULL && !outgoing && !must_hold(mm, st, p)) {
		if (attach_rows(mm, st, r) != 0)
			goto fail;
		r = NULL;
		quota_count_rows(mm, st, owner, len, pair);
	}
	if (r == NULL) {
		pgn_hold_resume(h);
		return;
	}
	r->hold = h;
	if (p != NULL) {
		r->held_for = p;
		p->held++;
		p->last_held = r;
	}
	queue_row(mm, r);
	quota_count_rows(mm, st, owner, len, pair);
	return;
fail:
	pgn_hold_bounce(h, "wait", "internal-server-error", NULL);
}

static void
has_mam_feature(const char *var, void *arg)
{
	if (strcmp(var, NS_MAM2) == 0)
		*(int *)arg = 1;
}

/* 1 if the recipient's host archives too: then it writes the sender's
 * copy with the recipient's, once the message is accepted there. */
static int
peer_archives(struct mam *mm, const struct pgn_jid *peer)
{
	struct pgn_host *h;
	int found = 0;

	if (peer->node == NULL ||
	    (h = pgn_server_host(mm->srv, peer->domain)) == NULL)
		return 0;
	pgn_host_foreach_feature(h, has_mam_feature, &found);
	return found;
}

/* The decision v for the held message h is known (p: the owner's
 * preferences): archive it, leave the sender's copy to the recipient's
 * host, or let it go.  Takes h. */
void
settle(struct mam *mm, struct pgn_hold *h, int outgoing, enum verdict v,
       struct uprefs *p)
{
	struct pgn_stanza *st = pgn_hold_stanza(h);

	if (outgoing) {
		if (v == V_YES && peer_archives(mm, st->to)) {
			/* The recipient's host writes this copy with its
			 * own; the sender's quota is this host's to check. */
			st->archive_sender = quota_admit_sender(mm, st);
			v = V_NO;
		}
	} else if (p != NULL && p->state == P_NOACCOUNT) {
		/* No such user: the message is bounced further on, and is
		 * in no archive. */
		st->archive_sender = 0;
	}
	if (v == V_YES || (!outgoing && st->archive_sender))
		archive_held(mm, h, outgoing, v == V_YES);
	else if (!outgoing)
		pass_behind(p, h);
	else
		pgn_hold_resume(h);
}

/* An incoming message that is not archived (p: its recipient's
 * preferences, or NULL): PGN_EVENT_PASS when nothing of the user waits,
 * else it is held to keep its place behind what waits (messages waiting
 * for the preferences or the roster, then rows waiting for their
 * commit). */
static int
keep_place(struct pgn_event *ev, struct uprefs *p)
{
	struct waiter *w, *q;
	struct pgn_hold *h;

	if (p == NULL)
		return PGN_EVENT_PASS;
	for (q = p->waiters; q != NULL && q->hold == NULL; q = q->next)
		;
	if (q == NULL && p->last_held == NULL)
		return PGN_EVENT_PASS;
	if ((h = pgn_event_hold(ev)) == NULL)
		return PGN_EVENT_PASS; /* out of memory: early, not lost */
	if (q == NULL) {
		pass_behind(p, h);
		return PGN_EVENT_HANDLED;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		pgn_hold_resume(h);
		return PGN_EVENT_HANDLED;
	}
	w->hold = h;
	w->pass = 1;
	*p->wait_tail = w;
	p->wait_tail = &w->next;
	return PGN_EVENT_HANDLED;
}

/* ---- archiving: the events ---- */

static int
on_message(struct pgn_event *ev, struct mam *mm, int outgoing)
{
	struct pgn_stanza *st = ev->stanza;
	const struct pgn_jid *owner, *peer;
	struct pgn_hold *h;
	struct uprefs *p;
	struct waiter *w;
	enum verdict v;

	if (st == NULL || st->kind != PGN_STANZA_MESSAGE)
		return PGN_EVENT_PASS;
	owner = outgoing ? st->from : st->to;
	peer = outgoing ? st->to : st->from;
	if (owner == NULL || peer == NULL || owner->node == NULL ||
	    strcmp(owner->domain, mm->host) != 0)
		return PGN_EVENT_PASS;
	if (!outgoing)
		strip_stanza_ids(st->xml, owner->bare);
	/* To oneself: archived once, on the way in. */
	if (outgoing && strcmp(owner->bare, peer->bare) == 0)
		return PGN_EVENT_PASS;
	if (!archivable(st))
		return outgoing ? PGN_EVENT_PASS
		                : keep_place(ev, pgn_map_get(mm->prefs,
		                                             owner->bare));
	p = prefs_get(mm, owner->bare, owner->node, 0);
	v = p != NULL ? decide(p, peer, 0) : V_NO;
	if (v == V_ROSTER) /* behind the user's waiting messages, if any */
		v = p->waiters != NULL || p->loading ? V_NEED
		                                     : roster_ask(p, peer);
	if (outgoing && v == V_YES && peer_archives(mm, peer)) {
		/* Written by the recipient's host, with its copy (if this
		 * host's quota admits it). */
		st->archive_sender = quota_admit_sender(mm, st);
		return PGN_EVENT_PASS;
	}
	if (!outgoing && p != NULL && p->state == P_NOACCOUNT)
		st->archive_sender = 0;
	if (v == V_NO && (outgoing || !st->archive_sender))
		return outgoing ? PGN_EVENT_PASS : keep_place(ev, p);
	if (queue_full(mm) || mm->over_head != NULL) {
		/* The store does not keep up.  Going on unarchived would
		 * deliver and acknowledge (XEP-0198) a message that is not
		 * in the archive, so the message waits (in order, behind
		 * the others) until the queue drains; past MAX_OVERFLOW the
		 * sender is told to try again. */
		if (mm->nover < MAX_OVERFLOW &&
		    mm->over_bytes < MAX_OVERFLOW_BYTES &&
		    (w = calloc(1, sizeof(*w))) != NULL) {
			if ((w->hold = pgn_event_hold(ev)) != NULL) {
				w->outgoing = outgoing;
				w->bytes = xml_bytes(st->xml);
				mm->over_bytes += w->bytes;
				*mm->over_tail = w;
				mm->over_tail = &w->next;
				if (mm->nover++ == 0)
					pgn_log(PGN_LOG_WARN,
					        "mod_mam %s: %zu rows waiting "
					        "for the store, holding "
					        "messages",
					        mm->host, mm->queued);
				return PGN_EVENT_HANDLED;
			}
			free(w);
		}
		if (mm->overload_refused++ % 1000 == 0)
			pgn_log(PGN_LOG_WARN,
			        "mod_mam %s: archive overloaded, refusing "
			        "messages (%llu so far)",
			        mm->host, mm->overload_refused);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	if (v == V_NEED) {
		/* The decision needs the store: the message waits for one
		 * read. */
		if ((w = calloc(1, sizeof(*w))) == NULL ||
		    (w->hold = pgn_event_hold(ev)) == NULL) {
			free(w);
			pgn_event_error(ev, "wait", "resource-constraint");
			return PGN_EVENT_HANDLED;
		}
		w->outgoing = outgoing;
		*p->wait_tail = w;
		p->wait_tail = &w->next;
		prefs_load(p);
		return PGN_EVENT_HANDLED;
	}
	if (!outgoing && !must_hold(mm, st, p)) {
		/* To offline storage (or back to the sender): the rows go
		 * with the message, nothing waits here. */
		struct row *r;

		if (make_rows(mm, st, 0, v == V_YES, &r) != 0 ||
		    (r != NULL && attach_rows(mm, st, r) != 0)) {
			pgn_event_error(ev, "wait", "internal-server-error");
			return PGN_EVENT_HANDLED;
		}
		return PGN_EVENT_PASS;
	}
	if ((h = pgn_event_hold(ev)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	archive_held(mm, h, outgoing, v == V_YES);
	return PGN_EVENT_HANDLED;
}

int
on_outgoing(struct pgn_event *ev, void *arg)
{
	return on_message(ev, arg, 1);
}

int
on_incoming(struct pgn_event *ev, void *arg)
{
	return on_message(ev, arg, 0);
}

/* ---- quotas (max_messages, max_bytes, quota_policy) ----
 *
 * Each archive's count and bytes are cached with the user's preferences
 * (read in the same statement from mam_counts, kept by triggers) and
 * counted up as rows are queued, so a decision never waits for the
 * store.  drop_oldest: once a queued row takes the archive over a limit,
 * one statement deletes the oldest rows that are over it, computed from
 * the stored counters (exact whatever the cache says), then the counters
 * are read again.  refuse: a message that would not fit is not archived
 * in that archive (it is still delivered; see doc/modules.md).  A
 * message larger than max_bytes is never archived. */

static int
quota_on(const struct mam *mm)
{
	return mm->max_messages > 0 || mm->max_bytes > 0;
}

static int
quota_over(const struct mam *mm, const struct uprefs *p, int64_t more_n,
           int64_t more_bytes)
{
	return (mm->max_messages > 0 && p->qn + more_n > mm->max_messages) ||
	       (mm->max_bytes > 0 && p->qbytes + more_bytes > mm->max_bytes);
}

static void trim_start(struct uprefs *p);

/* 1: a row of len bytes may be archived for bare. */
static int
quota_admit(struct mam *mm, const char *bare, size_t len)
{
	struct uprefs *p;

	if (!quota_on(mm))
		return 1;
	if (mm->max_bytes > 0 && len > (size_t)mm->max_bytes) {
		mm->quota_refused++;
		pgn_log(PGN_LOG_DEBUG,
		        "mod_mam %s: a message of %zu bytes for %s is over "
		        "max_bytes, not archived",
		        mm->host, len, bare);
		return 0;
	}
	if (!mm->quota_refuse || (p = pgn_map_get(mm->prefs, bare)) == NULL ||
	    p->state != P_LOADED || !quota_over(mm, p, 1, (int64_t)len))
		return 1;
	/* Retention or pigeonctl may have deleted since the counters were
	 * read: counted again (one row) for the next message. */
	if (!p->trimming)
		trim_start(p);
	if (mm->quota_refused++ % 1000 == 0)
		pgn_log(PGN_LOG_INFO,
		        "mod_mam %s: the archive of %s is full, not archiving "
		        "(%llu messages refused so far)",
		        mm->host, bare, mm->quota_refused);
	return 0;
}

/* A row of len bytes for bare was admitted.  With queued, it is in the
 * write queue (or attached to an offline copy) and an archive over the
 * quota is trimmed now; else the recipient's host queues it and calls
 * quota_queued(). */
static void
quota_count(struct mam *mm, const char *bare, size_t len, int queued)
{
	struct uprefs *p;

	if (!quota_on(mm) || (p = pgn_map_get(mm->prefs, bare)) == NULL ||
	    p->state != P_LOADED)
		return;
	p->qn++;
	p->qbytes += (int64_t)len;
	p->dn++;
	p->dbytes += (int64_t)len;
	if (queued)
		quota_queued(mm, bare);
}

/* A row counted for bare is queued: drop_oldest trims if over. */
static void
quota_queued(struct mam *mm, const char *bare)
{
	struct uprefs *p;

	if (!quota_on(mm) || mm->quota_refuse ||
	    (p = pgn_map_get(mm->prefs, bare)) == NULL ||
	    p->state != P_LOADED)
		return;
	if (!p->trimming && quota_over(mm, p, 0, 0))
		trim_start(p);
}

static void
totals_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct uprefs *p = arg;
	struct mam *mm = p->mm;
	int again = p->trimming == 1;

	(void)owner;
	p->trimming = 0;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: cannot count the archive of %s: %s",
		        mm->host, p->bare, res->errmsg);
		return;
	}
	p->qn = (res->nrows > 0 ? store_int(res, 0, 0) : 0) + p->dn;
	p->qbytes = (res->nrows > 0 ? store_int(res, 0, 1) : 0) + p->dbytes;
	/* Still over: more than one statement's worth, or rows queued
	 * meanwhile. */
	if (again && !mm->quota_refuse && quota_over(mm, p, 0, 0))
		trim_start(p);
}

/* Reads the counters again; the rows queued before go first, those
 * queued later are counted on top. */
static void
totals_read(struct uprefs *p)
{
	const char *params[2] = {p->mm->host, p->user};

	flush_rows(p->mm);
	p->dn = p->dbytes = 0;
	if (pgn_store_query(p->mm->store, sql_totals, 2, params, 0, totals_done,
	                    p) != 0) {
		p->trimming = 0;
		return;
	}
	p->trimming = 1;
}

static void
trim_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct uprefs *p = arg;
	struct mam *mm = p->mm;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: cannot trim the archive of %s: %s",
		        mm->host, p->bare, res->errmsg);
		p->trimming = 0;
		return;
	}
	if (res->changes > 0) {
		mm->quota_dropped += (unsigned long long)res->changes;
		pgn_log(PGN_LOG_DEBUG,
		        "mod_mam %s: %" PRId64 " old messages of %s deleted "
		        "(quota)",
		        mm->host, res->changes, p->bare);
	}
	/* Nothing deleted: the cache was ahead of the store (a row that
	 * failed, retention); the read below puts it right, and does not
	 * start another round (whatever the counters say: no loop). */
	totals_read(p);
	if (res->changes == 0 && p->trimming)
		p->trimming = 2;
}

/* drop_oldest: trims p's archive to its quota (the queued rows first, so
 * that the statement sees them); refuse: only counts it again. */
static void
trim_start(struct uprefs *p)
{
	struct mam *mm = p->mm;
	char n[24], b[24], k[24];
	const char *params[5] = {mm->host, p->user, n, b, k};
	int64_t rows = 1;

	if (mm->quota_refuse) {
		totals_read(p);
		return;
	}
	/* The oldest rows the statement looks at (and reads the size of):
	 * what the cache says is over, twice over for bytes (rows differ in
	 * size); if that is not enough, the next round goes on. */
	if (mm->max_messages > 0 && p->qn - mm->max_messages > rows)
		rows = p->qn - mm->max_messages;
	if (mm->max_bytes > 0 && p->qn > 0 && p->qbytes > mm->max_bytes) {
		int64_t avg = p->qbytes / p->qn > 0 ? p->qbytes / p->qn : 1;
		int64_t need = 2 * ((p->qbytes - mm->max_bytes) / avg + 1);
		if (need > rows)
			rows = need;
	}
	if (rows > TRIM_BATCH)
		rows = TRIM_BATCH;
	snprintf(n, sizeof(n), "%ld", mm->max_messages);
	snprintf(b, sizeof(b), "%ld", mm->max_bytes);
	snprintf(k, sizeof(k), "%" PRId64, rows);
	flush_rows(mm);
	if (pgn_store_query(mm->store, mm->sql_trim, 5, params, 0, trim_done,
	                    p) != 0)
		return;
	p->trimming = 1;
}

struct stats_req {
	struct mam *mm;
	struct pgn_command *cmd;
};

static void
stats_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct stats_req *q = arg;
	struct mam *mm = q->mm;
	char text[512];

	(void)owner;
	if (res->error != 0 || res->nrows != 1) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "storage error");
		free(q);
		return;
	}
	snprintf(text, sizeof(text),
	         "archive_users %" PRId64 "\n"
	         "archive_messages %" PRId64 "\n"
	         "archive_bytes %" PRId64 "\n"
	         "archive_users_at_quota %" PRId64 "\n"
	         "archive_max_messages %ld\n"
	         "archive_max_bytes %ld\n"
	         "archive_quota_refused %llu\n"
	         "archive_quota_dropped %llu\n"
	         "archive_duplicates_dropped %llu\n",
	         store_int(res, 0, 0), store_int(res, 0, 1),
	         store_int(res, 0, 2), store_int(res, 0, 3), mm->max_messages,
	         mm->max_bytes, mm->quota_refused, mm->quota_dropped,
	         mm->dedup_dropped);
	pgn_command_reply(q->cmd, PGN_CTL_OK, text);
	free(q);
}

/* pigeonctl archive_stats HOST, and this host's part of pigeonctl stats:
 * the stored figures of the host's
 * archives (one pass over mam_counts, one row per user) and what the
 * quotas and the duplicate check did since the start. */
void
cmd_stats(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	struct mam *mm = arg;
	struct stats_req *q;
	char n[24], b[24];
	const char *params[3] = {mm->host, n, b};

	(void)argc;
	(void)argv;
	if ((q = calloc(1, sizeof(*q))) == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	q->mm = mm;
	q->cmd = cmd;
	snprintf(n, sizeof(n), "%ld", mm->max_messages);
	snprintf(b, sizeof(b), "%ld", mm->max_bytes);
	/* What is queued counts. */
	flush_rows(mm);
	if (pgn_store_query(mm->store, sql_stats, 3, params, 0, stats_done,
	                    q) != 0) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error");
		free(q);
	}
}
