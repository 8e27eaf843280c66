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
	const char *want = "1:4,8:register,5:alice,9:localhost,6:s3cret,";
	char *msg[] = { "send_message", "chat", "a@h", "b@h", "", "hi" };
	const char *want_msg = "1:6,12:send_message,4:chat,3:a@h,3:b@h,0:,"
			       "2:hi,";
	char *many[12];
	const char *want_many = "2:12,1:x,0:,0:,0:,0:,0:,0:,0:,0:,0:,0:,0:,";
	struct evbuffer *buf = evbuffer_new();
	size_t len;

	ck_assert_int_eq(pgn_ctl_encode(buf, 4, argv), 0);
	len = evbuffer_get_length(buf);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_int_eq(memcmp(evbuffer_pullup(buf, -1), want, len), 0);
	ck_assert_int_eq(evbuffer_drain(buf, len), 0);

	ck_assert_int_eq(pgn_ctl_encode(buf, 6, msg), 0);
	len = evbuffer_get_length(buf);
	ck_assert_uint_eq(len, strlen(want_msg));
	ck_assert_int_eq(memcmp(evbuffer_pullup(buf, -1), want_msg, len), 0);
	ck_assert_int_eq(evbuffer_drain(buf, len), 0);

	/* A two-digit count. */
	many[0] = "x";
	for (int i = 1; i < 12; i++)
		many[i] = "";
	ck_assert_int_eq(pgn_ctl_encode(buf, 12, many), 0);
	len = evbuffer_get_length(buf);
	ck_assert_uint_eq(len, strlen(want_many));
	ck_assert_int_eq(memcmp(evbuffer_pullup(buf, -1), want_many, len), 0);
	evbuffer_free(buf);
}
END_TEST

START_TEST(test_round_trip)
{
	char *one[] = { "status" };
	char *odd[] = { "kick_session", "a,b:c", "0:,", "\xff\xfe\x01\n\r",
			"with space", "10:" };
	/* Empty arguments anywhere but the command name, including the
	 * last one and several in a row. */
	char *roster[] = { "add_rosteritem", "a", "localhost", "b",
			   "localhost", "", "", "both" };
	char *last[] = { "kick_session", "u", "h", "r", "" };
	char *all[] = { "status", "", "", "" };
	assert_round_trip(1, one);
	assert_round_trip(6, odd);
	assert_round_trip(8, roster);
	assert_round_trip(5, last);
	assert_round_trip(4, all);
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
	for (int i = 1; i < PGN_CTL_MAX_ARGS; i++)
		argv[i] = "";
	assert_round_trip(PGN_CTL_MAX_ARGS, argv);

	/* The largest single argument that fits: "1:1," + "LEN:" + bytes
	 * + "," is exactly PGN_CTL_MAX_REQUEST. */
	size_t big = PGN_CTL_MAX_REQUEST - 4 - 5 - 1 - 1;
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
	char *noname[] = { "", "u", "h" };
	char *nullarg[] = { "status", NULL };
	struct evbuffer *buf = evbuffer_new();

	for (int i = 0; i <= PGN_CTL_MAX_ARGS; i++)
		argv[i] = "a";
	ck_assert_int_eq(pgn_ctl_encode(buf, PGN_CTL_MAX_ARGS + 1, argv),
			 -EINVAL);
	ck_assert_int_eq(pgn_ctl_encode(buf, 0, argv), -EINVAL);
	ck_assert_int_eq(pgn_ctl_encode(buf, -1, argv), -EINVAL);
	ck_assert_int_eq(pgn_ctl_encode(buf, 1, NULL), -EINVAL);
	/* The command name cannot be empty. */
	ck_assert_int_eq(pgn_ctl_encode(buf, 3, noname), -EINVAL);
	ck_assert_int_eq(pgn_ctl_encode(buf, 2, nullarg), -EINVAL);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0);
	evbuffer_free(buf);
}
END_TEST

START_TEST(test_partial)
{
	const char *req = "1:2,6:status,0:,";
	const char *next = "1:1,4:stop,";
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
	ck_assert_int_eq(argc, 2);
	ck_assert_str_eq(argv[0], "status");
	ck_assert_str_eq(argv[1], "");
	ck_assert_ptr_null(argv[2]);
	pgn_ctl_argv_free(argc, argv);
	ck_assert_uint_eq(evbuffer_get_length(in), 0);

	/* Two requests in a row come out one at a time, and the bytes
	 * after the first stay for the next call. */
	ck_assert_int_eq(evbuffer_add(in, req, len), 0);
	ck_assert_int_eq(evbuffer_add(in, next, strlen(next)), 0);
	ck_assert_int_eq(evbuffer_add(in, "1:1,4:st", 8), 0);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 1);
	ck_assert_str_eq(argv[0], "status");
	pgn_ctl_argv_free(argc, argv);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 1);
	ck_assert_str_eq(argv[0], "stop");
	ck_assert_int_eq(argc, 1);
	pgn_ctl_argv_free(argc, argv);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 0);
	ck_assert_uint_eq(evbuffer_get_length(in), 8);
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
	/* The count. */
	"0:,6:status,",         /* empty count */
	"1:0,",                 /* zero arguments */
	"1:0",
	"2:01,6:status,",       /* leading zero in the count */
	"2:17,",                /* over PGN_CTL_MAX_ARGS */
	"2:99",
	"3:100,",               /* count netstring too long */
	"3:",
	"123",
	"1:x,",                 /* not a number */
	"1:-,",
	"2:-1,",
	"2:+1,",
	"2: 1,",
	"1:1;6:status,",        /* missing comma after the count */
	"01:1,6:status,",       /* leading zero in the count's length */
	":1,",
	"x",
	"6:status,",            /* the old format, without count */
	"8:register,5:alice,9:localhost,6:s3cret,0:,",
	/* The arguments. */
	"1:1,x:status,",        /* non-digit length */
	"1:1,-1:a,",            /* sign */
	"1:1, 6:status,",       /* space */
	"1:1,+6:status,",
	"1:1,06:status,",       /* leading zero */
	"1:2,6:status,00:,",    /* leading zero on an empty argument */
	"1:1,:status,",         /* no length */
	"1:1,6:status;",        /* missing comma */
	"1:1,6:statusX",
	"1:1,5:status,",        /* length too short */
	"1:2,6:status,0:;",     /* bad comma after an empty argument */
	"1:1,0:,",              /* empty command name */
	"1:2,0:,1:a,",
	"1:1,0:",
	"1:1,65537:",           /* over the limit */
	"1:1,100000:",
	"1:1,99999999999999999999999:",
};

START_TEST(test_malformed)
{
	const char *s = malformed[_i];

	ck_assert_msg(decode_raw(s, strlen(s)) == -EINVAL, "accepted: %s", s);
}
END_TEST

START_TEST(test_nul)
{
	static const char nul_arg[] = "1:1,6:st\0tus,";
	static const char nul_early[] = "1:1,6:st\0";
	static const char nul_count[] = "1:\0";

	ck_assert_int_eq(decode_raw(nul_arg, sizeof(nul_arg) - 1), -EINVAL);
	/* Refused as soon as it is seen, not when the argument ends. */
	ck_assert_int_eq(decode_raw(nul_early, sizeof(nul_early) - 1),
			 -EINVAL);
	ck_assert_int_eq(decode_raw(nul_count, sizeof(nul_count) - 1),
			 -EINVAL);
	ck_assert_int_eq(decode_raw("1:1,6:st", 8), 0);
}
END_TEST

START_TEST(test_incomplete)
{
	/* Every proper prefix of a valid request waits for more. */
	static const char *const prefixes[] = {
		"", "1", "1:", "2:1", "2:16", "1:3,", "1:3,6:status,",
		"1:3,6:status,0", "1:3,6:status,0:", "1:3,6:status,0:,",
		"1:3,6:status,0:,0:",
	};

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		ck_assert_msg(decode_raw(prefixes[i], strlen(prefixes[i])) == 0,
			      "not waiting: %s", prefixes[i]);
	ck_assert_int_eq(decode_raw("1:3,6:status,0:,0:,", 19), 1);
}
END_TEST

START_TEST(test_count)
{
	struct evbuffer *in = evbuffer_new();
	char **argv = NULL;
	int argc = 0;

	/* The count says where the request ends: what follows is the next
	 * request, even when it looks like more arguments. */
	ck_assert_int_eq(evbuffer_add(in, "1:2,4:stop,1:a,1:b,", 19), 0);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 1);
	ck_assert_int_eq(argc, 2);
	ck_assert_str_eq(argv[0], "stop");
	ck_assert_str_eq(argv[1], "a");
	pgn_ctl_argv_free(argc, argv);
	ck_assert_uint_eq(evbuffer_get_length(in), 4);
	/* "1:b," is then a malformed request (count "b"). */
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), -EINVAL);
	ck_assert_ptr_null(argv);
	ck_assert_uint_eq(evbuffer_get_length(in), 4);
	evbuffer_free(in);

	/* The largest count, then one more. */
	in = evbuffer_new();
	evbuffer_add_printf(in, "2:%d,", PGN_CTL_MAX_ARGS);
	evbuffer_add(in, "1:a,", 4);
	for (int i = 1; i < PGN_CTL_MAX_ARGS; i++)
		evbuffer_add(in, "0:,", 3);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 1);
	ck_assert_int_eq(argc, PGN_CTL_MAX_ARGS);
	ck_assert_str_eq(argv[0], "a");
	ck_assert_str_eq(argv[PGN_CTL_MAX_ARGS - 1], "");
	pgn_ctl_argv_free(argc, argv);
	ck_assert_uint_eq(evbuffer_get_length(in), 0);
	evbuffer_add_printf(in, "2:%d,", PGN_CTL_MAX_ARGS + 1);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), -EINVAL);
	evbuffer_free(in);

	/* Every count from 1 to the limit, with empty arguments. */
	for (int n = 1; n <= PGN_CTL_MAX_ARGS; n++) {
		char *v[PGN_CTL_MAX_ARGS];

		v[0] = "cmd";
		for (int i = 1; i < n; i++)
			v[i] = "";
		assert_round_trip(n, v);
	}
}
END_TEST

START_TEST(test_too_long)
{
	/* An argument whose declared length fits alone but, with its
	 * framing and the arguments still to come, exceeds the limit. */
	ck_assert_int_eq(decode_raw("1:1,65535:", 10), -EINVAL);
	ck_assert_int_eq(decode_raw("1:1,65526:", 10), -EINVAL);
	ck_assert_int_eq(decode_raw("1:1,65525:", 10), 0);
	/* Two more arguments take 6 bytes at least. */
	ck_assert_int_eq(decode_raw("1:3,65520:", 10), -EINVAL);
	ck_assert_int_eq(decode_raw("1:3,65519:", 10), 0);

	/* PGN_CTL_MAX_REQUEST bytes of a valid but unended argument. */
	struct evbuffer *in = evbuffer_new();
	char **argv = NULL;
	int argc = 0;
	char *fill = malloc(PGN_CTL_MAX_REQUEST);

	ck_assert_ptr_nonnull(fill);
	memset(fill, 'f', PGN_CTL_MAX_REQUEST);
	evbuffer_add(in, "1:1,65525:", 10);
	evbuffer_add(in, fill, PGN_CTL_MAX_REQUEST - 11);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 0);
	/* Only the ',' may come now. */
	evbuffer_add(in, "f", 1);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), -EINVAL);
	evbuffer_free(in);

	/* The last length prefix still has no ':' when the limit is
	 * reached: it can never end within the limit. */
	in = evbuffer_new();
	evbuffer_add(in, "1:2,65522:", 10);
	evbuffer_add(in, fill, 65522);
	evbuffer_add(in, ",", 1);
	ck_assert_uint_eq(evbuffer_get_length(in), PGN_CTL_MAX_REQUEST - 3);
	evbuffer_add(in, "12", 2);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), 0);
	evbuffer_add(in, "3", 1);
	ck_assert_int_eq(pgn_ctl_decode(in, &argc, &argv), -EINVAL);
	ck_assert_ptr_null(argv);
	evbuffer_free(in);
	free(fill);

	/* Many arguments that reach the limit. */
	in = evbuffer_new();
	char *big = malloc(30000);

	ck_assert_ptr_nonnull(big);
	memset(big, 'b', 30000);
	evbuffer_add_printf(in, "1:3,30000:");
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
	/* Module commands are declared by the modules, not here. */
	ck_assert_ptr_null(pgn_ctl_command_find("add_rosteritem"));
	ck_assert_ptr_null(pgn_ctl_command_find("delete_old_messages"));
	c = pgn_ctl_command_find("send_message");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->nargs, 5);
	ck_assert_int_eq(c->offline, 0);

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
	ck_assert_uint_eq(n, 14);
}
END_TEST

/* The help and usage texts that pigeond and pigeonctl share. */
START_TEST(test_format_help)
{
	static const struct pgn_ctl_command cmds[] = {
		{ "register", 3, "USER HOST PASSWORD", "make one", 1 },
		{ "stop", 0, "", "stop it", 0 },
	};
	struct evbuffer *out = evbuffer_new();
	char *text;
	size_t len;

	ck_assert_int_eq(pgn_ctl_format_help(out, cmds, 2), 0);
	len = evbuffer_get_length(out);
	text = calloc(1, len + 1);
	evbuffer_remove(out, text, len);
	ck_assert_str_eq(text,
			 "\nCommands (* also work when pigeond is stopped):\n"
			 "  * register USER HOST PASSWORD  make one\n"
			 "    stop                         stop it\n");
	free(text);
	ck_assert_int_eq(pgn_ctl_format_usage(out, "get_roster", "USER HOST"),
			 0);
	ck_assert_int_eq(pgn_ctl_format_usage(out, "stop", ""), 0);
	len = evbuffer_get_length(out);
	text = calloc(1, len + 1);
	evbuffer_remove(out, text, len);
	ck_assert_str_eq(text, "usage: pigeonctl [-c FILE] get_roster USER "
			       "HOST\nusage: pigeonctl [-c FILE] stop\n");
	free(text);
	evbuffer_free(out);
}
END_TEST

static Suite *
ctl_suite(void)
{
	Suite *s = suite_create("ctl");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_encode_bytes);
	tcase_add_test(tc, test_format_help);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_round_trip_limits);
	tcase_add_test(tc, test_encode_refuses);
	tcase_add_test(tc, test_partial);
	tcase_add_test(tc, test_partial_long);
	tcase_add_loop_test(tc, test_malformed, 0,
			    (int)(sizeof(malformed) / sizeof(malformed[0])));
	tcase_add_test(tc, test_nul);
	tcase_add_test(tc, test_incomplete);
	tcase_add_test(tc, test_count);
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
