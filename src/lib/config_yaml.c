/* Typed values from a libyaml document tree, and the walker that reads a
 * mapping against a table of fields (config_yaml.h).  config.c holds
 * pigeon.yml's tables; this file knows nothing of Pigeon.
 *
 * Every error names FILE:LINE and the dotted key ("listen[1].port"), says
 * what was found and what is expected: the admin reads it once, at start,
 * and must be able to fix the file without reading the source.  The
 * document tree is walked only where a table says so, so aliases cannot
 * make the walk explode. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <stringprep.h>
#include <yaml.h>

#include "config_yaml.h"
#include "suggest.h"

/* RFC 7622 limits a domainpart to 1023 bytes; DNS limits a label to 63. */
#define CFG_DOMAIN_MAX 1023
#define CFG_LABEL_MAX 63

/* ---- messages ------------------------------------------------------------ */

int
cfg_line(const yaml_node_t *n)
{
	return (int)n->start_mark.line + 1;
}

int
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

void
cfg_name(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

int
cfg_oom(struct cfg_parse *p)
{
	cfg_fail(p, 0, "out of memory");
	return -ENOMEM;
}

bool
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
void
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
void
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

void
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

/* ---- node access --------------------------------------------------------- */

yaml_node_t *
cfg_node(struct cfg_parse *p, int index)
{
	return yaml_document_get_node(p->doc, index);
}

const char *
cfg_scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

size_t
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
int
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
			else if (pgn_suggest_distance(name, allowed[k]) <= 2)
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
yaml_node_t *
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

/* A node of the given type.  null_ok: null counts as empty (all its
 * children commented out) and sets *out to NULL. */
static int
cfg_want(struct cfg_parse *p, yaml_node_t *n, yaml_node_type_t type,
	 bool null_ok, const char *what, const char *expect,
	 yaml_node_t **out)
{
	char got[96];

	*out = NULL;
	if (null_ok && cfg_is_null(n))
		return 0;
	if (n->type != type) {
		cfg_describe(n, got, sizeof(got));
		return cfg_fail(p, cfg_line(n), "%s: expected %s, got %s", what,
				expect, got);
	}
	*out = n;
	return 0;
}

int
cfg_want_map(struct cfg_parse *p, yaml_node_t *n, const char *what,
	     const char *expect, yaml_node_t **out)
{
	return cfg_want(p, n, YAML_MAPPING_NODE, true, what, expect, out);
}

int
cfg_want_keyed_map(struct cfg_parse *p, yaml_node_t *n, const char *what,
		   const char *expect, yaml_node_t **out, size_t *count)
{
	int rc;

	*count = 0;
	rc = cfg_want_map(p, n, what, expect, out);
	if (rc < 0 || *out == NULL)
		return rc;
	rc = cfg_check_keys(p, *out, what, NULL, 0);
	if (rc < 0)
		return rc;
	*count = cfg_map_len(*out);
	return 0;
}

int
cfg_want_seq(struct cfg_parse *p, yaml_node_t *n, const char *what,
	     const char *expect, yaml_node_t **out)
{
	return cfg_want(p, n, YAML_SEQUENCE_NODE, true, what, expect, out);
}

/* A string value; a copy goes to *out (caller frees). */
int
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
int
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
char *
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

int
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

/* ---- domains ------------------------------------------------------------- */

/* A host or component domain, prepared with nameprep (RFC 3491) so that
 * comparisons and JID routing see one spelling.  IP literals in brackets
 * are not accepted: a virtual host needs a name for its certificate. */
int
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

/* ---- tables -------------------------------------------------------------- */

/* "one of: a, b, c", or "a or b" for two, of the listed (not alias)
 * choices. */
static void
cfg_choice_list(const struct cfg_choice *c, char *buf, size_t len)
{
	const char *names[16];
	size_t n = 0;

	for (; c->name != NULL && n < CFG_N(names); c++)
		if (c->alias_of == NULL)
			names[n++] = c->name;
	if (n == 2) {
		snprintf(buf, len, "%s or %s", names[0], names[1]);
		return;
	}
	memcpy(buf, "one of: ", 9);
	cfg_join(names, n, buf + 8, len - 8);
}

/* The index among the listed choices of the one v names, or -1. */
static int
cfg_choice_find(const struct cfg_choice *choices, const char *v)
{
	const struct cfg_choice *c;
	int listed = 0;

	for (c = choices; c->name != NULL; c++)
		if (strcmp(c->name, v) == 0)
			break;
	if (c->name == NULL)
		return -1;
	if (c->alias_of != NULL)
		v = c->alias_of;
	for (c = choices; c->name != NULL; c++) {
		if (c->alias_of != NULL)
			continue;
		if (strcmp(c->name, v) == 0)
			return listed;
		listed++;
	}
	return -1;
}

static const char *
cfg_choice_name(const struct cfg_choice *c, int index)
{
	for (; c->name != NULL; c++)
		if (c->alias_of == NULL && index-- == 0)
			return c->name;
	return NULL;
}

static int
cfg_choice(struct cfg_parse *p, const struct cfg_field *f, yaml_node_t *v,
	   const char *what, int *index)
{
	char got[96], list[256];

	cfg_choice_list(f->choices, list, sizeof(list));
	cfg_describe(v, got, sizeof(got));
	if (v->type != YAML_SCALAR_NODE || cfg_is_null(v))
		return cfg_fail(p, cfg_line(v), "%s: expected %s, got %s", what,
				list, got);
	*index = cfg_choice_find(f->choices, cfg_scalar(v));
	if (*index < 0)
		return cfg_fail(p, cfg_line(v), "%s: unknown %s %s (expected %s)",
				what, f->noun, got, list);
	return 0;
}

/* What a required field expects, for "missing key". */
static void
cfg_expect(const struct cfg_field *f, char *buf, size_t len)
{
	switch (f->type) {
	case CFG_INT:
	case CFG_UINT:
	case CFG_SIZE:
		snprintf(buf, len, "an integer from %lu to %lu", f->min, f->max);
		break;
	case CFG_CHOICE:
	case CFG_CHOICE_NAME:
		cfg_choice_list(f->choices, buf, len);
		break;
	default:
		snprintf(buf, len, "%s", f->doc);
		break;
	}
}

static int
cfg_load_list(struct cfg_parse *p, const struct cfg_field *f, yaml_node_t *n,
	      const char *what, void *base)
{
	const struct cfg_list *l = f->list;
	char *items, name[CFG_NAME_MAX];
	size_t count, i, *nitems = (size_t *)((char *)base + l->count_offset);
	yaml_node_t *seq;
	int rc;

	rc = cfg_want_seq(p, n, what, l->expect, &seq);
	if (rc < 0 || seq == NULL)
		return rc;
	count = cfg_seq_len(seq);
	if (count == 0)
		return 0;
	if ((items = calloc(count, l->item_size)) == NULL)
		return cfg_oom(p);
	/* The field is a pointer to the item type; memcpy stores the array
	 * without type-punning through a void **. */
	memcpy((char *)base + f->offset, &items, sizeof(items));
	for (i = 0; i < count; i++) {
		yaml_node_t *item =
			cfg_node(p, seq->data.sequence.items.start[i]);

		cfg_name(name, sizeof(name), "%s[%zu]", what, i);
		++*nitems;
		rc = l->item(p, item, name, i, items + i * l->item_size);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int
cfg_load_field(struct cfg_parse *p, const struct cfg_field *f, yaml_node_t *v,
	       const char *what, int keyline, void *base)
{
	char *field = (char *)base + f->offset;
	unsigned long num;
	int rc, i;

	switch (f->type) {
	case CFG_STRING:
		return cfg_string(p, v, what, false, (char **)field);
	case CFG_PATH:
		return cfg_path(p, v, what, (char **)field);
	case CFG_INT:
	case CFG_UINT:
	case CFG_SIZE:
		rc = cfg_uint(p, v, what, f->min, f->max, &num);
		if (rc < 0)
			return rc;
		if (f->type == CFG_INT)
			*(int *)field = (int)num;
		else if (f->type == CFG_UINT)
			*(unsigned *)field = (unsigned)num;
		else
			*(size_t *)field = (size_t)num;
		return 0;
	case CFG_BOOL:
		return cfg_bool(p, v, what, (int *)field);
	case CFG_CHOICE:
	case CFG_CHOICE_NAME:
		rc = cfg_choice(p, f, v, what, &i);
		if (rc < 0)
			return rc;
		if (f->type == CFG_CHOICE) {
			*(int *)field = i;
			return 0;
		}
		*(char **)field = strdup(cfg_choice_name(f->choices, i));
		return *(char **)field != NULL ? 0 : cfg_oom(p);
	case CFG_SECTION:
		return cfg_load_section(p, f->section, v, what, keyline, field,
					true);
	case CFG_LIST:
		return cfg_load_list(p, f, v, what, base);
	case CFG_CUSTOM:
		return f->parse(p, v, what, keyline, base);
	}
	return cfg_fail(p, cfg_line(v), "%s: unknown field type", what);
}

int
cfg_load_section(struct cfg_parse *p, const struct cfg_section *s,
		 yaml_node_t *n, const char *what, int keyline, void *base,
		 bool null_ok)
{
	const char *keys[32];
	char name[CFG_NAME_MAX], expect[256];
	yaml_node_t *map;
	size_t i;
	int rc, line;

	rc = cfg_want(p, n, YAML_MAPPING_NODE, null_ok, what, s->expect, &map);
	if (rc < 0 || map == NULL)
		return rc;
	for (i = 0; i < s->nfields && i < CFG_N(keys); i++)
		keys[i] = s->fields[i].key;
	rc = cfg_check_keys(p, map, what, keys, i);
	if (rc < 0)
		return rc;
	for (i = 0; i < s->nfields; i++) {
		const struct cfg_field *f = &s->fields[i];
		yaml_node_t *v = cfg_get(p, map, f->key, &line);

		if (v == NULL && f->required) {
			cfg_expect(f, expect, sizeof(expect));
			if (what == NULL)
				return cfg_fail(p, cfg_line(map),
						"no %s: the top-level key '%s' "
						"is missing (expected %s)",
						f->key, f->key, expect);
			return cfg_fail(p, cfg_line(map),
					"%s: missing key '%s' (expected %s)",
					what, f->key, expect);
		}
		if (v == NULL)
			continue;
		if (what != NULL)
			cfg_name(name, sizeof(name), "%s.%s", what, f->key);
		else
			cfg_name(name, sizeof(name), "%s", f->key);
		rc = cfg_load_field(p, f, v, name, line, base);
		if (rc < 0)
			return rc;
	}
	return s->finish != NULL ? s->finish(p, map, what, keyline, base) : 0;
}

void
cfg_defaults(const struct cfg_section *s, void *base)
{
	for (size_t i = 0; i < s->nfields; i++) {
		const struct cfg_field *f = &s->fields[i];
		char *field = (char *)base + f->offset;

		if (f->type == CFG_INT)
			*(int *)field = (int)f->def;
		else if (f->type == CFG_UINT)
			*(unsigned *)field = (unsigned)f->def;
		else if (f->type == CFG_SIZE)
			*(size_t *)field = (size_t)f->def;
		else if (f->type == CFG_SECTION)
			cfg_defaults(f->section, field);
	}
}
