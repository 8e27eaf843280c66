/* The control socket: pigeonctl's commands executed inside the running
 * server.  Requests are netstrings (ctl_proto.c); account commands run
 * asynchronously and find their connection again by id. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "host.h"
#include "connlimit.h"
#include "latency.h"
#include "pigeon/map.h"
#include "pigeon/account.h"
#include "pigeon/ctl.h"
#include "pigeon/log.h"
#include "pigeon/store.h"
#include "route.h"
#include "router.h"
#include "server.h"
#include "stream.h"
#include "suggest.h"

struct ctl_conn {
	uint64_t id;
	struct pgn_server *srv;
	struct bufferevent *bev;
	int answered;
	int stop_after;          /* "stop": shut down once answered */
	const char *done_verb;   /* account command: "registered", ... */
	char user[1100];
	char host[1100];
};

static void
conn_free(struct ctl_conn *c)
{
	pgn_map_del_id(c->srv->ctl_conns, c->id);
	bufferevent_free(c->bev);
	free(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;
	if (c->answered &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		int stop = c->stop_after;
		struct pgn_server *srv = c->srv;
		conn_free(c);
		if (stop)
			pgn_server_stop(srv);
	}
}

static void
answer(struct ctl_conn *c, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* An answer is the status line, then text written into the returned
 * buffer, then answer_end(). */
static struct evbuffer *
answer_begin(struct ctl_conn *c, int status)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	evbuffer_add_printf(out, "%d\n", status);
	return out;
}

static void
answer_end(struct ctl_conn *c)
{
	c->answered = 1;
	bufferevent_enable(c->bev, EV_WRITE);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_write_cb(c->bev, c);
}

static void
answer(struct ctl_conn *c, int status, const char *fmt, ...)
{
	struct evbuffer *out = answer_begin(c, status);
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	answer_end(c);
}

static struct ctl_conn *
find_conn(struct pgn_server *srv, uint64_t id)
{
	return pgn_map_get_id(srv->ctl_conns, id);
}

/* ---- account commands ------------------------------------------------ */

static void
account_done(uint64_t owner, void *arg, int err,
	     const struct pgn_scram_creds *creds)
{
	struct pgn_server *srv = arg;
	struct ctl_conn *c = find_conn(srv, owner);
	if (c == NULL)
		return;
	if (err == -EEXIST)
		answer(c, PGN_CTL_ERROR, "User %s@%s already registered\n",
		       c->user, c->host);
	else if (err == -ENOENT)
		answer(c, PGN_CTL_ERROR, "User %s@%s does not exist\n", c->user,
		       c->host);
	else if (err != 0)
		answer(c, PGN_CTL_ERROR, "Storage error for %s@%s (%s)\n",
		       c->user, c->host, strerror(-err));
	else {
		if (strcmp(c->done_verb, "unregistered") == 0) {
			char bare[2300];
			snprintf(bare, sizeof(bare), "%s@%s", c->user, c->host);
			pgn_user_kick(srv, bare, "not-authorized",
				      "account removed");
		}
		answer(c, PGN_CTL_OK, "User %s@%s successfully %s\n", c->user,
		       c->host, c->done_verb);
	}
}

/* Prepares USER and HOST into the connection; answers and returns -1 on
 * error. */
static int
prep_account(struct ctl_conn *c, const char *user, const char *host)
{
	char *u = NULL, *h = NULL;
	int rc = -1;
	if (pgn_jid_nodeprep(user, &u) != 0 || *u == '\0') {
		answer(c, PGN_CTL_USAGE, "Invalid user name '%s'\n", user);
		goto out;
	}
	if (pgn_jid_nameprep(host, &h) != 0 ||
	    pgn_server_host(c->srv, h) == NULL) {
		answer(c, PGN_CTL_ERROR, "Unknown host '%s'\n", host);
		goto out;
	}
	snprintf(c->user, sizeof(c->user), "%s", u);
	snprintf(c->host, sizeof(c->host), "%s", h);
	rc = 0;
out:
	free(u);
	free(h);
	return rc;
}

static void
users_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct ctl_conn *c = find_conn(arg, owner);
	struct evbuffer *out;
	if (c == NULL)
		return;
	if (res->error != 0) {
		answer(c, PGN_CTL_ERROR, "Storage error: %s\n", res->errmsg);
		return;
	}
	out = answer_begin(c, PGN_CTL_OK);
	for (int i = 0; i < res->nrows; i++)
		evbuffer_add_printf(out, "%s\n", pgn_store_value(res, i, 0));
	answer_end(c);
}

/* ---- session commands -------------------------------------------------- */

struct jid_list {
	const char **v; /* NULL: only count */
	size_t n;
};

static int
collect_jids(const char *key, uint64_t id, void *value, void *arg)
{
	struct jid_list *l = arg;
	for (struct pgn_session *s = value; s != NULL; s = s->next_res) {
		if (l->v != NULL)
			l->v[l->n] = s->jid->full;
		l->n++;
	}
	return 0;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void
cmd_connected_users(struct ctl_conn *c, int count_only)
{
	struct jid_list l = { 0 };
	struct evbuffer *out;

	/* Count first; the list then fits in one allocation. */
	pgn_map_foreach(c->srv->users, collect_jids, &l);
	if (count_only) {
		answer(c, PGN_CTL_OK, "%zu\n", l.n);
		return;
	}
	if (l.n > 0) {
		l.v = calloc(l.n, sizeof(*l.v));
		if (l.v == NULL) {
			answer(c, PGN_CTL_ERROR, "Out of memory\n");
			return;
		}
		l.n = 0;
		pgn_map_foreach(c->srv->users, collect_jids, &l);
		qsort(l.v, l.n, sizeof(*l.v), cmp_str);
	}
	out = answer_begin(c, PGN_CTL_OK);
	for (size_t i = 0; i < l.n; i++)
		evbuffer_add_printf(out, "%s\n", l.v[i]);
	free(l.v);
	answer_end(c);
}

/* One "NAME_KEY VALUE" line per figure: easy to read and to parse
 * (pigeon-load --server-ctl reads them). */
static void
print_hist(struct evbuffer *out, const char *name,
	   const struct pgn_lat_hist *h)
{
	evbuffer_add_printf(out, "%s_count %llu\n", name,
			    (unsigned long long)h->count);
	evbuffer_add_printf(out, "%s_p50_us %.1f\n", name,
			    pgn_lat_hist_pct(h, 0.50) / 1e3);
	evbuffer_add_printf(out, "%s_p99_us %.1f\n", name,
			    pgn_lat_hist_pct(h, 0.99) / 1e3);
	evbuffer_add_printf(out, "%s_p999_us %.1f\n", name,
			    pgn_lat_hist_pct(h, 0.999) / 1e3);
	evbuffer_add_printf(out, "%s_max_us %.1f\n", name, h->max / 1e3);
	evbuffer_add_printf(out, "%s_mean_us %.1f\n", name,
			    h->count > 0 ? (double)h->sum / 1e3 / (double)h->count
					 : 0.0);
}

/* Delivery latency since the start or the last latency_reset: "queued"
 * from the read callback that brought a stanza in to its bytes in the
 * recipient's output buffer, "flushed" to those bytes written to the
 * recipient's socket (one sample per write that empties the buffer,
 * timed from the oldest stanza in it). */
static void
cmd_latency(struct ctl_conn *c)
{
	struct evbuffer *out = answer_begin(c, PGN_CTL_OK);

	print_hist(out, "queued", &c->srv->latency->queued);
	print_hist(out, "flushed", &c->srv->latency->flushed);
	answer_end(c);
}

/* ---- commands served by modules ----------------------------------- */

/* One module instance serving a command (or contributing to "stats"):
 * srv->commands maps the name to the list of them, newest first. */
struct cmd_reg {
	struct cmd_reg *next;
	const struct pgn_module *m;
	const struct pgn_host *host;
	const struct pgn_module_cmd *cmd; /* NULL for "stats" figures */
	pgn_command_fn fn;
	void *arg;
	int data_arg; /* declared: arg is the module's data at call time */
};

struct stats_run;

struct pgn_command {
	struct pgn_server *srv;
	uint64_t conn;
	int argc;
	char **argv;
	/* A part of "stats": the run it belongs to and the host of the
	 * module instance that answers (NULL otherwise). */
	struct stats_run *run;
	const char *host;
};

static void stats_part_done(struct pgn_command *cmd, int status,
			    const char *text);

/* Adds m's fn to the modules serving key in srv->commands. */
static int
add_reg(struct pgn_module *m, const char *key,
	const struct pgn_module_cmd *cmd, pgn_command_fn fn, void *arg,
	int data_arg)
{
	struct pgn_server *srv = pgn_module_server(m);
	struct cmd_reg *r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return -ENOMEM;
	r->m = m;
	r->host = pgn_module_host(m);
	r->cmd = cmd;
	r->fn = fn;
	r->arg = arg;
	r->data_arg = data_arg;
	r->next = pgn_map_get(srv->commands, key);
	if (pgn_map_set(srv->commands, key, r) != 0) {
		free(r);
		return -ENOMEM;
	}
	return 0;
}

/* What the module's function gets as arg: a declared command or figure
 * function the module's data now (load() may have set it after the
 * registration), the others what they registered with. */
static void *
reg_arg(const struct cmd_reg *r)
{
	return r->data_arg ? pgn_module_data(r->m) : r->arg;
}

int
pgn_ctl_register_module(struct pgn_server *srv, struct pgn_module *m)
{
	const struct pgn_module_def *def = pgn_module_get_def(m);
	const struct pgn_module_cmd *c;
	int rc;

	for (c = def->commands; c != NULL && c->name != NULL; c++) {
		const struct cmd_reg *other = pgn_map_get(srv->commands, c->name);

		/* One name, one command: the core's, or one module's (the
		 * same module on several hosts shares it). */
		if (pgn_ctl_command_find(c->name) != NULL ||
		    (other != NULL && other->cmd != c))
			return -EEXIST;
		if ((rc = add_reg(m, c->name, c, c->fn, NULL, 1)) < 0)
			return rc;
	}
	if (def->stats != NULL)
		return add_reg(m, "stats", NULL, def->stats, NULL, 1);
	return 0;
}

/* "stats" is a core command: its contributors are kept under that key
 * next to the module commands (and forgotten with them). */
int
pgn_module_stats(struct pgn_module *m, pgn_command_fn fn, void *arg)
{
	return add_reg(m, "stats", NULL, fn, arg, 0);
}

static int
forget_module(const char *key, uint64_t id, void *value, void *arg)
{
	struct pgn_server *srv = ((void **)arg)[0];
	const struct pgn_module *m = ((void **)arg)[1];
	struct cmd_reg *head = value, **pp = &head;

	while (*pp != NULL) {
		struct cmd_reg *r = *pp;
		if (r->m == m) {
			*pp = r->next;
			free(r);
		} else {
			pp = &r->next;
		}
	}
	if (head == NULL)
		pgn_map_del(srv->commands, key);
	else if (head != value)
		pgn_map_set(srv->commands, key, head);
	return 0;
}

void
pgn_ctl_forget_module(struct pgn_server *srv, const struct pgn_module *m)
{
	void *arg[2] = { srv, (void *)m };
	pgn_map_foreach(srv->commands, forget_module, arg);
}

void
pgn_command_reply(struct pgn_command *cmd, int status, const char *text)
{
	struct ctl_conn *c;

	if (cmd->run != NULL) {
		stats_part_done(cmd, status, text);
	} else if ((c = find_conn(cmd->srv, cmd->conn)) != NULL) {
		size_t n = text != NULL ? strlen(text) : 0;
		answer(c, status, "%s%s", n > 0 ? text : "",
		       n > 0 && text[n - 1] != '\n' ? "\n" : "");
	}
	pgn_ctl_argv_free(cmd->argc, cmd->argv);
	free(cmd);
}

/* ---- help and usage ----------------------------------------------- */

struct help_list {
	struct pgn_ctl_command *cmds;
	size_t n;
};

static int
collect_module_command(const char *key, uint64_t id, void *value, void *arg)
{
	const struct cmd_reg *r = value;
	struct help_list *l = arg;

	(void)key;
	(void)id;
	if (r->cmd != NULL)
		l->cmds[l->n++] = (struct pgn_ctl_command){
			r->cmd->name, r->cmd->nargs, r->cmd->args,
			r->cmd->help, 0
		};
	return 0;
}

static int
cmp_command(const void *a, const void *b)
{
	return strcmp(((const struct pgn_ctl_command *)a)->name,
		      ((const struct pgn_ctl_command *)b)->name);
}

/* The list of `pigeonctl help`: the core's commands, those of the loaded
 * modules (by name), then help itself.  Caller frees l->cmds, which ends
 * with a zeroed entry (for pgn_suggest_table). */
static int
help_list(struct pgn_server *srv, struct help_list *l)
{
	size_t ncore = 0, max = pgn_map_count(srv->commands);
	const struct pgn_ctl_command *help = NULL;

	while (pgn_ctl_commands[ncore].name != NULL)
		ncore++;
	l->n = 0;
	l->cmds = calloc(ncore + max + 1, sizeof(*l->cmds));
	if (l->cmds == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < ncore; i++) {
		if (strcmp(pgn_ctl_commands[i].name, "help") == 0)
			help = &pgn_ctl_commands[i];
		else
			l->cmds[l->n++] = pgn_ctl_commands[i];
	}
	size_t first = l->n;
	pgn_map_foreach(srv->commands, collect_module_command, l);
	qsort(l->cmds + first, l->n - first, sizeof(*l->cmds), cmp_command);
	if (help != NULL)
		l->cmds[l->n++] = *help;
	return 0;
}

static void
cmd_help(struct ctl_conn *c)
{
	struct evbuffer *out = answer_begin(c, PGN_CTL_OK);
	struct help_list l;

	if (help_list(c->srv, &l) == 0)
		pgn_ctl_format_help(out, l.cmds, l.n);
	free(l.cmds);
	answer_end(c);
}

/* A usage error: the command's synopsis, or for an unknown command a
 * hint and the whole list (pigeonctl prints what it gets). */
static void
answer_usage(struct ctl_conn *c, const char *name, const char *args)
{
	struct evbuffer *out = answer_begin(c, PGN_CTL_USAGE);
	struct help_list l = { NULL, 0 };

	if (args != NULL) {
		pgn_ctl_format_usage(out, name, args);
	} else if (help_list(c->srv, &l) == 0) {
		const char *near =
			pgn_suggest_table(name, l.cmds, sizeof(*l.cmds));

		evbuffer_add_printf(out, "pigeonctl: unknown command '%s'%s%s%s\n",
				    name, near != NULL ? "; did you mean '" : "",
				    near != NULL ? near : "",
				    near != NULL ? "'?" : "");
		pgn_ctl_format_help(out, l.cmds, l.n);
	}
	free(l.cmds);
	answer_end(c);
}

/* Hands a module's command to the instance of the host it names. */
static void
dispatch_module(struct ctl_conn *c, int argc, char **argv)
{
	struct cmd_reg *r = pgn_map_get(c->srv->commands, argv[0]);
	const struct pgn_module_cmd *cmd = r != NULL ? r->cmd : NULL;
	struct pgn_command *pc;
	char *h = NULL;

	if (cmd == NULL) {
		answer_usage(c, argv[0], NULL);
		return;
	}
	if (argc - 1 != cmd->nargs) {
		answer_usage(c, cmd->name, cmd->args);
		return;
	}
	pgn_log(PGN_LOG_INFO, "ctl: %s", argv[0]); /* never the arguments */
	if (cmd->host_arg > 0) {
		if (pgn_jid_nameprep(argv[cmd->host_arg], &h) != 0 ||
		    pgn_server_host(c->srv, h) == NULL) {
			free(h);
			answer(c, PGN_CTL_ERROR, "Unknown host '%s'\n",
			       argv[cmd->host_arg]);
			return;
		}
		while (r != NULL && strcmp(pgn_host_name(r->host), h) != 0)
			r = r->next;
	}
	if (r == NULL) {
		struct cmd_reg *any = pgn_map_get(c->srv->commands, argv[0]);

		answer(c, PGN_CTL_ERROR, "%s needs %s loaded on %s\n",
		       cmd->name, pgn_module_get_def(any->m)->name, h);
		free(h);
		return;
	}
	free(h);
	if ((pc = calloc(1, sizeof(*pc))) == NULL ||
	    (pc->argv = calloc(argc, sizeof(char *))) == NULL) {
		free(pc);
		answer(c, PGN_CTL_ERROR, "Out of memory\n");
		return;
	}
	pc->srv = c->srv;
	pc->conn = c->id;
	pc->argc = argc - 1;
	for (int i = 1; i < argc; i++)
		if ((pc->argv[i - 1] = strdup(argv[i])) == NULL) {
			pgn_ctl_argv_free(i - 1, pc->argv);
			free(pc);
			answer(c, PGN_CTL_ERROR, "Out of memory\n");
			return;
		}
	r->fn(pc, pc->argc, pc->argv, reg_arg(r));
}

/* ---- stats ------------------------------------------------------------ */

/* One "stats" request: the core figures, taken when it arrives, then what
 * each contributing module instance answers, possibly later (a store
 * query).  The answer goes once the last part is in. */
struct stats_run {
	struct pgn_server *srv;
	uint64_t conn;
	unsigned pending;  /* parts not answered, +1 while they are started */
	unsigned failed;   /* parts that answered an error or never started */
	struct evbuffer *text;
};

struct session_counts {
	size_t bound, hibernated;
};

static int
count_session(const char *key, uint64_t id, void *value, void *arg)
{
	const struct pgn_session *s = value;
	struct session_counts *n = arg;

	if (s->kind != PGN_STREAM_C2S)
		return 0;
	n->bound += s->state == PGN_ST_BOUND;
	n->hibernated += s->state == PGN_ST_HIBERNATED;
	return 0;
}

static void
core_figures(struct pgn_server *srv, struct evbuffer *out)
{
	struct session_counts n = { 0 };

	pgn_map_foreach(srv->sessions, count_session, &n);
	evbuffer_add_printf(out, "uptime_seconds %ld\n",
			    pgn_server_uptime(srv));
	evbuffer_add_printf(out, "hosts %zu\n", srv->nhosts);
	evbuffer_add_printf(out, "connections %u\n",
			    pgn_connlimit_count(srv->conns));
	evbuffer_add_printf(out, "streams %zu\n", pgn_map_count(srv->sessions));
	evbuffer_add_printf(out, "sessions_bound %zu\n", n.bound);
	evbuffer_add_printf(out, "sessions_hibernated %zu\n", n.hibernated);
	evbuffer_add_printf(out, "accounts_online %zu\n",
			    pgn_map_count(srv->users));
	evbuffer_add_printf(out, "components %zu\n",
			    pgn_routes_count(srv->routes, PGN_ROUTE_COMPONENT));
	print_hist(out, "latency_queued", &srv->latency->queued);
	print_hist(out, "latency_flushed", &srv->latency->flushed);
}

static void
stats_release(struct stats_run *run)
{
	struct ctl_conn *c;
	struct evbuffer *out;

	if (--run->pending > 0)
		return;
	if ((c = find_conn(run->srv, run->conn)) != NULL) {
		out = answer_begin(c, PGN_CTL_OK);
		evbuffer_add_buffer(out, run->text);
		evbuffer_add_printf(out, "stats_failed %u\n", run->failed);
		answer_end(c);
	}
	evbuffer_free(run->text);
	free(run);
}

/* A module's part: its "name value" lines become "name@host value" (one
 * module may serve several hosts).  Lines without a value are dropped. */
static void
stats_part_done(struct pgn_command *cmd, int status, const char *text)
{
	struct stats_run *run = cmd->run;

	if (status != PGN_CTL_OK) {
		run->failed++;
		text = NULL;
	}
	while (text != NULL && *text != '\0') {
		size_t len = strcspn(text, "\n");
		const char *sp = memchr(text, ' ', len);

		if (sp != NULL && sp > text)
			evbuffer_add_printf(run->text, "%.*s@%s%.*s\n",
					    (int)(sp - text), text, cmd->host,
					    (int)(text + len - sp), sp);
		text += len + (text[len] == '\n');
	}
	stats_release(run);
}

static void
cmd_stats(struct ctl_conn *c)
{
	struct stats_run *run = calloc(1, sizeof(*run));

	if (run == NULL || (run->text = evbuffer_new()) == NULL) {
		free(run);
		answer(c, PGN_CTL_ERROR, "Out of memory\n");
		return;
	}
	run->srv = c->srv;
	run->conn = c->id;
	run->pending = 1; /* a part answering at once must not finish it */
	core_figures(c->srv, run->text);
	for (struct cmd_reg *r = pgn_map_get(c->srv->commands, "stats");
	     r != NULL; r = r->next) {
		struct pgn_command *pc = calloc(1, sizeof(*pc));

		if (pc == NULL) {
			run->failed++;
			continue;
		}
		pc->srv = c->srv;
		pc->conn = c->id;
		pc->run = run;
		pc->host = pgn_host_name(r->host);
		run->pending++;
		r->fn(pc, 0, NULL, reg_arg(r));
	}
	stats_release(run);
}

/* Adds <name>text</name> unless text is empty.  0 or -ENOMEM. */
static int
add_text_child(struct pgn_xml *parent, const char *name, const char *text)
{
	struct pgn_xml *c;

	if (text[0] == '\0')
		return 0;
	if ((c = pgn_xml_add_child(parent, PGN_NS_CLIENT, name)) == NULL)
		return -ENOMEM;
	return pgn_xml_add_text(c, text, strlen(text));
}

/* Where a message to `to` can go, decided before it is routed so that
 * pigeonctl reports an address nobody can receive instead of "sent" (the
 * router would only bounce it to FROM): the domain route table's answer. */
enum reach {
	REACH_NO,         /* only the default remote route: a bounce */
	REACH_YES,        /* a host itself, a service, a component, federation */
	REACH_LOCAL_USER, /* a local host: the account must exist */
};

static enum reach
reachable(struct pgn_server *srv, const struct pgn_jid *to)
{
	const struct pgn_route *r = pgn_routes_lookup(srv->routes, to->domain);

	switch (r->kind) {
	case PGN_ROUTE_HOST:
		return to->node != NULL ? REACH_LOCAL_USER : REACH_YES;
	case PGN_ROUTE_SERVICE:
	case PGN_ROUTE_COMPONENT:
		return REACH_YES;
	case PGN_ROUTE_REMOTE:
		break;
	}
	/* A module (federation) that took the remote route can try. */
	return r->owner != NULL ? REACH_YES : REACH_NO;
}

/* A message waiting for the account check; found again by connection id
 * (the pigeonctl connection may be gone when the store answers). */
struct send_pending {
	struct pgn_server *srv;
	uint64_t conn;
	struct pgn_stanza *st; /* owned until routed */
};

static void
send_routed(struct ctl_conn *c, const struct pgn_stanza *st)
{
	if (c != NULL)
		answer(c, PGN_CTL_OK, "Message sent to %s\n", st->to->full);
}

static void
send_user_checked(uint64_t owner, void *arg, int err,
		  const struct pgn_scram_creds *creds)
{
	struct send_pending *sp = arg;
	struct ctl_conn *c = find_conn(sp->srv, owner);

	(void)creds;
	if (err == 0) {
		send_routed(c, sp->st);
		pgn_route(sp->srv, sp->st);
	} else {
		if (c != NULL && err == -ENOENT)
			answer(c, PGN_CTL_ERROR,
			       "Cannot send to %s: user %s does not exist\n",
			       sp->st->to->full, sp->st->to->bare);
		else if (c != NULL)
			answer(c, PGN_CTL_ERROR, "Storage error for %s (%s)\n",
			       sp->st->to->bare, strerror(-err));
		pgn_stanza_free(sp->st);
	}
	free(sp);
}

/* send_message TYPE FROM TO SUBJECT BODY, as ejabberdctl does it. */
static void
cmd_send_message(struct ctl_conn *c, char **argv)
{
	static const char *const types[] = { "chat", "normal", "headline",
					     NULL };
	struct pgn_jid *from = NULL, *to = NULL;
	struct pgn_xml *msg = NULL;
	struct pgn_stanza *st;
	struct send_pending *sp;
	enum reach reach;
	int ok = 0;

	for (int i = 0; types[i] != NULL; i++)
		ok |= strcmp(argv[1], types[i]) == 0;
	if (!ok) {
		answer(c, PGN_CTL_USAGE,
		       "TYPE must be chat, normal or headline\n");
		return;
	}
	if (pgn_jid_parse(argv[2], &from) != 0 ||
	    pgn_jid_parse(argv[3], &to) != 0) {
		answer(c, PGN_CTL_USAGE, "Malformed address\n");
		goto done;
	}
	if (pgn_server_host(c->srv, from->domain) == NULL) {
		answer(c, PGN_CTL_ERROR, "FROM must be on a local host\n");
		goto done;
	}
	reach = reachable(c->srv, to);
	if (reach == REACH_NO) {
		answer(c, PGN_CTL_ERROR,
		       "Cannot send to %s: no route to %s (not a local host, "
		       "service or connected component)\n",
		       to->full, to->domain);
		goto done;
	}
	if ((msg = pgn_xml_new(PGN_NS_CLIENT, "message")) == NULL ||
	    pgn_xml_set_attr(msg, "type", argv[1]) != 0 ||
	    pgn_xml_set_attr(msg, "from", from->full) != 0 ||
	    pgn_xml_set_attr(msg, "to", to->full) != 0 ||
	    add_text_child(msg, "subject", argv[4]) != 0 ||
	    add_text_child(msg, "body", argv[5]) != 0) {
		pgn_xml_free(msg);
		answer(c, PGN_CTL_ERROR, "Out of memory\n");
		goto done;
	}
	if ((st = pgn_stanza_new(msg, NULL)) == NULL) {
		answer(c, PGN_CTL_ERROR, "Out of memory\n");
		goto done;
	}
	if (reach == REACH_YES) {
		send_routed(c, st);
		pgn_route(c->srv, st);
		goto done;
	}
	/* A local account: ask the store first; the stanza waits here. */
	if ((sp = calloc(1, sizeof(*sp))) == NULL) {
		pgn_stanza_free(st);
		answer(c, PGN_CTL_ERROR, "Out of memory\n");
		goto done;
	}
	sp->srv = c->srv;
	sp->conn = c->id;
	sp->st = st;
	if (pgn_account_get_creds(c->srv->store, to->node, to->domain, c->id,
				  send_user_checked, sp) != 0) {
		pgn_stanza_free(st);
		free(sp);
		answer(c, PGN_CTL_ERROR, "Storage error for %s\n", to->bare);
	}
done:
	pgn_jid_free(from);
	pgn_jid_free(to);
}

static void
dispatch(struct ctl_conn *c, int argc, char **argv)
{
	struct pgn_server *srv = c->srv;
	const struct pgn_ctl_command *cmd = pgn_ctl_command_find(argv[0]);
	int rc = 0;

	if (cmd == NULL) {
		dispatch_module(c, argc, argv);
		return;
	}
	if (argc - 1 != cmd->nargs) {
		answer_usage(c, cmd->name, cmd->args);
		return;
	}
	if (cmd->offline) {
		/* Account commands: an empty name or password is a mistake,
		 * never a value (only message texts and roster names may be
		 * empty). */
		for (int i = 1; i < argc; i++)
			if (argv[i][0] == '\0') {
				answer(c, PGN_CTL_USAGE,
				       "%s: argument %d is empty\n", argv[0], i);
				return;
			}
	}
	pgn_log(PGN_LOG_INFO, "ctl: %s", argv[0]); /* never the arguments */
	if (!strcmp(argv[0], "help")) {
		cmd_help(c);
		return;
	}
	if (!strcmp(argv[0], "send_message")) {
		cmd_send_message(c, argv);
		return;
	} else if (!strcmp(argv[0], "register")) {
		if (prep_account(c, argv[1], argv[2]) != 0)
			return;
		c->done_verb = "registered";
		rc = pgn_account_register(srv->store, srv->crypto, c->user,
					  c->host, argv[3], c->id, account_done,
					  srv);
	} else if (!strcmp(argv[0], "change_password")) {
		if (prep_account(c, argv[1], argv[2]) != 0)
			return;
		c->done_verb = "updated";
		rc = pgn_account_set_password(srv->store, srv->crypto, c->user,
					      c->host, argv[3], c->id,
					      account_done, srv);
	} else if (!strcmp(argv[0], "unregister")) {
		if (prep_account(c, argv[1], argv[2]) != 0)
			return;
		c->done_verb = "unregistered";
		rc = pgn_user_unregister(srv, c->user, c->host, c->id,
					 account_done, srv);
	} else if (!strcmp(argv[0], "registered_users")) {
		char *h = NULL;
		if (pgn_jid_nameprep(argv[1], &h) != 0 ||
		    pgn_server_host(srv, h) == NULL) {
			free(h);
			answer(c, PGN_CTL_ERROR, "Unknown host '%s'\n", argv[1]);
			return;
		}
		const char *params[] = { h };
		rc = pgn_store_query(srv->store,
				     "SELECT username FROM accounts WHERE host = "
				     "$1 ORDER BY username",
				     1, params, c->id, users_done, srv);
		free(h);
	} else if (!strcmp(argv[0], "connected_users")) {
		cmd_connected_users(c, 0);
		return;
	} else if (!strcmp(argv[0], "connected_users_number")) {
		cmd_connected_users(c, 1);
		return;
	} else if (!strcmp(argv[0], "kick_session")) {
		struct pgn_jid *jid = NULL;
		struct pgn_session *s = NULL;
		if (pgn_jid_make(argv[1], argv[2], argv[3], &jid) == 0)
			s = pgn_router_find_full(srv, jid);
		if (s == NULL) {
			answer(c, PGN_CTL_ERROR, "No session %s@%s/%s\n", argv[1],
			       argv[2], argv[3]);
		} else {
			pgn_stream_error(s, "policy-violation", argv[4]);
			answer(c, PGN_CTL_OK, "Kicked %s\n", jid->full);
		}
		pgn_jid_free(jid);
		return;
	} else if (!strcmp(argv[0], "status")) {
		answer(c, PGN_CTL_OK,
		       "pigeond %s is running: %zu connections, %zu accounts "
		       "online, %zu components, uptime %lds, storage %s\n",
		       pgn_server_version(), pgn_map_count(srv->sessions),
		       pgn_map_count(srv->users),
		       pgn_routes_count(srv->routes, PGN_ROUTE_COMPONENT),
		       pgn_server_uptime(srv), pgn_store_driver(srv->store));
		return;
	} else if (!strcmp(argv[0], "stats")) {
		cmd_stats(c);
		return;
	} else if (!strcmp(argv[0], "latency")) {
		cmd_latency(c);
		return;
	} else if (!strcmp(argv[0], "latency_reset")) {
		pgn_lat_hist_reset(&srv->latency->queued);
		pgn_lat_hist_reset(&srv->latency->flushed);
		answer(c, PGN_CTL_OK, "Latency histograms cleared\n");
		return;
	} else if (!strcmp(argv[0], "stop")) {
		c->stop_after = 1;
		answer(c, PGN_CTL_OK, "Stopping pigeond\n");
		return;
	} else {
		answer(c, PGN_CTL_USAGE, "'%s' is not a server command\n",
		       argv[0]);
		return;
	}
	if (rc != 0)
		answer(c, PGN_CTL_ERROR, "Cannot queue the command: %s\n",
		       strerror(-rc));
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;
	int argc = 0;
	char **argv = NULL;
	int rc;

	if (c->answered)
		return;
	rc = pgn_ctl_decode(bufferevent_get_input(bev), &argc, &argv);
	if (rc == 0)
		return;
	bufferevent_disable(bev, EV_READ);
	if (rc < 0 || argc < 1) {
		answer(c, PGN_CTL_USAGE, "Malformed request\n");
	} else {
		dispatch(c, argc, argv);
	}
	pgn_ctl_argv_free(argc, argv);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *c = arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		/* The client went away; pending async answers find no conn. */
		conn_free(c);
	}
}

static void
ctl_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
	      struct sockaddr *sa, int salen, void *arg)
{
	struct pgn_server *srv = arg;
	struct ctl_conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	c->srv = srv;
	c->id = pgn_server_next_id(srv);
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL || pgn_map_set_id(srv->ctl_conns, c->id, c) != 0) {
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			close(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
ctl_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	/* EMFILE: the same pause as the XMPP listeners, not a busy loop. */
	pgn_server_accept_failed(arg, EVUTIL_SOCKET_ERROR());
}

int
pgn_ctl_listen(struct pgn_server *srv, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	const char *path = srv->cfg->ctl_socket;
	mode_t old;

	if (path == NULL)
		return 0;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "ctl_socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	/* A stale socket from a crashed run would block the bind; a live
	 * server on it would answer a connect. */
	int probe = socket(AF_UNIX, SOCK_STREAM, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		close(probe);
		snprintf(err, errlen, "another pigeond is running on %s", path);
		return -EADDRINUSE;
	}
	if (probe >= 0)
		close(probe);
	unlink(path);
	old = umask(0077); /* owner-only from birth, no chmod race */
	srv->ctl = evconnlistener_new_bind(srv->base, ctl_accept_cb, srv,
					   LEV_OPT_CLOSE_ON_FREE |
						   LEV_OPT_CLOSE_ON_EXEC,
					   16, (struct sockaddr *)&sun,
					   sizeof(sun));
	umask(old);
	if (srv->ctl == NULL) {
		snprintf(err, errlen, "cannot create control socket %s: %s",
			 path, strerror(errno));
		return -errno;
	}
	evconnlistener_set_error_cb(srv->ctl, ctl_accept_error_cb);
	chmod(path, 0600);
	return 0;
}

/* A connection of a map being freed: conn_free would unlink it. */
static void
free_conn(void *value)
{
	struct ctl_conn *c = value;
	bufferevent_free(c->bev);
	free(c);
}

void
pgn_ctl_close(struct pgn_server *srv)
{
	if (srv->ctl != NULL) {
		evconnlistener_free(srv->ctl);
		srv->ctl = NULL;
		unlink(srv->cfg->ctl_socket);
	}
	if (srv->ctl_conns != NULL) {
		pgn_map_free_values(srv->ctl_conns, free_conn);
		srv->ctl_conns = pgn_map_new();
	}
}
