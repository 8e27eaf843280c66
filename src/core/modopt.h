/* Typed module options: checking the `modules:` entries of pigeon.yml
 * against what a module declares (pgn_module_def.options). */
#ifndef PIGEON_MODOPT_H
#define PIGEON_MODOPT_H

#include <stddef.h>

#include "pigeon/config.h"
#include "pigeon/module.h"

/* The parsed value of one option: n for bool, int and enum (the index in
 * values[]), s for the text (borrowed from the config or the def). */
struct pgn_modopt_val {
	long n;
	const char *s;
};

/* Number of entries of a NULL-name-terminated options table (0 if NULL). */
size_t pgn_modopt_count(const struct pgn_module_opt *opts);

/* Checks cm's options against def: every key declared, every value (and
 * every declared default) of its type and in range.  On success fills
 * vals (pgn_modopt_count(def->options) entries; may be NULL for a check
 * only) and returns 0.  Otherwise -EINVAL with err set to
 * "FILE:LINE: module NAME: ..." (with "did you mean" when a declared
 * name is close), file being cfgpath. */
int pgn_modopt_check(const struct pgn_module_def *def,
		     const struct pgn_cfg_module *cm, const char *cfgpath,
		     struct pgn_modopt_val *vals, char *err, size_t errlen);

/* The items of a PGN_OPT_LIST value: text split at commas and white
 * space, empty items skipped, as a NULL-terminated array in one
 * allocation (free() it), and their number in *n (may be NULL).  NULL
 * on allocation failure. */
char **pgn_modopt_split(const char *text, size_t *n);

/* Index of the option name of the given type in opts (any type when type
 * is 0), or -1. */
int pgn_modopt_find(const struct pgn_module_opt *opts, const char *name,
		    enum pgn_opt_type type);

#endif
