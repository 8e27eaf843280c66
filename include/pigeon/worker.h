/* A worker thread with a job queue whose results come back to the event
 * loop.  Used for storage drivers and for heavy crypto (PBKDF2), so that
 * the loop never blocks.  Jobs are opaque; completion runs on the loop. */
#ifndef PIGEON_WORKER_H
#define PIGEON_WORKER_H

struct event_base;
struct pgn_worker;

/* run() executes on the worker thread; done() later on the loop thread
 * that owns base.  Neither may be NULL.  The job memory is the caller's;
 * done() normally frees it. */
typedef void (*pgn_job_fn)(void *job);

/* Starts one thread.  base NULL is not allowed.  Returns NULL on error. */
struct pgn_worker *pgn_worker_new(struct event_base *base, const char *name);
/* Queues a job.  0 or -ENOMEM / -ESHUTDOWN. */
int pgn_worker_submit(struct pgn_worker *w, void *job, pgn_job_fn run,
		      pgn_job_fn done);
/* Number of jobs queued or running. */
unsigned pgn_worker_pending(const struct pgn_worker *w);
/* Finishes queued jobs (running their done() callbacks), joins, frees. */
void pgn_worker_free(struct pgn_worker *w);

#endif
