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
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pigeon/ctl.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"
#include "pigeon/roster.h"
#include "pigeon/store.h"

#define NS_MAM2 "urn:xmpp:mam:2"
#define NS_MAM1 "urn:xmpp:mam:1"
#define NS_MAM2_EXT "urn:xmpp:mam:2#extended"
#define NS_SID "urn:xmpp:sid:0"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_XDATA "jabber:x:data"
#define NS_XDATA_VALIDATE "http://jabber.org/protocol/xdata-validate"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define NS_RECEIPTS "urn:xmpp:receipts"
#define NS_MARKERS "urn:xmpp:chat-markers:0"
#define NS_AXOLOTL "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NS_OPENPGP "urn:xmpp:openpgp:0"
#define NS_LEGACY_PGP "jabber:x:encrypted"

#define DEFAULT_PAGE 50
#define DEFAULT_MAX_PAGE 250
#define MAX_MAX_PAGE 1000
/* Stanza text sent in one page: result messages go straight into the
 * session's output buffer, which closes the stream past a few MiB.  A
 * page cut here is reported incomplete, as RSM allows. */
#define PAGE_BYTES (1024 * 1024)
/* Group commit, as in mod_offline. */
#define STORE_BATCH 256
/* ... and at most this much stanza text: the batch's messages are
 * delivered together when it commits, and a recipient's output buffer
 * closes the stream past a few MiB. */
#define STORE_BATCH_BYTES (1024 * 1024)
#define MAX_QUEUED 20000
/* Messages held on top of that before refusing (bounds memory). */
#define MAX_OVERFLOW 100000
/* The same two bounds in bytes of stanza text: the counts alone let a
 * flood of large messages hold gigabytes while the store is slow. */
#define MAX_QUEUED_BYTES (64u << 20)
#define MAX_OVERFLOW_BYTES (64u << 20)
/* Queries one session may have running. */
#define MAX_QUERIES 4
/* Untrusted input. */
#define MAX_ID_LEN 128 /* stanza ids, RSM after/before */
#define MAX_QUERYID_LEN 256
#define MAX_FIELDS 32
#define MAX_PREF_JIDS 1000 /* per list */
#define MAX_ORIGIN_ID_LEN 256
/* Preferences of a user without sessions stay cached this long after
 * their last use (a burst of messages to an offline user reads them
 * once). */
#define LINGER_SECS 60
/* Users cached without a session (messages to offline or unknown
 * accounts) beyond this many are not cached: their messages are not
 * archived until the sweep has made room (and it is logged). */
#define MAX_CACHED 100000
#define SWEEP_SECS 60
#define FIRST_SWEEP_MS 1000
#define RETENTION_EVERY_SECS 3600
/* Rows deleted per statement by retention: a large deletion does not
 * keep every other query of the store waiting. */
#define DELETE_BATCH 5000
#define DELETE_BATCH_STR "5000"
#define MAX_DAYS_DIGITS 7
#define MAX_MAX_AGE_DAYS 1000000L
#define US_PER_SEC 1000000LL
/* Parameters of one query statement: host, user, a few filters and up
 * to max_page ids. */
#define MAX_PARAMS (16 + MAX_MAX_PAGE)
/* Quotas: the oldest rows looked at by one trimming statement (a quota
 * lowered on a large archive is reached in several). */
#define TRIM_BATCH 1000
#define MAX_QUOTA_MESSAGES 1000000000L
#define MAX_QUOTA_BYTES (1L << 40)
/* Resent messages (XEP-0359 origin-id): the newest origin-ids each sender
 * used, the archive rows read to refill a window after a restart or an
 * idle time, and how long an unused window stays in memory. */
#define DEDUP_WINDOW 128
#define DEDUP_SCAN_STR "1024"
#define DEDUP_IDLE_SECS 600
#define MAX_DEDUP_USERS 100000

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
static const char sql_metadata[] =
        "SELECT * FROM (SELECT stanza_id, ts FROM mam_messages "
        "WHERE host = $1 AND username = $2 ORDER BY id LIMIT 1) AS a "
        "UNION ALL SELECT * FROM (SELECT stanza_id, ts FROM mam_messages "
        "WHERE host = $1 AND username = $2 ORDER BY id DESC LIMIT 1) AS b";
/* Retention, in batches: one host (the sweep) or all (pigeonctl). */
static const char sql_delete_old[] =
        "DELETE FROM mam_messages WHERE id IN (SELECT id FROM mam_messages "
        "WHERE ts < CAST($1 AS BIGINT) AND host = $2 "
        "ORDER BY ts LIMIT " DELETE_BATCH_STR ")";
static const char sql_delete_old_all[] =
        "DELETE FROM mam_messages WHERE id IN (SELECT id FROM mam_messages "
        "WHERE ts < CAST($1 AS BIGINT) ORDER BY ts LIMIT " DELETE_BATCH_STR ")";
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
/* Resent messages: the origin-ids of the user's newest messages (sent,
 * or to oneself), among the newest rows of the archive. */
static const char sql_dedup_load[] =
        "SELECT with_bare, origin_id FROM (SELECT id, with_bare, origin_id, "
        "outgoing FROM mam_messages WHERE host = $1 AND username = $2 "
        "ORDER BY id DESC LIMIT " DEDUP_SCAN_STR ") AS r "
        "WHERE origin_id IS NOT NULL AND (outgoing = 1 OR with_bare = $3) "
        "ORDER BY id";

/* ---- state ---- */

enum mode { MODE_ALWAYS, MODE_NEVER, MODE_ROSTER };
static const char *const mode_names[] = {"always", "never", "roster"};

/* V_NEED: the preferences must be read; V_ROSTER: default='roster' must
 * ask mod_roster about the peer. */
enum verdict { V_NO, V_YES, V_NEED, V_ROSTER };

enum pstate {
	P_NONE, /* never loaded */
	P_LOADED,
	P_NOACCOUNT, /* no such account: nothing to archive */
	P_FAILED,    /* the last load failed: loaded again when needed */
};

struct mam {
	struct pgn_module *m;
	struct pgn_server *srv;
	struct pgn_store *store;
	const char *host;
	long max_page;
	long max_age_days;
	struct pgn_map *prefs; /* bare JID -> struct uprefs */
	struct pgn_timer *sweep;
	time_t last_retention;
	int retention_running;
	/* Rows waiting for the running write (group commit). */
	struct row *qhead, *qtail;
	size_t queued;
	size_t queued_bytes;    /* their text, pairs included */
	unsigned inflight;
	/* Messages held while the queue is full (backpressure), in order;
	 * archived and let go as it drains. */
	struct waiter *over_head, **over_tail;
	size_t nover;
	size_t over_bytes;
	unsigned long long overload_refused; /* for the log */
	int64_t last_ts;        /* ts never decreases (see the schema) */
	uint64_t seq;           /* result message ids */
	unsigned char rnd[768]; /* random bytes for stanza ids */
	size_t rnd_left;
	/* Quotas (0: none) and what they did since the start. */
	long max_messages, max_bytes;
	int quota_refuse; /* quota_policy: refuse (else drop_oldest) */
	char *sql_trim;
	unsigned long long quota_refused, quota_dropped;
	/* Resent messages: sender bare JID -> struct dwin. */
	struct pgn_map *dedup;
	unsigned long long dedup_dropped;
};

/* A stanza or a session waiting for a user's preferences. */
struct waiter {
	struct waiter *next;
	struct pgn_hold *hold; /* a message, or NULL: a session */
	size_t bytes;          /* in the overflow: its text */
	int outgoing;
	uint64_t sid; /* the held session */
};

/* One user's preferences (XEP-0441), cached. */
struct uprefs {
	struct mam *mm;
	char *bare; /* the map key */
	char *user;
	enum pstate state;
	enum mode def;
	char **always, **never; /* prepared JIDs, sorted */
	size_t nalways, nnever;
	/* A store read, or a question to the roster service about the
	 * first waiter, has the pointer. */
	int loading;
	unsigned refs; /* sessions (marked in their session data) */
	time_t used;
	struct waiter *waiters, **wait_tail;
	/* Quota: the archive's count and bytes as the store counted them
	 * at the last read, plus the rows queued since that read was
	 * submitted (also in dn, dbytes). */
	int64_t qn, qbytes, dn, dbytes;
	int trimming; /* a trim or a count read has the pointer (2: a read
	               * after a trim that deleted nothing) */
};

/* Per-session data. */
struct msess {
	char *bare;
	int ref;          /* holds a reference on the user's uprefs */
	unsigned queries; /* running */
};

/* A row to insert: owns its strings.  The first row of a message owns
 * the held message and its second row (pair: the sender's copy), which
 * go in the same statement. */
struct row {
	struct row *next;
	struct mam *mm;
	struct pgn_hold *hold;
	struct row *pair;
	char *host;
	char *user;
	char *origin_id;
	char *with_bare;
	char *with_res;
	char *text;
	size_t len;             /* strlen(text) */
	int outgoing;
	char sid[24];
	char ts[24];
};

struct batch {
	struct mam *mm;
	struct row *head;
	int single; /* one message: a failure is its own */
};

/* A query (§4): the held iq, answered at the end. */
struct query {
	struct mam *mm;
	struct pgn_hold *hold;
	uint64_t sid;
	const char *ns;
	char *queryid;
	char *bare;
	char *user;
	char *with_bare, *with_res;
	int has_start, has_end;
	char start[24], end[24];
	char *after_id, *before_id; /* form fields (#extended) */
	char **ids;
	size_t nids;
	char *rsm_after, *rsm_before;
	int backward; /* RSM <before/> (empty: the last page) */
	long max;
	int flip;
};

/* A prefs set, between the request and the commit. */
struct prefs_write {
	struct mam *mm;
	struct pgn_hold *hold;
	uint64_t sid;
	const char *ns;
	char *bare;
	enum mode def;
	char **always, **never;
	size_t nalways, nnever;
};

/* A metadata request. */
struct meta_req {
	struct mam *mm;
	struct pgn_hold *hold;
	uint64_t sid;
};

/* A deletion of old messages (retention or pigeonctl), in batches. */
struct deletion {
	struct mam *mm;
	struct pgn_command *cmd; /* NULL for the retention sweep */
	char cutoff[24];
	int all_hosts;
	long long total;
};

/* ---- small helpers ---- */

static int
str_eq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static int
ns_is(const struct pgn_xml *el, const char *ns)
{
	return str_eq(pgn_xml_ns(el), ns);
}

static int
is_el(const struct pgn_xml *el, const char *ns, const char *name)
{
	return ns_is(el, ns) && str_eq(pgn_xml_name(el), name);
}

/* An integer column (NULL: 0). */
static int64_t
store_int(const struct pgn_store_result *res, int row, int col)
{
	const char *v = pgn_store_value(res, row, col);

	return v != NULL ? strtoll(v, NULL, 10) : 0;
}

static int64_t
now_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return (int64_t)time(NULL) * US_PER_SEC;
	return (int64_t)ts.tv_sec * US_PER_SEC + ts.tv_nsec / 1000;
}

/* The archiving time of a row submitted now: never below the last one
 * (see the schema: time bounds become id bounds). */
static int64_t
next_ts(struct mam *mm)
{
	int64_t t = now_us();

	if (t < mm->last_ts)
		t = mm->last_ts;
	mm->last_ts = t;
	return t;
}

/* XEP-0082 DateTime with microseconds: "CCYY-MM-DDThh:mm:ss.uuuuuuZ". */
static int
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
static int
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
static int
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
static int
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

static void
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

static int
strv_has(char *const *v, size_t n, const char *s)
{
	return n > 0 && bsearch(&s, v, n, sizeof(*v), cmp_str) != NULL;
}

/* Sorts v and removes duplicates; returns the new length. */
static size_t
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
static int
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
static char *
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

static int
add_text_child(struct pgn_xml *parent, const char *ns, const char *name,
               const char *text)
{
	struct pgn_xml *c = pgn_xml_add_child(parent, ns, name);

	if (c == NULL || pgn_xml_add_text(c, text, strlen(text)) != 0)
		return -ENOMEM;
	return 0;
}

/* ---- which messages are archived ---- */

/* XEP-0313 §6.1.1: chat and normal messages (a message without a type,
 * or of a type RFC 6121 §5.2.2 does not define, is normal) with content:
 * a body, a receipt (XEP-0184), a chat marker (XEP-0333) or an encrypted
 * payload (OMEMO, OpenPGP for XMPP, legacy OpenPGP).  XEP-0334:
 * <store/> archives a chat or normal message of any content (a chat
 * state alone, for one); <no-store/> and <no-permanent-store/> always
 * win.  Never groupchat (no MUC archive in a user archive here),
 * headline or error. */
static int
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
	struct pgn_server *srv = r->mm->srv;
	struct pgn_hold *h = r->hold;

	/* The failure itself is logged once per statement. */
	if (!ok)
		pgn_log(PGN_LOG_DEBUG,
		        "mod_mam %s: message %s of %s not "
		        "archived, bounced",
		        r->mm->host, r->sid, r->user);
	row_free(r);
	if (h == NULL)
		return;
	if (ok)
		pgn_hold_resume(h);
	else
		pgn_stanza_bounce(srv, pgn_hold_take(h), "wait",
		                  "internal-server-error");
}

/* At unload: nothing can be routed any more.  Takes r. */
static void
row_drop(struct row *r)
{
	if (r->hold != NULL)
		pgn_stanza_free(pgn_hold_take(r->hold));
	row_free(r);
}

static void flush_rows(struct mam *mm);

static void drain_overflow(struct mam *mm);

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
static void
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
static int
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
		pgn_stanza_bounce(mm->srv, pgn_hold_take(h), "wait",
		                  "resource-constraint");
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
	if (r != NULL && !outgoing && !will_deliver(mm, st)) {
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
	queue_row(mm, r);
	quota_count_rows(mm, st, owner, len, pair);
	return;
fail:
	pgn_stanza_bounce(mm->srv, pgn_hold_take(h), "wait",
	                  "internal-server-error");
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
static void
settle(struct mam *mm, struct pgn_hold *h, int outgoing, enum verdict v,
       const struct uprefs *p)
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
	else
		pgn_hold_resume(h);
}

/* ---- preferences cache ---- */

static void
prefs_lists_clear(struct uprefs *p)
{
	strv_free(p->always, p->nalways);
	strv_free(p->never, p->nnever);
	p->always = p->never = NULL;
	p->nalways = p->nnever = 0;
}

static void
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

/* The user's entry, made if needed (always for a session, else while
 * fewer than MAX_CACHED are cached).  NULL on allocation failure or when
 * full. */
static struct uprefs *
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
static enum verdict
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

static void prefs_load(struct uprefs *p);

/* Archives and lets go the messages held while the queue was full, in
 * order, as far as there is room.  Routing one may hold the next message
 * behind them (the list is walked from its head each time). */
static void
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
	if (w != NULL && w->hold != NULL &&
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
static enum verdict
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
static void
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
	if ((outgoing && strcmp(owner->bare, peer->bare) == 0) ||
	    !archivable(st))
		return PGN_EVENT_PASS;
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
		return PGN_EVENT_PASS;
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
	if (!outgoing && !will_deliver(mm, st)) {
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

static int
on_outgoing(struct pgn_event *ev, void *arg)
{
	return on_message(ev, arg, 1);
}

static int
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
static void
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

static int
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
static int
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

static int
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

static int
free_dedup_entry(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key;
	(void)id;
	(void)arg;
	dwin_free(value);
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

/* ---- requests to the archive: common ---- */

/* The request comes from a session of the archive's owner (§8.1: nobody
 * else may read it). */
static int
from_owner(const struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;

	return ev->origin != NULL && st->from != NULL && st->to != NULL &&
	       st->from->node != NULL && st->to->node != NULL &&
	       strcmp(st->from->bare, st->to->bare) == 0;
}

static const char *
request_ns(const struct pgn_stanza *st)
{
	const struct pgn_xml *q = pgn_xml_first_child(st->xml);

	return q != NULL && ns_is(q, NS_MAM1) ? NS_MAM1 : NS_MAM2;
}

/* Answers a held iq straight onto the session that sent it (after the
 * result messages, in order), with payload (taken, may be NULL) or,
 * when condition is set, an error.  Takes h. */
static void
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

static int
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
static int
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

static int
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

static int
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

static int
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

/* ---- retention ---- */

static int delete_next(struct deletion *d);

static void
deletion_finish(struct deletion *d, int ok)
{
	char text[32];

	if (d->cmd != NULL) {
		snprintf(text, sizeof(text), "%lld\n", d->total);
		if (ok)
			pgn_command_reply(d->cmd, PGN_CTL_OK, text);
		else
			pgn_command_reply(d->cmd, PGN_CTL_ERROR,
			                  "storage error");
	} else {
		d->mm->retention_running = 0;
		if (d->total > 0)
			pgn_log(PGN_LOG_INFO,
			        "mod_mam %s: %lld archived "
			        "messages older than %ld days deleted",
			        d->mm->host, d->total, d->mm->max_age_days);
	}
	free(d);
}

static void
delete_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct deletion *d = arg;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: deleting old messages "
		        "failed: %s",
		        d->mm->host, res->errmsg);
		deletion_finish(d, 0);
		return;
	}
	d->total += res->changes;
	/* A full batch: there may be more. */
	if (res->changes >= DELETE_BATCH && delete_next(d) == 0)
		return;
	deletion_finish(d, res->changes < DELETE_BATCH);
}

static int
delete_next(struct deletion *d)
{
	const char *params[2] = {d->cutoff, d->mm->host};

	if (d->all_hosts)
		return pgn_store_query(d->mm->store, sql_delete_old_all, 1,
		                       params, 0, delete_done, d);
	return pgn_store_query(d->mm->store, sql_delete_old, 2, params, 0,
	                       delete_done, d);
}

/* Deletes what was archived before now - days (inclusive of now for 0).
 * Takes cmd (answered when done). */
static void
delete_old(struct mam *mm, long long days, struct pgn_command *cmd)
{
	struct deletion *d = calloc(1, sizeof(*d));

	if (d == NULL) {
		if (cmd != NULL)
			pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	d->mm = mm;
	d->cmd = cmd;
	d->all_hosts = cmd != NULL;
	snprintf(d->cutoff, sizeof(d->cutoff), "%lld",
	         (long long)now_us() + 1 - days * 86400LL * US_PER_SEC);
	if (cmd == NULL)
		mm->retention_running = 1;
	/* Queued rows are archived "now": they go first. */
	flush_rows(mm);
	if (delete_next(d) != 0)
		deletion_finish(d, 0);
}

static void
cmd_delete_old(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	const char *s = argc == 1 ? argv[0] : "";
	size_t len = strlen(s);
	long long days = 0;

	if (len == 0 || len > MAX_DAYS_DIGITS ||
	    strspn(s, "0123456789") != len) {
		pgn_command_reply(cmd, PGN_CTL_USAGE,
		                  "usage: delete_old_mam_messages DAYS (an "
		                  "integer >= 0)");
		return;
	}
	for (size_t i = 0; i < len; i++)
		days = days * 10 + (s[i] - '0');
	delete_old(arg, days, cmd);
}

/* ---- the periodic sweep ---- */

static int
sweep_prefs(const char *key, uint64_t id, void *value, void *arg)
{
	struct uprefs *p = value;
	time_t now = *(const time_t *)arg;

	(void)id;
	if (p->refs == 0 && !p->loading && !p->trimming && p->waiters == NULL &&
	    now - p->used >= LINGER_SECS) {
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

static int
free_prefs_entry(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key;
	(void)id;
	(void)arg;
	prefs_free(value);
	return 0;
}

static void
mam_unload(struct pgn_module *m)
{
	struct mam *mm = pgn_module_data(m);

	if (mm == NULL)
		return;
	pgn_timer_free(mm->sweep);
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
	if (mm->prefs != NULL) {
		pgn_map_foreach(mm->prefs, free_prefs_entry, NULL);
		pgn_map_free(mm->prefs);
	}
	if (mm->dedup != NULL) {
		pgn_map_foreach(mm->dedup, free_dedup_entry, NULL);
		pgn_map_free(mm->dedup);
	}
	free(mm->sql_trim);
	memset(mm->rnd, 0, sizeof(mm->rnd));
	free(mm);
	pgn_module_set_data(m, NULL);
}

static int
mam_load(struct pgn_module *m)
{
	static const char *const nss[] = {NS_MAM2, NS_MAM1};
	static const char *const features[] = {NS_MAM2, NS_MAM2_EXT, NS_MAM1,
	                                       NS_SID};
	struct mam *mm;
	const char *policy, *len_sql;
	char ev[128];
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
	if ((rc = pgn_module_option_long(m, "max_page", DEFAULT_MAX_PAGE, 1,
	                                 MAX_MAX_PAGE, &mm->max_page)) != 0 ||
	    (rc = pgn_module_option_long(m, "max_age_days", 0, 0,
	                                 MAX_MAX_AGE_DAYS,
	                                 &mm->max_age_days)) != 0 ||
	    (rc = pgn_module_option_long(m, "max_messages", 0, 0,
	                                 MAX_QUOTA_MESSAGES,
	                                 &mm->max_messages)) != 0 ||
	    (rc = pgn_module_option_long(m, "max_bytes", 0, 0, MAX_QUOTA_BYTES,
	                                 &mm->max_bytes)) != 0)
		goto fail;
	policy = pgn_module_option(m, "quota_policy", "drop_oldest");
	if (strcmp(policy, "refuse") == 0) {
		mm->quota_refuse = 1;
	} else if (strcmp(policy, "drop_oldest") != 0) {
		pgn_log(PGN_LOG_ERROR,
		        "mod_mam: quota_policy must be drop_oldest or refuse, "
		        "not \"%s\"",
		        policy);
		rc = -EINVAL;
		goto fail;
	}
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

	if ((rc = pgn_module_hook(m, "pre-message/bare", on_outgoing, mm, 30)) <
	            0 ||
	    (rc = pgn_module_hook(m, "pre-message/full", on_outgoing, mm, 30)) <
	            0 ||
	    (rc = pgn_module_hook(m, "message/bare", on_incoming, mm, 20)) <
	            0 ||
	    (rc = pgn_module_hook(m, "message/full", on_incoming, mm, 20)) <
	            0 ||
	    (rc = pgn_module_hook(m, "session-started", on_session_started, mm,
	                          0)) < 0 ||
	    (rc = pgn_module_hook(m, "session-ended", on_session_ended, mm,
	                          0)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-get/bare/" NS_MAM2 ":metadata",
	                          on_metadata, mm, 0)) < 0)
		goto fail;
	/* Resent messages: checked at 90, recorded at -100 (see above). */
	for (size_t i = 0; i < 3; i++) {
		static const char *const addrs[] = {"bare", "full", "self"};
		snprintf(ev, sizeof(ev), "pre-message/%s", addrs[i]);
		if ((rc = pgn_module_hook(m, ev, on_dedup_check, mm, 90)) < 0 ||
		    (rc = pgn_module_hook(m, ev, on_dedup_record, mm, -100)) <
		            0)
			goto fail;
	}
	for (size_t i = 0; i < 2; i++) {
		static const struct {
			const char *type, *name;
			pgn_hook_fn fn;
		} hooks[] = {
		        {"set", "query", on_query},
		        {"get", "query", on_query_form},
		        {"get", "prefs", on_prefs_get},
		        {"set", "prefs", on_prefs_set},
		};
		for (size_t k = 0; k < sizeof(hooks) / sizeof(hooks[0]); k++) {
			snprintf(ev, sizeof(ev), "iq-%s/bare/%s:%s",
			         hooks[k].type, nss[i], hooks[k].name);
			if ((rc = pgn_module_hook(m, ev, hooks[k].fn, mm, 0)) <
			    0)
				goto fail;
		}
	}
	/* §7: on the archive's address, the user's bare JID (mod_disco
	 * lists them to the owner); on the host too, where clients of
	 * mam:1 looked. */
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if ((rc = pgn_module_add_account_feature(m, features[i])) < 0 ||
		    (rc = pgn_module_add_feature(m, features[i])) < 0)
			goto fail;
	if ((rc = pgn_module_command(m, "delete_old_mam_messages",
	                             cmd_delete_old, mm)) < 0 ||
	    (rc = pgn_module_command(m, "archive_stats", cmd_stats, mm)) < 0 ||
	    (rc = pgn_module_stats(m, cmd_stats, mm)) < 0)
		goto fail;
	/* The first sweep soon: retention catches up after downtime. */
	pgn_timer_start(mm->sweep, FIRST_SWEEP_MS);
	return 0;
fail:
	/* A failed load is not unloaded by the core. */
	mam_unload(m);
	return rc;
}

const struct pgn_module_def pgn_module_def = {
        .abi = PGN_MODULE_ABI,
        .name = "mod_mam",
        .description = "Message Archive Management (XEP-0313, XEP-0359)",
        .load = mam_load,
        .unload = mam_unload,
        .depends = (const char *const[]){"mod_roster", NULL},
};
