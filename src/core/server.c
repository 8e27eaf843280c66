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
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <sodium.h>

#include "host.h"
#include "iq.h"
#include "authlimit.h"
#include "connlimit.h"
#include "latency.h"
#include "pigeon/map.h"
#include "pigeon/log.h"
#include "pigeon/store.h"
#include "pigeon/worker.h"
#include "router.h"
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
	const struct pgn_route *r = pgn_routes_get(srv->routes, name);

	return r != NULL && r->kind == PGN_ROUTE_HOST ? r->host : NULL;
}

static void
reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	pgn_stream_reap(arg);
}

/* accept() failures are retried after a pause that doubles up to a
 * second, not at once: at the descriptor limit the listening socket stays
 * readable and an immediate retry spins the loop (issue 19: 3.7 million
 * log lines in 17 s).  Waiting clients stay in the kernel's backlog. */
#define ACCEPT_PAUSE_MIN_MS 100
#define ACCEPT_PAUSE_MAX_MS 1000
/* Floods (accept errors, refused connections) get one line per interval,
 * with the count of the events since the previous line. */
#define LOG_EVERY_MS 10000

/* Counts one event; true when a line is due, with *count set to the
 * events since the last line (this one included). */
static int
log_due(struct pgn_log_every *e, unsigned long *count)
{
	uint64_t now = pgn_now_ms();

	e->count++;
	if (e->last_ms != 0 && now - e->last_ms < LOG_EVERY_MS)
		return 0;
	*count = e->count;
	e->count = 0;
	e->last_ms = now;
	return 1;
}

static void
listener_enable(struct evconnlistener *lev, int on)
{
	if (lev == NULL)
		return;
	if (on)
		evconnlistener_enable(lev);
	else
		evconnlistener_disable(lev);
}

static void
listeners_enable(struct pgn_server *srv, int on)
{
	for (size_t i = 0; i < srv->nlisteners; i++)
		listener_enable(srv->listeners[i].lev, on);
	listener_enable(srv->ctl, on);
}

static void
accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pgn_server *srv = arg;

	srv->accept_paused = 0;
	if (!srv->stopping)
		listeners_enable(srv, 1);
}

void
pgn_server_accept_failed(struct pgn_server *srv, int err)
{
	unsigned long n;

	if (!srv->accept_paused && srv->accept_timer != NULL) {
		unsigned ms = srv->accept_pause_ms * 2;
		if (ms < ACCEPT_PAUSE_MIN_MS)
			ms = ACCEPT_PAUSE_MIN_MS;
		if (ms > ACCEPT_PAUSE_MAX_MS)
			ms = ACCEPT_PAUSE_MAX_MS;
		struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
		/* Every listener: they share the descriptor table. */
		listeners_enable(srv, 0);
		if (evtimer_add(srv->accept_timer, &tv) == 0) {
			srv->accept_paused = 1;
			srv->accept_pause_ms = ms;
		} else {
			listeners_enable(srv, 1);
		}
	}
	if (log_due(&srv->log_accept_err, &n))
		pgn_log(PGN_LOG_WARN,
			"accept: %s: %lu accept calls refused since the last "
			"such message; pausing accepts for %u ms at a time "
			"(%u connections open)",
			evutil_socket_error_to_string(err), n,
			srv->accept_pause_ms,
			pgn_connlimit_count(srv->conns));
}

/* Closes a connection over a limit at once: a fixed stream error on plain
 * streams (RFC 6120 §4.9.1.2: our header first, then the error), nothing
 * on direct TLS, whose handshake is the cost being avoided. */
static void
refuse(const struct pgn_listener *l, evutil_socket_t fd, const char *cond,
       const char *text)
{
	char buf[512];
	int n;

	if (l->cfg->kind != PGN_LISTEN_C2S_TLS) {
		int comp = l->cfg->kind == PGN_LISTEN_COMPONENT;
		n = snprintf(buf, sizeof(buf),
			     "<?xml version='1.0'?><stream:stream xmlns='%s' "
			     "xmlns:stream='" PGN_NS_STREAMS "' id='refused'%s>"
			     "<stream:error><%s xmlns='" PGN_NS_STREAM_ERRORS
			     "'/><text xmlns='" PGN_NS_STREAM_ERRORS
			     "' xml:lang='en'>%s</text></stream:error>"
			     "</stream:stream>",
			     comp ? PGN_NS_COMPONENT : PGN_NS_CLIENT,
			     comp ? "" : " version='1.0'", cond, text);
		/* Best effort: the socket buffer of a fresh connection takes
		 * it whole.  Unread input would turn our close into a reset
		 * that can destroy the error in flight: drop what came. */
		if (n > 0 && (size_t)n < sizeof(buf))
			(void)send(fd, buf, (size_t)n,
				   MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	}
	evutil_closesocket(fd);
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
	  struct sockaddr *sa, int salen, void *arg)
{
	struct pgn_listener *l = arg;
	struct pgn_server *srv = l->srv;
	char peer[64] = "?";
	unsigned long n;
	int rc;

	srv->accept_pause_ms = 0;
	if (srv->stopping) {
		evutil_closesocket(fd);
		return;
	}
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, peer,
			  sizeof(peer));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr,
			  peer, sizeof(peer));
	/* Counted before anything is allocated, so that refusing costs only
	 * the accept; given back when the connection closes (stream.c). */
	rc = pgn_connlimit_admit(srv->conns, peer);
	if (rc != 0) {
		const char *why = rc == -EPERM ? "max_connections_per_ip"
				  : rc == -EMFILE ? "max_connections"
						  : "out of memory";
		refuse(l, fd, rc == -EPERM ? "policy-violation"
					   : "resource-constraint",
		       rc == -EPERM ? "too many connections from your address"
				    : "too many connections");
		if (log_due(&srv->log_refused, &n))
			pgn_log(PGN_LOG_WARN,
				"connection from %s refused (%s); %lu refused "
				"since the last such message",
				peer, why, n);
		return;
	}
	{
		/* Stanzas are written whole; Nagle would hold the tail of a
		 * multi-record reply for the peer's delayed ACK (~40 ms). */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	pgn_stream_accept(srv, l, fd, peer);
}

static void
accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct pgn_listener *l = arg;

	/* EMFILE and friends: keep serving those connected. */
	pgn_server_accept_failed(l->srv, EVUTIL_SOCKET_ERROR());
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

struct pgn_later {
	struct pgn_later *next, **pprev;
	struct pgn_server *srv;
	struct event *ev;
	void (*fn)(void *arg);
	void (*free_fn)(void *arg);
	void *arg;
};

static void
later_unlink_free(struct pgn_later *t)
{
	*t->pprev = t->next;
	if (t->next != NULL)
		t->next->pprev = t->pprev;
	event_free(t->ev);
	free(t);
}

static void
later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pgn_later *t = arg;
	void (*fn)(void *) = t->fn, (*free_fn)(void *) = t->free_fn;
	void *a = t->arg;

	later_unlink_free(t);
	fn(a);
	free_fn(a);
}

int
pgn_server_later(struct pgn_server *srv, unsigned ms, void (*fn)(void *arg),
		 void (*free_fn)(void *arg), void *arg)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct pgn_later *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return -ENOMEM;
	t->srv = srv;
	t->fn = fn;
	t->free_fn = free_fn;
	t->arg = arg;
	t->ev = evtimer_new(srv->base, later_cb, t);
	if (t->ev == NULL || evtimer_add(t->ev, &tv) != 0) {
		if (t->ev != NULL)
			event_free(t->ev);
		free(t);
		return -ENOMEM;
	}
	t->next = srv->later;
	if (t->next != NULL)
		t->next->pprev = &t->next;
	t->pprev = &srv->later;
	srv->later = t;
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

/* The cap on connections: the configured one, or (0) the descriptor
 * limit less a reserve for the store, log, workers, modules and pigeonctl,
 * so that the limit is met with a stream error rather than with EMFILE. */
static unsigned
max_connections(const struct pgn_config *cfg)
{
	struct rlimit rl;
	rlim_t n;

	if (cfg->limits.max_connections != 0)
		return cfg->limits.max_connections;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	n = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : rl.rlim_cur / 2;
	return n > 10000000 ? 10000000 : (unsigned)n;
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
	srv->routes = pgn_routes_new(pgn_router_remote_default);
	srv->ctl_conns = pgn_map_new();
	srv->commands = pgn_map_new();
	srv->sm_ids = pgn_map_new();
	srv->auth_limits = pgn_limits_new(cfg->limits.auth_fail_delay_ms);
	srv->conns = pgn_connlimit_new(cfg->limits.max_connections_per_ip,
				       max_connections(cfg));
	srv->latency = calloc(1, sizeof(*srv->latency));
	if (srv->base == NULL || srv->sessions == NULL || srv->users == NULL ||
	    srv->routes == NULL || srv->ctl_conns == NULL ||
	    srv->commands == NULL || srv->sm_ids == NULL ||
	    srv->auth_limits == NULL || srv->conns == NULL ||
	    srv->latency == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	srv->accept_timer = evtimer_new(srv->base, accept_resume_cb, srv);
	if (srv->accept_timer == NULL) {
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
		if (pgn_router_add_host(srv, h) != 0) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
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
	pgn_log(PGN_LOG_INFO, "connections: at most %u, %u per address (0: no limit)",
		max_connections(cfg), cfg->limits.max_connections_per_ip);
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
	for (size_t i = 0; i < srv->nhosts; i++) {
		pgn_routes_del_owner(srv->routes, srv->hosts[i]);
		pgn_host_free(srv->hosts[i]);
	}
	free(srv->hosts);
	pgn_tls_free(srv->tls);
	for (int i = 0; i < 4; i++)
		if (srv->sig_events[i] != NULL)
			event_free(srv->sig_events[i]);
	if (srv->reaper != NULL)
		event_free(srv->reaper);
	while (srv->later != NULL) {
		struct pgn_later *t = srv->later;
		void (*free_fn)(void *) = t->free_fn;
		void *a = t->arg;
		later_unlink_free(t);
		free_fn(a);
	}
	pgn_limits_free(srv->auth_limits);
	pgn_connlimit_free(srv->conns); /* after the reap, which releases */
	if (srv->accept_timer != NULL)
		event_free(srv->accept_timer);
	pgn_map_free(srv->sessions);
	pgn_map_free(srv->users);
	pgn_routes_free(srv->routes);
	pgn_map_free(srv->ctl_conns);
	pgn_map_free(srv->commands);
	pgn_map_free(srv->sm_ids);
	pgn_iq_tracker_free(srv->iq); /* after the hosts: their modules
				       * cancelled theirs */
	free(srv->latency);
	/* The pid file is pigeond.c's: it holds the lock. */
	if (srv->base != NULL)
		event_base_free(srv->base);
	pgn_config_free(srv->cfg);
	free(srv);
}
