/* Stanzas: the XML tree plus its routing summary, parsed once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/module.h"

void
pgn_stanza_refresh(struct pgn_stanza *st)
{
	const char *name = pgn_xml_name(st->xml);
	if (strcmp(name, "message") == 0)
		st->kind = PGN_STANZA_MESSAGE;
	else if (strcmp(name, "presence") == 0)
		st->kind = PGN_STANZA_PRESENCE;
	else if (strcmp(name, "iq") == 0)
		st->kind = PGN_STANZA_IQ;
	else
		st->kind = PGN_STANZA_OTHER;
	st->type = pgn_xml_attr(st->xml, "type");
	st->id = pgn_xml_attr(st->xml, "id");
}

struct pgn_stanza *
pgn_stanza_new(struct pgn_xml *xml, int *bad_jid)
{
	struct pgn_stanza *st = calloc(1, sizeof(*st));
	const char *a;

	if (bad_jid != NULL)
		*bad_jid = 0;
	if (st == NULL) {
		pgn_xml_free(xml);
		return NULL;
	}
	st->xml = xml;
	a = pgn_xml_attr(xml, "to");
	if (a != NULL && pgn_jid_parse(a, &st->to) != 0)
		goto bad;
	a = pgn_xml_attr(xml, "from");
	if (a != NULL && pgn_jid_parse(a, &st->from) != 0)
		goto bad;
	/* Keep the xml in its prepared form so every hop sees one spelling. */
	if (st->to != NULL && pgn_xml_set_attr(xml, "to", st->to->full) != 0)
		goto fail;
	if (st->from != NULL &&
	    pgn_xml_set_attr(xml, "from", st->from->full) != 0)
		goto fail;
	pgn_stanza_refresh(st);
	return st;
bad:
	if (bad_jid != NULL)
		*bad_jid = 1;
fail:
	pgn_stanza_free(st);
	return NULL;
}

static void
write_free(struct pgn_stanza_write *w)
{
	if (w == NULL)
		return;
	if (w->params != NULL)
		for (int i = 0; i < w->nparams; i++)
			free(w->params[i]);
	free(w->params);
	free(w->sql);
	free(w);
}

void
pgn_stanza_free(struct pgn_stanza *st)
{
	if (st == NULL)
		return;
	pgn_xml_free(st->xml);
	pgn_jid_free(st->to);
	pgn_jid_free(st->from);
	while (st->writes != NULL) {
		struct pgn_stanza_write *w = st->writes;

		st->writes = w->next;
		write_free(w);
	}
	free(st);
}

int
pgn_stanza_add_write(struct pgn_stanza *st, const char *sql, int nparams,
		     const char *const *params)
{
	struct pgn_stanza_write *w, **tail;

	if (st == NULL || sql == NULL || nparams < 0 ||
	    (nparams > 0 && params == NULL))
		return -EINVAL;
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->sql = strdup(sql)) == NULL)
		goto fail;
	if (nparams > 0 &&
	    (w->params = calloc((size_t)nparams, sizeof(char *))) == NULL)
		goto fail;
	w->nparams = nparams;
	for (int i = 0; i < nparams; i++)
		if (params[i] != NULL &&
		    (w->params[i] = strdup(params[i])) == NULL)
			goto fail;
	for (tail = &st->writes; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = w;
	return 0;
fail:
	write_free(w);
	return -ENOMEM;
}

static int
set_addr(struct pgn_stanza *st, struct pgn_jid **slot, const char *attr,
	 const struct pgn_jid *jid)
{
	struct pgn_jid *copy = NULL;
	if (jid != NULL && (copy = pgn_jid_copy(jid)) == NULL)
		return -ENOMEM;
	if (pgn_xml_set_attr(st->xml, attr, copy ? copy->full : NULL) != 0) {
		pgn_jid_free(copy);
		return -ENOMEM;
	}
	pgn_jid_free(*slot);
	*slot = copy;
	pgn_stanza_refresh(st); /* attribute storage may have moved */
	return 0;
}

int
pgn_stanza_set_to(struct pgn_stanza *st, const struct pgn_jid *jid)
{
	return set_addr(st, &st->to, "to", jid);
}

int
pgn_stanza_set_from(struct pgn_stanza *st, const struct pgn_jid *jid)
{
	return set_addr(st, &st->from, "from", jid);
}

/* A reply skeleton: same element name and id, addresses swapped. */
static struct pgn_stanza *
reply_skeleton(const struct pgn_stanza *req, struct pgn_xml *xml,
	       const char *type)
{
	struct pgn_stanza *st;

	if (xml == NULL)
		return NULL;
	if (pgn_xml_set_attr(xml, "type", type) != 0 ||
	    (req->id != NULL && pgn_xml_set_attr(xml, "id", req->id) != 0)) {
		pgn_xml_free(xml);
		return NULL;
	}
	pgn_xml_set_attr(xml, "to", NULL);
	pgn_xml_set_attr(xml, "from", NULL);
	st = pgn_stanza_new(xml, NULL);
	if (st == NULL)
		return NULL;
	if (pgn_stanza_set_to(st, req->from) != 0 ||
	    pgn_stanza_set_from(st, req->to) != 0) {
		pgn_stanza_free(st);
		return NULL;
	}
	return st;
}

struct pgn_stanza *
pgn_stanza_iq_result(const struct pgn_stanza *req, struct pgn_xml *payload)
{
	struct pgn_xml *xml = pgn_xml_new(PGN_NS_CLIENT, "iq");
	if (xml != NULL && payload != NULL)
		pgn_xml_append(xml, payload);
	else
		pgn_xml_free(payload);
	return reply_skeleton(req, xml, "result");
}

/* Whether a stanza is small enough to echo in an error. */
#define ECHO_MAX 4096

static int
small_enough(const struct pgn_xml *xml)
{
	char *text = pgn_xml_to_string(xml, PGN_NS_CLIENT);
	int ok = text != NULL && strlen(text) <= ECHO_MAX;
	free(text);
	return ok;
}

/* XEP-0086 §2: the legacy code of each RFC 6120 condition, for the
 * clients that read only 'code'.  policy-violation (RFC 6120, newer than
 * XEP-0086) gets 403, the legacy code of refusing by policy. */
static const struct {
	const char *condition;
	int code;
} legacy_codes[] = {
	{"bad-request", 400},
	{"conflict", 409},
	{"feature-not-implemented", 501},
	{"forbidden", 403},
	{"gone", 302},
	{"internal-server-error", 500},
	{"item-not-found", 404},
	{"jid-malformed", 400},
	{"not-acceptable", 406},
	{"not-allowed", 405},
	{"not-authorized", 401},
	{"payment-required", 402},
	{"policy-violation", 403},
	{"recipient-unavailable", 404},
	{"redirect", 302},
	{"registration-required", 407},
	{"remote-server-not-found", 404},
	{"remote-server-timeout", 504},
	{"resource-constraint", 500},
	{"service-unavailable", 503},
	{"subscription-required", 407},
	{"undefined-condition", 500},
	{"unexpected-request", 400},
};

int
pgn_stanza_error_code(const char *condition)
{
	if (condition != NULL)
		for (size_t i = 0;
		     i < sizeof(legacy_codes) / sizeof(legacy_codes[0]); i++)
			if (strcmp(legacy_codes[i].condition, condition) == 0)
				return legacy_codes[i].code;
	/* What undefined-condition maps to: an unknown condition is one. */
	return 500;
}

struct pgn_xml *
pgn_stanza_add_error(struct pgn_xml *xml, const char *type,
		     const char *condition, const char *text,
		     struct pgn_xml *app)
{
	struct pgn_xml *err, *c;
	char code[8];

	snprintf(code, sizeof(code), "%d", pgn_stanza_error_code(condition));
	err = pgn_xml_add_child(xml, PGN_NS_CLIENT, "error");
	if (err == NULL || pgn_xml_set_attr(err, "type", type) != 0 ||
	    pgn_xml_set_attr(err, "code", code) != 0)
		goto fail;
	c = pgn_xml_add_child(err, PGN_NS_STANZAS, condition);
	if (c == NULL)
		goto fail;
	if (text != NULL) {
		c = pgn_xml_add_child(err, PGN_NS_STANZAS, "text");
		if (c == NULL || pgn_xml_add_text(c, text, strlen(text)) != 0)
			goto fail;
	}
	/* RFC 6120 §8.3.2: the application condition comes last. */
	if (app != NULL)
		pgn_xml_append(err, app);
	return err;
fail:
	pgn_xml_free(app);
	if (err != NULL) {
		pgn_xml_unlink(err);
		pgn_xml_free(err);
	}
	return NULL;
}

struct pgn_stanza *
pgn_stanza_error_reply_app(const struct pgn_stanza *st, const char *type,
			   const char *condition, const char *text,
			   struct pgn_xml *app)
{
	struct pgn_xml *xml;

	/* Messages and presences carry their payload back (RFC 6120 §8.3.1
	 * allows it and clients use it to match the failed message), unless
	 * it is big: a sender must not get its megabytes back once per
	 * failure (and be cut off for not reading them).  An iq error carries
	 * only the error. */
	if (st->kind == PGN_STANZA_IQ || !small_enough(st->xml))
		xml = pgn_xml_new(PGN_NS_CLIENT, pgn_xml_name(st->xml));
	else
		xml = pgn_xml_copy(st->xml);
	if (xml == NULL) {
		pgn_xml_free(app);
		return NULL;
	}
	if (pgn_stanza_add_error(xml, type, condition, text, app) == NULL) {
		pgn_xml_free(xml);
		return NULL;
	}
	return reply_skeleton(st, xml, "error");
}

struct pgn_stanza *
pgn_stanza_error_reply(const struct pgn_stanza *st, const char *type,
		       const char *condition, const char *text)
{
	return pgn_stanza_error_reply_app(st, type, condition, text, NULL);
}
