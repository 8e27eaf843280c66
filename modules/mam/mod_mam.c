/* XEP-0313: Message Archive Management (urn:xmpp:mam:2 and :1), with
 * XEP-0359 stanza ids, XEP-0441 preferences and XEP-0059 paging.
 *
 * Archiving.  1:1 messages of local users are archived in both
 * directions: what a user sends on the sender's host ("pre-message/bare"
 * and "/full" at 30: after the blocking filter, 100, and sent carbons,
 * 40) into the sender's archive, what a user receives on the recipient's
 * host ("message/bare" and "/full" at 20: after the inbound filters,
 * before received carbons, 5, so that copies carry the stanza id) into
 * the recipient's archive.  A message to oneself is archived once, on the
 * way in.  Which messages: see archivable().
 *
 * Stanza ids (XEP-0313 §3.5, XEP-0359 §3): the id of a row is made here,
 * before the insert (random, so unguessable; the order of the archive is
 * the table's own id), and an incoming message is delivered with
 * <stanza-id by='user@host' id='...'/> at once; any stanza-id a sender
 * put there in the name of the recipient's archive is removed first
 * (XEP-0359 §3 rule 3: ours is the only one with that 'by').  Outgoing
 * messages get none (XEP-0313 §3.5: their recipients cannot query the
 * sender's archive).
 *
 * Archived before delivered (doc/architecture.md, "Storage failures"):
 * an archived message is held (pgn_event_hold) until its rows
 * committed, then moves on (delivery, offline storage, and the sender's
 * stream management ack, which waits for holds); if they cannot be
 * written it is bounced (wait, internal-server-error) and is in no
 * archive.  For a message between two hosts that both archive, the
 * sender's host only marks it (st->archive_sender) and the recipient's
 * host writes both copies in one statement once the message has passed
 * the inbound filters: a message that is blocked, or to an unknown
 * user, is bounced without being archived.  Rows are group-committed:
 * while one write runs, new rows queue and then go together (up to
 * STORE_BATCH), as in mod_offline, but as one multi-row INSERT: one
 * round trip instead of one per row (PostgreSQL took 3.5 times as
 * long with a statement per row).  A query first submits what
 * is queued, and the store answers in submission order, so a client
 * always finds what it was told about (read your writes).
 *
 * Preferences (XEP-0441) decide per message without waiting for the
 * store: they are loaded in "session-started" (the session is held until
 * then) and cached while the user has sessions, and for a little while
 * after (LINGER_SECS) for messages to an offline user.  A message whose
 * decision needs the store (the user's preferences are not cached) is
 * held while they load: that is one indexed read.  default='roster' asks
 * mod_roster's "roster" service (pigeon/roster.h) whether the peer is a
 * contact: answered from its memory while the user is online, else with
 * one read, while the message (and the user's later ones) waits.
 *
 * Queries (§4) run as one SQL statement: the count of the whole result
 * set (RSM <count/>), the rows named by stanza id (to answer
 * item-not-found, §4.1.3 and §4.3.2) and the page, newest first when
 * paging backwards.  Results go to the querying session only, then the
 * <fin/>.
 *
 * Retention: option max_age_days, swept every SWEEP_SECS in batches;
 * pigeonctl delete_old_mam_messages DAYS on every host.  Quotas per user
 * (max_messages, max_bytes, quota_policy) and resent messages (the same
 * origin-id: accepted, not delivered again): see their sections. */
#include "mam.h"

/* Quotas.  The trim deletes, among the user's $5 oldest rows, as
 * many as the stored counters say are over max_messages ($3) and those
 * whose older rows do not yet cover the bytes over max_bytes ($4): exact
 * against what has committed, whatever pigeond has cached.  %s is the
 * driver's byte length of a text (the same measure as the triggers of
 * 012_mam_quota.sql). */
static const char sql_trim_fmt[] =
        "DELETE FROM mam_messages WHERE id IN (SELECT w.id FROM (SELECT o.id, "
        "ROW_NUMBER() OVER (ORDER BY o.id) AS rn, "
        "SUM(o.sz) OVER (ORDER BY o.id) - o.sz AS before FROM (SELECT id, "
        "%s AS sz FROM mam_messages WHERE host = $1 AND username = $2 "
        "ORDER BY id LIMIT CAST($5 AS INTEGER)) AS o) AS w, mam_counts c "
        "WHERE c.host = $1 AND c.username = $2 AND "
        "((CAST($3 AS BIGINT) > 0 AND w.rn <= c.n - CAST($3 AS BIGINT)) OR "
        "(CAST($4 AS BIGINT) > 0 AND w.before < c.bytes - CAST($4 AS "
        "BIGINT))))";

/* ---- small helpers ---- */

int
str_eq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

int
ns_is(const struct pgn_xml *el, const char *ns)
{
	return str_eq(pgn_xml_ns(el), ns);
}

int
is_el(const struct pgn_xml *el, const char *ns, const char *name)
{
	return ns_is(el, ns) && str_eq(pgn_xml_name(el), name);
}

/* An integer column (NULL: 0). */
int64_t
store_int(const struct pgn_store_result *res, int row, int col)
{
	const char *v = pgn_store_value(res, row, col);

	return v != NULL ? strtoll(v, NULL, 10) : 0;
}

int64_t
now_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return (int64_t)time(NULL) * US_PER_SEC;
	return (int64_t)ts.tv_sec * US_PER_SEC + ts.tv_nsec / 1000;
}

/* The archiving time of a row submitted now: never below the last one
 * (see the schema: time bounds become id bounds). */
int64_t
next_ts(struct mam *mm)
{
	int64_t t = now_us();

	if (t < mm->last_ts)
		t = mm->last_ts;
	mm->last_ts = t;
	return t;
}

/* XEP-0082 DateTime with microseconds: "CCYY-MM-DDThh:mm:ss.uuuuuuZ". */
int
format_stamp(int64_t us, char *buf, size_t len)
{
	time_t sec = (time_t)(us / US_PER_SEC);
	long frac = (long)(us % US_PER_SEC);
	struct tm tm;
	char base[32];

	if (frac < 0) {
		frac += US_PER_SEC;
		sec--;
	}
	if (gmtime_r(&sec, &tm) == NULL ||
	    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return -EINVAL;
	if ((size_t)snprintf(buf, len, "%s.%06ldZ", base, frac) >= len)
		return -EINVAL;
	return 0;
}

static int
digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

/* Parses an XEP-0082 DateTime, "CCYY-MM-DDThh:mm:ss[.sss]TZD" with TZD
 * "Z" or "+hh:mm"/"-hh:mm", into microseconds since the epoch. */
int
parse_datetime(const char *s, int64_t *out)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30,
	                            31, 31, 30, 31, 30, 31};
	int y, mo, d, h, mi, sec, tzh = 0, tzm = 0, sign = 0;
	long frac = 0;
	struct tm tm;
	const char *p;
	time_t t;

	if (s == NULL || strlen(s) < 20 || strlen(s) > 40 || digits(s, 4, &y) ||
	    s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
	    digits(s + 8, 2, &d) || s[10] != 'T' || digits(s + 11, 2, &h) ||
	    s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
	    digits(s + 17, 2, &sec))
		return -EINVAL;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    h > 23 || mi > 59 || sec > 60)
		return -EINVAL;
	p = s + 19;
	if (*p == '.') {
		long scale = 100000;
		int n = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, n++) {
			if (n >= 9)
				return -EINVAL;
			frac += (*p - '0') * scale;
			scale /= 10;
		}
		if (n == 0)
			return -EINVAL;
	}
	if (p[0] == 'Z' && p[1] == '\0') {
		sign = 0;
	} else if ((p[0] == '+' || p[0] == '-') && strlen(p) == 6 &&
	           !digits(p + 1, 2, &tzh) && p[3] == ':' &&
	           !digits(p + 4, 2, &tzm) && tzh <= 23 && tzm <= 59) {
		sign = p[0] == '+' ? 1 : -1;
	} else {
		return -EINVAL;
	}
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec > 59 ? 59 : sec; /* a leap second */
	t = timegm(&tm);
	/* "+02:00" is two hours ahead of UTC. */
	t -= (time_t)sign * (tzh * 3600 + tzm * 60);
	*out = (int64_t)t * US_PER_SEC + frac;
	return 0;
}

/* A string of non-negative decimal digits into *out. */
int
parse_int64(const char *s, int64_t *out)
{
	int64_t v = 0;

	if (s == NULL || *s == '\0' || strlen(s) > 18)
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (*s - '0');
	}
	*out = v;
	return 0;
}

/* Random bytes from a pool refilled by getrandom(): one system call per
 * few dozen ids. */
static int
random_bytes(struct mam *mm, unsigned char *out, size_t n)
{
	if (mm->rnd_left < n) {
		ssize_t r = getrandom(mm->rnd, sizeof(mm->rnd), 0);
		if (r != (ssize_t)sizeof(mm->rnd))
			return -EIO;
		mm->rnd_left = sizeof(mm->rnd);
	}
	memcpy(out, mm->rnd + sizeof(mm->rnd) - mm->rnd_left, n);
	memset(mm->rnd + sizeof(mm->rnd) - mm->rnd_left, 0, n);
	mm->rnd_left -= n;
	return 0;
}

/* A new stanza id: 96 random bits in 16 characters of base64url, so
 * unpredictable and, in practice, unique (XEP-0359 §3 rule 2, §4: it
 * tells nothing about the archive). */
int
make_stanza_id(struct mam *mm, char out[17])
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
	                          "opqrstuvwxyz0123456789-_";
	unsigned char r[12];

	if (random_bytes(mm, r, sizeof(r)) != 0)
		return -EIO;
	for (int i = 0, o = 0; i < 12; i += 3) {
		uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 |
		             r[i + 2];
		out[o++] = b64[(v >> 18) & 63];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = b64[v & 63];
	}
	out[16] = '\0';
	return 0;
}

void
strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
strv_has(char *const *v, size_t n, const char *s)
{
	return n > 0 && bsearch(&s, v, n, sizeof(*v), cmp_str) != NULL;
}

/* Sorts v and removes duplicates; returns the new length. */
size_t
strv_sort_unique(char **v, size_t n)
{
	size_t out = 0;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (out > 0 && strcmp(v[out - 1], v[i]) == 0) {
			free(v[i]);
			continue;
		}
		v[out++] = v[i];
	}
	return out;
}

/* Splits newline-separated stored JIDs.  0 or -ENOMEM. */
int
strv_split(const char *s, char ***out, size_t *n)
{
	size_t cap = 0, len = 0;
	char **v = NULL;

	*out = NULL;
	*n = 0;
	while (s != NULL && *s != '\0') {
		const char *e = strchr(s, '\n');
		size_t l = e != NULL ? (size_t)(e - s) : strlen(s);
		if (l > 0 && len < MAX_PREF_JIDS) {
			if (len == cap) {
				size_t nc = cap ? cap * 2 : 8;
				char **nv = realloc(v, nc * sizeof(*nv));
				if (nv == NULL)
					goto nomem;
				v = nv;
				cap = nc;
			}
			if ((v[len] = strndup(s, l)) == NULL)
				goto nomem;
			len++;
		}
		s = e != NULL ? e + 1 : s + l;
	}
	*n = strv_sort_unique(v, len);
	*out = v;
	return 0;
nomem:
	strv_free(v, len);
	return -ENOMEM;
}

/* Newline-joined; malloc'd, NULL on allocation failure. */
char *
strv_join(char *const *v, size_t n)
{
	size_t len = 1;
	char *s, *p;

	for (size_t i = 0; i < n; i++)
		len += strlen(v[i]) + 1;
	if ((s = malloc(len)) == NULL)
		return NULL;
	p = s;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(v[i]);
		if (i > 0)
			*p++ = '\n';
		memcpy(p, v[i], l);
		p += l;
	}
	*p = '\0';
	return s;
}

int
add_text_child(struct pgn_xml *parent, const char *ns, const char *name,
               const char *text)
{
	struct pgn_xml *c = pgn_xml_add_child(parent, ns, name);

	if (c == NULL || pgn_xml_add_text(c, text, strlen(text)) != 0)
		return -ENOMEM;
	return 0;
}

/* ---- sessions ---- */

static void
msess_free(void *ptr)
{
	struct msess *sd = ptr;

	if (sd != NULL)
		free(sd->bare);
	free(sd);
}

static int
on_session_started(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *jid = s != NULL ? pgn_session_jid(s) : NULL;
	struct msess *sd = NULL;
	struct waiter *w = NULL;
	struct uprefs *p;

	if (jid == NULL || jid->node == NULL)
		return PGN_EVENT_PASS;
	if ((p = prefs_get(mm, jid->bare, jid->node, 1)) == NULL ||
	    (sd = calloc(1, sizeof(*sd))) == NULL ||
	    (sd->bare = strdup(jid->bare)) == NULL)
		goto fail;
	/* The account exists now, whatever was cached. */
	if (p->state == P_NOACCOUNT)
		p->state = P_NONE;
	if (p->state != P_LOADED && (w = calloc(1, sizeof(*w))) == NULL)
		goto fail;
	if (pgn_session_set_data(s, mm->m, sd, msess_free) != 0)
		goto fail;
	sd->ref = 1;
	p->refs++;
	if (w != NULL) {
		/* Its first messages are decided with the preferences. */
		w->sid = pgn_session_id(s);
		pgn_session_hold(s);
		*p->wait_tail = w;
		p->wait_tail = &w->next;
		prefs_load(p);
	}
	return PGN_EVENT_PASS;
fail:
	/* The session goes on; its messages load the preferences when
	 * they need them. */
	msess_free(sd);
	free(w);
	pgn_log(PGN_LOG_ERROR, "session %" PRIu64 ": mod_mam: out of memory",
	        pgn_session_id(s));
	return PGN_EVENT_PASS;
}

static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct mam *mm = arg;
	struct msess *sd = ev->origin != NULL
	                           ? pgn_session_get_data(ev->origin, mm->m)
	                           : NULL;
	struct uprefs *p;

	if (sd == NULL || !sd->ref)
		return PGN_EVENT_PASS;
	sd->ref = 0;
	p = pgn_map_get(mm->prefs, sd->bare);
	if (p != NULL && p->refs > 0) {
		p->refs--;
		p->used = time(NULL);
	}
	return PGN_EVENT_PASS;
}

/* ---- the periodic sweep ---- */

static int
sweep_prefs(const char *key, uint64_t id, void *value, void *arg)
{
	struct uprefs *p = value;
	time_t now = *(const time_t *)arg;

	(void)id;
	if (p->refs == 0 && !p->loading && !p->trimming && p->waiters == NULL &&
	    p->held == 0 && now - p->used >= LINGER_SECS) {
		pgn_map_del(p->mm->prefs, key);
		prefs_free(p);
	}
	return 0;
}

static void
on_sweep(void *arg)
{
	struct mam *mm = arg;
	time_t now = time(NULL);

	pgn_map_foreach(mm->prefs, sweep_prefs, &now);
	pgn_map_foreach(mm->dedup, sweep_dedup, &now);
	if (mm->max_age_days > 0 && !mm->retention_running &&
	    now - mm->last_retention >= RETENTION_EVERY_SECS) {
		mm->last_retention = now;
		delete_old(mm, mm->max_age_days, NULL);
	}
	pgn_timer_start(mm->sweep, SWEEP_SECS * 1000);
}

/* ---- module ---- */

static void
mam_unload(struct pgn_module *m)
{
	struct mam *mm = pgn_module_data(m);

	if (mm == NULL)
		return;
	/* mm->sweep: the core frees a module's timers. */
	/* The store has drained before modules unload: what is left was
	 * never submitted. */
	while (mm->qhead != NULL) {
		struct row *r = mm->qhead;
		mm->qhead = r->next;
		row_drop(r);
	}
	while (mm->over_head != NULL) {
		struct waiter *w = mm->over_head;
		mm->over_head = w->next;
		pgn_stanza_free(pgn_hold_take(w->hold));
		free(w);
	}
	pgn_map_free_values(mm->prefs, free_prefs_value);
	pgn_map_free_values(mm->dedup, free_dedup_value);
	free(mm->sql_trim);
	memset(mm->rnd, 0, sizeof(mm->rnd));
	free(mm);
	pgn_module_set_data(m, NULL);
}

static int
mam_load(struct pgn_module *m)
{
	static const char *const features[] = {NS_MAM2, NS_MAM2_EXT, NS_MAM1,
	                                       NS_SID};
	struct mam *mm;
	const char *len_sql;
	int rc;

	if ((mm = calloc(1, sizeof(*mm))) == NULL)
		return -ENOMEM;
	pgn_module_set_data(m, mm);
	mm->m = m;
	mm->srv = pgn_module_server(m);
	mm->store = pgn_server_store(mm->srv);
	mm->host = pgn_host_name(pgn_module_host(m));
	mm->over_tail = &mm->over_head;
	mm->last_retention = time(NULL) - RETENTION_EVERY_SECS;
	mm->max_page = pgn_module_opt_int(m, "max_page");
	mm->max_age_days = pgn_module_opt_int(m, "max_age_days");
	mm->max_messages = pgn_module_opt_int(m, "max_messages");
	mm->max_bytes = pgn_module_opt_int(m, "max_bytes");
	mm->quota_refuse = pgn_module_opt_enum(m, "quota_policy") == 1;
	rc = -ENOMEM;
	len_sql = strcmp(pgn_store_driver(mm->store), "pgsql") == 0
	                  ? "octet_length(stanza)"
	                  : "length(CAST(stanza AS BLOB))";
	if ((mm->sql_trim = malloc(sizeof(sql_trim_fmt) + strlen(len_sql))) ==
	    NULL)
		goto fail;
	snprintf(mm->sql_trim, sizeof(sql_trim_fmt) + strlen(len_sql),
	         sql_trim_fmt, len_sql);
	if ((mm->prefs = pgn_map_new()) == NULL ||
	    (mm->dedup = pgn_map_new()) == NULL ||
	    (mm->sweep = pgn_timer_new(m, on_sweep, mm)) == NULL)
		goto fail;
	/* §7: on the archive's address, the user's bare JID (mod_disco
	 * lists them to the owner); on the host too, where clients of
	 * mam:1 looked. */
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if ((rc = pgn_module_add_account_feature(m, features[i])) < 0 ||
		    (rc = pgn_module_add_feature(m, features[i])) < 0)
			goto fail;
	/* The first sweep soon: retention catches up after downtime. */
	pgn_timer_start(mm->sweep, FIRST_SWEEP_MS);
	return 0;
fail:
	/* A failed load is not unloaded by the core. */
	mam_unload(m);
	return rc;
}

/* The archive's hooks; mam:1 (still used by clients) is served like
 * mam:2. */
#define MAM_IQ_HOOKS(ns)                                                   \
        {"iq-set/bare/" ns ":query", on_query, PGN_PRIO_HANDLER},          \
        {"iq-get/bare/" ns ":query", on_query_form, PGN_PRIO_HANDLER},     \
        {"iq-get/bare/" ns ":prefs", on_prefs_get, PGN_PRIO_HANDLER},      \
        {"iq-set/bare/" ns ":prefs", on_prefs_set, PGN_PRIO_HANDLER}
/* Resent messages: checked early, recorded last (see above). */
#define MAM_DEDUP_HOOKS(addr)                                              \
        {"pre-message/" addr, on_dedup_check, PGN_PRIO_EARLY},             \
        {"pre-message/" addr, on_dedup_record, PGN_PRIO_LAST}

static const struct pgn_module_hook_def mam_hooks[] = {
        {"pre-message/bare", on_outgoing, PGN_PRIO_ARCHIVE_OUT},
        {"pre-message/full", on_outgoing, PGN_PRIO_ARCHIVE_OUT},
        {"message/bare", on_incoming, PGN_PRIO_ARCHIVE_IN},
        {"message/full", on_incoming, PGN_PRIO_ARCHIVE_IN},
        {"session-started", on_session_started, PGN_PRIO_HANDLER},
        {"session-ended", on_session_ended, PGN_PRIO_HANDLER},
        {"iq-get/bare/" NS_MAM2 ":metadata", on_metadata, PGN_PRIO_HANDLER},
        MAM_DEDUP_HOOKS("bare"),
        MAM_DEDUP_HOOKS("full"),
        MAM_DEDUP_HOOKS("self"),
        MAM_IQ_HOOKS(NS_MAM2),
        MAM_IQ_HOOKS(NS_MAM1),
        {NULL, NULL, 0},
};

static const char *const quota_policies[] = {"drop_oldest", "refuse",
                                            NULL};

static const struct pgn_module_opt mam_options[] = {
        {.name = "max_page", .type = PGN_OPT_INT, .def = "250", .min = 1,
         .max = MAX_MAX_PAGE, .doc = "messages in one page of results"},
        {.name = "max_age_days", .type = PGN_OPT_INT, .def = "0", .min = 0,
         .max = MAX_MAX_AGE_DAYS,
         .doc = "days a message is kept (0: for ever)"},
        {.name = "max_messages", .type = PGN_OPT_INT, .def = "0", .min = 0,
         .max = MAX_QUOTA_MESSAGES,
         .doc = "messages per account (0: no quota)"},
        {.name = "max_bytes", .type = PGN_OPT_INT, .def = "0", .min = 0,
         .max = MAX_QUOTA_BYTES, .doc = "bytes per account (0: no quota)"},
        {.name = "quota_policy", .type = PGN_OPT_ENUM, .def = "drop_oldest",
         .values = quota_policies,
         .doc = "at the quota: drop the oldest, or refuse the new"},
        {.name = NULL},
};

static const struct pgn_module_cmd mam_commands[] = {
        {"delete_old_mam_messages", 1, "DAYS",
         "delete archived messages (XEP-0313) older than DAYS days",
         cmd_delete_old, 0},
        {"archive_stats", 1, "HOST",
         "print the message archive figures of HOST (messages, bytes, "
         "users at quota, quota and duplicate counters)",
         cmd_stats, 1},
        {NULL, 0, NULL, NULL, NULL, 0},
};

const struct pgn_module_def pgn_module_def = {
        .abi = PGN_MODULE_ABI,
        .name = "mod_mam",
        .description = "Message Archive Management (XEP-0313, XEP-0359)",
        .options = mam_options,
        .hooks = mam_hooks,
        .commands = mam_commands,
        .stats = cmd_stats,
        .load = mam_load,
        .unload = mam_unload,
        .depends = (const char *const[]){"mod_roster", NULL},
};
