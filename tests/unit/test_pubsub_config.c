/* Node configuration of the PubSub engine (modules/pubsub/config.c):
 * defaults, the node_config and publish-options forms, the comparison of
 * publish-options with a node, and the store encoding. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "pigeon/xml.h"
#include "../../modules/pubsub/pubsub.h"

/* A submitted form of type ft with the fields var=value ("a\nb": two
 * values), NULL-terminated pairs. */
static struct pgn_xml *
make_form(const char *ft, const char *const *kv)
{
	struct pgn_xml *x = pgn_xml_new(PS_NS_XDATA, "x"), *f, *v;

	ck_assert_ptr_nonnull(x);
	pgn_xml_set_attr(x, "type", "submit");
	f = pgn_xml_add_child(x, NULL, "field");
	pgn_xml_set_attr(f, "var", "FORM_TYPE");
	v = pgn_xml_add_child(f, NULL, "value");
	pgn_xml_add_text(v, ft, strlen(ft));
	for (size_t i = 0; kv[i] != NULL; i += 2) {
		const char *p = kv[i + 1];
		f = pgn_xml_add_child(x, NULL, "field");
		pgn_xml_set_attr(f, "var", kv[i]);
		while (1) {
			const char *e = strchr(p, '\n');
			size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
			v = pgn_xml_add_child(f, NULL, "value");
			pgn_xml_add_text(v, p, n);
			if (e == NULL)
				break;
			p = e + 1;
		}
	}
	return x;
}

START_TEST(test_defaults)
{
	struct ps_config c;

	ps_config_default(&c, 1);
	ck_assert_int_eq(c.access_model, PS_ACCESS_PRESENCE);
	ck_assert_int_eq(c.max_items, 1);
	ck_assert_int_eq(c.persist_items, 1);
	ck_assert_int_eq(c.send_last_published_item,
			 PS_SEND_LAST_ON_SUB_AND_PRESENCE);
	ck_assert_int_eq(c.deliver_payloads, 1);
	ck_assert_int_eq(c.notify_retract, 1);
	ps_config_default(&c, 0);
	ck_assert_int_eq(c.access_model, PS_ACCESS_OPEN);
	ck_assert_int_eq(c.send_last_published_item, PS_SEND_LAST_NEVER);
	ps_config_clear(&c);
}
END_TEST

START_TEST(test_apply_form)
{
	static const char *const kv[] = {
		"pubsub#access_model", "whitelist",
		"pubsub#max_items", "max",
		"pubsub#persist_items", "true",
		"pubsub#notify_retract", "0",
		"pubsub#title", "Bookmarks",
		"pubsub#roster_groups_allowed", "Friends\nFamily",
		"pubsub#notification_type", "normal",
		"pubsub#description", "ignored", NULL};
	struct ps_config c;
	struct pgn_xml *x = make_form(PS_FORM_NODE_CONFIG, kv);
	const char *bad = "x";

	ps_config_default(&c, 1);
	ck_assert_int_eq(ps_config_apply_form(&c, x, 1000, &bad), 0);
	ck_assert_ptr_null(bad);
	ck_assert_int_eq(c.access_model, PS_ACCESS_WHITELIST);
	ck_assert_int_eq(c.max_items, PS_MAX_ITEMS_MAX);
	ck_assert_int_eq(c.notify_retract, 0);
	ck_assert_int_eq(c.notification_type, PS_NOTIFY_NORMAL);
	ck_assert_str_eq(c.title, "Bookmarks");
	ck_assert_str_eq(c.roster_groups_allowed, "Friends\nFamily");
	ps_config_clear(&c);
	pgn_xml_free(x);
}
END_TEST

START_TEST(test_apply_form_errors)
{
	static const char *const bad_enum[] = {"pubsub#access_model", "all",
					       NULL};
	static const char *const too_many[] = {"pubsub#max_items", "1001",
					       NULL};
	static const char *const zero[] = {"pubsub#max_items", "0", NULL};
	static const char *const bad_bool[] = {"pubsub#persist_items", "yes",
					       NULL};
	static const char *const unknown[] = {"pubsub#frobnicate", "1", NULL};
	static const char *const other_ns[] = {"urn:example#opt", "1",
					       "pubsub#access_model", "open",
					       NULL};
	const char *const *cases[] = {bad_enum, too_many, zero, bad_bool,
				      unknown};
	struct ps_config c;
	const char *bad;

	ps_config_default(&c, 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pgn_xml *x = make_form(PS_FORM_NODE_CONFIG, cases[i]);
		ck_assert_int_eq(ps_config_apply_form(&c, x, 1000, &bad),
				 -EINVAL);
		ck_assert_str_eq(bad, cases[i][0]);
		/* unchanged on failure */
		ck_assert_int_eq(c.access_model, PS_ACCESS_PRESENCE);
		ck_assert_int_eq(c.max_items, 1);
		pgn_xml_free(x);
	}
	/* another specification's field: refused in node_config, skipped
	 * in publish-options (XEP-0060 §7.1.5) */
	struct pgn_xml *x = make_form(PS_FORM_NODE_CONFIG, other_ns);
	ck_assert_int_eq(ps_config_apply_form(&c, x, 1000, &bad), -EINVAL);
	pgn_xml_free(x);
	x = make_form(PS_FORM_PUBLISH_OPTIONS, other_ns);
	ck_assert_int_eq(ps_config_apply_form(&c, x, 1000, &bad), 0);
	ck_assert_int_eq(c.access_model, PS_ACCESS_OPEN);
	pgn_xml_free(x);
	/* a form of another type */
	x = make_form("urn:example:form", bad_enum);
	ck_assert_int_eq(ps_config_apply_form(&c, x, 1000, &bad), -EINVAL);
	pgn_xml_free(x);
	ps_config_clear(&c);
}
END_TEST

START_TEST(test_satisfies)
{
	static const char *const same[] = {
		"pubsub#access_model", "presence", "pubsub#persist_items", "1",
		"pubsub#max_items", "1", NULL};
	static const char *const same_other_spelling[] = {
		"pubsub#persist_items", "true", NULL};
	static const char *const differs[] = {"pubsub#access_model", "open",
					      NULL};
	static const char *const unknown[] = {"pubsub#frobnicate", "1", NULL};
	static const char *const max[] = {"pubsub#max_items", "max", NULL};
	struct ps_config c;
	struct pgn_xml *x;

	ps_config_default(&c, 1);
	x = make_form(PS_FORM_PUBLISH_OPTIONS, same);
	ck_assert_int_eq(ps_config_satisfies(&c, x), 1);
	pgn_xml_free(x);
	x = make_form(PS_FORM_PUBLISH_OPTIONS, same_other_spelling);
	ck_assert_int_eq(ps_config_satisfies(&c, x), 1);
	pgn_xml_free(x);
	x = make_form(PS_FORM_PUBLISH_OPTIONS, differs);
	ck_assert_int_eq(ps_config_satisfies(&c, x), 0);
	pgn_xml_free(x);
	x = make_form(PS_FORM_PUBLISH_OPTIONS, unknown);
	ck_assert_int_eq(ps_config_satisfies(&c, x), 0);
	pgn_xml_free(x);
	x = make_form(PS_FORM_PUBLISH_OPTIONS, max);
	ck_assert_int_eq(ps_config_satisfies(&c, x), 0);
	c.max_items = PS_MAX_ITEMS_MAX;
	ck_assert_int_eq(ps_config_satisfies(&c, x), 1);
	pgn_xml_free(x);
	ps_config_clear(&c);
}
END_TEST

START_TEST(test_encoding_round_trip)
{
	struct ps_config c, d;
	char *a, *b;

	ps_config_default(&c, 0);
	c.access_model = PS_ACCESS_ROSTER;
	c.max_items = 42;
	c.deliver_payloads = 0;
	c.title = strdup("multi\nline \\ title=x");
	c.roster_groups_allowed = strdup("A\nB");
	a = ps_config_encode(&c);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(ps_config_decode(&d, a, 1), 0);
	ck_assert_int_eq(d.access_model, PS_ACCESS_ROSTER);
	ck_assert_int_eq(d.max_items, 42);
	ck_assert_int_eq(d.deliver_payloads, 0);
	ck_assert_str_eq(d.title, "multi\nline \\ title=x");
	ck_assert_str_eq(d.roster_groups_allowed, "A\nB");
	ck_assert_ptr_null(d.type);
	b = ps_config_encode(&d);
	ck_assert_str_eq(a, b);
	free(a);
	free(b);
	ps_config_clear(&d);
	/* unknown keys (another version) are skipped; missing ones keep
	 * the defaults of the service kind */
	ck_assert_int_eq(ps_config_decode(&d, "future_option=1\n"
					      "max_items=max\n", 1),
			 0);
	ck_assert_int_eq(d.max_items, PS_MAX_ITEMS_MAX);
	ck_assert_int_eq(d.access_model, PS_ACCESS_PRESENCE);
	ps_config_clear(&d);
	ck_assert_int_eq(ps_config_decode(&d, "garbage\n", 0), -EINVAL);
	ck_assert_int_eq(d.access_model, PS_ACCESS_OPEN);
	ps_config_clear(&d);
	/* copy */
	ck_assert_int_eq(ps_config_copy(&d, &c), 0);
	ck_assert_ptr_ne(d.title, c.title);
	ck_assert_str_eq(d.title, c.title);
	ps_config_clear(&d);
	ps_config_clear(&c);
}
END_TEST

START_TEST(test_form_out)
{
	struct ps_config c;
	struct pgn_xml *x;
	int seen_access = 0, seen_groups = 0;

	ps_config_default(&c, 1);
	c.roster_groups_allowed = strdup("A\nB");
	x = ps_config_form(&c, "n");
	ck_assert_ptr_nonnull(x);
	ck_assert_str_eq(pgn_xml_attr(x, "type"), "form");
	for (struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
	     f = pgn_xml_next(f)) {
		const char *var = pgn_xml_attr(f, "var");
		if (strcmp(var, "pubsub#access_model") == 0) {
			char *v = pgn_xml_child_text(f, NULL, "value");
			ck_assert_str_eq(v, "presence");
			ck_assert_str_eq(pgn_xml_attr(f, "type"),
					 "list-single");
			free(v);
			seen_access = 1;
		}
		if (strcmp(var, "pubsub#roster_groups_allowed") == 0) {
			int n = 0;
			for (struct pgn_xml *v = pgn_xml_first_child(f);
			     v != NULL; v = pgn_xml_next(v))
				n += strcmp(pgn_xml_name(v), "value") == 0;
			ck_assert_int_eq(n, 2);
			seen_groups = 1;
		}
	}
	ck_assert(seen_access && seen_groups);
	/* The form a client gets back submits cleanly. */
	pgn_xml_set_attr(x, "type", "submit");
	{
		struct ps_config d;
		const char *bad;
		ps_config_default(&d, 0);
		ck_assert_int_eq(ps_config_apply_form(&d, x, 1000, &bad), 0);
		ck_assert_int_eq(d.access_model, PS_ACCESS_PRESENCE);
		ck_assert_str_eq(d.roster_groups_allowed, "A\nB");
		ps_config_clear(&d);
	}
	pgn_xml_free(x);
	ps_config_clear(&c);
}
END_TEST

START_TEST(test_affiliations)
{
	ck_assert_str_eq(ps_affiliation_name(PS_AFF_PUBLISH_ONLY),
			 "publish-only");
	ck_assert_int_eq(ps_affiliation_parse("owner"), PS_AFF_OWNER);
	ck_assert_int_eq(ps_affiliation_parse("none"), PS_AFF_NONE);
	ck_assert_int_eq(ps_affiliation_parse("boss"), -1);
}
END_TEST

static Suite *
pubsub_config_suite(void)
{
	Suite *s = suite_create("pubsub_config");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_apply_form);
	tcase_add_test(tc, test_apply_form_errors);
	tcase_add_test(tc, test_satisfies);
	tcase_add_test(tc, test_encoding_round_trip);
	tcase_add_test(tc, test_form_out);
	tcase_add_test(tc, test_affiliations);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(pubsub_config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
