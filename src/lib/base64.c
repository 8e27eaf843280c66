/* Base64 (RFC 4648) over libsodium's codec, which is constant-time (it
 * decodes stored SCRAM keys).  With the padded variant and no end
 * pointer it is as strict as SASL needs (RFC 6120 §6.4.2): it refuses
 * characters outside the alphabet, padding missing, misplaced or in
 * excess, and non-zero pad bits; whitespace too, unless the caller lists
 * it as ignorable.  One hole is plugged here: libsodium 1.0.18 reads the
 * text as (signed) char and decodes every byte from 0x80 up as '/', so
 * such bytes are refused before it sees them. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include <sodium.h>

#include "pigeon/base64.h"

#define B64_VARIANT sodium_base64_VARIANT_ORIGINAL

char *
pgn_base64_encode(const unsigned char *in, size_t len)
{
	size_t outlen;
	char *out;

	/* sodium_base64_ENCODED_LEN would overflow beyond this. */
	if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
		return NULL;
	outlen = sodium_base64_ENCODED_LEN(len, B64_VARIANT);
	out = malloc(outlen);
	if (out == NULL)
		return NULL;
	sodium_bin2base64(out, outlen, in, len, B64_VARIANT);
	return out;
}

/* The whitespace pgn_base64_decode_ws skips: C's isspace() in the "C"
 * locale, spelled out so that the locale cannot widen it. */
static const char b64_space[] = " \t\n\r\f\v";

static int
b64_decode(const char *in, size_t len, const char *ignore,
	   unsigned char **out, size_t *outlen)
{
	unsigned char *buf;
	size_t n = 0;

	*out = NULL;
	*outlen = 0;
	if (ignore == NULL && len % 4 != 0)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)in[i] >= 0x80)
			return -EINVAL;
	/* Skipped characters only shorten the result, so len bounds it; one
	 * spare byte for the NUL, so that an empty result is still a
	 * buffer. */
	buf = malloc(len / 4 * 3 + 1);
	if (buf == NULL)
		return -ENOMEM;
	/* No end pointer: anything left unparsed (an invalid character, a
	 * second quantum after padding) fails the whole call. */
	if (sodium_base642bin(buf, len / 4 * 3, in, len, ignore, &n, NULL,
			      B64_VARIANT) != 0) {
		free(buf);
		return -EINVAL;
	}
	buf[n] = 0;
	*out = buf;
	*outlen = n;
	return 0;
}

int
pgn_base64_decode(const char *in, size_t len, unsigned char **out,
		  size_t *outlen)
{
	return b64_decode(in, len, NULL, out, outlen);
}

int
pgn_base64_decode_ws(const char *in, size_t len, unsigned char **out,
		     size_t *outlen)
{
	return b64_decode(in, len, b64_space, out, outlen);
}
