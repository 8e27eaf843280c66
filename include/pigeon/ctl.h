/* The control socket protocol between pigeonctl and pigeond.
 *
 * A UNIX stream socket (mode 0600).  Request: the command and its
 * arguments, each as a netstring "LEN:BYTES," followed by the empty
 * netstring "0:," that ends the request.  Response: the exit status as
 * decimal digits and "\n", then the output text until the server closes
 * the connection.  pigeonctl prints the text (stdout on status 0, stderr
 * otherwise) and exits with the status. */
#ifndef PIGEON_CTL_H
#define PIGEON_CTL_H

#include <stddef.h>

struct evbuffer;

#define PGN_CTL_MAX_REQUEST 65536
#define PGN_CTL_MAX_ARGS 16

/* Exit statuses. */
#define PGN_CTL_OK 0
#define PGN_CTL_ERROR 1     /* the command failed (no such user, ...) */
#define PGN_CTL_USAGE 2     /* bad command or arguments */
#define PGN_CTL_UNAVAILABLE 3 /* server not running / unreachable */

struct pgn_ctl_command {
	const char *name;
	int nargs;              /* exact number of arguments */
	const char *args;       /* "USER HOST PASSWORD" for help */
	const char *help;       /* one line */
	int offline;            /* 1: pigeonctl runs it on the store when the
				 * server is not running */
};

/* NULL-name-terminated table of all commands. */
extern const struct pgn_ctl_command pgn_ctl_commands[];
const struct pgn_ctl_command *pgn_ctl_command_find(const char *name);

/* Appends the encoded request.  0, -EINVAL (no argument, an empty one,
 * more than PGN_CTL_MAX_ARGS or over PGN_CTL_MAX_REQUEST) or -ENOMEM. */
int pgn_ctl_encode(struct evbuffer *out, int argc, char *const *argv);
/* Takes one complete request from in.  Returns 1 and sets *argc and *argv
 * (free with pgn_ctl_argv_free) when complete, 0 when more bytes are
 * needed, -EINVAL when malformed or over the limits. */
int pgn_ctl_decode(struct evbuffer *in, int *argc, char ***argv);
void pgn_ctl_argv_free(int argc, char **argv);

#endif
