/* mod_mam: deleting old messages (max_age_days, pigeonctl). */
#include "mam.h"

/* Retention, in batches: one host (the sweep) or all (pigeonctl). */
static const char sql_delete_old[] =
        "DELETE FROM mam_messages WHERE id IN (SELECT id FROM mam_messages "
        "WHERE ts < CAST($1 AS BIGINT) AND host = $2 "
        "ORDER BY ts LIMIT " DELETE_BATCH_STR ")";
static const char sql_delete_old_all[] =
        "DELETE FROM mam_messages WHERE id IN (SELECT id FROM mam_messages "
        "WHERE ts < CAST($1 AS BIGINT) ORDER BY ts LIMIT " DELETE_BATCH_STR ")";

/* ---- retention ---- */

static int delete_next(struct deletion *d);

static void
deletion_finish(struct deletion *d, int ok)
{
	char text[32];

	if (d->cmd != NULL) {
		snprintf(text, sizeof(text), "%lld\n", d->total);
		if (ok)
			pgn_command_reply(d->cmd, PGN_CTL_OK, text);
		else
			pgn_command_reply(d->cmd, PGN_CTL_ERROR,
			                  "storage error");
	} else {
		d->mm->retention_running = 0;
		if (d->total > 0)
			pgn_log(PGN_LOG_INFO,
			        "mod_mam %s: %lld archived "
			        "messages older than %ld days deleted",
			        d->mm->host, d->total, d->mm->max_age_days);
	}
	free(d);
}

static void
delete_done(uint64_t owner, void *arg, const struct pgn_store_result *res)
{
	struct deletion *d = arg;

	(void)owner;
	if (res->error != 0) {
		pgn_log(PGN_LOG_WARN,
		        "mod_mam %s: deleting old messages "
		        "failed: %s",
		        d->mm->host, res->errmsg);
		deletion_finish(d, 0);
		return;
	}
	d->total += res->changes;
	/* A full batch: there may be more. */
	if (res->changes >= DELETE_BATCH && delete_next(d) == 0)
		return;
	deletion_finish(d, res->changes < DELETE_BATCH);
}

static int
delete_next(struct deletion *d)
{
	const char *params[2] = {d->cutoff, d->mm->host};

	if (d->all_hosts)
		return pgn_store_query(d->mm->store, sql_delete_old_all, 1,
		                       params, 0, delete_done, d);
	return pgn_store_query(d->mm->store, sql_delete_old, 2, params, 0,
	                       delete_done, d);
}

/* Deletes what was archived before now - days (inclusive of now for 0).
 * Takes cmd (answered when done). */
void
delete_old(struct mam *mm, long long days, struct pgn_command *cmd)
{
	struct deletion *d = calloc(1, sizeof(*d));

	if (d == NULL) {
		if (cmd != NULL)
			pgn_command_reply(cmd, PGN_CTL_ERROR, "out of memory");
		return;
	}
	d->mm = mm;
	d->cmd = cmd;
	d->all_hosts = cmd != NULL;
	snprintf(d->cutoff, sizeof(d->cutoff), "%lld",
	         (long long)now_us() + 1 - days * 86400LL * US_PER_SEC);
	if (cmd == NULL)
		mm->retention_running = 1;
	/* Queued rows are archived "now": they go first. */
	flush_rows(mm);
	if (delete_next(d) != 0)
		deletion_finish(d, 0);
}

void
cmd_delete_old(struct pgn_command *cmd, int argc, char *const *argv, void *arg)
{
	const char *s = argc == 1 ? argv[0] : "";
	size_t len = strlen(s);
	long long days = 0;

	if (len == 0 || len > MAX_DAYS_DIGITS ||
	    strspn(s, "0123456789") != len) {
		pgn_command_reply(cmd, PGN_CTL_USAGE,
		                  "usage: delete_old_mam_messages DAYS (an "
		                  "integer >= 0)");
		return;
	}
	for (size_t i = 0; i < len; i++)
		days = days * 10 + (s[i] - '0');
	delete_old(arg, days, cmd);
}
