/* Roster and presence (RFC 6121).
 *
 * Rosters live in a per-user cache (bare JID -> struct roster) loaded from
 * the store when the first session of the user starts (the session is
 * held until then), when a subscription stanza arrives for a user who is
 * offline (the stanza is held), or for a pigeonctl command.  The cache is
 * the truth while it exists: every change is applied in memory, written
 * through to the store (one FIFO connection, so a later load sees every
 * earlier write) and pushed to the interested resources.  The cache is
 * freed when no live session uses it and nothing waits for it.
 *
 * Versioning (§2.6): a per-user counter; each item keeps the version of
 * its last change and removed items leave a tombstone with the version of
 * their removal, so a client that knows version N gets an empty result and
 * pushes of the items changed after N.  Tombstones are bounded: the oldest
 * are pruned and min_ver remembers that versions at or below it must get
 * the whole roster.
 *
 * Subscription state (§3, Appendix A): subscription none/to/from/both, ask
 * (Pending Out) and approved (pre-approval) are columns of the item;
 * Pending In is a row of roster_pending (status, nick), kept until the
 * user answers and delivered again at every login.
 *
 * Presence (§4): the user's own presence (<presence/> without 'to',
 * "pre-presence/self") is broadcast to the contacts with from/both, to the
 * user's available resources, and recorded on the session; the first one
 * also probes the contacts with to/both.  Directed presence is
 * remembered per session, and whoever saw the session available gets
 * unavailable when it ends.  Presence to contacts goes through
 * pgn_event_route_from() so that outbound filters (blocking) apply and
 * the client stanza that caused it is acknowledged only once it is
 * routed; a depth counter keeps our own "pre-presence" hooks out of
 * those.  Code continued after storage (a roster or probe row loaded)
 * passes no event (route_in, presence.c): it sends as the server. */
#include "roster_priv.h"

const char *const sub_names[] = { "none", "to", "from", "both" };

/* ---- small helpers ------------------------------------------------------ */

int
type_is(const struct pgn_stanza *st, const char *t)
{
	return st->type != NULL && strcmp(st->type, t) == 0;
}

char *
xstrdup(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

void
item_free(struct item *it)
{
	if (it == NULL)
		return;
	free(it->jid);
	free(it->name);
	for (size_t i = 0; i < it->ngroups; i++)
		free(it->groups[i]);
	free(it->groups);
	free(it);
}

void
pending_free(struct pending *p)
{
	if (p == NULL)
		return;
	free(p->status);
	free(p->nick);
	free(p->stanza);
	free(p);
}

void
free_item_value(void *value)
{
	item_free(value);
}

void
free_pending_value(void *value)
{
	pending_free(value);
}

static void
sstate_free(void *p)
{
	struct sstate *ss = p;
	if (ss == NULL)
		return;
	pgn_map_free(ss->directed);
	pgn_jid_free(ss->jid);
	free(ss);
}

struct sstate *
sstate_of(struct rmod *rm, struct pgn_session *s)
{
	return s != NULL ? pgn_session_get_data(s, rm->m) : NULL;
}

/* The full JID of s, also while it is closing (see struct sstate). */
const struct pgn_jid *
session_jid(struct rmod *rm, struct pgn_session *s)
{
	const struct pgn_jid *j = pgn_session_jid(s);
	struct sstate *ss;
	if (j == NULL && (ss = sstate_of(rm, s)) != NULL)
		j = ss->jid;
	return j;
}

/* Groups are stored newline separated; names never hold control
 * characters (refused on input). */
char *
groups_join(const struct item *it)
{
	size_t len = 1;
	char *out, *p;
	for (size_t i = 0; i < it->ngroups; i++)
		len += strlen(it->groups[i]) + 1;
	if ((out = malloc(len)) == NULL)
		return NULL;
	p = out;
	for (size_t i = 0; i < it->ngroups; i++) {
		size_t n = strlen(it->groups[i]);
		if (i > 0)
			*p++ = '\n';
		memcpy(p, it->groups[i], n);
		p += n;
	}
	*p = '\0';
	return out;
}

int
groups_split(struct item *it, const char *s)
{
	const char *p = s;
	if (s == NULL || *s == '\0')
		return 0;
	while (p != NULL && it->ngroups < MAX_GROUPS) {
		const char *nl = strchr(p, '\n');
		size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
		char **g = realloc(it->groups,
				   (it->ngroups + 1) * sizeof(*it->groups));
		if (g == NULL)
			return -ENOMEM;
		it->groups = g;
		if ((g[it->ngroups] = strndup(p, n)) == NULL)
			return -ENOMEM;
		it->ngroups++;
		p = nl != NULL ? nl + 1 : NULL;
	}
	return 0;
}

int
parse_sub(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (s != NULL && strcmp(s, sub_names[i]) == 0)
			return i;
	return -1;
}

int
has_from(enum sub s)
{
	return s == SUB_FROM || s == SUB_BOTH;
}

int
has_to(enum sub s)
{
	return s == SUB_TO || s == SUB_BOTH;
}

/* ---- hooks: sessions ---------------------------------------------------- */

static void
release_session(struct roster *r, void *arg)
{
	uint64_t id = (uint64_t)(uintptr_t)arg;
	struct pgn_session *s = pgn_session_find(r->rm->srv, id);
	if (s != NULL)
		pgn_session_release(s);
}

static int
on_session_started(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *j = pgn_session_jid(s);
	struct sstate *ss = calloc(1, sizeof(*ss));
	struct roster *r;

	if (ss == NULL || (ss->directed = pgn_map_new()) == NULL ||
	    j == NULL || (ss->jid = pgn_jid_copy(j)) == NULL ||
	    pgn_session_set_data(s, rm->m, ss, sstate_free) != 0) {
		sstate_free(ss);
		pgn_log(PGN_LOG_WARN, "mod_roster: session %" PRIu64
			": out of memory", pgn_session_id(s));
		return PGN_EVENT_PASS;
	}
	if (j == NULL || (r = roster_get(rm, j->bare)) == NULL ||
	    roster_add_sid(r, pgn_session_id(s)) != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: session %" PRIu64
			": cannot set up the roster", pgn_session_id(s));
		return PGN_EVENT_PASS;
	}
	if (r->loaded)
		return PGN_EVENT_PASS;
	pgn_session_hold(s);
	if (roster_wait(r, release_session,
			(void *)(uintptr_t)pgn_session_id(s)) != 0)
		pgn_session_release(s);
	return PGN_EVENT_PASS;
}

static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct rmod *rm = arg;
	struct pgn_session *s = ev->origin;
	const struct pgn_jid *j = session_jid(rm, s);
	struct sstate *ss = sstate_of(rm, s);
	struct roster *r = j != NULL ? pgn_map_get(rm->users, j->bare) : NULL;

	if (ss != NULL && (ss->available || (ss->directed != NULL &&
					      pgn_map_count(ss->directed) > 0))) {
		/* Everyone who saw us available learns we are gone. */
		struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "presence");
		if (x != NULL && pgn_xml_set_attr(x, "type", "unavailable") == 0)
			bcast_unavailable(rm, ev,
					  r != NULL && r->loaded && !r->failed
						  ? r
						  : NULL,
					  s, ss, x);
		pgn_xml_free(x);
	}
	if (r != NULL) {
		roster_del_sid(r, pgn_session_id(s));
		roster_maybe_free(r);
	}
	return PGN_EVENT_PASS;
}

static int
on_features(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *f = pgn_event_client_features(ev);

	(void)arg;
	if (f != NULL && (pgn_xml_add_child(f, NS_ROSTERVER, "ver") == NULL ||
			  pgn_xml_add_child(f, NS_PREAPPROVAL, "sub") == NULL))
		pgn_log(PGN_LOG_WARN, "mod_roster: out of memory");
	return PGN_EVENT_PASS;
}

/* ---- module ------------------------------------------------------------- */

/* ---- the "roster" service (pigeon/roster.h) ----------------------------- */

/* Whether the '\n'-joined list groups names one of the item's groups. */
static int
item_in_groups(const struct item *it, const char *groups)
{
	for (size_t i = 0; groups != NULL && i < it->ngroups; i++) {
		size_t n = strlen(it->groups[i]);
		for (const char *p = groups; *p != '\0';) {
			const char *nl = strchr(p, '\n');
			size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
			if (len == n && memcmp(p, it->groups[i], n) == 0)
				return 1;
			if (nl == NULL)
				break;
			p = nl + 1;
		}
	}
	return 0;
}

/* The account's username (malloc'd) and host (borrowed from user), or
 * NULL. */
static char *
split_user(const char *user, const char **host)
{
	const char *at = strchr(user, '@');
	if (at == NULL)
		return NULL;
	*host = at + 1;
	return strndup(user, (size_t)(at - user));
}

/* The cache is the truth while it is loaded. */
static const struct roster *
loaded_roster(struct rmod *rm, const char *user)
{
	const struct roster *r = pgn_map_get(rm->users, user);
	return r != NULL && r->loaded && !r->failed ? r : NULL;
}

struct list_ask {
	unsigned mask;
	pgn_roster_list_fn fn;
	void *arg;
};

struct list_acc {
	unsigned mask;
	struct pgn_roster_contact *v;
	size_t n;
	char **groups; /* joined groups of v[i], owned */
	int nomem;
};

static int
collect_item(const char *key, uint64_t id, void *value, void *arg)
{
	struct list_acc *acc = arg;
	const struct item *it = value;

	(void)key, (void)id;
	if ((acc->mask & (1u << it->sub)) == 0 || acc->nomem)
		return 0;
	if ((acc->groups[acc->n] = groups_join(it)) == NULL) {
		acc->nomem = 1;
		return 0;
	}
	acc->v[acc->n].jid = it->jid;
	acc->v[acc->n].sub = 1u << it->sub;
	acc->v[acc->n].groups = acc->groups[acc->n];
	acc->n++;
	return 0;
}

static void
on_contact_rows(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct list_ask *a = arg;
	struct pgn_roster_contact *v = NULL;
	size_t n = 0;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: reading contacts: %s",
			res->errmsg);
		a->fn(res->error, 0, NULL, a->arg);
		goto out;
	}
	if (res->nrows > 0 &&
	    (v = calloc((size_t)res->nrows, sizeof(*v))) == NULL) {
		a->fn(-ENOMEM, 0, NULL, a->arg);
		goto out;
	}
	for (int i = 0; i < res->nrows; i++) {
		int sub = parse_sub(pgn_store_value(res, i, 1));
		const char *jid = pgn_store_value(res, i, 0);
		const char *groups = pgn_store_value(res, i, 2);
		if (sub < 0 || jid == NULL || (a->mask & (1u << sub)) == 0)
			continue;
		v[n].jid = jid;
		v[n].sub = 1u << sub;
		v[n].groups = groups != NULL ? groups : "";
		n++;
	}
	a->fn(0, n, v, a->arg);
out:
	free(v);
	free(a);
}

static int
svc_contacts(void *instance, const char *user, unsigned mask,
	     pgn_roster_list_fn fn, void *arg)
{
	struct rmod *rm = instance;
	const struct roster *r = loaded_roster(rm, user);
	struct list_ask *a;
	const char *host;
	char *username;
	int rc;

	if (r != NULL) {
		size_t max = pgn_map_count(r->items);
		struct list_acc acc = { .mask = mask };
		acc.v = calloc(max + 1, sizeof(*acc.v));
		acc.groups = calloc(max + 1, sizeof(*acc.groups));
		if (acc.v == NULL || acc.groups == NULL) {
			free(acc.v);
			free(acc.groups);
			return -ENOMEM;
		}
		pgn_map_foreach(r->items, collect_item, &acc);
		if (!acc.nomem)
			fn(0, acc.n, acc.v, arg);
		for (size_t i = 0; i < acc.n; i++)
			free(acc.groups[i]);
		free(acc.groups);
		free(acc.v);
		return acc.nomem ? -ENOMEM : 0;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return -ENOMEM;
	if ((username = split_user(user, &host)) == NULL) {
		free(a);
		return -ENOMEM;
	}
	a->mask = mask;
	a->fn = fn;
	a->arg = arg;
	const char *params[2] = { host, username };
	rc = pgn_store_query(pgn_server_store(rm->srv),
			     "SELECT jid, subscription, groups FROM roster "
			     "WHERE host = $1 AND username = $2",
			     2, params, 0, on_contact_rows, a);
	free(username);
	if (rc < 0) {
		free(a);
		return -ENOMEM;
	}
	return 0;
}

/* A question about one contact that the store answers: in mask and,
 * when groups is set, in one of them. */
struct contact_ask {
	unsigned mask;
	char *groups; /* NULL: any */
	pgn_roster_found_fn fn;
	void *arg;
};

static void
on_contact_row(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct contact_ask *a = arg;
	struct item it = { 0 };
	int sub, found = 0;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN, "mod_roster: reading a contact: %s",
			res->errmsg);
		a->fn(res->error, 0, a->arg);
		goto out;
	}
	sub = res->nrows > 0 ? parse_sub(pgn_store_value(res, 0, 0)) : -1;
	if (sub >= 0 && (a->mask & (1u << sub)) != 0) {
		if (groups_split(&it, pgn_store_value(res, 0, 1)) != 0) {
			a->fn(-ENOMEM, 0, a->arg);
			goto out;
		}
		found = a->groups == NULL || item_in_groups(&it, a->groups);
	}
	a->fn(0, found, a->arg);
out:
	for (size_t i = 0; i < it.ngroups; i++)
		free(it.groups[i]);
	free(it.groups);
	free(a->groups);
	free(a);
}

/* has_contact and in_groups: from the cache while it is loaded, else one
 * read, which the store runs after every write queued before. */
static int
ask_contact(struct rmod *rm, const char *user, const char *contact,
	    unsigned mask, const char *groups, pgn_roster_found_fn fn,
	    void *arg)
{
	const struct roster *r = loaded_roster(rm, user);
	struct contact_ask *a;
	const char *host;
	char *username;
	int rc;

	if (r != NULL) {
		const struct item *it = pgn_map_get(r->items, contact);
		fn(0,
		   it != NULL && (mask & (1u << it->sub)) != 0 &&
			   (groups == NULL || item_in_groups(it, groups)),
		   arg);
		return 0;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return -ENOMEM;
	if ((groups != NULL && (a->groups = strdup(groups)) == NULL) ||
	    (username = split_user(user, &host)) == NULL) {
		free(a->groups);
		free(a);
		return -ENOMEM;
	}
	a->mask = mask;
	a->fn = fn;
	a->arg = arg;
	const char *params[3] = { host, username, contact };
	rc = pgn_store_query(pgn_server_store(rm->srv),
			     "SELECT subscription, groups FROM roster WHERE "
			     "host = $1 AND username = $2 AND jid = $3",
			     3, params, 0, on_contact_row, a);
	free(username);
	if (rc < 0) {
		free(a->groups);
		free(a);
		return -ENOMEM;
	}
	return 0;
}

static int
svc_has_contact(void *instance, const char *user, const char *contact,
		unsigned mask, pgn_roster_found_fn fn, void *arg)
{
	return ask_contact(instance, user, contact, mask, NULL, fn, arg);
}

static int
svc_in_groups(void *instance, const char *user, const char *contact,
	      unsigned mask, const char *groups, pgn_roster_found_fn fn,
	      void *arg)
{
	return ask_contact(instance, user, contact, mask,
			   groups != NULL ? groups : "", fn, arg);
}

_Static_assert((1u << SUB_NONE) == PGN_SUB_NONE &&
		       (1u << SUB_TO) == PGN_SUB_TO &&
		       (1u << SUB_FROM) == PGN_SUB_FROM &&
		       (1u << SUB_BOTH) == PGN_SUB_BOTH,
	       "enum sub is the bit number of pigeon/roster.h's mask");

static const struct pgn_roster_service roster_service = {
	.has_contact = svc_has_contact,
	.contacts = svc_contacts,
	.in_groups = svc_in_groups,
};

static int
free_roster_cb(const char *key, uint64_t id, void *value, void *arg)
{
	(void)key, (void)id, (void)arg;
	roster_destroy(value);
	return 0;
}

static void
roster_unload(struct pgn_module *m)
{
	struct rmod *rm = pgn_module_data(m);
	if (rm == NULL)
		return;
	pgn_map_foreach(rm->users, free_roster_cb, NULL);
	pgn_map_free(rm->users);
	pgn_map_foreach(rm->removals, free_removal_cb, NULL);
	pgn_map_free(rm->removals);
	free(rm);
	pgn_module_set_data(m, NULL);
}

static int
roster_load(struct pgn_module *m)
{
	struct rmod *rm = calloc(1, sizeof(*rm));
	int rc;

	if (rm == NULL || (rm->users = pgn_map_new()) == NULL ||
	    (rm->removals = pgn_map_new()) == NULL) {
		if (rm != NULL)
			pgn_map_free(rm->users);
		free(rm);
		return -ENOMEM;
	}
	rm->m = m;
	rm->srv = pgn_module_server(m);
	rm->max_items = (int)pgn_module_opt_int(m, "max_items");
	pgn_module_set_data(m, rm);
	if ((rc = pgn_module_provide(m, PGN_ROSTER_SERVICE, &roster_service,
				     rm)) < 0)
		goto fail;
	return 0;
fail:
	roster_unload(m);
	return rc;
}

static const struct pgn_module_hook_def roster_hooks[] = {
	{"iq-get/bare/" NS_ROSTER ":query", on_roster_get, PGN_PRIO_HANDLER},
	{"iq-set/bare/" NS_ROSTER ":query", on_roster_set, PGN_PRIO_HANDLER},
	{"pre-presence/self", on_self_presence, PGN_PRIO_HANDLER},
	{"pre-presence/bare", on_out_presence, PGN_PRIO_HANDLER},
	{"pre-presence/full", on_out_presence, PGN_PRIO_HANDLER},
	{"pre-presence/host", on_out_presence, PGN_PRIO_HANDLER},
	{"presence/bare", on_in_presence, PGN_PRIO_HANDLER},
	{"presence/full", on_in_presence, PGN_PRIO_HANDLER},
	{"session-started", on_session_started, PGN_PRIO_HANDLER},
	{"session-ended", on_session_ended, PGN_PRIO_HANDLER},
	{"stream-features", on_features, PGN_PRIO_HANDLER},
	{"account-removing", on_account_removing, PGN_PRIO_HANDLER},
	{"account-removed", on_account_removed, PGN_PRIO_HANDLER},
	{NULL, NULL, 0},
};

static const struct pgn_module_opt roster_options[] = {
	{ .name = "max_items", .type = PGN_OPT_INT, .def = "1000", .min = 1,
	  .max = MAX_MAX_ITEMS, .doc = "contacts in one roster" },
	{ .name = NULL },
};

/* ejabberdctl's names; the HOST argument picks the instance. */
static const struct pgn_module_cmd roster_commands[] = {
	{ "add_rosteritem", 7, "LOCALUSER LOCALHOST USER HOST NICK GROUP SUBS",
	  "add USER@HOST to the roster of LOCALUSER@LOCALHOST (SUBS: none, "
	  "to, from, both)",
	  ctl_add, 2 },
	{ "delete_rosteritem", 4, "LOCALUSER LOCALHOST USER HOST",
	  "remove USER@HOST from the roster of LOCALUSER@LOCALHOST",
	  ctl_delete, 2 },
	{ "get_roster", 2, "USER HOST",
	  "print the roster of USER@HOST (jid, name, subscription, groups)",
	  ctl_get_roster, 2 },
	{ NULL, 0, NULL, NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_roster",
	.description = "Roster and presence (RFC 6121)",
	.options = roster_options,
	.hooks = roster_hooks,
	.commands = roster_commands,
	.load = roster_load,
	.unload = roster_unload,
};
