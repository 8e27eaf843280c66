/* Events: priority order, the first HANDLED stops the chain, and removing
 * an owner (module unload) takes all its hooks and nothing else. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

struct trace {
	char calls[64];
	size_t n;
};

/* Each handler appends its letter; 'H' handlers stop the chain. */
static int
record(struct pgn_event *ev, void *arg)
{
	const char *tag = arg;
	struct trace *t = ev->data;
	t->calls[t->n++] = tag[0];
	return tag[1] == 'H' ? PGN_EVENT_HANDLED : PGN_EVENT_PASS;
}

static int
fire(struct pgn_events *evs, const char *name, struct trace *t)
{
	struct pgn_event ev = { .name = name, .data = t };
	memset(t, 0, sizeof(*t));
	return pgn_events_fire(evs, &ev);
}

START_TEST(test_priority_order)
{
	struct pgn_events *evs = pgn_events_new();
	struct trace t;
	int owner;
	ck_assert_ptr_nonnull(evs);
	ck_assert_int_eq(pgn_events_add(evs, "message/bare", record, "b", 0,
					&owner), 0);
	ck_assert_int_eq(pgn_events_add(evs, "message/bare", record, "a", 10,
					&owner), 0);
	ck_assert_int_eq(pgn_events_add(evs, "message/bare", record, "c", -5,
					&owner), 0);
	/* Equal priority keeps registration order. */
	ck_assert_int_eq(pgn_events_add(evs, "message/bare", record, "d", 0,
					&owner), 0);
	ck_assert_int_eq(fire(evs, "message/bare", &t), PGN_EVENT_PASS);
	ck_assert_str_eq(t.calls, "abdc");
	ck_assert_int_eq(fire(evs, "message/full", &t), PGN_EVENT_PASS);
	ck_assert_str_eq(t.calls, "");
	pgn_events_free(evs);
}
END_TEST

START_TEST(test_handled_stops_chain)
{
	struct pgn_events *evs = pgn_events_new();
	struct trace t;
	int owner;
	pgn_events_add(evs, "iq/host", record, "a", 5, &owner);
	pgn_events_add(evs, "iq/host", record, "bH", 3, &owner);
	pgn_events_add(evs, "iq/host", record, "c", 1, &owner);
	ck_assert_int_eq(fire(evs, "iq/host", &t), PGN_EVENT_HANDLED);
	ck_assert_str_eq(t.calls, "ab");
	pgn_events_free(evs);
}
END_TEST

START_TEST(test_remove_owner)
{
	struct pgn_events *evs = pgn_events_new();
	struct trace t;
	int m1, m2;
	pgn_events_add(evs, "message/bare", record, "a", 5, &m1);
	pgn_events_add(evs, "message/bare", record, "b", 4, &m2);
	pgn_events_add(evs, "presence/bare", record, "cH", 0, &m1);
	pgn_events_add(evs, "presence/bare", record, "d", -1, &m2);
	ck_assert(pgn_events_has(evs, "presence/bare"));
	pgn_events_remove_owner(evs, &m1);
	ck_assert_int_eq(fire(evs, "message/bare", &t), PGN_EVENT_PASS);
	ck_assert_str_eq(t.calls, "b");
	/* m1's stopping handler is gone, so m2's runs now. */
	ck_assert_int_eq(fire(evs, "presence/bare", &t), PGN_EVENT_PASS);
	ck_assert_str_eq(t.calls, "d");
	pgn_events_remove_owner(evs, &m2);
	ck_assert(!pgn_events_has(evs, "presence/bare"));
	ck_assert(!pgn_events_has(evs, "message/bare"));
	pgn_events_free(evs);
}
END_TEST

/* A held stanza resumes after the handler that held it: the handlers
 * after it run (same priority later in order, then lower), never the ones
 * before it or itself again; if the holder was unloaded meanwhile, its
 * whole priority level counts as done. */
START_TEST(test_fire_after)
{
	struct pgn_events *evs = pgn_events_new();
	struct pgn_event ev = { .name = "message/bare" };
	struct trace t;
	int m1, m2;
	pgn_events_add(evs, "message/bare", record, "a", 10, &m1);
	pgn_events_add(evs, "message/bare", record, "b", 5, &m1);
	pgn_events_add(evs, "message/bare", record, "c", 5, &m2);
	pgn_events_add(evs, "message/bare", record, "d", 0, &m2);
	ev.data = &t;
	memset(&t, 0, sizeof(t));
	ck_assert_int_eq(pgn_events_fire_after(evs, &ev, 5, record, "b"),
			 PGN_EVENT_PASS);
	ck_assert_str_eq(t.calls, "cd");
	/* The running handler is recorded for pgn_event_hold. */
	ck_assert_int_eq(ev.pos_priority, 0);
	ck_assert_ptr_eq(ev.pos_arg, "d");
	memset(&t, 0, sizeof(t));
	pgn_events_fire_after(evs, &ev, 10, record, "a");
	ck_assert_str_eq(t.calls, "bcd");
	/* Holder gone: everything at its priority is skipped. */
	memset(&t, 0, sizeof(t));
	pgn_events_fire_after(evs, &ev, 5, record, "x");
	ck_assert_str_eq(t.calls, "d");
	memset(&t, 0, sizeof(t));
	pgn_events_fire_after(evs, &ev, -1, record, "z");
	ck_assert_str_eq(t.calls, "");
	pgn_events_free(evs);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("event");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_priority_order);
	tcase_add_test(tc, test_handled_stops_chain);
	tcase_add_test(tc, test_remove_owner);
	tcase_add_test(tc, test_fire_after);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
