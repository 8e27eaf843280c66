/* Unit tests for src/core/iq.c, the tracker behind pgn_send_iq: answers
 * matched by id and peer (anything else is left to the router), error
 * conditions, answers during sending given on the next loop turn,
 * timeouts, and cancellation (one request, or a module's all). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <event2/event.h>

#include "iq.h"
#include "pigeon/module.h"

struct seen {
	int calls;
	int had_reply;
	char condition[64];
};

static void
record(const struct pgn_stanza *reply, const char *condition, void *arg)
{
	struct seen *s = arg;

	s->calls++;
	s->had_reply = reply != NULL;
	strcpy(s->condition, condition != NULL ? condition : "(none)");
}

/* An iq of type from 'from' with id; an error carries condition. */
static struct pgn_stanza *
iq(const char *type, const char *id, const char *from, const char *condition)
{
	struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "iq");
	int bad = 0;

	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(pgn_xml_set_attr(x, "type", type), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "id", id), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "from", from), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "to", "example.org"), 0);
	if (condition != NULL) {
		struct pgn_xml *e = pgn_xml_add_child(x, NULL, "error");
		ck_assert_ptr_nonnull(e);
		ck_assert_ptr_nonnull(pgn_xml_add_child(e, PGN_NS_STANZAS,
							condition));
		ck_assert_ptr_nonnull(pgn_xml_add_child(e, PGN_NS_STANZAS,
							"text"));
	}
	struct pgn_stanza *st = pgn_stanza_new(x, &bad);
	ck_assert_ptr_nonnull(st);
	return st;
}

/* Offers st to t; frees it when nothing took it. */
static int
offer(struct pgn_iq_tracker *t, struct pgn_stanza *st)
{
	int r = pgn_iq_tracker_answer(t, st);
	if (!r)
		pgn_stanza_free(st);
	return r;
}

/* A tracker on its own loop. */
struct fx {
	struct event_base *base;
	struct pgn_iq_tracker *t;
};

static void
fx_init(struct fx *f)
{
	f->base = event_base_new();
	ck_assert_ptr_nonnull(f->base);
	f->t = pgn_iq_tracker_new(f->base);
	ck_assert_ptr_nonnull(f->t);
}

static void
fx_fini(struct fx *f)
{
	pgn_iq_tracker_free(f->t);
	event_base_free(f->base);
}

/* Registers a request of owner to peer and, unless still_sending, marks
 * it sent. */
static uint64_t
ask(struct fx *f, const void *owner, const char *peer, uint64_t timeout_ms,
    struct seen *s, char *id, int still_sending)
{
	uint64_t h;

	ck_assert_int_eq(pgn_iq_tracker_add(f->t, owner, peer, timeout_ms,
					    record, s, id, &h), 0);
	if (!still_sending)
		pgn_iq_tracker_sent(f->t, h);
	return h;
}

START_TEST(match_by_id_and_peer)
{
	struct fx f;
	struct seen s = {0};
	char id[PGN_IQ_ID_LEN], other[PGN_IQ_ID_LEN + 8];
	int owner;

	fx_init(&f);
	ask(&f, &owner, "a@example.org/r", 60000, &s, id, 0);
	ck_assert_uint_eq(pgn_iq_tracker_count(f.t), 1);
	/* Another sender, another id, a request, a stray suffix: not ours. */
	ck_assert_int_eq(offer(f.t, iq("result", id, "b@example.org/r", NULL)),
			 0);
	ck_assert_int_eq(offer(f.t, iq("result", id, "a@example.org", NULL)),
			 0);
	ck_assert_int_eq(offer(f.t, iq("result", "pgn-99", "a@example.org/r",
				       NULL)),
			 0);
	ck_assert_int_eq(offer(f.t, iq("get", id, "a@example.org/r", NULL)),
			 0);
	strcpy(other, id);
	strcat(other, "x");
	ck_assert_int_eq(offer(f.t, iq("result", other, "a@example.org/r",
				       NULL)),
			 0);
	ck_assert_int_eq(s.calls, 0);
	/* The answer: the callback runs once, the request is gone. */
	ck_assert_int_eq(offer(f.t, iq("result", id, "a@example.org/r", NULL)),
			 1);
	ck_assert_int_eq(s.calls, 1);
	ck_assert_int_eq(s.had_reply, 1);
	ck_assert_str_eq(s.condition, "(none)");
	ck_assert_uint_eq(pgn_iq_tracker_count(f.t), 0);
	ck_assert_int_eq(offer(f.t, iq("result", id, "a@example.org/r", NULL)),
			 0);
	ck_assert_int_eq(s.calls, 1);
	fx_fini(&f);
}
END_TEST

START_TEST(error_condition)
{
	struct fx f;
	struct seen s = {0};
	char id[PGN_IQ_ID_LEN];
	int owner;

	fx_init(&f);
	ask(&f, &owner, "push.example.net", 60000, &s, id, 0);
	ck_assert_int_eq(offer(f.t, iq("error", id, "push.example.net",
				       "item-not-found")),
			 1);
	ck_assert_int_eq(s.calls, 1);
	ck_assert_str_eq(s.condition, "item-not-found");
	/* An error without a condition. */
	ask(&f, &owner, "push.example.net", 60000, &s, id, 0);
	ck_assert_int_eq(offer(f.t, iq("error", id, "push.example.net", NULL)),
			 1);
	ck_assert_int_eq(s.calls, 2);
	ck_assert_str_eq(s.condition, "undefined-condition");
	fx_fini(&f);
}
END_TEST

START_TEST(answer_while_sending_waits_for_the_loop)
{
	struct fx f;
	struct seen s = {0};
	char id[PGN_IQ_ID_LEN];
	uint64_t h;
	int owner;

	fx_init(&f);
	h = ask(&f, &owner, "gone.example.net", 60000, &s, id, 1);
	/* The router bounced it at once: taken, but not called back yet. */
	ck_assert_int_eq(offer(f.t, iq("error", id, "gone.example.net",
				       "remote-server-not-found")),
			 1);
	ck_assert_int_eq(s.calls, 0);
	pgn_iq_tracker_sent(f.t, h);
	ck_assert_int_eq(s.calls, 0);
	event_base_loop(f.base, EVLOOP_ONCE);
	ck_assert_int_eq(s.calls, 1);
	ck_assert_int_eq(s.had_reply, 1);
	ck_assert_str_eq(s.condition, "remote-server-not-found");
	ck_assert_uint_eq(pgn_iq_tracker_count(f.t), 0);
	fx_fini(&f);
}
END_TEST

START_TEST(timeout_once)
{
	struct fx f;
	struct seen s = {0};
	char id[PGN_IQ_ID_LEN];
	int owner;

	fx_init(&f);
	ask(&f, &owner, "slow.example.net", 5, &s, id, 0);
	event_base_dispatch(f.base); /* ends when no event is left */
	ck_assert_int_eq(s.calls, 1);
	ck_assert_int_eq(s.had_reply, 0);
	ck_assert_str_eq(s.condition, "remote-server-timeout");
	ck_assert_int_eq(offer(f.t, iq("result", id, "slow.example.net", NULL)),
			 0);
	ck_assert_int_eq(s.calls, 1);
	fx_fini(&f);
}
END_TEST

START_TEST(cancel)
{
	struct fx f;
	struct seen s = {0}, other = {0};
	char id1[PGN_IQ_ID_LEN], id2[PGN_IQ_ID_LEN], id3[PGN_IQ_ID_LEN];
	uint64_t h1;
	int m1, m2;

	fx_init(&f);
	h1 = ask(&f, &m1, "x.example.net", 5, &s, id1, 1);
	ask(&f, &m1, "x.example.net", 5, &s, id2, 1);
	ask(&f, &m2, "x.example.net", 5, &other, id3, 1);
	ck_assert_str_ne(id1, id2);
	/* Only the owner cancels its own. */
	ck_assert_int_eq(pgn_iq_tracker_cancel(f.t, &m2, h1), -ENOENT);
	ck_assert_int_eq(pgn_iq_tracker_cancel(f.t, &m1, h1), 0);
	ck_assert_int_eq(pgn_iq_tracker_cancel(f.t, &m1, h1), -ENOENT);
	/* A module unloads with an answer waiting for the loop. */
	ck_assert_int_eq(offer(f.t, iq("result", id2, "x.example.net", NULL)),
			 1);
	pgn_iq_tracker_cancel_owner(f.t, &m1);
	ck_assert_uint_eq(pgn_iq_tracker_count(f.t), 1);
	event_base_dispatch(f.base);
	ck_assert_int_eq(s.calls, 0);
	ck_assert_int_eq(other.calls, 1);
	fx_fini(&f);
}
END_TEST

static Suite *
iq_suite(void)
{
	Suite *s = suite_create("iq");
	TCase *tc = tcase_create("tracker");

	tcase_add_test(tc, match_by_id_and_peer);
	tcase_add_test(tc, error_condition);
	tcase_add_test(tc, answer_while_sending_waits_for_the_loop);
	tcase_add_test(tc, timeout_once);
	tcase_add_test(tc, cancel);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(iq_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
