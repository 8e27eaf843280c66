/* A worker thread with a FIFO job queue.  run() executes on the thread;
 * done() is handed back to the loop through a self-pipe read event, so
 * this does not depend on libevent's thread support being enabled.  One
 * thread and one FIFO mean done() callbacks arrive in submission order. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "pigeon/log.h"
#include "pigeon/worker.h"

struct pgn_job {
	void *job;
	pgn_job_fn run;
	pgn_job_fn done;
	struct pgn_job *next;
};

struct pgn_job_list {
	struct pgn_job *head;
	struct pgn_job *tail;
};

struct pgn_worker {
	pthread_mutex_t mu;
	pthread_cond_t work_cv; /* a job was queued, or stop was set */
	pthread_cond_t idle_cv; /* pending dropped to zero */
	struct pgn_job_list queue; /* waiting to run */
	struct pgn_job_list done;  /* ran, waiting for done() on the loop */
	atomic_uint pending;       /* queued or running */
	int notified; /* a wake-up byte is in the pipe for the done list */
	int stop;
	int pipefd[2];
	struct event *ev;
	pthread_t thread;
	char name[16];
};

static void
list_push(struct pgn_job_list *l, struct pgn_job *j)
{
	j->next = NULL;
	if (l->tail)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
}

static void *
worker_main(void *arg)
{
	struct pgn_worker *w = arg;
	struct pgn_job *j;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->queue.head && !w->stop)
			pthread_cond_wait(&w->work_cv, &w->mu);
		if (!w->queue.head)
			break; /* stop set and nothing left: drained */
		j = w->queue.head;
		w->queue.head = j->next;
		if (!w->queue.head)
			w->queue.tail = NULL;
		pthread_mutex_unlock(&w->mu);

		j->run(j->job);

		pthread_mutex_lock(&w->mu);
		list_push(&w->done, j);
		/* One byte per batch: the loop takes the whole list at once. */
		if (!w->notified) {
			ssize_t n;

			w->notified = 1;
			do
				n = write(w->pipefd[1], "j", 1);
			while (n < 0 && errno == EINTR);
			/* EAGAIN means the pipe already holds wake-ups. */
		}
		if (atomic_fetch_sub(&w->pending, 1) == 1)
			pthread_cond_broadcast(&w->idle_cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Runs the done() callbacks of every finished job, in order.  The list is
 * taken whole under the lock and run without it, so that a callback may
 * submit new jobs. */
static void
run_done(struct pgn_worker *w)
{
	struct pgn_job *j, *next;

	pthread_mutex_lock(&w->mu);
	j = w->done.head;
	w->done.head = w->done.tail = NULL;
	w->notified = 0;
	pthread_mutex_unlock(&w->mu);

	for (; j; j = next) {
		next = j->next;
		j->done(j->job);
		free(j);
	}
}

static void
on_wakeup(evutil_socket_t fd, short what, void *arg)
{
	struct pgn_worker *w = arg;
	char buf[64];
	ssize_t n;

	do
		n = read(fd, buf, sizeof(buf));
	while (n > 0 || (n < 0 && errno == EINTR));
	run_done(w);
}

struct pgn_worker *
pgn_worker_new(struct event_base *base, const char *name)
{
	struct pgn_worker *w = NULL;
	sigset_t all, old;
	int locks = 0, rc;

	if (!base)
		return NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->pipefd[0] = w->pipefd[1] = -1;
	snprintf(w->name, sizeof(w->name), "%s", name ? name : "pgn-worker");
	atomic_init(&w->pending, 0);
	if (pthread_mutex_init(&w->mu, NULL) != 0)
		goto fail;
	locks = 1;
	if (pthread_cond_init(&w->work_cv, NULL) != 0)
		goto fail;
	locks = 2;
	if (pthread_cond_init(&w->idle_cv, NULL) != 0)
		goto fail;
	locks = 3;
	if (pipe2(w->pipefd, O_NONBLOCK | O_CLOEXEC) < 0)
		goto fail;
	w->ev = event_new(base, w->pipefd[0], EV_READ | EV_PERSIST, on_wakeup,
			  w);
	if (!w->ev || event_add(w->ev, NULL) < 0)
		goto fail;

	/* Signals belong to the loop thread: the worker blocks them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		goto fail;
	}
	pthread_setname_np(w->thread, w->name);
	return w;

fail:
	pgn_log(PGN_LOG_ERROR, "worker %s: cannot start: %s", w->name,
		strerror(errno));
	if (w->ev)
		event_free(w->ev);
	if (w->pipefd[0] >= 0)
		close(w->pipefd[0]);
	if (w->pipefd[1] >= 0)
		close(w->pipefd[1]);
	if (locks >= 3)
		pthread_cond_destroy(&w->idle_cv);
	if (locks >= 2)
		pthread_cond_destroy(&w->work_cv);
	if (locks >= 1)
		pthread_mutex_destroy(&w->mu);
	free(w);
	return NULL;
}

int
pgn_worker_submit(struct pgn_worker *w, void *job, pgn_job_fn run,
		  pgn_job_fn done)
{
	struct pgn_job *j;

	if (!w || !run || !done)
		return -EINVAL;
	j = malloc(sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->job = job;
	j->run = run;
	j->done = done;

	pthread_mutex_lock(&w->mu);
	if (w->stop) {
		pthread_mutex_unlock(&w->mu);
		free(j);
		return -ESHUTDOWN;
	}
	list_push(&w->queue, j);
	atomic_fetch_add(&w->pending, 1);
	pthread_cond_signal(&w->work_cv);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

unsigned
pgn_worker_pending(const struct pgn_worker *w)
{
	return w ? atomic_load(&w->pending) : 0;
}

void
pgn_worker_free(struct pgn_worker *w)
{
	if (!w)
		return;
	/* Drain until quiescent: done() callbacks run here may queue more
	 * jobs (a query chained on another), which must not be refused. */
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (atomic_load(&w->pending) > 0)
			pthread_cond_wait(&w->idle_cv, &w->mu);
		if (!w->done.head)
			break;
		pthread_mutex_unlock(&w->mu);
		run_done(w);
		pthread_mutex_lock(&w->mu);
	}
	w->stop = 1;
	pthread_cond_signal(&w->work_cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);

	event_free(w->ev);
	close(w->pipefd[0]);
	close(w->pipefd[1]);
	pthread_cond_destroy(&w->idle_cv);
	pthread_cond_destroy(&w->work_cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}
