/* Base64 (RFC 4648), written out rather than taken from OpenSSL or
 * libsodium: EVP_DecodeBlock skips whitespace and hides the padding, and
 * sasl.c and scram.c should not need libsodium just for this. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "pigeon/base64.h"

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
pgn_base64_encode(const unsigned char *in, size_t len)
{
	char *out, *p;
	size_t i;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
		return NULL;
	out = malloc(4 * ((len + 2) / 3) + 1);
	if (out == NULL)
		return NULL;
	p = out;
	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
			     in[i + 2];

		*p++ = b64_alphabet[v >> 18];
		*p++ = b64_alphabet[v >> 12 & 63];
		*p++ = b64_alphabet[v >> 6 & 63];
		*p++ = b64_alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		*p++ = b64_alphabet[v >> 18];
		*p++ = b64_alphabet[v >> 12 & 63];
		*p++ = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

/* Value of one alphabet character, or -1 (this includes '='). */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* The whitespace pgn_base64_decode_ws skips: C's isspace() in the "C"
 * locale, spelled out so that the locale cannot widen it. */
static int
b64_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
	       c == '\v';
}

/* Both decoders: one pass over the text, four significant characters at
 * a time, since with whitespace skipped the end of the last quantum is
 * not known from an index. */
static int
b64_decode(const char *in, size_t len, int skip_space, unsigned char **out,
	   size_t *outlen)
{
	unsigned char *buf;
	size_t n = 0;
	int v[4], nv = 0, pad = 0;

	*out = NULL;
	*outlen = 0;
	if (!skip_space && len % 4 != 0)
		return -EINVAL;
	/* Skipped characters only shorten the result, so len bounds it; one
	 * spare byte so that an empty result is still a buffer. */
	buf = malloc(len / 4 * 3 + 1);
	if (buf == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (skip_space && b64_space(c))
			continue;
		/* '=' only in the last two places of a quantum, nothing but
		 * '=' after the first, and (as pad stays set) nothing at all
		 * after a padded quantum. */
		if (c == '=' && nv >= 2) {
			v[nv++] = 0;
			pad++;
		} else if (pad || (v[nv++] = b64_value(c)) < 0) {
			goto invalid;
		}
		if (nv < 4)
			continue;
		/* The bits that padding drops must be zero, or two texts
		 * would decode to the same bytes. */
		if ((pad == 2 && (v[1] & 15) != 0) ||
		    (pad == 1 && (v[2] & 3) != 0))
			goto invalid;
		buf[n++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			buf[n++] =
				(unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		if (pad < 1)
			buf[n++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
		nv = 0;
	}
	if (nv != 0)
		goto invalid;
	buf[n] = 0;
	*out = buf;
	*outlen = n;
	return 0;
invalid:
	free(buf);
	return -EINVAL;
}

int
pgn_base64_decode(const char *in, size_t len, unsigned char **out,
		  size_t *outlen)
{
	return b64_decode(in, len, 0, out, outlen);
}

int
pgn_base64_decode_ws(const char *in, size_t len, unsigned char **out,
		     size_t *outlen)
{
	return b64_decode(in, len, 1, out, outlen);
}
