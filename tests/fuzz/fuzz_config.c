/* libFuzzer target for the pigeon.yml loader (src/lib/config.c, libyaml).
 *
 * The input is written to a file in a private temporary directory and
 * loaded; on success the lookups are exercised and the config freed, on
 * failure the message must be a terminated string.  The directory is the
 * same for every run so that relative paths resolve the same way. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pigeon/config.h"

static char cfg_dir[PATH_MAX];
static char cfg_path[PATH_MAX + 32];

static void
fuzz_config_cleanup(void)
{
	unlink(cfg_path);
	rmdir(cfg_dir);
}

static int
fuzz_config_init(void)
{
	const char *tmp = getenv("TMPDIR");
	char tmpl[PATH_MAX];
	char *real;

	snprintf(tmpl, sizeof(tmpl), "%s/pgn_fuzz_config_XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(tmpl))
		return -1;
	real = realpath(tmpl, NULL);
	if (!real)
		return -1;
	snprintf(cfg_dir, sizeof(cfg_dir), "%s", real);
	free(real);
	snprintf(cfg_path, sizeof(cfg_path), "%s/pigeon.yml", cfg_dir);
	atexit(fuzz_config_cleanup);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct pgn_config *cfg = NULL;
	char err[512];
	FILE *fp;
	int rc;

	if (!ready) {
		if (fuzz_config_init() < 0)
			abort();
		ready = 1;
	}
	fp = fopen(cfg_path, "wb");
	if (!fp)
		abort();
	if (size && fwrite(data, 1, size, fp) != size)
		abort();
	if (fclose(fp) != 0)
		abort();

	memset(err, 'X', sizeof(err));
	rc = pgn_config_load(cfg_path, &cfg, err, sizeof(err));
	if (rc == 0) {
		if (!cfg)
			abort();
		for (size_t i = 0; i < cfg->nhosts; i++) {
			const struct pgn_cfg_host *h =
				pgn_config_host(cfg, cfg->hosts[i].name);

			if (!h)
				abort();
			for (size_t m = 0; m < h->nmodules; m++)
				(void)pgn_cfg_module_opt(&h->modules[m],
							 "show_os");
		}
		(void)pgn_config_host(cfg, "no-such-host.invalid");
		pgn_config_free(cfg);
	} else {
		if (memchr(err, '\0', sizeof(err)) == NULL)
			abort();
	}
	return 0;
}
