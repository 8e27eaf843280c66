/* External components (XEP-0114): a handshake with a per-component shared
 * secret, then stanzas to and from the component's domain. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "authlimit.h"
#include "pigeon/map.h"
#include "pigeon/log.h"
#include "router.h"
#include "server.h"
#include "stream.h"

static const struct pgn_cfg_component *
find_component(const struct pgn_server *srv, const char *domain)
{
	for (size_t i = 0; i < srv->cfg->ncomponents; i++)
		if (strcmp(srv->cfg->components[i].domain, domain) == 0)
			return &srv->cfg->components[i];
	return NULL;
}

static void
component_open(struct pgn_session *s, const char **attrs,
	       const char *default_ns)
{
	const char *to = NULL;
	char *domain = NULL;

	for (int i = 0; attrs != NULL && attrs[i] != NULL; i += 2)
		if (strcmp(attrs[i], "to") == 0)
			to = attrs[i + 1];
	if (to != NULL && pgn_jid_nameprep(to, &domain) == 0 &&
	    find_component(s->srv, domain) != NULL) {
		s->domain = domain;
		domain = NULL;
	}
	free(domain);
	pgn_stream_send_header(s, s->domain);
	if (default_ns == NULL || strcmp(default_ns, PGN_NS_COMPONENT) != 0) {
		pgn_stream_error(s, "invalid-namespace", NULL);
		return;
	}
	if (s->domain == NULL) {
		pgn_stream_error(s, "host-unknown", NULL);
		return;
	}
	s->state = PGN_ST_NEGOTIATING;
}

/* The handshake's verdict, now. */
static void
handshake_answer(struct pgn_session *s, int ok)
{
	if (!ok) {
		pgn_log(PGN_LOG_INFO, "session %llu: component %s: bad handshake",
			(unsigned long long)s->id, s->domain);
		pgn_stream_error(s, "not-authorized", NULL);
		return;
	}
	/* One connection per component: the new one wins. */
	struct pgn_session *old;
	int rc = pgn_router_add_component(s->srv, s->domain, s, &old);
	if (old != NULL)
		pgn_stream_error(old, "conflict", NULL);
	if (rc != 0) {
		pgn_stream_error(s, "resource-constraint", NULL);
		return;
	}
	s->state = PGN_ST_BOUND;
	s->authenticated = 1;
	pgn_stream_established(s);
	pgn_stream_send_raw(s, "<handshake/>", strlen("<handshake/>"));
	pgn_log(PGN_LOG_INFO, "session %llu: component %s connected",
		(unsigned long long)s->id, s->domain);
}

struct handshake_job {
	uint64_t id;
	struct pgn_server *srv;
	int ok;
};

static void
delayed_handshake_cb(void *arg)
{
	struct handshake_job *j = arg;
	struct pgn_session *s = pgn_stream_find(j->srv, j->id);

	if (s != NULL && s->state == PGN_ST_NEGOTIATING) {
		handshake_answer(s, j->ok);
		pgn_stream_resume(s);
	}
}

/* Secrets are guessed like passwords (one guess per connection, thousands
 * a second): the same throttle as SASL, per address and per component,
 * holding right and wrong answers alike (authlimit.h). */
static void
handshake_outcome(struct pgn_session *s, int ok)
{
	unsigned delay_ms = pgn_limits_auth_result(
		s->srv->auth_limits, s->conn->peer, s->domain,
		ok ? PGN_AUTH_OK : PGN_AUTH_FAILED);
	struct handshake_job *j;

	if (delay_ms > 0 && (j = calloc(1, sizeof(*j))) != NULL) {
		j->id = s->id;
		j->srv = s->srv;
		j->ok = ok;
		if (pgn_server_later(s->srv, delay_ms, delayed_handshake_cb,
				     free, j) == 0) {
			pgn_stream_suspend(s);
			return;
		}
		free(j);
	}
	handshake_answer(s, ok);
}

static void
handshake(struct pgn_session *s, struct pgn_xml *xml)
{
	const struct pgn_cfg_component *c = find_component(s->srv, s->domain);
	char *given = pgn_xml_text(xml);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = 0;

	if (c != NULL && given != NULL && ctx != NULL &&
	    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, s->conn->stream_id,
			     strlen(s->conn->stream_id)) == 1 &&
	    EVP_DigestUpdate(ctx, c->secret, strlen(c->secret)) == 1 &&
	    EVP_DigestFinal_ex(ctx, md, &mdlen) == 1) {
		for (unsigned i = 0; i < mdlen; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		/* Case-insensitive hex, compared in constant time. */
		for (char *p = given; *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		ok = strlen(given) == 2 * mdlen &&
		     sodium_memcmp(given, hex, 2 * mdlen) == 0;
	}
	EVP_MD_CTX_free(ctx);
	free(given);
	handshake_outcome(s, ok);
}

/* Stanzas from the component carry its namespace; internally everything
 * is jabber:client so that it can be written to any stream. */
static void
normalise_ns(struct pgn_xml *xml)
{
	const char *ns = pgn_xml_ns(xml);
	if (ns != NULL && strcmp(ns, PGN_NS_COMPONENT) == 0)
		pgn_xml_set_ns(xml, PGN_NS_CLIENT);
	for (struct pgn_xml *c = pgn_xml_first_child(xml); c != NULL;
	     c = pgn_xml_next(c))
		normalise_ns(c);
}

static void
component_element(struct pgn_session *s, struct pgn_xml *xml)
{
	const char *ns = pgn_xml_ns(xml);
	const char *name = pgn_xml_name(xml);
	struct pgn_stanza *st;
	int bad_jid = 0;

	if (s->state == PGN_ST_NEGOTIATING) {
		if (strcmp(name, "handshake") == 0 && ns != NULL &&
		    strcmp(ns, PGN_NS_COMPONENT) == 0)
			handshake(s, xml);
		else
			pgn_stream_error(s, "not-authorized", NULL);
		pgn_xml_free(xml);
		return;
	}
	if (s->state != PGN_ST_BOUND) {
		pgn_xml_free(xml);
		return;
	}
	if (ns == NULL || strcmp(ns, PGN_NS_COMPONENT) != 0 ||
	    (strcmp(name, "message") && strcmp(name, "presence") &&
	     strcmp(name, "iq"))) {
		pgn_xml_free(xml);
		pgn_stream_error(s, "unsupported-stanza-type", NULL);
		return;
	}
	normalise_ns(xml);
	st = pgn_stanza_new(xml, &bad_jid);
	if (st == NULL) {
		if (bad_jid)
			pgn_stream_error(s, "improper-addressing",
					 "malformed 'to' or 'from'");
		return;
	}
	/* A component speaks only for its own domain. */
	if (st->from == NULL || strcmp(st->from->domain, s->domain) != 0) {
		pgn_stanza_free(st);
		pgn_stream_error(s, "invalid-from", NULL);
		return;
	}
	if (st->to == NULL) {
		pgn_stanza_free(st);
		pgn_stream_error(s, "improper-addressing", "missing 'to'");
		return;
	}
	pgn_router_route(s->srv, s, st);
}

static void
component_ended(struct pgn_session *s)
{
	if (s->domain != NULL &&
	    pgn_router_del_component(s->srv, s->domain, s)) {
		pgn_log(PGN_LOG_INFO, "session %llu: component %s disconnected",
			(unsigned long long)s->id, s->domain);
	}
}

static const char *
component_local_name(const struct pgn_session *s)
{
	return s->domain;
}

const struct pgn_stream_ops pgn_component_ops = {
	.name = "component",
	.kind = PGN_STREAM_COMPONENT,
	.ns = PGN_NS_COMPONENT,
	.open = component_open,
	.element = component_element,
	.local_name = component_local_name,
	.ended = component_ended,
};
