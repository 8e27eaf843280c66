/* Base64 (RFC 4648), written out rather than taken from OpenSSL or
 * libsodium: EVP_DecodeBlock skips whitespace and hides the padding, and
 * sasl.c and scram.c should not need libsodium just for this. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "base64.h"

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

int
pgn_base64_decode(const char *in, size_t len, unsigned char **out,
		  size_t *outlen)
{
	unsigned char *buf;
	size_t n = 0;

	*out = NULL;
	*outlen = 0;
	if (len % 4 != 0)
		return -EINVAL;
	/* One spare byte so that an empty result is still a buffer. */
	buf = malloc(len / 4 * 3 + 1);
	if (buf == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;

		for (int j = 0; j < 4; j++) {
			unsigned char c = (unsigned char)in[i + j];

			/* '=' only in the last two places of the last
			 * quantum, and nothing but '=' after the first. */
			if (c == '=' && i + 4 == len && j >= 2) {
				v[j] = 0;
				pad++;
				continue;
			}
			if (pad || (v[j] = b64_value(c)) < 0)
				goto invalid;
		}
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
	}
	buf[n] = 0;
	*out = buf;
	*outlen = n;
	return 0;
invalid:
	free(buf);
	return -EINVAL;
}
