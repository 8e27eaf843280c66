/* The control protocol shared by pigeonctl and pigeond: the core's
 * command table, the help and usage texts, and the netstring codec of requests (see pigeon/ctl.h).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pigeon/ctl.h"

/* The core's commands; those of modules come from their descriptors
 * (pgn_module_def.commands) through the running server. */
const struct pgn_ctl_command pgn_ctl_commands[] = {
	{ "register", 3, "USER HOST PASSWORD",
	  "register the account USER@HOST", 1 },
	{ "unregister", 2, "USER HOST",
	  "delete the account USER@HOST and its data", 1 },
	{ "change_password", 3, "USER HOST NEWPASS",
	  "set a new password for USER@HOST", 1 },
	{ "registered_users", 1, "HOST", "list the accounts of HOST", 1 },
	{ "connected_users", 0, "", "list the connected sessions (full JIDs)",
	  0 },
	{ "connected_users_number", 0, "",
	  "print the number of connected sessions", 0 },
	{ "kick_session", 4, "USER HOST RESOURCE REASON",
	  "close the session USER@HOST/RESOURCE", 0 },
	{ "send_message", 5, "TYPE FROM TO SUBJECT BODY",
	  "send a message (TYPE: chat, normal, headline) from FROM to TO",
	  0 },
	{ "status", 0, "", "tell whether pigeond is running", 0 },
	{ "stats", 0, "",
	  "print the server's figures, one \"NAME VALUE\" line each (core, "
	  "then those of modules as NAME@HOST)",
	  0 },
	{ "latency", 0, "",
	  "print the server's delivery latency (read to queued, read to "
	  "written; count, p50, p99, p99.9, max)",
	  0 },
	{ "latency_reset", 0, "", "clear the delivery latency histograms",
	  0 },
	{ "stop", 0, "", "stop pigeond", 0 },
	/* The server answers it with its modules' commands too; pigeonctl
	 * lists the core's alone when the server is not running. */
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

int
pgn_ctl_format_usage(struct evbuffer *out, const char *name,
		     const char *args)
{
	return evbuffer_add_printf(out, "usage: pigeonctl [-c FILE] %s%s%s\n",
				   name, args[0] != '\0' ? " " : "",
				   args) < 0
		       ? -ENOMEM
		       : 0;
}

int
pgn_ctl_format_help(struct evbuffer *out, const struct pgn_ctl_command *cmds,
		    size_t n)
{
	int width = 0;

	for (size_t i = 0; i < n; i++) {
		int w = (int)(strlen(cmds[i].name) + 1 + strlen(cmds[i].args));

		if (w > width)
			width = w;
	}
	if (evbuffer_add_printf(out, "\nCommands (* also work when pigeond "
				     "is stopped):\n") < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		char syn[128];

		snprintf(syn, sizeof(syn), "%s%s%s", cmds[i].name,
			 cmds[i].args[0] != '\0' ? " " : "", cmds[i].args);
		if (evbuffer_add_printf(out, "  %c %-*s  %s\n",
					cmds[i].offline ? '*' : ' ', width, syn,
					cmds[i].help) < 0)
			return -ENOMEM;
	}
	return 0;
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

/* Bytes of the netstring of a len-byte string: "LEN:" BYTES ",". */
static size_t
netstring_len(size_t len)
{
	return digits_len(len) + 2 + len;
}

int
pgn_ctl_encode(struct evbuffer *out, int argc, char *const *argv)
{
	size_t total;

	/* Refuse what the decoder would refuse, so that a request either
	 * goes out whole and valid or not at all.  Arguments may be empty
	 * (a message without subject, a contact without group), but not
	 * the command name. */
	if (argc < 1 || argc > PGN_CTL_MAX_ARGS || argv == NULL)
		return -EINVAL;
	total = netstring_len(digits_len((size_t)argc));
	for (int i = 0; i < argc; i++) {
		size_t len;

		if (argv[i] == NULL || (i == 0 && argv[i][0] == '\0'))
			return -EINVAL;
		len = strlen(argv[i]);
		if (len > PGN_CTL_MAX_REQUEST)
			return -EINVAL;
		total += netstring_len(len);
		if (total > PGN_CTL_MAX_REQUEST)
			return -EINVAL;
	}

	/* Built aside and appended in one go: on failure out is untouched. */
	struct evbuffer *tmp = evbuffer_new();

	if (tmp == NULL)
		return -ENOMEM;
	if (evbuffer_add_printf(tmp, "%zu:%d,", digits_len((size_t)argc),
				argc) < 0)
		goto fail;
	for (int i = 0; i < argc; i++) {
		size_t len = strlen(argv[i]);

		if (evbuffer_add_printf(tmp, "%zu:", len) < 0 ||
		    evbuffer_add(tmp, argv[i], len) != 0 ||
		    evbuffer_add(tmp, ",", 1) != 0)
			goto fail;
	}
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

/* Reads the length prefix "LEN:" of a netstring at *pos.  Returns 1 with
 * *len set and *pos past the ':', 0 when more bytes are needed, -EINVAL
 * when the prefix is malformed or announces more than max bytes. */
static int
scan_length(const unsigned char *p, size_t n, size_t *pos, size_t max,
	    size_t *len)
{
	size_t i = *pos;
	size_t v = 0;
	size_t ndigits = 0;

	/* Digits only, no sign, no spaces, and no leading zero, so that
	 * every length has one spelling. */
	while (i < n && p[i] != ':') {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		if (ndigits == 1 && v == 0)
			return -EINVAL;
		v = v * 10 + (size_t)(p[i] - '0');
		ndigits++;
		/* Checked per digit: the value cannot overflow, and a
		 * length that is already too big is refused at once. */
		if (v > max)
			return -EINVAL;
		i++;
	}
	if (i == n)
		return 0;
	if (ndigits == 0)
		return -EINVAL;
	*pos = i + 1;
	*len = v;
	return 1;
}

/* Reads the argument count netstring "1:3," at the start of p.  Returns 1
 * with *count and *pos set, 0 when more bytes are needed, -EINVAL. */
static int
scan_count(const unsigned char *p, size_t n, size_t *pos, int *count)
{
	size_t len = 0;
	int v = 0;
	int rc;

	*pos = 0;
	rc = scan_length(p, n, pos, digits_len(PGN_CTL_MAX_ARGS), &len);
	if (rc <= 0)
		return rc;
	if (len == 0)
		return -EINVAL;
	/* Decimal, 1..PGN_CTL_MAX_ARGS, no leading zero: one spelling
	 * for each count, checked as the digits arrive. */
	for (size_t i = 0; i < len; i++) {
		unsigned char c;

		if (*pos + i == n)
			return 0;
		c = p[*pos + i];
		if (c < '0' || c > '9' || (i == 0 && c == '0'))
			return -EINVAL;
		v = v * 10 + (c - '0');
		if (v > PGN_CTL_MAX_ARGS)
			return -EINVAL;
	}
	*pos += len;
	if (*pos == n)
		return 0;
	if (p[*pos] != ',')
		return -EINVAL;
	(*pos)++;
	*count = v;
	return 1;
}

/* Scans p[0..n) for one request.  Returns the number of arguments and sets
 * *end to the request's length when complete, 0 when more bytes are
 * needed, -EINVAL when the bytes seen so far can never become valid. */
static int
scan_request(const unsigned char *p, size_t n, struct span *spans,
	     size_t *end)
{
	size_t pos = 0;
	int count = 0;
	int rc;

	rc = scan_count(p, n, &pos, &count);
	if (rc <= 0)
		return rc;
	for (int argc = 0; argc < count; argc++) {
		/* The arguments still to come take "0:," each at least. */
		size_t rest = 3 * (size_t)(count - argc - 1);
		size_t len = 0;

		rc = scan_length(p, n, &pos, PGN_CTL_MAX_REQUEST, &len);
		if (rc <= 0)
			return rc;
		/* Room for the bytes, the ',' and what must follow:
		 * refused now rather than after 64 KiB. */
		if (pos + len + 1 + rest > PGN_CTL_MAX_REQUEST)
			return -EINVAL;
		/* A request names its command. */
		if (argc == 0 && len == 0)
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
		pos += len;
		if (pos == n)
			return 0;
		if (p[pos] != ',')
			return -EINVAL;
		pos++;
	}
	*end = pos;
	return count;
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
