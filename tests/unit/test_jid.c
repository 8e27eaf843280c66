/* Unit tests for JID parsing and preparation (RFC 7622 §3.5 examples). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "pigeon/jid.h"

static const char *const valid_jids[] = {
	"juliet@example.com",
	"juliet@example.com/foo",
	"juliet@example.com/foo bar",
	"juliet@example.com/foo@bar",
	"foo\\20bar@example.com",
	"fussball@example.com",
	"fu\303\237ball@example.com",          /* fußball */
	"\xcf\x80@example.com",                  /* π */
	"\xce\xa3@example.com/foo",              /* Σ */
	"\xcf\x83@example.com/foo",              /* σ */
	"\xcf\x82@example.com/foo",              /* ς */
	"king@example.com/\xe2\x99\x9a",         /* ♚ */
	"example.com",
	"example.com/foobar",
	"a.example.com/b@example.net",
	"user@[::1]",
	"user@127.0.0.1/r",
	"[2001:db8::1]",
	"juliet@exa/mple.com/x@y",              /* domain "exa" */
	"component_x.example.com",
};

static const char *const invalid_jids[] = {
	"\"juliet\"@example.com",
	"foo bar@example.com",
	"juliet@example.com/",
	"@example.com/",
	"@example.com",
	"juliet@",
	"juliet@/foo",
	"",
	"/foo",
	"a@b@example.com",
	"example..com",
	".example.com",
	"example.com..",
	".",
	"juliet@exa mple.com",
	"juliet@exa mple.com/x@y",
	"juliet@[::1",
	"juliet@[not:an:address]",
	"jul<iet@example.com",
	"juliet@example.com/\xff\xfe",           /* not UTF-8 */
	"user@example.com/\330\247a",          /* bidi mixed RandAL+L */
};

START_TEST(test_valid)
{
	struct pgn_jid *j = NULL;

	ck_assert_msg(pgn_jid_parse(valid_jids[_i], &j) == 0,
		      "should be valid: %s", valid_jids[_i]);
	ck_assert_ptr_nonnull(j);
	ck_assert_ptr_nonnull(j->domain);
	ck_assert_ptr_nonnull(j->full);
	ck_assert_ptr_nonnull(j->bare);
	pgn_jid_free(j);
}
END_TEST

START_TEST(test_invalid)
{
	struct pgn_jid *j = (struct pgn_jid *)1;

	ck_assert_msg(pgn_jid_parse(invalid_jids[_i], &j) == -EINVAL,
		      "should be invalid: %s", invalid_jids[_i]);
	ck_assert_ptr_null(j);
}
END_TEST

static struct pgn_jid *
parse_ok(const char *s)
{
	struct pgn_jid *j = NULL;

	ck_assert_msg(pgn_jid_parse(s, &j) == 0, "parse %s", s);
	return j;
}

START_TEST(test_parts)
{
	struct pgn_jid *j;

	j = parse_ok("juliet@example.com/foo@bar");
	ck_assert_str_eq(j->node, "juliet");
	ck_assert_str_eq(j->domain, "example.com");
	ck_assert_str_eq(j->resource, "foo@bar");
	ck_assert_str_eq(j->full, "juliet@example.com/foo@bar");
	ck_assert_str_eq(j->bare, "juliet@example.com");
	pgn_jid_free(j);

	j = parse_ok("a.example.com/b@example.net");
	ck_assert_ptr_null(j->node);
	ck_assert_str_eq(j->domain, "a.example.com");
	ck_assert_str_eq(j->resource, "b@example.net");
	ck_assert_str_eq(j->bare, "a.example.com");
	pgn_jid_free(j);

	j = parse_ok("example.com");
	ck_assert_ptr_null(j->node);
	ck_assert_ptr_null(j->resource);
	ck_assert_str_eq(j->full, "example.com");
	ck_assert_str_eq(j->bare, "example.com");
	pgn_jid_free(j);

	j = parse_ok("foo\\20bar@example.com");
	ck_assert_str_eq(j->node, "foo\\20bar");
	pgn_jid_free(j);

	j = parse_ok("user@[::1]");
	ck_assert_str_eq(j->domain, "[::1]");
	pgn_jid_free(j);
}
END_TEST

START_TEST(test_case_folding)
{
	struct pgn_jid *j;

	j = parse_ok("JuLiEt@ExAmPlE.CoM/FoO");
	ck_assert_str_eq(j->node, "juliet");
	ck_assert_str_eq(j->domain, "example.com");
	ck_assert_str_eq(j->resource, "FoO");
	ck_assert_str_eq(j->full, "juliet@example.com/FoO");
	pgn_jid_free(j);

	/* fußball folds to fussball under stringprep. */
	j = parse_ok("fu\xc3\x9f" "ball@example.com");
	ck_assert_str_eq(j->node, "fussball");
	pgn_jid_free(j);

	/* Σ folds to σ in the node. */
	j = parse_ok("\xce\xa3@example.com");
	ck_assert_str_eq(j->node, "\xcf\x83");
	pgn_jid_free(j);

	/* Resource keeps its case, including non-ASCII. */
	j = parse_ok("king@example.com/\xce\xa3X");
	ck_assert_str_eq(j->resource, "\xce\xa3X");
	pgn_jid_free(j);
}
END_TEST

START_TEST(test_trailing_dot)
{
	struct pgn_jid *j;

	j = parse_ok("juliet@example.com./r");
	ck_assert_str_eq(j->domain, "example.com");
	ck_assert_str_eq(j->full, "juliet@example.com/r");
	pgn_jid_free(j);

	/* IDNA2003 separator U+3002 counts as a dot too. */
	j = parse_ok("example\xe3\x80\x82" "com\xe3\x80\x82");
	ck_assert_str_eq(j->domain, "example.com");
	pgn_jid_free(j);
}
END_TEST

START_TEST(test_lengths)
{
	char buf[1024 + 64];
	struct pgn_jid *j = NULL;

	/* 1023-byte node is the maximum. */
	memset(buf, 'a', 1023);
	strcpy(buf + 1023, "@example.com");
	ck_assert_int_eq(pgn_jid_parse(buf, &j), 0);
	ck_assert_uint_eq(strlen(j->node), 1023);
	pgn_jid_free(j);

	memset(buf, 'a', 1024);
	strcpy(buf + 1024, "@example.com");
	ck_assert_int_eq(pgn_jid_parse(buf, &j), -EINVAL);
	ck_assert_ptr_null(j);

	memset(buf, 'r', 1024);
	buf[1024] = '\0';
	memcpy(buf, "a@b.c/", 6);
	ck_assert_int_eq(pgn_jid_parse(buf, &j), 0); /* 1018-byte resource */
	pgn_jid_free(j);

	/* Long input that is all mapped away still yields an error, not a
	 * crash: U+00AD (soft hyphen) maps to nothing. */
	{
		char *big = malloc(20000);

		ck_assert_ptr_nonnull(big);
		for (int i = 0; i < 9000; i++)
			memcpy(big + 2 * i, "\xc2\xad", 2);
		strcpy(big + 18000, "x@example.com");
		ck_assert_int_eq(pgn_jid_parse(big, &j), -EINVAL);
		free(big);
	}
}
END_TEST

START_TEST(test_equal_copy)
{
	struct pgn_jid *a = parse_ok("Juliet@Example.com/balcony");
	struct pgn_jid *b = parse_ok("juliet@example.com/balcony");
	struct pgn_jid *c = parse_ok("juliet@example.com/Balcony");
	struct pgn_jid *bare, *cp, *wr = NULL, *wr2 = NULL;

	ck_assert_int_eq(pgn_jid_equal(a, b), 1);
	ck_assert_int_eq(pgn_jid_equal(a, c), 0);
	ck_assert_int_eq(pgn_jid_equal(a, NULL), 0);

	bare = pgn_jid_bare_copy(a);
	ck_assert_ptr_nonnull(bare);
	ck_assert_ptr_null(bare->resource);
	ck_assert_str_eq(bare->full, "juliet@example.com");
	ck_assert_int_eq(pgn_jid_equal(a, bare), 0);

	cp = pgn_jid_copy(a);
	ck_assert_ptr_nonnull(cp);
	ck_assert_int_eq(pgn_jid_equal(a, cp), 1);
	ck_assert_ptr_ne(cp->full, a->full);

	ck_assert_int_eq(pgn_jid_with_resource(bare, "Orchard", &wr), 0);
	ck_assert_str_eq(wr->full, "juliet@example.com/Orchard");
	ck_assert_str_eq(wr->bare, "juliet@example.com");
	ck_assert_int_eq(pgn_jid_with_resource(wr, NULL, &wr2), 0);
	ck_assert_int_eq(pgn_jid_equal(wr2, bare), 1);
	pgn_jid_free(wr2);
	ck_assert_int_eq(pgn_jid_with_resource(wr, "", &wr2), -EINVAL);
	ck_assert_ptr_null(wr2);

	pgn_jid_free(a);
	pgn_jid_free(b);
	pgn_jid_free(c);
	pgn_jid_free(bare);
	pgn_jid_free(cp);
	pgn_jid_free(wr);
	pgn_jid_free(NULL);
}
END_TEST

START_TEST(test_make)
{
	struct pgn_jid *j = NULL;

	ck_assert_int_eq(pgn_jid_make("Romeo", "Example.NET.", "Orchard", &j),
			 0);
	ck_assert_str_eq(j->full, "romeo@example.net/Orchard");
	pgn_jid_free(j);

	ck_assert_int_eq(pgn_jid_make(NULL, "example.net", NULL, &j), 0);
	ck_assert_str_eq(j->full, "example.net");
	ck_assert_ptr_null(j->node);
	pgn_jid_free(j);

	ck_assert_int_eq(pgn_jid_make("a@b", "example.net", NULL, &j),
			 -EINVAL);
	ck_assert_int_eq(pgn_jid_make("", "example.net", NULL, &j), -EINVAL);
	ck_assert_int_eq(pgn_jid_make("a", "exa/mple.net", NULL, &j),
			 -EINVAL);
	ck_assert_int_eq(pgn_jid_make("a", NULL, NULL, &j), -EINVAL);
	ck_assert_int_eq(pgn_jid_make("a", "example.net", "", &j), -EINVAL);
	ck_assert_ptr_null(j);
}
END_TEST

START_TEST(test_prep_single)
{
	char *s = NULL;

	ck_assert_int_eq(pgn_jid_nodeprep("JULIET", &s), 0);
	ck_assert_str_eq(s, "juliet");
	free(s);
	ck_assert_int_eq(pgn_jid_nameprep("EXAMPLE.com.", &s), 0);
	ck_assert_str_eq(s, "example.com");
	free(s);
	ck_assert_int_eq(pgn_jid_resourceprep("Foo Bar", &s), 0);
	ck_assert_str_eq(s, "Foo Bar");
	free(s);
	ck_assert_int_eq(pgn_jid_nodeprep("a b", &s), -EINVAL);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(pgn_jid_nodeprep("", &s), -EINVAL);
	ck_assert_int_eq(pgn_jid_nameprep("", &s), -EINVAL);
	ck_assert_int_eq(pgn_jid_resourceprep("", &s), -EINVAL);
}
END_TEST

static Suite *
jid_suite(void)
{
	Suite *s = suite_create("jid");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_valid, 0,
			    (int)(sizeof(valid_jids) / sizeof(valid_jids[0])));
	tcase_add_loop_test(tc, test_invalid, 0,
			    (int)(sizeof(invalid_jids) /
				  sizeof(invalid_jids[0])));
	tcase_add_test(tc, test_parts);
	tcase_add_test(tc, test_case_folding);
	tcase_add_test(tc, test_trailing_dot);
	tcase_add_test(tc, test_lengths);
	tcase_add_test(tc, test_equal_copy);
	tcase_add_test(tc, test_make);
	tcase_add_test(tc, test_prep_single);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(jid_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
