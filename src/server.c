/* Server assembly: loop, store, workers, TLS, hosts and modules,
 * listeners, signals, and a clean shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <sodium.h>

#include "host.h"
#include "authlimit.h"
#include "pigeon/map.h"
#include "pigeon/log.h"
#include "pigeon/store.h"
#include "pigeon/worker.h"
#include "server.h"
#include "stream.h"
#include "tls.h"

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.0.0"
#endif

const char *
pgn_server_version(void)
{
	return PACKAGE_VERSION;
}

long
pgn_server_uptime(const struct pgn_server *srv)
{
	return (long)(time(NULL) - srv->started);
}

uint64_t
pgn_server_next_id(struct pgn_server *srv)
{
	return ++srv->next_id;
}

struct pgn_host *
pgn_server_host(const struct pgn_server *srv, const char *name)
{
	for (size_t i = 0; i < srv->nhosts; i++)
		if (strcmp(srv->hosts[i]->name, name) == 0)
			return srv->hosts[i];
	return NULL;
}

static void
reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	pgn_stream_reap(arg);
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
	  struct sockaddr *sa, int salen, void *arg)
{
	struct pgn_listener *l = arg;
	char peer[64] = "?";

	if (l->srv->stopping) {
		evutil_closesocket(fd);
		return;
	}
	{
		/* Stanzas are written whole; Nagle would hold the tail of a
		 * multi-record reply for the peer's delayed ACK (~40 ms). */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, peer,
			  sizeof(peer));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr,
			  peer, sizeof(peer));
	pgn_stream_accept(l->srv, l, fd, peer);
}

static void
accept_error_cb(struct evconnlistener *lev, void *arg)
{
	/* EMFILE and friends: keep serving those connected. */
	pgn_log(PGN_LOG_WARN, "accept: %s",
		evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static int
bind_listener(struct pgn_server *srv, struct pgn_listener *l, char *err,
	      size_t errlen)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	char spec[128];

	snprintf(spec, sizeof(spec), strchr(l->cfg->ip, ':') ? "[%s]:%d" : "%s:%d",
		 l->cfg->ip, l->cfg->port);
	memset(&ss, 0, sizeof(ss));
	if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
		snprintf(err, errlen, "listen: bad address %s", spec);
		return -EINVAL;
	}
	l->srv = srv;
	l->lev = evconnlistener_new_bind(srv->base, accept_cb, l,
					 LEV_OPT_CLOSE_ON_FREE |
						 LEV_OPT_REUSEABLE |
						 LEV_OPT_CLOSE_ON_EXEC,
					 1024, (struct sockaddr *)&ss, sslen);
	if (l->lev == NULL) {
		snprintf(err, errlen, "listen: cannot bind %s: %s", spec,
			 strerror(errno));
		return -errno;
	}
	evconnlistener_set_error_cb(l->lev, accept_error_cb);
	pgn_log(PGN_LOG_INFO, "listening on %s (%s)", spec,
		l->cfg->kind == PGN_LISTEN_C2S       ? "c2s"
		: l->cfg->kind == PGN_LISTEN_C2S_TLS ? "c2s_tls"
						     : "component");
	return 0;
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct pgn_server *srv = arg;
	if (sig == SIGHUP) {
		int level = pgn_log_level_parse(srv->cfg->log_level);
		pgn_log_open(srv->cfg->log_file, level < 0 ? PGN_LOG_INFO : level);
		pgn_log(PGN_LOG_INFO, "log reopened");
		return;
	}
	pgn_log(PGN_LOG_INFO, "signal %d: shutting down", (int)sig);
	pgn_server_stop(srv);
}

struct pgn_server *
pgn_server_new(struct pgn_config *cfg, char *err, size_t errlen)
{
	struct pgn_server *srv = calloc(1, sizeof(*srv));
	int level;

	if (srv == NULL || sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise");
		free(srv);
		pgn_config_free(cfg);
		return NULL;
	}
	srv->cfg = cfg;
	srv->started = time(NULL);
	level = pgn_log_level_parse(cfg->log_level ? cfg->log_level : "info");
	if (pgn_log_open(cfg->log_file, level < 0 ? PGN_LOG_INFO : level) != 0) {
		snprintf(err, errlen, "cannot open log file %s: %s",
			 cfg->log_file, strerror(errno));
		goto fail;
	}
	{
		/* Batch epoll_ctl calls per loop turn: a login enables and
		 * disables events many times (a third fewer system calls,
		 * doc/performance.md). */
		struct event_config *ec = event_config_new();
		if (ec != NULL) {
			event_config_set_flag(ec,
					      EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
			srv->base = event_base_new_with_config(ec);
			event_config_free(ec);
		}
	}
	srv->sessions = pgn_map_new();
	srv->users = pgn_map_new();
	srv->components = pgn_map_new();
	srv->ctl_conns = pgn_map_new();
	srv->commands = pgn_map_new();
	srv->sm_ids = pgn_map_new();
	srv->auth_limits = pgn_limits_new(cfg->limits.auth_fail_delay_ms);
	if (srv->base == NULL || srv->sessions == NULL || srv->users == NULL ||
	    srv->components == NULL || srv->ctl_conns == NULL ||
	    srv->commands == NULL || srv->sm_ids == NULL ||
	    srv->auth_limits == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	srv->reaper = event_new(srv->base, -1, 0, reaper_cb, srv);
	srv->crypto = pgn_worker_new(srv->base, "crypto");
	if (srv->reaper == NULL || srv->crypto == NULL) {
		snprintf(err, errlen, "cannot start the crypto worker");
		goto fail;
	}
	struct pgn_store_config scfg = {
		.driver = cfg->storage_driver,
		.path = cfg->storage_path,
		.conninfo = cfg->storage_conninfo,
		.schema_dir = cfg->schema_dir,
		.outage_hold_ms = (long)cfg->storage_outage_hold * 1000,
	};
	srv->store = pgn_store_open(&scfg, srv->base, err, errlen);
	if (srv->store == NULL)
		goto fail;
	pgn_log(PGN_LOG_INFO, "storage: %s, schema version %d",
		pgn_store_driver(srv->store),
		pgn_store_schema_version(srv->store));
	srv->tls = pgn_tls_new(cfg->certfiles, cfg->ncertfiles, err, errlen);
	if (srv->tls == NULL)
		goto fail;
	for (size_t i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].kind == PGN_LISTEN_C2S_TLS &&
		    !pgn_tls_available(srv->tls)) {
			snprintf(err, errlen,
				 "%s:%d: a c2s_tls listener needs certfiles",
				 cfg->path, cfg->listen[i].line);
			goto fail;
		}
	srv->hosts = calloc(cfg->nhosts, sizeof(*srv->hosts));
	if (srv->hosts == NULL)
		goto fail;
	for (size_t i = 0; i < cfg->nhosts; i++) {
		struct pgn_host *h = pgn_host_new(srv, &cfg->hosts[i]);
		if (h == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		srv->hosts[srv->nhosts++] = h;
		if (pgn_host_load_modules(h, cfg->module_path, err, errlen) != 0)
			goto fail;
		if (!pgn_tls_has_host(srv->tls, h->name))
			pgn_log(PGN_LOG_WARN, "no certificate covers host %s",
				h->name);
	}
	/* Before the first listener: a SIGTERM sent as soon as a port
	 * answers must stop the server cleanly, not kill it. */
	int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	for (int i = 0; i < 3; i++) {
		srv->sig_events[i] = evsignal_new(srv->base, sigs[i], signal_cb, srv);
		if (srv->sig_events[i] == NULL ||
		    evsignal_add(srv->sig_events[i], NULL) != 0)
			goto fail;
	}
	signal(SIGPIPE, SIG_IGN);
	srv->listeners = calloc(cfg->nlisten, sizeof(*srv->listeners));
	if (srv->listeners == NULL && cfg->nlisten > 0)
		goto fail;
	for (size_t i = 0; i < cfg->nlisten; i++) {
		srv->listeners[i].cfg = &cfg->listen[i];
		srv->nlisteners++;
		if (bind_listener(srv, &srv->listeners[i], err, errlen) != 0)
			goto fail;
	}
	if (pgn_ctl_listen(srv, err, errlen) != 0)
		goto fail;
	if (cfg->pid_file != NULL) {
		FILE *fp = fopen(cfg->pid_file, "w");
		if (fp == NULL) {
			snprintf(err, errlen, "cannot write %s: %s",
				 cfg->pid_file, strerror(errno));
			goto fail;
		}
		fprintf(fp, "%ld\n", (long)getpid());
		fclose(fp);
	}
	return srv;
fail:
	if (err[0] == '\0')
		snprintf(err, errlen, "start-up failed");
	pgn_server_free(srv);
	return NULL;
}

int
pgn_server_run(struct pgn_server *srv)
{
	pgn_log(PGN_LOG_INFO, "pigeond %s ready", PACKAGE_VERSION);
	return event_base_dispatch(srv->base) < 0 ? -EIO : 0;
}

static int
shutdown_session(const char *key, uint64_t id, void *value, void *arg)
{
	pgn_stream_error(value, "system-shutdown", NULL);
	return 0;
}

static void
stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pgn_server *srv = arg;
	static const struct timeval tick = { 0, 100000 };
	/* Give streams up to 5 s to flush their goodbye. */
	if ((pgn_map_count(srv->sessions) == 0 &&
	     pgn_map_count(srv->ctl_conns) == 0) ||
	    time(NULL) - srv->stopping > 5) {
		event_base_loopexit(srv->base, NULL);
		return;
	}
	event_base_once(srv->base, -1, EV_TIMEOUT, stop_check_cb, srv, &tick);
}

void
pgn_server_stop(struct pgn_server *srv)
{
	static const struct timeval tick = { 0, 50000 };
	if (srv->stopping)
		return;
	srv->stopping = time(NULL);
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i].lev != NULL)
			evconnlistener_disable(srv->listeners[i].lev);
	pgn_map_foreach(srv->sessions, shutdown_session, NULL);
	event_base_once(srv->base, -1, EV_TIMEOUT, stop_check_cb, srv, &tick);
}

static int
destroy_session(const char *key, uint64_t id, void *value, void *arg)
{
	pgn_stream_destroy(value);
	return 0;
}

void
pgn_server_free(struct pgn_server *srv)
{
	if (srv == NULL)
		return;
	pgn_ctl_close(srv);
	if (srv->sessions != NULL)
		pgn_map_foreach(srv->sessions, destroy_session, NULL);
	if (srv->base != NULL)
		pgn_stream_reap(srv);
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i].lev != NULL)
			evconnlistener_free(srv->listeners[i].lev);
	free(srv->listeners);
	/* Workers finish their queues (callbacks find no sessions) before
	 * the hosts and modules they might call into go away. */
	pgn_worker_free(srv->crypto); /* may still queue store queries */
	pgn_store_close(srv->store);
	for (size_t i = 0; i < srv->nhosts; i++)
		pgn_host_free(srv->hosts[i]);
	free(srv->hosts);
	pgn_tls_free(srv->tls);
	for (int i = 0; i < 4; i++)
		if (srv->sig_events[i] != NULL)
			event_free(srv->sig_events[i]);
	if (srv->reaper != NULL)
		event_free(srv->reaper);
	pgn_limits_free(srv->auth_limits);
	pgn_map_free(srv->sessions);
	pgn_map_free(srv->users);
	pgn_map_free(srv->components);
	pgn_map_free(srv->ctl_conns);
	pgn_map_free(srv->commands);
	pgn_map_free(srv->sm_ids);
	if (srv->cfg != NULL && srv->cfg->pid_file != NULL)
		unlink(srv->cfg->pid_file);
	if (srv->base != NULL)
		event_base_free(srv->base);
	pgn_config_free(srv->cfg);
	free(srv);
}
