/* mod_mam: queries (§4) and archive metadata (§5). */
#include "mam.h"

static const char sql_metadata[] =
        "SELECT * FROM (SELECT stanza_id, ts FROM mam_messages "
        "WHERE host = $1 AND username = $2 ORDER BY id LIMIT 1) AS a "
        "UNION ALL SELECT * FROM (SELECT stanza_id, ts FROM mam_messages "
        "WHERE host = $1 AND username = $2 ORDER BY id DESC LIMIT 1) AS b";

/* ---- requests to the archive: common ---- */

/* The request comes from a session of the archive's owner (§8.1: nobody
 * else may read it). */
int
from_owner(const struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;

	return ev->origin != NULL && st->from != NULL && st->to != NULL &&
	       st->from->node != NULL && st->to->node != NULL &&
	       strcmp(st->from->bare, st->to->bare) == 0;
}

const char *
request_ns(const struct pgn_stanza *st)
{
	const struct pgn_xml *q = pgn_xml_first_child(st->xml);

	return q != NULL && ns_is(q, NS_MAM1) ? NS_MAM1 : NS_MAM2;
}

/* Answers a held iq straight onto the session that sent it (after the
 * result messages, in order), with payload (taken, may be NULL) or,
 * when condition is set, an error.  Takes h. */
void
answer_held(struct mam *mm, struct pgn_hold *h, uint64_t sid,
            struct pgn_xml *payload, const char *type, const char *condition)
{
	struct pgn_stanza *req = pgn_hold_take(h);
	struct pgn_stanza *r;
	struct pgn_session *s;

	if (condition != NULL) {
		pgn_xml_free(payload);
		r = pgn_stanza_error_reply(req, type, condition, NULL);
	} else {
		r = pgn_stanza_iq_result(req, payload);
	}
	pgn_stanza_free(req);
	if (r == NULL) {
		pgn_log(PGN_LOG_ERROR,
		        "mod_mam %s: out of memory answering "
		        "a request",
		        mm->host);
		return;
	}
	/* A session that has gone gets nothing. */
	if ((s = pgn_session_find(mm->srv, sid)) != NULL)
		pgn_session_send(s, r->xml);
	pgn_stanza_free(r);
}

/* ---- queries (§4) ---- */

static void
query_free(struct query *q)
{
	if (q == NULL)
		return;
	free(q->queryid);
	free(q->bare);
	free(q->user);
	free(q->with_bare);
	free(q->with_res);
	free(q->after_id);
	free(q->before_id);
	strv_free(q->ids, q->nids);
	free(q->rsm_after);
	free(q->rsm_before);
	free(q);
}

/* A stanza id from a request: non-empty and not absurdly long. */
static int
take_id(const struct pgn_xml *el, char **out)
{
	char *t = pgn_xml_text(el);

	if (t == NULL)
		return -ENOMEM;
	if (t[0] == '\0' || strlen(t) > MAX_ID_LEN) {
		free(t);
		return -EINVAL;
	}
	free(*out);
	*out = t;
	return 0;
}

/* The single <value/> of a field, malloc'd, or NULL (*rc set: -EINVAL
 * without one, -ENOMEM). */
static char *
field_value(const struct pgn_xml *field, int *rc)
{
	const struct pgn_xml *v = pgn_xml_child(field, NS_XDATA, "value");
	char *t;

	*rc = -EINVAL;
	if (v == NULL)
		return NULL;
	if ((t = pgn_xml_text(v)) == NULL) {
		*rc = -ENOMEM;
		return NULL;
	}
	*rc = 0;
	return t;
}

/* Reads the data form (§4.1).  0, -EINVAL (bad-request), -ENOTSUP
 * (feature-not-implemented: a field we do not know, §4.1.5) or
 * -ENOMEM. */
static int
parse_form(struct mam *mm, struct query *q, const struct pgn_xml *x)
{
	const char *type = pgn_xml_attr(x, "type");
	unsigned nfields = 0;
	int rc;

	if (type != NULL && strcmp(type, "submit") != 0)
		return -EINVAL;
	for (const struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
	     f = pgn_xml_next(f)) {
		const char *var = pgn_xml_attr(f, "var");
		char *val = NULL;

		if (!is_el(f, NS_XDATA, "field"))
			continue;
		if (++nfields > MAX_FIELDS || var == NULL)
			return -EINVAL;
		if (strcmp(var, "ids") == 0) {
			for (const struct pgn_xml *v = pgn_xml_first_child(f);
			     v != NULL; v = pgn_xml_next(v)) {
				char **nv;
				if (!is_el(v, NS_XDATA, "value"))
					continue;
				if (q->nids >= (size_t)mm->max_page)
					return -EINVAL;
				nv = realloc(q->ids,
				             (q->nids + 1) * sizeof(*nv));
				if (nv == NULL)
					return -ENOMEM;
				q->ids = nv;
				q->ids[q->nids] = NULL;
				if ((rc = take_id(v, &q->ids[q->nids])) != 0)
					return rc;
				q->nids++;
			}
			if (q->nids == 0)
				return -EINVAL;
			continue;
		}
		if ((val = field_value(f, &rc)) == NULL)
			return rc;
		if (strcmp(var, "FORM_TYPE") == 0) {
			rc = strcmp(val, q->ns) == 0 ? 0 : -EINVAL;
		} else if (strcmp(var, "with") == 0) {
			struct pgn_jid *j = NULL;
			rc = pgn_jid_parse(val, &j);
			if (rc == 0) {
				free(q->with_bare);
				free(q->with_res);
				q->with_res = NULL;
				if ((q->with_bare = strdup(j->bare)) == NULL ||
				    (j->resource != NULL &&
				     (q->with_res = strdup(j->resource)) ==
				             NULL))
					rc = -ENOMEM;
				pgn_jid_free(j);
			} else if (rc != -ENOMEM) {
				rc = -EINVAL;
			}
		} else if (strcmp(var, "start") == 0 ||
		           strcmp(var, "end") == 0) {
			int64_t t;
			int start = var[0] == 's';
			rc = parse_datetime(val, &t);
			if (rc == 0) {
				snprintf(start ? q->start : q->end, 24,
				         "%" PRId64, t);
				if (start)
					q->has_start = 1;
				else
					q->has_end = 1;
			}
		} else if (strcmp(var, "after-id") == 0 ||
		           strcmp(var, "before-id") == 0) {
			char **dst =
			        var[0] == 'a' ? &q->after_id : &q->before_id;
			if (val[0] == '\0' || strlen(val) > MAX_ID_LEN) {
				rc = -EINVAL;
			} else {
				free(*dst);
				*dst = val;
				val = NULL;
				rc = 0;
			}
		} else {
			rc = -ENOTSUP;
		}
		free(val);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Reads the RSM <set/> (XEP-0059 §2). */
static int
parse_rsm(struct mam *mm, struct query *q, const struct pgn_xml *set)
{
	for (const struct pgn_xml *c = pgn_xml_first_child(set); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *name = pgn_xml_name(c);
		int rc = 0;

		if (!ns_is(c, NS_RSM))
			continue;
		if (strcmp(name, "max") == 0) {
			char *t = pgn_xml_text(c);
			int64_t v;
			if (t == NULL)
				return -ENOMEM;
			rc = parse_int64(t, &v);
			free(t);
			if (rc != 0)
				return -EINVAL;
			/* The server's cap (§4.3.1: the page may be
			 * smaller than asked). */
			q->max = v > mm->max_page ? mm->max_page : (long)v;
		} else if (strcmp(name, "after") == 0) {
			rc = take_id(c, &q->rsm_after);
		} else if (strcmp(name, "before") == 0) {
			char *t = pgn_xml_text(c);
			if (t == NULL)
				return -ENOMEM;
			q->backward = 1;
			free(q->rsm_before);
			q->rsm_before = NULL;
			if (t[0] == '\0') {
				/* §4.3.3: the last page. */
				free(t);
			} else if (strlen(t) > MAX_ID_LEN) {
				free(t);
				rc = -EINVAL;
			} else {
				q->rsm_before = t;
			}
		} else if (strcmp(name, "index") == 0) {
			/* Jumping to a position: not with stanza ids. */
			rc = -ENOTSUP;
		}
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* SQL text built piece by piece; err sticks. */
struct sqlbuf {
	char *s;
	size_t len, cap;
	int err;
	const char *params[MAX_PARAMS];
	int nparams;
};

static void
sql_add(struct sqlbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s != NULL ? b->s + b->len : NULL,
		              b->s != NULL ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->err = -EINVAL;
			return;
		}
		if (b->s != NULL && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t nc = b->cap ? b->cap : 1024;
		while (nc <= b->len + (size_t)n)
			nc *= 2;
		char *ns = realloc(b->s, nc);
		if (ns == NULL) {
			b->err = -ENOMEM;
			return;
		}
		b->s = ns;
		b->cap = nc;
	}
}

/* Binds value; returns its parameter number. */
static int
sql_param(struct sqlbuf *b, const char *value)
{
	if (b->nparams >= MAX_PARAMS) {
		b->err = -E2BIG;
		return 1;
	}
	b->params[b->nparams++] = value;
	return b->nparams;
}

/* The id of a stanza id of this archive, as an SQL expression. */
#define SQL_ID_OF                                                              \
	"(SELECT id FROM mam_messages WHERE host = $1 AND username = $2 "      \
	"AND stanza_id = $%d)"

/* Parameter numbers of the values the filters use (0: unused). */
struct qparams {
	int with_bare, with_res, start, end, after_id, before_id;
	int rsm_after, rsm_before;
	int ids[MAX_MAX_PAGE];
};

/* The filters of the result set (§4.1): everything but the page. */
static void
sql_filters(struct sqlbuf *b, const struct query *q, const struct qparams *pn)
{
	sql_add(b, "host = $1 AND username = $2");
	if (pn->with_bare)
		sql_add(b, " AND with_bare = $%d", pn->with_bare);
	if (pn->with_res)
		sql_add(b, " AND with_resource = $%d", pn->with_res);
	/* A time bound is an id bound found in mam_messages_ts (ts grows
	 * with id, see the schema), so that both bounds are index ranges;
	 * the ts test keeps the answer exact if the clock went back. */
	if (pn->start)
		sql_add(b,
		        " AND id >= (SELECT id FROM mam_messages WHERE ts >= "
		        "CAST($%d AS BIGINT) ORDER BY ts, id LIMIT 1) AND ts "
		        ">= CAST($%d AS BIGINT)",
		        pn->start, pn->start);
	if (pn->end)
		sql_add(b,
		        " AND id <= (SELECT id FROM mam_messages WHERE ts <= "
		        "CAST($%d AS BIGINT) ORDER BY ts DESC, id DESC LIMIT "
		        "1) "
		        "AND ts <= CAST($%d AS BIGINT)",
		        pn->end, pn->end);
	if (pn->after_id)
		sql_add(b, " AND id > " SQL_ID_OF, pn->after_id);
	if (pn->before_id)
		sql_add(b, " AND id < " SQL_ID_OF, pn->before_id);
	if (q->nids > 0) {
		sql_add(b, " AND stanza_id IN (");
		for (size_t i = 0; i < q->nids; i++)
			sql_add(b, "%s$%d", i > 0 ? ", " : "", pn->ids[i]);
		sql_add(b, ")");
	}
}

/* One statement, three kinds of rows (first column):
 *   0: the number of messages in the result set (RSM count), read from
 *      mam_counts / mam_with_counts when only 'with' filters;
 *   2: id, stanza_id of each stanza id the request names (a missing one
 *      is item-not-found);
 *   1: id, stanza_id, ts, stanza of the page, max + 1 rows (one more
 *      tells that the page is not the last), newest first when paging
 *      backwards. */
static int
build_query_sql(const struct query *q, struct sqlbuf *b)
{
	struct qparams pn;
	int named = 0;

	memset(&pn, 0, sizeof(pn));
	sql_param(b, q->mm->host);
	sql_param(b, q->user);
	if (q->with_bare != NULL)
		pn.with_bare = sql_param(b, q->with_bare);
	if (q->with_res != NULL)
		pn.with_res = sql_param(b, q->with_res);
	if (q->has_start)
		pn.start = sql_param(b, q->start);
	if (q->has_end)
		pn.end = sql_param(b, q->end);
	if (q->after_id != NULL)
		pn.after_id = sql_param(b, q->after_id);
	if (q->before_id != NULL)
		pn.before_id = sql_param(b, q->before_id);
	for (size_t i = 0; i < q->nids; i++)
		pn.ids[i] = sql_param(b, q->ids[i]);
	if (q->rsm_after != NULL)
		pn.rsm_after = sql_param(b, q->rsm_after);
	if (q->rsm_before != NULL)
		pn.rsm_before = sql_param(b, q->rsm_before);

	/* The count: of the whole archive or of one conversation, one row
	 * kept by triggers (see the schema); with other filters, counted.
	 * Typed NULLs: PostgreSQL resolves UNION column types pairwise. */
	sql_add(b, "SELECT 0, ");
	if (!q->has_start && !q->has_end && q->after_id == NULL &&
	    q->before_id == NULL && q->nids == 0 && q->with_res == NULL) {
		if (pn.with_bare)
			sql_add(b,
			        "COALESCE((SELECT n FROM mam_with_counts "
			        "WHERE host = $1 AND username = $2 AND "
			        "with_bare = $%d), 0)",
			        pn.with_bare);
		else
			sql_add(b, "COALESCE((SELECT n FROM mam_counts WHERE "
			           "host = $1 AND username = $2), 0)");
		sql_add(b, ", CAST(NULL AS TEXT), CAST(NULL AS BIGINT), "
		           "CAST(NULL AS TEXT)");
	} else {
		sql_add(b,
		        "count(*), CAST(NULL AS TEXT), CAST(NULL AS BIGINT), "
		        "CAST(NULL AS TEXT) FROM mam_messages WHERE ");
		sql_filters(b, q, &pn);
	}
	if (pn.after_id || pn.before_id || pn.rsm_after || pn.rsm_before ||
	    q->nids > 0) {
		int ps[4] = {pn.after_id, pn.before_id, pn.rsm_after,
		             pn.rsm_before};
		sql_add(b, " UNION ALL SELECT 2, id, stanza_id, "
		           "CAST(NULL AS BIGINT), CAST(NULL AS TEXT) FROM "
		           "mam_messages WHERE host = $1 AND username = $2 AND "
		           "stanza_id IN (");
		for (int i = 0; i < 4; i++)
			if (ps[i])
				sql_add(b, "%s$%d", named++ ? ", " : "", ps[i]);
		for (size_t i = 0; i < q->nids; i++)
			sql_add(b, "%s$%d", named++ ? ", " : "", pn.ids[i]);
		sql_add(b, ")");
	}
	sql_add(b, " UNION ALL SELECT * FROM (SELECT 1, id, stanza_id, ts, "
	           "stanza FROM mam_messages WHERE ");
	sql_filters(b, q, &pn);
	if (pn.rsm_after)
		sql_add(b, " AND id > " SQL_ID_OF, pn.rsm_after);
	if (pn.rsm_before)
		sql_add(b, " AND id < " SQL_ID_OF, pn.rsm_before);
	sql_add(b, " ORDER BY id %s LIMIT %ld) AS page",
	        q->backward ? "DESC" : "ASC", q->max + 1);
	return b->err;
}

struct page_row {
	int64_t id;
	int64_t ts;
	const char *sid; /* borrowed from the store result */
	const char *text;
};

static int
cmp_row(const void *a, const void *b)
{
	const struct page_row *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* Every stanza id the request named is in the archive (§4.1.3, §4.3.2:
 * else item-not-found). */
static int
all_named_found(const struct query *q, const struct pgn_store_result *res)
{
	const char *named[4] = {q->after_id, q->before_id, q->rsm_after,
	                        q->rsm_before};
	size_t total = q->nids + 4;

	for (size_t i = 0; i < total; i++) {
		const char *want = i < 4 ? named[i] : q->ids[i - 4];
		int found = 0;
		if (want == NULL)
			continue;
		for (int r = 0; r < res->nrows && !found; r++)
			found = str_eq(pgn_store_value(res, r, 0), "2") &&
			        str_eq(pgn_store_value(res, r, 2), want);
		if (!found)
			return 0;
	}
	return 1;
}

/* <message to=full from=bare><result queryid id><forwarded><delay/>
 * <message .../></forwarded></result></message> (§4.2), or NULL on
 * allocation failure.  A stored stanza that does not parse is left out
 * of <forwarded/> (§3.2 allows a placeholder) and logged. */
static struct pgn_xml *
result_message(struct query *q, const struct pgn_jid *to,
               const struct page_row *r)
{
	struct pgn_xml *msg = pgn_xml_new(PGN_NS_CLIENT, "message");
	struct pgn_xml *res, *fwd, *delay;
	char id[32], stamp[48];
	int rc;

	snprintf(id, sizeof(id), "mam-%" PRIu64, ++q->mm->seq);
	if (msg == NULL || pgn_xml_set_attr(msg, "to", to->full) != 0 ||
	    pgn_xml_set_attr(msg, "from", q->bare) != 0 ||
	    pgn_xml_set_attr(msg, "id", id) != 0 ||
	    (res = pgn_xml_add_child(msg, q->ns, "result")) == NULL ||
	    (q->queryid != NULL &&
	     pgn_xml_set_attr(res, "queryid", q->queryid) != 0) ||
	    pgn_xml_set_attr(res, "id", r->sid) != 0 ||
	    (fwd = pgn_xml_add_child(res, NS_FORWARD, "forwarded")) == NULL ||
	    (delay = pgn_xml_add_child(fwd, NS_DELAY, "delay")) == NULL ||
	    format_stamp(r->ts, stamp, sizeof(stamp)) != 0 ||
	    pgn_xml_set_attr(delay, "stamp", stamp) != 0)
		goto fail;
	rc = pgn_xml_parse_into(fwd, r->text, strlen(r->text));
	if (rc == -ENOMEM)
		goto fail;
	if (rc != 0 || pgn_xml_next(delay) == NULL ||
	    pgn_xml_next(pgn_xml_next(delay)) != NULL) {
		struct pgn_xml *c, *next;
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: stored message %s of %s "
		        "does not parse",
		        q->mm->host, r->sid, q->bare);
		for (c = pgn_xml_next(delay); c != NULL; c = next) {
			next = pgn_xml_next(c);
			pgn_xml_unlink(c);
			pgn_xml_free(c);
		}
	}
	return msg;
fail:
	pgn_xml_free(msg);
	return NULL;
}

/* <fin complete?><set><first index?/><last/><count/></set></fin>. */
static struct pgn_xml *
fin_element(const struct query *q, const struct page_row *first,
            const struct page_row *last, long long count, long long index,
            int complete)
{
	struct pgn_xml *fin = pgn_xml_new(q->ns, "fin"), *set, *f;
	char num[24];

	if (fin == NULL ||
	    (complete && pgn_xml_set_attr(fin, "complete", "true") != 0) ||
	    (set = pgn_xml_add_child(fin, NS_RSM, "set")) == NULL)
		goto fail;
	if (first != NULL) {
		if ((f = pgn_xml_add_child(set, NS_RSM, "first")) == NULL ||
		    pgn_xml_add_text(f, first->sid, strlen(first->sid)) != 0)
			goto fail;
		snprintf(num, sizeof(num), "%lld", index);
		if (index >= 0 && pgn_xml_set_attr(f, "index", num) != 0)
			goto fail;
		if (add_text_child(set, NS_RSM, "last", last->sid) != 0)
			goto fail;
	}
	snprintf(num, sizeof(num), "%lld", count);
	if (add_text_child(set, NS_RSM, "count", num) != 0)
		goto fail;
	return fin;
fail:
	pgn_xml_free(fin);
	return NULL;
}

static void
query_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct query *q = arg;
	struct mam *mm = q->mm;
	struct pgn_session *s = pgn_session_find(mm->srv, q->sid);
	const struct pgn_jid *to = s != NULL ? pgn_session_jid(s) : NULL;
	struct msess *sd = s != NULL ? pgn_session_get_data(s, mm->m) : NULL;
	struct page_row *rows = NULL;
	struct pgn_xml *fin;
	long long count = 0, index = -1;
	size_t nrows = 0, lo, hi, bytes = 0;
	int more, complete;

	(void)owner;
	if (sd != NULL && sd->queries > 0)
		sd->queries--;
	if (to == NULL) {
		/* The session has gone: nobody to answer. */
		pgn_stanza_free(pgn_hold_take(q->hold));
		goto out;
	}
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_mam %s: query of %s failed: %s",
		        mm->host, q->bare, res->errmsg);
		answer_held(mm, q->hold, q->sid, NULL, "wait",
		            "internal-server-error");
		goto out;
	}
	if (!all_named_found(q, res)) {
		answer_held(mm, q->hold, q->sid, NULL, "cancel",
		            "item-not-found");
		goto out;
	}
	if (res->nrows > 0 &&
	    (rows = calloc((size_t)res->nrows, sizeof(*rows))) == NULL) {
		answer_held(mm, q->hold, q->sid, NULL, "wait",
		            "resource-constraint");
		goto out;
	}
	for (int i = 0; i < res->nrows; i++) {
		const char *kind = pgn_store_value(res, i, 0);
		int64_t v;
		if (str_eq(kind, "0")) {
			if (parse_int64(pgn_store_value(res, i, 1), &v) == 0)
				count = v;
		} else if (str_eq(kind, "1") &&
		           parse_int64(pgn_store_value(res, i, 1),
		                       &rows[nrows].id) == 0 &&
		           parse_int64(pgn_store_value(res, i, 3),
		                       &rows[nrows].ts) == 0 &&
		           pgn_store_value(res, i, 2) != NULL &&
		           pgn_store_value(res, i, 4) != NULL) {
			rows[nrows].sid = pgn_store_value(res, i, 2);
			rows[nrows].text = pgn_store_value(res, i, 4);
			nrows++;
		}
	}
	if (nrows > 1)
		qsort(rows, nrows, sizeof(*rows), cmp_row);
	/* The page: max rows next to the RSM bound, within PAGE_BYTES. */
	more = nrows > (size_t)q->max;
	if (q->backward) {
		hi = nrows;
		lo = more ? nrows - (size_t)q->max : 0;
		for (size_t i = hi; i > lo; i--) {
			bytes += strlen(rows[i - 1].text);
			if (bytes > PAGE_BYTES && i < hi) {
				lo = i;
				more = 1;
				break;
			}
		}
	} else {
		lo = 0;
		hi = more ? (size_t)q->max : nrows;
		for (size_t i = lo; i < hi; i++) {
			bytes += strlen(rows[i].text);
			if (bytes > PAGE_BYTES && i > lo) {
				hi = i;
				more = 1;
				break;
			}
		}
	}
	complete = !more;
	/* RSM index (XEP-0059 §2.6) of a first page, the one known without
	 * counting.  Not on the last page (count - n): slixmpp 1.8 takes
	 * index + n == count for "no more pages" also when paging
	 * backwards, and would stop there. */
	if (!q->backward && q->rsm_after == NULL)
		index = 0;
	for (size_t k = 0; k < hi - lo; k++) {
		/* <flip-page/>: the same page, newest first (§4.3.4). */
		size_t i = q->flip ? hi - 1 - k : lo + k;
		struct pgn_xml *msg = result_message(q, to, &rows[i]);
		int rc;
		if (msg == NULL) {
			answer_held(mm, q->hold, q->sid, NULL, "wait",
			            "resource-constraint");
			goto out;
		}
		rc = pgn_session_send(s, msg);
		pgn_xml_free(msg);
		if (rc != 0) {
			/* Closing: the rest would go nowhere. */
			pgn_stanza_free(pgn_hold_take(q->hold));
			goto out;
		}
	}
	fin = fin_element(q, hi > lo ? &rows[lo] : NULL,
	                  hi > lo ? &rows[hi - 1] : NULL, count, index,
	                  complete);
	if (fin == NULL)
		answer_held(mm, q->hold, q->sid, NULL, "wait",
		            "resource-constraint");
	else
		answer_held(mm, q->hold, q->sid, fin, NULL, NULL);
	pgn_log(PGN_LOG_DEBUG,
	        "session %" PRIu64 ": mod_mam: %zu of %lld "
	        "archived messages sent",
	        q->sid, hi - lo, count);
out:
	free(rows);
	query_free(q);
}

int
on_query(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	struct pgn_stanza *st = ev->stanza;
	struct pgn_xml *req = pgn_xml_first_child(st->xml);
	struct msess *sd;
	struct query *q = NULL;
	struct sqlbuf b;
	const char *qid;
	int rc = -ENOMEM;

	memset(&b, 0, sizeof(b));
	if (!from_owner(ev)) {
		pgn_event_error(ev, "cancel", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	sd = pgn_session_get_data(ev->origin, mm->m);
	if (sd != NULL && sd->queries >= MAX_QUERIES) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL)
		goto fail;
	q->mm = mm;
	q->ns = request_ns(st);
	q->max = DEFAULT_PAGE > mm->max_page ? mm->max_page : DEFAULT_PAGE;
	q->sid = pgn_session_id(ev->origin);
	qid = pgn_xml_attr(req, "queryid");
	if (qid != NULL && strlen(qid) > MAX_QUERYID_LEN) {
		rc = -EINVAL;
		goto fail;
	}
	if ((q->bare = strdup(st->to->bare)) == NULL ||
	    (q->user = strdup(st->to->node)) == NULL ||
	    (qid != NULL && (q->queryid = strdup(qid)) == NULL))
		goto fail;
	/* XEP-0442 pubsub archives use 'node': not a user archive. */
	if (pgn_xml_attr(req, "node") != NULL) {
		rc = -ENOTSUP;
		goto fail;
	}
	rc = 0;
	for (const struct pgn_xml *c = pgn_xml_first_child(req); c != NULL;
	     c = pgn_xml_next(c)) {
		if (is_el(c, NS_XDATA, "x"))
			rc = parse_form(mm, q, c);
		else if (is_el(c, NS_RSM, "set"))
			rc = parse_rsm(mm, q, c);
		else if (is_el(c, q->ns, "flip-page"))
			q->flip = 1;
		if (rc != 0)
			goto fail;
	}
	rc = -ENOMEM;
	if (build_query_sql(q, &b) != 0)
		goto fail;
	/* Rows still queued go first, so the query sees them. */
	flush_rows(mm);
	if ((q->hold = pgn_event_hold(ev)) == NULL)
		goto fail;
	if (pgn_store_query(mm->store, b.s, b.nparams, b.params, q->sid,
	                    query_done, q) != 0) {
		/* Answered through the hold, which the event no longer
		 * has. */
		answer_held(mm, q->hold, q->sid, NULL, "wait",
		            "internal-server-error");
		query_free(q);
		free(b.s);
		return PGN_EVENT_HANDLED;
	}
	if (sd != NULL)
		sd->queries++;
	free(b.s);
	return PGN_EVENT_HANDLED;
fail:
	free(b.s);
	query_free(q);
	switch (rc) {
	case -EINVAL:
		pgn_event_error(ev, "modify", "bad-request");
		break;
	case -ENOTSUP:
		pgn_event_error(ev, "cancel", "feature-not-implemented");
		break;
	default:
		pgn_event_error(ev, "wait", "resource-constraint");
		break;
	}
	return PGN_EVENT_HANDLED;
}

/* §4.1.5: the form's fields. */
int
on_query_form(struct pgn_event *ev, void *arg)
{
	static const struct {
		const char *var, *type;
	} fields[] = {
	        {"with", "jid-single"},      {"start", "text-single"},
	        {"end", "text-single"},      {"before-id", "text-single"},
	        {"after-id", "text-single"}, {"ids", "list-multi"},
	};
	const char *ns = request_ns(ev->stanza);
	struct pgn_xml *q = NULL, *x, *f, *v;

	(void)arg;
	if (!from_owner(ev)) {
		pgn_event_error(ev, "cancel", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	if ((q = pgn_xml_new(ns, "query")) == NULL ||
	    (x = pgn_xml_add_child(q, NS_XDATA, "x")) == NULL ||
	    pgn_xml_set_attr(x, "type", "form") != 0 ||
	    (f = pgn_xml_add_child(x, NS_XDATA, "field")) == NULL ||
	    pgn_xml_set_attr(f, "type", "hidden") != 0 ||
	    pgn_xml_set_attr(f, "var", "FORM_TYPE") != 0 ||
	    add_text_child(f, NS_XDATA, "value", ns) != 0)
		goto fail;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if ((f = pgn_xml_add_child(x, NS_XDATA, "field")) == NULL ||
		    pgn_xml_set_attr(f, "type", fields[i].type) != 0 ||
		    pgn_xml_set_attr(f, "var", fields[i].var) != 0)
			goto fail;
		/* §4.1.5: 'ids' is open to any value (XEP-0122). */
		if (strcmp(fields[i].var, "ids") == 0 &&
		    ((v = pgn_xml_add_child(f, NS_XDATA_VALIDATE,
		                            "validate")) == NULL ||
		     pgn_xml_set_attr(v, "datatype", "xs:string") != 0 ||
		     pgn_xml_add_child(v, NS_XDATA_VALIDATE, "open") == NULL))
			goto fail;
	}
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
fail:
	pgn_xml_free(q);
	pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}

/* ---- archive metadata (§5) ---- */

static void
metadata_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct meta_req *r = arg;
	struct mam *mm = r->mm;
	struct pgn_xml *md = NULL, *el;
	char stamp[48];
	int64_t ts;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_mam %s: metadata query failed: %s",
		        mm->host, res->errmsg);
		answer_held(mm, r->hold, r->sid, NULL, "wait",
		            "internal-server-error");
		free(r);
		return;
	}
	if ((md = pgn_xml_new(NS_MAM2, "metadata")) == NULL)
		goto fail;
	/* An empty archive: an empty <metadata/>. */
	for (int i = 0; i < res->nrows && i < 2; i++) {
		const char *sid = pgn_store_value(res, i, 0);
		if (sid == NULL ||
		    parse_int64(pgn_store_value(res, i, 1), &ts) != 0 ||
		    format_stamp(ts, stamp, sizeof(stamp)) != 0)
			continue;
		if ((el = pgn_xml_add_child(
		             md, NS_MAM2, i == 0 ? "start" : "end")) == NULL ||
		    pgn_xml_set_attr(el, "id", sid) != 0 ||
		    pgn_xml_set_attr(el, "timestamp", stamp) != 0)
			goto fail;
	}
	answer_held(mm, r->hold, r->sid, md, NULL, NULL);
	free(r);
	return;
fail:
	pgn_xml_free(md);
	answer_held(mm, r->hold, r->sid, NULL, "wait", "resource-constraint");
	free(r);
}

int
on_metadata(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	const char *params[2];
	struct meta_req *r;

	if (!from_owner(ev)) {
		pgn_event_error(ev, "cancel", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	params[0] = mm->host;
	params[1] = ev->stanza->to->node;
	flush_rows(mm);
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	r->mm = mm;
	r->sid = pgn_session_id(ev->origin);
	if ((r->hold = pgn_event_hold(ev)) == NULL) {
		free(r);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	if (pgn_store_query(mm->store, sql_metadata, 2, params, r->sid,
	                    metadata_done, r) != 0) {
		answer_held(mm, r->hold, r->sid, NULL, "wait",
		            "internal-server-error");
		free(r);
	}
	return PGN_EVENT_HANDLED;
}
