/* XEP-0352: Client State Indication (urn:xmpp:csi:0).
 *
 * A client that says <inactive/> (§3.2, a nonza after binding) gets a
 * filter in its session's output chain (pgn_session_add_filter) that
 * holds back what can wait, so that a phone's radio sleeps longer:
 *   - presence updates (available/unavailable) wait, and only the newest
 *     one per sender full JID is kept (an older queued one is dropped);
 *   - PEP notifications of new items (XEP-0163: a pubsub#event with
 *     <items><item/></items>) wait, and only the newest per (sender,
 *     node) is kept, as for presence: for PEP's one-current-item nodes
 *     (avatar, nick, device list) that is all the client needs when it
 *     wakes (ejabberd's queue_pep does the same); retractions, purges
 *     and deletions are kept, in order;
 *   - messages that carry only chat states (XEP-0085) are dropped;
 *   - other messages without content a person waits for (receipts,
 *     markers, PEP events, headlines...) wait;
 *   - what is urgent goes at once, after everything queued, so that the
 *     client sees stanzas in the order the server produced them: messages
 *     with a body or an encrypted payload, Jingle message initiation
 *     (calls), subscription management presence, every iq, every error.
 * A carbon (XEP-0280) or an archive result (XEP-0313) is judged by the
 * message it forwards.  <active/> flushes the queue in order before the
 * next stanza of the client is processed (§5.1, in-order processing: the
 * core fires nonzas in stream order).  The queue is bounded (option
 * max_queue stanzas, and QUEUE_BYTES): past that it is flushed.
 *
 * Nothing is lost: when the session ends, queued messages are handed to
 * pgn_event_undelivered() (offline storage); presence is dropped, as the
 * router drops presence for a resource that is gone, and so are carbons
 * and archive results (copies whose originals went where they belonged).
 * While stream management keeps a session hibernated, the filter goes on
 * working (an urgent stanza flushes the queue into the SM queue), so the
 * order is the same when the client resumes.
 *
 * Stream management (XEP-0198): the CSI state belongs to the session, and
 * a resumed stream continues that session (XEP-0198 §5), so the state and
 * the queue survive resumption.  XEP-0352 §4 ("a stream always begins in
 * 'active' state") concerns new streams; a client whose state changed
 * while it was disconnected says so again after resuming. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"

#define NS_CSI "urn:xmpp:csi:0"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_MAM2 "urn:xmpp:mam:2"
#define NS_MAM1 "urn:xmpp:mam:1"
#define NS_AXOLOTL "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NS_OPENPGP "urn:xmpp:openpgp:0"
#define NS_PGP_LEGACY "jabber:x:encrypted"
#define NS_JMI "urn:xmpp:jingle-message:0"
#define NS_SID "urn:xmpp:sid:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define NS_PUBSUB_EVENT "http://jabber.org/protocol/pubsub#event"

#define MAX_MAX_QUEUE 10000
/* Bytes of queued stanzas (serialised) past which the queue is flushed:
 * far below the output buffer limit that closes a stream (4 MiB). */
#define QUEUE_BYTES (512 * 1024)

enum verdict {
	URGENT = 0, /* flush the queue, then send */
	HOLD,       /* queue */
	DROP,       /* drop (chat states only) */
};

struct csi {
	struct pgn_module *m;
	struct pgn_server *srv;
	size_t max_queue;
};

/* One queued stanza. */
struct item {
	struct pgn_xml *xml; /* owned copy */
	char *key; /* the dedup key (presence: the sender; a PEP item
		    * notification: "sender\nnode"), else NULL */
	size_t bytes;
	struct item *prev;
	struct item *next;
};

/* Per-session state (session data; the filter's argument). */
struct csi_sess {
	struct csi *csi;
	int inactive;
	struct item *head;
	struct item *tail;
	size_t n;
	size_t bytes;
	struct pgn_map *presence; /* dedup key -> its queued stanza */
	uint64_t dropped;         /* chat states and superseded presence */
};

/* ---- which stanzas are urgent ---------------------------------------- */

static int
str_eq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static int
is_client_ns(const char *ns)
{
	return ns == NULL || strcmp(ns, PGN_NS_CLIENT) == 0;
}

/* A payload a person waits for: a body, an encrypted message, a call.
 * Every OMEMO <encrypted/> counts, with or without a <payload/>: a key
 * exchange or an empty (heartbeat, session repair) message completes a
 * session that the peer's next message needs, the server cannot tell
 * an urn:xmpp:omemo:2 heartbeat (it has a payload) from a message, and
 * they are rare (XEP-0384 sends one per 53 messages at most), so holding
 * them would save little (doc/e2e.md). */
static int
is_urgent_payload(const struct pgn_xml *c)
{
	const char *ns = pgn_xml_ns(c), *name = pgn_xml_name(c);

	if (is_client_ns(ns))
		return str_eq(name, "body");
	return (str_eq(name, "encrypted") &&
	        (str_eq(ns, NS_AXOLOTL) || str_eq(ns, NS_OMEMO2))) ||
	       (str_eq(name, "openpgp") && str_eq(ns, NS_OPENPGP)) ||
	       (str_eq(name, "x") && str_eq(ns, NS_PGP_LEGACY)) ||
	       str_eq(ns, NS_JMI);
}

/* Children that say nothing by themselves next to a chat state. */
static int
is_incidental(const struct pgn_xml *c)
{
	const char *ns = pgn_xml_ns(c);

	if (is_client_ns(ns))
		return str_eq(pgn_xml_name(c), "thread");
	return str_eq(ns, NS_SID) || str_eq(ns, NS_DELAY) ||
	       str_eq(ns, NS_HINTS);
}

/* The message a carbon or an archive result forwards, or NULL. */
static const struct pgn_xml *
forwarded_message(const struct pgn_xml *c)
{
	const char *ns = pgn_xml_ns(c), *name = pgn_xml_name(c);
	const struct pgn_xml *fwd;

	if (!((str_eq(ns, NS_CARBONS) &&
	       (str_eq(name, "sent") || str_eq(name, "received"))) ||
	      ((str_eq(ns, NS_MAM2) || str_eq(ns, NS_MAM1)) &&
	       str_eq(name, "result"))))
		return NULL;
	if ((fwd = pgn_xml_child(c, NS_FORWARD, "forwarded")) == NULL)
		return NULL;
	return pgn_xml_child(fwd, PGN_NS_CLIENT, "message");
}

static enum verdict
judge_message(const struct pgn_xml *xml, int depth)
{
	int chatstate = 0, other = 0;

	if (str_eq(pgn_xml_attr(xml, "type"), "error"))
		return URGENT;
	for (const struct pgn_xml *c = pgn_xml_first_child(xml); c != NULL;
	     c = pgn_xml_next(c)) {
		const struct pgn_xml *inner;

		if (is_urgent_payload(c))
			return URGENT;
		/* An archive result answers the client's own query (the iq
		 * result that follows is urgent anyway); a carbon is worth
		 * what the copied message is worth. */
		if (depth == 0 && (inner = forwarded_message(c)) != NULL) {
			if (str_eq(pgn_xml_ns(c), NS_MAM2) ||
			    str_eq(pgn_xml_ns(c), NS_MAM1))
				return URGENT;
			return judge_message(inner, 1);
		}
		if (str_eq(pgn_xml_ns(c), NS_CHATSTATES))
			chatstate = 1;
		else if (!is_incidental(c))
			other = 1;
	}
	return chatstate && !other ? DROP : HOLD;
}

/* RFC 6121 §4: presence without a type or 'unavailable' is an update that
 * the next one supersedes; subscription management (§3) and errors are
 * rare and change what the user must decide on. */
static enum verdict
judge_presence(const struct pgn_xml *xml)
{
	const char *type = pgn_xml_attr(xml, "type");

	return type == NULL || strcmp(type, "unavailable") == 0 ? HOLD : URGENT;
}

static enum verdict
judge(const struct pgn_xml *xml)
{
	const char *name = pgn_xml_name(xml);

	if (!is_client_ns(pgn_xml_ns(xml)))
		return URGENT;
	if (strcmp(name, "message") == 0)
		return judge_message(xml, 0);
	if (strcmp(name, "presence") == 0)
		return judge_presence(xml);
	return URGENT; /* iq, and anything else */
}

/* ---- the queue ------------------------------------------------------- */

static void
item_free(struct item *it)
{
	if (it == NULL)
		return;
	pgn_xml_free(it->xml);
	free(it->key);
	free(it);
}

static void
unlink_item(struct csi_sess *cs, struct item *it)
{
	if (it->prev != NULL)
		it->prev->next = it->next;
	else
		cs->head = it->next;
	if (it->next != NULL)
		it->next->prev = it->prev;
	else
		cs->tail = it->prev;
	it->prev = it->next = NULL;
	cs->n--;
	cs->bytes -= it->bytes;
	if (it->key != NULL && cs->presence != NULL &&
	    pgn_map_get(cs->presence, it->key) == it)
		pgn_map_del(cs->presence, it->key);
}

/* Writes the queue to the stream in order.  A stanza the stream refuses
 * (it is closing) stays queued with the ones after it: "session-ended"
 * hands them on.  0, or the error of the refused write. */
static int
flush(struct pgn_session *s, struct csi_sess *cs)
{
	size_t n = 0;
	int rc = 0;

	while (cs->head != NULL) {
		struct item *it = cs->head;
		if ((rc = pgn_session_send_direct(s, it->xml)) != 0)
			break;
		unlink_item(cs, it);
		item_free(it);
		n++;
	}
	if (n > 0)
		pgn_log(PGN_LOG_DEBUG,
		        "session %" PRIu64 ": csi flushed %zu stanza(s)",
		        pgn_session_id(s), n);
	return rc;
}

/* The dedup key of a held stanza (malloc'd; see struct item), or NULL
 * with *nomem 0 when it has none. */
static char *
dedup_key(const struct pgn_xml *xml, int *nomem)
{
	const char *from = pgn_xml_attr(xml, "from");
	const struct pgn_xml *ev, *items, *c;
	const char *node;
	char *key;
	int has_item = 0;

	*nomem = 0;
	if (strcmp(pgn_xml_name(xml), "presence") == 0) {
		key = strdup(from != NULL ? from : "");
		*nomem = key == NULL;
		return key;
	}
	if ((ev = pgn_xml_child(xml, NS_PUBSUB_EVENT, "event")) == NULL ||
	    (items = pgn_xml_child(ev, NS_PUBSUB_EVENT, "items")) == NULL ||
	    (node = pgn_xml_attr(items, "node")) == NULL || from == NULL)
		return NULL;
	for (c = pgn_xml_first_child(items); c != NULL; c = pgn_xml_next(c)) {
		if (strcmp(pgn_xml_name(c), "item") != 0)
			return NULL; /* a retraction: kept */
		has_item = 1;
	}
	if (!has_item)
		return NULL;
	/* A newline is in no JID: no clash with presence keys. */
	size_t fl = strlen(from), nl = strlen(node);
	if ((key = malloc(fl + nl + 2)) == NULL) {
		*nomem = 1;
		return NULL;
	}
	memcpy(key, from, fl);
	key[fl] = '\n';
	memcpy(key + fl + 1, node, nl + 1);
	return key;
}

/* Queues a copy of xml.  0, or -ENOMEM (nothing queued). */
static int
enqueue(struct csi_sess *cs, const struct pgn_xml *xml)
{
	struct item *it = calloc(1, sizeof(*it));
	struct item *old;
	int nomem;
	char *text = NULL;

	if (it == NULL || (it->xml = pgn_xml_copy(xml)) == NULL ||
	    (text = pgn_xml_to_string(xml, PGN_NS_CLIENT)) == NULL)
		goto fail;
	it->bytes = strlen(text);
	free(text);
	it->key = dedup_key(xml, &nomem);
	if (nomem)
		goto fail;
	if (it->key != NULL) {
		if (cs->presence == NULL &&
		    (cs->presence = pgn_map_new()) == NULL)
			goto fail;
		/* The newest presence of a sender (PEP item of a node)
		 * supersedes the queued one; it takes its place at the end,
		 * after what came between. */
		if ((old = pgn_map_get(cs->presence, it->key)) != NULL) {
			unlink_item(cs, old);
			item_free(old);
			cs->dropped++;
		}
		if (pgn_map_set(cs->presence, it->key, it) != 0)
			goto fail;
	}
	it->prev = cs->tail;
	if (cs->tail != NULL)
		cs->tail->next = it;
	else
		cs->head = it;
	cs->tail = it;
	cs->n++;
	cs->bytes += it->bytes;
	return 0;
fail:
	item_free(it);
	return -ENOMEM;
}

static void
csi_sess_free(void *p)
{
	struct csi_sess *cs = p;

	if (cs == NULL)
		return;
	while (cs->head != NULL) {
		struct item *it = cs->head;
		unlink_item(cs, it);
		item_free(it);
	}
	pgn_map_free(cs->presence);
	free(cs);
}

/* ---- the send filter ------------------------------------------------- */

static int
csi_filter(struct pgn_session *s, const struct pgn_xml *xml, void *arg)
{
	struct csi_sess *cs = arg;
	enum verdict v;

	if (!cs->inactive) {
		/* Only left over by a flush the stream refused. */
		if (cs->head != NULL)
			(void)flush(s, cs);
		return 0;
	}
	v = judge(xml);
	if (v == DROP) {
		cs->dropped++;
		return 1;
	}
	if (v == HOLD && enqueue(cs, xml) == 0) {
		if (cs->n >= cs->csi->max_queue || cs->bytes >= QUEUE_BYTES)
			(void)flush(s, cs);
		return 1;
	}
	/* Urgent (or not queued for lack of memory): what waits goes
	 * first, then the core writes this one. */
	(void)flush(s, cs);
	return 0;
}

/* ---- events ---------------------------------------------------------- */

static int
on_features(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *f = pgn_event_client_features(ev);

	(void)arg;
	if (f != NULL && pgn_xml_add_child(f, NS_CSI, "csi") == NULL)
		pgn_log(PGN_LOG_WARN, "mod_csi: out of memory");
	return PGN_EVENT_PASS;
}

static int
on_inactive(struct pgn_event *ev, void *arg)
{
	struct csi *csi = arg;
	struct pgn_session *s = ev->origin;
	struct csi_sess *cs;

	if (s == NULL)
		return PGN_EVENT_PASS;
	if ((cs = pgn_session_get_data(s, csi->m)) == NULL) {
		if ((cs = calloc(1, sizeof(*cs))) == NULL ||
		    pgn_session_set_data(s, csi->m, cs, csi_sess_free) != 0) {
			/* Staying active is always correct (§4). */
			free(cs);
			pgn_log(PGN_LOG_WARN,
			        "session %" PRIu64 ": csi: out of memory",
			        pgn_session_id(s));
			return PGN_EVENT_HANDLED;
		}
		cs->csi = csi;
		/* After the data: setting data drops this module's filters.
		 * Without the filter the session stays active (§4). */
		if (pgn_session_add_filter(s, csi->m, PGN_FILTER_PRIO_CSI,
		                           csi_filter, cs) != 0) {
			pgn_session_set_data(s, csi->m, NULL, NULL);
			return PGN_EVENT_HANDLED;
		}
	}
	if (!cs->inactive)
		pgn_log(PGN_LOG_DEBUG, "session %" PRIu64 ": csi inactive",
		        pgn_session_id(s));
	cs->inactive = 1;
	return PGN_EVENT_HANDLED;
}

static int
on_active(struct pgn_event *ev, void *arg)
{
	struct csi *csi = arg;
	struct pgn_session *s = ev->origin;
	struct csi_sess *cs;

	if (s == NULL)
		return PGN_EVENT_PASS;
	if ((cs = pgn_session_get_data(s, csi->m)) != NULL && cs->inactive) {
		cs->inactive = 0;
		pgn_log(PGN_LOG_DEBUG,
		        "session %" PRIu64 ": csi active (%zu queued, %" PRIu64
		        " dropped)",
		        pgn_session_id(s), cs->n, cs->dropped);
		/* §5.1: before the client's next stanza is processed. */
		(void)flush(s, cs);
	}
	return PGN_EVENT_HANDLED;
}

static int
on_session_resumed(struct pgn_event *ev, void *arg)
{
	struct csi *csi = arg;
	struct csi_sess *cs;

	/* The state is kept (see the top of the file); only what a refused
	 * flush left behind while active is written now. */
	if (ev->origin != NULL &&
	    (cs = pgn_session_get_data(ev->origin, csi->m)) != NULL &&
	    !cs->inactive && cs->head != NULL)
		(void)flush(ev->origin, cs);
	return PGN_EVENT_PASS;
}

/* A carbon or an archive result was a copy for this session only: the
 * original went where it belonged. */
static int
only_a_copy(const struct pgn_xml *xml)
{
	for (const struct pgn_xml *c = pgn_xml_first_child(xml); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *ns = pgn_xml_ns(c);
		if (str_eq(ns, NS_CARBONS) || str_eq(ns, NS_MAM2) ||
		    str_eq(ns, NS_MAM1))
			return 1;
	}
	return 0;
}

static int
on_session_ended(struct pgn_event *ev, void *arg)
{
	struct csi *csi = arg;
	struct csi_sess *cs;
	size_t handed = 0;

	if (ev->origin == NULL ||
	    (cs = pgn_session_get_data(ev->origin, csi->m)) == NULL)
		return PGN_EVENT_PASS;
	while (cs->head != NULL) {
		struct item *it = cs->head;
		struct pgn_stanza *st;
		int bad = 0;

		unlink_item(cs, it);
		if (strcmp(pgn_xml_name(it->xml), "message") != 0 ||
		    only_a_copy(it->xml)) {
			item_free(it);
			continue;
		}
		/* Offline storage, or an error to the sender. */
		st = pgn_stanza_new(it->xml, &bad);
		it->xml = NULL;
		item_free(it);
		if (st == NULL) {
			pgn_log(PGN_LOG_WARN,
			        "session %" PRIu64 ": csi: a queued message "
			        "could not be handed on (%s)",
			        pgn_session_id(ev->origin),
			        bad ? "bad address" : "out of memory");
			continue;
		}
		pgn_event_undelivered(ev, st);
		handed++;
	}
	if (handed > 0)
		pgn_log(PGN_LOG_DEBUG,
		        "session %" PRIu64 ": csi handed %zu queued "
		        "message(s) on",
		        pgn_session_id(ev->origin), handed);
	return PGN_EVENT_PASS;
}

/* ---- module ---------------------------------------------------------- */

static void
csi_unload(struct pgn_module *m)
{
	free(pgn_module_data(m));
	pgn_module_set_data(m, NULL);
}

static int
csi_load(struct pgn_module *m)
{
	struct csi *csi;

	if ((csi = calloc(1, sizeof(*csi))) == NULL)
		return -ENOMEM;
	csi->m = m;
	csi->srv = pgn_module_server(m);
	csi->max_queue = (size_t)pgn_module_opt_int(m, "max_queue");
	pgn_module_set_data(m, csi);
	return 0;
}

static const struct pgn_module_opt csi_options[] = {
	{ .name = "max_queue", .type = PGN_OPT_INT, .def = "200", .min = 1,
	  .max = MAX_MAX_QUEUE,
	  .doc = "messages held for an inactive client before a flush" },
	{ .name = NULL },
};

static const struct pgn_module_hook_def csi_hooks[] = {
	{ "stream-features", on_features, PGN_PRIO_HANDLER },
	{ "nonza/" NS_CSI ":inactive", on_inactive, PGN_PRIO_HANDLER },
	{ "nonza/" NS_CSI ":active", on_active, PGN_PRIO_HANDLER },
	{ "session-resumed", on_session_resumed, PGN_PRIO_HANDLER },
	{ "session-ended", on_session_ended, PGN_PRIO_HANDLER },
	{ NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
        .abi = PGN_MODULE_ABI,
        .name = "mod_csi",
        .description = "Client State Indication (XEP-0352)",
        .options = csi_options,
        .hooks = csi_hooks,
        .load = csi_load,
        .unload = csi_unload,
};
