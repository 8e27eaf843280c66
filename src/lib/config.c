/* pigeon.yml loader: libyaml's document API builds a node tree, which is
 * then checked against a fixed schema and copied into plain structs.
 *
 * Every error names FILE:LINE and the dotted key ("listen[1].port"), says
 * what was found and what is expected: the admin reads it once, at start,
 * and must be able to fix the file without reading the source.  The
 * document tree is walked only where the schema says so, so aliases cannot
 * make the walk explode. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif

#include "pigeon/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <stringprep.h>
#include <yaml.h>

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

/* RFC 7622 limits a domainpart to 1023 bytes; DNS limits a label to 63. */
#define CFG_DOMAIN_MAX 1023
#define CFG_LABEL_MAX 63
#define CFG_MODULE_NAME_MAX 64
/* A config file is written by hand; anything larger is a mistake. */
#define CFG_FILE_MAX (16u * 1024 * 1024)

#define CFG_N(a) (sizeof(a) / sizeof((a)[0]))

/* Modules of one scope (global or one host) before they are merged. */
struct cfg_modlist {
	struct pgn_cfg_module *mods;
	size_t n;
};

struct cfg_parse {
	const char *file;
	char *dir; /* absolute directory of the file */
	yaml_document_t *doc;
	char *err;
	size_t errlen;
	struct pgn_config *cfg;
	struct cfg_modlist global;
	struct cfg_modlist *per_host; /* cfg->nhosts entries */
};

/* clang-format off */
static const char *const top_keys[] = {
	"hosts", "listen", "certfiles", "storage", "components", "modules",
	"host_config", "limits", "log", "ctl_socket", "module_path",
	"schema_dir", "pid_file",
};
/* clang-format on */
static const char *const listen_keys[] = {"port", "ip", "module",
					  "starttls_required"};
static const char *const listen_modules[] = {"c2s", "c2s_tls", "component"};
static const char *const storage_keys[] = {"driver", "path", "conninfo",
					   "outage_hold"};
static const char *const component_keys[] = {"domain", "secret"};
static const char *const host_config_keys[] = {"modules"};
static const char *const log_keys[] = {"level", "file"};
static const char *const log_levels[] = {"error", "warn", "info", "debug"};

/* Sane ranges: below the minimum the server cannot work with clients, above
 * the maximum memory is no longer bounded in practice. */
struct cfg_limit_def {
	const char *key;
	unsigned long min;
	unsigned long max;
	size_t offset;
	bool is_size;
};

static const struct cfg_limit_def limit_defs[] = {
	{"max_stanza_size", 1024, 16ul * 1024 * 1024,
	 offsetof(struct pgn_cfg_limits, max_stanza_size), true},
	{"max_depth", 4, 256, offsetof(struct pgn_cfg_limits, max_depth),
	 false},
	{"max_attrs", 8, 1024, offsetof(struct pgn_cfg_limits, max_attrs),
	 false},
	{"max_children", 16, 1048576,
	 offsetof(struct pgn_cfg_limits, max_children), false},
	{"negotiation_timeout", 1, 3600,
	 offsetof(struct pgn_cfg_limits, negotiation_timeout), false},
	{"idle_timeout", 10, 86400,
	 offsetof(struct pgn_cfg_limits, idle_timeout), false},
	{"keepalive_interval", 5, 86400,
	 offsetof(struct pgn_cfg_limits, keepalive_interval), false},
	{"auth_fail_delay_ms", 0, 60000,
	 offsetof(struct pgn_cfg_limits, auth_fail_delay_ms), false},
	{"max_sessions_per_user", 1, 10000,
	 offsetof(struct pgn_cfg_limits, max_sessions_per_user), false},
	{"ping_interval", 0, 86400,
	 offsetof(struct pgn_cfg_limits, ping_interval), false},
	{"ping_timeout", 1, 3600,
	 offsetof(struct pgn_cfg_limits, ping_timeout), false},
	{"resume_timeout", 0, 86400,
	 offsetof(struct pgn_cfg_limits, resume_timeout), false},
	{"max_unacked", 10, 1000000,
	 offsetof(struct pgn_cfg_limits, max_unacked), false},
	{"max_connections_per_ip", 0, 10000000,
	 offsetof(struct pgn_cfg_limits, max_connections_per_ip), false},
	{"max_connections", 0, 10000000,
	 offsetof(struct pgn_cfg_limits, max_connections), false},
	{"max_unacked_bytes", 65536, 1ul << 30,
	 offsetof(struct pgn_cfg_limits, max_unacked_bytes), true},
	{"max_unacked_bytes_per_account", 65536, 1ul << 30,
	 offsetof(struct pgn_cfg_limits, max_unacked_bytes_per_account), true},
};

/* ---- messages ------------------------------------------------------------ */

static int
cfg_line(const yaml_node_t *n)
{
	return (int)n->start_mark.line + 1;
}

/* Writes "FILE:LINE: message" (or "FILE: message" when line is 0) and
 * returns -EINVAL so that callers can `return cfg_fail(...)`. */
static int cfg_fail(struct cfg_parse *p, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
cfg_fail(struct cfg_parse *p, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->err == NULL || p->errlen == 0)
		return -EINVAL;
	if (line > 0)
		n = snprintf(p->err, p->errlen, "%s:%d: ", p->file, line);
	else
		n = snprintf(p->err, p->errlen, "%s: ", p->file);
	if (n < 0 || (size_t)n >= p->errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Builds a dotted key name for messages ("listen[1].port"); a name cut
 * short only shortens a message, so truncation is fine here. */
static void cfg_name(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
cfg_name(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static int
cfg_oom(struct cfg_parse *p)
{
	cfg_fail(p, 0, "out of memory");
	return -ENOMEM;
}

static bool
cfg_is_null(const yaml_node_t *n)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE)
		return false;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = (const char *)n->data.scalar.value;
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* Quotes s for a message: escapes, and cuts long values at a UTF-8
 * character boundary so the message stays one readable line. */
static void
cfg_quote(const char *s, size_t len, char q, char *buf, size_t buflen)
{
	const size_t show = 48;
	size_t o = 0, i;
	bool cut = false;

	if (len > show) {
		len = show;
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
		cut = true;
	}
	if (buflen < 8) {
		if (buflen > 0)
			buf[0] = '\0';
		return;
	}
	buf[o++] = q;
	for (i = 0; i < len && o + 8 < buflen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == (unsigned char)q || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x",
					      c);
		} else {
			buf[o++] = (char)c;
		}
	}
	if (cut && o + 5 < buflen) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = q;
	buf[o] = '\0';
}

/* What a node is, for "got ..." in messages. */
static void
cfg_describe(const yaml_node_t *n, char *buf, size_t len)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		snprintf(buf, len, "a mapping");
		break;
	case YAML_SEQUENCE_NODE:
		snprintf(buf, len, "a list");
		break;
	case YAML_SCALAR_NODE:
		if (cfg_is_null(n))
			snprintf(buf, len, "nothing (null)");
		else
			cfg_quote((const char *)n->data.scalar.value,
				  n->data.scalar.length, '"', buf, len);
		break;
	default:
		snprintf(buf, len, "nothing");
		break;
	}
}

static void
cfg_join(const char *const *words, size_t n, char *buf, size_t len)
{
	size_t o = 0, i;

	buf[0] = '\0';
	for (i = 0; i < n && o < len; i++) {
		int w = snprintf(buf + o, len - o, "%s%s", i ? ", " : "",
				 words[i]);
		if (w < 0)
			break;
		o += (size_t)w;
	}
}

/* Edit distance, for "did you mean"; only short keys are compared. */
static size_t
cfg_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t prev[33], cur[33];

	if (la > 32 || lb > 32)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		prev[j] = j;
	for (i = 1; i <= la; i++) {
		cur[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			size_t m = del < ins ? del : ins;

			cur[j] = m < sub ? m : sub;
		}
		memcpy(prev, cur, sizeof(prev));
	}
	return prev[lb];
}

/* ---- node access --------------------------------------------------------- */

static yaml_node_t *
cfg_node(struct cfg_parse *p, int index)
{
	return yaml_document_get_node(p->doc, index);
}

static const char *
cfg_scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static size_t
cfg_map_len(const yaml_node_t *n)
{
	return (size_t)(n->data.mapping.pairs.top -
			n->data.mapping.pairs.start);
}

static size_t
cfg_seq_len(const yaml_node_t *n)
{
	return (size_t)(n->data.sequence.items.top -
			n->data.sequence.items.start);
}

/* Checks that map's keys are non-null strings without duplicates and, when
 * allowed is given, that each is one of them.  what NULL means the top
 * level. */
static int
cfg_check_keys(struct cfg_parse *p, const yaml_node_t *map, const char *what,
	       const char *const *allowed, size_t nallowed)
{
	size_t n = cfg_map_len(map), i, j, k;
	char got[96], list[256];

	for (i = 0; i < n; i++) {
		yaml_node_t *key =
			cfg_node(p, map->data.mapping.pairs.start[i].key);
		const char *name;
		bool known = allowed == NULL;
		const char *near = NULL;

		if (key->type != YAML_SCALAR_NODE || cfg_is_null(key)) {
			cfg_describe(key, got, sizeof(got));
			return cfg_fail(p, cfg_line(key),
					"%s%skeys must be names, got %s",
					what ? what : "", what ? ": " : "",
					got);
		}
		name = cfg_scalar(key);
		for (j = 0; j < i; j++) {
			yaml_node_t *k2 = cfg_node(
				p, map->data.mapping.pairs.start[j].key);

			if (strcmp(cfg_scalar(k2), name) == 0) {
				cfg_quote(name, key->data.scalar.length, '\'',
					  got, sizeof(got));
				return cfg_fail(p, cfg_line(key),
						"%s%sduplicate key %s (first "
						"at line %d)",
						what ? what : "",
						what ? ": " : "", got,
						cfg_line(k2));
			}
		}
		for (k = 0; !known && k < nallowed; k++) {
			if (strcmp(name, allowed[k]) == 0)
				known = true;
			else if (cfg_distance(name, allowed[k]) <= 2)
				near = allowed[k];
		}
		if (known)
			continue;
		cfg_quote(name, key->data.scalar.length, '\'', got,
			  sizeof(got));
		cfg_join(allowed, nallowed, list, sizeof(list));
		if (what == NULL)
			return cfg_fail(p, cfg_line(key),
					"unknown top-level key %s (expected "
					"one of: %s)%s%s%s",
					got, list,
					near ? "; did you mean '" : "",
					near ? near : "", near ? "'?" : "");
		return cfg_fail(
			p, cfg_line(key),
			"%s: unknown key %s (expected one of: %s)%s%s%s", what,
			got, list, near ? "; did you mean '" : "",
			near ? near : "", near ? "'?" : "");
	}
	return 0;
}

/* Value of key in a checked mapping, or NULL; *keyline gets the key's
 * line when found. */
static yaml_node_t *
cfg_get(struct cfg_parse *p, const yaml_node_t *map, const char *key,
	int *keyline)
{
	size_t n = cfg_map_len(map), i;

	for (i = 0; i < n; i++) {
		yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
		yaml_node_t *k = cfg_node(p, pair->key);

		if (strcmp(cfg_scalar(k), key) == 0) {
			if (keyline)
				*keyline = cfg_line(k);
			return cfg_node(p, pair->value);
		}
	}
	return NULL;
}

/* A section that must be a mapping; null counts as empty (all its
 * children commented out).  Sets *map to NULL for null. */
static int
cfg_want_map(struct cfg_parse *p, yaml_node_t *n, const char *what,
	     const char *expect, yaml_node_t **map)
{
	char got[96];

	*map = NULL;
	if (cfg_is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE) {
		cfg_describe(n, got, sizeof(got));
		return cfg_fail(p, cfg_line(n), "%s: expected %s, got %s", what,
				expect, got);
	}
	*map = n;
	return 0;
}

static int
cfg_want_seq(struct cfg_parse *p, yaml_node_t *n, const char *what,
	     const char *expect, yaml_node_t **seq)
{
	char got[96];

	*seq = NULL;
	if (cfg_is_null(n))
		return 0;
	if (n->type != YAML_SEQUENCE_NODE) {
		cfg_describe(n, got, sizeof(got));
		return cfg_fail(p, cfg_line(n), "%s: expected %s, got %s", what,
				expect, got);
	}
	*seq = n;
	return 0;
}

/* A string value; a copy goes to *out (caller frees). */
static int
cfg_string(struct cfg_parse *p, const yaml_node_t *n, const char *what,
	   bool allow_empty, char **out)
{
	char got[96];

	*out = NULL;
	if (n->type != YAML_SCALAR_NODE || cfg_is_null(n)) {
		cfg_describe(n, got, sizeof(got));
		return cfg_fail(p, cfg_line(n), "%s: expected a string, got %s",
				what, got);
	}
	if (strlen(cfg_scalar(n)) != n->data.scalar.length)
		return cfg_fail(p, cfg_line(n),
				"%s: must not contain a NUL character", what);
	if (!allow_empty && n->data.scalar.length == 0)
		return cfg_fail(p, cfg_line(n),
				"%s: expected a non-empty string, got \"\"",
				what);
	*out = strdup(cfg_scalar(n));
	if (*out == NULL)
		return cfg_oom(p);
	return 0;
}

/* An unquoted decimal integer in [min, max].  Quoted numbers are refused:
 * in YAML they are strings, and accepting them would hide typos such as
 * port: "52 22". */
static int
cfg_uint(struct cfg_parse *p, const yaml_node_t *n, const char *what,
	 unsigned long min, unsigned long max, unsigned long *out)
{
	char got[96];
	bool digits = false;

	if (n->type == YAML_SCALAR_NODE) {
		const char *s = cfg_scalar(n);
		size_t len = n->data.scalar.length;

		digits = len > 0 && len <= 20 && strspn(s, "0123456789") == len;
		if (digits && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
			unsigned long v;

			errno = 0;
			v = strtoul(s, NULL, 10);
			if (errno == 0 && v >= min && v <= max) {
				*out = v;
				return 0;
			}
		}
	}
	cfg_describe(n, got, sizeof(got));
	return cfg_fail(p, cfg_line(n),
			"%s: expected an integer from %lu to %lu, got %s%s",
			what, min, max, got,
			digits && n->data.scalar.style !=
						YAML_PLAIN_SCALAR_STYLE
				? " (write numbers without quotes)"
				: "");
}

static int
cfg_bool(struct cfg_parse *p, const yaml_node_t *n, const char *what, int *out)
{
	static const char *const yes[] = {"true", "yes", "on"};
	static const char *const no[] = {"false", "no", "off"};
	char got[96];
	size_t i;

	if (n->type == YAML_SCALAR_NODE &&
	    n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		for (i = 0; i < CFG_N(yes); i++) {
			if (strcasecmp(cfg_scalar(n), yes[i]) == 0) {
				*out = 1;
				return 0;
			}
			if (strcasecmp(cfg_scalar(n), no[i]) == 0) {
				*out = 0;
				return 0;
			}
		}
	}
	cfg_describe(n, got, sizeof(got));
	return cfg_fail(p, cfg_line(n), "%s: expected true or false, got %s",
			what, got);
}

/* ---- paths --------------------------------------------------------------- */

static char *
cfg_concat(const char *a, const char *sep, const char *b)
{
	size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
	char *s = malloc(la + ls + lb + 1);

	if (s == NULL)
		return NULL;
	memcpy(s, a, la);
	memcpy(s + la, sep, ls);
	memcpy(s + la + ls, b, lb + 1);
	return s;
}

/* path made absolute against base (a directory without trailing slash). */
static char *
cfg_absolute(const char *base, const char *path)
{
	if (path[0] == '/')
		return strdup(path);
	while (path[0] == '.' && path[1] == '/') {
		path += 2;
		while (path[0] == '/')
			path++;
	}
	if (path[0] == '\0' || strcmp(path, ".") == 0)
		return strdup(base);
	return cfg_concat(strcmp(base, "/") == 0 ? "" : base, "/", path);
}

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

static int
cfg_path(struct cfg_parse *p, const yaml_node_t *n, const char *what,
	 char **out)
{
	char *s = NULL;
	int rc;

	rc = cfg_string(p, n, what, false, &s);
	if (rc < 0)
		return rc;
	*out = cfg_absolute(p->dir, s);
	free(s);
	if (*out == NULL)
		return cfg_oom(p);
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

/* ---- domains ------------------------------------------------------------- */

/* A host or component domain, prepared with nameprep (RFC 3491) so that
 * comparisons and JID routing see one spelling.  IP literals in brackets
 * are not accepted: a virtual host needs a name for its certificate. */
static int
cfg_domain(struct cfg_parse *p, const yaml_node_t *n, const char *what,
	   char **out)
{
	/* nameprep can expand (case folding of ß is "ss"); 4 bytes of room
	 * per input byte is more than any mapping needs. */
	char buf[CFG_DOMAIN_MAX * 4 + 1], got[96];
	char *s = NULL;
	const char *label;
	size_t len;
	int rc;

	*out = NULL;
	rc = cfg_string(p, n, what, true, &s);
	if (rc < 0)
		return rc;
	cfg_describe(n, got, sizeof(got));
	len = strlen(s);
	if (len == 0) {
		free(s);
		return cfg_fail(p, cfg_line(n),
				"%s: expected a domain name, got \"\"", what);
	}
	if (len > CFG_DOMAIN_MAX) {
		free(s);
		return cfg_fail(p, cfg_line(n),
				"%s: domain name %s is too long (at most %d "
				"bytes)",
				what, got, CFG_DOMAIN_MAX);
	}
	memcpy(buf, s, len + 1);
	free(s);
	rc = stringprep_nameprep_no_unassigned(buf, sizeof(buf));
	if (rc != STRINGPREP_OK)
		return cfg_fail(p, cfg_line(n),
				"%s: invalid domain name %s: %s", what, got,
				stringprep_strerror((Stringprep_rc)rc));
	len = strlen(buf);
	if (len == 0 || len > CFG_DOMAIN_MAX)
		return cfg_fail(p, cfg_line(n),
				"%s: invalid domain name %s: empty or longer "
				"than %d bytes after preparation",
				what, got, CFG_DOMAIN_MAX);
	label = buf;
	for (;;) {
		size_t l = strcspn(label, ".");
		size_t i;

		if (l == 0)
			return cfg_fail(p, cfg_line(n),
					"%s: invalid domain name %s: empty "
					"label (expected labels separated by "
					"single dots, no leading or trailing "
					"dot)",
					what, got);
		if (l > CFG_LABEL_MAX)
			return cfg_fail(p, cfg_line(n),
					"%s: invalid domain name %s: a label "
					"is longer than %d bytes",
					what, got, CFG_LABEL_MAX);
		if (label[0] == '-' || label[l - 1] == '-')
			return cfg_fail(p, cfg_line(n),
					"%s: invalid domain name %s: a label "
					"starts or ends with '-'",
					what, got);
		for (i = 0; i < l; i++) {
			unsigned char c = (unsigned char)label[i];

			if (c >= 0x80 || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '-')
				continue;
			return cfg_fail(p, cfg_line(n),
					"%s: invalid domain name %s: "
					"character '%c' is not allowed "
					"(expected letters, digits, '-' and "
					"'.')",
					what, got,
					c >= 0x20 && c < 0x7f ? c : '?');
		}
		if (label[l] == '\0')
			break;
		label += l + 1;
	}
	*out = strdup(buf);
	if (*out == NULL)
		return cfg_oom(p);
	return 0;
}

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
	for (i = 0; i < src->nopts; i++) {
		dst->opts[i].key = strdup(src->opts[i].key);
		dst->opts[i].value = strdup(src->opts[i].value);
		dst->opts[i].line = src->opts[i].line;
		dst->nopts++;
		if (dst->opts[i].key == NULL || dst->opts[i].value == NULL)
			return -ENOMEM;
	}
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

	rc = cfg_want_map(p, n, what,
			  "a mapping of option: value (or {} for none)", &map);
	if (rc < 0 || map == NULL)
		return rc;
	rc = cfg_check_keys(p, map, what, NULL, 0);
	if (rc < 0)
		return rc;
	count = cfg_map_len(map);
	if (count == 0)
		return 0;
	m->opts = calloc(count, sizeof(*m->opts));
	if (m->opts == NULL)
		return cfg_oom(p);
	for (i = 0; i < count; i++) {
		yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
		yaml_node_t *k = cfg_node(p, pair->key);
		yaml_node_t *v = cfg_node(p, pair->value);
		struct pgn_cfg_opt *o = &m->opts[m->nopts];

		cfg_name(sub, sizeof(sub), "%s.%s", what, cfg_scalar(k));
		if (v->type == YAML_MAPPING_NODE ||
		    v->type == YAML_SEQUENCE_NODE) {
			cfg_describe(v, got, sizeof(got));
			return cfg_fail(p, cfg_line(v),
					"%s: nested values are not supported "
					"yet (expected a scalar value such as "
					"a string, number or true/false, got "
					"%s)",
					sub, got);
		}
		if (strlen(cfg_scalar(v)) != v->data.scalar.length)
			return cfg_fail(p, cfg_line(v),
					"%s: must not contain a NUL character",
					sub);
		/* Kept as written ("true", "30", "~"): the module knows
		 * what type it wants and reports its own errors. */
		o->key = strdup(cfg_scalar(k));
		o->value = strdup(cfg_scalar(v));
		o->line = cfg_line(k);
		m->nopts++;
		if (o->key == NULL || o->value == NULL)
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

	rc = cfg_want_map(p, n, what,
			  "a mapping of module names (mod_...) to options",
			  &map);
	if (rc < 0 || map == NULL)
		return rc;
	rc = cfg_check_keys(p, map, what, NULL, 0);
	if (rc < 0)
		return rc;
	count = cfg_map_len(map);
	if (count == 0)
		return 0;
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
		struct pgn_cfg_module *dst = &h->modules[h->nmodules];

		for (j = 0; j < own->n; j++)
			if (strcmp(own->mods[j].name, src->name) == 0)
				use = &own->mods[j];
		h->nmodules++;
		dst->name = strdup(src->name);
		dst->line = use->line;
		if (dst->name == NULL || cfg_module_copy_opts(dst, use) < 0)
			return cfg_oom(p);
	}
	for (j = 0; j < own->n; j++) {
		const struct pgn_cfg_module *src = &own->mods[j];
		struct pgn_cfg_module *dst;
		bool global = false;

		for (i = 0; i < p->global.n; i++)
			if (strcmp(p->global.mods[i].name, src->name) == 0)
				global = true;
		if (global)
			continue;
		dst = &h->modules[h->nmodules++];
		dst->name = strdup(src->name);
		dst->line = src->line;
		if (dst->name == NULL || cfg_module_copy_opts(dst, src) < 0)
			return cfg_oom(p);
	}
	return 0;
}

/* ---- sections ------------------------------------------------------------ */

static int
cfg_parse_hosts(struct cfg_parse *p, yaml_node_t *n, int keyline)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *seq;
	char what[64];
	size_t count, i, j;
	int rc;

	rc = cfg_want_seq(p, n, "hosts", "a list of domain names", &seq);
	if (rc < 0)
		return rc;
	count = seq ? cfg_seq_len(seq) : 0;
	if (count == 0)
		return cfg_fail(p, keyline,
				"hosts: no hosts (expected a list of at least "
				"one domain name, e.g. '- localhost')");
	cfg->hosts = calloc(count, sizeof(*cfg->hosts));
	p->per_host = calloc(count, sizeof(*p->per_host));
	if (cfg->hosts == NULL || p->per_host == NULL)
		return cfg_oom(p);
	for (i = 0; i < count; i++) {
		yaml_node_t *item =
			cfg_node(p, seq->data.sequence.items.start[i]);
		char *name = NULL;

		cfg_name(what, sizeof(what), "hosts[%zu]", i);
		rc = cfg_domain(p, item, what, &name);
		if (rc < 0)
			return rc;
		for (j = 0; j < cfg->nhosts; j++) {
			if (strcmp(cfg->hosts[j].name, name) == 0) {
				rc = cfg_fail(
					p, cfg_line(item),
					"%s: duplicate host '%s' (same as "
					"hosts[%zu])",
					what, name, j);
				free(name);
				return rc;
			}
		}
		cfg->hosts[cfg->nhosts++].name = name;
	}
	return 0;
}

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

static int
cfg_parse_listener(struct cfg_parse *p, yaml_node_t *item, const char *what,
		   struct pgn_cfg_listen *l)
{
	yaml_node_t *v;
	char sub[96], got[96], list[64];
	unsigned char addr[16];
	char norm[INET6_ADDRSTRLEN];
	unsigned long port;
	int family, rc, kline = 0;
	const char *mod;
	size_t i;

	if (item->type != YAML_MAPPING_NODE) {
		cfg_describe(item, got, sizeof(got));
		return cfg_fail(p, cfg_line(item),
				"%s: expected a mapping with port, module and "
				"optionally ip, got %s",
				what, got);
	}
	rc = cfg_check_keys(p, item, what, listen_keys, CFG_N(listen_keys));
	if (rc < 0)
		return rc;
	l->line = cfg_line(item);
	cfg_join(listen_modules, CFG_N(listen_modules), list, sizeof(list));

	v = cfg_get(p, item, "module", NULL);
	if (v == NULL)
		return cfg_fail(p, l->line,
				"%s: missing key 'module' (expected one of: "
				"%s)",
				what, list);
	cfg_name(sub, sizeof(sub), "%s.module", what);
	if (v->type != YAML_SCALAR_NODE || cfg_is_null(v)) {
		cfg_describe(v, got, sizeof(got));
		return cfg_fail(p, cfg_line(v),
				"%s: expected one of: %s, got %s", sub, list,
				got);
	}
	mod = cfg_scalar(v);
	for (i = 0; i < CFG_N(listen_modules); i++)
		if (strcmp(mod, listen_modules[i]) == 0)
			break;
	if (i == CFG_N(listen_modules)) {
		cfg_describe(v, got, sizeof(got));
		return cfg_fail(p, cfg_line(v),
				"%s: unknown listener module %s (expected one "
				"of: %s)",
				sub, got, list);
	}
	l->kind = i == 0   ? PGN_LISTEN_C2S
		  : i == 1 ? PGN_LISTEN_C2S_TLS
			   : PGN_LISTEN_COMPONENT;

	v = cfg_get(p, item, "port", NULL);
	if (v == NULL)
		return cfg_fail(p, l->line,
				"%s: missing key 'port' (expected an integer "
				"from 1 to 65535)",
				what);
	cfg_name(sub, sizeof(sub), "%s.port", what);
	rc = cfg_uint(p, v, sub, 1, 65535, &port);
	if (rc < 0)
		return rc;
	l->port = (int)port;

	v = cfg_get(p, item, "ip", NULL);
	cfg_name(sub, sizeof(sub), "%s.ip", what);
	if (v != NULL) {
		char *ip = NULL;

		rc = cfg_string(p, v, sub, true, &ip);
		if (rc < 0)
			return rc;
		rc = cfg_listen_addr(ip, &family, addr);
		free(ip);
		if (rc < 0) {
			cfg_describe(v, got, sizeof(got));
			return cfg_fail(p, cfg_line(v),
					"%s: expected an IPv4 or IPv6 address "
					"(e.g. 0.0.0.0, 127.0.0.1 or ::), got "
					"%s",
					sub, got);
		}
	} else {
		rc = cfg_listen_addr(CFG_DEFAULT_IP, &family, addr);
		if (rc < 0)
			return cfg_fail(p, l->line, "bad default address");
	}
	/* Stored in canonical form so that "::0" and "::" compare equal. */
	if (inet_ntop(family, addr, norm, sizeof(norm)) == NULL)
		return cfg_fail(p, l->line, "%s: cannot format address", sub);
	l->ip = strdup(norm);
	if (l->ip == NULL)
		return cfg_oom(p);

	v = cfg_get(p, item, "starttls_required", &kline);
	cfg_name(sub, sizeof(sub), "%s.starttls_required", what);
	if (l->kind == PGN_LISTEN_C2S) {
		l->starttls_required = 1;
		if (v != NULL) {
			rc = cfg_bool(p, v, sub, &l->starttls_required);
			if (rc < 0)
				return rc;
		}
	} else {
		/* Direct TLS and components have no STARTTLS to require. */
		l->starttls_required = 0;
		if (v != NULL)
			return cfg_fail(
				p, kline,
				"%s: only valid with module c2s (this "
				"listener is %s, which has no STARTTLS)",
				sub, mod);
	}
	return 0;
}

static int
cfg_parse_listen(struct cfg_parse *p, yaml_node_t *n)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *seq;
	char what[48];
	size_t count, i, j;
	int rc;

	rc = cfg_want_seq(p, n, "listen", "a list of listeners", &seq);
	if (rc < 0 || seq == NULL)
		return rc;
	count = cfg_seq_len(seq);
	if (count == 0)
		return 0;
	cfg->listen = calloc(count, sizeof(*cfg->listen));
	if (cfg->listen == NULL)
		return cfg_oom(p);
	for (i = 0; i < count; i++) {
		yaml_node_t *item =
			cfg_node(p, seq->data.sequence.items.start[i]);
		struct pgn_cfg_listen *l = &cfg->listen[cfg->nlisten];
		unsigned char a[16], b[16];
		int fa, fb;

		cfg_name(what, sizeof(what), "listen[%zu]", i);
		cfg->nlisten++;
		rc = cfg_parse_listener(p, item, what, l);
		if (rc < 0)
			return rc;
		/* A wildcard overlaps every address of its family: the
		 * second bind() would fail with EADDRINUSE at start. */
		cfg_listen_addr(l->ip, &fa, a);
		for (j = 0; j < i; j++) {
			const struct pgn_cfg_listen *o = &cfg->listen[j];

			cfg_listen_addr(o->ip, &fb, b);
			if (o->port != l->port || fa != fb)
				continue;
			if (memcmp(a, b, 16) == 0 || cfg_addr_any(a) ||
			    cfg_addr_any(b))
				return cfg_fail(
					p, l->line,
					"%s: %s port %d is already used "
					"by listen[%zu] (%s port %d, "
					"line %d); each ip:port can be "
					"listened on once",
					what, l->ip, l->port, j, o->ip, o->port,
					o->line);
		}
	}
	return 0;
}

static int
cfg_parse_certfiles(struct cfg_parse *p, yaml_node_t *n)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *seq;
	char what[48];
	size_t count, i;
	int rc;

	rc = cfg_want_seq(p, n, "certfiles", "a list of PEM file paths", &seq);
	if (rc < 0 || seq == NULL)
		return rc;
	count = cfg_seq_len(seq);
	if (count == 0)
		return 0;
	cfg->certfiles = calloc(count, sizeof(*cfg->certfiles));
	if (cfg->certfiles == NULL)
		return cfg_oom(p);
	for (i = 0; i < count; i++) {
		yaml_node_t *item =
			cfg_node(p, seq->data.sequence.items.start[i]);

		cfg_name(what, sizeof(what), "certfiles[%zu]", i);
		rc = cfg_path(p, item, what, &cfg->certfiles[i]);
		if (rc < 0)
			return rc;
		cfg->ncertfiles++;
	}
	return 0;
}

static int
cfg_parse_storage(struct cfg_parse *p, yaml_node_t *n, int keyline)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *map, *v;
	char got[96];
	int rc, line = 0;
	bool pgsql;

	rc = cfg_want_map(p, n, "storage",
			  "a mapping with driver and path or conninfo", &map);
	if (rc < 0 || map == NULL)
		return rc;
	rc = cfg_check_keys(p, map, "storage", storage_keys,
			    CFG_N(storage_keys));
	if (rc < 0)
		return rc;
	v = cfg_get(p, map, "driver", NULL);
	if (v != NULL) {
		rc = cfg_string(p, v, "storage.driver", false,
				&cfg->storage_driver);
		if (rc < 0)
			return rc;
		if (strcmp(cfg->storage_driver, "sqlite") != 0 &&
		    strcmp(cfg->storage_driver, "pgsql") != 0) {
			cfg_describe(v, got, sizeof(got));
			return cfg_fail(p, cfg_line(v),
					"storage.driver: unknown driver %s "
					"(expected sqlite or pgsql)",
					got);
		}
	}
	pgsql = cfg->storage_driver != NULL &&
		strcmp(cfg->storage_driver, "pgsql") == 0;
	v = cfg_get(p, map, "path", &line);
	if (v != NULL) {
		if (pgsql)
			return cfg_fail(p, line,
					"storage.path: only used by driver "
					"sqlite (driver is pgsql: use "
					"conninfo)");
		rc = cfg_path(p, v, "storage.path", &cfg->storage_path);
		if (rc < 0)
			return rc;
	}
	v = cfg_get(p, map, "conninfo", &line);
	if (v != NULL) {
		if (!pgsql)
			return cfg_fail(p, line,
					"storage.conninfo: only used by driver "
					"pgsql (set 'driver: pgsql')");
		rc = cfg_string(p, v, "storage.conninfo", false,
				&cfg->storage_conninfo);
		if (rc < 0)
			return rc;
	} else if (pgsql) {
		return cfg_fail(p, keyline,
				"storage: driver pgsql needs 'conninfo' (a "
				"libpq connection string, e.g. \"dbname=pigeon "
				"user=pigeon\")");
	}
	v = cfg_get(p, map, "outage_hold", NULL);
	if (v != NULL) {
		unsigned long secs;

		/* An hour of held requests is an outage, not a blip. */
		rc = cfg_uint(p, v, "storage.outage_hold", 0, 3600, &secs);
		if (rc < 0)
			return rc;
		cfg->storage_outage_hold = (unsigned)secs;
	}
	return 0;
}

static int
cfg_parse_components(struct cfg_parse *p, yaml_node_t *n)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *seq;
	char what[48], sub[64], got[96];
	size_t count, i, j;
	int rc;

	rc = cfg_want_seq(p, n, "components",
			  "a list of {domain, secret} mappings", &seq);
	if (rc < 0 || seq == NULL)
		return rc;
	count = cfg_seq_len(seq);
	if (count == 0)
		return 0;
	cfg->components = calloc(count, sizeof(*cfg->components));
	if (cfg->components == NULL)
		return cfg_oom(p);
	for (i = 0; i < count; i++) {
		yaml_node_t *item =
			cfg_node(p, seq->data.sequence.items.start[i]);
		struct pgn_cfg_component *c =
			&cfg->components[cfg->ncomponents];
		yaml_node_t *v;

		cfg_name(what, sizeof(what), "components[%zu]", i);
		if (item->type != YAML_MAPPING_NODE) {
			cfg_describe(item, got, sizeof(got));
			return cfg_fail(
				p, cfg_line(item),
				"%s: expected a mapping with domain and "
				"secret, got %s",
				what, got);
		}
		rc = cfg_check_keys(p, item, what, component_keys,
				    CFG_N(component_keys));
		if (rc < 0)
			return rc;
		cfg->ncomponents++;
		c->line = cfg_line(item);
		v = cfg_get(p, item, "domain", NULL);
		if (v == NULL)
			return cfg_fail(p, c->line,
					"%s: missing key 'domain' (expected "
					"the component's domain name)",
					what);
		cfg_name(sub, sizeof(sub), "%s.domain", what);
		rc = cfg_domain(p, v, sub, &c->domain);
		if (rc < 0)
			return rc;
		for (j = 0; j < cfg->nhosts; j++)
			if (strcmp(cfg->hosts[j].name, c->domain) == 0)
				return cfg_fail(p, cfg_line(v),
						"%s: '%s' is already a host "
						"(hosts[%zu]); "
						"a component needs a domain of "
						"its own, "
						"e.g. 'bot.%s'",
						sub, c->domain, j, c->domain);
		for (j = 0; j + 1 < cfg->ncomponents; j++)
			if (strcmp(cfg->components[j].domain, c->domain) == 0)
				return cfg_fail(
					p, cfg_line(v),
					"%s: duplicate component '%s' "
					"(same as components[%zu], line "
					"%d)",
					sub, c->domain, j,
					cfg->components[j].line);
		v = cfg_get(p, item, "secret", NULL);
		if (v == NULL)
			return cfg_fail(
				p, c->line,
				"%s: missing key 'secret' (expected the "
				"shared secret of XEP-0114)",
				what);
		cfg_name(sub, sizeof(sub), "%s.secret", what);
		/* The secret itself never goes into a message. */
		if (v->type != YAML_SCALAR_NODE || cfg_is_null(v) ||
		    v->data.scalar.length == 0)
			return cfg_fail(p, cfg_line(v),
					"%s: expected a non-empty string", sub);
		rc = cfg_string(p, v, sub, false, &c->secret);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int
cfg_parse_host_config(struct cfg_parse *p, yaml_node_t *n)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *map;
	char what[1100], got[96], hosts[256];
	size_t count, i, j, h;
	int rc;

	rc = cfg_want_map(p, n, "host_config",
			  "a mapping of host names to their settings", &map);
	if (rc < 0 || map == NULL)
		return rc;
	rc = cfg_check_keys(p, map, "host_config", NULL, 0);
	if (rc < 0)
		return rc;
	count = cfg_map_len(map);
	for (i = 0; i < count; i++) {
		yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
		yaml_node_t *k = cfg_node(p, pair->key);
		yaml_node_t *v = cfg_node(p, pair->value), *hmap, *mods;
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
		rc = cfg_want_map(p, v, what, "a mapping with 'modules'",
				  &hmap);
		if (rc < 0)
			return rc;
		if (hmap == NULL)
			continue;
		rc = cfg_check_keys(p, hmap, what, host_config_keys,
				    CFG_N(host_config_keys));
		if (rc < 0)
			return rc;
		mods = cfg_get(p, hmap, "modules", NULL);
		if (mods == NULL)
			continue;
		strncat(what, ".modules", sizeof(what) - strlen(what) - 1);
		rc = cfg_parse_modules(p, mods, what, &p->per_host[h]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int
cfg_parse_limits(struct cfg_parse *p, yaml_node_t *n)
{
	const char *keys[CFG_N(limit_defs)];
	yaml_node_t *map;
	char what[64];
	size_t i;
	int rc;

	for (i = 0; i < CFG_N(limit_defs); i++)
		keys[i] = limit_defs[i].key;
	rc = cfg_want_map(p, n, "limits", "a mapping of limit: number", &map);
	if (rc < 0 || map == NULL)
		return rc;
	rc = cfg_check_keys(p, map, "limits", keys, CFG_N(keys));
	if (rc < 0)
		return rc;
	for (i = 0; i < CFG_N(limit_defs); i++) {
		const struct cfg_limit_def *d = &limit_defs[i];
		yaml_node_t *v = cfg_get(p, map, d->key, NULL);
		char *field = (char *)&p->cfg->limits + d->offset;
		unsigned long val;

		if (v == NULL)
			continue;
		cfg_name(what, sizeof(what), "limits.%s", d->key);
		rc = cfg_uint(p, v, what, d->min, d->max, &val);
		if (rc < 0)
			return rc;
		if (d->is_size) {
			size_t s = (size_t)val;

			memcpy(field, &s, sizeof(s));
		} else {
			unsigned u = (unsigned)val;

			memcpy(field, &u, sizeof(u));
		}
	}
	return 0;
}

static int
cfg_parse_log(struct cfg_parse *p, yaml_node_t *n)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *map, *v;
	char got[96], list[64];
	size_t i;
	int rc;

	rc = cfg_want_map(p, n, "log", "a mapping with level and file", &map);
	if (rc < 0 || map == NULL)
		return rc;
	rc = cfg_check_keys(p, map, "log", log_keys, CFG_N(log_keys));
	if (rc < 0)
		return rc;
	v = cfg_get(p, map, "level", NULL);
	if (v != NULL) {
		cfg_join(log_levels, CFG_N(log_levels), list, sizeof(list));
		for (i = 0;
		     v->type == YAML_SCALAR_NODE && i < CFG_N(log_levels); i++)
			if (strcmp(cfg_scalar(v), log_levels[i]) == 0)
				break;
		/* The log module takes "warning" too; store one spelling. */
		if (v->type == YAML_SCALAR_NODE &&
		    strcmp(cfg_scalar(v), "warning") == 0)
			i = 1;
		if (v->type != YAML_SCALAR_NODE || i == CFG_N(log_levels)) {
			cfg_describe(v, got, sizeof(got));
			return cfg_fail(p, cfg_line(v),
					"log.level: unknown level %s (expected "
					"one of: %s)",
					got, list);
		}
		cfg->log_level = strdup(log_levels[i]);
		if (cfg->log_level == NULL)
			return cfg_oom(p);
	}
	v = cfg_get(p, map, "file", NULL);
	if (v != NULL) {
		/* "-" is the log module's name for stderr, not a file. */
		if (v->type == YAML_SCALAR_NODE &&
		    strcmp(cfg_scalar(v), "-") == 0)
			return 0;
		rc = cfg_path(p, v, "log.file", &cfg->log_file);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int
cfg_parse_root(struct cfg_parse *p, yaml_node_t *root)
{
	struct pgn_config *cfg = p->cfg;
	yaml_node_t *v;
	char got[96];
	int rc, line = 0;

	if (root->type != YAML_MAPPING_NODE) {
		cfg_describe(root, got, sizeof(got));
		return cfg_fail(p, cfg_line(root),
				"the top level must be a mapping of keys "
				"(hosts, listen, ...), got %s",
				got);
	}
	rc = cfg_check_keys(p, root, NULL, top_keys, CFG_N(top_keys));
	if (rc < 0)
		return rc;

	v = cfg_get(p, root, "hosts", &line);
	if (v == NULL)
		return cfg_fail(
			p, cfg_line(root),
			"no hosts: the top-level key 'hosts' is missing "
			"(expected a list of at least one domain name)");
	rc = cfg_parse_hosts(p, v, line);
	if (rc < 0)
		return rc;
	if ((v = cfg_get(p, root, "listen", NULL)) &&
	    (rc = cfg_parse_listen(p, v)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "certfiles", NULL)) &&
	    (rc = cfg_parse_certfiles(p, v)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "storage", &line)) &&
	    (rc = cfg_parse_storage(p, v, line)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "components", NULL)) &&
	    (rc = cfg_parse_components(p, v)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "modules", NULL)) &&
	    (rc = cfg_parse_modules(p, v, "modules", &p->global)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "host_config", NULL)) &&
	    (rc = cfg_parse_host_config(p, v)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "limits", NULL)) &&
	    (rc = cfg_parse_limits(p, v)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "log", NULL)) &&
	    (rc = cfg_parse_log(p, v)) < 0)
		return rc;
	if ((v = cfg_get(p, root, "ctl_socket", &line))) {
		rc = cfg_path(p, v, "ctl_socket", &cfg->ctl_socket);
		if (rc < 0)
			return rc;
		rc = cfg_check_sun_path(p, line, "ctl_socket", cfg->ctl_socket);
		if (rc < 0)
			return rc;
	}
	if ((v = cfg_get(p, root, "module_path", NULL))) {
		rc = cfg_path(p, v, "module_path", &cfg->module_path);
		if (rc < 0)
			return rc;
	}
	if ((v = cfg_get(p, root, "schema_dir", NULL))) {
		rc = cfg_path(p, v, "schema_dir", &cfg->schema_dir);
		if (rc < 0)
			return rc;
	}
	if ((v = cfg_get(p, root, "pid_file", NULL)) &&
	    (rc = cfg_path(p, v, "pid_file", &cfg->pid_file)) < 0)
		return rc;
	return 0;
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

static void
cfg_limits_default(struct pgn_cfg_limits *l)
{
	l->max_stanza_size = 262144;
	l->max_depth = 32;
	l->max_attrs = 64;
	l->max_children = 4096;
	l->negotiation_timeout = 30;
	l->idle_timeout = 600;
	l->keepalive_interval = 120;
	l->auth_fail_delay_ms = 1000;
	l->max_sessions_per_user = 100;
	l->ping_interval = 300;
	l->ping_timeout = 60;
	l->resume_timeout = 300;
	l->max_unacked = 5000;
	l->max_connections_per_ip = 100;
	l->max_connections = 0;
	l->max_unacked_bytes = 8ul << 20;
	l->max_unacked_bytes_per_account = 32ul << 20;
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
	cfg_limits_default(&cfg->limits);
	cfg->storage_outage_hold = 30;
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
