/* Unit tests of the pigeon.yml loader: the shipped example, defaults, path
 * resolution, host_config merging, and one case per error with its line. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif

#include "pigeon/config.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Same fallbacks as src/lib/config.c, for builds outside automake. */
#ifndef PGN_MODULE_DIR
#define PGN_MODULE_DIR "/usr/local/lib/pigeon"
#endif
#ifndef PGN_SCHEMA_DIR
#define PGN_SCHEMA_DIR "/usr/local/share/pigeon/schemas"
#endif

/* The temporary directory of the running test (set up per test). */
static char tmpdir[PATH_MAX];
static char cfgpath[PATH_MAX + 16];

static void
setup(void)
{
	char tmpl[] = "/tmp/pgn_test_config_XXXXXX";
	char *real;

	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	/* realpath: the loader stores symlink-free directories. */
	real = realpath(tmpl, NULL);
	ck_assert_ptr_nonnull(real);
	snprintf(tmpdir, sizeof(tmpdir), "%s", real);
	free(real);
	snprintf(cfgpath, sizeof(cfgpath), "%s/pigeon.yml", tmpdir);
	unsetenv("PIGEON_MODULE_PATH");
	unsetenv("PIGEON_SCHEMA_DIR");
}

static void
teardown(void)
{
	unlink(cfgpath);
	rmdir(tmpdir);
}

static void
write_cfg(const char *text)
{
	FILE *fp = fopen(cfgpath, "wb");

	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(text, 1, strlen(text), fp), strlen(text));
	ck_assert_int_eq(fclose(fp), 0);
}

static struct pgn_config *
load_ok(const char *text)
{
	struct pgn_config *cfg = NULL;
	char err[1024];
	int rc;

	write_cfg(text);
	rc = pgn_config_load(cfgpath, &cfg, err, sizeof(err));
	ck_assert_msg(rc == 0, "load failed (%d): %s", rc, err);
	ck_assert_ptr_nonnull(cfg);
	return cfg;
}

/* path inside the test directory, for comparisons. */
static const char *
in_tmp(const char *rel, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", tmpdir, rel);
	return buf;
}

static const struct pgn_cfg_module *
find_module(const struct pgn_cfg_host *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->nmodules; i++)
		if (strcmp(h->modules[i].name, name) == 0)
			return &h->modules[i];
	return NULL;
}

/* ---- the shipped example ------------------------------------------------- */

START_TEST(test_example)
{
	const char *srcdir = getenv("PIGEON_SRCDIR");
	char path[PATH_MAX], dir[PATH_MAX], want[PATH_MAX + 64], err[1024];
	struct pgn_config *cfg = NULL;
	const struct pgn_cfg_host *h;
	const struct pgn_cfg_module *m;
	char *real;
	int rc;

	if (srcdir != NULL && srcdir[0] != '\0')
		snprintf(path, sizeof(path), "%s/contrib/pigeon.yml", srcdir);
	else
		snprintf(path, sizeof(path), "contrib/pigeon.yml");
	real = realpath(path, NULL);
	ck_assert_msg(real != NULL, "%s not found (set PIGEON_SRCDIR)", path);
	snprintf(dir, sizeof(dir), "%s", real);
	*strrchr(dir, '/') = '\0';
	free(real);

	setenv("PIGEON_MODULE_PATH", "/opt/pigeon/modules", 1);
	rc = pgn_config_load(path, &cfg, err, sizeof(err));
	ck_assert_msg(rc == 0, "example failed to load: %s", err);
	ck_assert_str_eq(cfg->path, path);

	ck_assert_uint_eq(cfg->nhosts, 1);
	ck_assert_str_eq(cfg->hosts[0].name, "localhost");

	ck_assert_uint_eq(cfg->nlisten, 3);
	ck_assert_int_eq(cfg->listen[0].kind, PGN_LISTEN_C2S);
	ck_assert_int_eq(cfg->listen[0].port, 5222);
	ck_assert_str_eq(cfg->listen[0].ip, "127.0.0.1");
	ck_assert_int_eq(cfg->listen[0].starttls_required, 1);
	ck_assert_int_gt(cfg->listen[0].line, 0);
	ck_assert_int_eq(cfg->listen[1].kind, PGN_LISTEN_C2S_TLS);
	ck_assert_int_eq(cfg->listen[1].port, 5223);
	ck_assert_int_eq(cfg->listen[1].starttls_required, 0);
	ck_assert_int_eq(cfg->listen[2].kind, PGN_LISTEN_COMPONENT);
	ck_assert_int_eq(cfg->listen[2].port, 5347);
	ck_assert_int_gt(cfg->listen[2].line, cfg->listen[1].line);

	ck_assert_uint_eq(cfg->ncertfiles, 1);
	snprintf(want, sizeof(want), "%s/certs/localhost.pem", dir);
	ck_assert_str_eq(cfg->certfiles[0], want);

	ck_assert_str_eq(cfg->storage_driver, "sqlite");
	snprintf(want, sizeof(want), "%s/pigeon.db", dir);
	ck_assert_str_eq(cfg->storage_path, want);
	ck_assert_ptr_null(cfg->storage_conninfo);
	ck_assert_uint_eq(cfg->storage_outage_hold, 30);
	ck_assert_uint_eq(cfg->ncomponents, 0);

	h = pgn_config_host(cfg, "localhost");
	ck_assert_ptr_nonnull(h);
	ck_assert_uint_eq(h->nmodules, 15);
	ck_assert_str_eq(h->modules[0].name, "mod_disco");
	ck_assert_uint_eq(h->modules[0].nopts, 0);
	ck_assert_str_eq(h->modules[1].name, "mod_ping");
	m = &h->modules[2];
	ck_assert_str_eq(m->name, "mod_version");
	ck_assert_str_eq(pgn_cfg_module_opt(m, "show_os"), "true");
	ck_assert_ptr_null(pgn_cfg_module_opt(m, "nope"));
	m = &h->modules[3];
	ck_assert_str_eq(m->name, "mod_roster");
	ck_assert_str_eq(pgn_cfg_module_opt(m, "max_items"), "1000");
	m = &h->modules[10];
	ck_assert_str_eq(m->name, "mod_register");
	ck_assert_str_eq(pgn_cfg_module_opt(m, "allow_registration"), "false");

	ck_assert_uint_eq(cfg->limits.max_stanza_size, 262144);
	ck_assert_uint_eq(cfg->limits.max_depth, 32);
	ck_assert_uint_eq(cfg->limits.max_attrs, 64);
	ck_assert_uint_eq(cfg->limits.max_children, 4096);
	ck_assert_uint_eq(cfg->limits.negotiation_timeout, 30);
	ck_assert_uint_eq(cfg->limits.idle_timeout, 600);
	ck_assert_uint_eq(cfg->limits.keepalive_interval, 120);
	ck_assert_uint_eq(cfg->limits.auth_fail_delay_ms, 1000);
	ck_assert_uint_eq(cfg->limits.max_sessions_per_user, 100);

	ck_assert_str_eq(cfg->log_level, "info");
	ck_assert_ptr_null(cfg->log_file);
	snprintf(want, sizeof(want), "%s/pigeon.sock", dir);
	ck_assert_str_eq(cfg->ctl_socket, want);
	ck_assert_str_eq(cfg->module_path, "/opt/pigeon/modules");
	ck_assert_str_eq(cfg->schema_dir, PGN_SCHEMA_DIR);
	ck_assert_ptr_null(cfg->pid_file);
	pgn_config_free(cfg);
}
END_TEST

/* ---- defaults and values ------------------------------------------------- */

START_TEST(test_defaults)
{
	struct pgn_config *cfg;
	char buf[PATH_MAX + 64];

	cfg = load_ok("hosts: [example.org]\n"
		      "listen:\n"
		      "  - port: 5222\n"
		      "    module: c2s\n"
		      "  - {port: 5269, module: c2s_tls}\n");
	ck_assert_uint_eq(cfg->nhosts, 1);
	ck_assert_str_eq(cfg->hosts[0].name, "example.org");
	ck_assert_uint_eq(cfg->hosts[0].nmodules, 0);
	ck_assert_uint_eq(cfg->nlisten, 2);
	ck_assert_str_eq(cfg->listen[0].ip, "0.0.0.0");
	ck_assert_int_eq(cfg->listen[0].starttls_required, 1);
	ck_assert_int_eq(cfg->listen[0].line, 3);
	ck_assert_int_eq(cfg->listen[1].line, 5);
	ck_assert_int_eq(cfg->listen[1].starttls_required, 0);
	ck_assert_uint_eq(cfg->ncertfiles, 0);
	ck_assert_uint_eq(cfg->ncomponents, 0);
	ck_assert_str_eq(cfg->storage_driver, "sqlite");
	ck_assert_str_eq(cfg->storage_path,
			 in_tmp("pigeon.db", buf, sizeof(buf)));
	ck_assert_ptr_null(cfg->storage_conninfo);
	ck_assert_str_eq(cfg->ctl_socket,
			 in_tmp("pigeon.sock", buf, sizeof(buf)));
	ck_assert_str_eq(cfg->log_level, "info");
	ck_assert_ptr_null(cfg->log_file);
	ck_assert_ptr_null(cfg->pid_file);
	ck_assert_str_eq(cfg->module_path, PGN_MODULE_DIR);
	ck_assert_str_eq(cfg->schema_dir, PGN_SCHEMA_DIR);
	ck_assert_uint_eq(cfg->limits.max_stanza_size, 262144);
	ck_assert_uint_eq(cfg->limits.max_depth, 32);
	ck_assert_uint_eq(cfg->limits.max_attrs, 64);
	ck_assert_uint_eq(cfg->limits.max_children, 4096);
	ck_assert_uint_eq(cfg->limits.negotiation_timeout, 30);
	ck_assert_uint_eq(cfg->limits.idle_timeout, 600);
	ck_assert_uint_eq(cfg->limits.keepalive_interval, 120);
	ck_assert_uint_eq(cfg->limits.auth_fail_delay_ms, 1000);
	ck_assert_uint_eq(cfg->limits.max_sessions_per_user, 100);
	pgn_config_free(cfg);
}
END_TEST

START_TEST(test_values)
{
	struct pgn_config *cfg;

	cfg = load_ok("hosts:\n"
		      "  - Example.ORG\n"
		      "  - \"\xc3\x89xample.net\"\n"
		      "  - localhost\n"
		      "listen:\n"
		      "  - {port: 5222, module: c2s, ip: \"::0\", "
		      "starttls_required: false}\n"
		      "  - {port: 5222, module: c2s, ip: 0.0.0.0}\n"
		      "  - {port: 5347, module: component, ip: \"::1\"}\n"
		      "components:\n"
		      "  - domain: Bot.Localhost\n"
		      "    secret: s3cret\n"
		      "  - {domain: muc.localhost, secret: 12345}\n"
		      "storage:\n"
		      "  driver: pgsql\n"
		      "  conninfo: \"dbname=pigeon user=pigeon\"\n"
		      "limits:\n"
		      "  max_stanza_size: 1024\n"
		      "  max_depth: 256\n"
		      "  max_attrs: 8\n"
		      "  max_children: 1048576\n"
		      "  negotiation_timeout: 3600\n"
		      "  idle_timeout: 10\n"
		      "  keepalive_interval: 86400\n"
		      "  auth_fail_delay_ms: 0\n"
		      "  max_sessions_per_user: 10000\n"
		      "log: {level: debug, file: \"-\"}\n"
		      "modules:\n"
		      "  mod_a: ~\n"
		      "  mod_b: {}\n"
		      "  mod_c:\n"
		      "  mod_d: {flag: yes, n: 30, s: 'quoted', e: }\n");
	ck_assert_uint_eq(cfg->nhosts, 3);
	ck_assert_str_eq(cfg->hosts[0].name, "example.org");
	ck_assert_str_eq(cfg->hosts[1].name, "\xc3\xa9xample.net");
	ck_assert_ptr_nonnull(pgn_config_host(cfg, "example.org"));
	ck_assert_ptr_null(pgn_config_host(cfg, "Example.ORG"));
	ck_assert_ptr_null(pgn_config_host(cfg, "nope.org"));
	ck_assert_ptr_eq(pgn_config_host(cfg, "localhost"), &cfg->hosts[2]);

	ck_assert_uint_eq(cfg->nlisten, 3);
	ck_assert_str_eq(cfg->listen[0].ip, "::");
	ck_assert_int_eq(cfg->listen[0].starttls_required, 0);
	ck_assert_str_eq(cfg->listen[2].ip, "::1");

	ck_assert_uint_eq(cfg->ncomponents, 2);
	ck_assert_str_eq(cfg->components[0].domain, "bot.localhost");
	ck_assert_str_eq(cfg->components[0].secret, "s3cret");
	ck_assert_int_eq(cfg->components[0].line, 10);
	ck_assert_str_eq(cfg->components[1].secret, "12345");

	ck_assert_str_eq(cfg->storage_driver, "pgsql");
	ck_assert_ptr_null(cfg->storage_path);
	ck_assert_str_eq(cfg->storage_conninfo, "dbname=pigeon user=pigeon");

	ck_assert_uint_eq(cfg->limits.max_stanza_size, 1024);
	ck_assert_uint_eq(cfg->limits.max_depth, 256);
	ck_assert_uint_eq(cfg->limits.max_attrs, 8);
	ck_assert_uint_eq(cfg->limits.max_children, 1048576);
	ck_assert_uint_eq(cfg->limits.negotiation_timeout, 3600);
	ck_assert_uint_eq(cfg->limits.idle_timeout, 10);
	ck_assert_uint_eq(cfg->limits.keepalive_interval, 86400);
	ck_assert_uint_eq(cfg->limits.auth_fail_delay_ms, 0);
	ck_assert_uint_eq(cfg->limits.max_sessions_per_user, 10000);

	ck_assert_str_eq(cfg->log_level, "debug");
	ck_assert_ptr_null(cfg->log_file);

	ck_assert_uint_eq(cfg->hosts[0].nmodules, 4);
	ck_assert_uint_eq(cfg->hosts[0].modules[0].nopts, 0);
	ck_assert_uint_eq(cfg->hosts[0].modules[1].nopts, 0);
	ck_assert_uint_eq(cfg->hosts[0].modules[2].nopts, 0);
	ck_assert_int_eq(cfg->hosts[0].modules[3].line, 31);
	ck_assert_str_eq(pgn_cfg_module_opt(&cfg->hosts[0].modules[3], "flag"),
			 "yes");
	ck_assert_str_eq(pgn_cfg_module_opt(&cfg->hosts[0].modules[3], "n"),
			 "30");
	ck_assert_str_eq(pgn_cfg_module_opt(&cfg->hosts[0].modules[3], "s"),
			 "quoted");
	ck_assert_str_eq(pgn_cfg_module_opt(&cfg->hosts[0].modules[3], "e"),
			 "");
	ck_assert_ptr_null(pgn_cfg_module_opt(NULL, "x"));
	pgn_config_free(cfg);
}
END_TEST

START_TEST(test_null_sections)
{
	struct pgn_config *cfg;

	/* Sections whose children are all commented out are empty. */
	cfg = load_ok("hosts:\n"
		      "  - localhost\n"
		      "listen:\n"
		      "certfiles:\n"
		      "components:\n"
		      "modules:\n"
		      "host_config:\n"
		      "limits:\n"
		      "log:\n"
		      "storage:\n");
	ck_assert_uint_eq(cfg->nlisten, 0);
	ck_assert_uint_eq(cfg->hosts[0].nmodules, 0);
	ck_assert_str_eq(cfg->storage_driver, "sqlite");
	ck_assert_uint_eq(cfg->limits.max_depth, 32);
	pgn_config_free(cfg);

	cfg = load_ok("hosts: [localhost]\nlog: {level: warning}\n");
	ck_assert_str_eq(cfg->log_level, "warn");
	pgn_config_free(cfg);
}
END_TEST

/* ---- paths --------------------------------------------------------------- */

START_TEST(test_relative_paths)
{
	struct pgn_config *cfg = NULL;
	char buf[PATH_MAX + 64], cwd[PATH_MAX], err[1024];
	int rc;

	write_cfg("hosts: [localhost]\n"
		  "certfiles: [a.pem, /etc/ssl/b.pem, ./certs/c.pem]\n"
		  "storage: {driver: sqlite, path: db/p.db}\n"
		  "log: {file: log/pigeon.log}\n"
		  "ctl_socket: run/ctl.sock\n"
		  "module_path: mods\n"
		  "schema_dir: ../schemas\n"
		  "pid_file: pigeon.pid\n");
	/* A relative config path: the directory is resolved at load time,
	 * so a later chdir() does not change what the paths mean. */
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	ck_assert_int_eq(chdir(tmpdir), 0);
	setenv("PIGEON_MODULE_PATH", "/ignored", 1);
	rc = pgn_config_load("pigeon.yml", &cfg, err, sizeof(err));
	ck_assert_int_eq(chdir(cwd), 0);
	ck_assert_msg(rc == 0, "load failed: %s", err);

	ck_assert_str_eq(cfg->path, "pigeon.yml");
	ck_assert_uint_eq(cfg->ncertfiles, 3);
	ck_assert_str_eq(cfg->certfiles[0], in_tmp("a.pem", buf, sizeof(buf)));
	ck_assert_str_eq(cfg->certfiles[1], "/etc/ssl/b.pem");
	ck_assert_str_eq(cfg->certfiles[2],
			 in_tmp("certs/c.pem", buf, sizeof(buf)));
	ck_assert_str_eq(cfg->storage_path,
			 in_tmp("db/p.db", buf, sizeof(buf)));
	ck_assert_str_eq(cfg->log_file,
			 in_tmp("log/pigeon.log", buf, sizeof(buf)));
	ck_assert_str_eq(cfg->ctl_socket,
			 in_tmp("run/ctl.sock", buf, sizeof(buf)));
	/* The config wins over the environment. */
	ck_assert_str_eq(cfg->module_path, in_tmp("mods", buf, sizeof(buf)));
	ck_assert_str_eq(cfg->schema_dir,
			 in_tmp("../schemas", buf, sizeof(buf)));
	ck_assert_str_eq(cfg->pid_file, in_tmp("pigeon.pid", buf, sizeof(buf)));
	pgn_config_free(cfg);
}
END_TEST

START_TEST(test_env_overrides)
{
	struct pgn_config *cfg;
	char cwd[PATH_MAX], want[PATH_MAX + 64];

	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	setenv("PIGEON_MODULE_PATH", "/build/modules/.libs", 1);
	setenv("PIGEON_SCHEMA_DIR", "schemas", 1);
	cfg = load_ok("hosts: [localhost]\n");
	ck_assert_str_eq(cfg->module_path, "/build/modules/.libs");
	/* A relative override is taken from the working directory. */
	snprintf(want, sizeof(want), "%s/schemas", cwd);
	ck_assert_str_eq(cfg->schema_dir, want);
	pgn_config_free(cfg);

	setenv("PIGEON_SCHEMA_DIR", "", 1);
	cfg = load_ok("hosts: [localhost]\n");
	ck_assert_str_eq(cfg->schema_dir, PGN_SCHEMA_DIR);
	pgn_config_free(cfg);
}
END_TEST

/* ---- host_config --------------------------------------------------------- */

START_TEST(test_host_config_merge)
{
	struct pgn_config *cfg;
	const struct pgn_cfg_host *h;
	const struct pgn_cfg_module *m;

	cfg = load_ok("hosts: [localhost, example.org, other.org]\n"
		      "modules:\n"
		      "  mod_disco: {}\n"
		      "  mod_version:\n"
		      "    show_os: true\n"
		      "    name: Pigeon\n"
		      "host_config:\n"
		      "  Example.org:\n"
		      "    modules:\n"
		      "      mod_version:\n"
		      "        show_os: false\n"
		      "      mod_register: {allow: yes}\n"
		      "  other.org:\n"
		      "    modules:\n"
		      "      mod_version: ~\n"
		      "  localhost:\n");
	h = pgn_config_host(cfg, "localhost");
	ck_assert_ptr_nonnull(h);
	ck_assert_uint_eq(h->nmodules, 2);
	m = find_module(h, "mod_version");
	ck_assert_str_eq(pgn_cfg_module_opt(m, "show_os"), "true");
	ck_assert_str_eq(pgn_cfg_module_opt(m, "name"), "Pigeon");
	ck_assert_int_eq(m->line, 4);

	/* Added and replaced, in global order then the host's own. */
	h = pgn_config_host(cfg, "example.org");
	ck_assert_ptr_nonnull(h);
	ck_assert_uint_eq(h->nmodules, 3);
	ck_assert_str_eq(h->modules[0].name, "mod_disco");
	ck_assert_str_eq(h->modules[1].name, "mod_version");
	ck_assert_str_eq(h->modules[2].name, "mod_register");
	m = &h->modules[1];
	ck_assert_uint_eq(m->nopts, 1);
	ck_assert_str_eq(pgn_cfg_module_opt(m, "show_os"), "false");
	ck_assert_ptr_null(pgn_cfg_module_opt(m, "name"));
	ck_assert_int_eq(m->line, 10);
	ck_assert_str_eq(pgn_cfg_module_opt(&h->modules[2], "allow"), "yes");

	/* A host entry without options clears the global ones. */
	h = pgn_config_host(cfg, "other.org");
	ck_assert_ptr_nonnull(h);
	ck_assert_uint_eq(h->nmodules, 2);
	ck_assert_uint_eq(find_module(h, "mod_version")->nopts, 0);
	pgn_config_free(cfg);
}
END_TEST

/* A module option written as a YAML list: its items joined with
 * newlines, marked as a list (src/core/modopt.c decides if the option
 * takes one); a host entry copies it as it is. */
START_TEST(test_module_option_list)
{
	struct pgn_config *cfg;
	const struct pgn_cfg_host *h;
	const struct pgn_cfg_module *m;

	cfg = load_ok("hosts: [localhost]\n"
		      "modules:\n"
		      "  mod_e2e_policy:\n"
		      "    exempt: [bot@localhost, echo.localhost]\n"
		      "    none: []\n"
		      "    block:\n"
		      "      - a@b\n"
		      "      - c\n"
		      "    plain: x, y\n");
	h = pgn_config_host(cfg, "localhost");
	ck_assert_ptr_nonnull(h);
	m = find_module(h, "mod_e2e_policy");
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(m->nopts, 4);
	ck_assert_str_eq(m->opts[0].value, "bot@localhost\necho.localhost");
	ck_assert_int_eq(m->opts[0].list, 1);
	ck_assert_str_eq(m->opts[1].value, "");
	ck_assert_int_eq(m->opts[1].list, 1);
	ck_assert_str_eq(m->opts[2].value, "a@b\nc");
	ck_assert_int_eq(m->opts[2].line, 6);
	ck_assert_str_eq(m->opts[3].value, "x, y");
	ck_assert_int_eq(m->opts[3].list, 0);
	pgn_config_free(cfg);
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

struct err_case {
	const char *yaml;
	int line;
	const char *fragment;
};

#define LONG_LABEL                                                             \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct err_case err_cases[] = {
	/* syntax */
	{"hosts: [a\n", 2,
	 "YAML syntax error: did not find expected ',' or ']'"},
	{"hosts:\n\t- a\n", 2,
	 "YAML syntax error: found character that cannot "
	 "start any token"},
	{"hosts: [a]\nlisten: *nope\n", 2,
	 "YAML syntax error: found undefined alias"},
	{"hosts: [a]\n# \xff\n", 2, "YAML error: invalid leading UTF-8 octet"},
	{"hosts: [a]\n---\nhosts: [b]\n", 2, "only one YAML document"},
	{"", 1, "the file is empty"},
	{"# nothing\n", 1, "the file is empty"},
	{"- hosts\n", 1, "the top level must be a mapping"},
	/* keys */
	{"hosts: [a]\nhots: [b]\n", 2,
	 "unknown top-level key 'hots' (expected one of: hosts, listen, "
	 "certfiles, storage, components, modules, host_config, limits, log, "
	 "ctl_socket, module_path, schema_dir, pid_file); did you mean "
	 "'hosts'?"},
	{"hosts: [a]\nhosts: [b]\n", 2,
	 "duplicate key 'hosts' (first at line 1)"},
	{"hosts: [a]\n? [x]\n: y\n", 2, "keys must be names, got a list"},
	/* hosts */
	{"listen: []\n", 1, "no hosts: the top-level key 'hosts' is missing"},
	{"# c\nhosts: []\n", 2, "hosts: no hosts"},
	{"hosts:\n# - a\n", 1, "hosts: no hosts"},
	{"hosts: {a: b}\n", 1,
	 "hosts: expected a list of domain names, got a mapping"},
	{"hosts:\n  - [a]\n", 2, "hosts[0]: expected a string, got a list"},
	{"hosts:\n  - example.org\n  - Example.ORG\n", 3,
	 "hosts[1]: duplicate host 'example.org' (same as hosts[0])"},
	{"hosts:\n  - a\n  - a..b\n", 3,
	 "hosts[1]: invalid domain name \"a..b\": empty label"},
	{"hosts: [.a]\n", 1, "invalid domain name \".a\": empty label"},
	{"hosts: [a.]\n", 1, "invalid domain name \"a.\": empty label"},
	{"hosts: [\"\"]\n", 1, "hosts[0]: expected a domain name, got \"\""},
	{"hosts: [~]\n", 1, "hosts[0]: expected a string, got nothing (null)"},
	{"hosts: [\"exa mple.org\"]\n", 1, "character ' ' is not allowed"},
	{"hosts: [user@example.org]\n", 1, "character '@' is not allowed"},
	{"hosts: [-a.org]\n", 1, "a label starts or ends with '-'"},
	{"hosts: [" LONG_LABEL ".org]\n", 1, "a label is longer than 63 bytes"},
	{"hosts: [\"a\\u0000b\"]\n", 1, "must not contain a NUL character"},
	/* listen */
	{"hosts: [a]\nlisten:\n  - port: 5222\n    module: c2s\n"
	 "  - port: abc\n    module: c2s_tls\n",
	 5, "listen[1].port: expected an integer from 1 to 65535, got \"abc\""},
	{"hosts: [a]\nlisten:\n  - {port: 0, module: c2s}\n", 3,
	 "listen[0].port: expected an integer from 1 to 65535, got \"0\""},
	{"hosts: [a]\nlisten:\n  - {port: 65536, module: c2s}\n", 3,
	 "got \"65536\""},
	{"hosts: [a]\nlisten:\n  - {port: -1, module: c2s}\n", 3, "got \"-1\""},
	{"hosts: [a]\nlisten:\n  - {port: \"5222\", module: c2s}\n", 3,
	 "got \"5222\" (write numbers without quotes)"},
	{"hosts: [a]\nlisten:\n  - {port: [1], module: c2s}\n", 3,
	 "got a list"},
	{"hosts: [a]\nlisten:\n  - module: c2s\n", 3,
	 "listen[0]: missing key 'port'"},
	{"hosts: [a]\nlisten:\n  - port: 5222\n", 3,
	 "listen[0]: missing key 'module' (expected one of: c2s, c2s_tls, "
	 "component)"},
	{"hosts: [a]\nlisten:\n  - port: 5222\n    module: c2s_ssl\n", 4,
	 "listen[0].module: unknown listener module \"c2s_ssl\" (expected one "
	 "of: c2s, c2s_tls, component)"},
	{"hosts: [a]\nlisten:\n  - port: 5222\n    module: c2s\n    prot: 1\n",
	 5,
	 "listen[0]: unknown key 'prot' (expected one of: port, ip, module, "
	 "starttls_required); did you mean 'port'?"},
	{"hosts: [a]\nlisten:\n  - port: 1\n    port: 2\n", 4,
	 "listen[0]: duplicate key 'port' (first at line 3)"},
	{"hosts: [a]\nlisten: {port: 1}\n", 2,
	 "listen: expected a list of listeners, got a mapping"},
	{"hosts: [a]\nlisten:\n  - 5222\n", 3,
	 "listen[0]: expected a mapping with port, module and optionally ip, "
	 "got \"5222\""},
	{"hosts: [a]\nlisten:\n  - {port: 1, module: c2s, ip: localhost}\n", 3,
	 "listen[0].ip: expected an IPv4 or IPv6 address"},
	{"hosts: [a]\nlisten:\n  - {port: 1, module: c2s, ip: 1.2.3.256}\n", 3,
	 "got \"1.2.3.256\""},
	{"hosts: [a]\nlisten:\n"
	 "  - {port: 5222, module: c2s, ip: 127.0.0.1}\n"
	 "  - {port: 5223, module: c2s_tls, ip: 127.0.0.1}\n"
	 "  - {port: 5222, module: c2s_tls, ip: 127.0.0.1}\n",
	 5, "listen[2]: 127.0.0.1 port 5222 is already used by listen[0]"},
	{"hosts: [a]\nlisten:\n"
	 "  - {port: 5222, module: c2s, ip: \"::\"}\n"
	 "  - {port: 5222, module: c2s, ip: \"0::0\"}\n",
	 4, "listen[1]: :: port 5222 is already used by listen[0]"},
	{"hosts: [a]\nlisten:\n"
	 "  - {port: 5222, module: c2s, ip: 10.0.0.1}\n"
	 "  - {port: 5222, module: c2s}\n",
	 4, "listen[1]: 0.0.0.0 port 5222 is already used by listen[0]"},
	{"hosts: [a]\nlisten:\n  - port: 5223\n    module: c2s_tls\n"
	 "    starttls_required: true\n",
	 5, "listen[0].starttls_required: only valid with module c2s"},
	{"hosts: [a]\nlisten:\n  - port: 5347\n    module: component\n"
	 "    starttls_required: false\n",
	 5, "listen[0].starttls_required: only valid with module c2s"},
	{"hosts: [a]\nlisten:\n  - port: 5222\n    module: c2s\n"
	 "    starttls_required: maybe\n",
	 5,
	 "listen[0].starttls_required: expected true or false, got \"maybe\""},
	{"hosts: [a]\nlisten:\n  - port: 5222\n    module: c2s\n"
	 "    starttls_required: \"true\"\n",
	 5, "expected true or false, got \"true\""},
	/* certfiles and paths */
	{"hosts: [a]\ncertfiles: a.pem\n", 2,
	 "certfiles: expected a list of PEM file paths, got \"a.pem\""},
	{"hosts: [a]\ncertfiles:\n  - a.pem\n  - \"\"\n", 4,
	 "certfiles[1]: expected a non-empty string, got \"\""},
	{"hosts: [a]\nctl_socket: \"\"\n", 2,
	 "ctl_socket: expected a non-empty string"},
	{"hosts: [a]\nctl_socket: {a: b}\n", 2,
	 "ctl_socket: expected a string, got a mapping"},
	{"hosts: [a]\n\nctl_socket: /" LONG_LABEL "/" LONG_LABEL "\n", 3,
	 "is too long for a Unix socket path"},
	{"hosts: [a]\npid_file: ~\n", 2,
	 "pid_file: expected a string, got nothing"},
	/* components */
	{"hosts: [localhost]\ncomponents:\n  - domain: localhost\n    secret: "
	 "x\n",
	 3, "components[0].domain: 'localhost' is already a host"},
	{"hosts: [localhost]\ncomponents:\n  - domain: LocalHost\n    secret: "
	 "x\n",
	 3, "components[0].domain: 'localhost' is already a host"},
	{"hosts: [localhost]\ncomponents:\n  - domain: bot.localhost\n"
	 "    secret: \"\"\n",
	 4, "components[0].secret: expected a non-empty string"},
	{"hosts: [localhost]\ncomponents:\n  - domain: bot.localhost\n"
	 "    secret:\n",
	 4, "components[0].secret: expected a non-empty string"},
	{"hosts: [localhost]\ncomponents:\n  - domain: bot.localhost\n", 3,
	 "components[0]: missing key 'secret'"},
	{"hosts: [localhost]\ncomponents:\n  - secret: x\n", 3,
	 "components[0]: missing key 'domain'"},
	{"hosts: [localhost]\ncomponents:\n  - {domain: b.localhost, secret: "
	 "x}\n"
	 "  - {domain: B.localhost, secret: y}\n",
	 4,
	 "components[1].domain: duplicate component 'b.localhost' (same as "
	 "components[0], line 3)"},
	{"hosts: [localhost]\ncomponents:\n  - {domain: b, secret: x, port: "
	 "1}\n",
	 3,
	 "components[0]: unknown key 'port' (expected one of: domain, secret)"},
	/* storage */
	{"hosts: [a]\nstorage:\n  driver: mysql\n", 3,
	 "storage.driver: unknown driver \"mysql\" (expected sqlite or pgsql)"},
	{"hosts: [a]\nstorage:\n  driver: pgsql\n", 2,
	 "storage: driver pgsql needs 'conninfo'"},
	{"hosts: [a]\nstorage:\n  driver: pgsql\n  path: x.db\n  conninfo: x\n",
	 4, "storage.path: only used by driver sqlite"},
	{"hosts: [a]\nstorage:\n  conninfo: \"dbname=x\"\n", 3,
	 "storage.conninfo: only used by driver pgsql"},
	{"hosts: [a]\nstorage:\n  driver: pgsql\n  conninfo: \"\"\n", 4,
	 "storage.conninfo: expected a non-empty string"},
	{"hosts: [a]\nstorage:\n  outage_hold: 3601\n", 3,
	 "storage.outage_hold: expected an integer from 0 to 3600"},
	{"hosts: [a]\nstorage:\n  drvier: sqlite\n", 3,
	 "storage: unknown key 'drvier' (expected one of: driver, path, "
	 "conninfo, outage_hold); did you mean 'driver'?"},
	{"hosts: [a]\nstorage: sqlite\n", 2,
	 "storage: expected a mapping with driver and path or conninfo, got "
	 "\"sqlite\""},
	/* log */
	{"hosts: [a]\nlog:\n  level: verbose\n", 3,
	 "log.level: unknown level \"verbose\" (expected one of: error, warn, "
	 "info, debug)"},
	{"hosts: [a]\nlog:\n  level: INFO\n", 3, "log.level: unknown level"},
	{"hosts: [a]\nlog:\n  levle: info\n", 3, "log: unknown key 'levle'"},
	{"hosts: [a]\nlog:\n  file: \"\"\n", 3,
	 "log.file: expected a non-empty string"},
	/* limits */
	{"hosts: [a]\nlimits:\n  max_stanza_size: 1023\n", 3,
	 "limits.max_stanza_size: expected an integer from 1024 to 16777216, "
	 "got \"1023\""},
	{"hosts: [a]\nlimits:\n  max_stanza_size: 16777217\n", 3,
	 "got \"16777217\""},
	{"hosts: [a]\nlimits:\n  max_stanza_size: 99999999999999999999999\n", 3,
	 "limits.max_stanza_size: expected an integer"},
	{"hosts: [a]\nlimits:\n  max_depth: 0\n", 3,
	 "limits.max_depth: expected an integer from 4 to 256, got \"0\""},
	{"hosts: [a]\nlimits:\n  max_attrs: 100000\n", 3,
	 "limits.max_attrs: expected an integer from 8 to 1024"},
	{"hosts: [a]\nlimits:\n  max_children: 1\n", 3,
	 "limits.max_children: expected an integer from 16 to 1048576"},
	{"hosts: [a]\nlimits:\n  negotiation_timeout: 0\n", 3,
	 "limits.negotiation_timeout: expected an integer from 1 to 3600"},
	{"hosts: [a]\nlimits:\n  idle_timeout: 1\n", 3,
	 "limits.idle_timeout: expected an integer from 10 to 86400"},
	{"hosts: [a]\nlimits:\n  keepalive_interval: 1.5\n", 3,
	 "limits.keepalive_interval: expected an integer from 5 to 86400, got "
	 "\"1.5\""},
	{"hosts: [a]\nlimits:\n  auth_fail_delay_ms: 60001\n", 3,
	 "limits.auth_fail_delay_ms: expected an integer from 0 to 60000"},
	{"hosts: [a]\nlimits:\n  max_sessions_per_user: 0\n", 3,
	 "limits.max_sessions_per_user: expected an integer from 1 to 10000"},
	{"hosts: [a]\nlimits:\n  max_depht: 8\n", 3,
	 "limits: unknown key 'max_depht'"},
	/* modules */
	{"hosts: [a]\nmodules:\n  ping: {}\n", 3,
	 "modules: invalid module name 'ping' (expected 'mod_' followed by "
	 "lowercase letters, digits or '_'"},
	{"hosts: [a]\nmodules:\n  mod_Ping: {}\n", 3,
	 "modules: invalid module name 'mod_Ping'"},
	{"hosts: [a]\nmodules:\n  mod_: {}\n", 3, "invalid module name 'mod_'"},
	{"hosts: [a]\nmodules:\n  mod-ping: {}\n", 3,
	 "invalid module name 'mod-ping'"},
	{"hosts: [a]\nmodules:\n  mod_ping: {}\n  mod_ping: {}\n", 4,
	 "modules: duplicate key 'mod_ping' (first at line 3)"},
	{"hosts: [a]\nmodules: [mod_ping]\n", 2,
	 "modules: expected a mapping of module names (mod_...) to options, "
	 "got "
	 "a list"},
	{"hosts: [a]\nmodules:\n  mod_version: true\n", 3,
	 "modules.mod_version: expected a mapping of option: value (or {} for "
	 "none), got \"true\""},
	{"hosts: [a]\nmodules:\n  mod_version:\n    show_os:\n      a: 1\n", 5,
	 "modules.mod_version.show_os: nested values are not supported yet "
	 "(expected a scalar value"},
	{"hosts: [a]\nmodules:\n  mod_version:\n    show_os: [[1], 2]\n", 4,
	 "modules.mod_version.show_os: expected a list of scalars, got a list "
	 "in it"},
	{"hosts: [a]\nmodules:\n  mod_version:\n    show_os: [{a: 1}]\n", 4,
	 "modules.mod_version.show_os: expected a list of scalars"},
	{"hosts: [a]\nmodules:\n  mod_version:\n    x: 1\n    x: 2\n", 5,
	 "modules.mod_version: duplicate key 'x' (first at line 4)"},
	/* host_config */
	{"hosts: [a]\nhost_config:\n  example.org:\n    modules: {}\n", 3,
	 "host_config: 'example.org' is not in hosts (hosts: a)"},
	{"hosts: [a]\nhost_config:\n  a:\n    modlues: {}\n", 4,
	 "host_config.a: unknown key 'modlues' (expected one of: modules); did "
	 "you mean 'modules'?"},
	{"hosts: [a]\nhost_config:\n  a:\n    modules:\n      mod_x:\n"
	 "        y: {z: 1}\n",
	 6, "host_config.a.modules.mod_x.y: nested values are not supported"},
	{"hosts: [a]\nhost_config:\n  a:\n    modules:\n      x: {}\n", 5,
	 "host_config.a.modules: invalid module name 'x'"},
	{"hosts: [a.org]\nhost_config:\n  a.org: {}\n  A.org: {}\n", 4,
	 "host_config: 'a.org' is configured twice (first at line 3)"},
	{"hosts: [a]\nhost_config:\n  a..b: {}\n", 3,
	 "host_config: invalid domain name \"a..b\""},
	{"hosts: [a]\nhost_config: [a]\n", 2,
	 "host_config: expected a mapping of host names to their settings"},
};

START_TEST(test_errors)
{
	const struct err_case *c = &err_cases[_i];
	struct pgn_config *cfg = (struct pgn_config *)&cfg;
	char err[1024], where[PATH_MAX + 64];
	int rc;

	write_cfg(c->yaml);
	memset(err, 'x', sizeof(err));
	rc = pgn_config_load(cfgpath, &cfg, err, sizeof(err));
	ck_assert_msg(rc == -EINVAL, "case %d: rc %d, expected -EINVAL (%s)",
		      _i, rc, rc == 0 ? "loaded" : err);
	ck_assert_ptr_null(cfg);
	snprintf(where, sizeof(where), "%s:%d: ", cfgpath, c->line);
	ck_assert_msg(strncmp(err, where, strlen(where)) == 0,
		      "case %d: expected line %d, got: %s", _i, c->line, err);
	ck_assert_msg(strstr(err, c->fragment) != NULL,
		      "case %d: expected \"%s\" in: %s", _i, c->fragment, err);
}
END_TEST

START_TEST(test_io_errors)
{
	struct pgn_config *cfg = NULL;
	char err[1024], path[PATH_MAX + 16];
	int rc;

	snprintf(path, sizeof(path), "%s/missing.yml", tmpdir);
	rc = pgn_config_load(path, &cfg, err, sizeof(err));
	ck_assert_int_eq(rc, -ENOENT);
	ck_assert_ptr_null(cfg);
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_ptr_nonnull(strstr(err, "No such file"));

	rc = pgn_config_load(tmpdir, &cfg, err, sizeof(err));
	ck_assert_int_eq(rc, -EISDIR);

	/* A tiny buffer truncates the message but must not overflow. */
	write_cfg("hots: [a]\n");
	rc = pgn_config_load(cfgpath, &cfg, err, 8);
	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_uint_lt(strlen(err), 8);
	rc = pgn_config_load(cfgpath, &cfg, NULL, 0);
	ck_assert_int_eq(rc, -EINVAL);
	pgn_config_free(NULL);
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("load");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_example);
	tcase_add_test(tc, test_module_option_list);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_values);
	tcase_add_test(tc, test_null_sections);
	tcase_add_test(tc, test_relative_paths);
	tcase_add_test(tc, test_env_overrides);
	tcase_add_test(tc, test_host_config_merge);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_errors, 0,
			    (int)(sizeof(err_cases) / sizeof(err_cases[0])));
	tcase_add_test(tc, test_io_errors);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
