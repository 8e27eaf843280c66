/* Unit tests for src/lib/base64.c: the RFC 4648 §10 vectors both ways, the
 * strict decoder's refusals (SASL and the store rely on one spelling per
 * value), and the whitespace-skipping variant that modules use for base64
 * carried in XML. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "pigeon/base64.h"

static const struct {
	const char *raw, *b64;
} vectors[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

#define NVECTORS (sizeof(vectors) / sizeof(vectors[0]))

typedef int (*decode_fn)(const char *, size_t, unsigned char **, size_t *);

/* Decodes s with fn and checks the result is exactly want (NUL-terminated
 * in the buffer too, as the header promises). */
static void
check_decodes(decode_fn fn, const char *s, const char *want)
{
	unsigned char *out = NULL;
	size_t n = 99;

	ck_assert_msg(fn(s, strlen(s), &out, &n) == 0, "\"%s\" refused", s);
	ck_assert_ptr_nonnull(out);
	ck_assert_uint_eq(n, strlen(want));
	ck_assert_mem_eq(out, want, n);
	ck_assert_uint_eq(out[n], 0);
	free(out);
}

static void
check_refuses(decode_fn fn, const char *s)
{
	unsigned char *out = (unsigned char *)"x";
	size_t n = 99;

	ck_assert_msg(fn(s, strlen(s), &out, &n) == -EINVAL,
		      "\"%s\" accepted", s);
	ck_assert_ptr_null(out);
	ck_assert_uint_eq(n, 0);
}

START_TEST(rfc4648_vectors)
{
	for (size_t i = 0; i < NVECTORS; i++) {
		char *e = pgn_base64_encode(
			(const unsigned char *)vectors[i].raw,
			strlen(vectors[i].raw));

		ck_assert_ptr_nonnull(e);
		ck_assert_str_eq(e, vectors[i].b64);
		free(e);
		check_decodes(pgn_base64_decode, vectors[i].b64,
			      vectors[i].raw);
		check_decodes(pgn_base64_decode_ws, vectors[i].b64,
			      vectors[i].raw);
	}
}
END_TEST

START_TEST(all_byte_values)
{
	unsigned char raw[256], *out = NULL;
	size_t n = 0;
	char *e;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)i;
	e = pgn_base64_encode(raw, sizeof(raw));
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(pgn_base64_decode(e, strlen(e), &out, &n), 0);
	ck_assert_uint_eq(n, sizeof(raw));
	ck_assert_mem_eq(out, raw, n);
	free(out);
	free(e);
}
END_TEST

/* Everything the strict decoder refuses, the whitespace variant refuses
 * too: it relaxes whitespace and nothing else. */
static const char *const invalid[] = {
	"Zg",       /* padding missing */
	"Zg=",      /* padding short */
	"Zm9",      /* length not a multiple of 4 */
	"Z===",     /* '=' too early in the quantum */
	"====",     /* padding alone */
	"Zg=a",     /* data after '=' */
	"Zg==Zm8=", /* a quantum after a padded one */
	"Zh==",     /* pad bits set: 'h' leaves 4 non-zero bits */
	"Zm9=",     /* pad bits set: '9' leaves 2 non-zero bits */
	"Zm9v!A==", /* outside the alphabet */
	"Zm9v-_==", /* the URL-safe alphabet is another encoding */
	"Zg===",    /* padding in excess */
	"Zm9v====", /* a quantum of padding alone */
	"=Zg=",     /* '=' first */
	"Zg==Zg==", /* two padded quanta */
	"Zm9v\xc3\xa9" "A=", /* bytes outside ASCII */
	"Zm9v.A==", /* punctuation */
	"Zm\x7f" "9vA==", /* a control character */
};

#define NINVALID (sizeof(invalid) / sizeof(invalid[0]))

START_TEST(strict_refusals)
{
	for (size_t i = 0; i < NINVALID; i++) {
		check_refuses(pgn_base64_decode, invalid[i]);
		check_refuses(pgn_base64_decode_ws, invalid[i]);
	}
	/* Whitespace is not base64 to the strict decoder. */
	check_refuses(pgn_base64_decode, "Zm9v\nYmFy");
	check_refuses(pgn_base64_decode, "Zm9v ");
	check_refuses(pgn_base64_decode, "Zm9vYg==\r\n");
	check_refuses(pgn_base64_decode, "\tZm9v");
	check_refuses(pgn_base64_decode, "Zg= =");
}
END_TEST

START_TEST(explicit_length)
{
	unsigned char *out = NULL;
	size_t n = 0;

	/* Only in[0..len) counts: what follows is not looked at. */
	ck_assert_int_eq(pgn_base64_decode("Zm9v!!", 4, &out, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_mem_eq(out, "foo", 3);
	free(out);
	ck_assert_int_eq(pgn_base64_decode_ws("Zm 9v!!", 5, &out, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_mem_eq(out, "foo", 3);
	free(out);
	/* A NUL inside the length is a character like any other: not in
	 * the alphabet, and not whitespace either. */
	ck_assert_int_eq(pgn_base64_decode("Zm9v\0mFy", 8, &out, &n),
			 -EINVAL);
	ck_assert_int_eq(pgn_base64_decode_ws("Zm9v\0mFy", 8, &out, &n),
			 -EINVAL);
}
END_TEST

START_TEST(whitespace_skipped)
{
	/* RFC 2045 lines, XML indentation around and inside quanta, and
	 * whitespace between and after the padding characters. */
	check_decodes(pgn_base64_decode_ws, "Zm9v\r\nYmFy\r\n", "foobar");
	check_decodes(pgn_base64_decode_ws, "\n\t  Zm9vYmE=\n\t", "fooba");
	check_decodes(pgn_base64_decode_ws, "Z m\t9\nv Y\rg\f=\v=", "foob");
	check_decodes(pgn_base64_decode_ws, "Zm9vYg==  \n", "foob");
	/* Only whitespace: no data, as an empty text. */
	check_decodes(pgn_base64_decode_ws, " \r\n\t", "");
	/* Whitespace does not make up for missing characters, nor is any
	 * other separator skipped. */
	check_refuses(pgn_base64_decode_ws, "Zm 9\n");
	check_refuses(pgn_base64_decode_ws, "Zm9v\n\n\nYg");
	check_refuses(pgn_base64_decode_ws, "Zm9v.YmFy");
}
END_TEST

START_TEST(whitespace_long_lines)
{
	/* A photo-sized value wrapped at 76 columns decodes to the bytes
	 * that were encoded. */
	unsigned char raw[3000], *out = NULL;
	size_t len, n = 0, j = 0;
	char *e, *wrapped;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)(i * 7 + 3);
	e = pgn_base64_encode(raw, sizeof(raw));
	ck_assert_ptr_nonnull(e);
	len = strlen(e);
	wrapped = malloc(len + len / 76 * 2 + 3);
	ck_assert_ptr_nonnull(wrapped);
	for (size_t i = 0; i < len; i++) {
		if (i > 0 && i % 76 == 0) {
			wrapped[j++] = '\r';
			wrapped[j++] = '\n';
		}
		wrapped[j++] = e[i];
	}
	wrapped[j++] = '\n';
	wrapped[j] = '\0';
	ck_assert_int_eq(pgn_base64_decode_ws(wrapped, j, &out, &n), 0);
	ck_assert_uint_eq(n, sizeof(raw));
	ck_assert_mem_eq(out, raw, n);
	free(out);
	free(wrapped);
	free(e);
}
END_TEST

static Suite *
base64_suite(void)
{
	Suite *s = suite_create("base64");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, rfc4648_vectors);
	tcase_add_test(tc, all_byte_values);
	tcase_add_test(tc, strict_refusals);
	tcase_add_test(tc, explicit_length);
	tcase_add_test(tc, whitespace_skipped);
	tcase_add_test(tc, whitespace_long_lines);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(base64_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
