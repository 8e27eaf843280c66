/* The "E2E required" policy's pure part (modules/e2e/e2e_check.c): which
 * messages it refuses, and the exempt list. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "e2e/e2e_check.h"

/* The first element of data (serialised with jabber:client in scope). */
static struct pgn_xml *
parse(const char *data)
{
	struct pgn_xml *parent = pgn_xml_new("jabber:client", "wrap");
	struct pgn_xml *el;

	ck_assert_ptr_nonnull(parent);
	ck_assert_int_eq(pgn_xml_parse_into(parent, data, strlen(data)), 0);
	el = pgn_xml_first_child(parent);
	pgn_xml_unlink(el);
	pgn_xml_free(parent);
	return el;
}

static enum e2e_verdict
verdict(const char *data)
{
	struct pgn_xml *m = parse(data);
	enum e2e_verdict v = e2e_classify(m, pgn_xml_attr(m, "type"));

	pgn_xml_free(m);
	return v;
}

START_TEST(plaintext_refused)
{
	ck_assert_int_eq(verdict("<message type='chat'><body>hi</body>"
				 "</message>"),
			 E2E_PLAINTEXT);
	ck_assert_int_eq(verdict("<message><body>hi</body></message>"),
			 E2E_PLAINTEXT);
	ck_assert_int_eq(verdict("<message type='normal'><body>hi</body>"
				 "</message>"),
			 E2E_PLAINTEXT);
	/* RFC 6121 §5.2.2: an unknown type is normal. */
	ck_assert_int_eq(verdict("<message type='bogus'><body>hi</body>"
				 "</message>"),
			 E2E_PLAINTEXT);
	/* An encrypted element in a namespace that is not accepted, or
	 * nested, does not count. */
	ck_assert_int_eq(verdict("<message type='chat'><body>hi</body>"
				 "<encrypted xmlns='urn:example'/></message>"),
			 E2E_PLAINTEXT);
	ck_assert_int_eq(verdict("<message type='chat'><body>hi</body><x "
				 "xmlns='urn:example'><encrypted xmlns='"
				 "urn:xmpp:omemo:2'/></x></message>"),
			 E2E_PLAINTEXT);
	ck_assert_int_eq(verdict("<message type='chat'><body>hi</body><x "
				 "xmlns='jabber:x:oob'><url>https://a/b"
				 "</url></x></message>"),
			 E2E_PLAINTEXT);
}
END_TEST

START_TEST(encrypted_passes)
{
	static const char *const ok[] = {
		"<message type='chat'><body>fallback</body><encrypted xmlns='"
		"eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>"
		"AA</key><iv>BB</iv></header><payload>CC</payload></encrypted>"
		"</message>",
		"<message type='chat'><encrypted xmlns='urn:xmpp:omemo:2'>"
		"<header sid='1'/></encrypted><body>fallback</body></message>",
		"<message><body>x</body><openpgp xmlns='urn:xmpp:openpgp:0'>"
		"AA</openpgp></message>",
		"<message><body>x</body><x xmlns='jabber:x:encrypted'>AA</x>"
		"</message>",
		NULL,
	};
	for (size_t i = 0; ok[i] != NULL; i++)
		ck_assert_int_eq(verdict(ok[i]), E2E_ENCRYPTED);
	/* Key exchange and heartbeat: no body at all. */
	ck_assert_int_eq(verdict("<message type='chat'><encrypted xmlns='"
				 "eu.siacs.conversations.axolotl'><header "
				 "sid='1'><key prekey='true' rid='2'>AA</key>"
				 "</header></encrypted></message>"),
			 E2E_ENCRYPTED);
}
END_TEST

START_TEST(others_pass)
{
	ck_assert_int_eq(verdict("<message type='chat'><received xmlns='"
				 "urn:xmpp:receipts' id='a'/></message>"),
			 E2E_NO_BODY);
	ck_assert_int_eq(verdict("<message type='chat'><displayed xmlns='"
				 "urn:xmpp:chat-markers:0' id='a'/></message>"),
			 E2E_NO_BODY);
	ck_assert_int_eq(verdict("<message type='chat'><composing xmlns='"
				 "http://jabber.org/protocol/chatstates'/>"
				 "</message>"),
			 E2E_NO_BODY);
	ck_assert_int_eq(verdict("<message><subject>s</subject></message>"),
			 E2E_NO_BODY);
	/* A body in another namespace is not a message body. */
	ck_assert_int_eq(verdict("<message><body xmlns='urn:example'>x"
				 "</body></message>"),
			 E2E_NO_BODY);
	ck_assert_int_eq(verdict("<message type='groupchat'><body>x</body>"
				 "</message>"),
			 E2E_OTHER);
	ck_assert_int_eq(verdict("<message type='headline'><body>x</body>"
				 "</message>"),
			 E2E_OTHER);
	ck_assert_int_eq(verdict("<message type='error'><body>x</body>"
				 "</message>"),
			 E2E_OTHER);
	ck_assert_int_eq(verdict("<iq type='set'><body>x</body></iq>"),
			 E2E_OTHER);
	ck_assert_int_eq(e2e_classify(NULL, NULL), E2E_OTHER);
}
END_TEST

static int
match(const struct e2e_exempt *ex, const char *s)
{
	struct pgn_jid *j = NULL;
	int m;

	ck_assert_int_eq(pgn_jid_parse(s, &j), 0);
	m = e2e_exempt_match(ex, j);
	pgn_jid_free(j);
	return m;
}

START_TEST(exempt_list)
{
	char *good[] = { "Bot@Example.org", "echo.example.org" };
	char *full[] = { "bot@example.org/res" };
	char *bad[] = { "a@b@c" };
	struct e2e_exempt ex;
	char err[256];

	ck_assert_int_eq(e2e_exempt_parse(good, 2, &ex, err, sizeof(err)), 0);
	ck_assert_uint_eq(ex.n, 2);
	/* Prepared: the node is case-folded. */
	ck_assert(match(&ex, "bot@example.org"));
	ck_assert(match(&ex, "BOT@example.org/any"));
	ck_assert(!match(&ex, "other@example.org"));
	ck_assert(!match(&ex, "example.org"));
	/* A domain: itself and every address at it. */
	ck_assert(match(&ex, "echo.example.org"));
	ck_assert(match(&ex, "user@echo.example.org/r"));
	ck_assert(!match(&ex, "x.echo.example.org"));
	e2e_exempt_free(&ex);

	ck_assert_int_eq(e2e_exempt_parse(full, 1, &ex, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(err, "exempt: 'bot@example.org/res' is not a bare "
			      "JID or a domain");
	e2e_exempt_free(&ex);
	ck_assert_int_eq(e2e_exempt_parse(bad, 1, &ex, err, sizeof(err)),
			 -EINVAL);
	e2e_exempt_free(&ex);
	ck_assert_int_eq(e2e_exempt_parse(NULL, 0, &ex, err, sizeof(err)), 0);
	ck_assert_uint_eq(ex.n, 0);
	e2e_exempt_free(&ex);
}
END_TEST

static Suite *
e2e_suite(void)
{
	Suite *s = suite_create("e2e_check");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, plaintext_refused);
	tcase_add_test(tc, encrypted_passes);
	tcase_add_test(tc, others_pass);
	tcase_add_test(tc, exempt_list);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(e2e_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
