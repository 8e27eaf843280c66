/* XEP-0280: Message Carbons (urn:xmpp:carbons:2).
 *
 * A session opts in with <enable/> and out with <disable/> (§4, §5): a
 * flag in its session data.  Which messages are copied (§6, "possible
 * delivery rules", plus the payloads instant messaging clients send as
 * type normal): type chat; type normal with a <body/>, a receipt
 * (XEP-0184), a chat marker (XEP-0333) or an end-to-end encrypted
 * payload (OMEMO in either namespace, with or without a payload, so key
 * exchanges and heartbeats too; OpenPGP for XMPP, legacy OpenPGP): the
 * sender's other devices need them to follow the conversation.  Never:
 * groupchat, headline, error, anything marked <private/> (§8) or
 * <no-copy/> (XEP-0334), MUC private messages (§6), or what already is
 * a carbon.
 *
 * Sent carbons (§7), "pre-message/{host,bare,full}" at 40 (after the
 * blocking filter at 100 let the message through): a <sent/> copy to
 * every other carbons-enabled session of the sender.
 * Received carbons (§6), "message/{bare,full}" at 5 (after the inbound
 * filters, before the core delivers): a <received/> copy to every
 * carbons-enabled session of the recipient that the core's RFC 6121
 * delivery (src/core/router.c) will not give the original to.
 * Copies are written straight onto the sessions' streams: they are the
 * server's own and need no routing.
 *
 * A client may not forge carbons (§11: a copy is trusted because it comes
 * from the user's bare JID, which a client can address to itself): a
 * message from a client carrying <sent/> or <received/> is refused. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/log.h"
#include "pigeon/module.h"

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS "urn:xmpp:hints"
#define NS_RECEIPTS "urn:xmpp:receipts"
#define NS_MARKERS "urn:xmpp:chat-markers:0"
#define NS_AXOLOTL "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NS_OPENPGP "urn:xmpp:openpgp:0"
#define NS_PGP_LEGACY "jabber:x:encrypted"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"

struct carbons {
	struct pgn_module *m;
	struct pgn_server *srv;
};

static int
type_is(const struct pgn_stanza *st, const char *t)
{
	return st->type != NULL && strcmp(st->type, t) == 0;
}

static int
ns_is(const struct pgn_xml *el, const char *ns)
{
	const char *n = pgn_xml_ns(el);
	return n != NULL && strcmp(n, ns) == 0;
}

static int
is_carbon_payload(const struct pgn_xml *el)
{
	const char *name = pgn_xml_name(el);
	return ns_is(el, NS_CARBONS) &&
	       (strcmp(name, "sent") == 0 || strcmp(name, "received") == 0);
}

/* A copy of st is worth sending (see the top of the file). */
static int
eligible(const struct pgn_stanza *st)
{
	int chat = type_is(st, "chat"), content = 0;

	if (st->kind != PGN_STANZA_MESSAGE ||
	    (!chat && st->type != NULL && !type_is(st, "normal")))
		return 0;
	for (struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *name = pgn_xml_name(c);
		if (ns_is(c, NS_CARBONS) || ns_is(c, NS_MUC_USER) ||
		    (ns_is(c, NS_HINTS) && strcmp(name, "no-copy") == 0))
			return 0;
		if ((ns_is(c, PGN_NS_CLIENT) && strcmp(name, "body") == 0) ||
		    ns_is(c, NS_RECEIPTS) || ns_is(c, NS_MARKERS) ||
		    (strcmp(name, "encrypted") == 0 &&
		     (ns_is(c, NS_AXOLOTL) || ns_is(c, NS_OMEMO2))) ||
		    (strcmp(name, "openpgp") == 0 && ns_is(c, NS_OPENPGP)) ||
		    (strcmp(name, "x") == 0 && ns_is(c, NS_PGP_LEGACY)))
			content = 1;
	}
	return chat || content;
}

static int
enabled(const struct carbons *cb, const struct pgn_session *s)
{
	return pgn_session_get_data(s, cb->m) != NULL;
}

/* <message from=bare type=...><wrap xmlns=carbons><forwarded><st/>...,
 * or NULL on allocation failure.  The caller owns it and sets 'to'. */
static struct pgn_xml *
wrap(const struct pgn_stanza *st, const char *bare, const char *wrapper)
{
	struct pgn_xml *msg = pgn_xml_new(PGN_NS_CLIENT, "message");
	struct pgn_xml *w, *fwd, *copy;

	if (msg == NULL || pgn_xml_set_attr(msg, "from", bare) < 0 ||
	    (st->type != NULL && pgn_xml_set_attr(msg, "type", st->type) < 0))
		goto fail;
	if ((w = pgn_xml_add_child(msg, NS_CARBONS, wrapper)) == NULL ||
	    (fwd = pgn_xml_add_child(w, NS_FORWARD, "forwarded")) == NULL ||
	    (copy = pgn_xml_copy(st->xml)) == NULL)
		goto fail;
	pgn_xml_append(fwd, copy);
	return msg;
fail:
	pgn_xml_free(msg);
	return NULL;
}

/* Sends a copy of st to each carbons-enabled session of bare for which
 * skip() is false. */
static void
copy_to(struct carbons *cb, const struct pgn_stanza *st, const char *bare,
        const char *wrapper,
        int (*skip)(const struct pgn_session *, const void *), const void *arg)
{
	struct pgn_xml *msg = NULL;
	unsigned n = 0;

	for (struct pgn_session *s = pgn_user_sessions(cb->srv, bare);
	     s != NULL; s = pgn_session_next(s)) {
		const struct pgn_jid *jid = pgn_session_jid(s);
		if (jid == NULL || !enabled(cb, s) || skip(s, arg))
			continue;
		if (msg == NULL && (msg = wrap(st, bare, wrapper)) == NULL) {
			pgn_log(PGN_LOG_ERROR,
			        "mod_carbons: out of memory copying a "
			        "message of %s",
			        bare);
			return;
		}
		/* A closing stream (-EPIPE) just misses its copy. */
		if (pgn_xml_set_attr(msg, "to", jid->full) == 0 &&
		    pgn_session_send(s, msg) == 0)
			n++;
	}
	if (n > 0)
		pgn_log(PGN_LOG_DEBUG,
		        "mod_carbons: %s carbon of %s to %u "
		        "resource(s)",
		        wrapper, bare, n);
	pgn_xml_free(msg);
}

/* ---- sent carbons (§7) --------------------------------------------- */

static int
skip_origin(const struct pgn_session *s, const void *origin)
{
	return s == origin;
}

/* Refuses a client's forged carbon (§11), without echoing its payload:
 * an error from the user's own bare JID carrying <sent/> would look
 * like a carbon again. */
static void
refuse_forged(struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;
	struct pgn_stanza *err;
	struct pgn_xml *c, *next;

	pgn_log(PGN_LOG_INFO, "mod_carbons: %s sent a forged carbon: refused",
	        st->from != NULL ? st->from->full : "?");
	if (type_is(st, "error") || ev->origin == NULL)
		return; /* RFC 6120 §8.3.1: errors are not answered */
	err = pgn_stanza_error_reply(st, "modify", "not-acceptable", NULL);
	if (err == NULL)
		return;
	for (c = pgn_xml_first_child(err->xml); c != NULL; c = next) {
		next = pgn_xml_next(c);
		if (is_carbon_payload(c)) {
			pgn_xml_unlink(c);
			pgn_xml_free(c);
		}
	}
	pgn_session_send(ev->origin, err->xml);
	pgn_stanza_free(err);
}

static int
on_outbound(struct pgn_event *ev, void *arg)
{
	struct carbons *cb = arg;
	const struct pgn_stanza *st = ev->stanza;

	if (st->kind != PGN_STANZA_MESSAGE || st->from == NULL ||
	    st->from->node == NULL)
		return PGN_EVENT_PASS;
	for (struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c))
		if (is_carbon_payload(c)) {
			refuse_forged(ev);
			return PGN_EVENT_HANDLED;
		}
	/* To the user's own account: the other resources get the message
	 * itself or a <received/> copy on the way in. */
	if (st->to != NULL && strcmp(st->to->bare, st->from->bare) == 0)
		return PGN_EVENT_PASS;
	if (eligible(st))
		copy_to(cb, st, st->from->bare, "sent", skip_origin,
		        ev->origin);
	return PGN_EVENT_PASS;
}

/* ---- received carbons (§6) ----------------------------------------- */

struct delivery {
	const struct pgn_session *full;   /* the addressed resource, or */
	int best;                         /* the priority the core picks */
	const struct pgn_session *origin; /* the sender, if the user */
};

static int
skip_delivered(const struct pgn_session *s, const void *arg)
{
	const struct delivery *d = arg;
	if (s == d->origin)
		return 1;
	if (d->full != NULL)
		return s == d->full;
	return d->best >= 0 && pgn_session_available(s) &&
	       pgn_session_priority(s) == d->best;
}

/* Which sessions the core delivers st to: a bound full
 * JID gets it, else (RFC 6121 §8.5.2, §8.5.3.2) the available resources
 * of the highest non-negative priority (pgn_user_top_priority, the
 * router's own rule). */
static void
compute_delivery(struct carbons *cb, const struct pgn_stanza *st,
                 struct delivery *d)
{
	d->full = NULL;
	d->best = pgn_user_top_priority(cb->srv, st->to->bare);
	for (struct pgn_session *s = pgn_user_sessions(cb->srv, st->to->bare);
	     st->to->resource != NULL && s != NULL; s = pgn_session_next(s)) {
		const struct pgn_jid *jid = pgn_session_jid(s);
		if (jid != NULL && jid->resource != NULL &&
		    strcmp(jid->resource, st->to->resource) == 0)
			d->full = s;
	}
}

/* §8: the receiving server removes <private/> before delivery. */
static void
strip_private(struct pgn_stanza *st)
{
	struct pgn_xml *c, *next;
	for (c = pgn_xml_first_child(st->xml); c != NULL; c = next) {
		next = pgn_xml_next(c);
		if (ns_is(c, NS_CARBONS) &&
		    strcmp(pgn_xml_name(c), "private") == 0) {
			pgn_xml_unlink(c);
			pgn_xml_free(c);
		}
	}
}

static int
on_inbound(struct pgn_event *ev, void *arg)
{
	struct carbons *cb = arg;
	struct pgn_stanza *st = ev->stanza;
	struct delivery d;

	if (st->to == NULL || st->to->node == NULL)
		return PGN_EVENT_PASS;
	if (eligible(st)) {
		compute_delivery(cb, st, &d);
		d.origin = ev->origin;
		copy_to(cb, st, st->to->bare, "received", skip_delivered, &d);
	}
	if (st->kind == PGN_STANZA_MESSAGE)
		strip_private(st);
	return PGN_EVENT_PASS;
}

/* ---- enable / disable (§4, §5) ------------------------------------- */

/* Only the user's own session may switch its carbons. */
static struct pgn_session *
own_session(struct pgn_event *ev)
{
	const struct pgn_stanza *st = ev->stanza;
	const struct pgn_jid *jid;

	if (ev->origin == NULL || st->from == NULL || st->to == NULL ||
	    (jid = pgn_session_jid(ev->origin)) == NULL ||
	    strcmp(st->from->bare, st->to->bare) != 0 ||
	    strcmp(jid->full, st->from->full) != 0) {
		pgn_event_error(ev, "cancel", "forbidden");
		return NULL;
	}
	return ev->origin;
}

static int
on_enable(struct pgn_event *ev, void *arg)
{
	struct carbons *cb = arg;
	struct pgn_session *s = own_session(ev);
	int *flag;

	if (s == NULL)
		return PGN_EVENT_HANDLED;
	/* §9.1: enabling twice is not an error. */
	if (!enabled(cb, s)) {
		if ((flag = malloc(sizeof(*flag))) == NULL ||
		    pgn_session_set_data(s, cb->m, flag, free) < 0) {
			free(flag);
			pgn_event_error(ev, "wait", "resource-constraint");
			return PGN_EVENT_HANDLED;
		}
		*flag = 1;
	}
	pgn_event_reply(ev, NULL);
	return PGN_EVENT_HANDLED;
}

static int
on_disable(struct pgn_event *ev, void *arg)
{
	struct carbons *cb = arg;
	struct pgn_session *s = own_session(ev);

	if (s == NULL)
		return PGN_EVENT_HANDLED;
	/* Clearing cannot fail. */
	(void)pgn_session_set_data(s, cb->m, NULL, NULL);
	pgn_event_reply(ev, NULL);
	return PGN_EVENT_HANDLED;
}

/* ---- module ---------------------------------------------------------- */

static void
carbons_unload(struct pgn_module *m)
{
	free(pgn_module_data(m));
	pgn_module_set_data(m, NULL);
}

static int
carbons_load(struct pgn_module *m)
{
	struct carbons *cb = calloc(1, sizeof(*cb));
	int rc;

	if (cb == NULL)
		return -ENOMEM;
	cb->m = m;
	cb->srv = pgn_module_server(m);
	pgn_module_set_data(m, cb);
	if ((rc = pgn_module_add_feature(m, NS_CARBONS)) < 0) {
		carbons_unload(m);
		return rc;
	}
	return 0;
}

static const struct pgn_module_hook_def carbons_hooks[] = {
	/* Sent (§7) */
	{ "pre-message/host", on_outbound, PGN_PRIO_COPY_SENT },
	{ "pre-message/bare", on_outbound, PGN_PRIO_COPY_SENT },
	{ "pre-message/full", on_outbound, PGN_PRIO_COPY_SENT },
	/* Received (§6) */
	{ "message/bare", on_inbound, PGN_PRIO_COPY },
	{ "message/full", on_inbound, PGN_PRIO_COPY },
	{ "iq-set/bare/" NS_CARBONS ":enable", on_enable, PGN_PRIO_HANDLER },
	{ "iq-set/bare/" NS_CARBONS ":disable", on_disable, PGN_PRIO_HANDLER },
	{ NULL, NULL, 0 },
};

const struct pgn_module_def pgn_module_def = {
        .abi = PGN_MODULE_ABI,
        .name = "mod_carbons",
        .description = "XEP-0280 Message Carbons",
        .hooks = carbons_hooks,
        .load = carbons_load,
        .unload = carbons_unload,
};
