/* Unit tests for the control protocol: netstring codec and command table. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <event2/buffer.h>

#include "pigeon/ctl.h"

/* Decodes the len bytes of raw fed in one piece; returns decode's result. */
static int
decode_raw(const void *raw, size_t len)
{
	struct evbuffer *in = evbuffer_new();
	char **argv = NULL;
	int argc = -1;
	int rc;

	ck_assert_ptr_nonnull(in);
	ck_assert_int_eq(evbuffer_add(in, raw, len), 0);
	rc = pgn_ctl_decode(in, &argc, &argv);
	if (rc == 1)
		pgn_ctl_argv_free(argc, argv);
	else
		ck_assert_ptr_null(argv);
	evbuffer_free(in);
	return rc;
}

static void
assert_round_trip(int argc, char *const *argv)
{
	struct evbuffer *buf = evbuffer_new();
	char **out = NULL;
	int outc = 0;

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pgn_ctl_encode(buf, argc, argv), 0);
	ck_assert_int_eq(pgn_ctl_decode(buf, &outc, &out), 1);
	ck_assert_int_eq(outc, argc);
	for (int i = 0; i < argc; i++)
		ck_assert_str_eq(out[i], argv[i]);
	ck_assert_ptr_null(out[argc]);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0);
	pgn_ctl_argv_free(outc, out);
	evbuffer_free(buf);
}

START_TEST(test_encode_bytes)
{
	char *argv[] = { "register", "alice", "localhost", "s3cret" };
	const char *want = "8:register,5:alice,9:localhost,6:s3cret,0:,";
	struct evbuffer *buf = evbuffer_new();
	size_t len;

	ck_assert_int_eq(pgn_ctl_encode(buf, 4, argv), 0);
	len = evbuffer_get_length(buf);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_int_eq(memcmp(evbuffer_pullup(buf, -1), want, len), 0);
	evbuffer_free(buf);
}
END_TEST

START_TEST(test_round_trip)
{
	char *one[] = { "status" };
	char *odd[] = { "kick_session", "a,b:c", "0:,", "\xff\xfe\x01\n\r",
			"with space", "10:" };
	assert_round_trip(1, one);
	assert_round_trip(6, odd);
}
END_TEST

START_TEST(test_round_trip_limits)
{
	char *argv[PGN_CTL_MAX_ARGS];
	char names[PGN_CTL_MAX_ARGS][8];

	for (int i = 0; i < PGN_CTL_MAX_ARGS; i++) {
		names[i][0] = (char)('a' + i);
		names[i][1] = '\0';
		argv[i] = names[i];
	}
	assert_round_trip(PGN_CTL_MAX_ARGS, argv);

	/* The largest single argument that fits: "LEN:" + bytes + ","
	 * + "0:," is exactly PGN_CTL_MAX_REQUEST. */
	size_t big = PGN_CTL_MAX_REQUEST - 3 - 1 - 5 - 1;
	char *arg = malloc(big + 1);

	ck_assert_ptr_nonnull(arg);
	memset(arg, 'x', big);
	arg[big] = '\0';
	char *bigv[] = { arg };
	assert_round_trip(1, bigv);

	/* One byte more does not fit. */
	char *arg2 = malloc(big + 2);
	struct evbuffer *buf = evbuffer_new();

	ck_assert_ptr_nonnull(arg2);
	memset(arg2, 'x', big + 1);
	arg2[big + 1] = '\0';
	char *bigv2[] = { arg2 };
	ck_assert_int_eq(pgn_ctl_encode(buf, 1, bigv2), -EINVAL);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0);
	evbuffer_free(buf);
	free(arg2);
	free(arg);
}
END_TEST

START_TEST(test_encode_refuses)
{
	char *argv[PGN_CTL_MAX_ARGS + 1];
	char *empty[] = { "kick_session", "u", "h", "r", "" };
	struct evbuffer *buf = evbuffer_new();

	for (int i = 0; i <= PGN_CTL_MAX_ARGS; i++)
		argv[i] = "a";
	ck_assert_int_eq(pgn_ctl_encode(buf, PGN_CTL_MAX_ARGS + 1, argv),
			 -EINVAL);
	ck_assert_int_eq(pgn_ctl_encode(buf, 0, argv), -EINVAL);
	/* "0:," would end the request early. */
	ck_assert_int_eq(pgn_ctl_encode(buf, 5, empty), -EINVAL);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0);
	evbuffer_free(buf);
}
END_TEST

START_TEST(test_partial)
{
	const char *req = "6:status,0:,";
	const char *next = "4:stop,0:,";
	struct evbuffer *in = evbuffer_new();
	char **argv = NULL;
	int argc = 0;
	size_t len = strlen(req);

	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 0);
	for (size_t i = 0; i < len; i++) {
		ck_assert_int_eq(evbuffer_add(in, req + i, 1), 0);
		int rc = pgn_ctl_decode(in, &argc, &argv);

		if (i + 1 < len) {
			ck_assert_int_eq(rc, 0);
			ck_assert_ptr_null(argv);
			/* Nothing is consumed before the end. */
			ck_assert_uint_eq(evbuffer_get_length(in), i + 1);
		} else {
			ck_assert_int_eq(rc, 1);
		}
	}
	ck_assert_int_eq(argc, 1);
	ck_assert_str_eq(argv[0], "status");
	pgn_ctl_argv_free(argc, argv);
	ck_assert_uint_eq(evbuffer_get_length(in), 0);

	/* Two requests in a row come out one at a time, and the bytes
	 * after the first stay for the next call. */
	ck_assert_int_eq(evbuffer_add(in, req, len), 0);
	ck_assert_int_eq(evbuffer_add(in, next, strlen(next)), 0);
	ck_assert_int_eq(evbuffer_add(in, "4:st", 4), 0);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 1);
	ck_assert_str_eq(argv[0], "status");
	pgn_ctl_argv_free(argc, argv);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 1);
	ck_assert_str_eq(argv[0], "stop");
	pgn_ctl_argv_free(argc, argv);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 0);
	ck_assert_uint_eq(evbuffer_get_length(in), 4);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_partial_long)
{
	/* A long request arriving in chunks over several buffer chains. */
	char *arg = malloc(40001);
	char *argv[] = { "register", "bob", "localhost", arg };
	struct evbuffer *enc = evbuffer_new();
	struct evbuffer *in = evbuffer_new();
	char **out = NULL;
	int outc = 0;
	char chunk[997];
	int n;

	ck_assert_ptr_nonnull(arg);
	memset(arg, 'p', 40000);
	arg[40000] = '\0';
	ck_assert_int_eq(pgn_ctl_encode(enc, 4, argv), 0);
	while ((n = evbuffer_remove(enc, chunk, sizeof(chunk))) > 0) {
		ck_assert_int_eq(evbuffer_add(in, chunk, (size_t)n), 0);
		int rc = pgn_ctl_decode(in, &outc, &out);

		if (evbuffer_get_length(enc) > 0)
			ck_assert_int_eq(rc, 0);
		else
			ck_assert_int_eq(rc, 1);
	}
	ck_assert_int_eq(outc, 4);
	ck_assert_str_eq(out[3], arg);
	pgn_ctl_argv_free(outc, out);
	evbuffer_free(in);
	evbuffer_free(enc);
	free(arg);
}
END_TEST

static const char *const malformed[] = {
	"x:status,0:,",         /* non-digit length */
	"-1:a,0:,",             /* sign */
	" 6:status,0:,",        /* space */
	"+6:status,0:,",
	"06:status,0:,",        /* leading zero */
	"00:,",                 /* leading zero on the terminator */
	":status,0:,",          /* no length */
	"6:status;0:,",         /* missing comma */
	"6:statusX0:,",
	"5:status,0:,",         /* length too short */
	"6:status,0:;",         /* bad terminator */
	"0:,",                  /* no command */
	"65537:",               /* over the limit */
	"100000:",
	"99999999999999999999999:",
};

START_TEST(test_malformed)
{
	const char *s = malformed[_i];

	ck_assert_msg(decode_raw(s, strlen(s)) == -EINVAL, "accepted: %s", s);
}
END_TEST

START_TEST(test_nul)
{
	static const char nul_arg[] = "6:st\0tus,0:,";
	static const char nul_early[] = "6:st\0";

	ck_assert_int_eq(decode_raw(nul_arg, sizeof(nul_arg) - 1), -EINVAL);
	/* Refused as soon as it is seen, not when the argument ends. */
	ck_assert_int_eq(decode_raw(nul_early, sizeof(nul_early) - 1),
			 -EINVAL);
	ck_assert_int_eq(decode_raw("6:st", 4), 0);
}
END_TEST

START_TEST(test_too_many_args)
{
	struct evbuffer *in = evbuffer_new();
	char **argv = NULL;
	int argc = 0;

	for (int i = 0; i < PGN_CTL_MAX_ARGS; i++)
		evbuffer_add(in, "1:a,", 4);
	/* Still acceptable: the terminator may come. */
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 0);
	evbuffer_add(in, "1:a,0:,", 7);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), -EINVAL);
	ck_assert_ptr_null(argv);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_too_long)
{
	/* An argument whose declared length fits alone but, with its
	 * framing and the terminator, exceeds the limit. */
	ck_assert_int_eq(decode_raw("65535:", 6), -EINVAL);
	ck_assert_int_eq(decode_raw("65527:", 6), -EINVAL);
	ck_assert_int_eq(decode_raw("65526:", 6), 0);

	/* PGN_CTL_MAX_REQUEST bytes of valid but unended arguments. */
	struct evbuffer *in = evbuffer_new();
	char **argv = NULL;
	int argc = 0;

	while (evbuffer_get_length(in) + 4 <= PGN_CTL_MAX_REQUEST)
		evbuffer_add(in, "1:a,", 4);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), -EINVAL);
	evbuffer_free(in);

	/* Many arguments that reach the limit. */
	in = evbuffer_new();
	char *big = malloc(30000);

	ck_assert_ptr_nonnull(big);
	memset(big, 'b', 30000);
	evbuffer_add_printf(in, "30000:");
	evbuffer_add(in, big, 30000);
	evbuffer_add_printf(in, ",30000:");
	evbuffer_add(in, big, 30000);
	evbuffer_add_printf(in, ",5600:");
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), -EINVAL);
	evbuffer_free(in);
	free(big);
}
END_TEST

START_TEST(test_commands)
{
	const struct pgn_ctl_command *c;
	size_t n = 0;

	c = pgn_ctl_command_find("register");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->nargs, 3);
	ck_assert_int_eq(c->offline, 1);
	c = pgn_ctl_command_find("kick_session");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->nargs, 4);
	ck_assert_int_eq(c->offline, 0);
	c = pgn_ctl_command_find("registered_users");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->nargs, 1);
	ck_assert_int_eq(c->offline, 1);
	ck_assert_ptr_nonnull(pgn_ctl_command_find("help"));
	ck_assert_ptr_nonnull(pgn_ctl_command_find("stop"));
	ck_assert_ptr_null(pgn_ctl_command_find("Register"));
	ck_assert_ptr_null(pgn_ctl_command_find("regist"));
	ck_assert_ptr_null(pgn_ctl_command_find(""));
	ck_assert_ptr_null(pgn_ctl_command_find(NULL));

	/* Every entry: unique, its args text names nargs words. */
	for (c = pgn_ctl_commands; c->name != NULL; c++, n++) {
		int words = 0;

		ck_assert_ptr_eq(pgn_ctl_command_find(c->name), c);
		ck_assert_ptr_nonnull(c->args);
		ck_assert_ptr_nonnull(c->help);
		for (const char *p = c->args; *p != '\0'; p++)
			if (*p != ' ' && (p == c->args || p[-1] == ' '))
				words++;
		ck_assert_int_eq(words, c->nargs);
		ck_assert_int_le(c->nargs + 1, PGN_CTL_MAX_ARGS);
	}
	ck_assert_uint_eq(n, 10);
}
END_TEST

static Suite *
ctl_suite(void)
{
	Suite *s = suite_create("ctl");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_encode_bytes);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_round_trip_limits);
	tcase_add_test(tc, test_encode_refuses);
	tcase_add_test(tc, test_partial);
	tcase_add_test(tc, test_partial_long);
	tcase_add_loop_test(tc, test_malformed, 0,
			    (int)(sizeof(malformed) / sizeof(malformed[0])));
	tcase_add_test(tc, test_nul);
	tcase_add_test(tc, test_too_many_args);
	tcase_add_test(tc, test_too_long);
	tcase_add_test(tc, test_commands);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(ctl_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
