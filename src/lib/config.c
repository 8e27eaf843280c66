/* pigeon.yml: libyaml's document API builds a node tree, which is then
 * read against the schema below and copied into plain structs.
 *
 * The schema is data: each section is a table of fields (key, type, where
 * the value goes, range, default, doc), walked by cfg_load_section() in
 * config_yaml.c, which also words the errors: FILE:LINE, the dotted key
 * ("listen[1].port"), what was found and what is expected.  What a type
 * cannot say is a CFG_CUSTOM field or a section's finish() rule.
 *
 * To add a setting: a field in pgn_config (config.h), one line in the
 * section's table here, and its entry in man/pigeon.yml.5. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif

#include "pigeon/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <yaml.h>

#include "config_yaml.h"

/* Normally set by the build (-DPGN_MODULE_DIR=...); these fallbacks let the
 * file be compiled on its own, e.g. for the unit test. */
#ifndef PGN_MODULE_DIR
#define PGN_MODULE_DIR "/usr/local/lib/pigeon"
#endif
#ifndef PGN_SCHEMA_DIR
#define PGN_SCHEMA_DIR "/usr/local/share/pigeon/schemas"
#endif

/* "::" would be nicer but fails on hosts with IPv6 disabled; an admin who
 * wants IPv6 writes it. */
#define CFG_DEFAULT_IP "0.0.0.0"
#define CFG_DEFAULT_DRIVER "sqlite"
#define CFG_DEFAULT_DB "pigeon.db"
#define CFG_DEFAULT_CTL "pigeon.sock"
#define CFG_DEFAULT_LOG_LEVEL "info"

#define CFG_MODULE_NAME_MAX 64
/* A config file is written by hand; anything larger is a mistake. */
#define CFG_FILE_MAX (16u * 1024 * 1024)

/* ---- paths --------------------------------------------------------------- */

/* The absolute, symlink-free directory of file, so that paths in the
 * config keep meaning the same after the daemon changes directory. */
static int
cfg_dir_of(const char *file, char **out)
{
	const char *slash = strrchr(file, '/');
	char *dir, *real;

	*out = NULL;
	if (slash == NULL)
		dir = strdup(".");
	else if (slash == file)
		dir = strdup("/");
	else
		dir = strndup(file, (size_t)(slash - file));
	if (dir == NULL)
		return -ENOMEM;
	real = realpath(dir, NULL);
	free(dir);
	if (real == NULL)
		return -errno;
	*out = real;
	return 0;
}

/* bind() on a longer path fails with an unhelpful error at start. */
static int
cfg_check_sun_path(struct cfg_parse *p, int line, const char *what,
		   const char *path)
{
	struct sockaddr_un sun;

	if (strlen(path) < sizeof(sun.sun_path))
		return 0;
	return cfg_fail(p, line,
			"%s: '%s' is too long for a Unix socket path "
			"(%zu bytes, at most %zu); use a shorter path",
			what, path, strlen(path), sizeof(sun.sun_path) - 1);
}

/* ---- hosts --------------------------------------------------------------- */

static int
cfg_host_item(struct cfg_parse *p, yaml_node_t *v, const char *what,
	      size_t i, void *elem)
{
	struct pgn_cfg_host *hosts = p->cfg->hosts;
	char *name = NULL;
	size_t j;
	int rc;

	rc = cfg_domain(p, v, what, &name);
	if (rc < 0)
		return rc;
	for (j = 0; j < i; j++) {
		if (strcmp(hosts[j].name, name) == 0) {
			rc = cfg_fail(p, cfg_line(v),
				      "%s: duplicate host '%s' (same as "
				      "hosts[%zu])",
				      what, name, j);
			free(name);
			return rc;
		}
	}
	((struct pgn_cfg_host *)elem)->name = name;
	return 0;
}

static const struct cfg_list host_list = {
	"a list of domain names", sizeof(struct pgn_cfg_host),
	offsetof(struct pgn_config, nhosts), cfg_host_item};

/* hosts is read first (components and host_config refer to it) and must
 * name at least one host. */
static int
cfg_parse_hosts(struct cfg_parse *p, yaml_node_t *v, const char *what,
		int keyline, void *base)
{
	static const struct cfg_field list = {
		.key = "hosts", .type = CFG_LIST,
		.offset = offsetof(struct pgn_config, hosts),
		.list = &host_list};
	struct pgn_config *cfg = base;
	int rc;

	rc = cfg_load_field(p, &list, v, what, keyline, base);
	if (rc < 0)
		return rc;
	if (cfg->nhosts == 0)
		return cfg_fail(p, keyline,
				"hosts: no hosts (expected a list of at least "
				"one domain name, e.g. '- localhost')");
	p->per_host = calloc(cfg->nhosts, sizeof(*p->per_host));
	return p->per_host != NULL ? 0 : cfg_oom(p);
}

/* ---- listen -------------------------------------------------------------- */

static int
cfg_listen_addr(const char *ip, int *family, unsigned char addr[16])
{
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, ip, addr) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, ip, addr) == 1) {
		*family = AF_INET6;
		return 0;
	}
	return -EINVAL;
}

static bool
cfg_addr_any(const unsigned char addr[16])
{
	static const unsigned char zero[16];

	return memcmp(addr, zero, 16) == 0;
}

/* Stored in canonical form so that "::0" and "::" compare equal. */
static int
cfg_listen_ip_set(struct cfg_parse *p, struct pgn_cfg_listen *l,
		  const char *ip, const yaml_node_t *v, const char *what)
{
	unsigned char addr[16];
	char norm[INET6_ADDRSTRLEN], got[96];
	int family;

	if (cfg_listen_addr(ip, &family, addr) < 0) {
		if (v == NULL)
			return cfg_fail(p, l->line, "bad default address");
		cfg_describe(v, got, sizeof(got));
		return cfg_fail(p, cfg_line(v),
				"%s: expected an IPv4 or IPv6 address (e.g. "
				"0.0.0.0, 127.0.0.1 or ::), got %s",
				what, got);
	}
	if (inet_ntop(family, addr, norm, sizeof(norm)) == NULL)
		return cfg_fail(p, l->line, "%s: cannot format address", what);
	l->ip = strdup(norm);
	return l->ip != NULL ? 0 : cfg_oom(p);
}

static int
cfg_listen_ip(struct cfg_parse *p, yaml_node_t *v, const char *what,
	      int keyline, void *base)
{
	char *ip = NULL;
	int rc;

	rc = cfg_string(p, v, what, true, &ip);
	if (rc < 0)
		return rc;
	rc = cfg_listen_ip_set(p, base, ip, v, what);
	free(ip);
	return rc;
}

static const struct cfg_choice listen_modules[] = {
	{"c2s", NULL}, {"c2s_tls", NULL}, {"component", NULL}, {NULL, NULL}};

/* The address default, and STARTTLS, which only a c2s listener has. */
static int
cfg_listener_finish(struct cfg_parse *p, yaml_node_t *map, const char *what,
		    int keyline, void *base)
{
	struct pgn_cfg_listen *l = base;
	char sub[CFG_NAME_MAX];
	int kline = 0, rc;
	yaml_node_t *v;

	if (l->ip == NULL) {
		cfg_name(sub, sizeof(sub), "%s.ip", what);
		rc = cfg_listen_ip_set(p, l, CFG_DEFAULT_IP, NULL, sub);
		if (rc < 0)
			return rc;
	}
	v = cfg_get(p, map, "starttls_required", &kline);
	if (l->kind == PGN_LISTEN_C2S) {
		if (v == NULL)
			l->starttls_required = 1;
		return 0;
	}
	/* Direct TLS and components have no STARTTLS to require. */
	l->starttls_required = 0;
	if (v != NULL)
		return cfg_fail(p, kline,
				"%s.starttls_required: only valid with module "
				"c2s (this listener is %s, which has no "
				"STARTTLS)",
				what, listen_modules[l->kind].name);
	return 0;
}

static const struct cfg_field listener_fields[] = {
	{.key = "port", .type = CFG_INT,
	 .offset = offsetof(struct pgn_cfg_listen, port), .min = 1,
	 .max = 65535, .required = true, .doc = "the TCP port"},
	{.key = "ip", .type = CFG_CUSTOM, .parse = cfg_listen_ip,
	 .doc = "the IPv4 or IPv6 address to listen on (default "
		CFG_DEFAULT_IP ")"},
	{.key = "module", .type = CFG_CHOICE,
	 .offset = offsetof(struct pgn_cfg_listen, kind),
	 .choices = listen_modules, .noun = "listener module",
	 .required = true,
	 .doc = "what the listener serves: c2s (STARTTLS), c2s_tls (direct "
		"TLS, XEP-0368) or component (XEP-0114)"},
	{.key = "starttls_required", .type = CFG_BOOL,
	 .offset = offsetof(struct pgn_cfg_listen, starttls_required),
	 .doc = "c2s only: refuse to authenticate before STARTTLS (default "
		"true)"},
};

static const struct cfg_section listener_section = {
	"a mapping with port, module and optionally ip", listener_fields,
	CFG_N(listener_fields), cfg_listener_finish};

static int
cfg_listen_item(struct cfg_parse *p, yaml_node_t *v, const char *what,
		size_t i, void *elem)
{
	struct pgn_cfg_listen *l = elem;
	unsigned char a[16], b[16];
	int fa = 0, fb = 0, rc;
	size_t j;

	l->line = cfg_line(v);
	rc = cfg_load_section(p, &listener_section, v, what, l->line, l,
			      false);
	if (rc < 0)
		return rc;
	/* A wildcard overlaps every address of its family: the second
	 * bind() would fail with EADDRINUSE at start. */
	cfg_listen_addr(l->ip, &fa, a);
	for (j = 0; j < i; j++) {
		const struct pgn_cfg_listen *o = &p->cfg->listen[j];

		cfg_listen_addr(o->ip, &fb, b);
		if (o->port != l->port || fa != fb)
			continue;
		if (memcmp(a, b, 16) == 0 || cfg_addr_any(a) ||
		    cfg_addr_any(b))
			return cfg_fail(p, l->line,
					"%s: %s port %d is already used by "
					"listen[%zu] (%s port %d, line %d); "
					"each ip:port can be listened on once",
					what, l->ip, l->port, j, o->ip, o->port,
					o->line);
	}
	return 0;
}

static const struct cfg_list listen_list = {
	"a list of listeners", sizeof(struct pgn_cfg_listen),
	offsetof(struct pgn_config, nlisten), cfg_listen_item};

/* ---- certfiles ----------------------------------------------------------- */

static int
cfg_certfile_item(struct cfg_parse *p, yaml_node_t *v, const char *what,
		  size_t i, void *elem)
{
	return cfg_path(p, v, what, elem);
}

static const struct cfg_list certfile_list = {
	"a list of PEM file paths", sizeof(char *),
	offsetof(struct pgn_config, ncertfiles), cfg_certfile_item};

/* ---- components ---------------------------------------------------------- */

static int
cfg_component_domain(struct cfg_parse *p, yaml_node_t *v, const char *what,
		     int keyline, void *base)
{
	struct pgn_config *cfg = p->cfg;
	struct pgn_cfg_component *c = base;
	size_t self = (size_t)(c - cfg->components), j;
	int rc;

	rc = cfg_domain(p, v, what, &c->domain);
	if (rc < 0)
		return rc;
	for (j = 0; j < cfg->nhosts; j++)
		if (strcmp(cfg->hosts[j].name, c->domain) == 0)
			return cfg_fail(p, cfg_line(v),
					"%s: '%s' is already a host "
					"(hosts[%zu]); a component needs a "
					"domain of its own, e.g. 'bot.%s'",
					what, c->domain, j, c->domain);
	for (j = 0; j < self; j++)
		if (strcmp(cfg->components[j].domain, c->domain) == 0)
			return cfg_fail(p, cfg_line(v),
					"%s: duplicate component '%s' (same "
					"as components[%zu], line %d)",
					what, c->domain, j,
					cfg->components[j].line);
	return 0;
}

static int
cfg_component_secret(struct cfg_parse *p, yaml_node_t *v, const char *what,
		     int keyline, void *base)
{
	struct pgn_cfg_component *c = base;

	/* The secret itself never goes into a message. */
	if (v->type != YAML_SCALAR_NODE || cfg_is_null(v) ||
	    v->data.scalar.length == 0)
		return cfg_fail(p, cfg_line(v), "%s: expected a non-empty string",
				what);
	return cfg_string(p, v, what, false, &c->secret);
}

static const struct cfg_field component_fields[] = {
	{.key = "domain", .type = CFG_CUSTOM, .parse = cfg_component_domain,
	 .required = true, .doc = "the component's domain name"},
	{.key = "secret", .type = CFG_CUSTOM, .parse = cfg_component_secret,
	 .required = true, .doc = "the shared secret of XEP-0114"},
};

static const struct cfg_section component_section = {
	"a mapping with domain and secret", component_fields,
	CFG_N(component_fields), NULL};

static int
cfg_component_item(struct cfg_parse *p, yaml_node_t *v, const char *what,
		   size_t i, void *elem)
{
	struct pgn_cfg_component *c = elem;

	c->line = cfg_line(v);
	return cfg_load_section(p, &component_section, v, what, c->line, c,
				false);
}

static const struct cfg_list component_list = {
	"a list of {domain, secret} mappings", sizeof(struct pgn_cfg_component),
	offsetof(struct pgn_config, ncomponents), cfg_component_item};

/* ---- storage ------------------------------------------------------------- */

static const struct cfg_choice storage_drivers[] = {
	{"sqlite", NULL}, {"pgsql", NULL}, {NULL, NULL}};

static bool
cfg_pgsql(const struct pgn_config *cfg)
{
	return cfg->storage_driver != NULL &&
	       strcmp(cfg->storage_driver, "pgsql") == 0;
}

static int
cfg_storage_path(struct cfg_parse *p, yaml_node_t *v, const char *what,
		 int keyline, void *base)
{
	struct pgn_config *cfg = base;

	if (cfg_pgsql(cfg))
		return cfg_fail(p, keyline,
				"%s: only used by driver sqlite (driver is "
				"pgsql: use conninfo)",
				what);
	return cfg_path(p, v, what, &cfg->storage_path);
}

static int
cfg_storage_conninfo(struct cfg_parse *p, yaml_node_t *v, const char *what,
		     int keyline, void *base)
{
	struct pgn_config *cfg = base;

	if (!cfg_pgsql(cfg))
		return cfg_fail(p, keyline,
				"%s: only used by driver pgsql (set 'driver: "
				"pgsql')",
				what);
	return cfg_string(p, v, what, false, &cfg->storage_conninfo);
}

static int
cfg_storage_finish(struct cfg_parse *p, yaml_node_t *map, const char *what,
		   int keyline, void *base)
{
	struct pgn_config *cfg = base;

	if (cfg_pgsql(cfg) && cfg->storage_conninfo == NULL)
		return cfg_fail(p, keyline,
				"storage: driver pgsql needs 'conninfo' (a "
				"libpq connection string, e.g. \"dbname=pigeon "
				"user=pigeon\")");
	return 0;
}

static const struct cfg_field storage_fields[] = {
	{.key = "driver", .type = CFG_CHOICE_NAME,
	 .offset = offsetof(struct pgn_config, storage_driver),
	 .choices = storage_drivers, .noun = "driver",
	 .doc = "sqlite (default) or pgsql"},
	{.key = "path", .type = CFG_CUSTOM, .parse = cfg_storage_path,
	 .doc = "sqlite: the database file (default " CFG_DEFAULT_DB
		" beside the configuration)"},
	{.key = "conninfo", .type = CFG_CUSTOM, .parse = cfg_storage_conninfo,
	 .doc = "pgsql: a libpq connection string"},
	/* An hour of held requests is an outage, not a blip. */
	{.key = "outage_hold", .type = CFG_UINT,
	 .offset = offsetof(struct pgn_config, storage_outage_hold), .max = 3600,
	 .def = 30,
	 .doc = "seconds a request waits for a store that is down"},
};

static const struct cfg_section storage_section = {
	"a mapping with driver and path or conninfo", storage_fields,
	CFG_N(storage_fields), cfg_storage_finish};

/* ---- limits -------------------------------------------------------------- */

/* Sane ranges: below the minimum the server cannot work with clients, above
 * the maximum memory is no longer bounded in practice. */
#define LIMIT(key_, type_, min_, max_, def_, doc_)                             \
	{.key = #key_, .type = type_,                                          \
	 .offset = offsetof(struct pgn_cfg_limits, key_), .min = min_,         \
	 .max = max_, .def = def_, .doc = doc_}

/* clang-format off */
static const struct cfg_field limit_fields[] = {
	LIMIT(max_stanza_size, CFG_SIZE, 1024, 16ul << 20, 262144,
	      "bytes of one stanza"),
	LIMIT(max_depth, CFG_UINT, 4, 256, 32, "element depth in a stanza"),
	LIMIT(max_attrs, CFG_UINT, 8, 1024, 64, "attributes of one element"),
	LIMIT(max_children, CFG_UINT, 16, 1048576, 4096,
	      "element children of one element"),
	LIMIT(negotiation_timeout, CFG_UINT, 1, 3600, 30,
	      "seconds to authenticate and bind"),
	LIMIT(idle_timeout, CFG_UINT, 10, 86400, 600,
	      "seconds without any byte before a stream is closed"),
	LIMIT(keepalive_interval, CFG_UINT, 5, 86400, 120,
	      "seconds between whitespace pings"),
	LIMIT(auth_fail_delay_ms, CFG_UINT, 0, 60000, 1000,
	      "base delay after a SASL failure, per address"),
	LIMIT(max_sessions_per_user, CFG_UINT, 1, 10000, 100,
	      "sessions of one account"),
	LIMIT(ping_interval, CFG_UINT, 0, 86400, 300,
	      "idle seconds before an XEP-0199 ping; 0 off"),
	LIMIT(ping_timeout, CFG_UINT, 1, 3600, 60,
	      "seconds to answer that ping"),
	LIMIT(resume_timeout, CFG_UINT, 0, 86400, 300,
	      "seconds a session waits for XEP-0198 resumption; 0 none"),
	LIMIT(max_unacked, CFG_UINT, 10, 1000000, 5000,
	      "stanzas queued for a client's ack"),
	LIMIT(max_connections_per_ip, CFG_UINT, 0, 10000000, 100,
	      "connections per IPv4 address or IPv6 /64; 0 no limit"),
	LIMIT(max_connections, CFG_UINT, 0, 10000000, 0,
	      "connections in all; 0: the descriptor limit less a reserve"),
	LIMIT(max_unacked_bytes, CFG_SIZE, 65536, 1ul << 30, 8ul << 20,
	      "bytes queued for a client's ack, per session"),
	LIMIT(max_unacked_bytes_per_account, CFG_SIZE, 65536, 1ul << 30,
	      32ul << 20, "the same summed over an account's sessions"),
};
/* clang-format on */

static const struct cfg_section limits_section = {
	"a mapping of limit: number", limit_fields, CFG_N(limit_fields), NULL};

/* ---- log ----------------------------------------------------------------- */

static const struct cfg_choice log_levels[] = {
	{"error", NULL}, {"warn", NULL},	{"info", NULL},
	{"debug", NULL}, {"warning", "warn"}, /* the log module's spelling */
	{NULL, NULL}};

static int
cfg_log_file(struct cfg_parse *p, yaml_node_t *v, const char *what,
	     int keyline, void *base)
{
	struct pgn_config *cfg = base;

	/* "-" is the log module's name for stderr, not a file. */
	if (v->type == YAML_SCALAR_NODE && strcmp(cfg_scalar(v), "-") == 0)
		return 0;
	return cfg_path(p, v, what, &cfg->log_file);
}

static const struct cfg_field log_fields[] = {
	{.key = "level", .type = CFG_CHOICE_NAME,
	 .offset = offsetof(struct pgn_config, log_level),
	 .choices = log_levels, .noun = "level",
	 .doc = "error, warn, info (default) or debug"},
	{.key = "file", .type = CFG_CUSTOM, .parse = cfg_log_file,
	 .doc = "the log file (default, or -: stderr)"},
};

static const struct cfg_section log_section = {
	"a mapping with level and file", log_fields, CFG_N(log_fields), NULL};

/* ---- modules ------------------------------------------------------------- */


static void
cfg_module_clear(struct pgn_cfg_module *m)
{
	size_t i;

	for (i = 0; i < m->nopts; i++) {
		free(m->opts[i].key);
		free(m->opts[i].value);
	}
	free(m->opts);
	free(m->name);
	memset(m, 0, sizeof(*m));
}

static void
cfg_modlist_clear(struct cfg_modlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		cfg_module_clear(&l->mods[i]);
	free(l->mods);
	l->mods = NULL;
	l->n = 0;
}

/* Appends copies of key and value to m's options, whose array has room
 * for one more.  Counted before the copies are checked, so that
 * cfg_module_clear frees whatever part was made.  0 or -ENOMEM. */
static int
cfg_module_add_opt(struct pgn_cfg_module *m, const char *key,
		   const char *value, int line, int list)
{
	struct pgn_cfg_opt *o = &m->opts[m->nopts++];

	o->key = strdup(key);
	o->value = strdup(value);
	o->line = line;
	o->list = list;
	return o->key == NULL || o->value == NULL ? -ENOMEM : 0;
}

/* A module option written as a sequence of scalars ([a, b] or "- a"
 * lines): its items joined with newlines into *out (malloc'ed), for a
 * list option.  0, or the cfg_fail()/cfg_oom() code. */
static int
cfg_module_opt_list(struct cfg_parse *p, yaml_node_t *v, const char *what,
		    char **out)
{
	yaml_node_item_t *it;
	size_t len = 1, o = 0;
	char got[96];

	for (it = v->data.sequence.items.start;
	     it < v->data.sequence.items.top; it++) {
		yaml_node_t *e = cfg_node(p, *it);

		if (e->type != YAML_SCALAR_NODE) {
			cfg_describe(e, got, sizeof(got));
			return cfg_fail(p, cfg_line(e),
					"%s: expected a list of scalars, got "
					"%s in it", what, got);
		}
		if (strlen(cfg_scalar(e)) != e->data.scalar.length ||
		    strchr(cfg_scalar(e), '\n') != NULL)
			return cfg_fail(p, cfg_line(e),
					"%s: an item must not contain a NUL "
					"or newline character", what);
		len += e->data.scalar.length + 1;
	}
	if ((*out = malloc(len)) == NULL)
		return cfg_oom(p);
	(*out)[0] = '\0';
	for (it = v->data.sequence.items.start;
	     it < v->data.sequence.items.top; it++) {
		const char *s = cfg_scalar(cfg_node(p, *it));
		size_t n = strlen(s);

		if (o > 0)
			(*out)[o++] = '\n';
		memcpy(*out + o, s, n + 1);
		o += n;
	}
	return 0;
}

/* Deep copy of src's options into dst (whose options must be empty). */
static int
cfg_module_copy_opts(struct pgn_cfg_module *dst,
		     const struct pgn_cfg_module *src)
{
	size_t i;

	if (src->nopts == 0)
		return 0;
	dst->opts = calloc(src->nopts, sizeof(*dst->opts));
	if (dst->opts == NULL)
		return -ENOMEM;
	for (i = 0; i < src->nopts; i++)
		if (cfg_module_add_opt(dst, src->opts[i].key,
				       src->opts[i].value,
				       src->opts[i].line,
				       src->opts[i].list) < 0)
			return -ENOMEM;
	return 0;
}

static bool
cfg_module_name_ok(const char *name)
{
	size_t len = strlen(name);

	return len > 4 && len <= CFG_MODULE_NAME_MAX &&
	       strncmp(name, "mod_", 4) == 0 &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") == len;
}

/* One module's options: null or a mapping of scalars. */
static int
cfg_parse_module_opts(struct cfg_parse *p, yaml_node_t *n, const char *what,
		      struct pgn_cfg_module *m)
{
	yaml_node_t *map;
	char sub[512], got[96];
	size_t count, i;
	int rc;

	rc = cfg_want_keyed_map(p, n, what,
				"a mapping of option: value (or {} for none)",
				&map, &count);
	if (rc < 0 || count == 0)
		return rc;
	m->opts = calloc(count, sizeof(*m->opts));
	if (m->opts == NULL)
		return cfg_oom(p);
	for (i = 0; i < count; i++) {
		yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
		yaml_node_t *k = cfg_node(p, pair->key);
		yaml_node_t *v = cfg_node(p, pair->value);

		cfg_name(sub, sizeof(sub), "%s.%s", what, cfg_scalar(k));
		if (v->type == YAML_SEQUENCE_NODE) {
			char *joined = NULL;

			rc = cfg_module_opt_list(p, v, sub, &joined);
			if (rc < 0)
				return rc;
			rc = cfg_module_add_opt(m, cfg_scalar(k), joined,
						cfg_line(k), 1);
			free(joined);
			if (rc < 0)
				return cfg_oom(p);
			continue;
		}
		if (v->type == YAML_MAPPING_NODE) {
			cfg_describe(v, got, sizeof(got));
			return cfg_fail(p, cfg_line(v),
					"%s: nested values are not supported "
					"yet (expected a scalar value such as "
					"a string, number or true/false, or a "
					"list of them, got %s)",
					sub, got);
		}
		if (strlen(cfg_scalar(v)) != v->data.scalar.length)
			return cfg_fail(p, cfg_line(v),
					"%s: must not contain a NUL character",
					sub);
		/* Kept as written ("true", "30", "~"): the module knows
		 * what type it wants and reports its own errors. */
		if (cfg_module_add_opt(m, cfg_scalar(k), cfg_scalar(v),
				       cfg_line(k), 0) < 0)
			return cfg_oom(p);
	}
	return 0;
}

/* A `modules:` mapping (global or of one host) into list. */
static int
cfg_parse_modules(struct cfg_parse *p, yaml_node_t *n, const char *what,
		  struct cfg_modlist *list)
{
	yaml_node_t *map;
	char sub[1200], got[96];
	size_t count, i;
	int rc;

	rc = cfg_want_keyed_map(p, n, what,
				"a mapping of module names (mod_...) to "
				"options",
				&map, &count);
	if (rc < 0 || count == 0)
		return rc;
	list->mods = calloc(count, sizeof(*list->mods));
	if (list->mods == NULL)
		return cfg_oom(p);
	for (i = 0; i < count; i++) {
		yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
		yaml_node_t *k = cfg_node(p, pair->key);
		struct pgn_cfg_module *m = &list->mods[list->n];

		if (!cfg_module_name_ok(cfg_scalar(k))) {
			cfg_quote(cfg_scalar(k), k->data.scalar.length, '\'',
				  got, sizeof(got));
			return cfg_fail(p, cfg_line(k),
					"%s: invalid module name %s (expected "
					"'mod_' followed by lowercase letters, "
					"digits or '_', at most %d characters, "
					"e.g. mod_ping)",
					what, got, CFG_MODULE_NAME_MAX);
		}
		list->n++;
		m->line = cfg_line(k);
		m->name = strdup(cfg_scalar(k));
		if (m->name == NULL)
			return cfg_oom(p);
		cfg_name(sub, sizeof(sub), "%s.%s", what, m->name);
		rc = cfg_parse_module_opts(p, cfg_node(p, pair->value), sub, m);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Appends a deep copy of m to h's modules, whose array has room for one
 * more (counted first: cfg_module_clear frees a partial copy). */
static int
cfg_host_add_module(struct pgn_cfg_host *h, const struct pgn_cfg_module *m)
{
	struct pgn_cfg_module *dst = &h->modules[h->nmodules++];

	dst->name = strdup(m->name);
	dst->line = m->line;
	if (dst->name == NULL || cfg_module_copy_opts(dst, m) < 0)
		return -ENOMEM;
	return 0;
}

/* The host's list: the global modules in their order, then the host's own;
 * a host entry with the name of a global module replaces its options. */
static int
cfg_merge_modules(struct cfg_parse *p, struct pgn_cfg_host *h,
		  const struct cfg_modlist *own)
{
	size_t cap = p->global.n + own->n, i, j;

	if (cap == 0)
		return 0;
	h->modules = calloc(cap, sizeof(*h->modules));
	if (h->modules == NULL)
		return cfg_oom(p);
	for (i = 0; i < p->global.n; i++) {
		const struct pgn_cfg_module *src = &p->global.mods[i];
		const struct pgn_cfg_module *use = src;

		for (j = 0; j < own->n; j++)
			if (strcmp(own->mods[j].name, src->name) == 0)
				use = &own->mods[j];
		if (cfg_host_add_module(h, use) < 0)
			return cfg_oom(p);
	}
	for (j = 0; j < own->n; j++) {
		const struct pgn_cfg_module *src = &own->mods[j];
		bool global = false;

		for (i = 0; i < p->global.n; i++)
			if (strcmp(p->global.mods[i].name, src->name) == 0)
				global = true;
		if (!global && cfg_host_add_module(h, src) < 0)
			return cfg_oom(p);
	}
	return 0;
}
static int
cfg_parse_global_modules(struct cfg_parse *p, yaml_node_t *v,
			 const char *what, int keyline, void *base)
{
	return cfg_parse_modules(p, v, what, &p->global);
}

/* host_config.HOST.modules: base is the host's struct cfg_modlist. */
static int
cfg_parse_host_modules(struct cfg_parse *p, yaml_node_t *v, const char *what,
		       int keyline, void *base)
{
	return cfg_parse_modules(p, v, what, base);
}

static const struct cfg_field host_fields[] = {
	{.key = "modules", .type = CFG_CUSTOM, .parse = cfg_parse_host_modules,
	 .doc = "more modules for this host, or other options for global ones"},
};

static const struct cfg_section host_section = {
	"a mapping with 'modules'", host_fields, CFG_N(host_fields), NULL};

static int
cfg_parse_host_config(struct cfg_parse *p, yaml_node_t *n, const char *unused,
		      int keyline, void *base)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *map;
	char what[CFG_NAME_MAX], got[96], hosts[256];
	size_t count, i, j, h;
	int rc;

	rc = cfg_want_keyed_map(p, n, "host_config",
				"a mapping of host names to their settings",
				&map, &count);
	if (rc < 0)
		return rc;
	for (i = 0; i < count; i++) {
		yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
		yaml_node_t *k = cfg_node(p, pair->key);
		yaml_node_t *v = cfg_node(p, pair->value);
		char *name = NULL;

		rc = cfg_domain(p, k, "host_config", &name);
		if (rc < 0)
			return rc;
		for (h = 0; h < cfg->nhosts; h++)
			if (strcmp(cfg->hosts[h].name, name) == 0)
				break;
		if (h == cfg->nhosts) {
			const char *names[8];
			size_t nn = cfg->nhosts < 8 ? cfg->nhosts : 8;

			for (j = 0; j < nn; j++)
				names[j] = cfg->hosts[j].name;
			cfg_join(names, nn, hosts, sizeof(hosts));
			cfg_quote(cfg_scalar(k), k->data.scalar.length, '\'',
				  got, sizeof(got));
			free(name);
			return cfg_fail(p, cfg_line(k),
					"host_config: %s is not in hosts "
					"(hosts: %s%s); add it to hosts first",
					got, hosts,
					cfg->nhosts > nn ? ", ..." : "");
		}
		/* Two spellings of one host ("Example.org", "example.org")
		 * pass the duplicate-key check but are the same host. */
		for (j = 0; j < i; j++) {
			yaml_node_t *k2 = cfg_node(
				p, map->data.mapping.pairs.start[j].key);
			char *n2 = NULL;

			rc = cfg_domain(p, k2, "host_config", &n2);
			if (rc < 0) {
				free(name);
				return rc;
			}
			rc = strcmp(n2, name);
			free(n2);
			if (rc == 0) {
				rc = cfg_fail(p, cfg_line(k),
					      "host_config: '%s' is configured "
					      "twice (first at line %d)",
					      name, cfg_line(k2));
				free(name);
				return rc;
			}
		}
		cfg_name(what, sizeof(what), "host_config.%s", name);
		free(name);
		rc = cfg_load_section(p, &host_section, v, what, cfg_line(k),
				      &p->per_host[h], true);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- the top level ------------------------------------------------------- */

static int
cfg_ctl_socket(struct cfg_parse *p, yaml_node_t *v, const char *what,
	       int keyline, void *base)
{
	struct pgn_config *cfg = base;
	int rc;

	rc = cfg_path(p, v, what, &cfg->ctl_socket);
	if (rc < 0)
		return rc;
	return cfg_check_sun_path(p, keyline, what, cfg->ctl_socket);
}

/* In the order they are read (hosts first: later sections refer to it)
 * and listed in messages. */
static const struct cfg_field root_fields[] = {
	{.key = "hosts", .type = CFG_CUSTOM, .parse = cfg_parse_hosts,
	 .required = true, .doc = "a list of at least one domain name"},
	{.key = "listen", .type = CFG_LIST,
	 .offset = offsetof(struct pgn_config, listen), .list = &listen_list,
	 .doc = "the listeners"},
	{.key = "certfiles", .type = CFG_LIST,
	 .offset = offsetof(struct pgn_config, certfiles),
	 .list = &certfile_list,
	 .doc = "PEM files, each a certificate chain and its key"},
	{.key = "storage", .type = CFG_SECTION, .section = &storage_section,
	 .doc = "where accounts and data are kept"},
	{.key = "components", .type = CFG_LIST,
	 .offset = offsetof(struct pgn_config, components),
	 .list = &component_list, .doc = "external components (XEP-0114)"},
	{.key = "modules", .type = CFG_CUSTOM,
	 .parse = cfg_parse_global_modules,
	 .doc = "modules of every host, with their options"},
	{.key = "host_config", .type = CFG_CUSTOM,
	 .parse = cfg_parse_host_config,
	 .doc = "per host: more modules, or other options"},
	{.key = "limits", .type = CFG_SECTION,
	 .offset = offsetof(struct pgn_config, limits),
	 .section = &limits_section, .doc = "bounds on what peers may use"},
	{.key = "log", .type = CFG_SECTION, .section = &log_section,
	 .doc = "log level and file"},
	{.key = "ctl_socket", .type = CFG_CUSTOM, .parse = cfg_ctl_socket,
	 .doc = "pigeonctl's socket (default " CFG_DEFAULT_CTL
		" beside the configuration)"},
	{.key = "module_path", .type = CFG_PATH,
	 .offset = offsetof(struct pgn_config, module_path),
	 .doc = "where modules are loaded from"},
	{.key = "schema_dir", .type = CFG_PATH,
	 .offset = offsetof(struct pgn_config, schema_dir),
	 .doc = "the database migrations"},
	{.key = "pid_file", .type = CFG_PATH,
	 .offset = offsetof(struct pgn_config, pid_file),
	 .doc = "where pigeond writes its process id"},
};

static const struct cfg_section root_section = {
	"a mapping of keys (hosts, listen, ...)", root_fields,
	CFG_N(root_fields), NULL};

static int
cfg_parse_root(struct cfg_parse *p, yaml_node_t *root)
{
	char got[96];

	if (root->type != YAML_MAPPING_NODE) {
		cfg_describe(root, got, sizeof(got));
		return cfg_fail(p, cfg_line(root),
				"the top level must be a mapping of keys "
				"(hosts, listen, ...), got %s",
				got);
	}
	return cfg_load_section(p, &root_section, root, NULL, cfg_line(root),
				p->cfg, false);
}

/* ---- defaults ------------------------------------------------------------ */

static int
cfg_set_default(struct cfg_parse *p, char **field, const char *value)
{
	if (*field != NULL)
		return 0;
	*field = strdup(value);
	return *field ? 0 : cfg_oom(p);
}

/* An environment override (used to run from the build tree) made absolute
 * against the working directory, or the compiled-in default. */
static int
cfg_dir_default(struct cfg_parse *p, char **field, const char *env,
		const char *builtin)
{
	const char *e = getenv(env);
	char *cwd;

	if (*field != NULL)
		return 0;
	if (e == NULL || e[0] == '\0' || e[0] == '/')
		return cfg_set_default(p, field, e && e[0] ? e : builtin);
	cwd = getcwd(NULL, 0);
	if (cwd == NULL)
		return cfg_fail(p, 0, "%s: cannot resolve '%s': %s", env, e,
				strerror(errno));
	*field = cfg_absolute(cwd, e);
	free(cwd);
	return *field ? 0 : cfg_oom(p);
}

static int
cfg_finish(struct cfg_parse *p)
{
	struct pgn_config *cfg = p->cfg;
	size_t i;
	int rc;

	if ((rc = cfg_set_default(p, &cfg->storage_driver,
				  CFG_DEFAULT_DRIVER)) < 0 ||
	    (rc = cfg_set_default(p, &cfg->log_level, CFG_DEFAULT_LOG_LEVEL)) <
		    0)
		return rc;
	if (strcmp(cfg->storage_driver, "sqlite") == 0 &&
	    cfg->storage_path == NULL) {
		cfg->storage_path = cfg_absolute(p->dir, CFG_DEFAULT_DB);
		if (cfg->storage_path == NULL)
			return cfg_oom(p);
	}
	if (cfg->ctl_socket == NULL) {
		cfg->ctl_socket = cfg_absolute(p->dir, CFG_DEFAULT_CTL);
		if (cfg->ctl_socket == NULL)
			return cfg_oom(p);
		rc = cfg_check_sun_path(p, 0, "ctl_socket (default)",
					cfg->ctl_socket);
		if (rc < 0)
			return rc;
	}
	if ((rc = cfg_dir_default(p, &cfg->module_path, "PIGEON_MODULE_PATH",
				  PGN_MODULE_DIR)) < 0 ||
	    (rc = cfg_dir_default(p, &cfg->schema_dir, "PIGEON_SCHEMA_DIR",
				  PGN_SCHEMA_DIR)) < 0)
		return rc;
	for (i = 0; i < cfg->nhosts; i++) {
		rc = cfg_merge_modules(p, &cfg->hosts[i], &p->per_host[i]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- loading ------------------------------------------------------------- */

/* The whole file in memory: libyaml reader errors give a byte offset, and
 * the line is found by counting newlines in it. */
static int
cfg_read_file(struct cfg_parse *p, char **buf, size_t *len)
{
	FILE *fp;
	struct stat st;
	char *data = NULL, *grown;
	size_t n = 0, cap = 0, got;
	int rc;

	*buf = NULL;
	*len = 0;
	fp = fopen(p->file, "rb");
	if (fp == NULL) {
		rc = -errno;
		goto fail;
	}
	if (fstat(fileno(fp), &st) < 0) {
		rc = -errno;
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		goto fail;
	}
	for (;;) {
		if (n == cap) {
			if (cap > CFG_FILE_MAX) {
				rc = -EFBIG;
				goto fail;
			}
			cap = cap ? cap * 2 : 8192;
			grown = realloc(data, cap);
			if (grown == NULL) {
				rc = -ENOMEM;
				goto fail;
			}
			data = grown;
		}
		got = fread(data + n, 1, cap - n, fp);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(fp)) {
		rc = errno ? -errno : -EIO;
		goto fail;
	}
	fclose(fp);
	*buf = data;
	*len = n;
	return 0;
fail:
	if (rc == -EFBIG)
		cfg_fail(p, 0, "cannot read: larger than %u bytes",
			 CFG_FILE_MAX);
	else
		cfg_fail(p, 0, "cannot read: %s", strerror(-rc));
	if (fp != NULL)
		fclose(fp);
	free(data);
	return rc;
}

static int
cfg_yaml_error(struct cfg_parse *p, const yaml_parser_t *parser,
	       const char *buf, size_t len)
{
	const char *problem = parser->problem ? parser->problem : "error";
	size_t i, line = 1;

	switch (parser->error) {
	case YAML_MEMORY_ERROR:
		return cfg_oom(p);
	case YAML_READER_ERROR:
		for (i = 0; i < parser->problem_offset && i < len; i++)
			if (buf[i] == '\n')
				line++;
		return cfg_fail(p, (int)line,
				"YAML error: %s (byte offset %zu); the file "
				"must be UTF-8 text",
				problem, parser->problem_offset);
	default:
		break;
	}
	if (parser->context != NULL)
		return cfg_fail(p, (int)parser->problem_mark.line + 1,
				"YAML syntax error: %s (%s at line %d)",
				problem, parser->context,
				(int)parser->context_mark.line + 1);
	return cfg_fail(p, (int)parser->problem_mark.line + 1,
			"YAML syntax error: %s", problem);
}

int
pgn_config_load(const char *path, struct pgn_config **out, char *err,
		size_t errlen)
{
	struct cfg_parse p = {0};
	struct pgn_config *cfg = NULL;
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	bool parser_ok = false, doc_ok = false;
	yaml_node_t *root, *extra_root;
	char *buf = NULL;
	size_t len = 0, i;
	int rc, extra_line;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	p.file = path;
	p.err = err;
	p.errlen = errlen;

	rc = cfg_read_file(&p, &buf, &len);
	if (rc < 0)
		goto fail;
	rc = cfg_dir_of(path, &p.dir);
	if (rc < 0) {
		cfg_fail(&p, 0, "cannot resolve its directory: %s",
			 strerror(-rc));
		goto fail;
	}
	if (!yaml_parser_initialize(&parser)) {
		rc = cfg_oom(&p);
		goto fail;
	}
	parser_ok = true;
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = cfg_yaml_error(&p, &parser, buf, len);
		goto fail;
	}
	doc_ok = true;
	p.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (root == NULL) {
		rc = cfg_fail(&p, 1,
			      "the file is empty (expected a mapping with at "
			      "least 'hosts')");
		goto fail;
	}
	/* A second document would be silently ignored otherwise. */
	if (!yaml_parser_load(&parser, &extra)) {
		rc = cfg_yaml_error(&p, &parser, buf, len);
		goto fail;
	}
	extra_root = yaml_document_get_root_node(&extra);
	extra_line = extra_root ? (int)extra.start_mark.line + 1 : 0;
	yaml_document_delete(&extra);
	if (extra_line > 0) {
		rc = cfg_fail(&p, extra_line,
			      "only one YAML document is allowed (remove the "
			      "'---' and what follows)");
		goto fail;
	}

	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL) {
		rc = cfg_oom(&p);
		goto fail;
	}
	p.cfg = cfg;
	cfg_defaults(&root_section, cfg);
	cfg->path = strdup(path);
	if (cfg->path == NULL) {
		rc = cfg_oom(&p);
		goto fail;
	}
	rc = cfg_parse_root(&p, root);
	if (rc < 0)
		goto fail;
	rc = cfg_finish(&p);
	if (rc < 0)
		goto fail;
	*out = cfg;
	cfg = NULL;
	rc = 0;
fail:
	cfg_modlist_clear(&p.global);
	if (p.per_host != NULL && p.cfg != NULL)
		for (i = 0; i < p.cfg->nhosts; i++)
			cfg_modlist_clear(&p.per_host[i]);
	free(p.per_host);
	pgn_config_free(cfg);
	if (doc_ok)
		yaml_document_delete(&doc);
	if (parser_ok)
		yaml_parser_delete(&parser);
	free(p.dir);
	free(buf);
	return rc;
}

/* Wipes before freeing so that the shared secret does not linger in the
 * heap; volatile keeps the compiler from dropping the dead stores. */
static void
cfg_free_secret(char *s)
{
	volatile char *v = s;

	if (s == NULL)
		return;
	while (*v != '\0')
		*v++ = '\0';
	free(s);
}

void
pgn_config_free(struct pgn_config *cfg)
{
	size_t i, j;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nhosts; i++) {
		for (j = 0; j < cfg->hosts[i].nmodules; j++)
			cfg_module_clear(&cfg->hosts[i].modules[j]);
		free(cfg->hosts[i].modules);
		free(cfg->hosts[i].name);
	}
	free(cfg->hosts);
	for (i = 0; i < cfg->nlisten; i++)
		free(cfg->listen[i].ip);
	free(cfg->listen);
	for (i = 0; i < cfg->ncertfiles; i++)
		free(cfg->certfiles[i]);
	free(cfg->certfiles);
	for (i = 0; i < cfg->ncomponents; i++) {
		free(cfg->components[i].domain);
		cfg_free_secret(cfg->components[i].secret);
	}
	free(cfg->components);
	free(cfg->storage_driver);
	free(cfg->storage_path);
	free(cfg->storage_conninfo);
	free(cfg->log_level);
	free(cfg->log_file);
	free(cfg->ctl_socket);
	free(cfg->module_path);
	free(cfg->schema_dir);
	free(cfg->pid_file);
	free(cfg->path);
	free(cfg);
}

const struct pgn_cfg_host *
pgn_config_host(const struct pgn_config *cfg, const char *name)
{
	size_t i;

	if (cfg == NULL || name == NULL)
		return NULL;
	/* Host names are stored nameprepped and lowercase; callers pass a
	 * prepared JID domain, so a byte comparison is enough. */
	for (i = 0; i < cfg->nhosts; i++)
		if (strcmp(cfg->hosts[i].name, name) == 0)
			return &cfg->hosts[i];
	return NULL;
}

const char *
pgn_cfg_module_opt(const struct pgn_cfg_module *mod, const char *key)
{
	size_t i;

	if (mod == NULL || key == NULL)
		return NULL;
	for (i = 0; i < mod->nopts; i++)
		if (strcmp(mod->opts[i].key, key) == 0)
			return mod->opts[i].value;
	return NULL;
}
