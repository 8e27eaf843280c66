/* TLS contexts: one SSL_CTX per certificate file, chosen by SNI. */
#ifndef PIGEON_TLS_H
#define PIGEON_TLS_H

#include <stddef.h>

typedef struct ssl_st SSL;
struct pgn_tls;

/* Loads each PEM (certificate chain + private key).  NULL with err set on
 * failure.  n may be 0 (then no TLS is offered). */
struct pgn_tls *pgn_tls_new(char *const *certfiles, size_t n, char *err,
			    size_t errlen);
void pgn_tls_free(struct pgn_tls *t);
/* 1 if at least one certificate is loaded. */
int pgn_tls_available(const struct pgn_tls *t);
/* 1 if some certificate covers host. */
int pgn_tls_has_host(const struct pgn_tls *t, const char *host);
/* A server-side SSL for a new connection; direct: XEP-0368 (ALPN
 * xmpp-client accepted).  NULL on error. */
SSL *pgn_tls_new_ssl(struct pgn_tls *t, int direct);
/* Channel-binding data of an established connection.  exporter (32
 * bytes, TLS 1.3 only, else *elen = 0); endpoint: hash of our
 * certificate (RFC 5929).  0 or -1. */
int pgn_tls_channel_binding(SSL *ssl, unsigned char *exporter, size_t *elen,
			    unsigned char *endpoint, size_t *eplen);
/* tls-unique (RFC 5929 §3): the first Finished message of the handshake,
 * which on our (server) side of a full handshake is the peer's.  Up to 64
 * bytes into buf; returns the length or 0. */
size_t pgn_tls_unique(SSL *ssl, unsigned char *buf, size_t len);

#endif
