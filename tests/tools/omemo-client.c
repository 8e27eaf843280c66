/*
 * omemo-client: stack 2 of the OMEMO tests (tests/e2e/test_omemo_cross.py),
 * a small OMEMO client on libstrophe (XMPP, STARTTLS) and libomemo-c (the
 * libsignal-protocol-c fork), speaking legacy OMEMO
 * (eu.siacs.conversations.axolotl, XEP-0384 0.3).  The keys and sessions
 * are in memory (omemo-store.c); a new process is a new device.
 *
 *   omemo-client --jid JID --password PW --host H --port N --cafile F
 *                [--carbons] [--no-presence] [--timeout S] [--verbose]
 *   omemo-client --offline --jid JID    (no server: see offline_command)
 *
 * Commands, one per line on standard input:
 *   publish            fetch own device list, add this device, publish it
 *                      and the bundle              -> PUBLISHED <device id>
 *   fetch JID          read JID's device list, build a session with every
 *                      device from its bundle      -> FETCHED <jid> <ids>
 *   send JID TEXT      encrypt TEXT for JID's devices and this account's
 *                      other devices (sessions built as needed), send it
 *                                                  -> SENT <id> keys=<n>
 *   plain JID TEXT     a plaintext chat message    -> SENT <id> keys=0
 *   mam JID            query the archive with JID, decrypt the results
 *                                                  -> MAM ... lines, MAMDONE <n>
 *   carbons            enable carbons              -> CARBONS
 *   disconnect         close the stream            -> DISCONNECTED
 *   connect [nopresence]  log in again (same device) -> CONNECTED <jid>
 *   quit               disconnect and exit          -> DONE
 * Events (standard output, one line each, flushed):
 *   CONNECTED <jid>
 *   REPUBLISHED <device id>   (bundle with fresh pre-keys after a key exchange)
 *   DECRYPTED kind=<message|carbon-received|carbon-sent|mam> from=<bare>
 *             sid=<device> body=<text>      (text: \n and \ escaped)
 *   EMPTY kind=... from=... sid=...          (key exchange / heartbeat)
 *   UNDECRYPTABLE kind=... from=... sid=... reason=<why>
 *   PLAIN kind=... from=... body=<text>      (a message without OMEMO)
 *   NOBODY kind=... from=... child=<name>    (receipt, marker, chat state)
 *   DEVICELIST <bare> <id,id,...>            (+notify or fetched)
 *   MSGERROR id=<id> condition=<condition> text=<text>
 * Failures: "ERROR ..." on standard error; exit 1.  --timeout (default 60 s)
 * bounds the whole run (exit 2).  Exit 64 on bad usage.
 */

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <strophe.h>

#include "omemo-client.h"

#define NODE_DEVICES NS_OMEMO ".devicelist"
#define NODE_BUNDLES NS_OMEMO ".bundles:"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_EVENT "http://jabber.org/protocol/pubsub#event"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_CAPS "http://jabber.org/protocol/caps"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_MAM "urn:xmpp:mam:2"
#define CAPS_NODE "https://pigeon.invalid/omemo-client"
#define FALLBACK "I sent you an OMEMO encrypted message but your client does not seem to support that."

#define OC_MAX_DEVICES 64
#define OC_MAX_LINE 65536
#define OC_SESSION_VERSION 3	/* libsignal v3 messages: legacy OMEMO */

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_TIMEOUT = 2, EXIT_USAGE = 64 };

struct opts {
	const char *jid, *password, *host, *cafile;
	unsigned short port;
	int carbons, no_presence, verbose, offline;
	double timeout;
};

/* A contact's (or our own account's) device list as last seen. */
struct contact {
	struct contact *next;
	char *jid;		/* bare */
	int known;		/* list fetched or notified at least once */
	int ndev;
	uint32_t dev[OC_MAX_DEVICES];
};

enum op_kind { OP_PUBLISH, OP_REPUBLISH, OP_FETCH, OP_SEND };

/* A command waiting for iq results: done when pending drops to 0. */
struct op {
	enum op_kind kind;
	int pending;
	int failed;
	char *jid;		/* FETCH/SEND target */
	char *text;		/* SEND */
};

/* Userdata of one iq callback. */
struct job {
	struct client *c;
	struct op *op;
	char *jid;
	uint32_t dev;
};

struct client {
	const struct opts *o;
	xmpp_ctx_t *ctx;
	xmpp_conn_t *conn;
	struct oc_keys keys;
	struct contact *contacts;
	char *own_bare;
	char caps_ver[64];
	int connected, disconnected, failed, quit;
	unsigned next_id;
	char mam_qid[32];
	int mam_count;
};

/* ---- small helpers ---------------------------------------------------------- */

static void
fail(struct client *c, const char *fmt, ...)
{
	va_list ap;

	c->failed = 1;
	fputs("ERROR ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct contact *
contact_get(struct client *c, const char *bare)
{
	struct contact *ct;

	for (ct = c->contacts; ct; ct = ct->next)
		if (strcmp(ct->jid, bare) == 0)
			return ct;
	ct = calloc(1, sizeof(*ct));
	if (!ct || !(ct->jid = strdup(bare))) {
		free(ct);
		return NULL;
	}
	ct->next = c->contacts;
	c->contacts = ct;
	return ct;
}

static int
contact_has(const struct contact *ct, uint32_t dev)
{
	for (int i = 0; i < ct->ndev; i++)
		if (ct->dev[i] == dev)
			return 1;
	return 0;
}

static void
contact_add(struct contact *ct, uint32_t dev)
{
	if (!contact_has(ct, dev) && ct->ndev < OC_MAX_DEVICES)
		ct->dev[ct->ndev++] = dev;
}

/* Replaces ct's devices with those of a <list xmlns=axolotl/> element. */
static void
contact_set_list(struct contact *ct, xmpp_stanza_t *list)
{
	ct->ndev = 0;
	ct->known = 1;
	for (xmpp_stanza_t *d = list ? xmpp_stanza_get_children(list) : NULL; d;
	     d = xmpp_stanza_get_next(d)) {
		const char *name = xmpp_stanza_get_name(d);
		const char *id = xmpp_stanza_get_attribute(d, "id");
		char *end;
		unsigned long v;

		if (!name || strcmp(name, "device") != 0 || !id)
			continue;
		errno = 0;
		v = strtoul(id, &end, 10);
		if (errno || *end || v == 0 || v > 0x7fffffffUL)
			continue;
		contact_add(ct, (uint32_t)v);
	}
}

static void
print_devices(const struct contact *ct, const char *event)
{
	printf("%s %s ", event, ct->jid);
	for (int i = 0; i < ct->ndev; i++)
		printf("%s%u", i ? "," : "", ct->dev[i]);
	putchar('\n');
	fflush(stdout);
}

/* ---- iq plumbing ---------------------------------------------------------------- */

static char *
new_id(struct client *c, char *buf, size_t len)
{
	snprintf(buf, len, "oc%u", ++c->next_id);
	return buf;
}

/* Sends the iq in xml (no id attribute: one is set) with handler called on
 * the answer with userdata ud.  0 or -1 (nothing sent). */
static int
send_iq(struct client *c, const char *xml, xmpp_handler handler, void *ud)
{
	xmpp_stanza_t *iq = xmpp_stanza_new_from_string(c->ctx, xml);
	char id[32];

	if (!iq) {
		fail(c, "cannot parse my own iq: %s", xml);
		return -1;
	}
	new_id(c, id, sizeof(id));
	xmpp_stanza_set_id(iq, id);
	xmpp_id_handler_add(c->conn, handler, id, ud);
	xmpp_send(c->conn, iq);
	xmpp_stanza_release(iq);
	return 0;
}

static void
job_free(struct job *j)
{
	free(j->jid);
	free(j);
}

/* send_iq for a job of an op: xml is consumed (freed); on failure the
 * job's step is taken back.  The handler frees the job. */
static void
job_send(struct client *c, char *xml, xmpp_handler handler, struct job *j)
{
	if (!xml || send_iq(c, xml, handler, j) < 0) {
		j->op->pending--;
		j->op->failed = 1;
		job_free(j);
	}
	free(xml);
}

static struct job *
job_new(struct client *c, struct op *op, const char *jid, uint32_t dev)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->c = c;
	j->op = op;
	j->dev = dev;
	if (jid && !(j->jid = strdup(jid))) {
		free(j);
		return NULL;
	}
	if (op)
		op->pending++;
	return j;
}

static void op_step_done(struct client *c, struct op *op);

/* ---- bundles, device lists, sessions ------------------------------------------- */

static void
sb_publish_options(struct sb *b)
{
	/* XEP-0384 §5.3.2: contacts without a subscription must read these */
	sb_printf(b, "<publish-options><x xmlns='jabber:x:data' type='submit'>"
		  "<field var='FORM_TYPE' type='hidden'><value>"
		  NS_PUBSUB "#publish-options</value></field>"
		  "<field var='pubsub#access_model'><value>open</value></field>"
		  "</x></publish-options>");
}

static char *
bundle_xml(struct client *c)
{
	struct oc_keys *k = &c->keys;
	session_signed_pre_key *spk = NULL;
	signal_buffer *buf = NULL;
	struct sb b = {0};

	if (signal_protocol_signed_pre_key_load_key(k->store, &spk,
						    k->signed_pre_key_id) < 0)
		return NULL;
	sb_printf(&b, "<bundle xmlns='" NS_OMEMO "'><signedPreKeyPublic "
		  "signedPreKeyId='%u'>", k->signed_pre_key_id);
	if (ec_public_key_serialize(&buf, ec_key_pair_get_public(
			session_signed_pre_key_get_key_pair(spk))) < 0)
		b.oom = 1;
	else
		sb_b64(&b, c->ctx, signal_buffer_data(buf), signal_buffer_len(buf));
	signal_buffer_free(buf);
	buf = NULL;
	sb_printf(&b, "</signedPreKeyPublic><signedPreKeySignature>");
	sb_b64(&b, c->ctx, session_signed_pre_key_get_signature(spk),
	       session_signed_pre_key_get_signature_len(spk));
	SIGNAL_UNREF(spk);
	sb_printf(&b, "</signedPreKeySignature><identityKey>");
	if (ec_public_key_serialize(&buf, ratchet_identity_key_pair_get_public(
			k->identity)) < 0)
		b.oom = 1;
	else
		sb_b64(&b, c->ctx, signal_buffer_data(buf), signal_buffer_len(buf));
	signal_buffer_free(buf);
	buf = NULL;
	sb_printf(&b, "</identityKey><prekeys>");
	for (struct oc_rec *r = k->pre_keys; r; r = r->next) {
		session_pre_key *pk = NULL;

		if (session_pre_key_deserialize(&pk, signal_buffer_data(r->buf),
						signal_buffer_len(r->buf), k->gctx) < 0) {
			b.oom = 1;
			break;
		}
		if (ec_public_key_serialize(&buf, ec_key_pair_get_public(
				session_pre_key_get_key_pair(pk))) == 0) {
			sb_printf(&b, "<preKeyPublic preKeyId='%u'>", r->id);
			sb_b64(&b, c->ctx, signal_buffer_data(buf),
			       signal_buffer_len(buf));
			sb_printf(&b, "</preKeyPublic>");
		}
		signal_buffer_free(buf);
		buf = NULL;
		SIGNAL_UNREF(pk);
	}
	sb_printf(&b, "</prekeys></bundle>");
	return sb_take(&b);
}

/* The answer to a publish: a failure with publish-options is retried once
 * without them (a server that cannot honour them answers an error). */
static int
on_published(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
	struct job *j = ud;
	struct client *c = j->c;
	const char *type = xmpp_stanza_get_type(st);

	if (type && strcmp(type, "error") == 0) {
		fail(c, "publish %s: %s", j->jid, error_condition(st));
		j->op->failed = 1;
	}
	op_step_done(c, j->op);
	job_free(j);
	return 0;
}

static int
publish(struct client *c, struct op *op, const char *node, const char *payload)
{
	struct sb b = {0};
	struct job *j = job_new(c, op, node, 0);

	if (!j)
		return -1;
	sb_printf(&b, "<iq type='set'><pubsub xmlns='" NS_PUBSUB "'><publish node='");
	sb_esc(&b, node);
	sb_printf(&b, "'><item id='current'>");
	sb_add(&b, payload, strlen(payload));
	sb_printf(&b, "</item></publish>");
	sb_publish_options(&b);
	sb_printf(&b, "</pubsub></iq>");
	job_send(c, sb_take(&b), on_published, j);
	return 0;
}

static int
publish_device_list(struct client *c, struct op *op)
{
	struct contact *me = contact_get(c, c->own_bare);
	struct sb b = {0};
	char *xml;
	int rc;

	if (!me)
		return -1;
	contact_add(me, c->keys.device_id);
	sb_printf(&b, "<list xmlns='" NS_OMEMO "'>");
	for (int i = 0; i < me->ndev; i++)
		sb_printf(&b, "<device id='%u'/>", me->dev[i]);
	sb_printf(&b, "</list>");
	xml = sb_take(&b);
	if (!xml)
		return -1;
	rc = publish(c, op, NODE_DEVICES, xml);
	free(xml);
	return rc;
}

static int
publish_bundle(struct client *c, struct op *op)
{
	char node[sizeof(NODE_BUNDLES) + 16];
	char *xml = bundle_xml(c);
	int rc;

	if (!xml)
		return -1;
	snprintf(node, sizeof(node), NODE_BUNDLES "%u", c->keys.device_id);
	rc = publish(c, op, node, xml);
	free(xml);
	return rc;
}

static int
decode_key(struct client *c, xmpp_stanza_t *el, ec_public_key **key)
{
	char *text = xmpp_stanza_get_text(el);
	uint8_t *bin = NULL;
	size_t len = 0;
	int rc = -1;

	if (text && b64_decode(c->ctx, text, &bin, &len) == 0 &&
	    curve_decode_point(key, bin, len, c->keys.gctx) == 0)
		rc = 0;
	if (text)
		xmpp_free(c->ctx, text);
	free(bin);
	return rc;
}

/* Builds a session with (jid, dev) from its <bundle/>, using one of its
 * pre-keys at random.  0 or -1. */
static int
build_session(struct client *c, const char *jid, uint32_t dev, xmpp_stanza_t *bundle)
{
	ec_public_key *spk = NULL, *ik = NULL, *pk = NULL;
	xmpp_stanza_t *spk_el, *prekeys, *chosen = NULL;
	session_pre_key_bundle *pkb = NULL;
	session_builder *builder = NULL;
	signal_protocol_address addr = {jid, strlen(jid), (int32_t)dev};
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	char *sig_text = NULL;
	int n = 0, rc = -1;
	uint32_t pick;

	spk_el = xmpp_stanza_get_child_by_name(bundle, "signedPreKeyPublic");
	prekeys = xmpp_stanza_get_child_by_name(bundle, "prekeys");
	sig_text = child_text(bundle, "signedPreKeySignature");
	if (!spk_el || !prekeys || !sig_text ||
	    b64_decode(c->ctx, sig_text, &sig, &sig_len) < 0 ||
	    decode_key(c, spk_el, &spk) < 0 ||
	    decode_key(c, xmpp_stanza_get_child_by_name(bundle, "identityKey"), &ik) < 0)
		goto out;
	for (xmpp_stanza_t *p = xmpp_stanza_get_children(prekeys); p;
	     p = xmpp_stanza_get_next(p))
		if (xmpp_stanza_get_name(p) &&
		    strcmp(xmpp_stanza_get_name(p), "preKeyPublic") == 0)
			n++;
	if (n == 0 || RAND_bytes((uint8_t *)&pick, sizeof(pick)) != 1)
		goto out;
	pick %= (uint32_t)n;
	for (xmpp_stanza_t *p = xmpp_stanza_get_children(prekeys); p;
	     p = xmpp_stanza_get_next(p))
		if (xmpp_stanza_get_name(p) &&
		    strcmp(xmpp_stanza_get_name(p), "preKeyPublic") == 0 && !chosen &&
		    pick-- == 0)
			chosen = p;
	if (!chosen || decode_key(c, chosen, &pk) < 0)
		goto out;
	if (session_pre_key_bundle_create(&pkb, 0, (int)dev,
					  (uint32_t)attr_ulong(chosen, "preKeyId"), pk,
					  (uint32_t)attr_ulong(spk_el, "signedPreKeyId"),
					  spk, sig, sig_len, ik) < 0)
		goto out;
	if (session_builder_create(&builder, c->keys.store, &addr, c->keys.gctx) < 0)
		goto out;
	session_builder_set_version(builder, OC_SESSION_VERSION);
	rc = session_builder_process_pre_key_bundle(builder, pkb);
	if (rc < 0)
		fail(c, "session with %s/%u: libomemo-c error %d", jid, dev, rc);
out:
	if (builder)
		session_builder_free(builder);
	if (pkb)
		SIGNAL_UNREF(pkb);
	if (spk)
		SIGNAL_UNREF(spk);
	if (ik)
		SIGNAL_UNREF(ik);
	if (pk)
		SIGNAL_UNREF(pk);
	if (sig_text)
		xmpp_free(c->ctx, sig_text);
	free(sig);
	return rc < 0 ? -1 : 0;
}

static int
on_bundle(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
	struct job *j = ud;
	struct client *c = j->c;
	const char *type = xmpp_stanza_get_type(st);
	xmpp_stanza_t *bundle = item_payload(st, "bundle");

	if (type && strcmp(type, "error") == 0)
		fprintf(stderr, "WARN bundle of %s/%u: %s\n", j->jid, j->dev,
			error_condition(st));
	else if (!bundle || build_session(c, j->jid, j->dev, bundle) < 0)
		fprintf(stderr, "WARN no usable bundle for %s/%u\n", j->jid, j->dev);
	op_step_done(c, j->op);
	job_free(j);
	return 0;
}

/* Requests the bundles of ct's devices that have no session yet. */
static void
fetch_missing_bundles(struct client *c, struct op *op, struct contact *ct)
{
	for (int i = 0; i < ct->ndev; i++) {
		uint32_t dev = ct->dev[i];
		struct sb b = {0};
		struct job *j;

		if (dev == c->keys.device_id || oc_has_session(&c->keys, ct->jid, dev))
			continue;
		j = job_new(c, op, ct->jid, dev);
		if (!j)
			continue;
		sb_printf(&b, "<iq type='get' to='");
		sb_esc(&b, ct->jid);
		sb_printf(&b, "'><pubsub xmlns='" NS_PUBSUB "'><items node='"
			  NODE_BUNDLES "%u' max_items='1'/></pubsub></iq>", dev);
		job_send(c, sb_take(&b), on_bundle, j);
	}
}

static int
on_device_list(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
	struct job *j = ud;
	struct client *c = j->c;
	const char *type = xmpp_stanza_get_type(st);
	struct contact *ct = contact_get(c, j->jid);

	if (ct) {
		if (type && strcmp(type, "error") == 0) {
			/* item-not-found: no OMEMO device yet */
			ct->known = 1;
			ct->ndev = 0;
		} else {
			contact_set_list(ct, item_payload(st, "list"));
		}
		if (j->op->kind == OP_PUBLISH) {
			if (publish_bundle(c, j->op) < 0 ||
			    publish_device_list(c, j->op) < 0)
				j->op->failed = 1;
		} else {
			fetch_missing_bundles(c, j->op, ct);
		}
	}
	op_step_done(c, j->op);
	job_free(j);
	return 0;
}

static int
fetch_device_list(struct client *c, struct op *op, const char *jid)
{
	struct job *j = job_new(c, op, jid, 0);
	struct sb b = {0};

	if (!j)
		return -1;
	sb_printf(&b, "<iq type='get' to='");
	sb_esc(&b, jid);
	sb_printf(&b, "'><pubsub xmlns='" NS_PUBSUB "'><items node='" NODE_DEVICES
		  "'/></pubsub></iq>");
	job_send(c, sb_take(&b), on_device_list, j);
	return 0;
}

/* ---- encryption ------------------------------------------------------------------- */

/* Appends <key rid=...> for every device of ct with a session. */
static int
add_keys(struct client *c, struct sb *b, struct contact *ct, const uint8_t *km)
{
	int n = 0;

	for (int i = 0; ct && i < ct->ndev; i++) {
		uint32_t dev = ct->dev[i];
		signal_protocol_address addr = {ct->jid, strlen(ct->jid), (int32_t)dev};
		session_cipher *cipher = NULL;
		ciphertext_message *m = NULL;
		signal_buffer *ser;

		if (dev == c->keys.device_id || !oc_has_session(&c->keys, ct->jid, dev))
			continue;
		if (session_cipher_create(&cipher, c->keys.store, &addr, c->keys.gctx) < 0)
			continue;
		session_cipher_set_version(cipher, OC_SESSION_VERSION);
		if (session_cipher_encrypt(cipher, km, 32, &m) == 0) {
			ser = ciphertext_message_get_serialized(m);
			sb_printf(b, "<key rid='%u'%s>", dev,
				  ciphertext_message_get_type(m) == CIPHERTEXT_PREKEY_TYPE
				  ? " prekey='true'" : "");
			sb_b64(b, c->ctx, signal_buffer_data(ser), signal_buffer_len(ser));
			sb_printf(b, "</key>");
			n++;
			SIGNAL_UNREF(m);
		}
		session_cipher_free(cipher);
	}
	return n;
}

/* Encrypts text for `to` and sends it, or with print_only prints the
 * stanza as "STANZA <xml>" (the offline interop test reads it). */
static void
send_encrypted(struct client *c, const char *to, const char *text, int print_only)
{
	uint8_t km[32], iv[12];		/* key material: AES key || GCM tag */
	size_t len = strlen(text);
	uint8_t *ct = malloc(len ? len : 1);
	struct sb b = {0};
	char id[32];
	char *xml;
	int n;

	if (!ct || RAND_bytes(km, 16) != 1 || RAND_bytes(iv, 12) != 1 ||
	    oc_gcm(1, km, iv, km + 16, (const uint8_t *)text, len, ct) < 0) {
		fail(c, "encryption failed");
		free(ct);
		return;
	}
	new_id(c, id, sizeof(id));
	sb_printf(&b, "<message type='chat' id='%s' to='", id);
	sb_esc(&b, to);
	sb_printf(&b, "'><encrypted xmlns='" NS_OMEMO "'><header sid='%u'>",
		  c->keys.device_id);
	n = add_keys(c, &b, contact_get(c, to), km);
	n += add_keys(c, &b, contact_get(c, c->own_bare), km);
	sb_printf(&b, "<iv>");
	sb_b64(&b, c->ctx, iv, sizeof(iv));
	sb_printf(&b, "</iv></header><payload>");
	sb_b64(&b, c->ctx, ct, len);
	sb_printf(&b, "</payload></encrypted><store xmlns='urn:xmpp:hints'/>"
		  "<encryption xmlns='urn:xmpp:eme:0' namespace='" NS_OMEMO
		  "' name='OMEMO'/><body>" FALLBACK "</body></message>");
	free(ct);
	OPENSSL_cleanse(km, sizeof(km));
	xml = sb_take(&b);
	if (!xml) {
		fail(c, "out of memory");
		return;
	}
	if (n == 0) {
		fail(c, "send to %s: no device with a session", to);
	} else if (print_only) {
		printf("STANZA %s\n", xml);
		fflush(stdout);
	} else {
		xmpp_send_raw_string(c->conn, "%s", xml);
		printf("SENT %s keys=%d\n", id, n);
		fflush(stdout);
	}
	free(xml);
}

static void
send_plain(struct client *c, const char *to, const char *text)
{
	struct sb b = {0};
	char id[32];
	char *xml;

	new_id(c, id, sizeof(id));
	sb_printf(&b, "<message type='chat' id='%s' to='", id);
	sb_esc(&b, to);
	sb_printf(&b, "'><body>");
	sb_esc(&b, text);
	sb_printf(&b, "</body></message>");
	xml = sb_take(&b);
	if (!xml)
		return;
	xmpp_send_raw_string(c->conn, "%s", xml);
	free(xml);
	printf("SENT %s keys=0\n", id);
	fflush(stdout);
}

/* ---- operations ---------------------------------------------------------------------- */

static void
op_free(struct op *op)
{
	free(op->jid);
	free(op->text);
	free(op);
}

static void
op_step_done(struct client *c, struct op *op)
{
	struct contact *ct;

	if (--op->pending > 0)
		return;
	switch (op->kind) {
	case OP_PUBLISH:
		if (!op->failed) {
			printf("PUBLISHED %u\n", c->keys.device_id);
			ct = contact_get(c, c->own_bare);
			if (ct)
				print_devices(ct, "DEVICELIST");
		}
		break;
	case OP_REPUBLISH:
		if (!op->failed)
			printf("REPUBLISHED %u\n", c->keys.device_id);
		break;
	case OP_FETCH:
		ct = contact_get(c, op->jid);
		if (ct) {
			printf("FETCHED %s ", ct->jid);
			for (int i = 0, k = 0; i < ct->ndev; i++)
				if (oc_has_session(&c->keys, ct->jid, ct->dev[i]))
					printf("%s%u", k++ ? "," : "", ct->dev[i]);
			putchar('\n');
		}
		break;
	case OP_SEND:
		send_encrypted(c, op->jid, op->text, 0);
		break;
	}
	fflush(stdout);
	op_free(op);
}

static struct op *
op_new(enum op_kind kind, const char *jid, const char *text)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->kind = kind;
	/* one step for the command itself, so that replies arriving while
	 * the command still sends its iqs cannot finish it early */
	op->pending = 1;
	if ((jid && !(op->jid = bare_of(jid))) || (text && !(op->text = strdup(text)))) {
		op_free(op);
		return NULL;
	}
	return op;
}

/* Makes sure ct's device list is known and every device has a session. */
static void
op_prepare(struct client *c, struct op *op, const char *jid, int refetch)
{
	struct contact *ct = contact_get(c, jid);

	if (!ct)
		return;
	if (!ct->known || refetch)
		fetch_device_list(c, op, jid);
	else
		fetch_missing_bundles(c, op, ct);
}

/* ---- incoming ---------------------------------------------------------------------- */

static void
report(const char *what, const char *kind, const char *from, unsigned long sid)
{
	printf("%s kind=%s from=%s sid=%lu", what, kind, from, sid);
}

/* A key exchange consumed one of our pre-keys: make a new one and
 * republish the bundle, as XEP-0384 asks (a second sender must not pick a
 * key that is gone). */
static void
replace_used_pre_keys(struct client *c)
{
	struct op *op;

	if (!c->connected || oc_replace_pre_keys(&c->keys) <= 0)
		return;
	op = op_new(OP_REPUBLISH, NULL, NULL);
	if (!op)
		return;
	if (publish_bundle(c, op) < 0)
		op->failed = 1;
	op_step_done(c, op);
}

/* Decrypts one <encrypted/> (legacy OMEMO) from sender `from` (bare). */
static void
decrypt_encrypted(struct client *c, xmpp_stanza_t *enc, const char *from,
		  const char *kind)
{
	xmpp_stanza_t *header = xmpp_stanza_get_child_by_name(enc, "header");
	xmpp_stanza_t *key_el = NULL;
	unsigned long sid = attr_ulong(header, "sid");
	signal_protocol_address addr = {from, strlen(from), (int32_t)sid};
	session_cipher *cipher = NULL;
	signal_buffer *plain = NULL;
	char *key_text = NULL, *iv_text = NULL, *payload_text = NULL;
	uint8_t *key = NULL, *iv = NULL, *payload = NULL, *out = NULL;
	size_t key_len = 0, iv_len = 0, payload_len = 0, ct_len;
	const char *why = NULL;
	const char *pk;
	uint8_t tag[16];
	int rc, republish = 0;

	for (xmpp_stanza_t *k = header ? xmpp_stanza_get_children(header) : NULL; k;
	     k = xmpp_stanza_get_next(k))
		if (xmpp_stanza_get_name(k) && strcmp(xmpp_stanza_get_name(k), "key") == 0 &&
		    attr_ulong(k, "rid") == c->keys.device_id)
			key_el = k;
	if (!header || !sid) {
		why = "no-header";
		goto out;
	}
	if (!key_el) {
		why = "not-encrypted-for-this-device";
		goto out;
	}
	key_text = xmpp_stanza_get_text(key_el);
	if (b64_decode(c->ctx, key_text, &key, &key_len) < 0) {
		why = "bad-key-base64";
		goto out;
	}
	if (session_cipher_create(&cipher, c->keys.store, &addr, c->keys.gctx) < 0) {
		why = "no-memory";
		goto out;
	}
	session_cipher_set_version(cipher, OC_SESSION_VERSION);
	pk = xmpp_stanza_get_attribute(key_el, "prekey");
	if (pk && (strcmp(pk, "true") == 0 || strcmp(pk, "1") == 0)) {
		pre_key_signal_message *m = NULL;

		rc = pre_key_signal_message_deserialize(&m, key, key_len, c->keys.gctx);
		if (rc == 0) {
			rc = session_cipher_decrypt_pre_key_signal_message(cipher, m,
									   NULL, &plain);
			SIGNAL_UNREF(m);
		}
		if (rc == 0)
			republish = 1;
	} else {
		signal_message *m = NULL;

		rc = signal_message_deserialize(&m, key, key_len, c->keys.gctx);
		if (rc == 0) {
			rc = session_cipher_decrypt_signal_message(cipher, m, NULL, &plain);
			SIGNAL_UNREF(m);
		}
	}
	if (rc < 0) {
		static char buf[48];

		snprintf(buf, sizeof(buf), "libomemo-c-error-%d", rc);
		why = buf;
		goto out;
	}
	payload_text = child_text(enc, "payload");
	if (!payload_text) {
		report("EMPTY", kind, from, sid);	/* key exchange, heartbeat */
		putchar('\n');
		goto out;
	}
	iv_text = child_text(header, "iv");
	if (b64_decode(c->ctx, iv_text, &iv, &iv_len) < 0 || iv_len != 12 ||
	    b64_decode(c->ctx, payload_text, &payload, &payload_len) < 0) {
		why = "bad-payload";
		goto out;
	}
	/* 32 bytes: key || tag (Conversations, python-omemo); 16 bytes: the
	 * tag is at the end of the payload (older clients) */
	ct_len = payload_len;
	if (signal_buffer_len(plain) >= 32) {
		memcpy(tag, signal_buffer_data(plain) + 16, 16);
	} else if (signal_buffer_len(plain) == 16 && payload_len >= 16) {
		ct_len -= 16;
		memcpy(tag, payload + ct_len, 16);
	} else {
		why = "bad-key-material";
		goto out;
	}
	out = malloc(ct_len + 1);
	if (!out || oc_gcm(0, signal_buffer_data(plain), iv, tag, payload, ct_len,
			   out) < 0) {
		why = "payload-authentication-failed";
		goto out;
	}
	report("DECRYPTED", kind, from, sid);
	fputs(" body=", stdout);
	print_escaped((const char *)out, ct_len);
	putchar('\n');
out:
	if (why) {
		report("UNDECRYPTABLE", kind, from, sid);
		printf(" reason=%s\n", why);
	}
	fflush(stdout);
	if (cipher)
		session_cipher_free(cipher);
	if (plain)
		signal_buffer_bzero_free(plain);
	if (key_text)
		xmpp_free(c->ctx, key_text);
	if (iv_text)
		xmpp_free(c->ctx, iv_text);
	if (payload_text)
		xmpp_free(c->ctx, payload_text);
	free(key);
	free(iv);
	free(payload);
	free(out);
	if (republish)
		replace_used_pre_keys(c);
}

/* Handles a chat message (live, carbon copy or archived). */
static void
handle_chat(struct client *c, xmpp_stanza_t *msg, const char *kind)
{
	xmpp_stanza_t *enc = xmpp_stanza_get_child_by_name_and_ns(msg, "encrypted",
								  NS_OMEMO);
	char *from = bare_of(xmpp_stanza_get_from(msg));
	char *body;

	if (!from && !(from = strdup(c->own_bare)))
		return;
	if (enc) {
		decrypt_encrypted(c, enc, from, kind);
	} else if ((body = child_text(msg, "body"))) {
		printf("PLAIN kind=%s from=%s body=", kind, from);
		print_escaped(body, strlen(body));
		putchar('\n');
		fflush(stdout);
		xmpp_free(c->ctx, body);
	} else {
		/* receipts, markers, chat states: named by their first child */
		xmpp_stanza_t *ch = xmpp_stanza_get_children(msg);
		const char *name = NULL;

		for (; ch && !name; ch = xmpp_stanza_get_next(ch))
			if (xmpp_stanza_is_tag(ch))
				name = xmpp_stanza_get_name(ch);
		printf("NOBODY kind=%s from=%s child=%s\n", kind, from,
		       name ? name : "");
		fflush(stdout);
	}
	free(from);
}

static xmpp_stanza_t *
forwarded_message(xmpp_stanza_t *wrapper)
{
	xmpp_stanza_t *fwd = xmpp_stanza_get_child_by_name_and_ns(wrapper, "forwarded",
								  NS_FORWARD);

	return fwd ? xmpp_stanza_get_child_by_name(fwd, "message") : NULL;
}

static int
on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
	struct client *c = ud;
	const char *type = xmpp_stanza_get_type(st);
	char *from = bare_of(xmpp_stanza_get_from(st));
	int from_self = !from || strcmp(from, c->own_bare) == 0;
	xmpp_stanza_t *el, *inner;

	if (type && strcmp(type, "error") == 0) {
		xmpp_stanza_t *err = xmpp_stanza_get_child_by_name(st, "error");
		char *text = err ? child_text(err, "text") : NULL;
		const char *id = xmpp_stanza_get_id(st);

		printf("MSGERROR id=%s condition=%s text=", id ? id : "",
		       error_condition(st));
		if (text) {
			print_escaped(text, strlen(text));
			xmpp_free(c->ctx, text);
		}
		putchar('\n');
		fflush(stdout);
	} else if ((el = xmpp_stanza_get_child_by_name_and_ns(st, "event", NS_EVENT))) {
		xmpp_stanza_t *items = xmpp_stanza_get_child_by_name(el, "items");
		const char *node = items ? xmpp_stanza_get_attribute(items, "node") : NULL;
		struct contact *ct;

		if (node && strcmp(node, NODE_DEVICES) == 0 && from &&
		    (ct = contact_get(c, from))) {
			contact_set_list(ct, item_payload(st, "list"));
			print_devices(ct, "DEVICELIST");
		}
	} else if ((el = xmpp_stanza_get_child_by_name_and_ns(st, "result", NS_MAM))) {
		const char *qid = xmpp_stanza_get_attribute(el, "queryid");

		if (from_self && qid && strcmp(qid, c->mam_qid) == 0 &&
		    (inner = forwarded_message(el))) {
			c->mam_count++;
			handle_chat(c, inner, "mam");
		}
	} else if (from_self && (el = xmpp_stanza_get_child_by_name_and_ns(
					 st, "received", NS_CARBONS))) {
		if ((inner = forwarded_message(el)))
			handle_chat(c, inner, "carbon-received");
	} else if (from_self && (el = xmpp_stanza_get_child_by_name_and_ns(
					 st, "sent", NS_CARBONS))) {
		if ((inner = forwarded_message(el)))
			handle_chat(c, inner, "carbon-sent");
	} else {
		handle_chat(c, st, "message");
	}
	free(from);
	return 1;
}

/* XEP-0115: the server verifies our caps with disco#info and sends PEP
 * notifications of the nodes whose +notify we list. */
static const char *const features[] = {
	NODE_DEVICES,
	NODE_DEVICES "+notify",
	NS_CAPS,
	NS_DISCO_INFO,
};

static void
compute_caps(struct client *c)
{
	struct sb b = {0};
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	char *s, *b64;

	sb_printf(&b, "client/pc//pigeon-omemo-client<");
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		sb_printf(&b, "%s<", features[i]);
	s = sb_take(&b);
	if (!s || !EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL)) {
		free(s);
		return;
	}
	free(s);
	b64 = xmpp_base64_encode(c->ctx, md, n);
	if (b64) {
		snprintf(c->caps_ver, sizeof(c->caps_ver), "%s", b64);
		xmpp_free(c->ctx, b64);
	}
}

static int
on_disco(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
	struct client *c = ud;
	xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query",
								NS_DISCO_INFO);
	const char *type = xmpp_stanza_get_type(st);
	const char *node = q ? xmpp_stanza_get_attribute(q, "node") : NULL;
	const char *from = xmpp_stanza_get_from(st);
	const char *id = xmpp_stanza_get_id(st);
	struct sb b = {0};
	char *xml;

	if (!q || !type || strcmp(type, "get") != 0)
		return 1;
	sb_printf(&b, "<iq type='result' id='");
	sb_esc(&b, id ? id : "");
	sb_printf(&b, "'");
	if (from) {
		sb_printf(&b, " to='");
		sb_esc(&b, from);
		sb_printf(&b, "'");
	}
	sb_printf(&b, "><query xmlns='" NS_DISCO_INFO "'");
	if (node) {
		sb_printf(&b, " node='");
		sb_esc(&b, node);
		sb_printf(&b, "'");
	}
	sb_printf(&b, "><identity category='client' type='pc' "
		  "name='pigeon-omemo-client'/>");
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		sb_printf(&b, "<feature var='%s'/>", features[i]);
	sb_printf(&b, "</query></iq>");
	xml = sb_take(&b);
	if (xml) {
		xmpp_send_raw_string(c->conn, "%s", xml);
		free(xml);
	}
	return 1;
}

static int
on_carbons(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
	struct client *c = ud;
	const char *type = xmpp_stanza_get_type(st);

	if (type && strcmp(type, "result") == 0) {
		puts("CARBONS");
		fflush(stdout);
	} else {
		fail(c, "enabling carbons: %s", error_condition(st));
	}
	return 0;
}

static void
enable_carbons(struct client *c)
{
	send_iq(c, "<iq type='set'><enable xmlns='" NS_CARBONS "'/></iq>",
		on_carbons, c);
}

static int
on_mam_done(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
	struct client *c = ud;
	const char *type = xmpp_stanza_get_type(st);

	if (type && strcmp(type, "result") == 0)
		printf("MAMDONE %d\n", c->mam_count);
	else
		fail(c, "mam query: %s", error_condition(st));
	fflush(stdout);
	return 0;
}

static void
query_mam(struct client *c, const char *with)
{
	struct sb b = {0};
	char *xml;

	snprintf(c->mam_qid, sizeof(c->mam_qid), "mam%u", ++c->next_id);
	c->mam_count = 0;
	sb_printf(&b, "<iq type='set'><query xmlns='" NS_MAM "' queryid='%s'>"
		  "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
		  "type='hidden'><value>" NS_MAM "</value></field><field var='with'>"
		  "<value>", c->mam_qid);
	sb_esc(&b, with);
	sb_printf(&b, "</value></field></x></query></iq>");
	xml = sb_take(&b);
	if (!xml)
		return;
	send_iq(c, xml, on_mam_done, c);
	free(xml);
}

static void
send_presence(struct client *c)
{
	xmpp_send_raw_string(c->conn, "<presence><c xmlns='" NS_CAPS "' hash='sha-1' "
			     "node='" CAPS_NODE "' ver='%s'/></presence>", c->caps_ver);
}

/* ---- connection and commands ------------------------------------------------------- */

static int presence_on_connect = 1;

static void
on_conn(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
	xmpp_stream_error_t *stream_error, void *ud)
{
	struct client *c = ud;
	const char *bound;

	if (event != XMPP_CONN_CONNECT) {
		if (!c->connected)
			fail(c, "could not log in (error %d%s)", error,
			     stream_error ? ", stream error" : "");
		c->connected = 0;
		c->disconnected = 1;
		puts("DISCONNECTED");
		fflush(stdout);
		return;
	}
	if (!xmpp_conn_is_secured(conn)) {
		fail(c, "session is not encrypted");
		xmpp_disconnect(conn);
		return;
	}
	c->connected = 1;
	bound = xmpp_conn_get_bound_jid(conn);
	xmpp_handler_add(conn, on_message, NULL, "message", NULL, c);
	xmpp_handler_add(conn, on_disco, NS_DISCO_INFO, "iq", NULL, c);
	if (c->o->carbons)
		enable_carbons(c);
	if (presence_on_connect)
		send_presence(c);
	printf("CONNECTED %s\n", bound ? bound : "");
	fflush(stdout);
}

static int
do_connect(struct client *c)
{
	long flags = XMPP_CONN_FLAG_MANDATORY_TLS;

	if (c->conn)
		xmpp_conn_release(c->conn);
	c->conn = xmpp_conn_new(c->ctx);
	if (!c->conn)
		return -1;
	c->disconnected = 0;
	if (!c->o->cafile)
		flags |= XMPP_CONN_FLAG_TRUST_TLS;
	if (xmpp_conn_set_flags(c->conn, flags) != XMPP_EOK)
		return -1;
	if (c->o->cafile)
		xmpp_conn_set_cafile(c->conn, c->o->cafile);
	xmpp_conn_set_jid(c->conn, c->o->jid);
	xmpp_conn_set_pass(c->conn, c->o->password);
	if (xmpp_connect_client(c->conn, c->o->host, c->o->port, on_conn, c) != XMPP_EOK) {
		fail(c, "cannot connect to %s:%u", c->o->host, c->o->port);
		return -1;
	}
	return 0;
}

/* Splits "word rest" in place: returns rest (maybe ""), word NUL-ended. */
static char *
split(char *s)
{
	char *sp = strchr(s, ' ');

	if (!sp)
		return s + strlen(s);
	*sp = '\0';
	return sp + 1;
}

/* The commands that need no server (--offline; tests/omemo/
 * test_offline_interop.py checks the cryptography against python-omemo
 * with them, XML passed on one line):
 *   bundle                    -> BUNDLE <device id> <bundle xml>
 *   devices JID ID,ID...      set JID's device list
 *   session JID DEV <bundle>  build a session from a bundle -> SESSION <jid> <dev>
 *   encrypt JID TEXT          -> STANZA <message xml>
 *   inject <message xml>      handle as if received (DECRYPTED ... lines)
 * Returns 1 if line was one of them. */
static int
offline_command(struct client *c, char *line, char *arg)
{
	struct contact *ct;
	xmpp_stanza_t *st;
	char *rest, *xml;

	if (strcmp(line, "bundle") == 0) {
		xml = bundle_xml(c);
		printf("BUNDLE %u %s\n", c->keys.device_id, xml ? xml : "");
		free(xml);
	} else if (strcmp(line, "devices") == 0 && *(rest = split(arg))) {
		if (!(ct = contact_get(c, arg)))
			return 1;
		ct->known = 1;
		ct->ndev = 0;
		for (char *tok = strtok(rest, ","); tok; tok = strtok(NULL, ","))
			contact_add(ct, (uint32_t)strtoul(tok, NULL, 10));
		print_devices(ct, "DEVICELIST");
	} else if (strcmp(line, "session") == 0 && *(rest = split(arg))) {
		char *bundle = split(rest);
		uint32_t dev = (uint32_t)strtoul(rest, NULL, 10);

		st = xmpp_stanza_new_from_string(c->ctx, bundle);
		if (!st || build_session(c, arg, dev, st) < 0)
			fail(c, "session %s %u failed", arg, dev);
		else
			printf("SESSION %s %u\n", arg, dev);
		if (st)
			xmpp_stanza_release(st);
	} else if (strcmp(line, "encrypt") == 0 && *(rest = split(arg))) {
		send_encrypted(c, arg, rest, 1);
	} else if (strcmp(line, "inject") == 0 && *arg) {
		st = xmpp_stanza_new_from_string(c->ctx, arg);
		if (!st) {
			fail(c, "inject: not XML");
			return 1;
		}
		on_message(NULL, st, c);
		xmpp_stanza_release(st);
	} else {
		return 0;
	}
	fflush(stdout);
	return 1;
}

static void
command(struct client *c, char *line)
{
	char *arg = split(line), *rest;
	struct op *op;

	if (strcmp(line, "quit") == 0) {
		c->quit = 1;
		return;
	}
	if (strcmp(line, "connect") == 0) {
		presence_on_connect = strcmp(arg, "nopresence") != 0;
		if (do_connect(c) < 0)
			fail(c, "connect failed");
		return;
	}
	if (offline_command(c, line, arg))
		return;
	if (!c->connected) {
		fail(c, "%s: not connected", line);
		return;
	}
	if (strcmp(line, "disconnect") == 0) {
		xmpp_disconnect(c->conn);
	} else if (strcmp(line, "publish") == 0) {
		op = op_new(OP_PUBLISH, NULL, NULL);
		if (op) {
			fetch_device_list(c, op, c->own_bare);
			op_step_done(c, op);
		}
	} else if (strcmp(line, "fetch") == 0 && *arg) {
		op = op_new(OP_FETCH, arg, NULL);
		if (op) {
			op_prepare(c, op, op->jid, 1);
			op_step_done(c, op);
		}
	} else if (strcmp(line, "send") == 0 && *(rest = split(arg))) {
		op = op_new(OP_SEND, arg, rest);
		if (op) {
			op_prepare(c, op, op->jid, 0);
			op_prepare(c, op, c->own_bare, 0);
			op_step_done(c, op);
		}
	} else if (strcmp(line, "plain") == 0 && *(rest = split(arg))) {
		send_plain(c, arg, rest);
	} else if (strcmp(line, "mam") == 0 && *arg) {
		query_mam(c, arg);
	} else if (strcmp(line, "carbons") == 0) {
		enable_carbons(c);
	} else if (strcmp(line, "presence") == 0) {
		send_presence(c);
	} else {
		fail(c, "unknown command or missing argument: %s", line);
	}
}

/* Reads what standard input has, runs complete lines.  -1 at EOF. */
static int
read_commands(struct client *c, char *buf, size_t *fill)
{
	struct pollfd p = {STDIN_FILENO, POLLIN, 0};
	ssize_t n;
	char *nl;

	if (poll(&p, 1, 0) <= 0)
		return 0;
	n = read(STDIN_FILENO, buf + *fill, OC_MAX_LINE - 1 - *fill);
	if (n <= 0)
		return -1;
	*fill += (size_t)n;
	buf[*fill] = '\0';
	while ((nl = strchr(buf, '\n'))) {
		*nl = '\0';
		if (nl > buf && nl[-1] == '\r')
			nl[-1] = '\0';
		if (*buf)
			command(c, buf);
		*fill -= (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, *fill + 1);
	}
	if (*fill == OC_MAX_LINE - 1) {
		fail(c, "command line too long");
		return -1;
	}
	return 0;
}

static int
parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"jid", required_argument, NULL, 'j'},
		{"password", required_argument, NULL, 'p'},
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'P'},
		{"cafile", required_argument, NULL, 'c'},
		{"carbons", no_argument, NULL, 'C'},
		{"no-presence", no_argument, NULL, 'N'},
		{"timeout", required_argument, NULL, 't'},
		{"verbose", no_argument, NULL, 'v'},
		{"offline", no_argument, NULL, 'O'},
		{NULL, 0, NULL, 0},
	};
	char *end;
	long port;
	int ch;

	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->port = 5222;
	o->timeout = 60.0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j': o->jid = optarg; break;
		case 'p': o->password = optarg; break;
		case 'H': o->host = optarg; break;
		case 'P':
			errno = 0;
			port = strtol(optarg, &end, 10);
			if (errno || *end || port < 1 || port > 65535)
				return -1;
			o->port = (unsigned short)port;
			break;
		case 'c': o->cafile = optarg; break;
		case 'C': o->carbons = 1; break;
		case 'N': o->no_presence = 1; break;
		case 't':
			o->timeout = strtod(optarg, &end);
			if (*end || !(o->timeout > 0))
				return -1;
			break;
		case 'v': o->verbose = 1; break;
		case 'O': o->offline = 1; break;
		default: return -1;
		}
	}
	return optind == argc && o->jid && (o->password || o->offline) ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static char line[OC_MAX_LINE];
	struct opts o;
	struct client c;
	size_t fill = 0;
	double deadline, grace;
	int rc = EXIT_FAIL, stdin_open = 1;

	if (parse_args(argc, argv, &o) < 0) {
		fputs("usage: omemo-client --jid JID --password PW [--host H] "
		      "[--port N] [--cafile F] [--carbons] [--no-presence] "
		      "[--timeout S] [--verbose]\n", stderr);
		return EXIT_USAGE;
	}
	memset(&c, 0, sizeof(c));
	c.o = &o;
	signal(SIGPIPE, SIG_IGN);	/* a write to a closed socket: an error */
	xmpp_initialize();
	c.ctx = xmpp_ctx_new(NULL, o.verbose ? xmpp_get_default_logger(
						   XMPP_LEVEL_DEBUG) : NULL);
	c.own_bare = bare_of(o.jid);
	if (!c.ctx || !c.own_bare || oc_keys_init(&c.keys) < 0) {
		fail(&c, "initialisation failed");
		goto out;
	}
	compute_caps(&c);
	fprintf(stderr, "device id %u\n", c.keys.device_id);
	presence_on_connect = !o.no_presence;
	if (!o.offline && do_connect(&c) < 0)
		goto out;
	deadline = now() + o.timeout;
	while (!c.failed && !c.quit) {
		if (now() >= deadline) {
			fprintf(stderr, "TIMEOUT after %.1f s\n", o.timeout);
			rc = EXIT_TIMEOUT;
			goto out;
		}
		xmpp_run_once(c.ctx, 20);
		if (stdin_open && read_commands(&c, line, &fill) < 0) {
			stdin_open = 0;
			c.quit = 1;
		}
	}
	if (c.connected) {
		xmpp_disconnect(c.conn);
		grace = now() + 5.0;
		while (!c.disconnected && now() < grace)
			xmpp_run_once(c.ctx, 20);
	}
	if (!c.failed) {
		puts("DONE");
		rc = EXIT_OK;
	}
out:
	fflush(stdout);
	if (c.conn)
		xmpp_conn_release(c.conn);
	for (struct contact *ct = c.contacts, *next; ct; ct = next) {
		next = ct->next;
		free(ct->jid);
		free(ct);
	}
	oc_keys_free(&c.keys);
	free(c.own_bare);
	if (c.ctx)
		xmpp_ctx_free(c.ctx);
	xmpp_shutdown();
	return rc;
}
