/* Typed module options (src/core/modopt.c): what the core refuses in a
 * module's `modules:` entry, and the values a module then reads. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "modopt.h"

static const char *const policies[] = { "drop_oldest", "refuse", NULL };

static const struct pgn_module_opt opts[] = {
	{ .name = "max_items", .type = PGN_OPT_INT, .def = "100", .min = 1,
	  .max = 1000, .doc = "items per list" },
	{ .name = "include_body", .type = PGN_OPT_BOOL, .def = "false",
	  .doc = "body in notifications" },
	{ .name = "node", .type = PGN_OPT_STRING, .def = "https://x",
	  .doc = "caps node" },
	{ .name = "policy", .type = PGN_OPT_ENUM, .def = "drop_oldest",
	  .values = policies, .doc = "what to do" },
	{ .name = "secret", .type = PGN_OPT_STRING, .doc = "unset" },
	{ .name = NULL },
};

static const struct pgn_module_def def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_test",
	.options = opts,
};

/* Checks one key: value entry written on line 7. */
static int
check1(const struct pgn_module_def *d, const char *key, const char *value,
       struct pgn_modopt_val *vals, char *err, size_t errlen)
{
	struct pgn_cfg_opt o = { (char *)key, (char *)value, 7, 0 };
	struct pgn_cfg_module cm = { (char *)"mod_test", &o, 1, 5 };

	err[0] = '\0';
	return pgn_modopt_check(d, &cm, "pigeon.yml", vals, err, errlen);
}

START_TEST(defaults_without_options)
{
	struct pgn_cfg_module cm = { (char *)"mod_test", NULL, 0, 5 };
	struct pgn_modopt_val v[5];
	char err[256];

	ck_assert_uint_eq(pgn_modopt_count(opts), 5);
	ck_assert_uint_eq(pgn_modopt_count(NULL), 0);
	ck_assert_int_eq(pgn_modopt_check(&def, &cm, "p.yml", v, err,
					  sizeof(err)),
			 0);
	ck_assert_int_eq(v[0].n, 100);
	ck_assert_int_eq(v[1].n, 0);
	ck_assert_str_eq(v[2].s, "https://x");
	ck_assert_int_eq(v[3].n, 0);
	ck_assert_str_eq(v[3].s, "drop_oldest");
	ck_assert_ptr_null(v[4].s);
}
END_TEST

START_TEST(values_parsed)
{
	struct pgn_modopt_val v[5];
	char err[256];

	ck_assert_int_eq(check1(&def, "max_items", "1000", v, err,
				sizeof(err)),
			 0);
	ck_assert_int_eq(v[0].n, 1000);
	for (const char *const *t = (const char *const[]){ "true", "yes",
							   "on", "1", NULL };
	     *t != NULL; t++) {
		ck_assert_int_eq(check1(&def, "include_body", *t, v, err,
					sizeof(err)),
				 0);
		ck_assert_int_eq(v[1].n, 1);
	}
	ck_assert_int_eq(check1(&def, "include_body", "off", v, err,
				sizeof(err)),
			 0);
	ck_assert_int_eq(v[1].n, 0);
	ck_assert_int_eq(check1(&def, "policy", "refuse", v, err,
				sizeof(err)),
			 0);
	ck_assert_int_eq(v[3].n, 1);
	ck_assert_int_eq(check1(&def, "secret", "s3", v, err, sizeof(err)),
			 0);
	ck_assert_str_eq(v[4].s, "s3");
	/* A check alone needs no room for values. */
	ck_assert_int_eq(check1(&def, "node", "n", NULL, err, sizeof(err)),
			 0);
}
END_TEST

START_TEST(unknown_option_suggests)
{
	char err[512];

	ck_assert_int_eq(check1(&def, "max_iems", "5", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "pigeon.yml:7: module mod_test: "
					  "unknown option 'max_iems'"));
	ck_assert_ptr_nonnull(strstr(err, "did you mean 'max_items'?"));
	/* Nothing close: the list instead. */
	ck_assert_int_eq(check1(&def, "colour", "red", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_null(strstr(err, "did you mean"));
	ck_assert_ptr_nonnull(strstr(err, "max_items, include_body"));
}
END_TEST

START_TEST(wrong_type_or_range)
{
	char err[512];

	ck_assert_int_eq(check1(&def, "max_items", "lots", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "pigeon.yml:7: module mod_test: "
					  "option max_items: expected an "
					  "integer from 1 to 1000, got 'lots'"));
	ck_assert_int_eq(check1(&def, "max_items", "0", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(check1(&def, "max_items", "1001", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(check1(&def, "max_items", "12abc", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(check1(&def, "max_items", "", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(check1(&def, "max_items", "99999999999999999999",
				NULL, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(check1(&def, "include_body", "maybe", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "expected true or false"));
	ck_assert_int_eq(check1(&def, "policy", "refuze", NULL, err,
				sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "drop_oldest, refuse"));
	ck_assert_ptr_nonnull(strstr(err, "did you mean 'refuse'?"));
}
END_TEST

START_TEST(bad_default_is_the_modules_bug)
{
	static const struct pgn_module_opt bad[] = {
		{ .name = "n", .type = PGN_OPT_INT, .def = "0", .min = 1,
		  .max = 2 },
		{ .name = NULL },
	};
	static const struct pgn_module_def d = { .abi = PGN_MODULE_ABI,
						 .name = "mod_test",
						 .options = bad };
	struct pgn_cfg_module cm = { (char *)"mod_test", NULL, 0, 5 };
	char err[512];

	ck_assert_int_eq(pgn_modopt_check(&d, &cm, "p.yml", NULL, err,
					  sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "p.yml:5: module mod_test"));
	ck_assert_ptr_nonnull(strstr(err, "the module is broken"));
}
END_TEST

START_TEST(no_options_declared)
{
	static const struct pgn_module_def d = { .abi = PGN_MODULE_ABI,
						 .name = "mod_test" };
	char err[512];

	ck_assert_int_eq(check1(&d, "anything", "1", NULL, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "it has no options"));
}
END_TEST

START_TEST(find_by_type)
{
	ck_assert_int_eq(pgn_modopt_find(opts, "node", 0), 2);
	ck_assert_int_eq(pgn_modopt_find(opts, "node", PGN_OPT_STRING), 2);
	ck_assert_int_eq(pgn_modopt_find(opts, "node", PGN_OPT_INT), -1);
	ck_assert_int_eq(pgn_modopt_find(opts, "nope", 0), -1);
	ck_assert_int_eq(pgn_modopt_find(NULL, "node", 0), -1);
}
END_TEST

/* PGN_OPT_LIST: a scalar split at commas and spaces, or a YAML list
 * (items joined with newlines by the config parser); item count and
 * size limits; a list given to an option of another type. */
static const struct pgn_module_opt list_opts[] = {
	{ .name = "exempt", .type = PGN_OPT_LIST, .def = "", .max = 3,
	  .doc = "JIDs" },
	{ .name = "flag", .type = PGN_OPT_BOOL, .def = "false", .doc = "b" },
	{ .name = NULL },
};

static const struct pgn_module_def list_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_test",
	.options = list_opts,
};

static int
check_list1(const char *key, const char *value, int list, char *err,
	    size_t errlen)
{
	struct pgn_cfg_opt o = { (char *)key, (char *)value, 7, list };
	struct pgn_cfg_module cm = { (char *)"mod_test", &o, 1, 5 };
	struct pgn_modopt_val v[2];

	err[0] = '\0';
	return pgn_modopt_check(&list_def, &cm, "pigeon.yml", v, err, errlen);
}

START_TEST(list_split_and_checked)
{
	char err[256], big[PGN_OPT_LIST_ITEM_MAX + 2];
	size_t n = 99;
	char **items;

	items = pgn_modopt_split("", &n);
	ck_assert_ptr_nonnull(items);
	ck_assert_uint_eq(n, 0);
	ck_assert_ptr_null(items[0]);
	free(items);
	items = pgn_modopt_split(" bot@a.org,, echo.a.org\nc@d ,", &n);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(items[0], "bot@a.org");
	ck_assert_str_eq(items[1], "echo.a.org");
	ck_assert_str_eq(items[2], "c@d");
	ck_assert_ptr_null(items[3]);
	free(items);
	items = pgn_modopt_split("one", NULL);
	ck_assert_str_eq(items[0], "one");
	ck_assert_ptr_null(items[1]);
	free(items);

	ck_assert_int_eq(check_list1("exempt", "a, b c", 0, err, sizeof(err)),
			 0);
	ck_assert_int_eq(check_list1("exempt", "a\nb", 1, err, sizeof(err)),
			 0);
	ck_assert_int_eq(check_list1("exempt", "a b c d", 0, err,
				     sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(err, "pigeon.yml:7: module mod_test: option exempt: "
			      "expected at most 3 items, got 'a b c d'");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(check_list1("exempt", big, 0, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "expected items of at most 1023 "
					  "bytes"));
	big[sizeof(big) - 2] = '\0';
	ck_assert_int_eq(check_list1("exempt", big, 0, err, sizeof(err)), 0);
	/* A YAML list for a bool: refused, naming the option. */
	ck_assert_int_eq(check_list1("flag", "true", 1, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(err, "pigeon.yml:7: module mod_test: option flag: "
			      "expected a single value, got a list");
}
END_TEST

static Suite *
modopt_suite(void)
{
	Suite *s = suite_create("modopt");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, defaults_without_options);
	tcase_add_test(tc, values_parsed);
	tcase_add_test(tc, unknown_option_suggests);
	tcase_add_test(tc, wrong_type_or_range);
	tcase_add_test(tc, bad_default_is_the_modules_bug);
	tcase_add_test(tc, no_options_declared);
	tcase_add_test(tc, find_by_type);
	tcase_add_test(tc, list_split_and_checked);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(modopt_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
