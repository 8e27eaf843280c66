/* mod_roster: pigeonctl add_rosteritem, delete_rosteritem, get_roster. */
#include "roster_priv.h"

/* ---- pigeonctl ---------------------------------------------------------- */

struct ctl_job {
	struct pgn_command *cmd;
	int op; /* 0 add, 1 delete, 2 get */
	char *contact;
	char *nick;
	char *group;
	int sub;
};

static void
ctl_job_free(struct ctl_job *j)
{
	if (j == NULL)
		return;
	free(j->contact);
	free(j->nick);
	free(j->group);
	free(j);
}

static void
ctl_get(struct roster *r, struct pgn_command *cmd)
{
	size_t n = 0, len = 1;
	struct item **items = items_sorted(r, -1, cmp_jid, &n);
	char *out, *p;

	if (items == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		len += strlen(items[i]->jid) + 16;
		len += items[i]->name != NULL ? strlen(items[i]->name) : 0;
		for (size_t g = 0; g < items[i]->ngroups; g++)
			len += strlen(items[i]->groups[g]) + 1;
	}
	if ((out = malloc(len)) == NULL) {
		free(items);
		goto nomem;
	}
	p = out;
	for (size_t i = 0; i < n; i++) {
		const struct item *it = items[i];
		const char *name = it->name != NULL ? it->name : "";
		p += sprintf(p, "%s\t", it->jid);
		/* One line per item: control characters become spaces. */
		for (const char *c = name; *c != '\0'; c++)
			*p++ = (unsigned char)*c < 0x20 ? ' ' : *c;
		p += sprintf(p, "\t%s\t", sub_names[it->sub]);
		for (size_t g = 0; g < it->ngroups; g++)
			p += sprintf(p, "%s%s", g > 0 ? "," : "",
				     it->groups[g]);
		*p++ = '\n';
	}
	*p = '\0';
	pgn_command_reply(cmd, PGN_CTL_OK, out);
	free(out);
	free(items);
	return;
nomem:
	pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
}

static void
ctl_run(struct roster *r, void *arg)
{
	struct ctl_job *j = arg;
	struct item *it;
	int full = 0;

	if (r->failed) {
		pgn_command_reply(j->cmd, PGN_CTL_ERROR,
				  "cannot read the roster");
		goto out;
	}
	if (!r->exists) {
		pgn_command_reply(j->cmd, PGN_CTL_ERROR, "unknown user");
		goto out;
	}
	switch (j->op) {
	case 0:
		if ((it = pgn_map_get(r->items, j->contact)) == NULL &&
		    (it = item_create(r, j->contact, &full)) == NULL) {
			pgn_command_reply(j->cmd, PGN_CTL_ERROR,
					  full ? "the roster is full"
					       : "out of memory");
			goto out;
		}
		free(it->name);
		it->name = j->nick;
		j->nick = NULL;
		for (size_t i = 0; i < it->ngroups; i++)
			free(it->groups[i]);
		free(it->groups);
		it->groups = NULL;
		it->ngroups = 0;
		if (j->group != NULL && *j->group != '\0') {
			if ((it->groups = malloc(sizeof(char *))) != NULL) {
				it->groups[0] = j->group;
				it->ngroups = 1;
				j->group = NULL;
			}
		}
		it->sub = (enum sub)j->sub;
		it->ask = 0;
		it->approved = 0;
		item_changed(r, it);
		pgn_command_reply(j->cmd, PGN_CTL_OK, NULL);
		break;
	case 1:
		if (pgn_map_get(r->items, j->contact) == NULL) {
			pgn_command_reply(j->cmd, PGN_CTL_ERROR,
					  "no such roster item");
			goto out;
		}
		item_remove(r, j->contact);
		pgn_command_reply(j->cmd, PGN_CTL_OK, NULL);
		break;
	default:
		ctl_get(r, j->cmd);
		break;
	}
out:
	ctl_job_free(j);
}

static int
ctl_bare(const char *user, const char *host, char **out)
{
	struct pgn_jid *j = NULL;
	int rc = pgn_jid_make(user, host, NULL, &j);
	if (rc != 0)
		return rc;
	*out = strdup(j->bare);
	pgn_jid_free(j);
	return *out != NULL ? 0 : -ENOMEM;
}

static void
ctl_start(struct rmod *rm, struct pgn_command *cmd, struct ctl_job *j,
	  const char *user, const char *host)
{
	char *bare = NULL;
	struct roster *r;

	if (ctl_bare(user, host, &bare) != 0) {
		pgn_command_reply(cmd, PGN_CTL_USAGE, "invalid user or host");
		ctl_job_free(j);
		return;
	}
	if (strcmp(strchr(bare, '@') + 1, pgn_host_name(pgn_module_host(rm->m))) !=
	    0) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "not a local host");
		goto fail;
	}
	if ((r = roster_get(rm, bare)) == NULL)
		goto nomem;
	if (r->loaded) {
		ctl_run(r, j);
		roster_maybe_free(r);
	} else if (roster_wait(r, ctl_run, j) != 0) {
		roster_maybe_free(r);
		goto nomem;
	}
	free(bare);
	return;
nomem:
	pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
fail:
	ctl_job_free(j);
	free(bare);
}

static void
ctl_roster_item(struct pgn_command *cmd, int argc, char *const *argv,
		void *arg, int op)
{
	struct rmod *rm = arg;
	struct ctl_job *j;

	/* add takes nick, group and subscription after the two JIDs. */
	if (argc != (op == 0 ? 7 : 4)) {
		pgn_command_reply(cmd, PGN_CTL_USAGE,
				  op == 0 ? "7 arguments expected"
					  : "4 arguments expected");
		return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	j->cmd = cmd;
	j->op = op;
	if (ctl_bare(argv[2], argv[3], &j->contact) != 0) {
		pgn_command_reply(cmd, PGN_CTL_USAGE, "invalid contact JID");
		ctl_job_free(j);
		return;
	}
	if (op == 0) {
		if ((j->sub = parse_sub(argv[6])) < 0) {
			pgn_command_reply(cmd, PGN_CTL_USAGE,
					  "SUBS is none, to, from or both");
			ctl_job_free(j);
			return;
		}
		if (strlen(argv[4]) > MAX_NAME_BYTES ||
		    strlen(argv[5]) > MAX_GROUP_BYTES || has_ctrl(argv[5])) {
			pgn_command_reply(cmd, PGN_CTL_USAGE,
					  "NICK or GROUP too long or invalid");
			ctl_job_free(j);
			return;
		}
		if ((*argv[4] != '\0' && (j->nick = strdup(argv[4])) == NULL) ||
		    (j->group = strdup(argv[5])) == NULL) {
			pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
			ctl_job_free(j);
			return;
		}
	}
	ctl_start(rm, cmd, j, argv[0], argv[1]);
}

void
ctl_add(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	ctl_roster_item(cmd, argc, argv, arg, 0);
}

void
ctl_delete(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	ctl_roster_item(cmd, argc, argv, arg, 1);
}

void
ctl_get_roster(struct pgn_command *cmd, int argc, char *const *argv,
	       void *arg)
{
	struct ctl_job *j;
	if (argc != 2) {
		pgn_command_reply(cmd, PGN_CTL_USAGE, "2 arguments expected");
		return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	j->cmd = cmd;
	j->op = 2;
	ctl_start(arg, cmd, j, argv[0], argv[1]);
}
