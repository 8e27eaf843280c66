/* Client-to-server streams (RFC 6120): stream header, features, STARTTLS,
 * SASL, resource binding, then stanzas into the router. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "host.h"
#include "authlimit.h"
#include "event.h"
#include "pigeon/account.h"
#include "pigeon/base64.h"
#include "pigeon/log.h"
#include "pigeon/worker.h"
#include "router.h"
#include "server.h"
#include "stream.h"
#include "tls.h"

static void c2s_ended(struct pgn_session *s);

static const char *const mechanisms[] = {
	"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
	"SCRAM-SHA-1", "PLAIN", NULL,
};

static int
starttls_required(const struct pgn_session *s)
{
	return s->listener->cfg->kind == PGN_LISTEN_C2S &&
	       s->listener->cfg->starttls_required;
}

/* Fills the TLS facts SASL needs (channel binding) into tls. */
static void
sasl_tls(struct pgn_session *s, struct pgn_sasl_tls *tls,
	 unsigned char *exp, unsigned char *ep, unsigned char *uq)
{
	size_t elen = 0, eplen = 0;
	memset(tls, 0, sizeof(*tls));
	tls->secure = s->conn->secure;
	if (s->conn->secure && s->conn->ssl != NULL &&
	    pgn_tls_channel_binding(s->conn->ssl, exp, &elen, ep, &eplen) ==
		    0) {
		tls->exporter = elen ? exp : NULL;
		tls->exporter_len = elen;
		tls->endpoint = eplen ? ep : NULL;
		tls->endpoint_len = eplen;
		tls->unique_len = pgn_tls_unique(s->conn->ssl, uq, 64);
		tls->unique = tls->unique_len ? uq : NULL;
	}
}

/* Adds <channel-binding type='type'/> to a XEP-0440
 * <sasl-channel-binding/>.  0 or -ENOMEM. */
static int
add_channel_binding(struct pgn_xml *cb, const char *type)
{
	struct pgn_xml *c =
		pgn_xml_add_child(cb, PGN_NS_SASL_CB, "channel-binding");

	if (c == NULL || pgn_xml_set_attr(c, "type", type) != 0)
		return -ENOMEM;
	return 0;
}

static void
send_features(struct pgn_session *s)
{
	struct pgn_xml *f = pgn_xml_new(PGN_NS_STREAMS, "features");
	int tls_ok = pgn_tls_available(s->srv->tls);

	if (f == NULL)
		goto nomem;
	if (!s->authenticated) {
		if (!s->conn->secure && tls_ok &&
		    s->listener->cfg->kind == PGN_LISTEN_C2S) {
			struct pgn_xml *st =
				pgn_xml_add_child(f, PGN_NS_TLS, "starttls");
			if (st == NULL)
				goto nomem;
			if (starttls_required(s) &&
			    pgn_xml_add_child(st, PGN_NS_TLS, "required") == NULL)
				goto nomem;
		}
		if (s->conn->secure || !starttls_required(s) || !tls_ok) {
			unsigned char exp[64], ep[64], uq[64];
			struct pgn_sasl_tls tls;
			struct pgn_xml *m =
				pgn_xml_add_child(f, PGN_NS_SASL, "mechanisms");
			if (m == NULL)
				goto nomem;
			sasl_tls(s, &tls, exp, ep, uq);
			for (int i = 0; mechanisms[i] != NULL; i++) {
				if (!pgn_sasl_mech_allowed(mechanisms[i], &tls))
					continue;
				struct pgn_xml *e = pgn_xml_add_child(
					m, PGN_NS_SASL, "mechanism");
				if (e == NULL ||
				    pgn_xml_add_text(e, mechanisms[i],
						     strlen(mechanisms[i])) != 0)
					goto nomem;
			}
			/* XEP-0440: say which channel bindings we support. */
			if (tls.exporter != NULL || tls.endpoint != NULL) {
				struct pgn_xml *cb = pgn_xml_add_child(
					f, PGN_NS_SASL_CB,
					"sasl-channel-binding");
				if (cb == NULL)
					goto nomem;
				if (tls.exporter != NULL &&
				    add_channel_binding(cb, "tls-exporter") != 0)
					goto nomem;
				if (tls.endpoint != NULL &&
				    add_channel_binding(
					    cb, "tls-server-end-point") != 0)
					goto nomem;
			}
		}
	} else {
		struct pgn_xml *sess;
		if (pgn_xml_add_child(f, PGN_NS_BIND, "bind") == NULL ||
		    (sess = pgn_xml_add_child(f, PGN_NS_SESSION, "session")) ==
			    NULL ||
		    pgn_xml_add_child(sess, PGN_NS_SESSION, "optional") == NULL ||
		    pgn_sm_features(s, f) != 0)
			goto nomem;
	}
	if (s->authenticated || s->conn->secure || !starttls_required(s) || !tls_ok) {
		/* Modules add theirs (before authentication too, e.g. in-band
		 * registration, but not before a required STARTTLS). */
		struct pgn_event ev = { .name = "stream-features",
					.origin = s,
					.data = f };
		pgn_host_fire(s->host, &ev);
	}
	pgn_stream_send_stream_el(s, f);
	pgn_xml_free(f);
	return;
nomem:
	pgn_xml_free(f);
	pgn_stream_error(s, "resource-constraint", NULL);
}

static const char *
attr_of(const char **attrs, const char *name)
{
	for (int i = 0; attrs != NULL && attrs[i] != NULL; i += 2)
		if (strcmp(attrs[i], name) == 0)
			return attrs[i + 1];
	return NULL;
}

static void
c2s_open(struct pgn_session *s, const char **attrs, const char *default_ns)
{
	const char *to = attr_of(attrs, "to");
	const char *version = attr_of(attrs, "version");
	char *domain = NULL;
	struct pgn_host *h = NULL;

	if (to != NULL && pgn_jid_nameprep(to, &domain) == 0)
		h = pgn_server_host(s->srv, domain);
	free(domain);
	/* The header we answer with names the host if we know it. */
	if (s->host == NULL)
		s->host = h;
	pgn_stream_send_header(s, h != NULL ? pgn_host_name(h) : NULL);
	if (default_ns == NULL || strcmp(default_ns, PGN_NS_CLIENT) != 0) {
		pgn_stream_error(s, "invalid-namespace", NULL);
		return;
	}
	if (h == NULL) {
		pgn_stream_error(s, "host-unknown", NULL);
		return;
	}
	if (h != s->host) {
		/* RFC 6120 §4.3.3: the 'to' stays the same across restarts. */
		pgn_stream_error(s, "host-unknown",
				 "the stream host changed on restart");
		return;
	}
	if (version == NULL || atoi(version) < 1) {
		pgn_stream_error(s, "unsupported-version",
				 "XMPP 1.0 streams are required");
		return;
	}
	s->state = PGN_ST_NEGOTIATING;
	send_features(s);
}

/* ---- STARTTLS ----------------------------------------------------------- */

static void
handle_starttls(struct pgn_session *s)
{
	if (s->conn->secure || !pgn_tls_available(s->srv->tls) ||
	    s->listener->cfg->kind != PGN_LISTEN_C2S) {
		pgn_stream_send_raw(s, "<failure xmlns='" PGN_NS_TLS "'/>",
				    strlen("<failure xmlns='" PGN_NS_TLS "'/>"));
		pgn_stream_close(s);
		return;
	}
	pgn_stream_send_raw(s, "<proceed xmlns='" PGN_NS_TLS "'/>",
			    strlen("<proceed xmlns='" PGN_NS_TLS "'/>"));
	/* The client starts a new stream inside TLS, once <proceed/> has
	 * left; until then what it sends is discarded. */
	if (pgn_stream_start_tls(s) != 0) {
		pgn_stream_destroy(s);
		return;
	}
	s->state = PGN_ST_WAIT_HEADER;
}

/* ---- SASL -------------------------------------------------------------- */

/* Writes <what xmlns=SASL> with data in base64 ("=" for none when
 * always_body), or with an empty <cond/> child. */
static void
sasl_send(struct pgn_session *s, const char *what, const unsigned char *data,
	  size_t len, int always_body, const char *cond)
{
	struct pgn_xml *el = pgn_xml_new(PGN_NS_SASL, what);
	char *b64 = len > 0 ? pgn_base64_encode(data, len) : NULL;
	const char *text = b64 != NULL ? b64 : always_body ? "=" : NULL;

	if (el != NULL &&
	    (text == NULL || pgn_xml_add_text(el, text, strlen(text)) == 0) &&
	    (cond == NULL || pgn_xml_add_child(el, PGN_NS_SASL, cond) != NULL))
		pgn_stream_send_nonza(s, el);
	free(b64);
	pgn_xml_free(el);
}

static void
send_failure_now(struct pgn_session *s, const char *cond)
{
	sasl_send(s, "failure", NULL, 0, 0, cond);
	pgn_sasl_free(s->sasl);
	s->sasl = NULL;
	/* RFC 6120 §6.4.5: allow a few retries, then close. */
	if (++s->sasl_tries >= 3)
		pgn_stream_error(s, "policy-violation",
				 "too many authentication failures");
}

static void
send_success_now(struct pgn_session *s, const unsigned char *data, size_t len)
{
	sasl_send(s, "success", data, len, 0, NULL);
	pgn_sasl_free(s->sasl);
	s->sasl = NULL;
	s->authenticated = 1;
	pgn_stream_restart(s);
	s->state = PGN_ST_WAIT_HEADER;
	pgn_log(PGN_LOG_INFO, "session %llu: authenticated as %s@%s",
		(unsigned long long)s->id, s->authcid, pgn_host_name(s->host));
}

/* An outcome held back by the authentication throttle. */
struct outcome_job {
	uint64_t id;
	struct pgn_server *srv;
	int ok;
	char cond[40];
	unsigned char *data; /* success: the SCRAM server-final message */
	size_t len;
};

static void
outcome_job_free(void *arg)
{
	struct outcome_job *j = arg;

	if (j->data != NULL) {
		sodium_memzero(j->data, j->len);
		free(j->data);
	}
	free(j);
}

static void
delayed_outcome_cb(void *arg)
{
	struct outcome_job *j = arg;
	struct pgn_session *s = pgn_stream_find(j->srv, j->id);

	if (s != NULL && s->state != PGN_ST_CLOSING) {
		if (j->ok)
			send_success_now(s, j->data, j->len);
		else
			send_failure_now(s, j->cond);
		pgn_stream_resume(s);
	}
}

/* Tells the outcome of a SASL exchange (cond: the failure, NULL for a
 * success with data), later when the address or the account is being
 * guessed at (authlimit.h): successes wait as long as failures, so that
 * the time of the answer tells nothing, and nothing blocks meanwhile. */
static void
sasl_outcome(struct pgn_session *s, const char *cond,
	     const unsigned char *data, size_t len)
{
	char account[2100];
	enum pgn_auth_outcome o = cond == NULL ? PGN_AUTH_OK
				  : strcmp(cond, "not-authorized") == 0
				  ? PGN_AUTH_FAILED
				  : PGN_AUTH_ERROR;
	struct outcome_job *j = NULL;
	unsigned delay_ms;

	if (s->authcid != NULL)
		snprintf(account, sizeof(account), "%s@%s", s->authcid,
			 pgn_host_name(s->host));
	delay_ms = pgn_limits_auth_result(s->srv->auth_limits, s->conn->peer,
					  s->authcid != NULL ? account : NULL,
					  o);
	if (cond != NULL)
		pgn_log(PGN_LOG_INFO,
			"session %llu: SASL failure %s from %s (answer in %u ms)",
			(unsigned long long)s->id, cond, s->conn->peer, delay_ms);
	if (delay_ms > 0 && (j = calloc(1, sizeof(*j))) != NULL) {
		j->id = s->id;
		j->srv = s->srv;
		j->ok = cond == NULL;
		snprintf(j->cond, sizeof(j->cond), "%s", cond ? cond : "");
		if (len > 0 && (j->data = malloc(len)) == NULL) {
			free(j);
			j = NULL;
		} else if (len > 0) {
			memcpy(j->data, data, len);
			j->len = len;
		}
	}
	if (j != NULL) {
		if (pgn_server_later(s->srv, delay_ms, delayed_outcome_cb,
				     outcome_job_free, j) == 0) {
			pgn_stream_suspend(s);
			return;
		}
		/* Without a timer the answer goes now: still correct. */
		outcome_job_free(j);
	}
	if (cond == NULL)
		send_success_now(s, data, len);
	else
		send_failure_now(s, cond);
}

static void
sasl_failure(struct pgn_session *s, const char *cond)
{
	sasl_outcome(s, cond, NULL, 0);
}

static void
sasl_success(struct pgn_session *s, const unsigned char *data, size_t len)
{
	sasl_outcome(s, NULL, data, len);
}

static void sasl_handle_status(struct pgn_session *s,
			       enum pgn_sasl_status st, unsigned char *out,
			       size_t outlen);

/* An asynchronous SASL step (lookup, password check) is over: carry on
 * with st, and read again unless that started another asynchronous step
 * (or a delayed failure). */
static void
sasl_resume(struct pgn_session *s, enum pgn_sasl_status st,
	    unsigned char *out, size_t outlen)
{
	s->busy = 0;
	sasl_handle_status(s, st, out, outlen);
	if (!s->busy)
		pgn_stream_resume(s);
}

/* The same, when the step itself failed with cond. */
static void
sasl_resume_failed(struct pgn_session *s, const char *cond)
{
	s->busy = 0;
	sasl_failure(s, cond);
	if (!s->busy)
		pgn_stream_resume(s);
}

struct pw_job {
	uint64_t id;
	struct pgn_server *srv;
	struct pgn_scram_creds creds;
	char *password;
	int ok;
};

static void
pw_run(void *arg)
{
	struct pw_job *j = arg;
	j->ok = pgn_scram_check_password(&j->creds, j->password) == 1;
}

/* Wipes the secrets of a password job and frees it. */
static void
pw_job_free(struct pw_job *j)
{
	pgn_scram_wipe_free(j->password);
	sodium_memzero(&j->creds, sizeof(j->creds));
	free(j);
}

static void
pw_done(void *arg)
{
	struct pw_job *j = arg;
	struct pgn_session *s = pgn_stream_find(j->srv, j->id);
	int ok = j->ok;

	pw_job_free(j);
	if (s != NULL && s->sasl != NULL)
		sasl_resume(s, pgn_sasl_password_result(s->sasl, ok), NULL, 0);
}

static void
creds_cb(uint64_t owner, void *arg, int err, const struct pgn_scram_creds *creds)
{
	struct pgn_server *srv = arg;
	struct pgn_session *s = pgn_stream_find(srv, owner);
	unsigned char *out = NULL;
	size_t outlen = 0;

	if (s == NULL || s->sasl == NULL)
		return;
	if (err != 0 && err != -ENOENT) {
		pgn_log(PGN_LOG_WARN, "session %llu: credential lookup failed: %d",
			(unsigned long long)s->id, err);
		sasl_resume_failed(s, "temporary-auth-failure");
		return;
	}
	enum pgn_sasl_status st =
		pgn_sasl_set_creds(s->sasl, err == 0 ? creds : NULL, &out, &outlen);
	if (st == PGN_SASL_NEED_PASSWORD_CHECK) {
		/* PBKDF2 is heavy: it runs on the crypto worker. */
		struct pw_job *j = calloc(1, sizeof(*j));
		if (j == NULL ||
		    (j->password = strdup(pgn_sasl_password(s->sasl))) == NULL) {
			free(j);
			sasl_resume_failed(s, "temporary-auth-failure");
			return;
		}
		j->id = s->id;
		j->srv = s->srv;
		j->creds = *creds;
		if (pgn_worker_submit(s->srv->crypto, j, pw_run, pw_done) != 0) {
			pw_job_free(j);
			sasl_resume_failed(s, "temporary-auth-failure");
		}
		return; /* still busy */
	}
	sasl_resume(s, st, out, outlen);
	free(out);
}

static void
sasl_handle_status(struct pgn_session *s, enum pgn_sasl_status st,
		   unsigned char *out, size_t outlen)
{
	switch (st) {
	case PGN_SASL_CONTINUE:
		sasl_send(s, "challenge", out, outlen, 1, NULL);
		return;
	case PGN_SASL_SUCCESS:
		sasl_success(s, out, outlen);
		return;
	case PGN_SASL_FAILURE:
		sasl_failure(s, pgn_sasl_condition(s->sasl));
		return;
	case PGN_SASL_NEED_CREDS: {
		const char *authzid = pgn_sasl_authzid(s->sasl);
		char *node = NULL;
		if (pgn_jid_nodeprep(pgn_sasl_username(s->sasl), &node) != 0) {
			sasl_failure(s, "not-authorized");
			return;
		}
		if (authzid != NULL && *authzid != '\0') {
			/* Only the user's own JID may be requested. */
			struct pgn_jid *az = NULL;
			int ok = pgn_jid_parse(authzid, &az) == 0 &&
				 az->node != NULL && az->resource == NULL &&
				 strcmp(az->node, node) == 0 &&
				 strcmp(az->domain, pgn_host_name(s->host)) == 0;
			pgn_jid_free(az);
			if (!ok) {
				free(node);
				sasl_failure(s, "invalid-authzid");
				return;
			}
		}
		free(s->authcid);
		s->authcid = node;
		pgn_stream_suspend(s);
		if (pgn_account_get_creds(s->srv->store, node,
					  pgn_host_name(s->host), s->id,
					  creds_cb, s->srv) != 0)
			sasl_resume_failed(s, "temporary-auth-failure");
		return;
	}
	case PGN_SASL_NEED_PASSWORD_CHECK:
		/* Only reached through set_creds (creds_cb). */
		sasl_failure(s, "temporary-auth-failure");
		return;
	}
}

/* Decodes the base64 text of an <auth/> or <response/>; "=" is empty
 * (RFC 6120 §6.4.2), and so is no text at all. */
static int
sasl_decode(const struct pgn_xml *xml, unsigned char **out, size_t *outlen)
{
	char *text = pgn_xml_text(xml);
	size_t len;
	int rc;

	*out = NULL;
	*outlen = 0;
	if (text == NULL)
		return -ENOMEM;
	len = strcmp(text, "=") == 0 ? 0 : strlen(text);
	rc = pgn_base64_decode(text, len, out, outlen);
	free(text);
	return rc;
}

static void
handle_sasl(struct pgn_session *s, struct pgn_xml *xml)
{
	const char *name = pgn_xml_name(xml);
	unsigned char *in = NULL, *out = NULL;
	size_t inlen = 0, outlen = 0;
	enum pgn_sasl_status st;

	if (strcmp(name, "abort") == 0) {
		if (s->sasl != NULL) {
			pgn_sasl_free(s->sasl);
			s->sasl = NULL;
		}
		send_failure_now(s, "aborted");
		return;
	}
	if (strcmp(name, "auth") == 0) {
		unsigned char exp[64], ep[64], uq[64];
		struct pgn_sasl_tls tls;
		const char *mech = pgn_xml_attr(xml, "mechanism");

		/* A new exchange: the account of an earlier one is not its. */
		free(s->authcid);
		s->authcid = NULL;

		if (!s->conn->secure && starttls_required(s) &&
		    pgn_tls_available(s->srv->tls)) {
			send_failure_now(s, "encryption-required");
			return;
		}
		if (s->sasl != NULL) {
			pgn_sasl_free(s->sasl);
			s->sasl = NULL;
		}
		sasl_tls(s, &tls, exp, ep, uq);
		if (mech == NULL ||
		    (s->sasl = pgn_sasl_new(mech, &tls)) == NULL) {
			int is_plain = mech != NULL && strcmp(mech, "PLAIN") == 0;
			send_failure_now(s, is_plain && !s->conn->secure
						    ? "encryption-required"
						    : "invalid-mechanism");
			return;
		}
	} else if (strcmp(name, "response") == 0) {
		if (s->sasl == NULL) {
			send_failure_now(s, "malformed-request");
			return;
		}
	} else {
		send_failure_now(s, "malformed-request");
		return;
	}
	if (sasl_decode(xml, &in, &inlen) != 0) {
		free(in);
		sasl_failure(s, "incorrect-encoding");
		return;
	}
	st = pgn_sasl_step(s->sasl, in, inlen, &out, &outlen);
	sodium_memzero(in, inlen);
	free(in);
	sasl_handle_status(s, st, out, outlen);
	free(out);
}

/* ---- resource binding ------------------------------------------------- */

/* A reply of kind name (iq, or the kind of a refused stanza) and type to
 * the request req, with its id: the server's own answers to the client,
 * which go straight onto the stream (stream management tracks them), not
 * through the router.  NULL when out of memory. */
static struct pgn_xml *
reply_new(const char *name, const struct pgn_xml *req, const char *type)
{
	struct pgn_xml *r = pgn_xml_new(PGN_NS_CLIENT, name);
	const char *id = pgn_xml_attr(req, "id");

	if (r == NULL || pgn_xml_set_attr(r, "type", type) != 0 ||
	    (id != NULL && pgn_xml_set_attr(r, "id", id) != 0)) {
		pgn_xml_free(r);
		return NULL;
	}
	return r;
}

/* Adds the <error/> of type and cond to r and sends it (r taken; NULL
 * is a no-op). */
static void
send_error_reply(struct pgn_session *s, struct pgn_xml *r, const char *type,
		 const char *cond)
{
	if (r != NULL && pgn_stanza_add_error(r, type, cond, NULL, NULL) != NULL)
		pgn_stream_send_direct(s, r);
	pgn_xml_free(r);
}

static void
send_iq_error(struct pgn_session *s, struct pgn_xml *iq, const char *type,
	      const char *cond)
{
	send_error_reply(s, reply_new("iq", iq, "error"), type, cond);
}

static void
handle_bind(struct pgn_session *s, struct pgn_xml *iq, struct pgn_xml *bind)
{
	char *wanted = pgn_xml_child_text(bind, NULL, "resource");
	char *res = NULL;
	struct pgn_session *old = NULL;
	char gen[32];
	int rc;

	if (s->state == PGN_ST_BOUND) {
		send_iq_error(s, iq, "cancel", "not-allowed");
		free(wanted);
		return;
	}
	if (wanted != NULL && *wanted != '\0') {
		if (pgn_jid_resourceprep(wanted, &res) != 0) {
			free(wanted);
			send_iq_error(s, iq, "modify", "bad-request");
			return;
		}
	} else {
		unsigned char rnd[8];
		randombytes_buf(rnd, sizeof(rnd));
		snprintf(gen, sizeof(gen), "pigeon-");
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(gen + 7 + 2 * i, 3, "%02x", rnd[i]);
		res = strdup(gen);
	}
	free(wanted);
	if (res == NULL ||
	    pgn_jid_make(s->authcid, pgn_host_name(s->host), res, &s->jid) != 0) {
		free(res);
		send_iq_error(s, iq, "modify", "bad-request");
		return;
	}
	free(res);
	rc = pgn_router_bind(s->srv, s, &old);
	if (rc == -EUSERS) {
		pgn_jid_free(s->jid);
		s->jid = NULL;
		send_iq_error(s, iq, "wait", "resource-constraint");
		return;
	}
	if (rc != 0) {
		pgn_jid_free(s->jid);
		s->jid = NULL;
		send_iq_error(s, iq, "wait", "internal-server-error");
		return;
	}
	if (old != NULL) {
		/* RFC 6120 §7.7.2.2: the newer session wins. */
		pgn_log(PGN_LOG_INFO, "session %llu: replaced by %llu (%s)",
			(unsigned long long)old->id, (unsigned long long)s->id,
			s->jid->full);
		/* Ended now, before the new session says anything under the
		 * same full JID (its unavailable must come first). */
		c2s_ended(old);
		pgn_stream_error(old, "conflict", "replaced by a new session");
	}
	s->state = PGN_ST_BOUND;
	s->was_bound = 1;
	pgn_stream_established(s);
	struct pgn_xml *r = reply_new("iq", iq, "result");
	struct pgn_xml *b = r != NULL ? pgn_xml_add_child(r, PGN_NS_BIND, "bind")
				      : NULL;
	struct pgn_xml *j = b != NULL ? pgn_xml_add_child(b, PGN_NS_BIND, "jid")
				      : NULL;
	if (j != NULL &&
	    pgn_xml_add_text(j, s->jid->full, strlen(s->jid->full)) == 0)
		pgn_stream_send_direct(s, r);
	pgn_xml_free(r);
	pgn_log(PGN_LOG_INFO, "session %llu: bound %s from %s",
		(unsigned long long)s->id, s->jid->full, s->conn->peer);
	struct pgn_event ev = { .name = "session-started", .origin = s };
	pgn_host_fire(s->host, &ev);
}

/* ---- stanzas ------------------------------------------------------------ */

static int
is_stanza_name(const char *name)
{
	return strcmp(name, "message") == 0 || strcmp(name, "presence") == 0 ||
	       strcmp(name, "iq") == 0;
}

/* A top-level element outside jabber:client from a bound client: stream
 * management (the core's), else "nonza/<ns>:<name>" for modules.  Returns
 * 1 when handled (xml consumed). */
static int
nonza(struct pgn_session *s, struct pgn_xml *xml, const char *ns,
      const char *name)
{
	char ename[300];

	if (pgn_sm_element(s, xml))
		return 1;
	snprintf(ename, sizeof(ename), "nonza/%s:%s", ns, name);
	struct pgn_event ev = { .name = ename, .origin = s, .data = xml };
	if (pgn_host_fire(s->host, &ev) != PGN_EVENT_HANDLED)
		return 0;
	pgn_xml_free(xml);
	return 1;
}

static void handle_stanza(struct pgn_session *s, struct pgn_xml *xml,
			  const struct pgn_route_ctx *ctx);

static void
handle_bound(struct pgn_session *s, struct pgn_xml *xml)
{
	const char *ns = pgn_xml_ns(xml);
	const char *name = pgn_xml_name(xml);
	struct pgn_route_ctx ctx;

	if (ns != NULL && strcmp(ns, PGN_NS_CLIENT) != 0 &&
	    nonza(s, xml, ns, name))
		return;
	if (ns == NULL || strcmp(ns, PGN_NS_CLIENT) != 0 ||
	    !is_stanza_name(name)) {
		pgn_xml_free(xml);
		pgn_stream_error(s, "unsupported-stanza-type", NULL);
		return;
	}
	/* Stream management counts it as handled once routed, and once
	 * whatever storage its routing started has committed. */
	pgn_sm_stanza_begin(s, &ctx);
	handle_stanza(s, xml, &ctx);
	pgn_sm_stanza_end(s, &ctx);
}

/* A stanza (message, presence, iq) from the bound client s. */
static void
handle_stanza(struct pgn_session *s, struct pgn_xml *xml,
	      const struct pgn_route_ctx *ctx)
{
	const char *name = pgn_xml_name(xml);
	struct pgn_stanza *st;
	struct pgn_xml *pres = NULL;
	int bad_jid = 0, initial = 0;

	if (strcmp(name, "iq") == 0) {
		struct pgn_xml *c = pgn_xml_first_child(xml);
		const char *type = pgn_xml_attr(xml, "type");
		if (c != NULL && type != NULL && strcmp(type, "set") == 0 &&
		    pgn_xml_attr(xml, "to") == NULL) {
			const char *cns = pgn_xml_ns(c);
			if (cns != NULL && strcmp(cns, PGN_NS_SESSION) == 0) {
				/* RFC 3921 session: a no-op kept for old
				 * clients. */
				struct pgn_xml *r =
					reply_new("iq", xml, "result");
				if (r != NULL)
					pgn_stream_send_direct(s, r);
				pgn_xml_free(r);
				pgn_xml_free(xml);
				return;
			}
			if (cns != NULL && strcmp(cns, PGN_NS_BIND) == 0) {
				handle_bind(s, xml, c);
				pgn_xml_free(xml);
				return;
			}
		}
	}
	{
		/* Kept aside: a malformed address frees the stanza. */
		char kname[16], ktype[16], *kid;
		const char *t = pgn_xml_attr(xml, "type");
		snprintf(kname, sizeof(kname), "%s", name);
		snprintf(ktype, sizeof(ktype), "%s", t != NULL ? t : "");
		kid = pgn_xml_attr(xml, "id") ? strdup(pgn_xml_attr(xml, "id"))
					       : NULL;
		st = pgn_stanza_new(xml, &bad_jid);
		if (st == NULL && bad_jid && strcmp(ktype, "error") != 0 &&
		    strcmp(ktype, "result") != 0) {
			/* RFC 6120 §8.3.3.8 jid-malformed, back to the sender. */
			struct pgn_xml *r = pgn_xml_new(PGN_NS_CLIENT, kname);
			if (r != NULL &&
			    (pgn_xml_set_attr(r, "type", "error") != 0 ||
			     pgn_xml_set_attr(r, "to", s->jid->full) != 0 ||
			     (kid != NULL &&
			      pgn_xml_set_attr(r, "id", kid) != 0))) {
				pgn_xml_free(r);
				r = NULL;
			}
			send_error_reply(s, r, "modify", "jid-malformed");
		}
		free(kid);
		if (st == NULL)
			return;
	}
	/* RFC 6120 §8.1.2.1: the server stamps the sender's full JID; a
	 * 'from' naming anyone else is an invalid-from stream error. */
	if (st->from != NULL && strcmp(st->from->full, s->jid->full) != 0 &&
	    strcmp(st->from->full, s->jid->bare) != 0) {
		pgn_stanza_free(st);
		pgn_stream_error(s, "invalid-from", NULL);
		return;
	}
	if (pgn_stanza_set_from(st, s->jid) != 0) {
		pgn_stanza_free(st);
		return;
	}
	if (st->to == NULL) {
		/* RFC 6120 §10.3: no 'to' means the user's own account. */
		struct pgn_jid *bare = pgn_jid_bare_copy(s->jid);
		st->to_self = 1;
		if (st->kind == PGN_STANZA_PRESENCE &&
		    (st->type == NULL || strcmp(st->type, "unavailable") == 0)) {
			initial = st->type == NULL && !s->available;
			char *prio = pgn_xml_child_text(st->xml, NULL, "priority");
			s->available = st->type == NULL;
			s->priority = prio != NULL ? atoi(prio) : 0;
			if (s->priority < -128 || s->priority > 127)
				s->priority = 0;
			free(prio);
		}
		if (bare == NULL || pgn_stanza_set_to(st, bare) != 0) {
			pgn_jid_free(bare);
			pgn_stanza_free(st);
			return;
		}
		pgn_jid_free(bare);
	}
	if (initial && (pres = pgn_xml_copy(st->xml)) == NULL) {
		pgn_stanza_free(st);
		return;
	}
	pgn_router_route_ctx(s->srv, s, st, ctx);
	if (initial) {
		/* After the broadcast: offline messages and the like. */
		struct pgn_stanza *ps = pgn_stanza_new(pres, NULL);
		struct pgn_event ev = { .name = "initial-presence",
					.origin = s,
					.stanza = ps };
		if (ps != NULL && s->state == PGN_ST_BOUND)
			pgn_router_fire(s->host, &ev, ctx);
		pgn_stanza_free(ev.stanza);
	}
}

/* An iq before authentication (in-band registration) is offered to
 * modules as "iq-<type>/preauth/<ns>:<name>".  Returns 1 when a module
 * took it (then *xml is consumed and NULL). */
static int
preauth_iq(struct pgn_session *s, struct pgn_xml **xml)
{
	const char *ns = pgn_xml_ns(*xml), *type;
	struct pgn_xml *c;
	struct pgn_stanza *st;
	char name[512];

	if (strcmp(pgn_xml_name(*xml), "iq") != 0 || ns == NULL ||
	    strcmp(ns, PGN_NS_CLIENT) != 0 ||
	    (c = pgn_xml_first_child(*xml)) == NULL ||
	    (type = pgn_xml_attr(*xml, "type")) == NULL ||
	    (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
		return 0;
	snprintf(name, sizeof(name), "iq-%s/preauth/%s:%s", type,
		 pgn_xml_ns(c) != NULL ? pgn_xml_ns(c) : "", pgn_xml_name(c));
	if (!pgn_events_has(s->host->events, name))
		return 0;
	/* Addresses mean nothing before authentication. */
	if (pgn_xml_set_attr(*xml, "from", NULL) != 0 ||
	    pgn_xml_set_attr(*xml, "to", NULL) != 0 ||
	    (st = pgn_stanza_new(*xml, NULL)) == NULL) {
		*xml = NULL;
		pgn_stream_error(s, "internal-server-error", NULL);
		return 1;
	}
	*xml = NULL;
	struct pgn_event ev = { .name = name, .origin = s, .stanza = st };
	if (pgn_host_fire(s->host, &ev) != PGN_EVENT_HANDLED) {
		pgn_stanza_free(ev.stanza);
		pgn_stream_error(s, "not-authorized", NULL);
		return 1;
	}
	pgn_stanza_free(ev.stanza);
	return 1;
}

static void
c2s_element(struct pgn_session *s, struct pgn_xml *xml)
{
	const char *ns = pgn_xml_ns(xml);

	if (s->state == PGN_ST_BOUND) {
		handle_bound(s, xml);
		return;
	}
	if (s->state != PGN_ST_NEGOTIATING) {
		pgn_xml_free(xml);
		return;
	}
	if (!s->authenticated) {
		if (ns != NULL && strcmp(ns, PGN_NS_TLS) == 0 &&
		    strcmp(pgn_xml_name(xml), "starttls") == 0)
			handle_starttls(s);
		else if (ns != NULL && strcmp(ns, PGN_NS_SASL) == 0)
			handle_sasl(s, xml);
		else if ((s->conn->secure || !starttls_required(s) ||
			  !pgn_tls_available(s->srv->tls)) &&
			 preauth_iq(s, &xml))
			; /* a module answered */
		else if (!s->conn->secure && starttls_required(s) &&
			 pgn_tls_available(s->srv->tls))
			pgn_stream_error(s, "policy-violation",
					 "STARTTLS is required");
		else
			pgn_stream_error(s, "not-authorized", NULL);
		pgn_xml_free(xml);
		return;
	}
	/* Authenticated, not bound: resumption (XEP-0198), binding and the
	 * session no-op. */
	if (pgn_sm_element(s, xml))
		return;
	if (strcmp(pgn_xml_name(xml), "iq") == 0 && ns != NULL &&
	    strcmp(ns, PGN_NS_CLIENT) == 0) {
		struct pgn_xml *c = pgn_xml_first_child(xml);
		const char *cns = c != NULL ? pgn_xml_ns(c) : NULL;
		if (cns != NULL && strcmp(cns, PGN_NS_BIND) == 0) {
			handle_bind(s, xml, c);
			pgn_xml_free(xml);
			return;
		}
		if (cns != NULL && strcmp(cns, PGN_NS_SESSION) == 0) {
			send_iq_error(s, xml, "wait", "not-allowed");
			pgn_xml_free(xml);
			return;
		}
	}
	pgn_xml_free(xml);
	pgn_stream_error(s, "not-authorized", "bind a resource first");
}

static void
c2s_ended(struct pgn_session *s)
{
	/* Also for a session that a newer login on the same resource has
	 * already unlinked: its contacts must still learn it is gone. */
	if (s->in_users || s->was_bound) {
		struct pgn_event ev = { .name = "session-ended", .origin = s };
		pgn_router_unbind(s->srv, s);
		s->was_bound = 0;
		/* What its client never acknowledged goes back to the router
		 * (offline storage) first: it was sent before anything a
		 * module still holds for the session (client state
		 * indication), which session-ended hands back after it. */
		pgn_sm_ended(s);
		pgn_host_fire(s->host, &ev);
		pgn_log(PGN_LOG_INFO, "session %llu: %s ended",
			(unsigned long long)s->id, s->jid->full);
	}
}

/* ---- the c2s stream kind ------------------------------------------------ */

static const char *
c2s_local_name(const struct pgn_session *s)
{
	return s->host != NULL ? pgn_host_name(s->host) : NULL;
}

/* Stream management may keep a session whose connection was lost. */
static unsigned
c2s_resumable(const struct pgn_session *s)
{
	return pgn_sm_resumable(s) ? pgn_sm_timeout(s) : 0;
}

/* XEP-0199: an idle client is asked for a pong (stream.c ends the
 * stream when no byte comes back in time). */
static int
c2s_tick(struct pgn_session *s, uint64_t now)
{
	const struct pgn_cfg_limits *lim = &s->srv->cfg->limits;
	struct pgn_xml *iq;
	char id[32];

	if (lim->ping_interval == 0 || s->jid == NULL ||
	    now - s->conn->last_read < (uint64_t)lim->ping_interval * 1000)
		return 0;
	iq = pgn_xml_new(PGN_NS_CLIENT, "iq");
	snprintf(id, sizeof(id), "pgn-ping-%lu",
		 (unsigned long)++s->srv->ping_seq);
	if (iq != NULL && pgn_xml_set_attr(iq, "type", "get") == 0 &&
	    pgn_xml_set_attr(iq, "id", id) == 0 &&
	    pgn_xml_set_attr(iq, "from", pgn_host_name(s->host)) == 0 &&
	    pgn_xml_set_attr(iq, "to", s->jid->full) == 0 &&
	    pgn_xml_add_child(iq, "urn:xmpp:ping", "ping") != NULL &&
	    pgn_stream_send_xml(s, iq) == 0 && s->conn != NULL)
		s->conn->ping_sent = now;
	pgn_xml_free(iq);
	return 0;
}

/* A resumption waits for the old session (sm.c). */
static int
c2s_kicked(struct pgn_session *s)
{
	if (s->resume_of == 0)
		return 0;
	pgn_sm_kicked(s);
	return 1;
}

/* Too much unacknowledged: then the client is asked for an ack (the
 * writer waits, so no new stanza would ask it, and a client may
 * acknowledge only when asked). */
static int
c2s_congested(struct pgn_session *s)
{
	if (s->sm == NULL ||
	    pgn_sm_unacked_bytes(s) <= s->srv->cfg->limits.max_unacked_bytes / 2)
		return 0;
	pgn_sm_request_ack(s);
	return 1;
}

const struct pgn_stream_ops pgn_c2s_ops = {
	.name = "c2s",
	.kind = PGN_STREAM_C2S,
	.ns = PGN_NS_CLIENT,
	.open = c2s_open,
	.element = c2s_element,
	.local_name = c2s_local_name,
	.ended = c2s_ended,
	.resumable = c2s_resumable,
	.hibernated = pgn_sm_hibernated,
	.tick = c2s_tick,
	.kicked = c2s_kicked,
	.congested = c2s_congested,
	.free = pgn_sm_free,
};
