/* Accounts: SCRAM credentials in the store (table `accounts`).
 * Usernames are nodeprep'ed and hosts nameprep'ed by the callers. */
#ifndef PIGEON_ACCOUNT_H
#define PIGEON_ACCOUNT_H

#include <stdint.h>

#include "pigeon/scram.h"
#include "pigeon/store.h"

struct pgn_worker;

/* Called on the loop.  err: 0, -ENOENT (no such user), -EEXIST (already
 * registered), other negative values for storage errors. creds is NULL
 * unless the operation returns credentials. */
typedef void (*pgn_account_cb)(uint64_t owner, void *arg, int err,
			       const struct pgn_scram_creds *creds);

/* Asynchronous (server side).  Password derivation runs on crypto worker
 * cw, the store query on the store's thread. */
int pgn_account_get_creds(struct pgn_store *st, const char *user,
			  const char *host, uint64_t owner, pgn_account_cb cb,
			  void *arg);
int pgn_account_register(struct pgn_store *st, struct pgn_worker *cw,
			 const char *user, const char *host,
			 const char *password, uint64_t owner,
			 pgn_account_cb cb, void *arg);
int pgn_account_set_password(struct pgn_store *st, struct pgn_worker *cw,
			     const char *user, const char *host,
			     const char *password, uint64_t owner,
			     pgn_account_cb cb, void *arg);
int pgn_account_unregister(struct pgn_store *st, const char *user,
			   const char *host, uint64_t owner, pgn_account_cb cb,
			   void *arg);

/* Deletes the account for the server (XEP-0077 <remove/>, pigeonctl
 * unregister): fires "account-removing" on the account's host first,
 * whose handlers may queue store reads of the account's data (the store
 * runs them before the deletion: one connection, in order), then deletes
 * (pgn_account_unregister), then fires "account-removed" with the outcome
 * (data of both: struct pgn_account_event, module.h) and calls cb.  The
 * caller closes the sessions.  0 or negative error (cb then not called). */
struct pgn_server;
int pgn_user_unregister(struct pgn_server *srv, const char *user,
			const char *host, uint64_t owner, pgn_account_cb cb,
			void *arg);

/* Synchronous versions for pigeonctl when the server is stopped.
 * Return 0, -ENOENT, -EEXIST, -EINVAL (bad user name) or other errors. */
int pgn_account_register_sync(struct pgn_store *st, const char *user,
			       const char *host, const char *password);
int pgn_account_set_password_sync(struct pgn_store *st, const char *user,
				  const char *host, const char *password);
/* unregister_sync also cancels the account's presence subscriptions
 * with its local contacts in the same transaction (no stanza can be
 * sent: their roster rows are changed as mod_roster would on
 * unsubscribe/unsubscribed, see account.c). */
int pgn_account_unregister_sync(struct pgn_store *st, const char *user,
				const char *host);
/* Newline-separated sorted list of user names of host; caller frees. */
int pgn_account_list_sync(struct pgn_store *st, const char *host,
			  char **out);

#endif
