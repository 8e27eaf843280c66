/* Typed module options.  A module declares its options (name, type,
 * default, range or values, doc); the core refuses anything else in
 * pigeon.yml before the module runs, so that a misspelt key is an error
 * with a hint instead of a silently ignored line, and the module reads
 * values that are already known to be good. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modopt.h"
#include "suggest.h"

size_t
pgn_modopt_count(const struct pgn_module_opt *opts)
{
	size_t n = 0;

	while (opts != NULL && opts[n].name != NULL)
		n++;
	return n;
}

int
pgn_modopt_find(const struct pgn_module_opt *opts, const char *name,
		enum pgn_opt_type type)
{
	for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++)
		if (strcmp(opts[i].name, name) == 0)
			return type == 0 || opts[i].type == type ? (int)i : -1;
	return -1;
}

/* "a, b, c" from a NULL-terminated list, truncated to fit. */
static void
join(const char *const *list, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; list != NULL && list[i] != NULL && o < len; i++) {
		int w = snprintf(buf + o, len - o, "%s%s", i ? ", " : "",
				 list[i]);
		if (w < 0)
			break;
		o += (size_t)w;
	}
}

static int
is_list_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

char **
pgn_modopt_split(const char *text, size_t *n)
{
	size_t count = 0, len = strlen(text), k = 0;
	char **items, *copy;

	for (size_t i = 0; i < len; i++)
		if (!is_list_sep(text[i]) && (i == 0 || is_list_sep(text[i - 1])))
			count++;
	items = malloc((count + 1) * sizeof(*items) + len + 1);
	if (items == NULL)
		return NULL;
	copy = (char *)(items + count + 1);
	memcpy(copy, text, len + 1);
	for (size_t i = 0; i < len; i++) {
		if (is_list_sep(copy[i]))
			copy[i] = '\0';
		else if (i == 0 || copy[i - 1] == '\0')
			items[k++] = copy + i;
	}
	items[k] = NULL;
	if (n != NULL)
		*n = k;
	return items;
}

/* A list: the number of items and their lengths. */
static int
check_list(const struct pgn_module_opt *o, const char *text, char *why,
	   size_t whylen)
{
	size_t count = 0, run = 0;

	for (const char *c = text;; c++) {
		if (*c != '\0' && !is_list_sep(*c)) {
			run++;
			continue;
		}
		if (run > PGN_OPT_LIST_ITEM_MAX) {
			snprintf(why, whylen,
				 "expected items of at most %d bytes",
				 PGN_OPT_LIST_ITEM_MAX);
			return -EINVAL;
		}
		if (run > 0)
			count++;
		run = 0;
		if (*c == '\0')
			break;
	}
	if (o->max > 0 && count > (size_t)o->max) {
		snprintf(why, whylen, "expected at most %ld items", o->max);
		return -EINVAL;
	}
	return 0;
}

/* Parses text as option o into *v.  0, or -EINVAL with why set to what
 * was expected and *near to the closest allowed value, if any. */
static int
parse_value(const struct pgn_module_opt *o, const char *text,
	    struct pgn_modopt_val *v, char *why, size_t whylen,
	    const char **near)
{
	static const char *const yes[] = { "true", "yes", "on", "1", NULL };
	static const char *const no[] = { "false", "no", "off", "0", NULL };
	char list[512];
	char *end;

	v->s = text;
	v->n = 0;
	*near = NULL;
	switch (o->type) {
	case PGN_OPT_BOOL:
		for (size_t i = 0; yes[i] != NULL; i++) {
			if (strcmp(text, yes[i]) == 0) {
				v->n = 1;
				return 0;
			}
			if (strcmp(text, no[i]) == 0)
				return 0;
		}
		snprintf(why, whylen, "expected true or false");
		return -EINVAL;
	case PGN_OPT_INT:
		errno = 0;
		v->n = strtol(text, &end, 10);
		if (errno != 0 || end == text || *end != '\0' ||
		    v->n < o->min || v->n > o->max) {
			snprintf(why, whylen,
				 "expected an integer from %ld to %ld", o->min,
				 o->max);
			return -EINVAL;
		}
		return 0;
	case PGN_OPT_STRING:
		return 0;
	case PGN_OPT_ENUM:
		for (size_t i = 0; o->values != NULL && o->values[i] != NULL;
		     i++) {
			if (strcmp(text, o->values[i]) == 0) {
				v->n = (long)i;
				return 0;
			}
		}
		join(o->values, list, sizeof(list));
		*near = pgn_suggest(text, o->values);
		snprintf(why, whylen, "expected one of: %s", list);
		return -EINVAL;
	case PGN_OPT_LIST:
		return check_list(o, text, why, whylen);
	}
	snprintf(why, whylen, "the module declares an unknown type %d",
		 (int)o->type);
	return -EINVAL;
}

int
pgn_modopt_check(const struct pgn_module_def *def,
		 const struct pgn_cfg_module *cm, const char *cfgpath,
		 struct pgn_modopt_val *vals, char *err, size_t errlen)
{
	const struct pgn_module_opt *opts = def->options;
	size_t n = pgn_modopt_count(opts);
	struct pgn_modopt_val v;
	const char *near;
	char why[640];

	/* The defaults first: a bad one is the module's bug, and it would
	 * otherwise only show when the option is left out. */
	for (size_t i = 0; i < n; i++) {
		const char *d = opts[i].def != NULL ? opts[i].def : "";

		/* A string without default is simply unset (NULL). */
		if (opts[i].def == NULL && opts[i].type == PGN_OPT_STRING) {
			if (vals != NULL)
				vals[i] = (struct pgn_modopt_val){ 0, NULL };
			continue;
		}
		if (parse_value(&opts[i], d, &v, why, sizeof(why), &near) !=
		    0) {
			snprintf(err, errlen,
				 "%s:%d: module %s: default '%s' of option "
				 "%s is invalid (%s): the module is broken",
				 cfgpath, cm->line, cm->name, d, opts[i].name,
				 why);
			return -EINVAL;
		}
		if (vals != NULL)
			vals[i] = v;
	}
	for (size_t k = 0; k < cm->nopts; k++) {
		const struct pgn_cfg_opt *co = &cm->opts[k];
		int line = co->line > 0 ? co->line : cm->line;
		int i = pgn_modopt_find(opts, co->key, 0);

		if (i < 0) {
			char list[512] = "";

			near = pgn_suggest_table(co->key, opts, sizeof(*opts));
			for (size_t j = 0; j < n; j++) {
				size_t o = strlen(list);
				snprintf(list + o, sizeof(list) - o, "%s%s",
					 j ? ", " : "", opts[j].name);
			}
			if (near != NULL)
				snprintf(err, errlen,
					 "%s:%d: module %s: unknown option "
					 "'%s' (did you mean '%s'?)",
					 cfgpath, line, cm->name, co->key,
					 near);
			else
				snprintf(err, errlen,
					 "%s:%d: module %s: unknown option "
					 "'%s' (%s%s)",
					 cfgpath, line, cm->name, co->key,
					 n > 0 ? "its options: " :
						 "it has no options",
					 list);
			return -EINVAL;
		}
		if (co->list && opts[i].type != PGN_OPT_LIST) {
			snprintf(err, errlen,
				 "%s:%d: module %s: option %s: expected a "
				 "single value, got a list",
				 cfgpath, line, cm->name, co->key);
			return -EINVAL;
		}
		if (parse_value(&opts[i], co->value, &v, why, sizeof(why),
				&near) != 0) {
			snprintf(err, errlen,
				 "%s:%d: module %s: option %s: %s, got '%s'%s%s%s",
				 cfgpath, line, cm->name, co->key, why,
				 co->value, near != NULL ? " (did you mean '" : "",
				 near != NULL ? near : "",
				 near != NULL ? "'?)" : "");
			return -EINVAL;
		}
		if (vals != NULL)
			vals[i] = v;
	}
	return 0;
}
