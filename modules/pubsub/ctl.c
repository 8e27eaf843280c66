/* pigeonctl for PubSub and PEP: the nodes of an account (or of the
 * generic service), deleting one, and the figures of `pigeonctl stats`.
 * Read straight from the tables of schemas/<driver>/014_pubsub.sql; a
 * node deleted here is announced to its subscribers as a client's delete
 * is (ps_notify_delete before the DELETE: the store runs queries in
 * order, so notify.c still sees the node's subscriptions).
 *
 * Every command's arg is the module's data: the instance's struct
 * ps_engine (mod_pep and mod_pubsub both set it as their data). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/ctl.h"
#include "pigeon/jid.h"
#include "pigeon/store.h"
#include "pubsub.h"

/* The bytes of an item's payload: the drivers spell it differently
 * (SQLite's length() counts characters of a TEXT). */
#define LEN_PGSQL "octet_length(i.payload)"
#define LEN_SQLITE "length(CAST(i.payload AS BLOB))"

/* The nodes of a service, with their items and payload bytes.  For PEP
 * the account's row comes first (LEFT JOIN) so that an unknown account
 * is told from one without nodes: a row with a NULL node. */
#define SQL_PEP_NODES(LEN)                                                  \
	"SELECT n.node, count(i.item_id), COALESCE(sum(" LEN "), 0) "       \
	"FROM accounts a "                                                  \
	"LEFT JOIN pubsub_node n ON n.host = a.host AND "                   \
	"n.username = a.username "                                          \
	"LEFT JOIN pubsub_item i ON i.node_id = n.id "                      \
	"WHERE a.host = $1 AND a.username = $2 "                            \
	"GROUP BY n.id, n.node ORDER BY n.node"
#define SQL_SERVICE_NODES(LEN)                                              \
	"SELECT n.node, count(i.item_id), COALESCE(sum(" LEN "), 0) "       \
	"FROM pubsub_node n LEFT JOIN pubsub_item i ON i.node_id = n.id "   \
	"WHERE n.service = $1 GROUP BY n.id, n.node ORDER BY n.node"

/* PEP figures of a host: accounts with nodes, their nodes, items and
 * bytes, and the largest account's of each (one pass, one row per
 * account in the inner query). */
#define SQL_PEP_STATS(LEN)                                                  \
	"SELECT count(*), COALESCE(sum(nodes), 0), COALESCE(sum(items), 0), " \
	"COALESCE(sum(bytes), 0), COALESCE(max(nodes), 0), "                \
	"COALESCE(max(items), 0), COALESCE(max(bytes), 0) FROM ("           \
	"SELECT n.username, count(DISTINCT n.id) AS nodes, "                \
	"count(i.item_id) AS items, COALESCE(sum(" LEN "), 0) AS bytes "    \
	"FROM pubsub_node n LEFT JOIN pubsub_item i ON i.node_id = n.id "   \
	"WHERE n.host = $1 AND n.username IS NOT NULL "                     \
	"GROUP BY n.username) AS u"
#define SQL_SERVICE_STATS(LEN)                                              \
	"SELECT count(DISTINCT n.id), count(i.item_id), "                   \
	"COALESCE(sum(" LEN "), 0), (SELECT count(*) FROM "                 \
	"pubsub_subscription s JOIN pubsub_node m ON m.id = s.node_id "     \
	"WHERE m.service = $1) "                                            \
	"FROM pubsub_node n LEFT JOIN pubsub_item i ON i.node_id = n.id "   \
	"WHERE n.service = $1"

static const char *
pick(const struct ps_engine *e, const char *pgsql, const char *sqlite)
{
	return strcmp(pgn_store_driver(e->store), "pgsql") == 0 ? pgsql
								: sqlite;
}

static int64_t
value_int(const struct pgn_store_result *res, int row, int col)
{
	const char *v = pgn_store_value(res, row, col);
	return v != NULL ? strtoll(v, NULL, 10) : 0;
}

/* A pigeonctl request waiting for the store.  Owns its strings. */
struct ctl_req {
	struct ps_engine *e;
	struct pgn_command *cmd;
	char *service;  /* the PEP owner's bare JID, or the domain */
	char *user;     /* PEP: the prepared localpart */
	char *node;
};

static void
req_free(struct ctl_req *q)
{
	if (q == NULL)
		return;
	free(q->service);
	free(q->user);
	free(q->node);
	free(q);
}

/* A request for e's service: for PEP the account user@host (prepared,
 * on e's host), else e's own domain.  NULL after answering cmd. */
static struct ctl_req *
req_new(struct ps_engine *e, struct pgn_command *cmd, const char *user,
	const char *host, const char *node)
{
	struct ctl_req *q = calloc(1, sizeof(*q));
	struct pgn_jid *j = NULL;

	if (q == NULL)
		goto nomem;
	q->e = e;
	q->cmd = cmd;
	if (e->pep) {
		if (pgn_jid_make(user, host, NULL, &j) != 0 || j->node == NULL) {
			pgn_command_reply(cmd, PGN_CTL_USAGE,
					  "invalid user or host");
			goto fail;
		}
		if (strcmp(j->domain, pgn_host_name(e->host)) != 0) {
			pgn_command_reply(cmd, PGN_CTL_ERROR,
					  "not a local host");
			goto fail;
		}
		q->service = strdup(j->bare);
		if ((q->user = strdup(j->node)) == NULL)
			goto nomem;
	} else {
		q->service = e->domain != NULL ? strdup(e->domain) : NULL;
	}
	if (q->service == NULL ||
	    (node != NULL && (q->node = strdup(node)) == NULL))
		goto nomem;
	pgn_jid_free(j);
	return q;
nomem:
	pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
fail:
	pgn_jid_free(j);
	req_free(q);
	return NULL;
}

/* ---- get_pubsub_nodes ---- */

static void
nodes_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ctl_req *q = arg;
	char *out = NULL;
	size_t len = 1;
	int rows = 0;

	(void)owner;
	if (res->error != 0) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "storage error");
		goto out;
	}
	if (q->e->pep && res->nrows == 0) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "unknown user");
		goto out;
	}
	for (int r = 0; r < res->nrows; r++)
		if (pgn_store_value(res, r, 0) != NULL)
			len += strlen(pgn_store_value(res, r, 0)) + 48;
	if ((out = malloc(len)) == NULL) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "out of memory");
		goto out;
	}
	out[0] = '\0';
	for (int r = 0; r < res->nrows; r++) {
		const char *node = pgn_store_value(res, r, 0);
		char *p = out + strlen(out);

		if (node == NULL) /* the account's row: no node */
			continue;
		/* One line per node: a control character (a tab, a
		 * newline in a node name) becomes a space. */
		for (const char *c = node; *c != '\0'; c++)
			*p++ = (unsigned char)*c < 0x20 ? ' ' : *c;
		sprintf(p, "\t%" PRId64 "\t%" PRId64 "\n",
			value_int(res, r, 1), value_int(res, r, 2));
		rows++;
	}
	pgn_command_reply(q->cmd, PGN_CTL_OK, rows > 0 ? out : NULL);
out:
	free(out);
	req_free(q);
}

static void
list_nodes(struct ps_engine *e, struct pgn_command *cmd, const char *user,
	   const char *host)
{
	struct ctl_req *q = req_new(e, cmd, user, host, NULL);
	const char *sql;
	const char *params[2];
	int n;

	if (q == NULL)
		return;
	if (e->pep) {
		sql = pick(e, SQL_PEP_NODES(LEN_PGSQL),
			   SQL_PEP_NODES(LEN_SQLITE));
		params[0] = pgn_host_name(e->host);
		params[1] = q->user;
		n = 2;
	} else {
		sql = pick(e, SQL_SERVICE_NODES(LEN_PGSQL),
			   SQL_SERVICE_NODES(LEN_SQLITE));
		params[0] = q->service;
		n = 1;
	}
	if (pgn_store_query(e->store, sql, n, params, 0, nodes_done, q) != 0) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error");
		req_free(q);
	}
}

/* get_pubsub_nodes USER HOST */
static void
cmd_pep_nodes(struct pgn_command *cmd, int argc, char *const *argv,
	      void *arg)
{
	(void)argc;
	list_nodes(arg, cmd, argv[0], argv[1]);
}

/* get_pubsub_service_nodes HOST */
static void
cmd_service_nodes(struct pgn_command *cmd, int argc, char *const *argv,
		  void *arg)
{
	(void)argc;
	(void)argv;
	list_nodes(arg, cmd, NULL, NULL);
}

/* ---- delete_pubsub_node ---- */

static void
delete_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ctl_req *q = arg;

	(void)owner;
	if (res->error != 0)
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "storage error");
	else if (res->changes == 0) /* deleted meanwhile */
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "no such node");
	else
		pgn_command_reply(q->cmd, PGN_CTL_OK, NULL);
	req_free(q);
}

static void
found_node(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ctl_req *q = arg;
	const char *id = pgn_store_value(res, 0, 0);
	struct ps_config config;
	struct ps_node_ref ref;

	(void)owner;
	if (res->error != 0) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "storage error");
		goto fail;
	}
	if (res->nrows != 1 || id == NULL) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "no such node");
		goto fail;
	}
	/* A configuration that does not decode is still deleted: the
	 * notification then follows the defaults. */
	if (ps_config_decode(&config, pgn_store_value(res, 0, 1) != NULL
					      ? pgn_store_value(res, 0, 1)
					      : "",
			     q->e->pep) != 0)
		ps_config_default(&config, q->e->pep);
	ref.id = strtoll(id, NULL, 10);
	ref.service = q->service;
	ref.node = q->node;
	ref.config = &config;
	ps_notify_delete(q->e, &ref, NULL);
	ps_config_clear(&config);
	if (ps_store_node_delete(q->e, ref.id, delete_done, q) != 0) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "storage error");
		goto fail;
	}
	return;
fail:
	req_free(q);
}

static void
delete_node(struct ps_engine *e, struct pgn_command *cmd, const char *user,
	    const char *host, const char *node)
{
	struct ctl_req *q = req_new(e, cmd, user, host, node);

	if (q == NULL)
		return;
	/* Columns id, config (and an affiliation of nobody's). */
	if (ps_store_node_get(e, q->service, q->node, "", found_node, q) !=
	    0) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error");
		req_free(q);
	}
}

/* delete_pubsub_node USER HOST NODE */
static void
cmd_pep_delete(struct pgn_command *cmd, int argc, char *const *argv,
	       void *arg)
{
	(void)argc;
	delete_node(arg, cmd, argv[0], argv[1], argv[2]);
}

/* delete_pubsub_service_node HOST NODE */
static void
cmd_service_delete(struct pgn_command *cmd, int argc, char *const *argv,
		   void *arg)
{
	(void)argc;
	delete_node(arg, cmd, NULL, NULL, argv[1]);
}

/* ---- figures ---- */

static void
stats_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ctl_req *q = arg;
	char text[512];

	(void)owner;
	if (res->error != 0 || res->nrows != 1) {
		pgn_command_reply(q->cmd, PGN_CTL_ERROR, "storage error");
		req_free(q);
		return;
	}
	if (q->e->pep)
		snprintf(text, sizeof(text),
			 "pep_users %" PRId64 "\n"
			 "pep_nodes %" PRId64 "\n"
			 "pep_items %" PRId64 "\n"
			 "pep_bytes %" PRId64 "\n"
			 "pep_user_max_nodes %" PRId64 "\n"
			 "pep_user_max_items %" PRId64 "\n"
			 "pep_user_max_bytes %" PRId64 "\n",
			 value_int(res, 0, 0), value_int(res, 0, 1),
			 value_int(res, 0, 2), value_int(res, 0, 3),
			 value_int(res, 0, 4), value_int(res, 0, 5),
			 value_int(res, 0, 6));
	else
		snprintf(text, sizeof(text),
			 "pubsub_nodes %" PRId64 "\n"
			 "pubsub_items %" PRId64 "\n"
			 "pubsub_bytes %" PRId64 "\n"
			 "pubsub_subscriptions %" PRId64 "\n",
			 value_int(res, 0, 0), value_int(res, 0, 1),
			 value_int(res, 0, 2), value_int(res, 0, 3));
	pgn_command_reply(q->cmd, PGN_CTL_OK, text);
	req_free(q);
}

void
ps_ctl_stats(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	struct ps_engine *e = arg;
	struct ctl_req *q;
	const char *sql;
	const char *params[1];

	(void)argc;
	(void)argv;
	if ((q = calloc(1, sizeof(*q))) == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	q->e = e;
	q->cmd = cmd;
	if (e->pep) {
		sql = pick(e, SQL_PEP_STATS(LEN_PGSQL),
			   SQL_PEP_STATS(LEN_SQLITE));
		params[0] = pgn_host_name(e->host);
	} else {
		sql = pick(e, SQL_SERVICE_STATS(LEN_PGSQL),
			   SQL_SERVICE_STATS(LEN_SQLITE));
		params[0] = e->domain != NULL ? e->domain : "";
	}
	if (pgn_store_query(e->store, sql, 1, params, 0, stats_done, q) != 0) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "storage error");
		free(q);
	}
}

const struct pgn_module_cmd ps_pep_commands[] = {
	{"get_pubsub_nodes", 2, "USER HOST",
	 "list the PEP nodes of an account: node, items, payload bytes",
	 cmd_pep_nodes, 2},
	{"delete_pubsub_node", 3, "USER HOST NODE",
	 "delete a PEP node of an account (its subscribers are notified)",
	 cmd_pep_delete, 2},
	{"pep_stats", 1, "HOST",
	 "print the PEP figures of HOST (accounts with nodes, nodes, items, "
	 "bytes, the largest account's)",
	 ps_ctl_stats, 1},
	{NULL, 0, NULL, NULL, NULL, 0},
};

const struct pgn_module_cmd ps_pubsub_commands[] = {
	{"get_pubsub_service_nodes", 1, "HOST",
	 "list the nodes of the PubSub service of HOST: node, items, bytes",
	 cmd_service_nodes, 1},
	{"delete_pubsub_service_node", 2, "HOST NODE",
	 "delete a node of the PubSub service of HOST (subscribers are "
	 "notified)",
	 cmd_service_delete, 1},
	{NULL, 0, NULL, NULL, NULL, 0},
};
