/* The control protocol shared by pigeonctl and pigeond: the command table
 * and the netstring codec of requests (see pigeon/ctl.h).
 *
 * The decoder is strict because the socket is the one place where a local
 * user talks to the server with its privileges: every byte is checked, the
 * whole request is bounded by PGN_CTL_MAX_REQUEST and nothing is consumed
 * from the buffer until a complete, valid request is there, so a caller can
 * simply call it again each time bytes arrive. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pigeon/ctl.h"

const struct pgn_ctl_command pgn_ctl_commands[] = {
	{ "register", 3, "USER HOST PASSWORD",
	  "register the account USER@HOST", 1 },
	{ "unregister", 2, "USER HOST",
	  "delete the account USER@HOST and its data", 1 },
	{ "change_password", 3, "USER HOST NEWPASS",
	  "set a new password for USER@HOST", 1 },
	{ "registered_users", 1, "HOST",
	  "list the accounts of HOST", 1 },
	{ "connected_users", 0, "",
	  "list the connected sessions (full JIDs)", 0 },
	{ "connected_users_number", 0, "",
	  "print the number of connected sessions", 0 },
	{ "kick_session", 4, "USER HOST RESOURCE REASON",
	  "close the session USER@HOST/RESOURCE", 0 },
	{ "status", 0, "", "tell whether pigeond is running", 0 },
	{ "stop", 0, "", "stop pigeond", 0 },
	/* Handled by pigeonctl itself; never sent to the server. */
	{ "help", 0, "", "print this list of commands", 0 },
	{ NULL, 0, NULL, NULL, 0 },
};

const struct pgn_ctl_command *
pgn_ctl_command_find(const char *name)
{
	if (name == NULL)
		return NULL;
	for (const struct pgn_ctl_command *c = pgn_ctl_commands; c->name != NULL;
	     c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

/* Number of decimal digits of n (n >= 0). */
static size_t
digits_len(size_t n)
{
	size_t d = 1;

	while (n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

int
pgn_ctl_encode(struct evbuffer *out, int argc, char *const *argv)
{
	size_t total = 3; /* the "0:," terminator */

	/* Refuse what the decoder would refuse, so that a request either
	 * goes out whole and valid or not at all.  An empty argument
	 * cannot be sent: "0:," is the end of the request. */
	if (argc < 1 || argc > PGN_CTL_MAX_ARGS || argv == NULL)
		return -EINVAL;
	for (int i = 0; i < argc; i++) {
		size_t len;

		if (argv[i] == NULL || argv[i][0] == '\0')
			return -EINVAL;
		len = strlen(argv[i]);
		if (len > PGN_CTL_MAX_REQUEST)
			return -EINVAL;
		total += digits_len(len) + 2 + len;
		if (total > PGN_CTL_MAX_REQUEST)
			return -EINVAL;
	}

	/* Built aside and appended in one go: on failure out is untouched. */
	struct evbuffer *tmp = evbuffer_new();

	if (tmp == NULL)
		return -ENOMEM;
	for (int i = 0; i < argc; i++) {
		size_t len = strlen(argv[i]);

		if (evbuffer_add_printf(tmp, "%zu:", len) < 0 ||
		    evbuffer_add(tmp, argv[i], len) != 0 ||
		    evbuffer_add(tmp, ",", 1) != 0)
			goto fail;
	}
	if (evbuffer_add(tmp, "0:,", 3) != 0)
		goto fail;
	if (evbuffer_add_buffer(out, tmp) != 0)
		goto fail;
	evbuffer_free(tmp);
	return 0;

fail:
	evbuffer_free(tmp);
	return -ENOMEM;
}

void
pgn_ctl_argv_free(int argc, char **argv)
{
	if (argv == NULL)
		return;
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	free(argv);
}

/* Where one argument lies in the linearised request. */
struct span {
	size_t off;
	size_t len;
};

/* Scans p[0..n) for one request.  Returns the number of arguments and sets
 * *end to the request's length when complete, 0 when more bytes are
 * needed, -EINVAL when the bytes seen so far can never become valid. */
static int
scan_request(const unsigned char *p, size_t n, struct span *spans,
	     size_t *end)
{
	size_t pos = 0;
	int argc = 0;

	for (;;) {
		size_t len = 0;
		size_t ndigits = 0;

		/* The length: digits only, no sign, no spaces, and no
		 * leading zero, so that every length has one spelling. */
		while (pos < n && p[pos] != ':') {
			if (p[pos] < '0' || p[pos] > '9')
				return -EINVAL;
			if (ndigits == 1 && len == 0)
				return -EINVAL;
			len = len * 10 + (size_t)(p[pos] - '0');
			ndigits++;
			/* Checked per digit: the value cannot overflow. */
			if (len > PGN_CTL_MAX_REQUEST)
				return -EINVAL;
			pos++;
		}
		if (pos == n)
			return 0;
		if (ndigits == 0)
			return -EINVAL;
		pos++; /* ':' */
		/* Room for the bytes, the ',' and the "0:," that must
		 * follow: refused now rather than after 64 KiB. */
		if (pos + len + 1 + (len > 0 ? 3 : 0) > PGN_CTL_MAX_REQUEST)
			return -EINVAL;
		if (len == 0) {
			if (pos == n)
				return 0;
			if (p[pos] != ',')
				return -EINVAL;
			/* A request names at least the command. */
			if (argc == 0)
				return -EINVAL;
			*end = pos + 1;
			return argc;
		}
		if (argc == PGN_CTL_MAX_ARGS)
			return -EINVAL;
		if (n - pos < len) {
			/* Reject a NUL as soon as it arrives. */
			if (memchr(p + pos, '\0', n - pos) != NULL)
				return -EINVAL;
			return 0;
		}
		if (memchr(p + pos, '\0', len) != NULL)
			return -EINVAL;
		spans[argc].off = pos;
		spans[argc].len = len;
		argc++;
		pos += len;
		if (pos == n)
			return 0;
		if (p[pos] != ',')
			return -EINVAL;
		pos++;
	}
}

int
pgn_ctl_decode(struct evbuffer *in, int *argc, char ***argv)
{
	struct span spans[PGN_CTL_MAX_ARGS];
	size_t avail = evbuffer_get_length(in);
	size_t n = avail < PGN_CTL_MAX_REQUEST ? avail : PGN_CTL_MAX_REQUEST;
	size_t end = 0;
	char **v = NULL;
	int count = 0;
	int rc;

	*argc = 0;
	*argv = NULL;
	if (n == 0)
		return 0;
	/* At most PGN_CTL_MAX_REQUEST bytes are made contiguous; a request
	 * is never longer, so what lies beyond is the next one. */
	const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)n);

	if (p == NULL)
		return -ENOMEM;
	rc = scan_request(p, n, spans, &end);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		/* Incomplete although the limit is reached: it never ends. */
		if (n >= PGN_CTL_MAX_REQUEST)
			return -EINVAL;
		return 0;
	}
	count = rc;

	v = calloc((size_t)count + 1, sizeof(*v));
	if (v == NULL)
		goto fail;
	for (int i = 0; i < count; i++) {
		v[i] = malloc(spans[i].len + 1);
		if (v[i] == NULL)
			goto fail;
		memcpy(v[i], p + spans[i].off, spans[i].len);
		v[i][spans[i].len] = '\0';
	}
	if (evbuffer_drain(in, end) != 0)
		goto fail;
	*argc = count;
	*argv = v;
	return 1;

fail:
	pgn_ctl_argv_free(count, v);
	return -ENOMEM;
}
