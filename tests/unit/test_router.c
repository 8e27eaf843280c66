/* The route table and the router without a running server: a server, a
 * host and a session made by hand (no loop, no sockets, no store).
 * Covers the domain table (exact domains, the remote fallback, owners),
 * dispatch through it, and holds with the acknowledgement context: a
 * held client stanza keeps its sender's ack from advancing until the
 * hold is resumed, and what the resumed routing does counts for it; what
 * a handler routes with its event (pgn_event_route) or a failed hold's
 * error (pgn_hold_bounce) counts for the client stanza, what it routes
 * as the server (pgn_route) for nobody. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "host.h"
#include "pigeon/map.h"
#include "router.h"
#include "server.h"
#include "stream.h"

/* ---- the table alone --------------------------------------------------- */

static int remote_calls, svc_calls;

static void
count_remote(const struct pgn_routing *rt, struct pgn_stanza *st,
	     const struct pgn_route *r)
{
	remote_calls++;
}

static void
count_svc(const struct pgn_routing *rt, struct pgn_stanza *st,
	  const struct pgn_route *r)
{
	svc_calls++;
}

static void
collect(const struct pgn_route *r, void *arg)
{
	strcat(arg, r->domain);
	strcat(arg, ";");
}

START_TEST(test_table_exact_and_remote)
{
	struct pgn_routes *t = pgn_routes_new(count_remote);
	int host_owner, mod_owner;
	struct pgn_route host = { .kind = PGN_ROUTE_HOST, .fn = count_svc,
				  .owner = &host_owner };
	struct pgn_route svc = { .kind = PGN_ROUTE_SERVICE, .fn = count_svc,
				 .owner = &mod_owner };
	const struct pgn_route *r;

	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(pgn_routes_add(t, "localhost", &host), 0);
	ck_assert_int_eq(pgn_routes_add(t, "conference.localhost", &svc), 0);
	/* A domain has one owner. */
	ck_assert_int_eq(pgn_routes_add(t, "localhost", &svc), -EEXIST);
	r = pgn_routes_lookup(t, "conference.localhost");
	ck_assert_int_eq(r->kind, PGN_ROUTE_SERVICE);
	ck_assert_str_eq(r->domain, "conference.localhost");
	ck_assert_ptr_eq(pgn_routes_get(t, "localhost")->owner, &host_owner);
	/* Exact domains only: a subdomain of a host is remote. */
	ck_assert_ptr_null(pgn_routes_get(t, "x.localhost"));
	r = pgn_routes_lookup(t, "x.localhost");
	ck_assert_int_eq(r->kind, PGN_ROUTE_REMOTE);
	ck_assert_ptr_eq(r->fn, count_remote);
	ck_assert_uint_eq(pgn_routes_count(t, PGN_ROUTE_SERVICE), 1);
	/* Only the owner removes. */
	ck_assert_int_eq(pgn_routes_del(t, "conference.localhost",
					&host_owner), -ENOENT);
	ck_assert_int_eq(pgn_routes_del(t, "conference.localhost",
					&mod_owner), 0);
	ck_assert_int_eq(pgn_routes_lookup(t, "conference.localhost")->kind,
			 PGN_ROUTE_REMOTE);
	ck_assert_uint_eq(pgn_routes_count(t, PGN_ROUTE_SERVICE), 0);
	pgn_routes_free(t);
}
END_TEST

START_TEST(test_table_owner_removal)
{
	struct pgn_routes *t = pgn_routes_new(count_remote);
	int mod_a, mod_b;
	struct pgn_route a = { .kind = PGN_ROUTE_SERVICE, .fn = count_svc,
			       .owner = &mod_a };
	struct pgn_route b = { .kind = PGN_ROUTE_SERVICE, .fn = count_svc,
			       .owner = &mod_b };
	struct pgn_route fed = { .fn = count_svc, .owner = &mod_a };
	char seen[256] = "";

	ck_assert_int_eq(pgn_routes_add(t, "muc.a", &a), 0);
	ck_assert_int_eq(pgn_routes_add(t, "pubsub.a", &a), 0);
	ck_assert_int_eq(pgn_routes_add(t, "muc.b", &b), 0);
	/* The remote route: one owner at a time. */
	ck_assert_int_eq(pgn_routes_set_remote(t, &fed), 0);
	fed.owner = &mod_b;
	ck_assert_int_eq(pgn_routes_set_remote(t, &fed), -EEXIST);
	ck_assert_ptr_eq(pgn_routes_lookup(t, "jabber.org")->fn, count_svc);
	/* Unloading a: its domains and its remote route go, b's stay. */
	pgn_routes_del_owner(t, &mod_a);
	ck_assert_ptr_null(pgn_routes_get(t, "muc.a"));
	ck_assert_ptr_null(pgn_routes_get(t, "pubsub.a"));
	ck_assert_ptr_nonnull(pgn_routes_get(t, "muc.b"));
	ck_assert_ptr_eq(pgn_routes_lookup(t, "jabber.org")->fn, count_remote);
	ck_assert_ptr_null(pgn_routes_lookup(t, "jabber.org")->owner);
	pgn_routes_foreach(t, PGN_ROUTE_SERVICE, NULL, collect, seen);
	ck_assert_str_eq(seen, "muc.b;");
	pgn_routes_free(t);
}
END_TEST

/* ---- a server by hand -------------------------------------------------- */

struct fixture {
	struct pgn_server *srv;
	struct pgn_config *cfg;
	struct pgn_cfg_host hcfg;
	struct pgn_host *host;
	struct pgn_session *alice; /* client session with stream management */
};

/* What the hooks saw. */
static struct {
	struct pgn_hold *hold;   /* taken by hold_first */
	int held, errors, offline;
	char last_error[64];
	struct pgn_ack_ticket *ticket;
	uint32_t ticket_seq;
} seen;

static void
setup(struct fixture *f)
{
	memset(&seen, 0, sizeof(seen));
	memset(f, 0, sizeof(*f));
	f->srv = calloc(1, sizeof(*f->srv));
	f->cfg = calloc(1, sizeof(*f->cfg));
	ck_assert_ptr_nonnull(f->srv);
	ck_assert_ptr_nonnull(f->cfg);
	f->cfg->limits.max_sessions_per_user = 10;
	f->srv->cfg = f->cfg;
	f->srv->sessions = pgn_map_new();
	f->srv->users = pgn_map_new();
	f->srv->sm_ids = pgn_map_new();
	f->srv->routes = pgn_routes_new(pgn_router_remote_default);
	ck_assert_ptr_nonnull(f->srv->routes);
	f->hcfg.name = "localhost";
	f->host = pgn_host_new(f->srv, &f->hcfg);
	ck_assert_ptr_nonnull(f->host);
	ck_assert_int_eq(pgn_router_add_host(f->srv, f->host), 0);

	/* Alice: a client session (not bound as a resource, so no outbound
	 * events) that numbers her stanzas. */
	f->alice = calloc(1, sizeof(*f->alice));
	f->alice->srv = f->srv;
	f->alice->id = 7;
	f->alice->state = PGN_ST_BOUND;
	f->alice->kind = PGN_STREAM_C2S;
	f->alice->host = f->host;
	ck_assert_int_eq(pgn_map_set_id(f->srv->sessions, 7, f->alice), 0);
	ck_assert_int_eq(pgn_sm_attach(f->alice), 0);
}

static void
teardown(struct fixture *f)
{
	pgn_sm_free(f->alice);
	free(f->alice);
	pgn_routes_del_owner(f->srv->routes, f->host);
	pgn_host_free(f->host);
	pgn_routes_free(f->srv->routes);
	pgn_map_free(f->srv->sessions);
	pgn_map_free(f->srv->users);
	pgn_map_free(f->srv->sm_ids);
	free(f->cfg);
	free(f->srv);
}

static struct pgn_stanza *
message(const char *from, const char *to)
{
	struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "message");
	struct pgn_stanza *st;

	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(pgn_xml_set_attr(x, "from", from), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "to", to), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "type", "chat"), 0);
	st = pgn_stanza_new(x, NULL);
	ck_assert_ptr_nonnull(st);
	return st;
}

/* Alice sends st: numbered, routed with its context, done. */
static void
client_sends(struct fixture *f, struct pgn_stanza *st)
{
	struct pgn_route_ctx ctx;

	pgn_sm_stanza_begin(f->alice, &ctx);
	ck_assert_uint_ne(ctx.ack_sid, 0);
	pgn_router_route_ctx(f->srv, f->alice, st, &ctx);
	pgn_sm_stanza_end(f->alice, &ctx);
}

/* message/bare: holds the first message it sees (as the archive does
 * while it writes), lets the others pass. */
static int
hold_first(struct pgn_event *ev, void *arg)
{
	if (seen.held++ > 0)
		return PGN_EVENT_PASS;
	seen.hold = pgn_event_hold(ev);
	ck_assert_ptr_nonnull(seen.hold);
	ck_assert_ptr_null(ev->stanza);
	return PGN_EVENT_HANDLED;
}

static int
on_offline(struct pgn_event *ev, void *arg)
{
	seen.offline++;
	return PGN_EVENT_PASS; /* no offline storage: the sender learns */
}

/* The error coming back to Alice: takes an ack ticket the first time, so
 * that the test can see which client stanza it counts for. */
static int
on_error(struct pgn_event *ev, void *arg)
{
	struct pgn_xml *e = pgn_xml_child(ev->stanza->xml, NULL, "error");
	struct pgn_xml *c = e != NULL ? pgn_xml_first_child(e) : NULL;

	seen.errors++;
	snprintf(seen.last_error, sizeof(seen.last_error), "%s",
		 c != NULL ? pgn_xml_name(c) : "?");
	if (seen.ticket == NULL && arg != NULL) {
		seen.ticket = pgn_event_ack_ticket(ev);
		seen.ticket_seq = pgn_event_ctx(ev)->ack_seq;
	}
	return PGN_EVENT_HANDLED;
}

START_TEST(test_remote_fallback_bounces)
{
	struct fixture f;
	int owner;

	setup(&f);
	pgn_events_add(f.host->events, "message/full", on_error, NULL, 0,
		       &owner);
	/* No federation: remote-server-not-found, back to the sender. */
	pgn_router_route(f.srv, NULL,
			 message("alice@localhost/a", "bob@jabber.example"));
	ck_assert_int_eq(seen.errors, 1);
	ck_assert_str_eq(seen.last_error, "remote-server-not-found");
	teardown(&f);
}
END_TEST

static void
to_service(const struct pgn_routing *rt, struct pgn_stanza *st,
	   const struct pgn_route *r)
{
	svc_calls++;
	ck_assert_str_eq(st->to->domain, r->domain);
	ck_assert_ptr_eq(rt->origin, NULL);
	pgn_stanza_free(st);
}

START_TEST(test_service_domain_dispatch)
{
	struct fixture f;
	int mod;
	struct pgn_route svc = { .kind = PGN_ROUTE_SERVICE, .fn = to_service,
				 .owner = &mod };

	setup(&f);
	svc_calls = 0;
	ck_assert_int_eq(pgn_routes_add(f.srv->routes, "conference.localhost",
					&svc), 0);
	pgn_router_route(f.srv, NULL,
			 message("alice@localhost/a", "room@conference.localhost"));
	ck_assert_int_eq(svc_calls, 1);
	/* A local host is found through the same table. */
	ck_assert_ptr_eq(pgn_server_host(f.srv, "localhost"), f.host);
	ck_assert_ptr_null(pgn_server_host(f.srv, "conference.localhost"));
	teardown(&f);
}
END_TEST

START_TEST(test_component_route_replaced)
{
	struct fixture f;
	struct pgn_session a = { .id = 20, .state = PGN_ST_BOUND };
	struct pgn_session b = { .id = 21, .state = PGN_ST_BOUND };
	struct pgn_session *old = &a;
	int owner;

	setup(&f);
	pgn_events_add(f.host->events, "message/full", on_error, NULL, 0,
		       &owner);
	ck_assert_int_eq(pgn_router_add_component(f.srv, "comp.localhost", &a,
						  &old), 0);
	ck_assert_ptr_null(old);
	ck_assert_uint_eq(pgn_routes_count(f.srv->routes, PGN_ROUTE_COMPONENT),
			  1);
	/* One connection per component: the new one takes the route and
	 * is told which one to end. */
	ck_assert_int_eq(pgn_router_add_component(f.srv, "comp.localhost", &b,
						  &old), 0);
	ck_assert_ptr_eq(old, &a);
	ck_assert_ptr_eq(pgn_routes_get(f.srv->routes, "comp.localhost")->arg,
			 &b);
	/* The old one's close does not take the new one's route. */
	ck_assert_int_eq(pgn_router_del_component(f.srv, "comp.localhost", &a),
			 0);
	/* A closing component takes nothing: service-unavailable. */
	b.state = PGN_ST_CLOSING;
	pgn_router_route(f.srv, NULL,
			 message("alice@localhost/a", "bot@comp.localhost"));
	ck_assert_int_eq(seen.errors, 1);
	ck_assert_str_eq(seen.last_error, "service-unavailable");
	ck_assert_int_eq(pgn_router_del_component(f.srv, "comp.localhost", &b),
			 1);
	ck_assert_uint_eq(pgn_routes_count(f.srv->routes, PGN_ROUTE_COMPONENT),
			  0);
	/* Gone and not configured: like any other domain. */
	pgn_router_route(f.srv, NULL,
			 message("alice@localhost/a", "bot@comp.localhost"));
	ck_assert_str_eq(seen.last_error, "remote-server-not-found");
	teardown(&f);
}
END_TEST

START_TEST(test_hold_delays_ack_until_resumed)
{
	struct fixture f;
	int owner;

	setup(&f);
	pgn_events_add(f.host->events, "message/bare", hold_first, NULL, 0,
		       &owner);
	pgn_events_add(f.host->events, "message/offline", on_offline, NULL, 0,
		       &owner);
	pgn_events_add(f.host->events, "message/full", on_error, "ticket", 0,
		       &owner);

	/* Stanza 1 is held: not handled, whatever follows. */
	client_sends(&f, message("alice@localhost/a", "bob@localhost"));
	ck_assert_ptr_nonnull(seen.hold);
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 0);
	/* Stanza 2 goes all the way (bob is offline: an error to alice)
	 * but is after stanza 1. */
	client_sends(&f, message("alice@localhost/a", "bob@localhost"));
	ck_assert_int_eq(seen.offline, 1);
	ck_assert_int_eq(seen.errors, 1);
	/* That error took a ticket: it counts for stanza 2. */
	ck_assert_ptr_nonnull(seen.ticket);
	ck_assert_uint_eq(seen.ticket_seq, 2);
	pgn_ack_ticket_done(seen.ticket);
	seen.ticket = NULL;
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 0);

	/* Resumed: on after the holder, to message/offline and the error;
	 * the error's ticket counts for stanza 1 (the hold's context). */
	pgn_hold_resume(seen.hold);
	ck_assert_int_eq(seen.offline, 2);
	ck_assert_int_eq(seen.errors, 2);
	ck_assert_str_eq(seen.last_error, "service-unavailable");
	ck_assert_ptr_nonnull(seen.ticket);
	ck_assert_uint_eq(seen.ticket_seq, 1);
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 0);
	pgn_ack_ticket_done(seen.ticket);
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 2);
	teardown(&f);
}
END_TEST

START_TEST(test_hold_take_releases_ack)
{
	struct fixture f;
	int owner;

	setup(&f);
	pgn_events_add(f.host->events, "message/bare", hold_first, NULL, 0,
		       &owner);
	client_sends(&f, message("alice@localhost/a", "bob@localhost"));
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 0);
	pgn_stanza_free(pgn_hold_take(seen.hold));
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 1);
	/* A stanza the server makes has no context: a hold on it delays
	 * nobody's ack. */
	seen.held = 0;
	pgn_router_route(f.srv, NULL,
			 message("alice@localhost/a", "bob@localhost"));
	ck_assert_ptr_nonnull(seen.hold);
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 1);
	pgn_stanza_free(pgn_hold_take(seen.hold));
	teardown(&f);
}
END_TEST

/* message/full to carol: a handler that sends a stanza of its own on
 * behalf of the one it handles (as the roster's presence broadcast
 * does), to bob's bare JID, with the event (arg non-NULL) or as the
 * server (arg NULL). */
static int
relay(struct pgn_event *ev, void *arg)
{
	struct pgn_stanza *st = message("alice@localhost/a", "bob@localhost");

	if (arg != NULL)
		pgn_event_route(ev, st);
	else
		pgn_route(ev->server, st);
	return PGN_EVENT_HANDLED;
}

/* Alice's stanza to carol is taken by relay, whose own message to bob is
 * held: with the event (pgn_event_route) Alice's ack waits for that
 * hold; as the server (pgn_route) nobody's does, as there is no routing
 * in progress to inherit a context from. */
static void
relay_held(const char *mode, uint32_t handled_while_held)
{
	struct fixture f;
	int owner;

	setup(&f);
	pgn_events_add(f.host->events, "message/bare", hold_first, NULL, 0,
		       &owner);
	pgn_events_add(f.host->events, "message/full", relay, (void *)mode, 0,
		       &owner);
	client_sends(&f, message("alice@localhost/a", "carol@localhost/x"));
	ck_assert_int_eq(seen.held, 1);
	ck_assert_ptr_nonnull(seen.hold);
	ck_assert_uint_eq(pgn_sm_handled(f.alice), handled_while_held);
	pgn_stanza_free(pgn_hold_take(seen.hold));
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 1);
	teardown(&f);
}

START_TEST(test_handler_route_counts_for_stanza)
{
	relay_held("event", 0);
}
END_TEST

START_TEST(test_server_route_counts_for_nobody)
{
	relay_held(NULL, 1);
}
END_TEST

START_TEST(test_hold_bounce_counts_for_held)
{
	struct fixture f;
	int owner;

	setup(&f);
	pgn_events_add(f.host->events, "message/bare", hold_first, NULL, 0,
		       &owner);
	pgn_events_add(f.host->events, "message/full", on_error, "ticket", 0,
		       &owner);
	client_sends(&f, message("alice@localhost/a", "bob@localhost"));
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 0);
	/* Storage failed: the error goes back within the held stanza's
	 * routing (its ticket is on seq 1), and the ack waits for it. */
	pgn_hold_bounce(seen.hold, "wait", "internal-server-error", NULL);
	ck_assert_int_eq(seen.errors, 1);
	ck_assert_str_eq(seen.last_error, "internal-server-error");
	ck_assert_ptr_nonnull(seen.ticket);
	ck_assert_uint_eq(seen.ticket_seq, 1);
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 0);
	pgn_ack_ticket_done(seen.ticket);
	ck_assert_uint_eq(pgn_sm_handled(f.alice), 1);
	teardown(&f);
}
END_TEST

static Suite *
router_suite(void)
{
	Suite *s = suite_create("router");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_table_exact_and_remote);
	tcase_add_test(tc, test_table_owner_removal);
	tcase_add_test(tc, test_remote_fallback_bounces);
	tcase_add_test(tc, test_service_domain_dispatch);
	tcase_add_test(tc, test_component_route_replaced);
	tcase_add_test(tc, test_hold_delays_ack_until_resumed);
	tcase_add_test(tc, test_hold_take_releases_ack);
	tcase_add_test(tc, test_handler_route_counts_for_stanza);
	tcase_add_test(tc, test_server_route_counts_for_nobody);
	tcase_add_test(tc, test_hold_bounce_counts_for_held);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(router_suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
