/* Base64 (RFC 4648 §4, standard alphabet, padded) for SASL payloads,
 * stored SCRAM credentials and, in modules, binary data carried in XML
 * (vCard photos).  The decoders are strict on purpose: these strings come
 * from peers or from the store, and a lax decoder would accept many
 * spellings of one value.  The only leniency offered is whitespace, which
 * XML payloads wrap their base64 in (XEP-0153 §4.6, RFC 2045 §6.8 lines). */
#ifndef PIGEON_BASE64_H
#define PIGEON_BASE64_H

#include <stddef.h>

/* Encodes in[0..len) as padded base64.  Returns a NUL-terminated string
 * that the caller owns and frees, or NULL if out of memory (or if len is
 * too large to encode). */
char *pgn_base64_encode(const unsigned char *in, size_t len);

/* Decodes in[0..len) strictly: only the standard alphabet, no whitespace,
 * a length that is a multiple of 4, '=' only as the exact padding at the
 * end, and zero pad bits (RFC 4648 §3.5).  An empty input is valid and
 * decodes to no bytes.  On success *out is a new buffer of *outlen bytes
 * plus a NUL that *outlen does not count (so never NULL), owned and freed
 * by the caller.  Returns 0, -EINVAL if the text is not canonical base64,
 * or -ENOMEM; on error *out is NULL and *outlen 0. */
int pgn_base64_decode(const char *in, size_t len, unsigned char **out,
		      size_t *outlen);

/* As pgn_base64_decode, except that ASCII whitespace (space, tab, CR, LF,
 * FF, VT) anywhere in the text is skipped, as RFC 2045 line breaks and XML
 * indentation put it there; the rules apply to what remains, so padding is
 * still required.  Text that is only whitespace decodes to no bytes.
 * Ownership and return values as for pgn_base64_decode. */
int pgn_base64_decode_ws(const char *in, size_t len, unsigned char **out,
			 size_t *outlen);

#endif
