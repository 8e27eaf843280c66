/* Unit tests for the stanza errors the server writes (src/core/stanza.c):
 * the XEP-0086 legacy code of every condition, and the shape of the
 * <error/> (type, code, condition, text, application condition last). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "pigeon/module.h"

/* XEP-0086 §2, table 1, typed out again here from the spec (not from
 * stanza.c) so that a slip in either shows. */
static const struct {
	const char *condition;
	int code;
} xep0086[] = {
	{"bad-request", 400},           {"conflict", 409},
	{"feature-not-implemented", 501}, {"forbidden", 403},
	{"gone", 302},                  {"internal-server-error", 500},
	{"item-not-found", 404},        {"jid-malformed", 400},
	{"not-acceptable", 406},        {"not-allowed", 405},
	{"not-authorized", 401},        {"payment-required", 402},
	{"recipient-unavailable", 404}, {"redirect", 302},
	{"registration-required", 407}, {"remote-server-not-found", 404},
	{"remote-server-timeout", 504}, {"resource-constraint", 500},
	{"service-unavailable", 503},   {"subscription-required", 407},
	{"undefined-condition", 500},   {"unexpected-request", 400},
};

START_TEST(table)
{
	for (size_t i = 0; i < sizeof(xep0086) / sizeof(xep0086[0]); i++)
		ck_assert_msg(pgn_stanza_error_code(xep0086[i].condition) ==
				      xep0086[i].code,
			      "%s", xep0086[i].condition);
	/* RFC 6120's newer condition, not in XEP-0086: refused by policy. */
	ck_assert_int_eq(pgn_stanza_error_code("policy-violation"), 403);
	/* Anything else is undefined-condition's 500. */
	ck_assert_int_eq(pgn_stanza_error_code("no-such-condition"), 500);
	ck_assert_int_eq(pgn_stanza_error_code(""), 500);
	ck_assert_int_eq(pgn_stanza_error_code(NULL), 500);
}
END_TEST

static struct pgn_stanza *
stanza(const char *name, const char *type)
{
	struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, name);
	int bad = 0;

	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(pgn_xml_set_attr(x, "type", type), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "id", "q1"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "from", "a@example.org/r"), 0);
	ck_assert_int_eq(pgn_xml_set_attr(x, "to", "b@example.org"), 0);
	ck_assert_ptr_nonnull(pgn_xml_add_child(x, "urn:example", "payload"));
	struct pgn_stanza *st = pgn_stanza_new(x, &bad);
	ck_assert_ptr_nonnull(st);
	return st;
}

START_TEST(iq_error_shape)
{
	struct pgn_stanza *req = stanza("iq", "get");
	struct pgn_xml *app = pgn_xml_new("urn:example:errors", "why");
	struct pgn_stanza *r;
	struct pgn_xml *e, *c;

	ck_assert_ptr_nonnull(app);
	r = pgn_stanza_error_reply_app(req, "cancel", "item-not-found",
				       "no such node", app);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(r->type, "error");
	ck_assert_str_eq(r->id, "q1");
	ck_assert_str_eq(r->to->full, "a@example.org/r");
	ck_assert_str_eq(r->from->full, "b@example.org");
	/* An iq error carries only the error. */
	e = pgn_xml_first_child(r->xml);
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(pgn_xml_name(e), "error");
	ck_assert_ptr_null(pgn_xml_next(e));
	ck_assert_str_eq(pgn_xml_attr(e, "type"), "cancel");
	ck_assert_str_eq(pgn_xml_attr(e, "code"), "404");
	c = pgn_xml_first_child(e);
	ck_assert_str_eq(pgn_xml_name(c), "item-not-found");
	ck_assert_str_eq(pgn_xml_ns(c), PGN_NS_STANZAS);
	c = pgn_xml_next(c);
	ck_assert_str_eq(pgn_xml_name(c), "text");
	ck_assert_str_eq(pgn_xml_ns(c), PGN_NS_STANZAS);
	c = pgn_xml_next(c);
	ck_assert_str_eq(pgn_xml_name(c), "why");
	ck_assert_str_eq(pgn_xml_ns(c), "urn:example:errors");
	ck_assert_ptr_null(pgn_xml_next(c));
	pgn_stanza_free(r);
	pgn_stanza_free(req);
}
END_TEST

START_TEST(message_keeps_payload)
{
	struct pgn_stanza *req = stanza("message", "chat");
	struct pgn_stanza *r;
	struct pgn_xml *e;

	r = pgn_stanza_error_reply(req, "cancel", "service-unavailable", NULL);
	ck_assert_ptr_nonnull(r);
	ck_assert_ptr_nonnull(pgn_xml_child(r->xml, "urn:example", "payload"));
	e = pgn_xml_child(r->xml, NULL, "error");
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(pgn_xml_attr(e, "code"), "503");
	ck_assert_ptr_nonnull(pgn_xml_child(e, PGN_NS_STANZAS,
					    "service-unavailable"));
	ck_assert_ptr_null(pgn_xml_child(e, PGN_NS_STANZAS, "text"));
	pgn_stanza_free(r);
	pgn_stanza_free(req);
}
END_TEST

/* The raw form the stream code uses for replies it writes itself. */
START_TEST(add_error_to_element)
{
	struct pgn_xml *x = pgn_xml_new(PGN_NS_CLIENT, "presence");
	struct pgn_xml *e;
	char *s;

	ck_assert_ptr_nonnull(x);
	e = pgn_stanza_add_error(x, "modify", "jid-malformed", NULL, NULL);
	ck_assert_ptr_nonnull(e);
	s = pgn_xml_to_string(x, PGN_NS_CLIENT);
	ck_assert_ptr_nonnull(s);
	ck_assert_ptr_nonnull(strstr(s, "code=\"400\""));
	ck_assert_ptr_nonnull(strstr(s, "type=\"modify\""));
	ck_assert_ptr_nonnull(strstr(s, "<jid-malformed xmlns=\"" PGN_NS_STANZAS
					"\"/>"));
	free(s);
	pgn_xml_free(x);
}
END_TEST

static Suite *
codes_suite(void)
{
	Suite *s = suite_create("error_codes");
	TCase *tc = tcase_create("xep0086");

	tcase_add_test(tc, table);
	tcase_add_test(tc, iq_error_shape);
	tcase_add_test(tc, message_keeps_payload);
	tcase_add_test(tc, add_error_to_element);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(codes_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
