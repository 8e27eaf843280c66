/* The "E2E required" policy's pure part (doc/e2e.md): which messages it
 * refuses, and the exempt list.  Built into mod_e2e_policy and into the
 * unit test and micro-benchmark (tests/unit/test_e2e_check.c). */
#ifndef PIGEON_E2E_CHECK_H
#define PIGEON_E2E_CHECK_H

#include <stddef.h>

#include "pigeon/jid.h"
#include "pigeon/xml.h"

#define E2E_NS_POLICY "urn:pigeon:e2e-policy:0"
#define E2E_NS_AXOLOTL "eu.siacs.conversations.axolotl"
#define E2E_NS_OMEMO2 "urn:xmpp:omemo:2"
#define E2E_NS_OPENPGP "urn:xmpp:openpgp:0"
#define E2E_NS_PGP_LEGACY "jabber:x:encrypted"

enum e2e_verdict {
	E2E_OTHER = 0,  /* not a message the policy is about (groupchat,
			 * headline, error; not a message) */
	E2E_NO_BODY,    /* chat/normal without a <body/>: receipts, markers,
			 * chat states, key exchanges... */
	E2E_ENCRYPTED,  /* a <body/> next to an end-to-end payload (the
			 * fallback text of OMEMO / OpenPGP) or none */
	E2E_PLAINTEXT,  /* a <body/> and no end-to-end payload: refused */
};

/* Classifies the message stanza msg (type: its 'type' attribute or
 * NULL).  Looks at msg's direct children only, once each. */
enum e2e_verdict e2e_classify(const struct pgn_xml *msg, const char *type);

/* The exempt JIDs: prepared bare JIDs ("bot@example.org": any resource
 * of it) and domains ("echo.example.org": the domain and every address
 * at it). */
struct e2e_exempt {
	char **bare;    /* prepared; owned */
	size_t n;
};

/* Parses items (as written in the option) into ex (which the caller
 * frees with e2e_exempt_free, also on failure).  0, -EINVAL with err
 * naming the bad item (not a JID, or a full JID), -ENOMEM. */
int e2e_exempt_parse(char *const *items, size_t n, struct e2e_exempt *ex,
		     char *err, size_t errlen);
void e2e_exempt_free(struct e2e_exempt *ex);
/* 1 if jid is exempt. */
int e2e_exempt_match(const struct e2e_exempt *ex, const struct pgn_jid *jid);

#endif
