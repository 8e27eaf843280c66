/* XEP-0357: Push Notifications (urn:xmpp:push:0).
 *
 * Registrations (§5, §6): a user's client enables an XMPP Push Service
 * (an app server's JID and node, with an optional publish-options form
 * carrying its credentials) with an iq set to the user's own bare JID, and
 * disables one node or every node of a service.  They are stored per user
 * in the store's key-value store (namespace "push", key reg_key(jid,
 * node), value the publish options or ""), at most max_registrations.
 *
 * Publishing (§7): a message that would wake a phone (a body, an encrypted
 * payload or a call, see wakes_phone) for a user none of whose sessions is
 * available and connected (offline, or hibernated by stream management)
 * is summarised (urn:xmpp:push:summary: message-count,
 * last-message-sender, last-message-body when the admin allows it and the
 * message is not encrypted) and published from the host's JID to every
 * registration of the user, with the stored publish options.  A session
 * that hibernates with stanzas its client has not acknowledged publishes
 * too, unless another session of the user is connected.
 *
 * Rate limit, per registration: after a publish, for min_interval seconds
 * further messages are only counted; when the interval ends they are
 * published as one notification (message-count = how many), unless the
 * user came back meanwhile.
 *
 * Errors (§7.1): the app server's answer comes back through the core's
 * iq tracker (pgn_send_iq).  An error of type 'wait' is transient; any
 * other error disables that registration (the row is deleted).  Answers
 * that never come are forgotten after SENT_TIMEOUT_MS. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"
#include "pigeon/store.h"

#define NS_PUSH "urn:xmpp:push:0"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_XDATA "jabber:x:data"
#define NS_SUMMARY "urn:xmpp:push:summary"
#define NS_PUBLISH_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"
#define NS_AXOLOTL "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NS_OPENPGP "urn:xmpp:openpgp:0"
#define NS_PGP_LEGACY "jabber:x:encrypted"
#define NS_JMI "urn:xmpp:jingle-message:0"

#define MAX_MIN_INTERVAL 86400
#define MAX_MAX_REGISTRATIONS 1000
/* Limits on what a client may register (bytes). */
#define MAX_NODE 1023
#define MAX_OPTIONS 8192
/* A body in a notification is cut here (at a character boundary): push
 * services carry a few KiB at most. */
#define MAX_BODY 1024
/* Publishes waiting for the app server's answer: forgotten after this
 * long, and at most this many. */
#define SENT_TIMEOUT_MS (120 * 1000)
#define MAX_SENT 10000
/* Accounts remembered as having no registration (no store read for their
 * messages); past this many the memory starts again. */
#define MAX_NONE 10000

struct push {
	struct pgn_module *m;
	struct pgn_server *srv;
	const char *host; /* the host's name (borrowed) */
	int include_body;
	uint64_t min_interval_ms;
	size_t max_regs;
	struct pgn_map *none;   /* bare JID -> (marker): no registration */
	struct pgn_map *limits; /* registration key -> struct limit */
	struct sent *sent_head; /* waiting for an answer, oldest first */
	struct sent *sent_tail;
	size_t nsent;
};

/* What one notification says. */
struct notice {
	unsigned long count;
	char *sender; /* NULL: not known (hibernation) */
	char *body;   /* NULL: not to be sent */
};

/* A registration inside its rate-limit interval; exists exactly while
 * its timer is armed. */
struct limit {
	struct push *p;
	char *key;
	char *bare;
	char *jid;
	char *node;
	char *options; /* NULL: none */
	struct notice pending;
	struct pgn_timer *timer;
};

/* A publish waiting for its answer. */
struct sent {
	struct push *p;
	uint64_t handle; /* pgn_send_iq */
	char *bare;
	char *jid;
	char *node;
	struct sent *prev;
	struct sent *next;
};

/* The registrations of a user being read, and what to tell them. */
struct lookup {
	struct push *p;
	char *bare;
	struct notice n;
};

/* An enable or disable waiting for the store. */
struct change {
	struct push *p;
	struct pgn_hold *hold;
	char *bare;
	char *jid;
	char *user;
	char *node; /* disable: NULL for every node */
	char *options;
};

/* Our namespace in the key-value store. */
#define KV_NS "push"

/* ---- helpers ---- */

static int
str_eq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The node part of a bare JID "user@host" (malloc'd), or NULL. */
static char *
username_of(const char *bare)
{
	const char *at = strchr(bare, '@');

	return at != NULL ? strndup(bare, (size_t)(at - bare)) : NULL;
}

/* A registration's key in the store: "len:jid" then node, unambiguous
 * whatever the strings hold.  malloc'd, NULL on allocation failure. */
static char *
reg_key(const char *jid, const char *node)
{
	size_t n = strlen(jid) + strlen(node) + 24;
	char *k = malloc(n);

	if (k != NULL)
		snprintf(k, n, "%zu:%s%s", strlen(jid), jid, node);
	return k;
}

/* Splits a key of reg_key: *jid malloc'd, *node points into key.  0,
 * -EINVAL (not such a key) or -ENOMEM. */
static int
reg_parse(const char *key, char **jid, const char **node)
{
	char *end;
	unsigned long len = strtoul(key, &end, 10);

	if (end == key || *end != ':' || strlen(end + 1) < len)
		return -EINVAL;
	if ((*jid = strndup(end + 1, len)) == NULL)
		return -ENOMEM;
	*node = end + 1 + len;
	return 0;
}

/* "len:bare len:jid node": unambiguous whatever the strings hold. */
static char *
limit_key(const char *bare, const char *jid, const char *node)
{
	size_t n = strlen(bare) + strlen(jid) + strlen(node) + 48;
	char *k = malloc(n);

	if (k != NULL)
		snprintf(k, n, "%zu:%s%zu:%s%s", strlen(bare), bare,
		         strlen(jid), jid, node);
	return k;
}

static void
notice_clear(struct notice *n)
{
	free(n->sender);
	free(n->body);
	n->sender = n->body = NULL;
	n->count = 0;
}

/* Copies body, cut to MAX_BODY bytes at a UTF-8 character boundary. */
static char *
cut_body(const char *body)
{
	size_t n = strlen(body);

	if (n > MAX_BODY) {
		n = MAX_BODY;
		while (n > 0 && ((unsigned char)body[n] & 0xC0) == 0x80)
			n--;
	}
	return strndup(body, n);
}

/* Some session of bare (other than except) would get a message now: it
 * is available and has a connection. */
static int
user_connected(struct push *p, const char *bare,
               const struct pgn_session *except)
{
	for (struct pgn_session *s = pgn_user_sessions(p->srv, bare); s != NULL;
	     s = pgn_session_next(s))
		if (s != except && pgn_session_available(s) &&
		    !pgn_session_hibernating(s))
			return 1;
	return 0;
}

/* ---- which messages wake a phone ---- */

static int
is_encrypted(const struct pgn_xml *c)
{
	const char *ns = pgn_xml_ns(c), *name = pgn_xml_name(c);

	return (str_eq(name, "encrypted") &&
	        (str_eq(ns, NS_AXOLOTL) || str_eq(ns, NS_OMEMO2))) ||
	       (str_eq(name, "openpgp") && str_eq(ns, NS_OPENPGP)) ||
	       (str_eq(name, "x") && str_eq(ns, NS_PGP_LEGACY));
}

/* A message a person waits for: a body, an encrypted payload, or a call
 * (XEP-0353 <propose/>); never groupchat, headline or error, nor chat
 * states alone.  Sets *encrypted and *body (borrowed, the body element or
 * NULL). */
static int
wakes_phone(const struct pgn_stanza *st, int *encrypted,
            const struct pgn_xml **body)
{
	int call = 0;

	*encrypted = 0;
	*body = NULL;
	if (st->kind != PGN_STANZA_MESSAGE || str_eq(st->type, "groupchat") ||
	    str_eq(st->type, "headline") || str_eq(st->type, "error"))
		return 0;
	for (const struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *ns = pgn_xml_ns(c);
		if ((ns == NULL || strcmp(ns, PGN_NS_CLIENT) == 0) &&
		    str_eq(pgn_xml_name(c), "body")) {
			if (*body == NULL)
				*body = c;
		} else if (is_encrypted(c)) {
			*encrypted = 1;
		} else if (str_eq(ns, NS_JMI) &&
		           str_eq(pgn_xml_name(c), "propose")) {
			call = 1;
		}
	}
	return *body != NULL || *encrypted || call;
}

/* ---- waiting for answers ---- */

static void
sent_free(struct sent *s)
{
	if (s == NULL)
		return;
	free(s->bare);
	free(s->jid);
	free(s->node);
	free(s);
}

static void
sent_unlink(struct push *p, struct sent *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		p->sent_head = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	else
		p->sent_tail = s->prev;
	p->nsent--;
}

/* Remembers a publish, forgetting the oldest one past MAX_SENT.  NULL
 * on allocation failure. */
static struct sent *
sent_add(struct push *p, const char *bare, const char *jid, const char *node)
{
	struct sent *s;

	if (p->nsent >= MAX_SENT) {
		s = p->sent_head;
		pgn_iq_cancel(p->m, s->handle);
		sent_unlink(p, s);
		sent_free(s);
	}
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    (s->bare = strdup(bare)) == NULL ||
	    (s->jid = strdup(jid)) == NULL || (s->node = strdup(node)) == NULL) {
		sent_free(s);
		return NULL;
	}
	s->p = p;
	s->prev = p->sent_tail;
	if (p->sent_tail != NULL)
		p->sent_tail->next = s;
	else
		p->sent_head = s;
	p->sent_tail = s;
	p->nsent++;
	return s;
}

/* ---- publishing (§7) ---- */

static int
add_field(struct pgn_xml *x, const char *var, const char *value)
{
	struct pgn_xml *f = pgn_xml_add_child(x, NS_XDATA, "field");
	struct pgn_xml *v;

	if (f == NULL || pgn_xml_set_attr(f, "var", var) != 0 ||
	    (v = pgn_xml_add_child(f, NS_XDATA, "value")) == NULL ||
	    pgn_xml_add_text(v, value, strlen(value)) != 0)
		return -ENOMEM;
	return 0;
}

/* The <pubsub/> payload that publishes n to (jid, node), or NULL on
 * allocation failure (stored options that no longer parse are logged and
 * left out).  The caller owns it. */
static struct pgn_xml *
build_publish(struct push *p, const char *jid, const char *node,
              const char *options, const struct notice *n)
{
	struct pgn_xml *pubsub = pgn_xml_new(NS_PUBSUB, "pubsub");
	struct pgn_xml *publish, *item, *notif, *x, *po;
	char count[24];

	snprintf(count, sizeof(count), "%lu", n->count);
	if (pubsub == NULL ||
	    (publish = pgn_xml_add_child(pubsub, NS_PUBSUB, "publish")) ==
	            NULL ||
	    pgn_xml_set_attr(publish, "node", node) != 0 ||
	    (item = pgn_xml_add_child(publish, NS_PUBSUB, "item")) == NULL ||
	    (notif = pgn_xml_add_child(item, NS_PUSH, "notification")) ==
	            NULL ||
	    (x = pgn_xml_add_child(notif, NS_XDATA, "x")) == NULL ||
	    pgn_xml_set_attr(x, "type", "submit") != 0 ||
	    add_field(x, "FORM_TYPE", NS_SUMMARY) != 0 ||
	    add_field(x, "message-count", count) != 0 ||
	    (n->sender != NULL &&
	     add_field(x, "last-message-sender", n->sender) != 0) ||
	    (n->body != NULL &&
	     add_field(x, "last-message-body", n->body) != 0))
		goto fail;
	if (options != NULL) {
		if ((po = pgn_xml_add_child(pubsub, NS_PUBSUB,
		                            "publish-options")) == NULL)
			goto fail;
		if (pgn_xml_parse_into(po, options, strlen(options)) != 0) {
			pgn_log(PGN_LOG_WARN,
			        "push %s: stored publish options for %s do "
			        "not parse; sending none",
			        p->host, jid);
			pgn_xml_unlink(po);
			pgn_xml_free(po);
		}
	}
	return pubsub;
fail:
	pgn_xml_free(pubsub);
	return NULL;
}

static void published(const struct pgn_stanza *reply, const char *condition,
                      void *arg);

/* Publishes n to one registration of bare.  The answer comes later, to
 * published(), even from an app server that cannot be reached. */
static void
publish(struct push *p, const char *bare, const char *jid, const char *node,
        const char *options, const struct notice *n)
{
	struct pgn_xml *payload;
	struct sent *s;
	int rc;

	if ((s = sent_add(p, bare, jid, node)) == NULL ||
	    (payload = build_publish(p, jid, node, options, n)) == NULL) {
		if (s != NULL) {
			sent_unlink(p, s);
			sent_free(s);
		}
		pgn_log(PGN_LOG_ERROR,
		        "push %s: out of memory publishing for %s", p->host,
		        bare);
		return;
	}
	pgn_log(PGN_LOG_DEBUG, "push %s: notifying %s for %s (%lu message(s))",
	        p->host, jid, bare, n->count);
	if ((rc = pgn_send_iq(p->m, p->host, jid, "set", payload,
	                      SENT_TIMEOUT_MS, published, s, &s->handle)) < 0) {
		pgn_log(PGN_LOG_WARN, "push %s: cannot publish to %s (%s)",
		        p->host, jid, rc == -EINVAL ? "bad JID" : strerror(-rc));
		sent_unlink(p, s);
		sent_free(s);
	}
}

/* ---- rate limit ---- */

static void
limit_free(struct limit *l)
{
	if (l == NULL)
		return;
	pgn_timer_free(l->timer);
	notice_clear(&l->pending);
	free(l->key);
	free(l->bare);
	free(l->jid);
	free(l->node);
	free(l->options);
	free(l);
}

static void
limit_drop(struct push *p, struct limit *l)
{
	pgn_map_del(p->limits, l->key);
	limit_free(l);
}

/* The interval of a registration ended: what was counted meanwhile goes
 * as one notification, and a new interval starts; with nothing counted
 * the registration is free again. */
static void
limit_fired(void *arg)
{
	struct limit *l = arg;
	struct push *p = l->p;
	struct notice n = l->pending;

	memset(&l->pending, 0, sizeof(l->pending));
	if (n.count == 0 || user_connected(p, l->bare, NULL)) {
		/* Back online meanwhile: the client fetches for itself. */
		notice_clear(&n);
		limit_drop(p, l);
		return;
	}
	pgn_timer_start(l->timer, p->min_interval_ms);
	publish(p, l->bare, l->jid, l->node, l->options, &n);
	notice_clear(&n);
}

/* Moves n's sender and body into l (the latest message wins). */
static void
limit_count(struct limit *l, struct notice *n)
{
	l->pending.count += n->count;
	free(l->pending.sender);
	free(l->pending.body);
	l->pending.sender = n->sender;
	l->pending.body = n->body;
	n->sender = n->body = NULL;
}

/* Publishes now, or counts for the end of the interval.  May take n's
 * strings. */
static void
notify(struct push *p, const char *bare, const char *jid, const char *node,
       const char *options, struct notice *n)
{
	struct limit *l = NULL;
	char *key;

	if (p->min_interval_ms == 0) {
		publish(p, bare, jid, node, options, n);
		return;
	}
	if ((key = limit_key(bare, jid, node)) == NULL)
		goto nomem;
	if ((l = pgn_map_get(p->limits, key)) != NULL) {
		free(key);
		limit_count(l, n);
		/* The newest stored options are the ones to send. */
		if (!str_eq(l->options, options)) {
			char *copy = options != NULL ? strdup(options) : NULL;
			if (options == NULL || copy != NULL) {
				free(l->options);
				l->options = copy;
			}
		}
		return;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		free(key);
		goto nomem;
	}
	l->p = p;
	l->key = key;
	if ((l->bare = strdup(bare)) == NULL ||
	    (l->jid = strdup(jid)) == NULL ||
	    (l->node = strdup(node)) == NULL ||
	    (options != NULL && (l->options = strdup(options)) == NULL) ||
	    (l->timer = pgn_timer_new(p->m, limit_fired, l)) == NULL ||
	    pgn_map_set(p->limits, l->key, l) != 0) {
		limit_free(l);
		goto nomem;
	}
	pgn_timer_start(l->timer, p->min_interval_ms);
	publish(p, bare, jid, node, options, n);
	return;
nomem:
	/* Better one notification too many than none. */
	pgn_log(PGN_LOG_WARN, "push %s: out of memory rate limiting %s",
	        p->host, bare);
	publish(p, bare, jid, node, options, n);
}

struct drop_match {
	struct push *p;
	const char *bare;
	const char *jid;
	const char *node; /* NULL: any */
};

static int
drop_matching(const char *key, uint64_t id, void *value, void *arg)
{
	struct drop_match *d = arg;
	struct limit *l = value;

	(void)key;
	(void)id;
	if (strcmp(l->bare, d->bare) == 0 && strcmp(l->jid, d->jid) == 0 &&
	    (d->node == NULL || strcmp(l->node, d->node) == 0))
		limit_drop(d->p, l);
	return 0;
}

/* A disabled registration publishes nothing more (§6), not even what was
 * counted. */
static void
limits_forget(struct push *p, const char *bare, const char *jid,
              const char *node)
{
	struct drop_match d = {p, bare, jid, node};

	pgn_map_foreach(p->limits, drop_matching, &d);
}

/* ---- reading a user's registrations ---- */

static void
lookup_free(struct lookup *lk)
{
	if (lk == NULL)
		return;
	notice_clear(&lk->n);
	free(lk->bare);
	free(lk);
}

static void
remember_none(struct push *p, const char *bare)
{
	if (pgn_map_count(p->none) >= MAX_NONE) {
		struct pgn_map *fresh = pgn_map_new();
		if (fresh == NULL)
			return;
		pgn_map_free(p->none);
		p->none = fresh;
	}
	/* Only the key matters; the value must not be NULL. */
	(void)pgn_map_set(p->none, bare, p);
}

static void
lookup_done(uint64_t owner, void *arg, int err, size_t nregs,
            const char *const *keys, const char *const *values)
{
	struct lookup *lk = arg;
	struct push *p = lk->p;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN,
		        "push %s: reading the registrations of %s failed: %s",
		        p->host, lk->bare, strerror(-err));
	} else if (nregs == 0) {
		remember_none(p, lk->bare);
	} else {
		for (size_t i = 0; i < nregs; i++) {
			struct notice n = {lk->n.count, NULL, NULL};
			const char *node;
			char *jid;

			if (reg_parse(keys[i], &jid, &node) != 0)
				continue;
			if ((lk->n.sender != NULL &&
			     (n.sender = strdup(lk->n.sender)) == NULL) ||
			    (lk->n.body != NULL &&
			     (n.body = strdup(lk->n.body)) == NULL)) {
				notice_clear(&n);
				free(jid);
				pgn_log(PGN_LOG_ERROR,
				        "push %s: out of memory notifying %s",
				        p->host, lk->bare);
				break;
			}
			notify(p, lk->bare, jid, node,
			       values[i][0] != '\0' ? values[i] : NULL, &n);
			notice_clear(&n);
			free(jid);
		}
	}
	lookup_free(lk);
}

/* Reads bare's registrations and notifies them of n (taken). */
static void
lookup_start(struct push *p, const char *bare, struct notice *n)
{
	struct lookup *lk = calloc(1, sizeof(*lk));
	char *username = username_of(bare);

	if (lk == NULL || username == NULL ||
	    (lk->bare = strdup(bare)) == NULL) {
		notice_clear(n);
		goto fail;
	}
	lk->p = p;
	lk->n = *n;
	memset(n, 0, sizeof(*n));
	if (pgn_kv_entries(pgn_server_store(p->srv), KV_NS, p->host, username,
	                   0, lookup_done, lk) != 0) {
		pgn_log(PGN_LOG_WARN, "push %s: cannot queue a store query",
		        p->host);
		lookup_free(lk);
	}
	free(username);
	return;
fail:
	pgn_log(PGN_LOG_ERROR, "push %s: out of memory looking up %s", p->host,
	        bare);
	lookup_free(lk);
	free(username);
}

/* ---- events that publish ---- */

static int
on_message(struct pgn_event *ev, void *arg)
{
	struct push *p = arg;
	const struct pgn_stanza *st = ev->stanza;
	const struct pgn_xml *body;
	struct notice n = {1, NULL, NULL};
	int encrypted;
	char *text = NULL;

	if (st == NULL || st->to == NULL || st->to->node == NULL ||
	    !wakes_phone(st, &encrypted, &body) ||
	    user_connected(p, st->to->bare, NULL) ||
	    pgn_map_get(p->none, st->to->bare) != NULL)
		return PGN_EVENT_PASS;
	if (st->from != NULL && (n.sender = strdup(st->from->full)) == NULL)
		goto nomem;
	/* §9: the body leaves the server only if the admin allows it, and
	 * never the fallback text of an encrypted message. */
	if (p->include_body && !encrypted && body != NULL) {
		if ((text = pgn_xml_text(body)) == NULL ||
		    (n.body = cut_body(text)) == NULL)
			goto nomem;
		free(text);
	}
	lookup_start(p, st->to->bare, &n);
	return PGN_EVENT_PASS;
nomem:
	free(text);
	notice_clear(&n);
	pgn_log(PGN_LOG_ERROR, "push %s: out of memory", p->host);
	return PGN_EVENT_PASS;
}

/* Stream management kept a session whose connection was lost: if its
 * client has not acknowledged everything, the phone should reconnect. */
static int
on_hibernated(struct pgn_event *ev, void *arg)
{
	struct push *p = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *jid = s != NULL ? pgn_session_jid(s) : NULL;
	unsigned unacked;
	struct notice n = {0, NULL, NULL};

	if (jid == NULL || jid->node == NULL ||
	    (unacked = pgn_session_unacked(s)) == 0 ||
	    user_connected(p, jid->bare, s) ||
	    pgn_map_get(p->none, jid->bare) != NULL)
		return PGN_EVENT_PASS;
	n.count = unacked;
	lookup_start(p, jid->bare, &n);
	return PGN_EVENT_PASS;
}

/* ---- answers from app servers (§7.1) ---- */

static void
disabled_done(uint64_t owner, void *arg, int err)
{
	char *what = arg;

	(void)owner;
	if (err != 0)
		pgn_log(PGN_LOG_WARN,
		        "push: disabling a registration of %s failed: %s", what,
		        strerror(-err));
	free(what);
}

/* The app server's answer to a publish, or its timeout (forgotten). */
static void
published(const struct pgn_stanza *reply, const char *condition, void *arg)
{
	struct sent *s = arg;
	struct push *p = s->p;
	struct pgn_xml *err;
	const char *etype;
	char *username, *what, *key;
	const char *none = NULL;

	sent_unlink(p, s);
	if (reply == NULL || condition == NULL) {
		sent_free(s);
		return;
	}
	err = pgn_xml_child(reply->xml, NULL, "error");
	etype = err != NULL ? pgn_xml_attr(err, "type") : NULL;
	if (str_eq(etype, "wait")) {
		pgn_log(PGN_LOG_INFO,
		        "push %s: %s answered a notification for %s with a "
		        "temporary error",
		        p->host, s->jid, s->bare);
		sent_free(s);
		return;
	}
	pgn_log(PGN_LOG_INFO,
	        "push %s: %s refused a notification for %s: registration "
	        "disabled",
	        p->host, s->jid, s->bare);
	limits_forget(p, s->bare, s->jid, s->node);
	username = username_of(s->bare);
	what = strdup(s->bare);
	key = reg_key(s->jid, s->node);
	if (username != NULL && what != NULL && key != NULL) {
		const char *keys[1] = {key};
		if (pgn_kv_put(pgn_server_store(p->srv), KV_NS, p->host,
		               username, 1, keys, &none, 0, disabled_done,
		               what) == 0)
			what = NULL;
		else
			pgn_log(PGN_LOG_WARN,
			        "push %s: cannot queue a store query", p->host);
	}
	free(what);
	free(key);
	free(username);
	sent_free(s);
}

/* ---- enable / disable (§5, §6) ---- */

static void
change_free(struct change *c)
{
	if (c == NULL)
		return;
	free(c->bare);
	free(c->user);
	free(c->jid);
	free(c->node);
	free(c->options);
	free(c);
}

/* Answers the held iq: a result, or an error when condition is set. */
static void
change_answer(struct change *c, const char *type, const char *condition,
              const char *text)
{
	struct pgn_hold *h = c->hold;

	c->hold = NULL;
	if (pgn_hold_answer(h, NULL, type, condition, text) < 0)
		pgn_log(PGN_LOG_ERROR, "push %s: out of memory answering %s",
		        c->p->host, c->bare);
}

static void
enable_done(uint64_t owner, void *arg, int err)
{
	struct change *c = arg;
	struct push *p = c->p;
	struct limit *l;
	char *key;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN,
		        "push %s: storing a registration of %s "
		        "failed: %s",
		        p->host, c->bare, strerror(-err));
		change_answer(c, "wait", "internal-server-error", NULL);
	} else {
		pgn_log(PGN_LOG_INFO, "push %s: %s enabled notifications to %s",
		        p->host, c->bare, c->jid);
		pgn_map_del(p->none, c->bare);
		/* An interval running for it sends the new options. */
		if ((key = limit_key(c->bare, c->jid, c->node)) != NULL &&
		    (l = pgn_map_get(p->limits, key)) != NULL) {
			free(l->options);
			l->options = c->options;
			c->options = NULL;
		}
		free(key);
		change_answer(c, NULL, NULL, NULL);
	}
	change_free(c);
}

static void
disable_done(uint64_t owner, void *arg, int err)
{
	struct change *c = arg;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN,
		        "push %s: removing registrations of %s "
		        "failed: %s",
		        c->p->host, c->bare, strerror(-err));
		change_answer(c, "wait", "internal-server-error", NULL);
	} else {
		pgn_log(PGN_LOG_INFO,
		        "push %s: %s disabled registration(s) of %s",
		        c->p->host, c->bare, c->jid);
		/* Counted again by a lookup answered before the delete. */
		limits_forget(c->p, c->bare, c->jid, c->node);
		change_answer(c, NULL, NULL, NULL);
	}
	change_free(c);
}

/* The user's registrations were listed: enable within max_registrations
 * (an existing one is updated with the newest options, §5), or disable
 * every node of c->jid.  Two enables of one user at once may pass the
 * limit together: the excess is bounded by the user's sessions. */
static void
change_listed(uint64_t owner, void *arg, int err, size_t n,
              const char *const *keys)
{
	struct change *c = arg;
	struct push *p = c->p;
	const char **del = NULL, *own = NULL;
	size_t ndel = 0;
	int rc = -ENOMEM;

	(void)owner;
	if (err != 0) {
		pgn_log(PGN_LOG_WARN,
		        "push %s: reading the registrations of %s failed: %s",
		        p->host, c->bare, strerror(-err));
		goto fail;
	}
	if (c->node != NULL) { /* enable */
		char *key = reg_key(c->jid, c->node);
		const char *value = c->options != NULL ? c->options : "";
		int known = 0;

		for (size_t i = 0; key != NULL && i < n; i++)
			known |= strcmp(keys[i], key) == 0;
		if (key != NULL && !known && n >= p->max_regs) {
			free(key);
			change_answer(c, "wait", "resource-constraint",
			              "Too many push registrations");
			change_free(c);
			return;
		}
		own = key;
		if (key != NULL)
			rc = pgn_kv_put(pgn_server_store(p->srv), KV_NS,
			                p->host, c->user, 1, &own, &value, 0,
			                enable_done, c);
		free(key);
		if (rc == 0)
			return;
		goto fail;
	}
	/* Disable every node of c->jid. */
	if (n > 0 && (del = calloc(n, sizeof(*del))) == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		const char *node;
		char *jid;
		if (reg_parse(keys[i], &jid, &node) != 0)
			continue;
		if (strcmp(jid, c->jid) == 0)
			del[ndel++] = keys[i];
		free(jid);
	}
	if (ndel == 0) {
		free(del);
		disable_done(0, c, 0);
		return;
	}
	{
		const char **none = calloc(ndel, sizeof(*none));
		rc = none == NULL ? -ENOMEM
		                  : pgn_kv_put(pgn_server_store(p->srv), KV_NS,
		                               p->host, c->user, ndel, del, none,
		                               0, disable_done, c);
		free(none);
	}
	free(del);
	if (rc == 0)
		return;
fail:
	change_answer(c, "wait", "internal-server-error", NULL);
	change_free(c);
}

/* The form of an <enable/>: none, or one publish-options form (§5).
 * Returns 0 with *out set (malloc'd serialisation, or NULL for none), or
 * an error condition to answer. */
static const char *
read_options(const struct pgn_xml *enable, char **out)
{
	const struct pgn_xml *form = NULL;
	char *text;

	*out = NULL;
	for (const struct pgn_xml *c = pgn_xml_first_child(enable); c != NULL;
	     c = pgn_xml_next(c)) {
		if (!str_eq(pgn_xml_ns(c), NS_XDATA) ||
		    !str_eq(pgn_xml_name(c), "x"))
			continue;
		if (form != NULL)
			return "bad-request";
		form = c;
	}
	if (form == NULL)
		return NULL;
	for (const struct pgn_xml *f = pgn_xml_first_child(form); f != NULL;
	     f = pgn_xml_next(f)) {
		char *v;
		int ok;

		if (!str_eq(pgn_xml_name(f), "field") ||
		    !str_eq(pgn_xml_attr(f, "var"), "FORM_TYPE"))
			continue;
		if ((v = pgn_xml_child_text(f, NS_XDATA, "value")) == NULL)
			return "bad-request";
		ok = strcmp(v, NS_PUBLISH_OPTIONS) == 0;
		free(v);
		if (!ok)
			return "bad-request";
		if ((text = pgn_xml_to_string(form, PGN_NS_CLIENT)) == NULL)
			return "resource-constraint";
		if (strlen(text) > MAX_OPTIONS) {
			free(text);
			return "policy-violation";
		}
		*out = text;
		return NULL;
	}
	return "bad-request"; /* a form without FORM_TYPE */
}

/* The request comes from the account's owner (§5: sent to the user's own
 * bare JID, or without 'to'). */
static int
from_owner(const struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;

	return ev->origin != NULL && st->from != NULL && st->to != NULL &&
	       st->from->node != NULL &&
	       strcmp(st->from->bare, st->to->bare) == 0;
}

static int
on_change(struct pgn_event *ev, struct push *p, int enable)
{
	const struct pgn_stanza *st = ev->stanza;
	const struct pgn_xml *req = pgn_xml_first_child(st->xml);
	const char *jid_s = pgn_xml_attr(req, "jid");
	const char *node = pgn_xml_attr(req, "node");
	const char *cond = NULL;
	struct pgn_jid *jid = NULL;
	struct change *c = NULL;
	int rc;

	if (!from_owner(ev)) {
		pgn_event_error(ev, "cancel", "forbidden");
		return PGN_EVENT_HANDLED;
	}
	if (jid_s == NULL || (enable && node == NULL) ||
	    (node != NULL && (node[0] == '\0' || strlen(node) > MAX_NODE))) {
		pgn_event_error(ev, "modify", "bad-request");
		return PGN_EVENT_HANDLED;
	}
	if ((rc = pgn_jid_parse(jid_s, &jid)) != 0) {
		pgn_event_error(ev, rc == -ENOMEM ? "wait" : "modify",
		                rc == -ENOMEM ? "resource-constraint"
		                              : "jid-malformed");
		return PGN_EVENT_HANDLED;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->bare = strdup(st->from->bare)) == NULL ||
	    (c->jid = strdup(jid->full)) == NULL ||
	    (node != NULL && (c->node = strdup(node)) == NULL) ||
	    (c->user = strdup(st->from->node)) == NULL) {
		cond = "resource-constraint";
		goto fail;
	}
	c->p = p;
	if (enable && (cond = read_options(req, &c->options)) != NULL)
		goto fail;
	if (!enable)
		/* Nothing is published to it from now on (§6). */
		limits_forget(p, c->bare, c->jid, c->node);
	if ((c->hold = pgn_event_hold(ev)) == NULL) {
		cond = "resource-constraint";
		goto fail;
	}
	if (!enable && c->node != NULL) {
		const char *none = NULL;
		char *key = reg_key(c->jid, c->node);
		const char *k = key;
		rc = key == NULL ? -ENOMEM
		                 : pgn_kv_put(pgn_server_store(p->srv), KV_NS,
		                              p->host, c->user, 1, &k, &none, 0,
		                              disable_done, c);
		free(key);
	} else {
		/* An enable checks the limit first; a disable of every node
		 * finds them. */
		rc = pgn_kv_keys(pgn_server_store(p->srv), KV_NS, p->host,
		                 c->user, 0, change_listed, c);
	}
	if (rc != 0) {
		change_answer(c, "wait", "internal-server-error", NULL);
		change_free(c);
	}
	pgn_jid_free(jid);
	return PGN_EVENT_HANDLED;
fail:
	pgn_event_error(ev,
	                strcmp(cond, "resource-constraint") == 0 ? "wait"
	                                                         : "modify",
	                cond);
	change_free(c);
	pgn_jid_free(jid);
	return PGN_EVENT_HANDLED;
}

static int
on_enable(struct pgn_event *ev, void *arg)
{
	return on_change(ev, arg, 1);
}

static int
on_disable(struct pgn_event *ev, void *arg)
{
	return on_change(ev, arg, 0);
}

/* ---- module ---- */

static int
free_limit(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key;
	(void)id;
	(void)arg;
	limit_free(value);
	return 0;
}

static void
push_unload(struct pgn_module *m)
{
	struct push *p = pgn_module_data(m);

	if (p == NULL)
		return;
	if (p->limits != NULL) {
		pgn_map_foreach(p->limits, free_limit, NULL);
		pgn_map_free(p->limits);
	}
	while (p->sent_head != NULL) {
		struct sent *s = p->sent_head;
		p->sent_head = s->next;
		sent_free(s);
	}
	pgn_map_free(p->none);
	free(p);
	pgn_module_set_data(m, NULL);
}

static int
push_load(struct pgn_module *m)
{
	static const char *const inbound[] = {"message/bare", "message/full"};
	struct push *p;
	int rc;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	pgn_module_set_data(m, p);
	if ((p->none = pgn_map_new()) == NULL ||
	    (p->limits = pgn_map_new()) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	p->m = m;
	p->srv = pgn_module_server(m);
	p->host = pgn_host_name(pgn_module_host(m));
	p->include_body = pgn_module_opt_bool(m, "include_body");
	p->min_interval_ms =
	        (uint64_t)pgn_module_opt_int(m, "min_interval") * 1000;
	p->max_regs = (size_t)pgn_module_opt_int(m, "max_registrations");

	/* Messages: after the filters and carbons, before the core
	 * delivers; only looks. */
	for (size_t i = 0; i < sizeof(inbound) / sizeof(*inbound); i++)
		if ((rc = pgn_module_hook(m, inbound[i], on_message, p,
		                          PGN_PRIO_NOTIFY)) < 0)
			goto fail;
	if ((rc = pgn_module_hook(m, "session-hibernated", on_hibernated, p,
	                          PGN_PRIO_HANDLER)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-set/bare/" NS_PUSH ":enable",
	                          on_enable, p, PGN_PRIO_HANDLER)) < 0 ||
	    (rc = pgn_module_hook(m, "iq-set/bare/" NS_PUSH ":disable",
	                          on_disable, p, PGN_PRIO_HANDLER)) < 0 ||
	    (rc = pgn_module_add_account_feature(m, NS_PUSH)) < 0)
		goto fail;
	return 0;
fail:
	push_unload(m);
	return rc;
}

static const struct pgn_module_opt push_options[] = {
	{ .name = "min_interval", .type = PGN_OPT_INT, .def = "5", .min = 0,
	  .max = MAX_MIN_INTERVAL,
	  .doc = "seconds between two notifications to one registration" },
	{ .name = "max_registrations", .type = PGN_OPT_INT, .def = "20",
	  .min = 1, .max = MAX_MAX_REGISTRATIONS,
	  .doc = "push registrations per account" },
	{ .name = "include_body", .type = PGN_OPT_BOOL, .def = "false",
	  .doc = "put the message body in the notification" },
	{ .name = NULL },
};

const struct pgn_module_def pgn_module_def = {
        .abi = PGN_MODULE_ABI,
        .name = "mod_push",
        .description = "Push Notifications (XEP-0357)",
        .options = push_options,
        .load = push_load,
        .unload = push_unload,
};
