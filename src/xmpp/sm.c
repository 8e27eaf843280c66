/* Stream management (XEP-0198): acknowledgements both ways, the queue of
 * stanzas the client has not acknowledged, hibernation and resumption.
 * Design notes: doc/architecture.md, "Stream management".
 *
 * Outbound: every stanza written to a session with stream management is
 * also kept, serialised, in sm->queue until the client's <a h=.../> covers
 * it: a filter of the session's output chain keeps the bytes of each
 * stanza as the connection wrote them (no second serialisation).  If the
 * session ends for good, what is still queued is handed back to the router
 * as undelivered (messages to offline storage), so nothing the client did
 * not confirm is lost.
 *
 * Inbound: the client's stanzas are numbered.  One counts as handled (and
 * is acknowledged) only once its routing is over: holds (pgn_event_hold)
 * and ack tickets (pgn_event_ack_ticket) taken while routing it keep a
 * reference on its number, so a message is acknowledged only when the
 * offline store or the archive has committed it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "host.h"
#include "pigeon/log.h"
#include "pigeon/map.h"
#include "pigeon/module.h"
#include "router.h"
#include "server.h"
#include "stream.h"

#define NS_SM "urn:xmpp:sm:3"
/* How long a resuming stream waits for the old session's stanzas to be
 * handled (their storage) before answering with what is handled. */
#define RESUME_WAIT_MS 5000

struct sm_item {
	struct sm_item *next;
	size_t len;
	char data[];
};

/* A client stanza whose routing is not over: its number and the holds
 * and tickets on it (plus one while it is being routed). */
struct sm_pend {
	uint32_t seq;
	uint32_t refs;
};

/* <r/>s waiting for the stanzas received before them: n requests that
 * came when `upto` stanzas had been received.  Requests with no stanza
 * between them share one entry, so the list grows only with stanzas
 * still pending, and at most to MAX_WANT entries (past that the newest
 * entry takes the later requests, which are then answered a little
 * later, never dropped). */
struct sm_want {
	uint32_t upto;
	uint32_t n;
};
#define MAX_WANT 256

struct pgn_sm {
	struct pgn_sfilter filter; /* in the session's output chain */
	/* outbound */
	struct sm_item *head, **tail;
	unsigned nqueued;
	size_t qbytes;        /* the bytes of the queued stanzas */
	uint32_t acked;       /* the client's last h */
	unsigned r_pending : 1; /* we sent <r/> and no <a/> came yet */
	/* inbound */
	uint32_t received;    /* stanzas received */
	struct sm_pend *pend; /* sorted by seq */
	unsigned npend, cpend;
	struct sm_want *want; /* <r/>s waiting for pending ones, in order */
	unsigned nwant, cwant;
	/* resumption */
	unsigned resumable : 1;
	unsigned timeout;     /* seconds */
	uint64_t waiter;      /* a resuming stream waits for pend to drain */
	char id[33];
};

struct pgn_ack_ticket {
	struct pgn_server *srv;
	struct pgn_route_ctx ctx;
};

/* ---- writing ------------------------------------------------------------ */

static void
send_raw(struct pgn_session *s, const char *fmt, uint32_t n)
{
	char buf[160];
	int len = snprintf(buf, sizeof(buf), fmt, (unsigned long)n);

	if (len > 0 && (size_t)len < sizeof(buf))
		pgn_stream_send_raw(s, buf, (size_t)len);
}

static void
send_failed(struct pgn_session *s, const char *cond)
{
	char buf[200];
	int len = snprintf(buf, sizeof(buf),
			   "<failed xmlns='" NS_SM "'><%s xmlns='" PGN_NS_STANZAS
			   "'/></failed>",
			   cond);

	pgn_stream_send_raw(s, buf, (size_t)len);
}

static uint32_t
handled(const struct pgn_sm *sm)
{
	return sm->npend > 0 ? sm->pend[0].seq - 1 : sm->received;
}

/* ---- the outbound queue -------------------------------------------------- */

/* The bytes queued for the account of s over all its sessions. */
static size_t
account_bytes(const struct pgn_session *s)
{
	size_t n = 0;

	if (s->jid == NULL)
		return s->sm->qbytes;
	for (const struct pgn_session *r = pgn_router_sessions(s->srv,
							       s->jid->bare);
	     r != NULL; r = r->next_res)
		if (r->sm != NULL)
			n += r->sm->qbytes;
	return n;
}

int
pgn_sm_full(struct pgn_session *s)
{
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	struct pgn_sm *sm = s->sm;
	const char *why;

	if (sm == NULL || !pgn_stream_bound(s))
		return 0;
	if (sm->nqueued >= lim->max_unacked)
		why = "too many unacknowledged stanzas";
	else if (sm->qbytes >= lim->max_unacked_bytes)
		why = "too many unacknowledged bytes";
	else if (account_bytes(s) >= lim->max_unacked_bytes_per_account)
		why = "too many unacknowledged bytes for the account";
	else
		return 0;
	/* A client that never acknowledges must not make us keep
	 * everything.  The session ends for good (no hibernation: its
	 * queue is what is too big), and the queue goes back to the router
	 * now, so that it is stored before the stanza that found it full
	 * and everything after it (offline storage keeps the order). */
	pgn_log(PGN_LOG_INFO, "session %llu: %s (%u stanzas, %zu bytes)",
		(unsigned long long)s->id, why, sm->nqueued, sm->qbytes);
	pgn_sm_ended(s);
	if (s->state == PGN_ST_HIBERNATED)
		pgn_stream_kick(s); /* ends it from the loop */
	else
		pgn_stream_error(s, "resource-constraint", why);
	return 1;
}

static int
queue_add(struct pgn_session *s, struct sm_item *it)
{
	struct pgn_sm *sm = s->sm;

	it->next = NULL;
	*sm->tail = it;
	sm->tail = &it->next;
	sm->nqueued++;
	sm->qbytes += it->len;
	/* One request per round trip: under load, one <a/> then covers
	 * many stanzas. */
	pgn_sm_request_ack(s);
	return 0;
}

void
pgn_sm_request_ack(struct pgn_session *s)
{
	struct pgn_sm *sm = s->sm;

	if (sm == NULL || s->state != PGN_ST_BOUND || sm->r_pending)
		return;
	pgn_stream_send_raw(s, "<r xmlns='" NS_SM "'/>",
			    sizeof("<r xmlns='" NS_SM "'/>") - 1);
	sm->r_pending = 1;
}

/* The output chain, before a stanza is written (direct sends too): over
 * the bounds the session ends without it. */
static int
filter_check(struct pgn_session *s, const struct pgn_xml *xml, void *arg)
{
	(void)xml;
	(void)arg;
	return pgn_sm_full(s) ? -EPIPE : 0;
}

/* The output chain, once the stanza is serialised: its bytes are kept
 * until acknowledged.  1 (kept) or -ENOMEM. */
static int
filter_keep(struct pgn_session *s, const struct pgn_conn_span *span,
	    void *arg)
{
	struct sm_item *it = malloc(sizeof(*it) + span->len);

	(void)arg;
	if (it == NULL)
		return -ENOMEM;
	it->len = span->len;
	if (pgn_conn_span_copy(span, it->data) != span->len) {
		free(it);
		return -ENOMEM;
	}
	queue_add(s, it);
	return 1;
}

int
pgn_sm_newly_acked(uint32_t acked, uint32_t h, unsigned nqueued,
		   unsigned *n)
{
	/* Counters are modulo 2^32 (§4): after 4294967295 comes 0, so the
	 * difference is taken in the same arithmetic. */
	uint32_t d = h - acked;

	if (d > nqueued)
		return -ERANGE;
	*n = d;
	return 0;
}

/* The client acknowledged h stanzas in all: drop them.  -ERANGE when h
 * covers more than we sent. */
static int
queue_ack(struct pgn_sm *sm, uint32_t h)
{
	unsigned n;

	if (pgn_sm_newly_acked(sm->acked, h, sm->nqueued, &n) != 0)
		return -ERANGE;
	while (n-- > 0) {
		struct sm_item *it = sm->head;
		sm->head = it->next;
		sm->qbytes -= it->len;
		free(it);
		sm->nqueued--;
	}
	if (sm->head == NULL)
		sm->tail = &sm->head;
	sm->acked = h;
	return 0;
}

/* ---- inbound counting ---------------------------------------------------- */

static struct pgn_sm *
sm_of(struct pgn_server *srv, uint64_t sid, struct pgn_session **sp)
{
	struct pgn_session *s = pgn_map_get_id(srv->sessions, sid);

	if (sp != NULL)
		*sp = s;
	return s != NULL && s->state != PGN_ST_DEAD ? s->sm : NULL;
}

void
pgn_ack_ref(struct pgn_server *srv, const struct pgn_route_ctx *ctx)
{
	struct pgn_sm *sm;

	if (ctx == NULL || ctx->ack_sid == 0 ||
	    (sm = sm_of(srv, ctx->ack_sid, NULL)) == NULL)
		return;
	for (unsigned i = 0; i < sm->npend; i++)
		if (sm->pend[i].seq == ctx->ack_seq) {
			sm->pend[i].refs++;
			return;
		}
}

/* The stanzas before the first pending one are handled now: answer a
 * waiting <r/>, and let a waiting resumption go on. */
static void
progress(struct pgn_session *s)
{
	struct pgn_sm *sm = s->sm;
	unsigned done = 0;

	/* Each waiting <r/> gets its own <a/> (§4), oldest first. */
	while (done < sm->nwant &&
	       (int32_t)(handled(sm) - sm->want[done].upto) >= 0 &&
	       s->state == PGN_ST_BOUND) {
		/* (A flood of requests ends at the output limit.) */
		for (uint32_t i = 0;
		     i < sm->want[done].n && s->state == PGN_ST_BOUND; i++)
			send_raw(s, "<a xmlns='" NS_SM "' h='%lu'/>",
				 handled(sm));
		done++;
	}
	if (done > 0) {
		memmove(sm->want, sm->want + done,
			(sm->nwant - done) * sizeof(*sm->want));
		sm->nwant -= done;
	}
	if (sm->waiter != 0 && sm->npend == 0) {
		struct pgn_session *w = pgn_stream_find(s->srv, sm->waiter);
		sm->waiter = 0;
		if (w != NULL)
			pgn_stream_kick(w);
	}
}

void
pgn_ack_unref(struct pgn_server *srv, const struct pgn_route_ctx *ctx)
{
	struct pgn_session *s;
	struct pgn_sm *sm;

	if (ctx == NULL || ctx->ack_sid == 0 ||
	    (sm = sm_of(srv, ctx->ack_sid, &s)) == NULL)
		return;
	for (unsigned i = 0; i < sm->npend; i++) {
		if (sm->pend[i].seq != ctx->ack_seq)
			continue;
		if (--sm->pend[i].refs > 0)
			return;
		memmove(&sm->pend[i], &sm->pend[i + 1],
			(sm->npend - i - 1) * sizeof(sm->pend[0]));
		sm->npend--;
		if (i == 0)
			progress(s);
		return;
	}
}

void
pgn_sm_stanza_begin(struct pgn_session *s, struct pgn_route_ctx *ctx)
{
	struct pgn_sm *sm = s->sm;
	uint32_t seq;

	*ctx = (struct pgn_route_ctx){ 0, 0 }; /* nothing to wait for */
	if (sm == NULL)
		return;
	seq = ++sm->received;
	if (sm->npend == sm->cpend) {
		unsigned n = sm->cpend ? sm->cpend * 2 : 8;
		struct sm_pend *p = realloc(sm->pend, n * sizeof(*p));
		if (p == NULL)
			return; /* counted as handled at once */
		sm->pend = p;
		sm->cpend = n;
	}
	sm->pend[sm->npend++] = (struct sm_pend){ seq, 1 };
	*ctx = (struct pgn_route_ctx){ s->id, seq };
}

void
pgn_sm_stanza_end(struct pgn_session *s, const struct pgn_route_ctx *ctx)
{
	pgn_ack_unref(s->srv, ctx);
}

struct pgn_ack_ticket *
pgn_event_ack_ticket(struct pgn_event *ev)
{
	const struct pgn_route_ctx *ctx = pgn_event_ctx(ev);
	struct pgn_ack_ticket *t;

	if (ev->server == NULL || ctx->ack_sid == 0 ||
	    (t = malloc(sizeof(*t))) == NULL)
		return NULL;
	t->srv = ev->server;
	t->ctx = *ctx;
	pgn_ack_ref(t->srv, &t->ctx);
	return t;
}

void
pgn_ack_ticket_done(struct pgn_ack_ticket *t)
{
	if (t == NULL)
		return;
	pgn_ack_unref(t->srv, &t->ctx);
	free(t);
}

/* ---- module queries -------------------------------------------------------- */

int
pgn_session_hibernating(const struct pgn_session *s)
{
	return s->state == PGN_ST_HIBERNATED;
}

unsigned
pgn_session_unacked(const struct pgn_session *s)
{
	return s->sm != NULL ? s->sm->nqueued : 0;
}

size_t
pgn_sm_unacked_bytes(const struct pgn_session *s)
{
	return s->sm != NULL ? s->sm->qbytes : 0;
}

unsigned
pgn_sm_timeout(const struct pgn_session *s)
{
	return s->sm->timeout;
}

int
pgn_sm_resumable(const struct pgn_session *s)
{
	return s->sm != NULL && s->sm->resumable && s->state == PGN_ST_BOUND &&
	       s->srv->stopping == 0;
}

/* ---- elements ------------------------------------------------------------ */

static int
parse_h(const struct pgn_xml *xml, uint32_t *h)
{
	const char *v = pgn_xml_attr(xml, "h");
	char *end;
	unsigned long long n;

	if (v == NULL || *v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0' || n > 0xffffffffULL)
		return -EINVAL;
	*h = (uint32_t)n;
	return 0;
}

static struct pgn_sm *
sm_new(void)
{
	struct pgn_sm *sm = calloc(1, sizeof(*sm));

	if (sm != NULL)
		sm->tail = &sm->head;
	return sm;
}

int
pgn_sm_attach(struct pgn_session *s)
{
	if (s->sm == NULL && (s->sm = sm_new()) == NULL)
		return -ENOMEM;
	return 0;
}

uint32_t
pgn_sm_handled(const struct pgn_session *s)
{
	return s->sm != NULL ? handled(s->sm) : 0;
}

static void
handle_enable(struct pgn_session *s, const struct pgn_xml *xml)
{
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	const char *resume = pgn_xml_attr(xml, "resume");
	const char *max = pgn_xml_attr(xml, "max");
	struct pgn_sm *sm;
	char buf[200];
	int len;

	if (s->state != PGN_ST_BOUND || s->sm != NULL) {
		send_failed(s, "unexpected-request");
		return;
	}
	if ((sm = sm_new()) == NULL) {
		send_failed(s, "internal-server-error");
		return;
	}
	sm->timeout = lim->resume_timeout;
	/* Last in the chain: what a filter before it holds back (client
	 * state indication) is not sent yet, so not counted. */
	sm->filter.priority = PGN_FILTER_PRIO_LAST;
	sm->filter.always = 1;
	sm->filter.fn = filter_check;
	sm->filter.written = filter_keep;
	if (max != NULL) {
		long m = atol(max);
		if (m > 0 && (unsigned long)m < sm->timeout)
			sm->timeout = (unsigned)m;
	}
	if (resume != NULL &&
	    (strcmp(resume, "true") == 0 || strcmp(resume, "1") == 0) &&
	    sm->timeout > 0) {
		unsigned char rnd[16];
		randombytes_buf(rnd, sizeof(rnd));
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(sm->id + 2 * i, 3, "%02x", rnd[i]);
		if (pgn_map_set(s->srv->sm_ids, sm->id, s) == 0)
			sm->resumable = 1;
	}
	s->sm = sm;
	pgn_stream_add_filter(s, &sm->filter);
	if (sm->resumable)
		len = snprintf(buf, sizeof(buf),
			       "<enabled xmlns='" NS_SM
			       "' id='%s' resume='true' max='%u'/>",
			       sm->id, sm->timeout);
	else
		len = snprintf(buf, sizeof(buf),
			       "<enabled xmlns='" NS_SM "'/>");
	pgn_stream_send_raw(s, buf, (size_t)len);
	pgn_log(PGN_LOG_DEBUG, "session %llu: stream management on%s",
		(unsigned long long)s->id,
		sm->resumable ? " (resumable)" : "");
}

static void
handle_r(struct pgn_session *s)
{
	struct pgn_sm *sm = s->sm;
	struct sm_want *last;

	if (sm->npend == 0 && sm->nwant > 0)
		progress(s); /* (not expected: answered when npend fell) */
	if (sm->npend == 0 && sm->nwant == 0) {
		send_raw(s, "<a xmlns='" NS_SM "' h='%lu'/>", sm->received);
		return;
	}
	/* Some stanzas are still on their way to storage: answer once
	 * everything received before this request is handled, after the
	 * requests before it. */
	last = sm->nwant > 0 ? &sm->want[sm->nwant - 1] : NULL;
	if (last == NULL ||
	    (last->upto != sm->received && sm->nwant < MAX_WANT)) {
		if (sm->nwant == sm->cwant) {
			unsigned n = sm->cwant ? sm->cwant * 2 : 4;
			struct sm_want *w = realloc(sm->want, n * sizeof(*w));
			if (w != NULL) {
				sm->want = w;
				sm->cwant = n;
				last = sm->nwant > 0 ? &w[sm->nwant - 1] : NULL;
			}
		}
		if (sm->nwant < sm->cwant) {
			sm->want[sm->nwant++] =
				(struct sm_want){ sm->received, 1 };
			return;
		}
		if (last == NULL) {
			/* Out of memory: h is true now, if early. */
			send_raw(s, "<a xmlns='" NS_SM "' h='%lu'/>",
				 handled(sm));
			return;
		}
	}
	/* Answered together with the last waiting request. */
	last->upto = sm->received;
	if (last->n < UINT32_MAX)
		last->n++;
}

static void
too_high(struct pgn_session *s, uint32_t h)
{
	char text[96];

	snprintf(text, sizeof(text),
		 "acknowledged %lu stanzas, only %lu were sent",
		 (unsigned long)h,
		 (unsigned long)(s->sm->acked + s->sm->nqueued));
	pgn_stream_error(s, "undefined-condition", text);
}

static void
handle_a(struct pgn_session *s, const struct pgn_xml *xml)
{
	uint32_t h;

	s->sm->r_pending = 0;
	if (parse_h(xml, &h) != 0) {
		pgn_stream_error(s, "bad-format", "<a/> needs a numeric h");
		return;
	}
	if (queue_ack(s->sm, h) != 0)
		too_high(s, h);
	else
		pgn_stream_check_drained(s); /* a module may write more */
}

/* <resume previd h/> on a new, authenticated, unbound stream s. */
static void
handle_resume(struct pgn_session *s, const struct pgn_xml *xml)
{
	const char *previd = pgn_xml_attr(xml, "previd");
	struct pgn_session *old;
	uint32_t h;

	if (s->state != PGN_ST_NEGOTIATING || !s->authenticated ||
	    s->resume_of != 0) {
		send_failed(s, "unexpected-request");
		return;
	}
	if (previd == NULL || parse_h(xml, &h) != 0) {
		send_failed(s, "bad-request");
		return;
	}
	old = pgn_map_get(s->srv->sm_ids, previd);
	if (old == NULL || old->jid == NULL ||
	    strcmp(old->jid->node, s->authcid) != 0 || old->host != s->host ||
	    !pgn_stream_bound(old)) {
		/* Unknown, timed out, or someone else's. */
		send_failed(s, "item-not-found");
		return;
	}
	if (queue_ack(old->sm, h) != 0) {
		char buf[256];
		int len = snprintf(
			buf, sizeof(buf),
			"<failed xmlns='" NS_SM "' h='%lu'><undefined-condition "
			"xmlns='" PGN_NS_STANZAS "'/><handled-count-too-high "
			"xmlns='" NS_SM "' h='%lu' send='%lu'/></failed>",
			(unsigned long)handled(old->sm), (unsigned long)h,
			(unsigned long)(old->sm->acked + old->sm->nqueued));
		pgn_stream_send_raw(s, buf, (size_t)len);
		return;
	}
	/* Finished from the loop (not inside this parser callback), once
	 * the old session's stanzas are handled: read nothing meanwhile. */
	s->resume_of = old->id;
	pgn_stream_suspend(s);
	if (old->sm->npend > 0) {
		old->sm->waiter = s->id;
		pgn_stream_kick_after(s, RESUME_WAIT_MS);
	} else {
		pgn_stream_kick(s);
	}
}

int
pgn_sm_element(struct pgn_session *s, struct pgn_xml *xml)
{
	const char *ns = pgn_xml_ns(xml);
	const char *name = pgn_xml_name(xml);

	if (ns == NULL || strcmp(ns, NS_SM) != 0)
		return 0;
	if (strcmp(name, "enable") == 0)
		handle_enable(s, xml);
	else if (strcmp(name, "resume") == 0)
		handle_resume(s, xml);
	else if (s->sm != NULL && strcmp(name, "r") == 0)
		handle_r(s);
	else if (s->sm != NULL && strcmp(name, "a") == 0)
		handle_a(s, xml);
	else if (strcmp(name, "r") == 0 || strcmp(name, "a") == 0)
		send_failed(s, "unexpected-request");
	else
		return 0;
	pgn_xml_free(xml);
	return 1;
}

int
pgn_sm_features(struct pgn_session *s, struct pgn_xml *features)
{
	(void)s;
	return pgn_xml_add_child(features, NS_SM, "sm") != NULL ? 0 : -ENOMEM;
}

/* ---- hibernation and resumption ------------------------------------------- */

void
pgn_sm_hibernated(struct pgn_session *s)
{
	struct pgn_event ev = { .name = "session-hibernated", .origin = s };

	s->sm->r_pending = 0;
	s->sm->nwant = 0;
	pgn_log(PGN_LOG_INFO, "session %llu: %s hibernated for %u s",
		(unsigned long long)s->id, s->jid->full, s->sm->timeout);
	pgn_host_fire(s->host, &ev);
}

/* The stream s finishes resuming old: it takes over old's connection. */
static void
resume_finish(struct pgn_session *s, struct pgn_session *old)
{
	struct pgn_sm *sm = old->sm;
	int was_live = old->state == PGN_ST_BOUND;

	/* old gets the new connection; s keeps the previous one (or none)
	 * and closes it. */
	pgn_stream_swap_transport(old, s);
	s->resume_of = 0;
	old->state = PGN_ST_BOUND;
	old->busy = 0;
	sm->waiter = 0;
	sm->r_pending = 0;
	sm->nwant = 0;
	pgn_stream_established(old);
	{
		char buf[120];
		int len = snprintf(buf, sizeof(buf),
				   "<resumed xmlns='" NS_SM
				   "' previd='%s' h='%lu'/>",
				   sm->id, (unsigned long)handled(sm));
		pgn_stream_send_raw(old, buf, (size_t)len);
	}
	/* What the client has not acknowledged, again, in order (§5). */
	for (struct sm_item *it = sm->head; it != NULL; it = it->next)
		pgn_stream_send_raw(old, it->data, it->len);
	if (sm->head != NULL) {
		pgn_stream_send_raw(old, "<r xmlns='" NS_SM "'/>",
				    sizeof("<r xmlns='" NS_SM "'/>") - 1);
		sm->r_pending = 1;
	}
	pgn_log(PGN_LOG_INFO, "session %llu: %s resumed from %s (%u unacked%s)",
		(unsigned long long)old->id, old->jid->full, old->conn->peer,
		sm->nqueued, was_live ? ", old connection replaced" : "");
	if (was_live || s->conn != NULL)
		pgn_stream_error(s, "conflict", "session resumed elsewhere");
	else
		pgn_stream_destroy(s);
	{
		struct pgn_event ev = { .name = "session-resumed",
					.origin = old };
		pgn_host_fire(old->host, &ev);
	}
	/* Stanzas the client pipelined after <resume/>. */
	if (old->state == PGN_ST_BOUND)
		pgn_stream_resume(old);
}

void
pgn_sm_kicked(struct pgn_session *s)
{
	struct pgn_session *old;

	/* (A hibernated session's kick, over max_unacked, ends it in the
	 * stream timer itself.) */
	if (s->resume_of == 0)
		return;
	old = pgn_stream_find(s->srv, s->resume_of);
	if (old == NULL || old->sm == NULL || !pgn_stream_bound(old)) {
		s->resume_of = 0;
		send_failed(s, "item-not-found");
		pgn_stream_resume(s);
		return;
	}
	resume_finish(s, old);
}

/* ---- the end ------------------------------------------------------------ */

/* Carbon copies and archive results were only copies for this session:
 * the original went where it belonged. */
static int
only_a_copy(const struct pgn_stanza *st)
{
	for (const struct pgn_xml *c = pgn_xml_first_child(st->xml); c != NULL;
	     c = pgn_xml_next(c)) {
		const char *ns = pgn_xml_ns(c);
		if (ns != NULL && (strcmp(ns, "urn:xmpp:carbons:2") == 0 ||
				   strncmp(ns, "urn:xmpp:mam:", 13) == 0))
			return 1;
	}
	return 0;
}

void
pgn_sm_ended(struct pgn_session *s)
{
	struct pgn_sm *sm = s->sm;
	struct sm_item *list;
	unsigned n = 0;

	if (sm == NULL)
		return;
	if (sm->resumable)
		pgn_map_del(s->srv->sm_ids, sm->id);
	sm->resumable = 0;
	list = sm->head;
	sm->head = NULL;
	sm->tail = &sm->head;
	sm->nqueued = 0;
	sm->qbytes = 0;
	/* XEP-0198 §4: what the client did not acknowledge was not
	 * delivered. */
	while (list != NULL) {
		struct sm_item *it = list;
		struct pgn_xml *wrap = pgn_xml_new(PGN_NS_CLIENT, "x");
		struct pgn_xml *el;
		struct pgn_stanza *st;

		list = it->next;
		if (wrap != NULL &&
		    pgn_xml_parse_into(wrap, it->data, it->len) == 0 &&
		    (el = pgn_xml_first_child(wrap)) != NULL) {
			pgn_xml_unlink(el);
			st = pgn_stanza_new(el, NULL);
			if (st != NULL && (only_a_copy(st) ||
					   st->kind == PGN_STANZA_PRESENCE)) {
				pgn_stanza_free(st);
			} else if (st != NULL) {
				n++;
				pgn_stanza_undelivered(s->srv, st);
			}
		}
		pgn_xml_free(wrap);
		free(it);
	}
	if (n > 0)
		pgn_log(PGN_LOG_INFO,
			"session %llu: %u unacknowledged stanzas handed back",
			(unsigned long long)s->id, n);
}

void
pgn_sm_free(struct pgn_session *s)
{
	struct pgn_sm *sm = s->sm;

	if (sm == NULL)
		return;
	if (sm->resumable)
		pgn_map_del(s->srv->sm_ids, sm->id);
	pgn_stream_remove_filter(s, &sm->filter);
	while (sm->head != NULL) {
		struct sm_item *it = sm->head;
		sm->head = it->next;
		free(it);
	}
	free(sm->pend);
	free(sm->want);
	free(sm);
	s->sm = NULL;
}
