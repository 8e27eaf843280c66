/* The engine under config.c: typed values read from a libyaml document
 * tree and checked against tables of fields.  A section of pigeon.yml is a
 * `struct cfg_section` (its keys, each with a type, where the value goes,
 * its range and a doc string); cfg_load_section() walks one mapping
 * against it: unknown or duplicate keys, missing required keys, wrong
 * types and values out of range become "FILE:LINE: key: message" errors.
 * Anything the types cannot say (a rule between two keys, a value that
 * depends on another section) is a CFG_CUSTOM field or the section's
 * finish() callback.
 *
 * Internal to src/lib/config*.c: the names are hidden from modules. */
#ifndef PIGEON_CONFIG_YAML_H
#define PIGEON_CONFIG_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include <yaml.h>

#define CFG_INTERNAL __attribute__((visibility("hidden")))
#define CFG_N(a) (sizeof(a) / sizeof((a)[0]))
/* Long enough for the longest dotted name: host_config.DOMAIN.modules.X */
#define CFG_NAME_MAX 1200

struct pgn_config;
struct pgn_cfg_module;

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

enum cfg_type {
	CFG_STRING,      /* char *: a non-empty string (caller frees) */
	CFG_PATH,        /* char *: made absolute against the file's dir */
	CFG_INT,         /* int, from min to max */
	CFG_UINT,        /* unsigned, from min to max */
	CFG_SIZE,        /* size_t, from min to max */
	CFG_BOOL,        /* int: 0 or 1 */
	CFG_CHOICE,      /* int: the index of one of choices */
	CFG_CHOICE_NAME, /* char *: one of choices, as listed */
	CFG_SECTION,     /* a nested mapping: section, filled at offset */
	CFG_LIST,        /* a list: list, one item at a time */
	CFG_CUSTOM,      /* parse() reads and stores the value */
};

/* One accepted word of a CFG_CHOICE; alias_of names the listed choice a
 * hidden spelling stands for ("warning" for "warn"). */
struct cfg_choice {
	const char *name;
	const char *alias_of;
};

struct cfg_field;
struct cfg_section;
struct cfg_list;

/* A CFG_CUSTOM field's reader: v is the value, what its dotted name,
 * keyline the line of its key, base the struct the section fills.
 * 0 or a negative error (after cfg_fail). */
typedef int (*cfg_parse_fn)(struct cfg_parse *p, yaml_node_t *v,
			    const char *what, int keyline, void *base);

struct cfg_field {
	const char *key;
	enum cfg_type type;
	size_t offset;          /* of the value in the section's struct */
	unsigned long min, max; /* numbers */
	unsigned long def;      /* numbers: set by cfg_defaults() */
	const struct cfg_choice *choices; /* CFG_CHOICE*: NULL-terminated */
	const char *noun;       /* CFG_CHOICE*: "unknown NOUN \"x\"" */
	const struct cfg_section *section; /* CFG_SECTION */
	const struct cfg_list *list;       /* CFG_LIST */
	cfg_parse_fn parse;     /* CFG_CUSTOM */
	bool required;          /* missing -> "missing key 'KEY' (expected DOC)" */
	const char *doc;        /* what the value is, for messages and readers */
};

struct cfg_section {
	const char *expect; /* "a mapping with level and file", for messages */
	const struct cfg_field *fields; /* in the order they are read */
	size_t nfields;
	/* After the fields: rules between them and defaults that depend on
	 * them.  map is the section's mapping, keyline the line of its key. */
	int (*finish)(struct cfg_parse *p, yaml_node_t *map, const char *what,
		      int keyline, void *base);
};

/* A list stored as an array and a count (both in the struct the section
 * fills).  The array is allocated at once; the count grows before each
 * item is read, so a failed item is freed with the rest. */
struct cfg_list {
	const char *expect;  /* "a list of listeners", for messages */
	size_t item_size;
	size_t count_offset; /* of the size_t count */
	/* Reads item i (a zeroed element at elem); what is "key[i]". */
	int (*item)(struct cfg_parse *p, yaml_node_t *v, const char *what,
		    size_t i, void *elem);
};

/* ---- messages ---- */
/* Writes "FILE:LINE: message" (or "FILE: message" when line is 0) and
 * returns -EINVAL so that callers can `return cfg_fail(...)`. */
CFG_INTERNAL int cfg_fail(struct cfg_parse *p, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
CFG_INTERNAL int cfg_oom(struct cfg_parse *p);
/* A dotted key name for messages; a name cut short only shortens one. */
CFG_INTERNAL void cfg_name(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* s quoted with q and escaped for a message, cut after 48 bytes. */
CFG_INTERNAL void cfg_quote(const char *s, size_t len, char q, char *buf,
			    size_t buflen);
/* What a node is, for "got ..." in messages. */
CFG_INTERNAL void cfg_describe(const yaml_node_t *n, char *buf, size_t len);
/* "a, b, c" */
CFG_INTERNAL void cfg_join(const char *const *words, size_t n, char *buf,
			   size_t len);

/* ---- nodes ---- */
CFG_INTERNAL int cfg_line(const yaml_node_t *n);
CFG_INTERNAL bool cfg_is_null(const yaml_node_t *n);
CFG_INTERNAL yaml_node_t *cfg_node(struct cfg_parse *p, int index);
CFG_INTERNAL const char *cfg_scalar(const yaml_node_t *n);
CFG_INTERNAL size_t cfg_map_len(const yaml_node_t *n);
/* Keys are non-null names without duplicates and, when allowed is given,
 * one of them (else: "unknown key", with a "did you mean").  what NULL
 * means the top level. */
CFG_INTERNAL int cfg_check_keys(struct cfg_parse *p, const yaml_node_t *map,
				const char *what, const char *const *allowed,
				size_t nallowed);
/* Value of key in a checked mapping, or NULL; *keyline gets the key's
 * line when found. */
CFG_INTERNAL yaml_node_t *cfg_get(struct cfg_parse *p, const yaml_node_t *map,
				  const char *key, int *keyline);
/* A mapping or a list; null counts as empty (*out set to NULL). */
CFG_INTERNAL int cfg_want_map(struct cfg_parse *p, yaml_node_t *n,
			      const char *what, const char *expect,
			      yaml_node_t **out);
/* A mapping of free-form keys (checked for null and duplicates only): the
 * mapping in *out (NULL for null) and its number of pairs in *count. */
CFG_INTERNAL int cfg_want_keyed_map(struct cfg_parse *p, yaml_node_t *n,
				    const char *what, const char *expect,
				    yaml_node_t **out, size_t *count);
CFG_INTERNAL int cfg_want_seq(struct cfg_parse *p, yaml_node_t *n,
			      const char *what, const char *expect,
			      yaml_node_t **out);

/* ---- values ---- */
/* A string; a copy goes to *out (caller frees). */
CFG_INTERNAL int cfg_string(struct cfg_parse *p, const yaml_node_t *n,
			    const char *what, bool allow_empty, char **out);
/* An unquoted decimal integer in [min, max]. */
CFG_INTERNAL int cfg_uint(struct cfg_parse *p, const yaml_node_t *n,
			  const char *what, unsigned long min,
			  unsigned long max, unsigned long *out);
/* A non-empty path made absolute against the file's directory. */
CFG_INTERNAL int cfg_path(struct cfg_parse *p, const yaml_node_t *n,
			  const char *what, char **out);
/* A domain name prepared with nameprep (caller frees *out). */
CFG_INTERNAL int cfg_domain(struct cfg_parse *p, const yaml_node_t *n,
			    const char *what, char **out);
/* path made absolute against base (a directory without trailing slash);
 * NULL when out of memory. */
CFG_INTERNAL char *cfg_absolute(const char *base, const char *path);

/* ---- tables ---- */
/* Reads mapping n (whose key is at keyline) against section s into base.
 * null_ok: a null value (all of the section commented out) is an empty
 * section; otherwise only a mapping is accepted. */
CFG_INTERNAL int cfg_load_section(struct cfg_parse *p,
				  const struct cfg_section *s, yaml_node_t *n,
				  const char *what, int keyline, void *base,
				  bool null_ok);
/* Reads one value of field f (present, at keyline) into base. */
CFG_INTERNAL int cfg_load_field(struct cfg_parse *p, const struct cfg_field *f,
				yaml_node_t *v, const char *what, int keyline,
				void *base);
/* Sets the numeric defaults of s and of its nested sections. */
CFG_INTERNAL void cfg_defaults(const struct cfg_section *s, void *base);

#endif
