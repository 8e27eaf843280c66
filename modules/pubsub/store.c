/* The PubSub tables (schemas/<driver>/014_pubsub.sql): the same SQL on
 * both drivers, asynchronous through pgn_store_query/txn.  Numbers go
 * in as text and are CAST where SQL compares or counts with them
 * (SQLite would compare a text parameter as text).  Each function
 * documents the columns its callback gets. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pigeon/store.h"
#include "pubsub.h"

#define Q(e, sql, n, p, cb, arg)                                               \
	pgn_store_query((e)->store, (sql), (n), (p), 0, (cb), (arg))

/* A statement about one node: $1 its id, $2 p2 (when not NULL). */
static int
by_node(struct ps_engine *e, const char *sql, int64_t node_id, const char *p2,
	pgn_store_cb cb, void *arg)
{
	char id[24];
	const char *p[] = {id, p2};

	snprintf(id, sizeof(id), "%" PRId64, node_id);
	return Q(e, sql, p2 != NULL ? 2 : 1, p, cb, arg);
}

int
ps_store_node_get(struct ps_engine *e, const char *service, const char *node,
		  const char *jid, pgn_store_cb cb, void *arg)
{
	const char *p[] = {service, node, jid};

	return Q(e,
		 "SELECT n.id, n.config, a.affiliation FROM pubsub_node n "
		 "LEFT JOIN pubsub_affiliation a ON a.node_id = n.id AND "
		 "a.jid = $3 WHERE n.service = $1 AND n.node = $2",
		 3, p, cb, arg);
}

int
ps_store_nodes(struct ps_engine *e, const char *service, long max,
	       pgn_store_cb cb, void *arg)
{
	char n[24];
	const char *p[] = {service, n};

	snprintf(n, sizeof(n), "%ld", max);
	return Q(e,
		 "SELECT node, config, id FROM pubsub_node WHERE service = $1 "
		 "ORDER BY node LIMIT CAST($2 AS BIGINT)",
		 2, p, cb, arg);
}

int
ps_store_usage(struct ps_engine *e, const char *service, const char *owner,
	       pgn_store_cb cb, void *arg)
{
	const char *p[] = {service, owner};

	if (e->pep)
		return Q(e,
			 "SELECT (SELECT COUNT(*) FROM pubsub_node WHERE "
			 "service = $1), (SELECT COALESCE(SUM(LENGTH("
			 "i.payload)), 0) FROM pubsub_item i JOIN pubsub_node "
			 "n ON n.id = i.node_id WHERE n.service = $1)",
			 1, p, cb, arg);
	return Q(e,
		 "SELECT COUNT(*), 0 FROM pubsub_affiliation a JOIN "
		 "pubsub_node n ON n.id = a.node_id WHERE n.service = $1 AND "
		 "a.jid = $2 AND a.affiliation = 'owner'",
		 2, p, cb, arg);
}

/* ts: strictly greater than every ts of the node (whatever the clock
 * did since), else the engine's. */
#define ITEM_UPSERT                                                            \
	"INSERT INTO pubsub_item (node_id, item_id, ts, publisher, payload) "  \
	"SELECT n.id, $3, (SELECT CASE WHEN MAX(i.ts) >= CAST($4 AS BIGINT) "  \
	"THEN MAX(i.ts) + 1 ELSE CAST($4 AS BIGINT) END FROM pubsub_item i "   \
	"WHERE i.node_id = n.id), $5, $6 FROM pubsub_node n WHERE "            \
	"n.service = $1 AND n.node = $2 ON CONFLICT (node_id, item_id) DO "    \
	"UPDATE SET ts = excluded.ts, publisher = excluded.publisher, "        \
	"payload = excluded.payload"
/* The items beyond the max_items newest ($3 = max_items - 1). */
#define ITEM_TRIM                                                              \
	"DELETE FROM pubsub_item WHERE node_id = (SELECT id FROM pubsub_node " \
	"WHERE service = $1 AND node = $2) AND ts < (SELECT i.ts FROM "        \
	"pubsub_item i JOIN pubsub_node n ON n.id = i.node_id WHERE "          \
	"n.service = $1 AND n.node = $2 ORDER BY i.ts DESC LIMIT 1 OFFSET "    \
	"CAST($3 AS BIGINT))"
#define NODE_ID "SELECT id FROM pubsub_node WHERE service = $1 AND node = $2"
#define NODE_INSERT                                                            \
	"INSERT INTO pubsub_node (service, node, host, username, config, "     \
	"created) VALUES ($1, $2, $3, $4, $5, CAST($6 AS BIGINT))"
#define OWNER_INSERT                                                           \
	"INSERT INTO pubsub_affiliation (node_id, jid, affiliation) SELECT "   \
	"id, $3, 'owner' FROM pubsub_node WHERE service = $1 AND node = $2"

int
ps_store_publish(struct ps_engine *e, const struct ps_store_publish *p,
		 pgn_store_cb cb, void *arg)
{
	char ts[24], keep[24], created[24];
	const char *sqls[5];
	int np[5], n = 0;
	const char *const *pp[5];
	const char *pnode[] = {p->service,  p->node,   pgn_host_name(e->host),
			       p->username, p->config, created};
	const char *powner[] = {p->service, p->node, p->owner};
	const char *pitem[] = {p->service, p->node,	 p->item_id,
			       ts,	   p->publisher, p->payload};
	const char *ptrim[] = {p->service, p->node, keep};
	const char *pid[] = {p->service, p->node};

	snprintf(ts, sizeof(ts), "%" PRId64, p->ts);
	snprintf(created, sizeof(created), "%" PRId64, p->ts / 1000000);
	snprintf(keep, sizeof(keep), "%ld", p->max_items - 1);
	if (p->create) {
		sqls[n] = NODE_INSERT, np[n] = 6, pp[n++] = pnode;
		if (p->owner != NULL)
			sqls[n] = OWNER_INSERT, np[n] = 3, pp[n++] = powner;
	}
	if (p->item_id != NULL) {
		sqls[n] = ITEM_UPSERT, np[n] = 6, pp[n++] = pitem;
		sqls[n] = ITEM_TRIM, np[n] = 3, pp[n++] = ptrim;
	}
	sqls[n] = NODE_ID, np[n] = 2, pp[n++] = pid;
	return pgn_store_txn(e->store, n, sqls, np, pp, 0, cb, arg);
}

int
ps_store_retract(struct ps_engine *e, int64_t node_id, const char *item_id,
		 pgn_store_cb cb, void *arg)
{
	return by_node(
		e,
		"DELETE FROM pubsub_item WHERE node_id = CAST($1 AS BIGINT) "
		"AND item_id = $2",
		node_id, item_id, cb, arg);
}

int
ps_store_purge(struct ps_engine *e, int64_t node_id, pgn_store_cb cb, void *arg)
{
	return by_node(
		e, "DELETE FROM pubsub_item WHERE node_id = CAST($1 AS BIGINT)",
		node_id, NULL, cb, arg);
}

int
ps_store_node_delete(struct ps_engine *e, int64_t node_id, pgn_store_cb cb,
		     void *arg)
{
	return by_node(e,
		       "DELETE FROM pubsub_node WHERE id = CAST($1 AS BIGINT)",
		       node_id, NULL, cb, arg);
}

int
ps_store_configure(struct ps_engine *e, int64_t node_id, const char *config,
		   long max_items, pgn_store_cb cb, void *arg)
{
	char id[24], keep[24];
	const char *sqls[] = {
		"UPDATE pubsub_node SET config = $2 WHERE id = "
		"CAST($1 AS BIGINT)",
		"DELETE FROM pubsub_item WHERE node_id = CAST($1 AS BIGINT) "
		"AND ts < (SELECT ts FROM pubsub_item WHERE node_id = "
		"CAST($1 AS BIGINT) ORDER BY ts DESC LIMIT 1 OFFSET "
		"CAST($2 AS BIGINT))",
	};
	const char *p1[] = {id, config}, *p2[] = {id, keep};
	const char *const *pp[] = {p1, p2};
	int np[] = {2, 2};

	snprintf(id, sizeof(id), "%" PRId64, node_id);
	snprintf(keep, sizeof(keep), "%ld", max_items - 1);
	return pgn_store_txn(e->store, 2, sqls, np, pp, 0, cb, arg);
}

/* Columns: item_id, publisher, payload, ts, count of the node's items. */
#define ITEM_COLS                                                              \
	"SELECT item_id, publisher, payload, ts, (SELECT COUNT(*) FROM "       \
	"pubsub_item WHERE node_id = CAST($1 AS BIGINT)) FROM pubsub_item "    \
	"WHERE node_id = CAST($1 AS BIGINT) "
#define TS_OF                                                                  \
	"(SELECT ts FROM pubsub_item WHERE node_id = "                         \
	"CAST($1 AS BIGINT) AND item_id = $3)"

int
ps_store_items(struct ps_engine *e, int64_t node_id, enum ps_page how,
	       const char *ref, long max, pgn_store_cb cb, void *arg)
{
	char id[24], n[24];
	const char *p[] = {id, n, ref};
	const char *sql;

	snprintf(id, sizeof(id), "%" PRId64, node_id);
	snprintf(n, sizeof(n), "%ld", max);
	switch (how) {
	case PS_PAGE_NEWEST:
		sql = ITEM_COLS "ORDER BY ts DESC LIMIT CAST($2 AS BIGINT)";
		break;
	case PS_PAGE_OLDEST:
		sql = ITEM_COLS "ORDER BY ts ASC LIMIT CAST($2 AS BIGINT)";
		break;
	case PS_PAGE_OLDER:
		sql = ITEM_COLS "AND ts < " TS_OF
				" ORDER BY ts DESC LIMIT CAST($2 AS BIGINT)";
		break;
	default:
		sql = ITEM_COLS "AND ts > " TS_OF
				" ORDER BY ts ASC LIMIT CAST($2 AS BIGINT)";
		break;
	}
	return Q(e, sql, how == PS_PAGE_NEWEST || how == PS_PAGE_OLDEST ? 2 : 3,
		 p, cb, arg);
}

int
ps_store_items_by_id(struct ps_engine *e, int64_t node_id, size_t n,
		     const char *const *ids, pgn_store_cb cb, void *arg)
{
	char id[24], sql[256 + PS_MAX_IDS * 8];
	const char *p[PS_MAX_IDS + 1];
	size_t len;

	if (n == 0 || n > PS_MAX_IDS)
		return -EINVAL;
	snprintf(id, sizeof(id), "%" PRId64, node_id);
	p[0] = id;
	len = (size_t)snprintf(sql, sizeof(sql),
			       "SELECT item_id, publisher, payload, ts, 0 FROM "
			       "pubsub_item WHERE node_id = CAST($1 AS BIGINT) "
			       "AND item_id IN (");
	for (size_t i = 0; i < n; i++) {
		p[i + 1] = ids[i];
		len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s$%zu",
					i > 0 ? ", " : "", i + 2);
	}
	snprintf(sql + len, sizeof(sql) - len, ") ORDER BY ts DESC");
	return Q(e, sql, (int)n + 1, p, cb, arg);
}

int
ps_store_affiliations(struct ps_engine *e, int64_t node_id, pgn_store_cb cb,
		      void *arg)
{
	return by_node(e,
		       "SELECT jid, affiliation FROM pubsub_affiliation WHERE "
		       "node_id = CAST($1 AS BIGINT) ORDER BY jid LIMIT 10000",
		       node_id, NULL, cb, arg);
}

int
ps_store_subscriptions(struct ps_engine *e, int64_t node_id, pgn_store_cb cb,
		       void *arg)
{
	return by_node(
		e,
		"SELECT jid, subid, state FROM pubsub_subscription WHERE "
		"node_id = CAST($1 AS BIGINT) ORDER BY jid LIMIT 10000",
		node_id, NULL, cb, arg);
}

int
ps_store_set_rows(struct ps_engine *e, int64_t node_id, int subs, size_t n,
		  const char *const *jids, const char *const *values,
		  const char *const *subids, pgn_store_cb cb, void *arg)
{
	const char **sqls = calloc(n, sizeof(*sqls));
	const char ***pp = calloc(n, sizeof(*pp));
	const char **params = calloc(n * 4, sizeof(*params));
	int *np = calloc(n, sizeof(*np));
	char id[24];
	int rc = -ENOMEM;

	if (n == 0)
		rc = -EINVAL;
	if (sqls == NULL || pp == NULL || params == NULL || np == NULL ||
	    n == 0)
		goto out;
	snprintf(id, sizeof(id), "%" PRId64, node_id);
	for (size_t i = 0; i < n; i++) {
		const char **p = params + 4 * i;
		int none = strcmp(values[i], "none") == 0;

		p[0] = id, p[1] = jids[i], p[2] = values[i];
		p[3] = subids != NULL ? subids[i] : NULL;
		pp[i] = p;
		if (none) {
			sqls[i] = subs ? "DELETE FROM pubsub_subscription "
					 "WHERE node_id = CAST($1 AS BIGINT) "
					 "AND jid = $2"
				       : "DELETE FROM pubsub_affiliation WHERE "
					 "node_id = CAST($1 AS BIGINT) AND jid "
					 "= $2";
			np[i] = 2;
		} else if (subs) {
			sqls[i] = "INSERT INTO pubsub_subscription (node_id, "
				  "jid, subid, state) VALUES (CAST($1 AS "
				  "BIGINT), $2, $4, $3) ON CONFLICT (node_id, "
				  "jid) DO UPDATE SET state = excluded.state";
			np[i] = 4;
		} else {
			sqls[i] = "INSERT INTO pubsub_affiliation (node_id, "
				  "jid, affiliation) VALUES (CAST($1 AS "
				  "BIGINT), $2, $3) ON CONFLICT (node_id, jid) "
				  "DO UPDATE SET affiliation = "
				  "excluded.affiliation";
			np[i] = 3;
		}
	}
	rc = pgn_store_txn(e->store, (int)n, sqls, np,
			   (const char *const *const *)pp, 0, cb, arg);
out:
	free(sqls);
	free(pp);
	free(params);
	free(np);
	return rc;
}

int
ps_store_subscribe(struct ps_engine *e, int64_t node_id, const char *jid,
		   const char *subid, pgn_store_cb cb, void *arg)
{
	char id[24];
	const char *sqls[] = {
		"INSERT INTO pubsub_subscription (node_id, jid, subid, state) "
		"VALUES (CAST($1 AS BIGINT), $2, $3, 'subscribed') ON CONFLICT "
		"(node_id, jid) DO UPDATE SET state = excluded.state",
		"SELECT subid FROM pubsub_subscription WHERE node_id = "
		"CAST($1 AS BIGINT) AND jid = $2",
	};
	const char *p1[] = {id, jid, subid}, *p2[] = {id, jid};
	const char *const *pp[] = {p1, p2};
	int np[] = {3, 2};

	snprintf(id, sizeof(id), "%" PRId64, node_id);
	return pgn_store_txn(e->store, 2, sqls, np, pp, 0, cb, arg);
}

int
ps_store_unsubscribe(struct ps_engine *e, int64_t node_id, const char *jid,
		     pgn_store_cb cb, void *arg)
{
	return by_node(e,
		       "DELETE FROM pubsub_subscription WHERE node_id = "
		       "CAST($1 AS BIGINT) AND jid = $2",
		       node_id, jid, cb, arg);
}

int
ps_store_entity(struct ps_engine *e, int subs, const char *service,
		const char *bare, const char *full, const char *node,
		pgn_store_cb cb, void *arg)
{
	const char *p[] = {service, bare, full, node != NULL ? node : ""};

	if (subs)
		return Q(e,
			 "SELECT n.node, s.jid, s.subid, s.state FROM "
			 "pubsub_subscription s JOIN pubsub_node n ON n.id = "
			 "s.node_id WHERE n.service = $1 AND (s.jid = $2 OR "
			 "s.jid = $3) AND ($4 = '' OR n.node = $4) ORDER BY "
			 "n.node LIMIT 10000",
			 4, p, cb, arg);
	if (e->pep)
		/* The account owns every node of its PEP service. */
		return Q(e,
			 "SELECT node, 'owner' FROM pubsub_node WHERE service "
			 "= $1 AND $2 = $1 AND ($4 = '' OR node = $4) AND "
			 "$3 = $3 ORDER BY node LIMIT 10000",
			 4, p, cb, arg);
	return Q(e,
		 "SELECT n.node, a.affiliation FROM pubsub_affiliation a JOIN "
		 "pubsub_node n ON n.id = a.node_id WHERE n.service = $1 AND "
		 "a.jid = $2 AND ($4 = '' OR n.node = $4) AND $3 = $3 ORDER "
		 "BY n.node LIMIT 10000",
		 4, p, cb, arg);
}

int
ps_store_forget_jid(struct ps_engine *e, const char *bare)
{
	const char *sqls[] = {
		/* Nodes the account alone owned go with it. */
		"DELETE FROM pubsub_node WHERE service = $2 AND id IN (SELECT "
		"node_id FROM pubsub_affiliation WHERE jid = $1 AND "
		"affiliation = 'owner') AND NOT EXISTS (SELECT 1 FROM "
		"pubsub_affiliation o WHERE o.node_id = pubsub_node.id AND "
		"o.affiliation = 'owner' AND o.jid <> $1)",
		"DELETE FROM pubsub_affiliation WHERE jid = $1 AND node_id IN "
		"(SELECT id FROM pubsub_node WHERE service = $2)",
		"DELETE FROM pubsub_subscription WHERE (jid = $1 OR "
		"substr(jid, 1, length(CAST($1 AS TEXT)) + 1) = "
		"CAST($1 AS TEXT) || '/') AND node_id IN (SELECT id FROM "
		"pubsub_node WHERE service = $2)",
	};
	const char *p[] = {bare, e->domain};
	const char *const *pp[] = {p, p, p};
	int np[] = {2, 2, 2};

	return pgn_store_txn(e->store, 3, sqls, np, pp, 0, NULL, NULL);
}
