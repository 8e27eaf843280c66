/* Bookmark conversions of mod_private's bridge (modules/bookmarks.c):
 * XEP-0048 <conference/> <-> XEP-0402 item, the canonical form that tells
 * an unchanged room, the wanted list of a private set, publish-options. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "pigeon/xml.h"
#include "../../modules/bookmarks.h"

/* The first element of text (a wrapper's child, unlinked; caller frees). */
static struct pgn_xml *
parse(const char *text)
{
	struct pgn_xml *wrap = pgn_xml_new(NULL, "wrap"), *el;

	ck_assert_ptr_nonnull(wrap);
	ck_assert_int_eq(pgn_xml_parse_into(wrap, text, strlen(text)), 0);
	el = pgn_xml_first_child(wrap);
	ck_assert_ptr_nonnull(el);
	pgn_xml_unlink(el);
	pgn_xml_free(wrap);
	return el;
}

static char *
str(const struct pgn_xml *el, const char *ns)
{
	char *s = pgn_xml_to_string(el, ns);
	ck_assert_ptr_nonnull(s);
	return s;
}

START_TEST(test_legacy_to_item)
{
	struct pgn_xml *lc = parse(
		"<conference xmlns='storage:bookmarks' jid='r@conf.example' "
		"name='Room' autojoin='1'><password>pw</password><nick>jc</nick>"
		"<x xmlns='urn:example' v='1'/></conference>");
	struct pgn_xml *item, *c, *e;
	int nomem = 1;

	item = bm_item_from_legacy(lc, &nomem);
	ck_assert_ptr_nonnull(item);
	ck_assert_int_eq(nomem, 0);
	ck_assert_str_eq(pgn_xml_ns(item), NS_PUBSUB);
	ck_assert_str_eq(pgn_xml_attr(item, "id"), "r@conf.example");
	c = pgn_xml_child(item, NS_BM, "conference");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(pgn_xml_attr(c, "name"), "Room");
	ck_assert_str_eq(pgn_xml_attr(c, "autojoin"), "true");
	ck_assert_ptr_null(pgn_xml_attr(c, "jid"));
	/* the schema's order: nick, password, extensions */
	e = pgn_xml_first_child(c);
	ck_assert_str_eq(pgn_xml_name(e), "nick");
	e = pgn_xml_next(e);
	ck_assert_str_eq(pgn_xml_name(e), "password");
	e = pgn_xml_next(e);
	ck_assert(bm_is(e, NS_BM, "extensions"));
	ck_assert(bm_is(pgn_xml_first_child(e), "urn:example", "x"));
	ck_assert_ptr_null(pgn_xml_next(e));
	pgn_xml_free(item);
	pgn_xml_free(lc);

	/* no jid: nothing, and not for want of memory */
	lc = parse("<conference xmlns='storage:bookmarks' name='x'/>");
	ck_assert_ptr_null(bm_item_from_legacy(lc, &nomem));
	ck_assert_int_eq(nomem, 0);
	pgn_xml_free(lc);
}
END_TEST

START_TEST(test_item_to_legacy)
{
	struct pgn_xml *item = parse(
		"<item xmlns='http://jabber.org/protocol/pubsub' "
		"id='r@conf.example'><conference xmlns='urn:xmpp:bookmarks:1' "
		"name='Room'><nick>jc</nick><extensions><x xmlns='urn:example'/>"
		"</extensions></conference></item>");
	struct pgn_xml *lc, *other;
	int nomem = 1;

	lc = bm_legacy_from_item(item, &nomem);
	ck_assert_ptr_nonnull(lc);
	ck_assert(bm_is(lc, NS_BM_LEGACY, "conference"));
	ck_assert_str_eq(pgn_xml_attr(lc, "jid"), "r@conf.example");
	ck_assert_str_eq(pgn_xml_attr(lc, "name"), "Room");
	ck_assert_str_eq(pgn_xml_attr(lc, "autojoin"), "false");
	ck_assert_ptr_nonnull(pgn_xml_child(lc, NS_BM_LEGACY, "nick"));
	ck_assert_ptr_null(pgn_xml_child(lc, NS_BM_LEGACY, "password"));
	ck_assert_ptr_nonnull(pgn_xml_child(lc, "urn:example", "x"));
	pgn_xml_free(lc);
	pgn_xml_free(item);

	/* an item of some other payload is no bookmark */
	other = parse("<item xmlns='http://jabber.org/protocol/pubsub' id='a'>"
		      "<x xmlns='urn:example'/></item>");
	ck_assert_ptr_null(bm_legacy_from_item(other, &nomem));
	ck_assert_int_eq(nomem, 0);
	ck_assert_ptr_null(bm_canonical(other));
	pgn_xml_free(other);
}
END_TEST

/* What a legacy client writes back after reading an item is the same
 * bookmark: no republish. */
START_TEST(test_round_trip_unchanged)
{
	struct pgn_xml *item = parse(
		"<item xmlns='http://jabber.org/protocol/pubsub' "
		"id='r@conf.example'><conference xmlns='urn:xmpp:bookmarks:1' "
		"autojoin='1' name='Room'><nick>jc</nick><password>p</password>"
		"<extensions><x xmlns='urn:example' v='2'/></extensions>"
		"</conference></item>");
	const struct pgn_xml *existing[1] = { item };
	struct pgn_xml *lc, *again, *changed;
	int nomem;
	char *a, *b;

	lc = bm_legacy_from_item(item, &nomem);
	again = bm_item_from_legacy(lc, &nomem);
	ck_assert_ptr_nonnull(again);
	a = str(again, NS_PUBSUB);
	b = bm_canonical(item);
	ck_assert_str_eq(a, b);
	ck_assert(bm_unchanged(again, 1, existing));
	/* a changed nick is a change */
	pgn_xml_set_attr(lc, "name", "Renamed");
	changed = bm_item_from_legacy(lc, &nomem);
	ck_assert(!bm_unchanged(changed, 1, existing));
	/* a room the node does not have is not unchanged */
	pgn_xml_set_attr(changed, "id", "other@conf.example");
	ck_assert(!bm_unchanged(changed, 1, existing));
	ck_assert(!bm_unchanged(again, 0, existing));
	free(a);
	free(b);
	pgn_xml_free(changed);
	pgn_xml_free(again);
	pgn_xml_free(lc);
	pgn_xml_free(item);
}
END_TEST

START_TEST(test_wanted)
{
	struct pgn_xml *wrap = pgn_xml_new(NULL, "wrap");
	static const char doc[] =
		"<storage xmlns='storage:bookmarks'>"
		"<conference jid='a@c' name='first'/><url url='https://x/'/>"
		"<conference jid='a@c' name='second'/><conference name='nojid'/>"
		"</storage><other xmlns='urn:example'><conference jid='z@c'/>"
		"</other><storage xmlns='storage:bookmarks'>"
		"<conference jid='b@c'/></storage>";
	struct pgn_xml **out = calloc(MAX_BOOKMARKS, sizeof(*out));
	size_t n = 99;

	ck_assert_ptr_nonnull(out);
	ck_assert_int_eq(pgn_xml_parse_into(wrap, doc, sizeof(doc) - 1), 0);
	ck_assert_int_eq(bm_wanted(wrap, out, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(pgn_xml_attr(out[0], "id"), "a@c");
	ck_assert_str_eq(pgn_xml_attr(pgn_xml_first_child(out[0]), "name"),
			 "first");
	ck_assert_str_eq(pgn_xml_attr(out[1], "id"), "b@c");
	for (size_t i = 0; i < n; i++)
		pgn_xml_free(out[i]);
	free(out);
	pgn_xml_free(wrap);
}
END_TEST

START_TEST(test_wanted_bounded)
{
	size_t len = 64 + (size_t)(MAX_BOOKMARKS + 10) * 40, n = 0;
	char *doc = malloc(len), *p = doc;
	struct pgn_xml *wrap = pgn_xml_new(NULL, "wrap");
	struct pgn_xml **out = calloc(MAX_BOOKMARKS, sizeof(*out));

	ck_assert_ptr_nonnull(doc);
	ck_assert_ptr_nonnull(out);
	p += sprintf(p, "<storage xmlns='storage:bookmarks'>");
	for (int i = 0; i < MAX_BOOKMARKS + 10; i++)
		p += sprintf(p, "<conference jid='r%d@c'/>", i);
	p += sprintf(p, "</storage>");
	ck_assert_int_eq(pgn_xml_parse_into(wrap, doc, (size_t)(p - doc)), 0);
	ck_assert_int_eq(bm_wanted(wrap, out, &n), 0);
	ck_assert_uint_eq(n, MAX_BOOKMARKS);
	for (size_t i = 0; i < n; i++)
		pgn_xml_free(out[i]);
	free(out);
	free(doc);
	pgn_xml_free(wrap);
}
END_TEST

START_TEST(test_options)
{
	static const char *const want[][2] = {
		{ "FORM_TYPE",
		  "http://jabber.org/protocol/pubsub#publish-options" },
		{ "pubsub#access_model", "whitelist" },
		{ "pubsub#max_items", "max" },
		{ "pubsub#send_last_published_item", "never" },
		{ "pubsub#persist_items", "true" },
	};
	struct pgn_xml *x = bm_options();
	size_t found = 0;

	ck_assert_ptr_nonnull(x);
	ck_assert_str_eq(pgn_xml_attr(x, "type"), "submit");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		for (struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
		     f = pgn_xml_next(f)) {
			char *v;
			if (strcmp(pgn_xml_attr(f, "var"), want[i][0]) != 0)
				continue;
			v = pgn_xml_child_text(f, NS_XDATA, "value");
			ck_assert_ptr_nonnull(v);
			ck_assert_str_eq(v, want[i][1]);
			free(v);
			found++;
		}
	ck_assert_uint_eq(found, sizeof(want) / sizeof(want[0]));
	pgn_xml_free(x);
}
END_TEST

static Suite *
bookmarks_suite(void)
{
	Suite *s = suite_create("bookmarks");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_legacy_to_item);
	tcase_add_test(tc, test_item_to_legacy);
	tcase_add_test(tc, test_round_trip_unchanged);
	tcase_add_test(tc, test_wanted);
	tcase_add_test(tc, test_wanted_bounded);
	tcase_add_test(tc, test_options);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(bookmarks_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
