/* XEP-0077: In-Band Registration.
 *
 * Before authentication (when the option allow_registration is true,
 * default false): the stream feature, the registration form and account
 * creation, at most one account per client address per
 * registration_interval seconds and one per stream (§3.1.1).  After
 * authentication (always: the account is the user's own): the form with
 * <registered/>, password change (§3.3) and account removal (§3.2).
 *
 * STARTTLS: the core offers preauth iqs to modules only once the stream
 * is encrypted, unless the listener does not require TLS; such a listener
 * is the admin's explicit choice, so this module does not check again.
 *
 * Account creation and password changes run asynchronously (key
 * derivation on the crypto worker, then the store).  The session is held
 * meanwhile, so that a client that pipelines its authentication after the
 * registration sees the account, and the answer is sent before anything
 * the client sent after the request.  Completions find the session again
 * by id: it may be gone. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pigeon/account.h"
#include "pigeon/jid.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"

#define NS_REGISTER "jabber:iq:register"
#define NS_FEATURE_REGISTER "http://jabber.org/features/iq-register"

/* Key derivation cost grows with the password: bound it.  Bytes. */
#define MAX_PASSWORD_BYTES 1024
/* The node part limit of RFC 7622 §3.3, checked before preparation. */
#define MAX_USERNAME_BYTES 1023
/* Client addresses remembered for the rate limit; past this many within
 * one interval, registration waits until entries expire. */
#define MAX_TRACKED_ADDRS 65536

struct reg_state {
	struct pgn_module *m;
	int allow;             /* allow_registration */
	long interval;         /* registration_interval, seconds; 0: none */
	long min_password;     /* min_password_length, characters */
	struct pgn_map *addrs; /* address key -> struct addr_entry */
	time_t last_sweep;
};

/* When an address last created an account (or is creating one now). */
struct addr_entry {
	time_t last;
	time_t prev; /* restored if the pending creation fails */
	int pending;
	int fresh;   /* no account created yet: removed if it fails */
};

/* Per-stream registration state (session data). */
struct reg_session {
	int busy; /* a creation is running */
	int done; /* this stream created an account */
};

enum reg_op {
	OP_CREATE,
	OP_PASSWORD,
	OP_REMOVE,
};

/* One asynchronous account operation.  Owned by the completion. */
struct reg_req {
	struct reg_state *st;
	enum reg_op op;
	uint64_t sid;
	/* The request without its payload (which holds the password): what
	 * the reply is built from. */
	struct pgn_stanza *stub;
	char *addr; /* OP_CREATE with a rate limit: the address key */
	char *user;
	char *host;
};

static time_t
now_sec(void)
{
	struct timespec ts;

	/* Monotonic: the limit must not jump with the wall clock. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return ts.tv_sec;
}

/* ---- replies --------------------------------------------------------- */

/* Sends reply r (taken) to the requester: straight onto the stream before
 * authentication (the request had no 'from'), routed afterwards. */
static void
deliver(struct pgn_server *srv, uint64_t sid, struct pgn_stanza *r)
{
	struct pgn_session *s;

	if (r == NULL)
		return;
	if (r->to != NULL) {
		pgn_route(srv, r);
		return;
	}
	s = pgn_session_find(srv, sid);
	if (s != NULL)
		pgn_session_send(s, r->xml);
	pgn_stanza_free(r);
}

/* An error reply to req with an explanation text (may be NULL). */
static void
reply_error(struct pgn_server *srv, uint64_t sid,
	    const struct pgn_stanza *req, const char *type,
	    const char *condition, const char *text)
{
	deliver(srv, sid, pgn_stanza_error_reply(req, type, condition, text));
}

static void
event_error(struct pgn_event *ev, const char *type, const char *condition,
	    const char *text)
{
	if (ev->origin == NULL) {
		pgn_event_error(ev, type, condition);
		return;
	}
	reply_error(pgn_session_server(ev->origin), pgn_session_id(ev->origin),
		    ev->stanza, type, condition, text);
}

/* A copy of req's addressing (type, id, to, from) without the payload;
 * the caller owns it.  NULL on allocation failure. */
static struct pgn_stanza *
request_stub(const struct pgn_stanza *req)
{
	struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "iq");

	if (x == NULL ||
	    (req->type != NULL &&
	     pgn_xml_set_attr(x, "type", req->type) != 0) ||
	    (req->id != NULL && pgn_xml_set_attr(x, "id", req->id) != 0) ||
	    (req->to != NULL &&
	     pgn_xml_set_attr(x, "to", req->to->full) != 0) ||
	    (req->from != NULL &&
	     pgn_xml_set_attr(x, "from", req->from->full) != 0)) {
		pgn_xml_free(x);
		return NULL;
	}
	return pgn_stanza_new(x, NULL);
}

static int
add_text_child(struct pgn_xml *parent, const char *name, const char *text)
{
	struct pgn_xml *c = pgn_xml_add_child(parent, NS_REGISTER, name);

	if (c == NULL)
		return -ENOMEM;
	if (text == NULL)
		return 0;
	return pgn_xml_add_text(c, text, strlen(text));
}

/* Frees a password the client sent, wiped first so that it is not left
 * behind in freed memory. */
static void
password_free(char *password)
{
	if (password == NULL)
		return;
	explicit_bzero(password, strlen(password));
	free(password);
}

/* Answers ev with the form: <registered/> for an account holder, the
 * instructions, the user name (empty before registration) and an empty
 * password field, since the password on file is never sent (§3.1). */
static int
reply_form(struct pgn_event *ev, int registered, const char *instructions,
	   const char *user)
{
	struct pgn_xml *q = pgn_xml_new(NS_REGISTER, "query");

	if (q == NULL ||
	    (registered && add_text_child(q, "registered", NULL) != 0) ||
	    add_text_child(q, "instructions", instructions) != 0 ||
	    add_text_child(q, "username", user) != 0 ||
	    add_text_child(q, "password", NULL) != 0) {
		pgn_xml_free(q);
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
}

/* ---- requests -------------------------------------------------------- */

static void
req_free(struct reg_req *rq)
{
	if (rq == NULL)
		return;
	pgn_stanza_free(rq->stub);
	free(rq->addr);
	free(rq->user);
	free(rq->host);
	free(rq);
}

/* A request for op on user@host answering ev; NULL on allocation
 * failure.  The caller owns it. */
static struct reg_req *
req_new(struct reg_state *st, struct pgn_event *ev, enum reg_op op,
	const char *user)
{
	struct reg_req *rq = calloc(1, sizeof(*rq));

	if (rq == NULL)
		return NULL;
	rq->st = st;
	rq->op = op;
	rq->sid = pgn_session_id(ev->origin);
	rq->stub = request_stub(ev->stanza);
	rq->user = strdup(user);
	rq->host = strdup(pgn_host_name(pgn_module_host(st->m)));
	if (rq->stub == NULL || rq->user == NULL || rq->host == NULL) {
		req_free(rq);
		return NULL;
	}
	return rq;
}

/* Number of characters (not bytes) of a UTF-8 string. */
static size_t
utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

/* Checks a new password; answers and returns -1 when it is refused. */
static int
check_password(struct reg_state *st, struct pgn_event *ev, const char *pw)
{
	char text[96];

	if (strlen(pw) > MAX_PASSWORD_BYTES) {
		event_error(ev, "modify", "not-acceptable",
			    "The password is too long");
		return -1;
	}
	if (utf8_chars(pw) < (size_t)st->min_password) {
		snprintf(text, sizeof(text),
			 "The password must be at least %ld characters long",
			 st->min_password);
		event_error(ev, "modify", "not-acceptable", text);
		return -1;
	}
	return 0;
}

/* Prepares a user name (Nodeprep).  0 with *out set (caller frees), or
 * -EINVAL for a name that is not a valid JID node, or -ENOMEM. */
static int
prep_user(const char *raw, char **out)
{
	int rc;

	*out = NULL;
	if (strlen(raw) > MAX_USERNAME_BYTES)
		return -EINVAL;
	rc = pgn_jid_nodeprep(raw, out);
	if (rc != 0)
		return rc;
	/* Nodeprep may map a name to nothing (soft hyphens...). */
	if ((*out)[0] == '\0') {
		free(*out);
		*out = NULL;
		return -EINVAL;
	}
	return 0;
}

/* ---- the per-address rate limit -------------------------------------- */

/* The key an address is limited by: IPv4 addresses as they are, IPv6
 * ones by their /64 (a single client usually holds a whole /64). */
static void
addr_key(const char *peer, char *out, size_t len)
{
	struct in6_addr a6;

	if (inet_pton(AF_INET6, peer, &a6) == 1) {
		char buf[INET6_ADDRSTRLEN];

		if (IN6_IS_ADDR_V4MAPPED(&a6) &&
		    inet_ntop(AF_INET, &a6.s6_addr[12], buf, sizeof(buf)) !=
			    NULL) {
			snprintf(out, len, "%s", buf);
			return;
		}
		memset(&a6.s6_addr[8], 0, 8);
		if (inet_ntop(AF_INET6, &a6, buf, sizeof(buf)) != NULL) {
			snprintf(out, len, "%s/64", buf);
			return;
		}
	}
	snprintf(out, len, "%s", peer);
}

static int
sweep_one(const char *key, uint64_t id, void *value, void *arg)
{
	struct reg_state *st = arg;
	struct addr_entry *e = value;

	(void)id;
	if (!e->pending && now_sec() - e->last >= st->interval)
		free(pgn_map_del(st->addrs, key));
	return 0;
}

/* Forgets addresses whose interval is over, at most once per interval:
 * the map holds only the addresses of one interval. */
static void
sweep(struct reg_state *st, time_t now)
{
	if (now - st->last_sweep < st->interval)
		return;
	st->last_sweep = now;
	pgn_map_foreach(st->addrs, sweep_one, st);
}

/* Reserves the right to create one account for key.  Returns 0, -EAGAIN
 * when the address must wait (or too many addresses are tracked), or
 * -ENOMEM. */
static int
limit_reserve(struct reg_state *st, const char *key)
{
	time_t now = now_sec();
	struct addr_entry *e;

	sweep(st, now);
	e = pgn_map_get(st->addrs, key);
	if (e != NULL) {
		/* One creation at a time per address, and then one per
		 * interval. */
		if (e->pending || now - e->last < st->interval)
			return -EAGAIN;
	} else {
		if (pgn_map_count(st->addrs) >= MAX_TRACKED_ADDRS)
			return -EAGAIN;
		if ((e = calloc(1, sizeof(*e))) == NULL)
			return -ENOMEM;
		e->fresh = 1;
		if (pgn_map_set(st->addrs, key, e) != 0) {
			free(e);
			return -ENOMEM;
		}
	}
	/* Taken now, not when the account exists: parallel requests from
	 * one address cannot all pass. */
	e->prev = e->last;
	e->last = now;
	e->pending = 1;
	return 0;
}

/* Ends the reservation: kept if an account was created, else undone. */
static void
limit_finish(struct reg_state *st, const char *key, int created)
{
	struct addr_entry *e = pgn_map_get(st->addrs, key);

	if (e == NULL)
		return;
	e->pending = 0;
	if (created) {
		e->fresh = 0;
		return;
	}
	if (e->fresh) {
		free(pgn_map_del(st->addrs, key));
		return;
	}
	e->last = e->prev;
}

/* ---- before authentication ------------------------------------------- */

static int
on_features(struct pgn_event *ev, void *arg)
{
	struct reg_state *st = arg;
	struct pgn_xml *features = ev->data;

	/* XEP-0077 §8: only where an account can be created: client
	 * streams before authentication. */
	if (!st->allow || ev->origin == NULL || features == NULL ||
	    pgn_session_authenticated(ev->origin))
		return PGN_EVENT_PASS;
	if (pgn_xml_add_child(features, NS_FEATURE_REGISTER, "register") ==
	    NULL)
		pgn_log(PGN_LOG_WARN, "mod_register: out of memory (features)");
	return PGN_EVENT_PASS;
}

static int
on_preauth_get(struct pgn_event *ev, void *arg)
{
	struct reg_state *st = arg;
	char text[160];

	if (!st->allow) {
		/* §3.1: a host without in-band registration. */
		pgn_event_error(ev, "cancel", "service-unavailable");
		return PGN_EVENT_HANDLED;
	}
	snprintf(text, sizeof(text),
		 "Choose a user name and a password of at least %ld "
		 "characters for your account on %s.",
		 st->min_password, pgn_host_name(pgn_module_host(st->m)));
	return reply_form(ev, 0, text, NULL);
}

static void
create_done(uint64_t owner, void *arg, int err,
	    const struct pgn_scram_creds *creds)
{
	struct reg_req *rq = arg;
	struct pgn_server *srv = pgn_module_server(rq->st->m);
	struct pgn_session *s = pgn_session_find(srv, owner);
	struct reg_session *rs =
		s != NULL ? pgn_session_get_data(s, rq->st->m) : NULL;

	(void)creds;
	if (rq->addr != NULL)
		limit_finish(rq->st, rq->addr, err == 0);
	if (rs != NULL) {
		rs->busy = 0;
		rs->done = err == 0;
	}
	if (err == 0) {
		pgn_log(PGN_LOG_INFO,
			"mod_register: session %llu (%s) registered %s@%s",
			(unsigned long long)owner,
			s != NULL ? pgn_session_peer(s) : "gone", rq->user,
			rq->host);
		deliver(srv, owner, pgn_stanza_iq_result(rq->stub, NULL));
	} else if (err == -EEXIST) {
		reply_error(srv, owner, rq->stub, "cancel", "conflict",
			    "The user name is already taken");
	} else if (err == -EINVAL) {
		reply_error(srv, owner, rq->stub, "modify", "jid-malformed",
			    "Invalid user name");
	} else {
		pgn_log(PGN_LOG_WARN,
			"mod_register: cannot register %s@%s: %s", rq->user,
			rq->host, strerror(-err));
		reply_error(srv, owner, rq->stub, "wait",
			    "internal-server-error", NULL);
	}
	/* After the answer: what the client sent next comes after it. */
	if (s != NULL)
		pgn_session_release(s);
	req_free(rq);
}

static struct reg_session *
session_state(struct pgn_session *s, const struct pgn_module *m)
{
	struct reg_session *rs = pgn_session_get_data(s, m);

	if (rs != NULL)
		return rs;
	if ((rs = calloc(1, sizeof(*rs))) == NULL)
		return NULL;
	if (pgn_session_set_data(s, m, rs, free) != 0) {
		free(rs);
		return NULL;
	}
	return rs;
}

static int
on_preauth_set(struct pgn_event *ev, void *arg)
{
	struct reg_state *st = arg;
	struct pgn_server *srv = pgn_module_server(st->m);
	struct pgn_xml *q = pgn_xml_first_child(ev->stanza->xml);
	struct reg_session *rs;
	struct reg_req *rq = NULL;
	char *raw_user = NULL, *password = NULL, *user = NULL;
	char key[INET6_ADDRSTRLEN + 8];
	int rc;

	if (!st->allow) {
		pgn_event_error(ev, "cancel", "service-unavailable");
		return PGN_EVENT_HANDLED;
	}
	if (pgn_xml_child(q, NS_REGISTER, "remove") != NULL) {
		/* §3.2: nothing to cancel before authentication. */
		event_error(ev, "cancel", "unexpected-request",
			    "Authenticate to remove your account");
		return PGN_EVENT_HANDLED;
	}
	if ((rs = session_state(ev->origin, st->m)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	/* §3.1.1: one identity per stream, then authenticate. */
	if (rs->busy || rs->done) {
		event_error(ev, "cancel", "not-acceptable",
			    "An account was already registered on this "
			    "stream; authenticate with it");
		return PGN_EVENT_HANDLED;
	}
	raw_user = pgn_xml_child_text(q, NS_REGISTER, "username");
	password = pgn_xml_child_text(q, NS_REGISTER, "password");
	/* §3.1: every field of the form, and a non-empty password. */
	if (raw_user == NULL || password == NULL || raw_user[0] == '\0' ||
	    password[0] == '\0') {
		event_error(ev, "modify", "not-acceptable",
			    "A user name and a password are required");
		goto out;
	}
	rc = prep_user(raw_user, &user);
	if (rc == -ENOMEM) {
		pgn_event_error(ev, "wait", "resource-constraint");
		goto out;
	}
	if (rc != 0) {
		event_error(ev, "modify", "jid-malformed",
			    "Invalid user name");
		goto out;
	}
	if (check_password(st, ev, password) != 0)
		goto out;

	if ((rq = req_new(st, ev, OP_CREATE, user)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		goto out;
	}
	if (st->interval > 0) {
		addr_key(pgn_session_peer(ev->origin), key, sizeof(key));
		rc = limit_reserve(st, key);
		if (rc == -EAGAIN) {
			pgn_log(PGN_LOG_INFO,
				"mod_register: session %llu (%s): "
				"registration refused by the rate limit",
				(unsigned long long)rq->sid,
				pgn_session_peer(ev->origin));
			event_error(ev, "wait", "resource-constraint",
				    "Too many registrations from your "
				    "address; try again later");
			goto out;
		}
		if (rc != 0 || (rq->addr = strdup(key)) == NULL) {
			if (rc == 0)
				limit_finish(st, key, 0);
			pgn_event_error(ev, "wait", "resource-constraint");
			goto out;
		}
	}
	rc = pgn_account_register(pgn_server_store(srv),
				  pgn_server_crypto(srv), user, rq->host,
				  password, rq->sid, create_done, rq);
	if (rc != 0) {
		pgn_log(PGN_LOG_WARN, "mod_register: cannot queue: %s",
			strerror(-rc));
		if (rq->addr != NULL)
			limit_finish(st, rq->addr, 0);
		pgn_event_error(ev, "wait", "internal-server-error");
		goto out;
	}
	rq = NULL; /* create_done owns it now */
	rs->busy = 1;
	pgn_session_hold(ev->origin);
out:
	req_free(rq);
	free(user);
	free(raw_user);
	password_free(password);
	return PGN_EVENT_HANDLED;
}

/* ---- after authentication -------------------------------------------- */

/* The local user (node) of this host who sent the request, or NULL.  An
 * iq to a bare JID is the user's own only when it is the sender's. */
static const char *
own_user(struct reg_state *st, struct pgn_event *ev, int to_bare)
{
	const struct pgn_stanza *req = ev->stanza;

	if (ev->origin == NULL || !pgn_session_authenticated(ev->origin) ||
	    req->from == NULL || req->from->node == NULL ||
	    strcmp(req->from->domain, pgn_host_name(pgn_module_host(st->m))) !=
		    0)
		return NULL;
	if (to_bare &&
	    (req->to == NULL || strcmp(req->to->bare, req->from->bare) != 0))
		return NULL;
	return req->from->node;
}

static void
account_done(uint64_t owner, void *arg, int err,
	     const struct pgn_scram_creds *creds)
{
	struct reg_req *rq = arg;
	struct pgn_server *srv = pgn_module_server(rq->st->m);
	struct pgn_session *s = pgn_session_find(srv, owner);
	const char *what = rq->op == OP_REMOVE ? "remove" : "change password";

	(void)creds;
	if (err == 0) {
		pgn_log(PGN_LOG_INFO,
			"mod_register: %s@%s: %s done by the user", rq->user,
			rq->host, what);
		deliver(srv, owner, pgn_stanza_iq_result(rq->stub, NULL));
		if (rq->op == OP_REMOVE) {
			/* §3.2: the result first (queued above on the
			 * requesting stream), then every session ends. */
			char bare[2100];

			snprintf(bare, sizeof(bare), "%s@%s", rq->user,
				 rq->host);
			pgn_user_kick(srv, bare, "not-authorized",
				      "Account removed");
		}
	} else if (err == -ENOENT) {
		reply_error(srv, owner, rq->stub, "auth",
			    "registration-required", "No such account");
	} else {
		pgn_log(PGN_LOG_WARN, "mod_register: %s@%s: %s failed: %s",
			rq->user, rq->host, what, strerror(-err));
		reply_error(srv, owner, rq->stub, "wait",
			    "internal-server-error", NULL);
	}
	if (s != NULL)
		pgn_session_release(s);
	req_free(rq);
}

static int
start_remove(struct pgn_event *ev, struct reg_state *st, const char *user,
	     struct pgn_xml *q)
{
	struct pgn_server *srv = pgn_module_server(st->m);
	struct reg_req *rq;
	int rc;

	/* §3.2: <remove/> must be alone. */
	for (struct pgn_xml *c = pgn_xml_first_child(q); c != NULL;
	     c = pgn_xml_next(c)) {
		if (strcmp(pgn_xml_name(c), "remove") != 0 ||
		    pgn_xml_ns(c) == NULL ||
		    strcmp(pgn_xml_ns(c), NS_REGISTER) != 0) {
			pgn_event_error(ev, "modify", "bad-request");
			return PGN_EVENT_HANDLED;
		}
	}
	if ((rq = req_new(st, ev, OP_REMOVE, user)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		return PGN_EVENT_HANDLED;
	}
	/* Through the server, so that mod_roster cancels the account's
	 * subscriptions (§3.2). */
	rc = pgn_user_unregister(srv, user, rq->host, rq->sid, account_done,
				 rq);
	if (rc != 0) {
		req_free(rq);
		pgn_event_error(ev, "wait", "internal-server-error");
		return PGN_EVENT_HANDLED;
	}
	pgn_session_hold(ev->origin);
	return PGN_EVENT_HANDLED;
}

static int
start_password(struct pgn_event *ev, struct reg_state *st, const char *user,
	       struct pgn_xml *q)
{
	struct pgn_server *srv = pgn_module_server(st->m);
	char *raw_user = pgn_xml_child_text(q, NS_REGISTER, "username");
	char *password = pgn_xml_child_text(q, NS_REGISTER, "password");
	char *named = NULL;
	struct reg_req *rq = NULL;
	int rc;

	/* §3.3: never an empty password; errors do not echo the request
	 * (pgn_stanza_error_reply does not). */
	if (password == NULL || password[0] == '\0') {
		pgn_event_error(ev, "modify", "bad-request");
		goto out;
	}
	/* The user name is optional (the sender is known) but, if given,
	 * must be the sender's own. */
	if (raw_user != NULL) {
		rc = prep_user(raw_user, &named);
		if (rc == -ENOMEM) {
			pgn_event_error(ev, "wait", "resource-constraint");
			goto out;
		}
		if (rc != 0 || strcmp(named, user) != 0) {
			event_error(ev, "cancel", "not-allowed",
				    "You can only change your own password");
			goto out;
		}
	}
	if (check_password(st, ev, password) != 0)
		goto out;
	if ((rq = req_new(st, ev, OP_PASSWORD, user)) == NULL) {
		pgn_event_error(ev, "wait", "resource-constraint");
		goto out;
	}
	rc = pgn_account_set_password(pgn_server_store(srv),
				      pgn_server_crypto(srv), user, rq->host,
				      password, rq->sid, account_done, rq);
	if (rc != 0) {
		pgn_event_error(ev, "wait", "internal-server-error");
		goto out;
	}
	rq = NULL; /* account_done owns it now */
	pgn_session_hold(ev->origin);
out:
	req_free(rq);
	free(named);
	free(raw_user);
	password_free(password);
	return PGN_EVENT_HANDLED;
}

/* A get or set about the sender's own account, to the host or to the
 * sender's bare JID. */
static int
on_own(struct pgn_event *ev, struct reg_state *st, int to_bare)
{
	const char *user = own_user(st, ev, to_bare);
	const char *type = ev->stanza->type;
	struct pgn_xml *q = pgn_xml_first_child(ev->stanza->xml);

	if (user == NULL) {
		if (to_bare)
			return PGN_EVENT_PASS; /* someone else's account */
		/* §3.2 / §3.3: not a user of this host. */
		pgn_event_error(ev, "cancel", "not-allowed");
		return PGN_EVENT_HANDLED;
	}
	/* Hooked for iq-get and iq-set only, so what is not a set is a get. */
	if (type == NULL || strcmp(type, "set") != 0)
		return reply_form(ev, 1,
				  "You are registered.  Send a new password "
				  "to change it, or <remove/> to delete the "
				  "account.",
				  user);
	if (pgn_xml_child(q, NS_REGISTER, "remove") != NULL)
		return start_remove(ev, st, user, q);
	return start_password(ev, st, user, q);
}

static int
on_own_host(struct pgn_event *ev, void *arg)
{
	return on_own(ev, arg, 0);
}

static int
on_own_bare(struct pgn_event *ev, void *arg)
{
	return on_own(ev, arg, 1);
}

/* ---- module ---------------------------------------------------------- */

static void
state_free(struct reg_state *st)
{
	if (st == NULL)
		return;
	pgn_map_free_values(st->addrs, free);
	free(st);
}

static int
register_load(struct pgn_module *m)
{
	struct reg_state *st = calloc(1, sizeof(*st));
	int rc;

	if (st == NULL)
		return -ENOMEM;
	st->m = m;
	st->allow = pgn_module_opt_bool(m, "allow_registration");
	st->interval = pgn_module_opt_int(m, "registration_interval");
	st->min_password = pgn_module_opt_int(m, "min_password_length");
	if ((st->addrs = pgn_map_new()) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = pgn_module_add_feature(m, NS_REGISTER)) < 0)
		goto fail;
	pgn_module_set_data(m, st);
	return 0;
fail:
	state_free(st);
	return rc;
}

static void
register_unload(struct pgn_module *m)
{
	state_free(pgn_module_data(m));
	pgn_module_set_data(m, NULL);
}

static const struct pgn_module_opt register_options[] = {
	{ .name = "allow_registration", .type = PGN_OPT_BOOL, .def = "false",
	  .doc = "let clients create accounts in-band" },
	{ .name = "registration_interval", .type = PGN_OPT_INT, .def = "60",
	  .min = 0, .max = 366L * 24 * 3600,
	  .doc = "seconds between two registrations from one address" },
	{ .name = "min_password_length", .type = PGN_OPT_INT, .def = "8",
	  .min = 1, .max = MAX_PASSWORD_BYTES,
	  .doc = "shortest password accepted" },
	{ .name = NULL },
};

static const struct pgn_module_hook_def register_hooks[] = {
	{ "stream-features", on_features, PGN_PRIO_HANDLER },
	{ "iq-get/preauth/" NS_REGISTER ":query", on_preauth_get,
	  PGN_PRIO_HANDLER },
	{ "iq-set/preauth/" NS_REGISTER ":query", on_preauth_set,
	  PGN_PRIO_HANDLER },
	{ "iq-get/host/" NS_REGISTER ":query", on_own_host, PGN_PRIO_HANDLER },
	{ "iq-get/bare/" NS_REGISTER ":query", on_own_bare, PGN_PRIO_HANDLER },
	{ "iq-set/host/" NS_REGISTER ":query", on_own_host, PGN_PRIO_HANDLER },
	{ "iq-set/bare/" NS_REGISTER ":query", on_own_bare, PGN_PRIO_HANDLER },
	{ NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_register",
	.description = "XEP-0077 In-Band Registration",
	.options = register_options,
	.hooks = register_hooks,
	.load = register_load,
	.unload = register_unload,
};
