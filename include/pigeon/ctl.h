/* The control socket protocol between pigeonctl and pigeond.
 *
 * A UNIX stream socket (mode 0600).  Request: netstrings "LEN:BYTES,"
 * (LEN in decimal without leading zeros).  The first holds the number of
 * arguments that follow, in decimal (1..PGN_CTL_MAX_ARGS, no leading
 * zero); then come exactly that many netstrings: the command name (never
 * empty) and its arguments (which may be empty).  "send_message chat a b
 * '' hi" is "1:6,12:send_message,4:chat,1:a,1:b,0:,2:hi,".  A request
 * is at most PGN_CTL_MAX_REQUEST bytes in all.  Response: the exit status
 * as decimal digits and "\n", then the output text until the server
 * closes the connection.  pigeonctl prints the text (stdout on status 0,
 * stderr otherwise) and exits with the status. */
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

/* A command of the core.  Modules declare theirs in their
 * pgn_module_def (pigeon/module.h); the running server knows both, so
 * pigeonctl sends any name it does not know here to the server, which
 * answers usage errors and `help` for all. */
struct pgn_ctl_command {
	const char *name;
	int nargs;              /* exact number of arguments */
	const char *args;       /* "USER HOST PASSWORD" for help */
	const char *help;       /* one line */
	int offline;            /* 1: pigeonctl runs it on the store when the
				 * server is not running */
};

/* NULL-name-terminated table of the core's commands. */
extern const struct pgn_ctl_command pgn_ctl_commands[];
const struct pgn_ctl_command *pgn_ctl_command_find(const char *name);

/* Appends the command list of `pigeonctl help`: a heading, then one line
 * per command ("  * NAME ARGS  HELP", '*' for offline ones), aligned.
 * cmds[0..n-1] in the order given.  0 or -ENOMEM. */
int pgn_ctl_format_help(struct evbuffer *out,
			const struct pgn_ctl_command *cmds, size_t n);
/* Appends "usage: pigeonctl [-c FILE] NAME ARGS\n".  0 or -ENOMEM. */
int pgn_ctl_format_usage(struct evbuffer *out, const char *name,
			 const char *args);

/* Appends the encoded request (argv[0] is the command name); out is left
 * untouched on error.  0, -EINVAL (no argument, an empty command name,
 * more than PGN_CTL_MAX_ARGS or over PGN_CTL_MAX_REQUEST) or -ENOMEM. */
int pgn_ctl_encode(struct evbuffer *out, int argc, char *const *argv);
/* Takes one complete request from in.  Returns 1 and sets *argc (>= 1)
 * and *argv (NULL-terminated, argv[0] non-empty; the caller frees it with
 * pgn_ctl_argv_free) when complete, 0 when more bytes are needed, -EINVAL
 * when malformed or over the limits, -ENOMEM.  Nothing is consumed from in
 * unless 1 is returned. */
int pgn_ctl_decode(struct evbuffer *in, int *argc, char ***argv);
void pgn_ctl_argv_free(int argc, char **argv);

#endif
