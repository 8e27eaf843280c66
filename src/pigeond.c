/* pigeond: the Pigeon XMPP server. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
 * a hint) and its options are the declared ones, of the declared types.
 * A module listed globally is checked once, not once per host.  Prints
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
	srv = pgn_server_new(cfg, err, sizeof(err));
	if (srv == NULL) {
		fprintf(stderr, "pigeond: %s\n", err);
		pgn_log(PGN_LOG_ERROR, "start-up failed: %s", err);
		return 1;
	}
	int rc = pgn_server_run(srv);
	pgn_log(PGN_LOG_INFO, "pigeond stopped");
	pgn_server_free(srv);
	pgn_log_close();
	return rc == 0 ? 0 : 1;
}
