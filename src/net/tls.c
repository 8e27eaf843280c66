/* TLS with OpenSSL 3: TLS 1.2+, SNI per host, ALPN for direct TLS, and
 * SSL_MODE_RELEASE_BUFFERS so that idle connections hold no record
 * buffers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "pigeon/log.h"
#include "tls.h"

struct cert {
	SSL_CTX *ctx;   /* its app data points back here */
	char **names;   /* DNS names of the certificate (SAN, else CN) */
	size_t nnames;
	/* tls-server-end-point data, hashed once at load, not per login */
	unsigned char endpoint[EVP_MAX_MD_SIZE];
	unsigned endpoint_len;
};

/* RFC 5929 §4.1: our certificate hashed with its signature hash, upgraded
 * to SHA-256 when that is MD5 or SHA-1. */
static void
endpoint_hash(struct cert *c, X509 *x)
{
	int md_nid = NID_sha256, pk;
	const EVP_MD *md;

	if (OBJ_find_sigid_algs(X509_get_signature_nid(x), &md_nid, &pk) != 1 ||
	    md_nid == NID_md5 || md_nid == NID_sha1 || md_nid == NID_undef)
		md_nid = NID_sha256;
	md = EVP_get_digestbynid(md_nid);
	if (md == NULL)
		md = EVP_sha256();
	if (X509_digest(x, md, c->endpoint, &c->endpoint_len) != 1)
		c->endpoint_len = 0;
}

struct pgn_tls {
	struct cert *certs;
	size_t ncerts;
};

static int
name_matches(const char *pattern, const char *host)
{
	if (strcasecmp(pattern, host) == 0)
		return 1;
	/* "*.example.org" covers exactly one more label. */
	if (pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = strchr(host, '.');
		return dot != NULL && dot != host &&
		       strcasecmp(dot + 1, pattern + 2) == 0;
	}
	return 0;
}

static struct cert *
find_cert(const struct pgn_tls *t, const char *host)
{
	for (size_t i = 0; i < t->ncerts; i++)
		for (size_t j = 0; j < t->certs[i].nnames; j++)
			if (name_matches(t->certs[i].names[j], host))
				return &t->certs[i];
	return NULL;
}

int
pgn_tls_has_host(const struct pgn_tls *t, const char *host)
{
	return find_cert(t, host) != NULL;
}

int
pgn_tls_available(const struct pgn_tls *t)
{
	return t != NULL && t->ncerts > 0;
}

static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct pgn_tls *t = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	struct cert *c = find_cert(t, name);
	if (c != NULL && c->ctx != SSL_get_SSL_CTX(ssl))
		SSL_set_SSL_CTX(ssl, c->ctx);
	return SSL_TLSEXT_ERR_OK;
}

static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
	const unsigned char *in, unsigned inlen, void *arg)
{
	static const unsigned char want[] = "\x0bxmpp-client";
	unsigned char *sel;
	/* Only direct-TLS connections carry the ALPN flag in their ex data. */
	if (SSL_get_app_data(ssl) == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_select_next_proto(&sel, outlen, want, sizeof(want) - 1, in,
				  inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int
add_name(struct cert *c, const char *name)
{
	char **n = realloc(c->names, (c->nnames + 1) * sizeof(*n));
	if (n == NULL)
		return -ENOMEM;
	c->names = n;
	if ((n[c->nnames] = strdup(name)) == NULL)
		return -ENOMEM;
	c->nnames++;
	return 0;
}

static int
collect_names(struct cert *c, X509 *x)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
					       NULL);
	int rc = 0;
	if (sans != NULL) {
		for (int i = 0; i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
			GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
			if (gn->type != GEN_DNS)
				continue;
			const char *s =
				(const char *)ASN1_STRING_get0_data(gn->d.dNSName);
			rc = add_name(c, s);
		}
		GENERAL_NAMES_free(sans);
	}
	if (rc == 0 && c->nnames == 0) {
		char cn[256];
		if (X509_NAME_get_text_by_NID(X509_get_subject_name(x),
					      NID_commonName, cn,
					      sizeof(cn)) > 0)
			rc = add_name(c, cn);
	}
	return rc;
}

static SSL_CTX *
make_ctx(struct pgn_tls *t, const char *file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		goto ssl_fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
					 SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_use_certificate_chain_file(ctx, file) != 1)
		goto ssl_fail;
	if (SSL_CTX_use_PrivateKey_file(ctx, file, SSL_FILETYPE_PEM) != 1)
		goto ssl_fail;
	if (SSL_CTX_check_private_key(ctx) != 1)
		goto ssl_fail;
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, t);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, t);
	return ctx;
ssl_fail:;
	char buf[256];
	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	snprintf(err, errlen, "certfile %s: %s", file, buf);
	SSL_CTX_free(ctx);
	return NULL;
}

struct pgn_tls *
pgn_tls_new(char *const *certfiles, size_t n, char *err, size_t errlen)
{
	struct pgn_tls *t = calloc(1, sizeof(*t));
	if (t == NULL)
		goto nomem;
	t->certs = calloc(n + 1, sizeof(*t->certs));
	if (t->certs == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		struct cert *c = &t->certs[t->ncerts];
		c->ctx = make_ctx(t, certfiles[i], err, errlen);
		if (c->ctx == NULL)
			goto fail;
		t->ncerts++;
		SSL_CTX_set_app_data(c->ctx, c);
		endpoint_hash(c, SSL_CTX_get0_certificate(c->ctx));
		if (collect_names(c, SSL_CTX_get0_certificate(c->ctx)) != 0)
			goto nomem;
		for (size_t j = 0; j < c->nnames; j++)
			pgn_log(PGN_LOG_INFO, "tls: %s covers %s", certfiles[i],
				c->names[j]);
	}
	return t;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	pgn_tls_free(t);
	return NULL;
}

void
pgn_tls_free(struct pgn_tls *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->ncerts; i++) {
		SSL_CTX_free(t->certs[i].ctx);
		for (size_t j = 0; j < t->certs[i].nnames; j++)
			free(t->certs[i].names[j]);
		free(t->certs[i].names);
	}
	free(t->certs);
	free(t);
}

SSL *
pgn_tls_new_ssl(struct pgn_tls *t, int direct)
{
	if (!pgn_tls_available(t))
		return NULL;
	SSL *ssl = SSL_new(t->certs[0].ctx);
	if (ssl == NULL)
		return NULL;
	/* Set on the connection too, not only inherited from the first
	 * context: an idle session then holds no 16 KiB record buffers
	 * whichever way it came in (direct TLS or STARTTLS) and whatever
	 * context SNI switches it to (SSL_set_SSL_CTX keeps the mode). */
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	if (direct)
		SSL_set_app_data(ssl, (void *)1);
	return ssl;
}

int
pgn_tls_channel_binding(SSL *ssl, unsigned char *exporter, size_t *elen,
			unsigned char *endpoint, size_t *eplen)
{
	*elen = 0;
	*eplen = 0;
	/* RFC 9266: tls-exporter is defined for TLS 1.3 (or 1.2 with EMS);
	 * we offer it on 1.3 only. */
	if (SSL_version(ssl) >= TLS1_3_VERSION &&
	    SSL_export_keying_material(ssl, exporter, 32,
				       "EXPORTER-Channel-Binding",
				       strlen("EXPORTER-Channel-Binding"), NULL,
				       0, 0) == 1)
		*elen = 32;
	/* The context in use (after SNI) is the certificate we presented. */
	const struct cert *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	if (c != NULL && c->endpoint_len > 0) {
		memcpy(endpoint, c->endpoint, c->endpoint_len);
		*eplen = c->endpoint_len;
	}
	return 0;
}

size_t
pgn_tls_unique(SSL *ssl, unsigned char *buf, size_t len)
{
	if (SSL_session_reused(ssl))
		return SSL_get_finished(ssl, buf, len);
	return SSL_get_peer_finished(ssl, buf, len);
}
