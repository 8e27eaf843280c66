/* Node configuration (XEP-0060 §8.2, §16.4): defaults, forms, the store
 * encoding.
 *
 * One table (fields[]) names every option the engine keeps, with its
 * form type and how to read and write it; the forms, the store encoding
 * and the publish-options comparison all go through it, so a new option
 * is one row here (and a member of struct ps_config). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pubsub.h"

/* Bytes of one option value we accept (titles, types, groups). */
#define MAX_VALUE 1024
/* Groups in roster_groups_allowed. */
#define MAX_GROUPS 64

enum kind { K_BOOL, K_ENUM, K_MAX_ITEMS, K_TEXT, K_LIST };

struct field {
	const char *var; /* "pubsub#access_model" */
	const char *key; /* the store key: var without "pubsub#" */
	enum kind kind;
	const char *const *values; /* K_ENUM: by enum value */
	const char *label;
};

static const char *const access_names[] = {"open",	"presence",  "roster",
					   "whitelist", "authorize", NULL};
static const char *const publish_names[] = {"publishers", "subscribers", "open",
					    NULL};
static const char *const send_last_names[] = {"never", "on_sub",
					      "on_sub_and_presence", NULL};
static const char *const notification_names[] = {"headline", "normal", NULL};

static const struct field fields[] = {
	{"pubsub#access_model", "access_model", K_ENUM, access_names,
	 "Who may subscribe and retrieve items"},
	{"pubsub#publish_model", "publish_model", K_ENUM, publish_names,
	 "Who may publish"},
	{"pubsub#send_last_published_item", "send_last_published_item", K_ENUM,
	 send_last_names, "When to send the last published item"},
	{"pubsub#notification_type", "notification_type", K_ENUM,
	 notification_names, "Message type of notifications"},
	{"pubsub#max_items", "max_items", K_MAX_ITEMS, NULL,
	 "Items kept (a number or 'max')"},
	{"pubsub#persist_items", "persist_items", K_BOOL, NULL,
	 "Persist items to storage"},
	{"pubsub#deliver_payloads", "deliver_payloads", K_BOOL, NULL,
	 "Deliver payloads with event notifications"},
	{"pubsub#deliver_notifications", "deliver_notifications", K_BOOL, NULL,
	 "Deliver event notifications"},
	{"pubsub#notify_retract", "notify_retract", K_BOOL, NULL,
	 "Notify subscribers when items are removed"},
	{"pubsub#notify_delete", "notify_delete", K_BOOL, NULL,
	 "Notify subscribers when the node is deleted"},
	{"pubsub#notify_config", "notify_config", K_BOOL, NULL,
	 "Notify subscribers when the configuration changes"},
	{"pubsub#presence_based_delivery", "presence_based_delivery", K_BOOL,
	 NULL, "Deliver notifications only to available users"},
	{"pubsub#title", "title", K_TEXT, NULL, "A friendly name for the node"},
	{"pubsub#type", "type", K_TEXT, NULL, "The payload type"},
	{"pubsub#roster_groups_allowed", "roster_groups_allowed", K_LIST, NULL,
	 "Roster groups allowed to subscribe"},
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

/* Fields of XEP-0060 §16.4 that a client may send and the engine does
 * not keep: accepted (and ignored) so that a form a client fills from
 * our own or another server's configure form does not fail. */
static const char *const ignored_fields[] = {
	"pubsub#description",
	"pubsub#language",
	"pubsub#contact",
	"pubsub#itemreply",
	"pubsub#item_expire",
	"pubsub#max_payload_size",
	"pubsub#notify_sub",
	"pubsub#purge_offline",
	"pubsub#subscribe",
	"pubsub#body_xslt",
	"pubsub#dataform_xslt",
	"pubsub#tempsub",
	"pubsub#children_association_policy",
	"pubsub#collection",
	"pubsub#node_type",
	NULL,
};

/* ---- access to the members by field ------------------------------------ */

static int
get_enum(const struct ps_config *c, const struct field *f)
{
	if (f->values == access_names)
		return (int)c->access_model;
	if (f->values == publish_names)
		return (int)c->publish_model;
	if (f->values == send_last_names)
		return (int)c->send_last_published_item;
	return (int)c->notification_type;
}

static void
set_enum(struct ps_config *c, const struct field *f, int v)
{
	if (f->values == access_names)
		c->access_model = (enum ps_access)v;
	else if (f->values == publish_names)
		c->publish_model = (enum ps_publish_model)v;
	else if (f->values == send_last_names)
		c->send_last_published_item = (enum ps_send_last)v;
	else
		c->notification_type = (enum ps_notification_type)v;
}

static int
get_bool(const struct ps_config *c, const char *key)
{
	if (strcmp(key, "persist_items") == 0)
		return c->persist_items;
	if (strcmp(key, "deliver_payloads") == 0)
		return c->deliver_payloads;
	if (strcmp(key, "deliver_notifications") == 0)
		return c->deliver_notifications;
	if (strcmp(key, "notify_retract") == 0)
		return c->notify_retract;
	if (strcmp(key, "notify_delete") == 0)
		return c->notify_delete;
	if (strcmp(key, "notify_config") == 0)
		return c->notify_config;
	return c->presence_based_delivery;
}

static void
set_bool(struct ps_config *c, const char *key, int v)
{
	v = v != 0;
	if (strcmp(key, "persist_items") == 0)
		c->persist_items = v;
	else if (strcmp(key, "deliver_payloads") == 0)
		c->deliver_payloads = v;
	else if (strcmp(key, "deliver_notifications") == 0)
		c->deliver_notifications = v;
	else if (strcmp(key, "notify_retract") == 0)
		c->notify_retract = v;
	else if (strcmp(key, "notify_delete") == 0)
		c->notify_delete = v;
	else if (strcmp(key, "notify_config") == 0)
		c->notify_config = v;
	else
		c->presence_based_delivery = v;
}

static char **
text_slot(struct ps_config *c, const char *key)
{
	if (strcmp(key, "title") == 0)
		return &c->title;
	if (strcmp(key, "type") == 0)
		return &c->type;
	return &c->roster_groups_allowed;
}

/* ---- defaults, copy -------------------------------------------------- */

void
ps_config_default(struct ps_config *c, int pep)
{
	memset(c, 0, sizeof(*c));
	c->publish_model = PS_PUBLISH_PUBLISHERS;
	c->notification_type = PS_NOTIFY_HEADLINE;
	c->max_items = 1;
	c->deliver_payloads = 1;
	c->deliver_notifications = 1;
	c->notify_retract = 1;
	c->notify_delete = 1;
	c->notify_config = 0;
	if (pep) {
		/* XEP-0163 §8: presence access, persistent, one item, last
		 * item on subscription and presence. */
		c->access_model = PS_ACCESS_PRESENCE;
		c->persist_items = 1;
		c->send_last_published_item = PS_SEND_LAST_ON_SUB_AND_PRESENCE;
	} else {
		c->access_model = PS_ACCESS_OPEN;
		c->persist_items = 1;
		c->max_items = 10;
		c->send_last_published_item = PS_SEND_LAST_NEVER;
	}
}

void
ps_config_clear(struct ps_config *c)
{
	free(c->title);
	free(c->type);
	free(c->roster_groups_allowed);
	c->title = c->type = c->roster_groups_allowed = NULL;
}

static int
dup_or_null(char **dst, const char *src)
{
	*dst = NULL;
	if (src != NULL && (*dst = strdup(src)) == NULL)
		return -ENOMEM;
	return 0;
}

int
ps_config_copy(struct ps_config *dst, const struct ps_config *src)
{
	*dst = *src;
	dst->title = dst->type = dst->roster_groups_allowed = NULL;
	if (dup_or_null(&dst->title, src->title) < 0 ||
	    dup_or_null(&dst->type, src->type) < 0 ||
	    dup_or_null(&dst->roster_groups_allowed,
			src->roster_groups_allowed) < 0) {
		ps_config_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

/* ---- values ---------------------------------------------------------- */

/* XML Schema boolean (XEP-0004 §3.3). */
static int
parse_bool(const char *s)
{
	if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0)
		return 1;
	if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0)
		return 0;
	return -1;
}

static int
parse_enum(const char *const *names, const char *s)
{
	for (int i = 0; names[i] != NULL; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

/* A max_items value: a positive number, or "max".  0 or -EINVAL. */
static int
parse_max_items(const char *s, long limit, long *out)
{
	char *end;
	long v;

	if (strcmp(s, "max") == 0) {
		*out = PS_MAX_ITEMS_MAX;
		return 0;
	}
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > limit)
		return -EINVAL;
	*out = v;
	return 0;
}

static const struct field *
find_field(const char *var)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strcmp(fields[i].var, var) == 0)
			return &fields[i];
	return NULL;
}

static const struct field *
find_key(const char *key)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strcmp(fields[i].key, key) == 0)
			return &fields[i];
	return NULL;
}

static int
ignored(const char *var)
{
	for (size_t i = 0; ignored_fields[i] != NULL; i++)
		if (strcmp(ignored_fields[i], var) == 0)
			return 1;
	return 0;
}

/* Sets field f of c from its text form (one value; K_LIST: the values
 * joined by '\n').  0, -EINVAL, -ENOMEM. */
static int
set_value(struct ps_config *c, const struct field *f, const char *v,
	  long max_items_limit)
{
	int i;
	long n;
	char *s;

	switch (f->kind) {
	case K_BOOL:
		if ((i = parse_bool(v)) < 0)
			return -EINVAL;
		set_bool(c, f->key, i);
		return 0;
	case K_ENUM:
		if ((i = parse_enum(f->values, v)) < 0)
			return -EINVAL;
		set_enum(c, f, i);
		return 0;
	case K_MAX_ITEMS:
		if (parse_max_items(v, max_items_limit, &n) < 0)
			return -EINVAL;
		c->max_items = n;
		return 0;
	case K_TEXT:
	case K_LIST:
		if (strlen(v) > MAX_VALUE)
			return -EINVAL;
		s = v[0] != '\0' ? strdup(v) : NULL;
		if (v[0] != '\0' && s == NULL)
			return -ENOMEM;
		free(*text_slot(c, f->key));
		*text_slot(c, f->key) = s;
		return 0;
	}
	return -EINVAL;
}

/* The text form of field f of c into buf (K_TEXT / K_LIST: the string
 * itself is returned, "" when unset). */
static const char *
get_value(const struct ps_config *c, const struct field *f, char *buf,
	  size_t len)
{
	const char *s;

	switch (f->kind) {
	case K_BOOL:
		return get_bool(c, f->key) ? "1" : "0";
	case K_ENUM:
		return f->values[get_enum(c, f)];
	case K_MAX_ITEMS:
		if (c->max_items == PS_MAX_ITEMS_MAX)
			return "max";
		snprintf(buf, len, "%ld", c->max_items);
		return buf;
	case K_TEXT:
	case K_LIST:
		s = *text_slot((struct ps_config *)c, f->key);
		return s != NULL ? s : "";
	}
	return "";
}

/* ---- forms ----------------------------------------------------------- */

/* The values of a form field: K_LIST joined by '\n', others the first
 * value ("" when none).  Malloc'd or NULL (-ENOMEM / too big). */
static char *
field_value(const struct pgn_xml *field, int list)
{
	char *out = NULL;
	size_t len = 0, n = 0;

	for (struct pgn_xml *v = pgn_xml_first_child(field); v != NULL;
	     v = pgn_xml_next(v)) {
		char *t, *p;
		size_t tl;

		if (strcmp(pgn_xml_name(v), "value") != 0)
			continue;
		if ((t = pgn_xml_text(v)) == NULL)
			goto fail;
		tl = strlen(t);
		if (strchr(t, '\n') != NULL && list) {
			free(t); /* a group name cannot hold the separator */
			goto fail;
		}
		if (++n > MAX_GROUPS || len + tl + 2 > MAX_VALUE + 2 ||
		    (p = realloc(out, len + tl + 2)) == NULL) {
			free(t);
			goto fail;
		}
		out = p;
		if (len > 0)
			out[len++] = '\n';
		memcpy(out + len, t, tl + 1);
		len += tl;
		free(t);
		if (!list)
			break;
	}
	if (out == NULL)
		out = strdup("");
	return out;
fail:
	free(out);
	return NULL;
}

/* The FORM_TYPE of x, or NULL. */
static char *
form_type(const struct pgn_xml *x)
{
	for (struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
	     f = pgn_xml_next(f)) {
		const char *var = pgn_xml_attr(f, "var");
		if (strcmp(pgn_xml_name(f), "field") == 0 && var != NULL &&
		    strcmp(var, "FORM_TYPE") == 0)
			return field_value(f, 0);
	}
	return NULL;
}

int
ps_config_apply_form(struct ps_config *c, const struct pgn_xml *x,
		     long max_items_limit, const char **bad)
{
	struct ps_config tmp;
	char *ft = form_type(x);
	int publish_options, rc = 0;

	*bad = NULL;
	if (ft == NULL)
		return -EINVAL;
	publish_options = strcmp(ft, PS_FORM_PUBLISH_OPTIONS) == 0;
	if (!publish_options && strcmp(ft, PS_FORM_NODE_CONFIG) != 0) {
		free(ft);
		return -EINVAL;
	}
	free(ft);
	if (ps_config_copy(&tmp, c) < 0)
		return -ENOMEM;
	for (struct pgn_xml *f = pgn_xml_first_child(x); f != NULL;
	     f = pgn_xml_next(f)) {
		const char *var = pgn_xml_attr(f, "var");
		const struct field *fd;
		char *v;

		if (strcmp(pgn_xml_name(f), "field") != 0 || var == NULL ||
		    strcmp(var, "FORM_TYPE") == 0)
			continue;
		if ((fd = find_field(var)) == NULL) {
			/* XEP-0060 §7.1.5: publish-options may carry
			 * preconditions of other specifications. */
			if (ignored(var) || (publish_options &&
					     strncmp(var, "pubsub#", 7) != 0))
				continue;
			*bad = var;
			rc = -EINVAL;
			break;
		}
		if ((v = field_value(f, fd->kind == K_LIST)) == NULL) {
			*bad = var;
			rc = -EINVAL;
			break;
		}
		rc = set_value(&tmp, fd, v, max_items_limit);
		free(v);
		if (rc < 0) {
			*bad = var;
			break;
		}
	}
	if (rc < 0) {
		ps_config_clear(&tmp);
		return rc;
	}
	ps_config_clear(c);
	*c = tmp;
	return 0;
}

int
ps_config_satisfies(const struct ps_config *c, const struct pgn_xml *x)
{
	struct ps_config want;
	const char *bad;
	char *a, *b;
	int rc;

	if (ps_config_copy(&want, c) < 0)
		return -ENOMEM;
	rc = ps_config_apply_form(&want, x, LONG_MAX, &bad);
	if (rc == -EINVAL && bad != NULL && strncmp(bad, "pubsub#", 7) == 0) {
		/* A precondition on an option we do not have, or a value
		 * the node cannot have: not met (§7.1.5). */
		ps_config_clear(&want);
		return 0;
	}
	if (rc < 0) {
		ps_config_clear(&want);
		return rc;
	}
	a = ps_config_encode(c);
	b = ps_config_encode(&want);
	rc = a == NULL || b == NULL ? -ENOMEM : strcmp(a, b) == 0;
	free(a);
	free(b);
	ps_config_clear(&want);
	return rc;
}

static struct pgn_xml *
add_field(struct pgn_xml *x, const char *var, const char *type,
	  const char *label)
{
	struct pgn_xml *f = pgn_xml_add_child(x, NULL, "field");

	if (f == NULL || pgn_xml_set_attr(f, "var", var) != 0 ||
	    (type != NULL && pgn_xml_set_attr(f, "type", type) != 0) ||
	    (label != NULL && pgn_xml_set_attr(f, "label", label) != 0))
		return NULL;
	return f;
}

static int
add_value(struct pgn_xml *parent, const char *name, const char *text)
{
	struct pgn_xml *v = pgn_xml_add_child(parent, NULL, name);

	if (v == NULL || pgn_xml_add_text(v, text, strlen(text)) != 0)
		return -ENOMEM;
	return 0;
}

static int
add_option(struct pgn_xml *f, const char *value)
{
	struct pgn_xml *o = pgn_xml_add_child(f, NULL, "option");

	if (o == NULL || pgn_xml_set_attr(o, "label", value) != 0)
		return -ENOMEM;
	return add_value(o, "value", value);
}

struct pgn_xml *
ps_config_form(const struct ps_config *c, const char *node)
{
	struct pgn_xml *x = pgn_xml_new(PS_NS_XDATA, "x"), *f;
	char buf[32];

	(void)node;
	if (x == NULL || pgn_xml_set_attr(x, "type", "form") != 0 ||
	    (f = add_field(x, "FORM_TYPE", "hidden", NULL)) == NULL ||
	    add_value(f, "value", PS_FORM_NODE_CONFIG) < 0)
		goto fail;
	for (size_t i = 0; i < NFIELDS; i++) {
		const struct field *fd = &fields[i];
		static const char *const types[] = {[K_BOOL] = "boolean",
						    [K_ENUM] = "list-single",
						    [K_MAX_ITEMS] =
							    "text-single",
						    [K_TEXT] = "text-single",
						    [K_LIST] = "list-multi"};
		const char *v = get_value(c, fd, buf, sizeof(buf));

		if ((f = add_field(x, fd->var, types[fd->kind], fd->label)) ==
		    NULL)
			goto fail;
		if (fd->kind == K_ENUM)
			for (size_t j = 0; fd->values[j] != NULL; j++)
				if (add_option(f, fd->values[j]) < 0)
					goto fail;
		if (fd->kind == K_LIST) {
			/* One <value/> per group. */
			const char *p = v;
			while (*p != '\0') {
				const char *e = strchr(p, '\n');
				size_t n =
					e != NULL ? (size_t)(e - p) : strlen(p);
				char g[MAX_VALUE + 1];
				if (n > MAX_VALUE)
					n = MAX_VALUE;
				memcpy(g, p, n);
				g[n] = '\0';
				if (add_value(f, "value", g) < 0)
					goto fail;
				p += e != NULL ? (size_t)(e - p) + 1 : n;
			}
		} else if (add_value(f, "value", v) < 0) {
			goto fail;
		}
	}
	return x;
fail:
	pgn_xml_free(x);
	return NULL;
}

/* ---- store encoding -------------------------------------------------- */

/* Appends "key=value\n" to *out (len, cap), escaping '\\' and '\n'. */
static int
put(char **out, size_t *len, size_t *cap, const char *key, const char *v)
{
	size_t need = strlen(key) + 2 * strlen(v) + 3;

	if (*len + need > *cap) {
		size_t nc = (*cap + need) * 2;
		char *p = realloc(*out, nc);
		if (p == NULL)
			return -ENOMEM;
		*out = p;
		*cap = nc;
	}
	*len += (size_t)sprintf(*out + *len, "%s=", key);
	for (const char *s = v; *s != '\0'; s++) {
		if (*s == '\\' || *s == '\n') {
			(*out)[(*len)++] = '\\';
			(*out)[(*len)++] = *s == '\n' ? 'n' : '\\';
		} else {
			(*out)[(*len)++] = *s;
		}
	}
	(*out)[(*len)++] = '\n';
	(*out)[*len] = '\0';
	return 0;
}

char *
ps_config_encode(const struct ps_config *c)
{
	char *out = NULL, buf[32];
	size_t len = 0, cap = 0;

	for (size_t i = 0; i < NFIELDS; i++) {
		const struct field *fd = &fields[i];
		if ((fd->kind == K_TEXT || fd->kind == K_LIST) &&
		    *text_slot((struct ps_config *)c, fd->key) == NULL)
			continue;
		if (put(&out, &len, &cap, fd->key,
			get_value(c, fd, buf, sizeof(buf))) < 0) {
			free(out);
			return NULL;
		}
	}
	if (out == NULL)
		out = strdup("");
	return out;
}

int
ps_config_decode(struct ps_config *c, const char *text, int pep)
{
	const char *p = text;
	int rc = 0;

	ps_config_default(c, pep);
	while (*p != '\0') {
		const char *eol = strchr(p, '\n');
		size_t n = eol != NULL ? (size_t)(eol - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		char key[64], *v;
		const struct field *fd;
		size_t kl, vl = 0;

		if (eq == NULL || (kl = (size_t)(eq - p)) >= sizeof(key)) {
			rc = -EINVAL;
			goto next;
		}
		memcpy(key, p, kl);
		key[kl] = '\0';
		if ((fd = find_key(key)) == NULL)
			goto next; /* another version's option */
		if ((v = malloc(n - kl)) == NULL) {
			ps_config_clear(c);
			return -ENOMEM;
		}
		for (const char *s = eq + 1; s < p + n; s++) {
			if (*s == '\\' && s + 1 < p + n) {
				s++;
				v[vl++] = *s == 'n' ? '\n' : *s;
			} else {
				v[vl++] = *s;
			}
		}
		v[vl] = '\0';
		if (set_value(c, fd, v, LONG_MAX) == -ENOMEM) {
			free(v);
			ps_config_clear(c);
			return -ENOMEM;
		}
		free(v);
	next:
		p += n;
		if (*p == '\n')
			p++;
	}
	return rc;
}

/* ---- affiliations ---------------------------------------------------- */

static const char *const aff_names[] = {
	[PS_AFF_NONE] = "none",
	[PS_AFF_OUTCAST] = "outcast",
	[PS_AFF_MEMBER] = "member",
	[PS_AFF_PUBLISH_ONLY] = "publish-only",
	[PS_AFF_PUBLISHER] = "publisher",
	[PS_AFF_OWNER] = "owner",
};

const char *
ps_affiliation_name(enum ps_affiliation a)
{
	if ((unsigned)a >= sizeof(aff_names) / sizeof(aff_names[0]))
		return "none";
	return aff_names[a];
}

int
ps_affiliation_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(aff_names) / sizeof(aff_names[0]); i++)
		if (strcmp(aff_names[i], name) == 0)
			return (int)i;
	return -1;
}
