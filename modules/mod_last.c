/* XEP-0012: Last Activity.
 *
 *   to the server (§5): the server's uptime;
 *   to a user's bare JID (§3), on the user's behalf: seconds='0' while
 *     the user has an available resource, otherwise the seconds since the
 *     user's last logout with the status text of that session's last
 *     presence.  Only the user and contacts to whom the user's presence
 *     is shared (roster subscription 'from' or 'both', RFC 6121 §4;
 *     asked to mod_roster's "roster" service) may know it; anybody else
 *     gets forbidden (§3, §8).  An unknown account
 *     gets service-unavailable (RFC 6121 §8.5.1), an account that never
 *     logged out item-not-found (nothing is known);
 *   to a full JID (§4): the client's idle time, routed to the client by
 *     the core: nothing here.
 * The user's last moment online is written (table last_activity, one
 * row per account) when the user stops being available: an explicit
 * unavailable presence from the last available resource, or the end of
 * the last available session; a session that was never available (a
 * bot without presence) records its end when it is the user's last one,
 * unless it had itself sent unavailable (that moment stands).  pigeonctl
 * get_last USER HOST prints "online", "never", or the UTC time of the
 * last logout and the status separated by a tab. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pigeon/ctl.h"
#include "pigeon/log.h"
#include "pigeon/module.h"
#include "pigeon/roster.h"
#include "pigeon/store.h"

#define NS_LAST "jabber:iq:last"

/* Status texts kept in bytes (a presence is bounded by the stanza size
 * limit already; this bounds the table). */
#define MAX_STATUS 1024

struct last {
	struct pgn_module *m;
	struct pgn_server *srv;
	struct pgn_store *store;
	const char *host;
};

static int
user_available(struct pgn_server *srv, const char *bare)
{
	for (struct pgn_session *s = pgn_user_sessions(srv, bare); s != NULL;
	     s = pgn_session_next(s))
		if (pgn_session_available(s))
			return 1;
	return 0;
}

static struct pgn_xml *
new_query(long seconds, const char *status)
{
	struct pgn_xml *q = pgn_xml_new(NS_LAST, "query");
	char buf[32];

	if (q == NULL)
		return NULL;
	snprintf(buf, sizeof(buf), "%ld", seconds < 0 ? 0 : seconds);
	if (pgn_xml_set_attr(q, "seconds", buf) != 0 ||
	    (status != NULL && *status != '\0' &&
	     pgn_xml_add_text(q, status, strlen(status)) != 0)) {
		pgn_xml_free(q);
		return NULL;
	}
	return q;
}

/* §5: to the server itself. */
static int
on_server_last(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *q = new_query(pgn_server_uptime(ev->server), NULL);
	if (q == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
}

struct query {
	struct last *l;
	struct pgn_hold *hold;
	struct pgn_stanza *st; /* taken from the hold once the row is read */
	int self; /* the user asks about their own account */
	int known; /* the account logged out at least once */
	int64_t logout;
	char *status;
};

static void
query_free(struct query *q)
{
	if (q == NULL)
		return;
	pgn_stanza_free(q->st);
	free(q->status);
	free(q);
}

static void
answer(struct last *l, struct pgn_stanza *st, struct pgn_xml *payload)
{
	struct pgn_stanza *r = pgn_stanza_iq_result(st, payload);
	if (r != NULL)
		pgn_route(l->srv, r);
}

static void
fail(struct last *l, struct pgn_stanza *st, const char *type,
     const char *condition)
{
	struct pgn_stanza *r =
	        pgn_stanza_error_reply(st, type, condition, NULL);
	if (r != NULL)
		pgn_route(l->srv, r);
}

/* The requester may know (the user, or a contact with 'from'/'both'):
 * the answer. */
static void
finish(struct query *q)
{
	struct last *l = q->l;
	const struct pgn_stanza *st = q->st;
	struct pgn_xml *payload;

	/* Checked now, not before the queries: the user may have come or
	 * gone meanwhile. */
	if (user_available(l->srv, st->to->bare)) {
		payload = new_query(0, NULL);
	} else if (!q->known) {
		/* Never logged out (or logged in): no information. */
		fail(l, q->st, "cancel", "item-not-found");
		return;
	} else {
		payload = new_query((long)(time(NULL) - (time_t)q->logout),
		                    q->status);
	}
	if (payload == NULL)
		fail(l, q->st, "wait", "resource-constraint");
	else
		answer(l, q->st, payload);
}

/* mod_roster's answer: is the requester subscribed to the presence? */
static void
on_contact(int err, int found, void *arg)
{
	struct query *q = arg;

	if (err != 0)
		fail(q->l, q->st, "wait", "internal-server-error");
	else if (!found)
		fail(q->l, q->st, "auth", "forbidden");
	else
		finish(q);
	query_free(q);
}

/* Columns: account exists, seconds, status. */
static void
on_user_last_row(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct query *q = arg;
	struct last *l = q->l;
	const struct pgn_roster_service *roster;
	const char *secs, *status;
	void *rinst;

	(void)owner;
	if ((q->st = pgn_hold_take(q->hold)) == NULL)
		goto done;
	if (res->error != 0 || res->nrows != 1 || res->ncols != 3) {
		pgn_log(PGN_LOG_ERROR, "mod_last: query failed: %s",
		        res->error ? res->errmsg : "unexpected result");
		fail(l, q->st, "wait", "internal-server-error");
		goto done;
	}
	if (pgn_store_value(res, 0, 0) == NULL) {
		fail(l, q->st, "cancel", "service-unavailable");
		goto done;
	}
	secs = pgn_store_value(res, 0, 1);
	status = pgn_store_value(res, 0, 2);
	q->known = secs != NULL;
	q->logout = secs != NULL ? strtoll(secs, NULL, 10) : 0;
	if (status != NULL && (q->status = strdup(status)) == NULL) {
		fail(l, q->st, "wait", "resource-constraint");
		goto done;
	}
	if (q->self) {
		finish(q);
		goto done;
	}
	/* §3, §8: only those the user's presence is shared with. */
	roster = pgn_host_service(pgn_module_host(l->m), PGN_ROSTER_SERVICE,
	                          &rinst);
	if (roster == NULL) {
		fail(l, q->st, "auth", "forbidden");
		goto done;
	}
	if (roster->has_contact(rinst, q->st->to->bare, q->st->from->bare,
	                        PGN_SUB_FROM | PGN_SUB_BOTH, on_contact,
	                        q) == 0)
		return;
	fail(l, q->st, "wait", "resource-constraint");
done:
	query_free(q);
}

/* A user's last activity: whether the account exists, then the seconds
 * and status stored at its last logout (both NULL when never seen). */
static const char sql_user_last[] =
        "SELECT (SELECT 1 FROM accounts WHERE host = $1 AND "
        "username = $2), "
        "(SELECT seconds FROM last_activity WHERE host = $1 AND "
        "username = $2), "
        "(SELECT status FROM last_activity WHERE host = $1 AND "
        "username = $2)";

/* §3: to a user's bare JID. */
static int
on_user_last(struct pgn_event *ev, void *arg)
{
	struct last *l = arg;
	const struct pgn_stanza *st = ev->stanza;
	struct query *q;
	const char *params[2];

	if (st->from == NULL || st->to == NULL || st->to->node == NULL)
		return PGN_EVENT_PASS;
	q = calloc(1, sizeof(*q));
	if (q == NULL)
		goto nomem;
	q->l = l;
	q->self = strcmp(st->from->bare, st->to->bare) == 0;
	params[0] = l->host;
	params[1] = st->to->node;
	if ((q->hold = pgn_event_hold(ev)) == NULL)
		goto nomem;
	if (pgn_store_query(l->store, sql_user_last, 2, params, 0,
	                    on_user_last_row, q) < 0) {
		pgn_hold_answer(q->hold, NULL, "wait", "internal-server-error",
		                NULL);
		free(q);
	}
	return PGN_EVENT_HANDLED;
nomem:
	free(q);
	pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}

/* The status text of a presence, truncated to MAX_STATUS bytes on a
 * UTF-8 boundary; malloc'd, NULL if none. */
static char *
presence_status(const struct pgn_xml *p)
{
	char *s = p != NULL ? pgn_xml_child_text(p, NULL, "status") : NULL;
	size_t n;

	if (s == NULL)
		return NULL;
	n = strlen(s);
	if (n > MAX_STATUS) {
		n = MAX_STATUS;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
		s[n] = '\0';
	}
	return s;
}

/* The session's account, kept from "session-started": in
 * "session-ended" pgn_session_jid() is NULL once the stream is closing. */
struct lsess {
	struct pgn_jid *jid;
	int available; /* sent available presence, not unavailable since */
	int recorded;  /* its explicit unavailable was recorded */
};

static void
lsess_free(void *p)
{
	struct lsess *ls = p;
	if (ls != NULL)
		pgn_jid_free(ls->jid);
	free(ls);
}

static int
on_session_started(struct pgn_event *ev, void *arg)
{
	struct last *l = arg;
	const struct pgn_jid *jid =
	        ev->origin != NULL ? pgn_session_jid(ev->origin) : NULL;
	struct lsess *ls;

	if (jid == NULL)
		return PGN_EVENT_PASS;
	ls = calloc(1, sizeof(*ls));
	if (ls == NULL || (ls->jid = pgn_jid_bare_copy(jid)) == NULL ||
	    pgn_session_set_data(ev->origin, l->m, ls, lsess_free) < 0) {
		lsess_free(ls);
		pgn_log(PGN_LOG_WARN,
		        "session %" PRIu64 ": mod_last: out of memory, the "
		        "logout will not be recorded",
		        pgn_session_id(ev->origin));
	}
	return PGN_EVENT_PASS;
}

/* Writes now and the status of presence p as the last activity of
 * ls's account.  INSERT ... SELECT FROM accounts: nothing is written for
 * an account deleted meanwhile (its sessions are kicked). */
static void
record(struct last *l, struct pgn_session *s, const struct lsess *ls,
       const struct pgn_xml *p)
{
	static const char sql[] =
	        "INSERT INTO last_activity (host, username, seconds, status) "
	        "SELECT host, username, CAST($3 AS BIGINT), $4 FROM accounts "
	        "WHERE host = $1 AND username = $2 "
	        "ON CONFLICT (host, username) DO UPDATE SET "
	        "seconds = excluded.seconds, status = excluded.status";
	char now[32], *status = presence_status(p);
	const char *params[4];

	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	params[0] = l->host;
	params[1] = ls->jid->node;
	params[2] = now;
	params[3] = status != NULL ? status : "";
	if (pgn_store_query(l->store, sql, 4, params, 0, NULL, NULL) < 0)
		pgn_log(PGN_LOG_ERROR,
		        "session %" PRIu64 ": mod_last: cannot record the "
		        "last activity",
		        pgn_session_id(s));
	free(status);
}

/* The user's own presence ("pre-presence/self", before the presence
 * module broadcasts it).  XEP-0012 §3 answers for a user who is not
 * available with the time since they went offline: an explicit
 * unavailable from the last available resource is that moment, even if
 * the stream stays open (the core already counts this session as
 * unavailable, so user_available() sees the others only). */
static int
on_self_presence(struct pgn_event *ev, void *arg)
{
	struct last *l = arg;
	const struct pgn_stanza *st = ev->stanza;
	struct lsess *ls = ev->origin != NULL
	                           ? pgn_session_get_data(ev->origin, l->m)
	                           : NULL;

	if (ls == NULL || ls->jid->node == NULL)
		return PGN_EVENT_PASS;
	if (st->type == NULL) {
		ls->available = 1;
		ls->recorded = 0;
	} else if (strcmp(st->type, "unavailable") == 0 && ls->available) {
		ls->available = 0;
		if (!user_available(l->srv, ls->jid->bare)) {
			record(l, ev->origin, ls, st->xml);
			ls->recorded = 1;
		}
	}
	return PGN_EVENT_PASS;
}

/* Records the logout when the session's end leaves the user without an
 * available resource: an available session that was the last one
 * available, or the user's last session of all unless its explicit
 * unavailable was already recorded (that moment stands).  Runs before
 * the presence module (priority 10 > 0), which replaces the session's
 * presence by the unavailable it broadcasts: the status kept is the
 * user's own last one (of the last available presence when the
 * connection was lost). */
static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct last *l = arg;
	struct lsess *ls = ev->origin != NULL
	                           ? pgn_session_get_data(ev->origin, l->m)
	                           : NULL;

	if (ls == NULL || ls->jid->node == NULL)
		return PGN_EVENT_PASS;
	/* The session is already unbound: only the others are seen. */
	if (ls->available ? user_available(l->srv, ls->jid->bare)
	                  : ls->recorded || pgn_user_sessions(
	                                            l->srv, ls->jid->bare) !=
	                                            NULL)
		return PGN_EVENT_PASS;
	record(l, ev->origin, ls, pgn_session_presence(ev->origin));
	return PGN_EVENT_PASS;
}

/* ---- pigeonctl get_last USER HOST ------------------------------------- */

static void
on_command_row(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct pgn_command *cmd = arg;
	const char *secs, *status;
	char *out = NULL;
	struct tm tm;
	time_t t;
	char when[32];
	size_t n;

	if (res->error != 0 || res->nrows != 1 || res->ncols != 3) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error\n");
		return;
	}
	if (pgn_store_value(res, 0, 0) == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "no such user\n");
		return;
	}
	secs = pgn_store_value(res, 0, 1);
	status = pgn_store_value(res, 0, 2);
	if (secs == NULL) {
		pgn_command_reply(cmd, PGN_CTL_OK, "never\n");
		return;
	}
	t = (time_t)strtoll(secs, NULL, 10);
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "bad time stored\n");
		return;
	}
	status = status != NULL ? status : "";
	n = strlen(when) + strlen(status) + 3;
	out = malloc(n);
	if (out == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory\n");
		return;
	}
	snprintf(out, n, "%s\t%s\n", when, status);
	/* One line, one tab: control characters of the status become
	 * spaces. */
	for (char *p = out + strlen(when) + 1; p[1] != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	pgn_command_reply(cmd, PGN_CTL_OK, out);
	free(out);
}

static void
cmd_get_last(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	struct last *l = arg;
	struct pgn_jid *jid = NULL;
	const char *params[2];

	if (argc != 2) {
		pgn_command_reply(cmd, PGN_CTL_USAGE,
		                  "usage: get_last USER HOST\n");
		return;
	}
	if (pgn_jid_make(argv[0], argv[1], NULL, &jid) != 0 ||
	    jid->node == NULL || strcmp(jid->domain, l->host) != 0) {
		pgn_jid_free(jid);
		pgn_command_reply(cmd, PGN_CTL_ERROR, "no such user\n");
		return;
	}
	if (pgn_user_sessions(l->srv, jid->bare) != NULL) {
		pgn_jid_free(jid);
		pgn_command_reply(cmd, PGN_CTL_OK, "online\n");
		return;
	}
	params[0] = l->host;
	params[1] = jid->node;
	if (pgn_store_query(l->store, sql_user_last, 2, params, 0,
	                    on_command_row, cmd) < 0)
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error\n");
	pgn_jid_free(jid);
}

/* ---- module ---------------------------------------------------------- */

static void
last_unload(struct pgn_module *m)
{
	free(pgn_module_data(m));
	pgn_module_set_data(m, NULL);
}

static int
last_load(struct pgn_module *m)
{
	struct last *l = calloc(1, sizeof(*l));
	int rc;

	if (l == NULL)
		return -ENOMEM;
	l->m = m;
	l->srv = pgn_module_server(m);
	l->store = pgn_server_store(l->srv);
	l->host = pgn_host_name(pgn_module_host(m));
	pgn_module_set_data(m, l);
	if ((rc = pgn_module_add_feature(m, NS_LAST)) < 0) {
		last_unload(m);
		return rc;
	}
	return 0;
}

static const struct pgn_module_hook_def last_hooks[] = {
        {"iq-get/host/" NS_LAST ":query", on_server_last, PGN_PRIO_HANDLER},
        {"iq-get/bare/" NS_LAST ":query", on_user_last, PGN_PRIO_HANDLER},
        {"session-started", on_session_started, PGN_PRIO_HANDLER},
        {"session-ended", on_session_ended, PGN_PRIO_OBSERVER},
        {"pre-presence/self", on_self_presence, PGN_PRIO_OBSERVER},
        {NULL, NULL, 0},
};

static const struct pgn_module_cmd last_commands[] = {
	{ "get_last", 2, "USER HOST",
	  "print when USER@HOST was last seen (UTC) and the status",
	  cmd_get_last, 2 },
	{ NULL, 0, NULL, NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
        .abi = PGN_MODULE_ABI,
        .name = "mod_last",
        .description = "XEP-0012 Last Activity",
        .commands = last_commands,
        .hooks = last_hooks,
        .load = last_load,
        .unload = last_unload,
        .depends = (const char *const[]){"mod_roster", NULL},
};
