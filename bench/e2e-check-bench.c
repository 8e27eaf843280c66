/* Micro-benchmark of the "E2E required" policy's per-message check
 * (modules/e2e/e2e_check.c, what mod_e2e_policy runs for every chat
 * message): the classification of a ~1 KB OMEMO message, of a plaintext
 * message (which then also walks the exempt list), and of a receipt.
 * Prints nanoseconds per message.
 * Usage: e2e-check-bench [ROUNDS] [EXEMPT_ITEMS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "e2e/e2e_check.h"

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static struct pgn_xml *
parse(const char *data)
{
	struct pgn_xml *parent = pgn_xml_new("jabber:client", "wrap");
	struct pgn_xml *el;

	if (parent == NULL ||
	    pgn_xml_parse_into(parent, data, strlen(data)) != 0)
		exit(1);
	el = pgn_xml_first_child(parent);
	pgn_xml_unlink(el);
	pgn_xml_free(parent);
	return el;
}

/* What a Conversations-like client sends: hints, ids, chat state,
 * receipt request, the OMEMO element (~1 KB), the fallback body last. */
static char *
omemo_message(void)
{
	char *m = malloc(4096), key[181], payload[601];

	memset(key, 'K', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	memset(payload, 'P', sizeof(payload) - 1);
	payload[sizeof(payload) - 1] = '\0';
	snprintf(m, 4096,
		 "<message type='chat' to='bob@example.org' id='a1'>"
		 "<request xmlns='urn:xmpp:receipts'/>"
		 "<active xmlns='http://jabber.org/protocol/chatstates'/>"
		 "<markable xmlns='urn:xmpp:chat-markers:0'/>"
		 "<origin-id xmlns='urn:xmpp:sid:0' id='a1'/>"
		 "<encrypted xmlns='eu.siacs.conversations.axolotl'>"
		 "<header sid='1797815022'><key rid='697255201'>%s</key>"
		 "<key rid='12345'>%s</key><iv>8/pXK3Y8y8gKuxjS</iv></header>"
		 "<payload>%s</payload></encrypted>"
		 "<store xmlns='urn:xmpp:hints'/>"
		 "<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs."
		 "conversations.axolotl'/>"
		 "<body>I sent you an OMEMO encrypted message but your client "
		 "doesn't seem to support that.</body></message>",
		 key, key, payload);
	return m;
}

static double
run(const struct pgn_xml *m, const struct e2e_exempt *ex,
    const struct pgn_jid *from, const struct pgn_jid *to, size_t rounds)
{
	const char *type = pgn_xml_attr(m, "type");
	volatile unsigned sink = 0;
	double t0 = now_ns();

	for (size_t i = 0; i < rounds; i++) {
		enum e2e_verdict v = e2e_classify(m, type);
		if (v == E2E_PLAINTEXT)
			v += (enum e2e_verdict)(e2e_exempt_match(ex, from) +
						e2e_exempt_match(ex, to));
		sink += (unsigned)v;
	}
	(void)sink;
	return (now_ns() - t0) / (double)rounds;
}

int
main(int argc, char **argv)
{
	size_t rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
	size_t nexempt = argc > 2 ? strtoul(argv[2], NULL, 10) : 10;
	char **items = calloc(nexempt + 1, sizeof(*items)), err[256];
	char *omemo = omemo_message();
	struct pgn_xml *enc = parse(omemo);
	struct pgn_xml *plain = parse("<message type='chat' to='bob@example."
				      "org' id='a2'><active xmlns='http://"
				      "jabber.org/protocol/chatstates'/>"
				      "<body>hello there</body></message>");
	struct pgn_xml *rcpt = parse("<message to='bob@example.org' id='a3'>"
				     "<received xmlns='urn:xmpp:receipts' "
				     "id='a1'/></message>");
	struct pgn_jid *from = NULL, *to = NULL;
	struct e2e_exempt ex;

	if (items == NULL || rounds == 0 ||
	    pgn_jid_parse("alice@example.org/phone", &from) != 0 ||
	    pgn_jid_parse("bob@example.org", &to) != 0)
		return 1;
	for (size_t i = 0; i < nexempt; i++) {
		items[i] = malloc(48);
		snprintf(items[i], 48, "bot%zu@example.org", i);
	}
	if (e2e_exempt_parse(items, nexempt, &ex, err, sizeof(err)) != 0)
		return 1;
	printf("omemo message (%zu bytes): %.1f ns\n", strlen(omemo),
	       run(enc, &ex, from, to, rounds));
	printf("plaintext, %zu exempt JIDs: %.1f ns\n", nexempt,
	       run(plain, &ex, from, to, rounds));
	printf("receipt: %.1f ns\n", run(rcpt, &ex, from, to, rounds));
	e2e_exempt_free(&ex);
	for (size_t i = 0; i < nexempt; i++)
		free(items[i]);
	free(items);
	free(omemo);
	pgn_xml_free(enc);
	pgn_xml_free(plain);
	pgn_xml_free(rcpt);
	pgn_jid_free(from);
	pgn_jid_free(to);
	return 0;
}
