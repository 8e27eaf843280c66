/* The server object: one per process, owning the loop, the hosts, the
 * sessions and the shared services (store, crypto worker, TLS). */
#ifndef PIGEON_SERVER_H
#define PIGEON_SERVER_H

#include <stdint.h>
#include <time.h>

#include "pigeon/config.h"

struct event_base;
struct event;
struct evconnlistener;
struct pgn_store;
struct pgn_worker;
struct pgn_tls;
struct pgn_host;
struct pgn_map;
struct pgn_limits;
struct pgn_connlimit;
struct pgn_later;
struct pgn_session;
struct pgn_module;
struct pgn_latency;
struct pgn_routes;
struct pgn_route_ctx;

struct pgn_listener {
	struct pgn_server *srv;
	const struct pgn_cfg_listen *cfg;
	struct evconnlistener *lev;
};

struct pgn_server {
	struct event_base *base;
	struct pgn_config *cfg;
	struct pgn_store *store;
	struct pgn_worker *crypto;   /* PBKDF2 and other heavy crypto */
	struct pgn_tls *tls;
	struct pgn_host **hosts;
	size_t nhosts;
	struct pgn_listener *listeners;
	size_t nlisteners;
	struct evconnlistener *ctl;
	struct pgn_map *sessions;    /* id -> struct pgn_session (all streams) */
	struct pgn_map *users;       /* "user@host" -> struct pgn_user */
	struct pgn_routes *routes;   /* domain -> route (route.h) */
	struct pgn_map *ctl_conns;   /* id -> control connection */
	struct pgn_map *commands;    /* ctl command -> modules serving it */
	struct pgn_limits *auth_limits;
	struct pgn_connlimit *conns; /* c2s + component connections */
	struct pgn_later *later;     /* pending pgn_server_later() timers */
	/* accept() failures (EMFILE...): listeners paused, backing off. */
	struct event *accept_timer;
	unsigned accept_pause_ms;    /* the current pause, 0 after an accept */
	unsigned accept_paused : 1;
	struct pgn_log_every {       /* a flood of one event, logged rarely */
		uint64_t last_ms;
		unsigned long count; /* events since the last line */
	} log_accept_err, log_refused;
	struct event *sig_events[4];
	struct event *reaper;        /* frees closed sessions outside callbacks */
	struct pgn_session *dead;    /* list of sessions waiting for the reaper */
	time_t started;
	uint64_t next_id;
	time_t stopping;             /* when the shutdown started, or 0 */
	struct pgn_map *sm_ids;      /* XEP-0198 resumption id -> session */
	struct pgn_iq_tracker *iq;   /* pgn_send_iq (iq.c); NULL until used */
	uint32_t ping_seq;
	unsigned reaped;             /* sessions freed since the last trim */
	/* Delivery latency (latency.h, `pigeonctl latency`): the histograms,
	 * and while a read callback runs, when it started (monotonic ns, 0
	 * outside) and the session it reads for. */
	struct pgn_latency *latency;
	uint64_t read_ns;
	uint64_t read_sid;
};

/* Creates the server from a loaded config (takes ownership of cfg): opens
 * the store, loads certificates and modules, binds listeners.  On error
 * returns NULL with a message in err. */
struct pgn_server *pgn_server_new(struct pgn_config *cfg, char *err,
				  size_t errlen);
int pgn_server_run(struct pgn_server *srv);
/* Starts a clean shutdown (streams get system-shutdown); the loop ends
 * when they are closed. */
void pgn_server_stop(struct pgn_server *srv);
void pgn_server_free(struct pgn_server *srv);
uint64_t pgn_server_next_id(struct pgn_server *srv);
struct pgn_host *pgn_server_host(const struct pgn_server *srv,
				 const char *name);
/* accept() failed with errno err on a listener (the control socket's
 * too): stops accepting for a while instead of retrying at once, and logs
 * once per interval. */
void pgn_server_accept_failed(struct pgn_server *srv, int err);
/* Runs fn(arg) once after ms, then free_fn(arg).  Unlike event_base_once
 * the server owns arg: should it be freed first, free_fn(arg) alone runs
 * (no leak of held answers at shutdown).  0 or -ENOMEM (nothing taken). */
int pgn_server_later(struct pgn_server *srv, unsigned ms,
		     void (*fn)(void *arg), void (*free_fn)(void *arg),
		     void *arg);
/* The control socket (ctl_server.c). */
int pgn_ctl_listen(struct pgn_server *srv, char *err, size_t errlen);
void pgn_ctl_close(struct pgn_server *srv);
/* Registers the commands and figures module m declares (its
 * pgn_module_def); -EEXIST when a core command or another module's
 * command has one of the names. */
int pgn_ctl_register_module(struct pgn_server *srv, struct pgn_module *m);
/* Forgets the commands module m registered (it is being unloaded). */
void pgn_ctl_forget_module(struct pgn_server *srv, const struct pgn_module *m);

#endif
