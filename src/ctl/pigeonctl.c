/* pigeonctl: administration of a Pigeon server from the command line.
 *
 * When pigeond runs, the command goes over its control socket (see
 * pigeon/ctl.h) and pigeonctl only prints the answer.  When it does not,
 * the account commands run directly on the store, so that the first
 * account can be created before the server is ever started.
 *
 * A short-lived CLI: plain blocking POSIX I/O with a timeout is simpler
 * and easier to reason about here than an event loop. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long; the build's config.h agrees */
#endif
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "pigeon/account.h"
#include "pigeon/config.h"
#include "pigeon/ctl.h"
#include "pigeon/jid.h"
#include "pigeon/log.h"
#include "pigeon/store.h"
#include "suggest.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif
#ifndef PGN_SYSCONF_DIR
#define PGN_SYSCONF_DIR "/usr/local/etc"
#endif
#ifndef PGN_SCHEMA_DIR
#define PGN_SCHEMA_DIR "/usr/local/share/pigeon/schemas"
#endif

#define DEFAULT_CONFIG PGN_SYSCONF_DIR "/pigeon/pigeon.yml"
/* Long enough for a slow store on the server side, short enough that a
 * wedged server does not hang scripts forever. */
#define CTL_TIMEOUT_SEC 30
/* "255\n" is the longest valid status line. */
#define STATUS_LINE_MAX 4

static void
usage(FILE *fp)
{
	fprintf(fp,
		"usage: pigeonctl [-c FILE] COMMAND [ARGS...]\n"
		"       pigeonctl --help | --version\n"
		"\n"
		"Options:\n"
		"  -c, --config FILE  configuration file (default: "
		"$PIGEON_CONFIG,\n"
		"                     else %s)\n"
		"  -h, --help         print this help and exit\n"
		"  -V, --version      print the version and exit\n",
		DEFAULT_CONFIG);
}

/* The core's commands, for help when pigeond does not answer (those of
 * modules are known to the running server only). */
static void
print_commands(FILE *fp)
{
	struct evbuffer *out = evbuffer_new();
	size_t n = 0;

	while (pgn_ctl_commands[n].name != NULL)
		n++;
	if (out == NULL || pgn_ctl_format_help(out, pgn_ctl_commands, n) != 0) {
		fprintf(fp, "pigeonctl: out of memory\n");
	} else {
		fwrite(evbuffer_pullup(out, -1), 1, evbuffer_get_length(out),
		       fp);
		fprintf(fp, "\npigeond is not running (or its configuration "
			    "was not found): the commands of its modules are "
			    "listed when it runs.\n");
	}
	if (out != NULL)
		evbuffer_free(out);
}

static void
command_usage(const struct pgn_ctl_command *cmd)
{
	struct evbuffer *out = evbuffer_new();

	if (out != NULL && pgn_ctl_format_usage(out, cmd->name, cmd->args) == 0)
		fwrite(evbuffer_pullup(out, -1), 1, evbuffer_get_length(out),
		       stderr);
	if (out != NULL)
		evbuffer_free(out);
}

static int
write_all(int fd, const unsigned char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static ssize_t
read_some(int fd, void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(fd, buf, len);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

static const char *
io_error(int err)
{
	/* SO_RCVTIMEO/SO_SNDTIMEO expiry shows up as EAGAIN. */
	if (err == -EAGAIN || err == -EWOULDBLOCK)
		return "timed out";
	return strerror(-err);
}

/* Connects to the control socket.  Returns the descriptor, -ENOENT or
 * -ECONNREFUSED when no server listens (the caller may then work
 * offline), or another negative errno. */
static int
ctl_connect(const char *path)
{
	struct sockaddr_un addr;
	struct timeval tv = { .tv_sec = CTL_TIMEOUT_SEC };
	int fd = -1;
	int err;

	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, strlen(path));

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		goto fail;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
		goto fail;
	return fd;

fail:
	err = -errno;
	close(fd);
	return err;
}

/* Sends the request, prints the answer; returns the exit status. */
static int
run_online(int fd, const char *path, int argc, char **argv)
{
	struct evbuffer *req = evbuffer_new();
	char line[STATUS_LINE_MAX + 1];
	size_t linelen = 0;
	char buf[4096];
	FILE *out = stdout;
	int status = 0;
	ssize_t n;
	int rc;

	if (req == NULL) {
		fprintf(stderr, "pigeonctl: out of memory\n");
		return PGN_CTL_ERROR;
	}
	rc = pgn_ctl_encode(req, argc, argv);
	if (rc == 0) {
		size_t len = evbuffer_get_length(req);

		rc = write_all(fd, evbuffer_pullup(req, -1), len);
		if (rc < 0) {
			fprintf(stderr, "pigeonctl: cannot send to %s: %s\n",
				path, io_error(rc));
			evbuffer_free(req);
			return PGN_CTL_UNAVAILABLE;
		}
	}
	evbuffer_free(req);
	if (rc == -EINVAL) {
		fprintf(stderr, "pigeonctl: arguments are too long\n");
		return PGN_CTL_USAGE;
	}
	if (rc < 0) {
		fprintf(stderr, "pigeonctl: out of memory\n");
		return PGN_CTL_ERROR;
	}

	/* The status line: decimal digits and '\n'. */
	for (;;) {
		n = read_some(fd, line + linelen, 1);
		if (n < 0) {
			fprintf(stderr,
				"pigeonctl: no answer from pigeond on %s: %s\n",
				path, io_error((int)n));
			return PGN_CTL_UNAVAILABLE;
		}
		if (n == 0) {
			fprintf(stderr,
				"pigeonctl: pigeond closed %s without "
				"answering\n",
				path);
			return PGN_CTL_UNAVAILABLE;
		}
		if (line[linelen] == '\n')
			break;
		if (line[linelen] < '0' || line[linelen] > '9' ||
		    ++linelen == STATUS_LINE_MAX)
			goto malformed;
	}
	if (linelen == 0)
		goto malformed;
	line[linelen] = '\0';
	status = atoi(line);
	if (status > 255)
		goto malformed;

	/* The text, as it comes, until the server closes. */
	if (status != 0)
		out = stderr;
	while ((n = read_some(fd, buf, sizeof(buf))) > 0)
		if (fwrite(buf, 1, (size_t)n, out) != (size_t)n)
			break;
	if (n < 0) {
		fprintf(stderr, "pigeonctl: reading from %s: %s\n", path,
			io_error((int)n));
		return status != 0 ? status : PGN_CTL_UNAVAILABLE;
	}
	if (fflush(out) != 0 && status == 0)
		return PGN_CTL_ERROR;
	return status;

malformed:
	fprintf(stderr, "pigeonctl: malformed answer from pigeond on %s\n",
		path);
	return PGN_CTL_ERROR;
}

/* Runs an account command on the store while the server is stopped;
 * returns the exit status. */
static int
run_offline(const struct pgn_config *cfg, const struct pgn_ctl_command *cmd,
	    char **args)
{
	struct pgn_store_config scfg = {
		.driver = cfg->storage_driver,
		.path = cfg->storage_path,
		.conninfo = cfg->storage_conninfo,
		.schema_dir = cfg->schema_dir != NULL ? cfg->schema_dir
						      : PGN_SCHEMA_DIR,
	};
	struct pgn_store *st = NULL;
	const char *rawhost;
	char *user = NULL;
	char *host = NULL;
	char *list = NULL;
	char err[512];
	int status = PGN_CTL_ERROR;
	int rc;

	/* registered_users takes HOST alone; the others USER HOST ... */
	int is_list = strcmp(cmd->name, "registered_users") == 0;

	/* Nodeprep may map a name to nothing (soft hyphens...). */
	if (!is_list &&
	    (pgn_jid_nodeprep(args[0], &user) != 0 || user[0] == '\0')) {
		fprintf(stderr, "pigeonctl: invalid user name '%s'\n",
			args[0]);
		status = PGN_CTL_USAGE;
		goto out;
	}
	rawhost = is_list ? args[0] : args[1];
	if (pgn_jid_nameprep(rawhost, &host) != 0) {
		fprintf(stderr, "pigeonctl: invalid host name '%s'\n",
			rawhost);
		status = PGN_CTL_USAGE;
		goto out;
	}
	if (pgn_config_host(cfg, host) == NULL) {
		fprintf(stderr, "pigeonctl: unknown host %s (not in %s)\n",
			host, cfg->path);
		goto out;
	}

	st = pgn_store_open(&scfg, NULL, err, sizeof(err));
	if (st == NULL) {
		fprintf(stderr, "pigeonctl: cannot open the store: %s\n", err);
		goto out;
	}

	if (strcmp(cmd->name, "register") == 0)
		rc = pgn_account_register_sync(st, user, host, args[2]);
	else if (strcmp(cmd->name, "unregister") == 0)
		rc = pgn_account_unregister_sync(st, user, host);
	else if (strcmp(cmd->name, "change_password") == 0)
		rc = pgn_account_set_password_sync(st, user, host, args[2]);
	else
		rc = pgn_account_list_sync(st, host, &list);

	if (rc == -EEXIST) {
		fprintf(stderr, "User %s@%s already registered\n", user, host);
	} else if (rc == -ENOENT) {
		fprintf(stderr, "User %s@%s does not exist\n", user, host);
	} else if (rc == -EINVAL) {
		fprintf(stderr, "pigeonctl: invalid user name '%s'\n",
			args[0]);
		status = PGN_CTL_USAGE;
	} else if (rc < 0) {
		fprintf(stderr, "pigeonctl: %s failed: %s\n", cmd->name,
			strerror(-rc));
	} else {
		status = PGN_CTL_OK;
		if (is_list) {
			size_t len = list != NULL ? strlen(list) : 0;

			if (len > 0)
				printf("%s%s", list,
				       list[len - 1] == '\n' ? "" : "\n");
		} else if (strcmp(cmd->name, "register") == 0) {
			printf("User %s@%s successfully registered\n", user,
			       host);
		} else if (strcmp(cmd->name, "unregister") == 0) {
			printf("User %s@%s successfully unregistered\n", user,
			       host);
		} else {
			/* pigeond's words, so that scripts see the same
			 * text whether it runs or not. */
			printf("User %s@%s successfully updated\n", user,
			       host);
		}
		if (fflush(stdout) != 0)
			status = PGN_CTL_ERROR;
	}

out:
	if (st != NULL)
		pgn_store_close(st);
	free(list);
	free(host);
	free(user);
	return status;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const struct pgn_ctl_command *cmd;
	struct pgn_config *cfg = NULL;
	const char *path = NULL;
	char err[1024];
	int status = PGN_CTL_USAGE;
	static char help_name[] = "help";
	char *help_argv[] = { help_name, NULL };
	char **cargv = NULL; /* the command and its arguments */
	int cargc = 0;
	int want_help = 0;
	int is_help;
	int fd = -1;
	int opt;
	int rc;

	/* '+': options end at the command, so that a password such as
	 * "-x" is an argument, not an option. */
	while ((opt = getopt_long(argc, argv, "+c:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'h':
			want_help = 1; /* as the help command */
			break;
		case 'V':
			printf("pigeonctl (pigeon) %s\n", PACKAGE_VERSION);
			return PGN_CTL_OK;
		default:
			usage(stderr);
			return PGN_CTL_USAGE;
		}
	}
	if (want_help) {
		cargc = 1;
		cargv = help_argv;
	} else if (optind < argc) {
		cargc = argc - optind;
		cargv = argv + optind;
	} else {
		usage(stderr);
		return PGN_CTL_USAGE;
	}

	/* The core's commands are checked before the config is read: a
	 * typo in their arguments is reported as such even when the config
	 * is missing.  Any other name may be a module's command: the server
	 * knows those (their usage and help come from it). */
	cmd = pgn_ctl_command_find(cargv[0]);
	if (cmd != NULL && cargc - 1 != cmd->nargs) {
		command_usage(cmd);
		return PGN_CTL_USAGE;
	}
	/* Empty arguments travel (a message without subject, a contact
	 * without nickname or group), but an account command has no use
	 * for one: an empty user or host name is invalid, and an empty
	 * password is no password at all. */
	for (int i = 1; cmd != NULL && cmd->offline && i < cargc; i++) {
		if (cargv[i][0] == '\0') {
			fprintf(stderr, "pigeonctl: empty argument\n");
			command_usage(cmd);
			return PGN_CTL_USAGE;
		}
	}
	is_help = cmd != NULL && strcmp(cmd->name, "help") == 0;
	if (is_help)
		usage(stdout);

	/* Only pigeonctl's own problems go to stderr; never the server's
	 * log file, which may belong to another user. */
	pgn_log_open(NULL, PGN_LOG_WARN);

	if (path == NULL)
		path = getenv("PIGEON_CONFIG");
	if (path == NULL || path[0] == '\0')
		path = DEFAULT_CONFIG;
	err[0] = '\0';
	rc = pgn_config_load(path, &cfg, err, sizeof(err));
	if (rc < 0) {
		if (is_help) {
			/* Help without a config: the core's list. */
			print_commands(stdout);
			pgn_log_close();
			return PGN_CTL_OK;
		}
		if (err[0] != '\0')
			fprintf(stderr, "pigeonctl: %s\n", err);
		else
			fprintf(stderr, "pigeonctl: %s: %s\n", path,
				strerror(-rc));
		pgn_log_close();
		return PGN_CTL_USAGE;
	}

	fd = ctl_connect(cfg->ctl_socket);
	if (fd >= 0) {
		status = run_online(fd, cfg->ctl_socket, cargc, cargv);
		close(fd);
	} else if (is_help) {
		print_commands(stdout);
		status = PGN_CTL_OK;
	} else if (fd != -ENOENT && fd != -ECONNREFUSED) {
		fprintf(stderr, "pigeonctl: cannot connect to %s: %s\n",
			cfg->ctl_socket, strerror(-fd));
		status = PGN_CTL_UNAVAILABLE;
	} else if (cmd != NULL && cmd->offline) {
		status = run_offline(cfg, cmd, cargv + 1);
	} else if (cmd == NULL) {
		/* Perhaps a module's command: only the server knows. */
		const char *near = pgn_suggest_table(
			cargv[0], pgn_ctl_commands, sizeof(pgn_ctl_commands[0]));

		fprintf(stderr,
			"pigeonctl: '%s' is not a command of the core%s%s%s, "
			"and pigeond, which knows those of its modules, is "
			"not running (%s %s)\n",
			cargv[0], near != NULL ? " (did you mean '" : "",
			near != NULL ? near : "", near != NULL ? "'?)" : "",
			fd == -ENOENT ? "no control socket at"
				      : "nothing listens on",
			cfg->ctl_socket);
		status = PGN_CTL_UNAVAILABLE;
	} else {
		fprintf(stderr, "pigeond is not running (%s %s)\n",
			fd == -ENOENT ? "no control socket at"
				      : "nothing listens on",
			cfg->ctl_socket);
		status = PGN_CTL_UNAVAILABLE;
	}

	pgn_config_free(cfg);
	pgn_log_close();
	return status;
}
