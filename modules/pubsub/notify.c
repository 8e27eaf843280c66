/* Event notifications and access models (XEP-0060 §4.5, §7.1.2, §12.4;
 * XEP-0163 §4).  Design: doc/design/pubsub.md, "Notifications".
 *
 * Who is notified of a change to a node (ps_notify_*, after the engine's
 * write committed):
 *   PEP: the owner's own available sessions, and the available sessions
 *   of local contacts with a presence subscription to the owner (from or
 *   both in the owner's roster: the "roster" service), whose verified
 *   caps (the "caps" service) list "<node>+notify", whom the access
 *   model admits, who are not blocked by the owner and do not block the
 *   owner (the "blocking" service).  Each gets one message to its full
 *   JID.  Explicit subscriptions (pubsub_subscription) of other JIDs get
 *   it too, addressed as they subscribed.
 *   Generic service: the subscriptions of the node (state subscribed),
 *   addressed as subscribed, except outcasts; the recipient's own
 *   blocking applies when the router delivers it.
 * The last item of each node (XEP-0163 §4.3.3?  §6.1.7 of XEP-0060:
 * send_last_published_item) goes to a session when it becomes available
 * ("initial-presence") or when its caps become known or change later
 * (the caps service's watch): one store read per MAX_OWNERS_PER_QUERY
 * owners (the contacts whose presence it sees, and itself), for only the
 * nodes whose +notify it announces.
 *
 * Every delivery runs the same small chain, each step answered at once
 * from memory in the usual case (the owner online) and after one store
 * read otherwise: access -> the owner blocks the contact? -> the contact
 * blocks the owner? -> send to the interested sessions that are still
 * there.  A struct job (refcounted) holds what the deliveries of one
 * change share: the event, the node's configuration, the rows read.
 *
 * Not done: remote contacts (no caps of remote entities are kept), a
 * contact gaining a subscription does not get last items until its next
 * available presence, and for the generic service no last item on
 * presence (only PEP has presence-based delivery here). */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pigeon/blocking.h"
#include "pigeon/caps.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/roster.h"
#include "pigeon/store.h"
#include "pubsub.h"

#define PLUS_NOTIFY "+notify"
/* +notify features of one session looked at for last items (a client
 * announces a dozen; a hostile one cannot make us read more). */
#define MAX_NOTIFY_NODES 64
/* Owners in one last-item query (its parameters). */
#define MAX_OWNERS_PER_QUERY 100

struct ps_notify {
	struct ps_engine *e;
	uint64_t boot; /* message ids: boot time and a counter */
	uint64_t seq;
	int watching;  /* registered with the caps service */
	uint64_t sent; /* notifications routed */
};

/* ---- small helpers ------------------------------------------------------- */

static char *
bare_of(const char *jid)
{
	const char *slash = strchr(jid, '/');
	return slash != NULL ? strndup(jid, (size_t)(slash - jid))
			     : strdup(jid);
}

static const char *
domain_of(const char *bare)
{
	const char *at = strchr(bare, '@');
	return at != NULL ? at + 1 : bare;
}

/* Whether the '\n'-joined list has the line a (of length alen). */
static int
list_has(const char *list, const char *a, size_t alen)
{
	for (const char *p = list; p != NULL && *p != '\0';) {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (len == alen && memcmp(p, a, alen) == 0)
			return 1;
		p = nl != NULL ? nl + 1 : NULL;
	}
	return 0;
}

/* Whether features (sorted lines, may be NULL) has "<node>+notify". */
static int
features_notify(const char *features, const char *node)
{
	size_t n = strlen(node), len = n + sizeof(PLUS_NOTIFY) - 1;
	char *want;
	int has;

	if (features == NULL || (want = malloc(len + 1)) == NULL)
		return 0;
	memcpy(want, node, n);
	memcpy(want + n, PLUS_NOTIFY, sizeof(PLUS_NOTIFY));
	has = list_has(features, want, len);
	free(want);
	return has;
}

/* Whether any of the groups of a contact is in allowed (both joined by
 * '\n'). */
static int
groups_meet(const char *groups, const char *allowed)
{
	for (const char *p = groups; p != NULL && *p != '\0';) {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (len > 0 && list_has(allowed, p, len))
			return 1;
		p = nl != NULL ? nl + 1 : NULL;
	}
	return 0;
}

static const char *
session_features(const struct pgn_session *s)
{
	void *inst;
	const struct pgn_caps_service *c =
		pgn_host_service(pgn_session_host(s), PGN_CAPS_SERVICE, &inst);
	return c != NULL ? c->session_features(inst, s) : NULL;
}

/* A service of the local host serving the account bare, or NULL. */
static const void *
service_of(struct ps_engine *e, const char *bare, const char *name, void **inst)
{
	const struct pgn_host *h =
		pgn_server_host(pgn_module_server(e->m), domain_of(bare));
	return h != NULL && strchr(bare, '@') != NULL
		       ? pgn_host_service(h, name, inst)
		       : NULL;
}

/* ---- access models (XEP-0060 §4.5) --------------------------------------- */

/* What the caller already knows of the requester in the owner's roster
 * (PEP fan-out: the contacts list). */
struct known {
	int presence;	    /* has a subscription from/both */
	const char *groups; /* its groups, or NULL: not known */
};

struct access {
	struct ps_engine *e;
	enum ps_access model;
	char *requester; /* bare */
	char *groups;	 /* roster_groups_allowed */
	char **owners;
	size_t nowners, next;
	int err;
	ps_access_fn fn;
	void *arg;
};

static void
access_free(struct access *a)
{
	for (size_t i = 0; i < a->nowners; i++)
		free(a->owners[i]);
	free(a->owners);
	free(a->requester);
	free(a->groups);
	free(a);
}

static void
access_finish(struct access *a, int err, int allowed)
{
	a->fn(err, allowed, a->arg);
	access_free(a);
}

static void ask_next_owner(struct access *a);

static void
on_owner_answer(int err, int found, void *arg)
{
	struct access *a = arg;
	if (found) {
		access_finish(a, 0, 1);
		return;
	}
	if (err < 0)
		a->err = err;
	a->next++;
	ask_next_owner(a);
}

/* The presence and roster models look at the roster of each owner in
 * turn (PEP: the account; generic service: its local owners) until one
 * admits the requester. */
static void
ask_next_owner(struct access *a)
{
	while (a->next < a->nowners) {
		const char *owner = a->owners[a->next];
		void *inst;
		const struct pgn_roster_service *r =
			service_of(a->e, owner, PGN_ROSTER_SERVICE, &inst);
		int rc;

		if (r == NULL) {
			a->next++;
			continue;
		}
		if (a->model == PS_ACCESS_PRESENCE)
			rc = r->has_contact(inst, owner, a->requester,
					    PGN_SUB_FROM | PGN_SUB_BOTH,
					    on_owner_answer, a);
		else
			rc = r->in_groups(inst, owner, a->requester,
					  PGN_SUB_ANY, a->groups,
					  on_owner_answer, a);
		if (rc == 0)
			return;
		a->err = rc;
		a->next++;
	}
	access_finish(a, a->err, 0);
}

static int
access_add_owner(struct access *a, const char *jid)
{
	char **v = realloc(a->owners, (a->nowners + 1) * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	a->owners = v;
	if ((v[a->nowners] = strdup(jid)) == NULL)
		return -ENOMEM;
	a->nowners++;
	return 0;
}

static void
on_owner_rows(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct access *a = arg;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "pubsub: reading node owners: %s",
			res->errmsg);
		access_finish(a, res->error, 0);
		return;
	}
	for (int i = 0; i < res->nrows; i++) {
		const char *jid = pgn_store_value(res, i, 0);
		if (jid != NULL && access_add_owner(a, jid) < 0) {
			access_finish(a, -ENOMEM, 0);
			return;
		}
	}
	ask_next_owner(a);
}

/* ps_access_check, with what the caller knows of the requester's roster
 * item (known may be NULL). */
static int
access_decide(struct ps_engine *e, const struct ps_node_ref *n,
	      const char *requester, enum ps_affiliation aff,
	      const struct known *known, ps_access_fn fn, void *arg)
{
	const struct ps_config *c = n->config;
	struct access *a;
	char *bare;
	int rc = -ENOMEM;

	if (aff == PS_AFF_OUTCAST) {
		fn(0, 0, arg);
		return 0;
	}
	/* Publish-only may publish, not see (XEP-0060 §4.1). */
	if (aff == PS_AFF_OWNER ||
	    (aff >= PS_AFF_MEMBER && aff != PS_AFF_PUBLISH_ONLY) ||
	    c->access_model == PS_ACCESS_OPEN) {
		fn(0, 1, arg);
		return 0;
	}
	if ((bare = bare_of(requester)) == NULL)
		return -ENOMEM;
	if (e->pep && strcmp(bare, n->service) == 0) {
		free(bare);
		fn(0, 1, arg);
		return 0;
	}
	switch (c->access_model) {
	case PS_ACCESS_PRESENCE:
		if (known != NULL && known->presence) {
			free(bare);
			fn(0, 1, arg);
			return 0;
		}
		break;
	case PS_ACCESS_ROSTER:
		if (known != NULL && known->groups != NULL) {
			int ok = groups_meet(known->groups,
					     c->roster_groups_allowed);
			free(bare);
			fn(0, ok, arg);
			return 0;
		}
		break;
	default:
		/* whitelist: members and above only (above).  authorize:
		 * no subscription approval flow yet, so the same as
		 * whitelist. */
		free(bare);
		fn(0, 0, arg);
		return 0;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL)
		goto fail;
	a->e = e;
	a->model = c->access_model;
	a->requester = bare;
	bare = NULL;
	a->fn = fn;
	a->arg = arg;
	if ((a->groups = strdup(c->roster_groups_allowed != NULL
					? c->roster_groups_allowed
					: "")) == NULL)
		goto fail;
	if (e->pep) {
		if (access_add_owner(a, n->service) < 0)
			goto fail;
		ask_next_owner(a);
		return 0;
	}
	/* Generic service: the roster of the node's local owners. */
	char id[32];
	const char *params[1] = {id};
	snprintf(id, sizeof(id), "%" PRId64, n->id);
	rc = pgn_store_query(e->store,
			     "SELECT jid FROM pubsub_affiliation WHERE "
			     "node_id = $1 AND affiliation = 'owner'",
			     1, params, 0, on_owner_rows, a);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	free(bare);
	if (a != NULL)
		access_free(a);
	return rc;
}

int
ps_access_check(struct ps_engine *e, const struct ps_node_ref *n,
		const char *requester, enum ps_affiliation aff, ps_access_fn fn,
		void *arg)
{
	return access_decide(e, n, requester, aff, NULL, fn, arg);
}

/* ---- jobs: one change to notify ------------------------------------------ */

struct contact {
	char *jid;
	unsigned sub;
	char *groups;
};

struct job {
	struct ps_engine *e;
	unsigned refs;
	char *service; /* the owner's bare JID (PEP) or the domain */
	char *node;
	int64_t node_id;
	struct ps_config cfg;
	struct pgn_xml *event; /* <event xmlns=pubsub#event> */
	uint64_t sid;	       /* last item: the one session; 0: all */
	/* The fan-out's reads: answers outstanding, affiliations (bare JID
	 * -> affiliation + 1), subscriptions, the owner's contacts. */
	int steps;
	int failed; /* a read failed: nobody is notified */
	struct pgn_map *affs;
	char **subs;
	size_t nsubs;
	struct contact *contacts;
	size_t ncontacts;
};

static void
job_unref(struct job *j)
{
	if (j == NULL || --j->refs > 0)
		return;
	free(j->service);
	free(j->node);
	ps_config_clear(&j->cfg);
	pgn_xml_free(j->event);
	pgn_map_free(j->affs);
	for (size_t i = 0; i < j->nsubs; i++)
		free(j->subs[i]);
	free(j->subs);
	for (size_t i = 0; i < j->ncontacts; i++) {
		free(j->contacts[i].jid);
		free(j->contacts[i].groups);
	}
	free(j->contacts);
	free(j);
}

/* Takes event (also on failure). */
static struct job *
job_new(struct ps_engine *e, const char *service, const char *node,
	int64_t node_id, const struct ps_config *cfg, struct pgn_xml *event)
{
	struct job *j = calloc(1, sizeof(*j));

	if (j == NULL) {
		pgn_xml_free(event);
		return NULL;
	}
	j->e = e;
	j->refs = 1;
	j->event = event;
	j->node_id = node_id;
	if (event == NULL || (j->service = strdup(service)) == NULL ||
	    (j->node = strdup(node)) == NULL ||
	    ps_config_copy(&j->cfg, cfg) != 0) {
		job_unref(j);
		return NULL;
	}
	return j;
}

static void
job_ref(struct ps_node_ref *ref, const struct job *j)
{
	ref->id = j->node_id;
	ref->service = j->service;
	ref->node = j->node;
	ref->config = &j->cfg;
}

/* Routes one notification of j to 'to'.  0 or negative. */
static int
send_one(struct job *j, const char *to)
{
	struct ps_notify *nt = j->e->notify;
	struct pgn_xml *msg = pgn_xml_new(PGN_NS_CLIENT, "message"), *ev;
	struct pgn_stanza *st;
	char id[48];
	int bad = 0;

	snprintf(id, sizeof(id), "ps-%" PRIx64 "-%" PRIx64, nt->boot,
		 ++nt->seq);
	if (msg == NULL || (ev = pgn_xml_copy(j->event)) == NULL) {
		pgn_xml_free(msg);
		return -ENOMEM;
	}
	pgn_xml_append(msg, ev);
	if (pgn_xml_set_attr(msg, "from", j->service) != 0 ||
	    pgn_xml_set_attr(msg, "to", to) != 0 ||
	    pgn_xml_set_attr(msg, "type",
			     j->cfg.notification_type == PS_NOTIFY_NORMAL
				     ? "normal"
				     : "headline") != 0 ||
	    pgn_xml_set_attr(msg, "id", id) != 0) {
		pgn_xml_free(msg);
		return -ENOMEM;
	}
	if ((st = pgn_stanza_new(msg, &bad)) == NULL)
		return bad ? -EINVAL : -ENOMEM;
	pgn_route(pgn_module_server(j->e->m), st);
	nt->sent++;
	return 0;
}

/* Sends j to the available sessions of the account bare that announce
 * "<node>+notify" (only session j->sid when set).  Returns how many. */
static size_t
send_sessions(struct job *j, const char *bare)
{
	struct pgn_server *srv = pgn_module_server(j->e->m);
	char **to = NULL;
	size_t n = 0, cap = 0;

	/* Addresses first: routing may end sessions. */
	for (struct pgn_session *s = pgn_user_sessions(srv, bare); s != NULL;
	     s = pgn_session_next(s)) {
		const struct pgn_jid *jid = pgn_session_jid(s);
		if (jid == NULL || !pgn_session_available(s) ||
		    (j->sid != 0 && pgn_session_id(s) != j->sid) ||
		    !features_notify(session_features(s), j->node))
			continue;
		if (n == cap) {
			size_t c = cap ? cap * 2 : 4;
			char **v = realloc(to, c * sizeof(*v));
			if (v == NULL)
				break;
			to = v;
			cap = c;
		}
		if ((to[n] = strdup(jid->full)) == NULL)
			break;
		n++;
	}
	for (size_t i = 0; i < n; i++) {
		if (send_one(j, to[i]) < 0)
			pgn_log(PGN_LOG_WARN, "pubsub: cannot notify %s",
				to[i]);
		free(to[i]);
	}
	free(to);
	return n;
}

/* ---- one delivery: access, blocking, send ---------------------------------
 */

struct delivery {
	struct job *j;
	char *jid; /* a contact's bare JID, or a subscription's JID */
	int as_is; /* a subscription: to jid as subscribed */
};

static void
delivery_end(struct delivery *d)
{
	job_unref(d->j);
	free(d->jid);
	free(d);
}

static void
delivery_send(struct delivery *d)
{
	if (d->as_is) {
		if (send_one(d->j, d->jid) < 0)
			pgn_log(PGN_LOG_WARN, "pubsub: cannot notify %s",
				d->jid);
	} else {
		send_sessions(d->j, d->jid);
	}
	delivery_end(d);
}

static void
on_contact_blocks(int err, int blocked, void *arg)
{
	struct delivery *d = arg;
	if (err < 0 || blocked) {
		delivery_end(d);
		return;
	}
	delivery_send(d);
}

/* The contact's own list: a notification from someone it blocks would
 * be refused by its inbound filter with an error to the owner. */
static void
on_owner_blocks(int err, int blocked, void *arg)
{
	struct delivery *d = arg;
	const struct pgn_blocking_service *b;
	void *inst;
	char *bare;

	if (err < 0 || blocked) {
		delivery_end(d);
		return;
	}
	if ((bare = bare_of(d->jid)) == NULL) {
		delivery_end(d);
		return;
	}
	b = service_of(d->j->e, bare, PGN_BLOCKING_SERVICE, &inst);
	if (b == NULL) {
		free(bare);
		delivery_send(d);
		return;
	}
	if (b->blocks(inst, bare, d->j->service, on_contact_blocks, d) < 0)
		delivery_end(d);
	free(bare);
}

static void
on_access(int err, int allowed, void *arg)
{
	struct delivery *d = arg;
	struct job *j = d->j;
	const struct pgn_blocking_service *b;
	void *inst;

	if (err < 0 || !allowed) {
		delivery_end(d);
		return;
	}
	/* The generic service has no block list; the recipient's own
	 * applies when the router delivers.  Nor do the owner's own
	 * resources need one. */
	if (!j->e->pep || strcmp(d->jid, j->service) == 0) {
		delivery_send(d);
		return;
	}
	b = service_of(j->e, j->service, PGN_BLOCKING_SERVICE, &inst);
	if (b == NULL) {
		on_owner_blocks(0, 0, d);
		return;
	}
	if (b->blocks(inst, j->service, d->jid, on_owner_blocks, d) < 0)
		delivery_end(d);
}

/* Starts one delivery of j to jid.  A failure is logged and drops
 * it. */
static void
delivery_start(struct job *j, const char *jid, int as_is,
	       enum ps_affiliation aff, const struct known *known)
{
	struct delivery *d = calloc(1, sizeof(*d));
	struct ps_node_ref ref;

	if (d == NULL || (d->jid = strdup(jid)) == NULL) {
		free(d);
		goto fail;
	}
	d->j = j;
	j->refs++;
	d->as_is = as_is;
	job_ref(&ref, j);
	if (access_decide(j->e, &ref, jid, aff, known, on_access, d) < 0) {
		delivery_end(d);
		goto fail;
	}
	return;
fail:
	pgn_log(PGN_LOG_WARN, "pubsub: out of memory notifying %s", jid);
}

/* ---- the fan-out of a change ----------------------------------------------
 */

static enum ps_affiliation
job_aff(const struct job *j, const char *jid)
{
	char *bare = bare_of(jid);
	void *v = bare != NULL && j->affs != NULL ? pgn_map_get(j->affs, bare)
						  : NULL;
	free(bare);
	return v != NULL ? (enum ps_affiliation)((uintptr_t)v - 1)
			 : PS_AFF_NONE;
}

static const struct contact *
job_contact(const struct job *j, const char *bare)
{
	for (size_t i = 0; i < j->ncontacts; i++)
		if (strcmp(j->contacts[i].jid, bare) == 0)
			return &j->contacts[i];
	return NULL;
}

static void
deliver_all(struct job *j)
{
	struct pgn_server *srv = pgn_module_server(j->e->m);

	if (j->e->pep) {
		/* The owner's own resources (XEP-0163 §4.3.1). */
		send_sessions(j, j->service);
		for (size_t i = 0; i < j->ncontacts; i++) {
			const struct contact *c = &j->contacts[i];
			struct known k = {1, c->groups};
			/* Only local accounts online can be interested. */
			if (pgn_user_sessions(srv, c->jid) == NULL)
				continue;
			delivery_start(j, c->jid, 0, job_aff(j, c->jid), &k);
		}
	}
	for (size_t i = 0; i < j->nsubs; i++) {
		char *bare = bare_of(j->subs[i]);
		/* PEP: the owner and the contacts had theirs above. */
		int skip = bare == NULL ||
			   (j->e->pep && (strcmp(bare, j->service) == 0 ||
					  job_contact(j, bare) != NULL));
		free(bare);
		if (!skip)
			delivery_start(j, j->subs[i], 1, job_aff(j, j->subs[i]),
				       NULL);
	}
}

static void
step_done(struct job *j)
{
	if (--j->steps == 0 && !j->failed)
		deliver_all(j);
	job_unref(j);
}

static int
add_sub(struct job *j, const char *jid)
{
	char **v = realloc(j->subs, (j->nsubs + 1) * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	j->subs = v;
	if ((v[j->nsubs] = strdup(jid)) == NULL)
		return -ENOMEM;
	j->nsubs++;
	return 0;
}

static void
on_rows(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct job *j = arg;

	(void)owner;
	if (res->error != 0) {
		/* Without the affiliations outcasts cannot be told apart:
		 * nobody is notified. */
		pgn_log(PGN_LOG_WARN, "pubsub: notifying %s %s: %s", j->service,
			j->node, res->errmsg);
		j->failed = 1;
		step_done(j);
		return;
	}
	for (int i = 0; i < res->nrows; i++) {
		const char *kind = pgn_store_value(res, i, 0);
		const char *jid = pgn_store_value(res, i, 1);
		const char *val = pgn_store_value(res, i, 2);
		int aff;
		if (kind == NULL || jid == NULL || val == NULL)
			continue;
		if (kind[0] == 's') {
			if (add_sub(j, jid) < 0)
				goto nomem;
		} else if ((aff = ps_affiliation_parse(val)) > 0) {
			if (j->affs == NULL &&
			    (j->affs = pgn_map_new()) == NULL)
				goto nomem;
			if (pgn_map_set(j->affs, jid,
					(void *)(uintptr_t)(aff + 1)) != 0)
				goto nomem;
		}
	}
	step_done(j);
	return;
nomem:
	pgn_log(PGN_LOG_WARN, "pubsub: out of memory notifying %s %s",
		j->service, j->node);
	j->failed = 1;
	step_done(j);
}

static void
on_contacts(int err, size_t n, const struct pgn_roster_contact *items,
	    void *arg)
{
	struct job *j = arg;

	if (err < 0)
		goto fail;
	if (n > 0 && (j->contacts = calloc(n, sizeof(*j->contacts))) == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		struct contact *c = &j->contacts[j->ncontacts];
		if ((c->jid = strdup(items[i].jid)) == NULL ||
		    (c->groups = strdup(items[i].groups)) == NULL) {
			free(c->jid);
			goto fail;
		}
		c->sub = items[i].sub;
		j->ncontacts++;
	}
	step_done(j);
	return;
fail:
	/* The owner's own resources and the subscriptions still get it. */
	pgn_log(PGN_LOG_WARN, "pubsub: the contacts of %s: %d", j->service,
		err < 0 ? err : -ENOMEM);
	step_done(j);
}

/* Notifies the change described by event (taken) to whoever n's
 * subscribers and interested contacts are.  The store read of the
 * affiliations and subscriptions is queued before this returns (see
 * ps_notify_delete). */
static void
fan_out(struct ps_engine *e, const struct ps_node_ref *n, struct pgn_xml *event)
{
	struct job *j =
		job_new(e, n->service, n->node, n->id, n->config, event);
	char id[32];
	const char *params[1] = {id};

	if (j == NULL)
		goto nomem;
	snprintf(id, sizeof(id), "%" PRId64, n->id);
	/* One guard step for this function, one per read. */
	j->steps = 1;
	j->refs++;
	j->steps++;
	if (pgn_store_query(e->store,
			    "SELECT 'a', jid, affiliation FROM "
			    "pubsub_affiliation WHERE node_id = $1 UNION ALL "
			    "SELECT 's', jid, state FROM pubsub_subscription "
			    "WHERE node_id = $1 AND state = 'subscribed'",
			    1, params, 0, on_rows, j) < 0) {
		job_unref(j);
		job_unref(j);
		goto nomem;
	}
	if (e->pep) {
		void *inst;
		const struct pgn_roster_service *r =
			pgn_host_service(e->host, PGN_ROSTER_SERVICE, &inst);
		if (r != NULL) {
			j->refs++;
			j->steps++;
			if (r->contacts(inst, n->service,
					PGN_SUB_FROM | PGN_SUB_BOTH,
					on_contacts, j) < 0) {
				j->steps--;
				j->refs--;
			}
		}
	}
	step_done(j);
	return;
nomem:
	pgn_log(PGN_LOG_WARN, "pubsub: out of memory notifying %s %s",
		n->service, n->node);
}

/* <event xmlns=pubsub#event><name node='N'/></event>: the element
 * named name is returned in *child.  NULL on allocation failure. */
static struct pgn_xml *
event_new(const char *name, const char *node, struct pgn_xml **child)
{
	struct pgn_xml *ev = pgn_xml_new(PS_NS_EVENT, "event");
	if (ev == NULL ||
	    (*child = pgn_xml_add_child(ev, PS_NS_EVENT, name)) == NULL ||
	    pgn_xml_set_attr(*child, "node", node) != 0) {
		pgn_xml_free(ev);
		return NULL;
	}
	return ev;
}

/* An <item id=..> of the event namespace under items, with a copy of
 * payload's children (src: an <item/>) when the node delivers
 * payloads, or with the payload parsed from its stored text.  0 or
 * -ENOMEM/-EINVAL. */
static int
event_item(struct pgn_xml *items, const char *id, const struct pgn_xml *src,
	   const char *stored, int payloads)
{
	struct pgn_xml *it = pgn_xml_add_child(items, PS_NS_EVENT, "item");

	if (it == NULL || (id != NULL && pgn_xml_set_attr(it, "id", id) != 0))
		return -ENOMEM;
	if (!payloads)
		return 0;
	if (stored != NULL)
		return pgn_xml_parse_into(it, stored, strlen(stored));
	for (const struct pgn_xml *c = pgn_xml_first_child(src); c != NULL;
	     c = pgn_xml_next(c)) {
		struct pgn_xml *copy = pgn_xml_copy(c);
		if (copy == NULL)
			return -ENOMEM;
		pgn_xml_append(it, copy);
	}
	return 0;
}

/* ---- the engine's calls ---------------------------------------------------
 */

void
ps_notify_publish(struct ps_engine *e, const struct ps_node_ref *n,
		  const struct pgn_xml *item, const char *publisher)
{
	struct pgn_xml *ev, *items;

	/* pubsub#itemreply is not offered: no publisher attribute. */
	(void)publisher;
	if (!n->config->deliver_notifications)
		return;
	if ((ev = event_new("items", n->node, &items)) == NULL ||
	    event_item(items, pgn_xml_attr(item, "id"), item, NULL,
		       n->config->deliver_payloads) < 0) {
		pgn_xml_free(ev);
		pgn_log(PGN_LOG_WARN, "pubsub: out of memory notifying %s",
			n->node);
		return;
	}
	fan_out(e, n, ev);
}

/* The engine decided (XEP-0060 §7.2.2.1: the request's notify attribute,
 * else the node's pubsub#notify_retract) before calling. */
void
ps_notify_retract(struct ps_engine *e, const struct ps_node_ref *n,
		  const char *item_id)
{
	struct pgn_xml *ev, *items, *r;

	if (!n->config->deliver_notifications)
		return;
	if ((ev = event_new("items", n->node, &items)) == NULL ||
	    (r = pgn_xml_add_child(items, PS_NS_EVENT, "retract")) == NULL ||
	    pgn_xml_set_attr(r, "id", item_id) != 0) {
		pgn_xml_free(ev);
		return;
	}
	fan_out(e, n, ev);
}

void
ps_notify_purge(struct ps_engine *e, const struct ps_node_ref *n)
{
	struct pgn_xml *ev, *p;

	if (!n->config->deliver_notifications)
		return;
	if ((ev = event_new("purge", n->node, &p)) != NULL)
		fan_out(e, n, ev);
}

void
ps_notify_delete(struct ps_engine *e, const struct ps_node_ref *n,
		 const char *redirect_uri)
{
	struct pgn_xml *ev, *d, *r;

	if (!n->config->deliver_notifications || !n->config->notify_delete)
		return;
	if ((ev = event_new("delete", n->node, &d)) == NULL)
		return;
	if (redirect_uri != NULL &&
	    ((r = pgn_xml_add_child(d, PS_NS_EVENT, "redirect")) == NULL ||
	     pgn_xml_set_attr(r, "uri", redirect_uri) != 0)) {
		pgn_xml_free(ev);
		return;
	}
	fan_out(e, n, ev);
}

void
ps_notify_config(struct ps_engine *e, const struct ps_node_ref *n)
{
	struct pgn_xml *ev, *c, *form;

	if (!n->config->deliver_notifications || !n->config->notify_config)
		return;
	if ((ev = event_new("configuration", n->node, &c)) == NULL)
		return;
	/* XEP-0060 §8.2.5.2: the form comes with payloads. */
	if (n->config->deliver_payloads) {
		if ((form = ps_config_form(n->config, NULL)) == NULL ||
		    pgn_xml_set_attr(form, "type", "result") != 0) {
			pgn_xml_free(form);
			pgn_xml_free(ev);
			return;
		}
		pgn_xml_append(c, form);
	}
	fan_out(e, n, ev);
}

/* ---- last items (XEP-0163 §4.3; XEP-0060 send_last_published_item) --------
 */

/* A session that became interested: its id, bare JID and the nodes it
 * wants notifications of (not yet covered by its earlier caps). */
struct lastreq {
	struct ps_engine *e;
	uint64_t sid;
	char *bare;
	char **nodes;
	size_t nnodes;
};

static void
lastreq_free(struct lastreq *lr)
{
	for (size_t i = 0; i < lr->nnodes; i++)
		free(lr->nodes[i]);
	free(lr->nodes);
	free(lr->bare);
	free(lr);
}

struct lastq {
	struct ps_engine *e;
	uint64_t sid;
	char *bare;
};

static void
on_last_rows(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct lastq *q = arg;
	struct ps_engine *e = q->e;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "pubsub: last items for %s: %s", q->bare,
			res->errmsg);
		goto out;
	}
	for (int i = 0; i < res->nrows; i++) {
		const char *id = pgn_store_value(res, i, 0);
		const char *service = pgn_store_value(res, i, 1);
		const char *node = pgn_store_value(res, i, 2);
		const char *config = pgn_store_value(res, i, 3);
		const char *item_id = pgn_store_value(res, i, 4);
		const char *payload = pgn_store_value(res, i, 5);
		const char *affname = pgn_store_value(res, i, 6);
		struct ps_config cfg;
		struct pgn_xml *ev = NULL, *items;
		struct job *j;
		int aff = affname != NULL ? ps_affiliation_parse(affname) : 0;
		struct known k = {1, NULL};

		if (id == NULL || service == NULL || node == NULL ||
		    config == NULL || item_id == NULL)
			continue;
		if (ps_config_decode(&cfg, config, 1) != 0)
			continue;
		if (cfg.send_last_published_item != PS_SEND_LAST_NEVER &&
		    ((ev = event_new("items", node, &items)) == NULL ||
		     event_item(items, item_id, NULL,
				payload != NULL ? payload : "",
				cfg.deliver_payloads) < 0)) {
			pgn_xml_free(ev);
			ev = NULL;
		}
		j = ev != NULL ? job_new(e, service, node,
					 strtoll(id, NULL, 10), &cfg, ev)
			       : NULL;
		ps_config_clear(&cfg);
		if (j == NULL)
			continue;
		j->sid = q->sid;
		if (strcmp(service, q->bare) == 0)
			aff = PS_AFF_OWNER;
		delivery_start(j, q->bare, 0, aff < 0 ? PS_AFF_NONE : aff, &k);
		job_unref(j);
	}
out:
	free(q->bare);
	free(q);
}

/* One read for up to MAX_OWNERS_PER_QUERY owners: the newest item of
 * each of their nodes the session wants. */
static void
query_last(struct lastreq *lr, const char *const *owners, size_t n)
{
	size_t np = 2 + n + lr->nnodes, len = 512 + 8 * np;
	const char **params = calloc(np, sizeof(*params));
	char *sql = malloc(len);
	struct lastq *q = calloc(1, sizeof(*q));
	size_t off;

	if (params == NULL || sql == NULL || q == NULL ||
	    (q->bare = strdup(lr->bare)) == NULL)
		goto fail;
	q->e = lr->e;
	q->sid = lr->sid;
	params[0] = lr->bare;
	params[1] = pgn_host_name(lr->e->host);
	off = (size_t)snprintf(
		sql, len,
		"SELECT n.id, n.service, n.node, n.config, i.item_id, "
		"i.payload, a.affiliation FROM pubsub_node n JOIN pubsub_item "
		"i ON i.node_id = n.id LEFT JOIN pubsub_affiliation a ON "
		"a.node_id = n.id AND a.jid = $1 WHERE n.host = $2 AND "
		"n.username IS NOT NULL AND i.ts = (SELECT MAX(ts) FROM "
		"pubsub_item WHERE node_id = n.id) AND n.service IN (");
	for (size_t i = 0; i < n; i++) {
		params[2 + i] = owners[i];
		off += (size_t)snprintf(sql + off, len - off, "%s$%zu",
					i > 0 ? ", " : "", 3 + i);
	}
	off += (size_t)snprintf(sql + off, len - off, ") AND n.node IN (");
	for (size_t i = 0; i < lr->nnodes; i++) {
		params[2 + n + i] = lr->nodes[i];
		off += (size_t)snprintf(sql + off, len - off, "%s$%zu",
					i > 0 ? ", " : "", 3 + n + i);
	}
	snprintf(sql + off, len - off, ")");
	if (pgn_store_query(lr->e->store, sql, (int)np, params, 0, on_last_rows,
			    q) < 0)
		goto fail;
	free(params);
	free(sql);
	return;
fail:
	pgn_log(PGN_LOG_WARN, "pubsub: cannot read last items for %s",
		lr->bare);
	if (q != NULL)
		free(q->bare);
	free(q);
	free(params);
	free(sql);
}

static void
on_followed(int err, size_t n, const struct pgn_roster_contact *items,
	    void *arg)
{
	struct lastreq *lr = arg;
	const char *host = pgn_host_name(lr->e->host);
	const char **owners = calloc(n + 1, sizeof(*owners));
	size_t k = 0;

	if (owners == NULL)
		goto out;
	/* Itself first: its own nodes (XEP-0163 §4.3.1). */
	owners[k++] = lr->bare;
	for (size_t i = 0; err == 0 && i < n; i++)
		if (strcmp(domain_of(items[i].jid), host) == 0 &&
		    strchr(items[i].jid, '@') != NULL &&
		    strcmp(items[i].jid, lr->bare) != 0)
			owners[k++] = items[i].jid;
	for (size_t i = 0; i < k; i += MAX_OWNERS_PER_QUERY)
		query_last(lr, owners + i,
			   k - i < MAX_OWNERS_PER_QUERY ? k - i
							: MAX_OWNERS_PER_QUERY);
out:
	free(owners);
	lastreq_free(lr);
}

/* Sends session s the last items of the nodes it announces +notify for
 * in its features and not in old (NULL: none before). */
static void
last_items(struct ps_engine *e, struct pgn_session *s, const char *old)
{
	const char *features = session_features(s);
	const struct pgn_jid *jid = pgn_session_jid(s);
	struct lastreq *lr;
	const struct pgn_roster_service *r;
	void *inst;
	size_t plen = sizeof(PLUS_NOTIFY) - 1;

	if (features == NULL || jid == NULL || !pgn_session_available(s))
		return;
	if ((lr = calloc(1, sizeof(*lr))) == NULL ||
	    (lr->bare = strdup(jid->bare)) == NULL ||
	    (lr->nodes = calloc(MAX_NOTIFY_NODES, sizeof(char *))) == NULL)
		goto fail;
	lr->e = e;
	lr->sid = pgn_session_id(s);
	for (const char *p = features;
	     p != NULL && *p != '\0' && lr->nnodes < MAX_NOTIFY_NODES;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (len > plen &&
		    memcmp(p + len - plen, PLUS_NOTIFY, plen) == 0 &&
		    !list_has(old, p, len)) {
			if ((lr->nodes[lr->nnodes] = strndup(p, len - plen)) ==
			    NULL)
				goto fail;
			lr->nnodes++;
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
	if (lr->nnodes == 0) {
		lastreq_free(lr);
		return;
	}
	r = pgn_host_service(e->host, PGN_ROSTER_SERVICE, &inst);
	if (r == NULL) {
		on_followed(0, 0, NULL, lr);
		return;
	}
	/* The owners whose presence it sees: they have it as from/both. */
	if (r->contacts(inst, lr->bare, PGN_SUB_TO | PGN_SUB_BOTH, on_followed,
			lr) < 0)
		goto fail;
	return;
fail:
	pgn_log(PGN_LOG_WARN, "session %" PRIu64 ": pubsub: no last items",
		pgn_session_id(s));
	if (lr != NULL)
		lastreq_free(lr);
}

static int
on_initial_presence(struct pgn_event *ev, void *arg)
{
	if (ev->origin != NULL)
		last_items(arg, ev->origin, NULL);
	return PGN_EVENT_PASS;
}

static void
on_caps(struct pgn_session *s, const char *old, const char *features, void *arg)
{
	struct ps_engine *e = arg;
	(void)features;
	if (pgn_session_host(s) == e->host)
		last_items(e, s, old);
}

/* ---- setup -----------------------------------------------------------------
 */

int
ps_notify_init(struct ps_engine *e)
{
	struct ps_notify *nt = calloc(1, sizeof(*nt));
	const struct pgn_caps_service *caps;
	void *inst;
	int rc;

	if (nt == NULL)
		return -ENOMEM;
	nt->e = e;
	nt->boot = (uint64_t)time(NULL);
	e->notify = nt;
	/* Presence-based delivery is PEP's (XEP-0163 §4). */
	if (!e->pep)
		return 0;
	if ((rc = pgn_module_hook(e->m, "initial-presence", on_initial_presence,
				  e, PGN_PRIO_HANDLER)) < 0)
		goto fail;
	caps = pgn_host_service(e->host, PGN_CAPS_SERVICE, &inst);
	if (caps != NULL) {
		if ((rc = caps->watch(inst, e->m, on_caps, e)) < 0)
			goto fail;
		nt->watching = 1;
	} else {
		pgn_log(PGN_LOG_WARN,
			"mod_pep: mod_caps is not loaded on "
			"%s: no +notify notifications",
			pgn_host_name(e->host));
	}
	return 0;
fail:
	e->notify = NULL;
	free(nt);
	return rc;
}

void
ps_notify_free(struct ps_engine *e)
{
	struct ps_notify *nt = e->notify;
	const struct pgn_caps_service *caps;
	void *inst;

	if (nt == NULL)
		return;
	if (nt->watching &&
	    (caps = pgn_host_service(e->host, PGN_CAPS_SERVICE, &inst)) != NULL)
		caps->unwatch(inst, e->m);
	free(nt);
	e->notify = NULL;
}

uint64_t
ps_notify_sent(const struct ps_engine *e)
{
	return e->notify != NULL ? e->notify->sent : 0;
}
