/* pigeond: the Pigeon XMPP server. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/thread.h>

#include "pigeon/config.h"
#include "host.h"
#include "pigeon/log.h"
#include "server.h"

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.0.0"
#endif
#ifndef PGN_SYSCONF_DIR
#define PGN_SYSCONF_DIR "/usr/local/etc"
#endif

static void
print_error(const char *err, void *arg)
{
	(void)arg;
	fprintf(stderr, "pigeond: %s\n", err);
}

/* `pigeond -t`: what the start would refuse in the modules, without
 * starting anything: each module's .so opens (a misspelt module name gets
 * a hint), its options are the declared ones, of the declared types, and
 * the modules it depends on are loaded on each host that loads it.  A
 * module listed globally is checked once, not once per host.  Prints
 * every error; returns how many there were. */
static int
check_modules(const struct pgn_config *cfg)
{
	int errors = 0;

	for (size_t i = 0; i < cfg->nhosts; i++) {
		const struct pgn_cfg_host *h = &cfg->hosts[i];

		for (size_t j = 0; j < h->nmodules; j++) {
			const struct pgn_cfg_module *cm = &h->modules[j];
			int seen = 0;

			/* The same entry (line) merged into an earlier host
			 * was checked there. */
			for (size_t k = 0; k < i && !seen; k++)
				for (size_t l = 0; l < cfg->hosts[k].nmodules;
				     l++)
					if (cfg->hosts[k].modules[l].line ==
						    cm->line &&
					    !strcmp(cfg->hosts[k].modules[l].name,
						    cm->name))
						seen = 1;
			/* Dependencies are the host's business. */
			errors += pgn_module_check_deps(cfg->path, h, cm,
							cfg->module_path,
							print_error, NULL);
			if (seen)
				continue;
			errors += pgn_module_check(cfg->path, cm,
						   cfg->module_path,
						   print_error, NULL);
		}
	}
	return errors;
}

static void
usage(FILE *fp)
{
	fprintf(fp,
		"Usage: pigeond [-c FILE] [--check]\n"
		"Runs the Pigeon XMPP server in the foreground.\n\n"
		"  -c, --config FILE  configuration file (default: $PIGEON_CONFIG\n"
		"                     or " PGN_SYSCONF_DIR "/pigeon/pigeon.yml)\n"
		"  -t, --check        check the configuration and exit\n"
		"  -h, --help         show this help\n"
		"  -V, --version      show the version\n\n"
		"See pigeond(8) and pigeon.yml(5).\n");
}

/* The pid file is locked (flock) for as long as the server runs, so that
 * a second pigeond with the same file, which must fail, sees the lock and
 * leaves the file alone: only the process that holds the lock writes or
 * removes it.  A file left by a crash is unlocked and simply taken over.
 * Returns the locked descriptor, or -1 with err set. */
static int
pidfile_lock(const char *path, char *err, size_t errlen)
{
	/* Retried when the holder removed the file between our open() and
	 * flock(): the lock would then be on a name nobody else sees. */
	for (int tries = 0; tries < 8; tries++) {
		struct stat a, b;
		char buf[32] = "";
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

		if (fd < 0) {
			snprintf(err, errlen, "cannot open pid file %s: %s",
				 path, strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
			int e = errno;
			ssize_t n = read(fd, buf, sizeof(buf) - 1);

			buf[n > 0 ? n : 0] = '\0';
			buf[strcspn(buf, "\n")] = '\0';
			close(fd);
			if (e == EWOULDBLOCK)
				snprintf(err, errlen,
					 "pid file %s is locked: pigeond is "
					 "already running (pid %s)",
					 path, buf[0] ? buf : "?");
			else
				snprintf(err, errlen, "cannot lock %s: %s",
					 path, strerror(e));
			return -1;
		}
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return fd;
		close(fd);
	}
	snprintf(err, errlen, "cannot lock %s: it keeps being replaced", path);
	return -1;
}

static int
pidfile_write(int fd, const char *path, char *err, size_t errlen)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
		snprintf(err, errlen, "cannot write %s: %s", path,
			 strerror(errno));
		return -1;
	}
	return 0;
}

/* Removes the file while the lock is still held, then drops the lock;
 * *fd becomes -1.  Nothing when we hold no lock. */
static void
pidfile_release(int *fd, const char *path)
{
	if (*fd < 0)
		return;
	unlink(path);
	close(*fd);
	*fd = -1;
}

/* Locks path and writes our pid into it: the descriptor, or -1 with err
 * set (and the file left as it was unless we held the lock). */
static int
pidfile_take(const char *path, char *err, size_t errlen)
{
	int fd = pidfile_lock(path, err, errlen);

	if (fd >= 0 && pidfile_write(fd, path, err, errlen) != 0)
		pidfile_release(&fd, path);
	return fd;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = getenv("PIGEON_CONFIG");
	int check_only = 0, c;
	char err[1024] = "";
	struct pgn_config *cfg = NULL;
	struct pgn_server *srv;
	char *pid_path = NULL;
	int pid_fd = -1;

	while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("pigeond %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (path == NULL)
		path = PGN_SYSCONF_DIR "/pigeon/pigeon.yml";
	if (pgn_config_load(path, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "pigeond: %s\n", err);
		return 2;
	}
	if (check_only) {
		if (check_modules(cfg) > 0) {
			pgn_config_free(cfg);
			return 2;
		}
		printf("%s: configuration OK\n", path);
		pgn_config_free(cfg);
		return 0;
	}
	/* Storage and crypto workers hand results back to the loop. */
	if (evthread_use_pthreads() != 0) {
		fprintf(stderr, "pigeond: libevent has no thread support\n");
		pgn_config_free(cfg);
		return 1;
	}
	/* Locked (and our pid written) before any port is bound: a second
	 * server stops here without touching the first one's file, and
	 * whoever sees our ports open finds our pid there.  The path is
	 * copied because the server owns (and frees) cfg. */
	if (cfg->pid_file != NULL) {
		pid_path = strdup(cfg->pid_file);
		if (pid_path == NULL)
			snprintf(err, sizeof(err), "out of memory");
		else
			pid_fd = pidfile_take(pid_path, err, sizeof(err));
		if (pid_fd < 0) {
			fprintf(stderr, "pigeond: %s\n", err);
			free(pid_path);
			pgn_config_free(cfg);
			return 1;
		}
	}
	srv = pgn_server_new(cfg, err, sizeof(err));
	if (srv == NULL) {
		fprintf(stderr, "pigeond: %s\n", err);
		pgn_log(PGN_LOG_ERROR, "start-up failed: %s", err);
		pidfile_release(&pid_fd, pid_path);
		free(pid_path);
		return 1;
	}
	int rc = pgn_server_run(srv);
	pgn_log(PGN_LOG_INFO, "pigeond stopped");
	pgn_server_free(srv);
	pidfile_release(&pid_fd, pid_path);
	free(pid_path);
	pgn_log_close();
	return rc == 0 ? 0 : 1;
}
