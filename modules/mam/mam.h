/* mod_mam's private header: constants, state and the functions its
 * files share (mod_mam.c has the module, the sessions and the helpers;
 * archive.c what is archived, the group commit and the quotas; dedup.c
 * resent messages; prefs.c the preferences; query.c the queries and
 * metadata; retention.c the deletion of old messages).  Nothing here is
 * visible outside the module. */
#ifndef PIGEON_MOD_MAM_H
#define PIGEON_MOD_MAM_H

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

/* ---- state ---- */

enum mode { MODE_ALWAYS, MODE_NEVER, MODE_ROSTER };

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
	int pass;     /* a message that is not archived: it only keeps its
	               * place (see pass_behind) */
	uint64_t sid; /* the held session */
};

/* A message that is not archived, waiting to go on right after the row
 * it follows (struct row.follow): one sender's messages keep their order
 * although only some of them wait for the archive. */
struct follower {
	struct follower *next;
	struct pgn_hold *hold;
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
	/* Messages to this user held until their rows commit (rows with
	 * held_for = this): while any are, a later message to the user
	 * that nobody can take now queues behind them instead of going to
	 * offline storage first (RFC 6121 §8: one sender's messages keep
	 * their order).  The sweep keeps the struct while it is not 0. */
	unsigned held;
	/* The newest of those rows: a message to the user that is not
	 * archived goes on right after it (pass_behind), not before. */
	struct row *last_held;
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
	struct uprefs *held_for; /* counted in its held; not owned */
	struct follower *follow, **follow_tail; /* owned; go on after it */
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

/* ---- shared between the files of the module ---- */

/* Not visible outside the module's .so. */
#pragma GCC visibility push(hidden)

int str_eq(const char *a, const char *b);
int ns_is(const struct pgn_xml *el, const char *ns);
int is_el(const struct pgn_xml *el, const char *ns, const char *name);
int64_t store_int(const struct pgn_store_result *res, int row, int col);
int64_t now_us(void);
int64_t next_ts(struct mam *mm);
int format_stamp(int64_t us, char *buf, size_t len);
int parse_datetime(const char *s, int64_t *out);
int parse_int64(const char *s, int64_t *out);
int make_stanza_id(struct mam *mm, char out[17]);
void strv_free(char **v, size_t n);
int strv_has(char *const *v, size_t n, const char *s);
size_t strv_sort_unique(char **v, size_t n);
int strv_split(const char *s, char ***out, size_t *n);
char *strv_join(char *const *v, size_t n);
int add_text_child(struct pgn_xml *parent, const char *ns, const char *name,
		   const char *text);
int archivable(const struct pgn_stanza *st);
void row_drop(struct row *r);
void flush_rows(struct mam *mm);
int queue_full(const struct mam *mm);
void settle(struct mam *mm, struct pgn_hold *h, int outgoing, enum verdict v,
	    struct uprefs *p);
/* Lets the held incoming message h (not archived) go on, after the
 * user's messages that still wait for their rows, if any (p may be
 * NULL).  Takes h. */
void pass_behind(struct uprefs *p, struct pgn_hold *h);
void prefs_free(struct uprefs *p);
/* prefs_free for pgn_map_free_values. */
void free_prefs_value(void *value);
struct uprefs *prefs_get(struct mam *mm, const char *bare, const char *user,
			 int session);
enum verdict decide(const struct uprefs *p, const struct pgn_jid *peer,
		    int final);
void drain_overflow(struct mam *mm);
enum verdict roster_ask(struct uprefs *p, const struct pgn_jid *peer);
void prefs_load(struct uprefs *p);
int on_outgoing(struct pgn_event *ev, void *arg);
int on_incoming(struct pgn_event *ev, void *arg);
void cmd_stats(struct pgn_command *cmd, int argc, char *const *argv, void *arg);
int on_dedup_check(struct pgn_event *ev, void *arg);
int on_dedup_record(struct pgn_event *ev, void *arg);
int sweep_dedup(const char *key, uint64_t id, void *value, void *arg);
void free_dedup_value(void *value);
int from_owner(const struct pgn_event *ev);
const char *request_ns(const struct pgn_stanza *st);
void answer_held(struct mam *mm, struct pgn_hold *h, uint64_t sid,
		 struct pgn_xml *payload, const char *type, const char *condition);
int on_query(struct pgn_event *ev, void *arg);
int on_query_form(struct pgn_event *ev, void *arg);
int on_metadata(struct pgn_event *ev, void *arg);
int on_prefs_get(struct pgn_event *ev, void *arg);
int on_prefs_set(struct pgn_event *ev, void *arg);
void delete_old(struct mam *mm, long long days, struct pgn_command *cmd);
void cmd_delete_old(struct pgn_command *cmd, int argc, char *const *argv,
		    void *arg);

#pragma GCC visibility pop

#endif
