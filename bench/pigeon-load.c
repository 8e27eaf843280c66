/* pigeon-load: an XMPP client load generator (issue 5; doc/performance.md).
 *
 * It speaks standard XMPP (RFC 6120/6121: STARTTLS or direct TLS, SASL
 * SCRAM-SHA-1/256 or PLAIN, resource binding, presence, messages,
 * optionally XEP-0198 acks and XEP-0077 registration) so that the same
 * run drives Pigeon, Prosody and ejabberd.
 *
 * One libevent loop drives every connection.  A connection is a small
 * struct (struct conn) with one bufferevent (plain, then OpenSSL on the
 * same fd) and a state number; it holds no XML parser.  The stream is
 * cut into top-level units by scan_unit(), which only follows tags and
 * quoted attribute values, and the handlers look for the few tags and
 * attributes they need inside one complete element's bytes.  That is
 * enough because we only read what servers send to clients (no CDATA,
 * no comments, and the values we read carry no entities: ids, base64,
 * the numbers we put in message bodies).  The bytes of an unfinished
 * element wait in the bufferevent's input; an idle session holds none.
 *
 * SCRAM keys (ClientKey, ServerKey) are cached per salt and iteration
 * count, and may be kept in a file (--key-cache): PBKDF2 on the client
 * would otherwise cost more CPU than the server spends on the login we
 * want to measure.
 *
 * Scenarios: idle, chat, login, offline (see usage()), and register,
 * which creates accounts by in-band registration (XEP-0077). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

/* The server's histogram and clock (src/latency.c): one implementation,
 * and the load tool's figures compare with `pigeonctl latency`. */
#include "latency.h"

#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_SM "urn:xmpp:sm:3"
#define NS_REGISTER "jabber:iq:register"
#define NS_PING "urn:xmpp:ping"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_EVENT NS_PUBSUB "#event"
#define NS_CAPS "http://jabber.org/protocol/caps"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define CAPS_NODE "https://pigeon.example/load"

/* A top-level element larger than this is not something we wait for. */
#define MAX_ELEMENT (256 * 1024)
/* Chat at a fixed rate: past this much unsent output on one connection
 * the server is not keeping up; further messages for it are skipped
 * (and counted) rather than buffered without end. */
#define MAX_OUTPUT (1024 * 1024)
/* Offline flat out: keep this much queued per sender. */
#define FILL_OUTPUT (64 * 1024)
#define MAX_NAME 128
#define MAX_SALT 64
#define MAX_ERRCOND 8
#define MAX_RESULTS 64
#define DETAIL_LIMIT 5 /* failures described on stderr (more with -v) */
#define NS_PER_S 1000000000ull

enum scenario {
	SC_IDLE,
	SC_CHAT,
	SC_LOGIN,
	SC_OFFLINE,
	SC_REGISTER,
	SC_PEP,
	SC_PEPSET,
	NSCENARIO
};

static const char *const scenario_names[NSCENARIO] = {
        "idle", "chat", "login", "offline", "register", "pep", "pepset"};

enum cstate {
	CS_CONNECT,    /* TCP connect in progress */
	CS_TLS,        /* TLS handshake in progress */
	CS_FEAT_PLAIN, /* waiting for the features of the plain stream */
	CS_PROCEED,    /* <starttls/> sent */
	CS_FEAT_TLS,   /* waiting for the features of the encrypted stream */
	CS_REGISTER,   /* XEP-0077 set sent */
	CS_CHALLENGE,  /* SCRAM client-first sent */
	CS_SUCCESS,    /* SCRAM client-final (or PLAIN) sent */
	CS_FEAT_AUTH,  /* waiting for the features after SASL */
	CS_BIND,
	CS_SESSION,
	CS_SM,    /* <enable/> sent */
	CS_READY, /* bound, presence sent: the scenario's */
	CS_CLOSING,
	CS_DEAD,
};

static const char *const state_names[] = {
        "connect",         "tls handshake", "features", "starttls",
        "features (tls)",  "register",      "sasl",     "sasl",
        "features (auth)", "bind",          "session",  "sm enable",
        "ready",           "closing",       "dead",
};

enum fail_kind {
	F_REFUSED,
	F_CONNECT,
	F_TIMEOUT,
	F_TLS,
	F_AUTH,
	F_STREAM_ERROR,
	F_CLOSED,
	F_BIND,
	F_REGISTER,
	F_PROTOCOL,
	F_DROPPED,
	F_LOCAL,
	NFAIL
};

static const char *const fail_names[NFAIL] = {
        "refused",  "connect_error", "timeout", "tls",
        "auth",     "stream_error",  "closed",  "bind",
        "register", "protocol",      "dropped", "local",
};

enum mech { M_AUTO, M_SCRAM256, M_SCRAM1, M_PLAIN };

static const char *const mech_names[] = {"auto", "SCRAM-SHA-256", "SCRAM-SHA-1",
                                         "PLAIN"};

enum phase {
	PH_UP,     /* persistent sessions logging in */
	PH_WARM,   /* login: untimed pass that fills the key cache */
	PH_LOGINS, /* login, register: timed logins */
	PH_SETTLE, /* idle: waiting before the second RSS reading */
	PH_HOLD,
	PH_RUN,   /* chat, offline: sending */
	PH_FIN,   /* offline: waiting for the pings behind the messages */
	PH_DRAIN, /* waiting for the last deliveries or bounces */
	PH_CLOSE, /* closing every stream before exiting */
};

/* Connection flags. */
#define CF_WANT_TLS 0x01  /* <proceed/> read: switch after this unit */
#define CF_SESSION 0x02   /* the server requires the session iq */
#define CF_SM_OFFER 0x04  /* the server offers XEP-0198 */
#define CF_SM 0x08        /* XEP-0198 enabled */
#define CF_REG_OFFER 0x10 /* the server offers in-band registration */
#define CF_SIG_OK 0x20    /* SCRAM server signature verified */

struct opts {
	enum scenario sc;
	const char *host;
	int port;
	const char *domain;
	int direct_tls;
	const char *cafile;
	enum mech mech;
	const char *user_fmt;
	const char *password;
	long first;
	long n;       /* sessions, logins, messages or accounts; 0: unset */
	long pairs;   /* chat */
	long users;   /* login: accounts cycled; offline: recipients */
	long senders; /* offline */
	long concurrency;
	double rate; /* new connections per second; 0: no limit */
	int src_ips;
	double msg_rate; /* messages per second; 0: flat out */
	long window;     /* flat out: messages in flight per sender */
	double duration;
	double warmup;
	double hold;
	double settle;
	double drain;
	long server_pid;
	const char *server_ctl; /* pigeond's control socket: its latency */
	long tick_us;           /* the tick's period; 0: tick_us() decides */
	int presence; /* -1: the scenario's default */
	int sm;
	long sm_every;
	int do_register;
	const char *resource;
	double timeout;
	const char *json;
	const char *verify_cmd;
	const char *key_cache;
	long body_size;
	int verbose;
	long contacts;       /* pep: the owner's contacts */
	const char *pep_node; /* pep: the node published to */
};

/* SCRAM keys for one (mechanism, iterations, salt). */
struct keyent {
	uint8_t used;
	uint8_t md; /* enum mech */
	uint8_t saltlen;
	uint8_t pad;
	uint32_t iter;
	unsigned char salt[MAX_SALT];
	unsigned char ck[32]; /* ClientKey */
	unsigned char sk[32]; /* ServerKey */
};

struct keycache {
	struct keyent *e;
	size_t cap; /* power of two */
	size_t len;
	long derived; /* PBKDF2 runs on this client */
};

/* Per connection, only while SASL runs. */
struct scram {
	char nonce[32];
	char cfb[MAX_NAME * 3 + 48]; /* client-first-message-bare */
	unsigned char ssig[EVP_MAX_MD_SIZE];
	size_t hlen;
};

struct conn {
	struct bench *b;
	struct bufferevent *bev;
	struct scram *scram;
	struct conn *prev; /* b->live; once dead, the next dead one */
	struct conn *next;
	uint64_t t_start;  /* ns: connect started */
	uint64_t deadline; /* ns: this step must be over by then; 0: none */
	uint32_t sm_in;    /* stanzas received since <enabled/> */
	uint32_t sm_out;   /* stanzas sent since <enabled/> */
	int32_t slot;      /* index in b->conns; -1: transient (login) */
	int32_t idx;       /* account number */
	int32_t pending;   /* pepset: publishes not answered yet */
	int fd;
	uint8_t state;
	uint8_t depth; /* 0 until the server's stream header, then 1 */
	uint8_t mech;
	uint8_t flags;
};

struct errcond {
	char name[40];
	long count;
};

struct result {
	const char *key;   /* JSON */
	const char *label; /* table column; NULL: JSON only */
	double v;
	int decimals;
};

struct bench {
	struct opts o;
	struct event_base *base;
	SSL_CTX *ssl_ctx;
	struct sockaddr_in dst;
	struct event *tick;   /* 1 ms: launching, rate sending, drain checks */
	struct event *sweep;  /* 1 s: step deadlines */
	struct event *reaper; /* frees dead connections outside callbacks */
	struct event *timer;  /* one-shot: the end of the current phase */
	struct event *sigint;
	struct event *sigterm;
	struct conn **conns; /* persistent scenarios: by slot */
	long nconns;
	struct conn *live;
	struct conn *dead;
	struct keycache keys;
	char *pad; /* chat body padding */
	enum phase phase;
	int launching;
	int stop_launch;
	int interrupted;
	int exit_code;
	int details; /* failures described so far */
	long target;
	long launched;
	long inflight; /* connections still negotiating */
	long ready;
	long failed;
	long dropped;
	long open;
	long done; /* logins or registrations completed */
	long fails[NFAIL];
	long registered;
	long existed;
	long sm_enabled;
	long sm_unavailable;
	uint64_t sm_acks;
	uint64_t t_launch; /* ns: launching (re)started */
	uint64_t t_up;     /* ns: every persistent session set up */
	uint64_t t_run;    /* ns: measurement started */
	uint64_t t_last;   /* ns: last login completed */
	uint64_t t_stop;   /* ns: sending stopped; UINT64_MAX while running */
	uint64_t t_measure;
	uint64_t t_drain_end;
	uint64_t t_fin;
	enum mech mech_used;
	/* chat and offline */
	uint64_t next_seq;
	uint64_t sent;
	uint64_t delivered;
	uint64_t sent_meas;
	uint64_t delivered_meas;
	uint64_t skipped; /* not sent: the connection's output was full */
	uint64_t rate_sent;
	uint64_t rate_t0;
	long cursor;
	long fin_expected;
	long fin_done;
	long msg_errors;
	long other_msgs;
	struct errcond errs[MAX_ERRCOND];
	int nerrs;
	struct pgn_lat_hist lat;
	struct pgn_lat_hist login;
	/* chat at a fixed rate: how late each message left against its due
	 * time (the 1 ms timer, and any stall of this loop). */
	struct pgn_lat_hist send_lag;
	int ctl_reset_sent; /* --server-ctl: latency_reset at t_measure */
	/* CPU seconds (user + system) of the server (--server-pid, all its
	 * threads) and of this process when the measured phase began. */
	double cpu_srv0;
	double cpu_self0;
	/* idle */
	long rss_before;
	long rss_after;
	long self_before;
	long self_after;
	/* offline verification */
	long verify_before;
	long verify_after;
	uint64_t t_stored;
	/* pep and pepset */
	char caps_ver[32];  /* pep: the contacts' XEP-0115 ver */
	char warm_id[32];   /* pep: the warm-up item's id */
	long interested;    /* pep: contacts the warm-up item reached */
	uint64_t pub_sent;  /* publishes sent (timed ones for pep) */
	uint64_t published; /* publishes answered with a result */
	uint64_t notified;  /* pep: timed items' notifications received */
	uint64_t t_notified; /* pep: the last of them */
	long pub_errors;
	struct result res[MAX_RESULTS];
	int nres;
};

static void conn_fail(struct conn *c, enum fail_kind kind, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int conn_write(struct conn *c, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void progress(struct bench *b);
static void finish(struct bench *b);
static void chat_send(struct conn *c);
static void offline_fill(struct conn *c);
static void offline_stop(struct bench *b);
static void offline_fin(struct bench *b);
static int pep_presence(struct conn *c);
static void pep_answer_disco(struct conn *c, const char *p, size_t n);
static void pep_on_event(struct conn *c, const char *p, size_t n);
static void pep_on_answer(struct conn *c, const char *id, size_t idl,
                          const char *p, size_t n);
static void pepset_start(struct conn *c);
static void pep_timer(struct bench *b);
static void pep_done(struct bench *b);
static void pepset_report(struct bench *b);

/* ---- small helpers ------------------------------------------------------ */

static struct timeval
tv_of(double seconds)
{
	struct timeval tv;

	if (seconds < 0)
		seconds = 0;
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return tv;
}

static int
is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* VmRSS of a process in KiB, or -1. */
static long
rss_kib(const char *pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%s/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "VmRSS:", 6) == 0) {
			kib = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kib;
}

static long
server_rss(struct bench *b)
{
	char pid[24];

	if (b->o.server_pid <= 0)
		return -1;
	snprintf(pid, sizeof(pid), "%ld", b->o.server_pid);
	return rss_kib(pid);
}

/* CPU seconds (user + system, all threads) of the server, or -1.  Fields
 * 14 and 15 of /proc/PID/stat, counted after the ')' that ends the
 * command name (which may hold spaces). */
static double
server_cpu(const struct bench *b)
{
	char path[64], buf[1024];
	unsigned long long ut, st;
	const char *p;
	size_t n;
	FILE *f;

	if (b->o.server_pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/stat", b->o.server_pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* state ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt, then utime stime */
	if (p == NULL || sscanf(p + 1,
	                        " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u"
	                        " %llu %llu",
	                        &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double
self_cpu(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return -1;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* The measured phase begins: CPU time is counted from here. */
static void
cpu_mark(struct bench *b)
{
	b->cpu_srv0 = server_cpu(b);
	b->cpu_self0 = self_cpu();
}

/* The account name of number idx; --user-fmt was checked to hold exactly
 * one %d, so the non-literal format is safe. */
static void
user_name(const struct bench *b, long idx, char *buf, size_t size)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(buf, size, b->o.user_fmt, (int)idx);
#pragma GCC diagnostic pop
}

/* XML character data: only what --user-fmt and --password may carry. */
static void
xml_escape(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; *in != '\0'; in++) {
		const char *rep = NULL;
		char one[2] = {*in, '\0'};

		switch (*in) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '\'':
			rep = "&apos;";
			break;
		case '"':
			rep = "&quot;";
			break;
		default:
			rep = one;
		}
		size_t l = strlen(rep);
		if (o + l + 1 > size)
			break;
		memcpy(out + o, rep, l);
		o += l;
	}
	out[o] = '\0';
}

/* ---- results: one list printed as a table and written as JSON ----------- */

static void
result_add(struct bench *b, const char *key, const char *label, double v,
           int decimals)
{
	if (b->nres >= MAX_RESULTS)
		return;
	b->res[b->nres].key = key;
	b->res[b->nres].label = label;
	b->res[b->nres].v = v;
	b->res[b->nres].decimals = decimals;
	b->nres++;
}

static void
print_table(const struct bench *b)
{
	char vals[MAX_RESULTS][32];
	int widths[MAX_RESULTS];
	int i;

	printf("pigeon-load %s: %s:%d (%s, %s%s)\n", scenario_names[b->o.sc],
	       b->o.host, b->o.port, b->o.domain,
	       b->o.direct_tls ? "direct TLS" : "STARTTLS",
	       b->mech_used != M_AUTO
	               ? (b->mech_used == M_SCRAM256 ? ", SCRAM-SHA-256"
	                  : b->mech_used == M_SCRAM1 ? ", SCRAM-SHA-1"
	                                             : ", PLAIN")
	               : "");
	for (i = 0; i < b->nres; i++) {
		const struct result *r = &b->res[i];
		int w;

		snprintf(vals[i], sizeof(vals[i]), "%.*f", r->decimals, r->v);
		if (r->label == NULL)
			continue;
		w = (int)strlen(r->label);
		if ((int)strlen(vals[i]) > w)
			w = (int)strlen(vals[i]);
		widths[i] = w;
	}
	for (i = 0; i < b->nres; i++)
		if (b->res[i].label != NULL)
			printf("%*s  ", widths[i], b->res[i].label);
	printf("\n");
	for (i = 0; i < b->nres; i++)
		if (b->res[i].label != NULL)
			printf("%*s  ", widths[i], vals[i]);
	printf("\n");
	if (b->failed > 0 || b->dropped > 0) {
		printf("failures:");
		for (i = 0; i < NFAIL; i++)
			if (b->fails[i] > 0)
				printf(" %s=%ld", fail_names[i], b->fails[i]);
		printf("\n");
	}
	if (b->nerrs > 0) {
		printf("stanza errors received:");
		for (i = 0; i < b->nerrs; i++)
			printf(" %s=%ld", b->errs[i].name, b->errs[i].count);
		printf("\n");
	}
	fflush(stdout);
}

static int
write_json(const struct bench *b)
{
	FILE *f;
	int i, first;

	if (b->o.json == NULL)
		return 0;
	f = fopen(b->o.json, "w");
	if (f == NULL)
		goto fail;
	fprintf(f, "{\n  \"scenario\": \"%s\",\n", scenario_names[b->o.sc]);
	/* host, domain and resource come from our own command line and
	 * are checked to hold no quote or backslash. */
	fprintf(f, "  \"server\": \"%s:%d\",\n  \"domain\": \"%s\",\n",
	        b->o.host, b->o.port, b->o.domain);
	fprintf(f, "  \"tls\": \"%s\",\n  \"mechanism\": \"%s\",\n",
	        b->o.direct_tls ? "direct" : "starttls",
	        mech_names[b->mech_used]);
	fprintf(f, "  \"interrupted\": %s,\n",
	        b->interrupted ? "true" : "false");
	for (i = 0; i < b->nres; i++)
		fprintf(f, "  \"%s\": %.*f,\n", b->res[i].key,
		        b->res[i].decimals, b->res[i].v);
	fprintf(f, "  \"failures\": {");
	first = 1;
	for (i = 0; i < NFAIL; i++)
		if (b->fails[i] > 0) {
			fprintf(f, "%s\"%s\": %ld", first ? "" : ", ",
			        fail_names[i], b->fails[i]);
			first = 0;
		}
	fprintf(f, "},\n  \"error_conditions\": {");
	for (i = 0; i < b->nerrs; i++)
		fprintf(f, "%s\"%s\": %ld", i ? ", " : "", b->errs[i].name,
		        b->errs[i].count);
	fprintf(f, "},\n  \"exit_code\": %d\n}\n", b->exit_code);
	if (ferror(f)) {
		fclose(f);
		goto fail;
	}
	if (fclose(f) != 0)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "pigeon-load: cannot write %s: %s\n", b->o.json,
	        strerror(errno));
	return -1;
}

/* ---- the stream scanner and element helpers ----------------------------- */

enum unit { U_TEXT, U_HEADER, U_ELEMENT, U_CLOSE };

/* Finds the end of the next unit at the front of the stream bytes p[0..n):
 * text between elements, the server's stream header (at depth 0), one
 * complete top-level element, or </stream:stream>.  Returns 1 with *used
 * and *kind, or 0 when the unit is not complete yet.  Only '<', '>' and
 * quotes matter, so it costs one pass over the bytes. */
static int
scan_unit(const char *p, size_t n, int depth, size_t *used, int *kind)
{
	size_t i = 0;
	int level = 0;

	if (p[0] != '<') {
		const char *lt = memchr(p, '<', n);
		*used = lt != NULL ? (size_t)(lt - p) : n;
		*kind = U_TEXT;
		return 1;
	}
	for (;;) {
		size_t e = i + 1;
		char q = 0;

		for (; e < n; e++) {
			if (q != 0) {
				if (p[e] == q)
					q = 0;
			} else if (p[e] == '"' || p[e] == '\'') {
				q = p[e];
			} else if (p[e] == '>') {
				break;
			}
		}
		if (e >= n || i + 1 >= n)
			return 0;
		if (p[i + 1] == '?' || p[i + 1] == '!') {
			if (level == 0) {
				*used = e + 1;
				*kind = U_TEXT;
				return 1;
			}
		} else if (p[i + 1] == '/') {
			if (level == 0) {
				*used = e + 1;
				*kind = U_CLOSE;
				return 1;
			}
			if (--level == 0) {
				*used = e + 1;
				*kind = U_ELEMENT;
				return 1;
			}
		} else if (p[e - 1] == '/') {
			if (level == 0) {
				*used = e + 1;
				*kind = U_ELEMENT;
				return 1;
			}
		} else {
			if (level == 0 && depth == 0) {
				*used = e + 1;
				*kind = U_HEADER;
				return 1;
			}
			level++;
		}
		const char *lt = memchr(p + e + 1, '<', n - e - 1);
		if (lt == NULL)
			return 0;
		i = (size_t)(lt - p);
	}
}

/* The local name (prefix dropped) of the tag that starts at p ('<'). */
static size_t
tag_name(const char *p, size_t n, const char **name)
{
	size_t i = 1, start = 1;

	if (i < n && p[i] == '/')
		start = i = 2;
	while (i < n && !is_space(p[i]) && p[i] != '>' && p[i] != '/') {
		if (p[i] == ':')
			start = i + 1;
		i++;
	}
	*name = p + start;
	return i - start;
}

static int
name_eq(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(name, want, len) == 0;
}

/* Offset of the '>' that ends the tag starting at p, or n. */
static size_t
tag_end(const char *p, size_t n)
{
	char q = 0;

	for (size_t i = 0; i < n; i++) {
		if (q != 0) {
			if (p[i] == q)
				q = 0;
		} else if (p[i] == '\'' || p[i] == '"') {
			q = p[i];
		} else if (p[i] == '>') {
			return i;
		}
	}
	return n;
}

/* The value of attribute NAME in the start tag at p (raw, as written). */
static int
el_attr(const char *p, size_t n, const char *name, const char **val,
        size_t *len)
{
	size_t end = tag_end(p, n), i = 1, a, an, v;
	char q;

	while (i < end && !is_space(p[i]) && p[i] != '/')
		i++;
	for (;;) {
		while (i < end && is_space(p[i]))
			i++;
		if (i >= end || p[i] == '/')
			return -1;
		a = i;
		while (i < end && p[i] != '=' && !is_space(p[i]))
			i++;
		an = i - a;
		while (i < end && is_space(p[i]))
			i++;
		if (i >= end || p[i] != '=')
			return -1;
		i++;
		while (i < end && is_space(p[i]))
			i++;
		if (i >= end || (p[i] != '\'' && p[i] != '"'))
			return -1;
		q = p[i++];
		v = i;
		while (i < end && p[i] != q)
			i++;
		if (i >= end)
			return -1;
		if (an == strlen(name) && memcmp(p + a, name, an) == 0) {
			*val = p + v;
			*len = i - v;
			return 0;
		}
		i++;
	}
}

static int
attr_eq(const char *p, size_t n, const char *name, const char *want)
{
	const char *v;
	size_t len;

	return el_attr(p, n, name, &v, &len) == 0 && name_eq(v, len, want);
}

/* Finds, from offset `from`, the next start tag with local name NAME;
 * *at is its offset, *text its character data up to the next tag (empty
 * when it is self-closing). */
static int
el_find(const char *p, size_t n, size_t from, const char *name, size_t *at,
        const char **text, size_t *tlen)
{
	size_t i = from;

	while (i < n) {
		const char *lt = memchr(p + i, '<', n - i);
		const char *nm;
		size_t nl, e;

		if (lt == NULL)
			return -1;
		i = (size_t)(lt - p);
		if (i + 1 < n && p[i + 1] != '/' && p[i + 1] != '?' &&
		    p[i + 1] != '!') {
			nl = tag_name(p + i, n - i, &nm);
			if (name_eq(nm, nl, name)) {
				e = i + tag_end(p + i, n - i);
				if (e >= n)
					return -1;
				*at = i;
				if (p[e - 1] == '/') {
					*text = p + e;
					*tlen = 0;
				} else {
					const char *t = p + e + 1;
					const char *end =
					        memchr(t, '<', n - e - 1);
					*text = t;
					*tlen = end != NULL ? (size_t)(end - t)
					                    : n - e - 1;
				}
				return 0;
			}
		}
		i++;
	}
	return -1;
}

static int
el_has(const char *p, size_t n, const char *name)
{
	size_t at, tl;
	const char *t;

	return el_find(p, n, 1, name, &at, &t, &tl) == 0;
}

/* The local name of the first child of the element at p[from] other than
 * <text/>: the condition of a stream error, SASL failure or stanza error. */
static void
el_condition(const char *p, size_t n, size_t from, char *out, size_t size)
{
	size_t i = from + tag_end(p + from, n - from) + 1;

	snprintf(out, size, "unknown");
	while (i < n) {
		const char *lt = memchr(p + i, '<', n - i);
		const char *nm;
		size_t nl;

		if (lt == NULL)
			return;
		i = (size_t)(lt - p);
		if (i + 1 < n && p[i + 1] == '/')
			return;
		nl = tag_name(p + i, n - i, &nm);
		if (!name_eq(nm, nl, "text")) {
			if (nl >= size)
				nl = size - 1;
			/* The name goes into JSON: keep it to name bytes. */
			for (size_t k = 0; k < nl; k++)
				out[k] = (nm[k] == '"' || nm[k] == '\\')
				                 ? '_'
				                 : nm[k];
			out[nl] = '\0';
			return;
		}
		i += tag_end(p + i, n - i) + 1;
	}
}

/* ---- base64 and SCRAM (RFC 5802, RFC 7677) ------------------------------ */

static int
b64_encode(const unsigned char *in, size_t n, char *out, size_t size)
{
	if (4 * ((n + 2) / 3) + 1 > size)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	return 0;
}

static int
b64_decode(const char *in, size_t n, unsigned char *out, size_t size,
           size_t *outlen)
{
	size_t pad = 0;
	int r;

	while (n > 0 && is_space(in[n - 1]))
		n--;
	while (n > 0 && is_space(in[0])) {
		in++;
		n--;
	}
	/* RFC 6120 6.4.2: a lone '=' is empty data. */
	if (n == 0 || (n == 1 && in[0] == '=')) {
		*outlen = 0;
		return 0;
	}
	if (n % 4 != 0 || n / 4 * 3 > size)
		return -1;
	r = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (r < 0)
		return -1;
	if (in[n - 1] == '=')
		pad++;
	if (in[n - 2] == '=')
		pad++;
	*outlen = (size_t)r - pad;
	return 0;
}

static const EVP_MD *
mech_md(enum mech m)
{
	return m == M_SCRAM1 ? EVP_sha1() : EVP_sha256();
}

static uint64_t
key_hash(uint8_t md, uint32_t iter, const unsigned char *salt, size_t len)
{
	uint64_t h = 1469598103934665603ull;

	h = (h ^ md) * 1099511628211ull;
	h = (h ^ iter) * 1099511628211ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ salt[i]) * 1099511628211ull;
	return h;
}

static struct keyent *
keys_slot(struct keycache *k, uint8_t md, uint32_t iter,
          const unsigned char *salt, size_t len)
{
	size_t i = (size_t)key_hash(md, iter, salt, len) & (k->cap - 1);

	for (;;) {
		struct keyent *e = &k->e[i];
		if (!e->used ||
		    (e->md == md && e->iter == iter && e->saltlen == len &&
		     memcmp(e->salt, salt, len) == 0))
			return e;
		i = (i + 1) & (k->cap - 1);
	}
}

static int
keys_grow(struct keycache *k)
{
	struct keycache n = {0};

	n.cap = k->cap ? k->cap * 2 : 1024;
	n.e = calloc(n.cap, sizeof(*n.e));
	if (n.e == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < k->cap; i++)
		if (k->e[i].used)
			*keys_slot(&n, k->e[i].md, k->e[i].iter, k->e[i].salt,
			           k->e[i].saltlen) = k->e[i];
	n.len = k->len;
	n.derived = k->derived;
	free(k->e);
	*k = n;
	return 0;
}

/* ClientKey and ServerKey for this salt: from the cache, or derived
 * (PBKDF2) and cached.  Returns a pointer into the cache. */
static const struct keyent *
keys_get(struct bench *b, enum mech m, uint32_t iter, const unsigned char *salt,
         size_t len)
{
	struct keycache *k = &b->keys;
	unsigned char salted[EVP_MAX_MD_SIZE];
	const EVP_MD *md = mech_md(m);
	size_t hlen = (size_t)EVP_MD_get_size(md);
	unsigned int outl;
	struct keyent *e;

	if (len > MAX_SALT)
		return NULL;
	if ((k->len + 1) * 2 > k->cap && keys_grow(k) != 0)
		return NULL;
	e = keys_slot(k, (uint8_t)m, iter, salt, len);
	if (e->used)
		return e;
	if (PKCS5_PBKDF2_HMAC(b->o.password, (int)strlen(b->o.password), salt,
	                      (int)len, (int)iter, md, (int)hlen, salted) != 1)
		return NULL;
	if (HMAC(md, salted, (int)hlen, (const unsigned char *)"Client Key", 10,
	         e->ck, &outl) == NULL ||
	    HMAC(md, salted, (int)hlen, (const unsigned char *)"Server Key", 10,
	         e->sk, &outl) == NULL)
		return NULL;
	e->used = 1;
	e->md = (uint8_t)m;
	e->iter = iter;
	e->saltlen = (uint8_t)len;
	memcpy(e->salt, salt, len);
	k->len++;
	k->derived++;
	return e;
}

#define KEYS_MAGIC "pigeon-load keys 1\n"

/* The cache file is ours (a dump of entries); a file that does not match
 * is ignored rather than trusted. */
static int
keys_load(struct bench *b)
{
	char magic[sizeof(KEYS_MAGIC)];
	struct keyent e;
	FILE *f;

	if (b->o.key_cache == NULL)
		return 0;
	f = fopen(b->o.key_cache, "rb");
	if (f == NULL)
		return errno == ENOENT ? 0 : -errno;
	if (fread(magic, 1, sizeof(magic), f) != sizeof(magic) ||
	    memcmp(magic, KEYS_MAGIC, sizeof(magic)) != 0)
		goto out;
	while (fread(&e, sizeof(e), 1, f) == 1) {
		struct keyent *s;

		if (!e.used || e.saltlen > MAX_SALT ||
		    (e.md != M_SCRAM1 && e.md != M_SCRAM256))
			continue;
		if ((b->keys.len + 1) * 2 > b->keys.cap &&
		    keys_grow(&b->keys) != 0)
			break;
		s = keys_slot(&b->keys, e.md, e.iter, e.salt, e.saltlen);
		if (!s->used)
			b->keys.len++;
		*s = e;
	}
out:
	fclose(f);
	return 0;
}

static int
keys_save(struct bench *b)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (b->o.key_cache == NULL || b->keys.derived == 0)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", b->o.key_cache);
	f = fopen(tmp, "wb");
	if (f == NULL)
		goto fail;
	if (fwrite(KEYS_MAGIC, 1, sizeof(KEYS_MAGIC), f) != sizeof(KEYS_MAGIC))
		goto fail_close;
	for (size_t i = 0; i < b->keys.cap; i++)
		if (b->keys.e[i].used &&
		    fwrite(&b->keys.e[i], sizeof(b->keys.e[i]), 1, f) != 1)
			goto fail_close;
	if (fclose(f) != 0)
		goto fail;
	if (rename(tmp, b->o.key_cache) != 0)
		goto fail;
	return 0;
fail_close:
	fclose(f);
fail:
	fprintf(stderr, "pigeon-load: cannot write %s: %s\n", b->o.key_cache,
	        strerror(errno));
	return -1;
}

/* The SCRAM client-first message, base64, into out. */
static int
scram_first(struct conn *c, char *out, size_t size)
{
	unsigned char rnd[18];
	char user[MAX_NAME], esc[MAX_NAME * 3], msg[sizeof(c->scram->cfb) + 8];
	size_t o = 0;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -1;
	if (b64_encode(rnd, sizeof(rnd), c->scram->nonce,
	               sizeof(c->scram->nonce)) != 0)
		return -1;
	user_name(c->b, c->idx, user, sizeof(user));
	/* saslname (RFC 5802 5.1): ',' and '=' are escaped. */
	for (const char *s = user; *s != '\0' && o + 4 < sizeof(esc); s++) {
		if (*s == ',' || *s == '=') {
			memcpy(esc + o, *s == ',' ? "=2C" : "=3D", 3);
			o += 3;
		} else {
			esc[o++] = *s;
		}
	}
	esc[o] = '\0';
	snprintf(c->scram->cfb, sizeof(c->scram->cfb), "n=%s,r=%s", esc,
	         c->scram->nonce);
	snprintf(msg, sizeof(msg), "n,,%s", c->scram->cfb);
	return b64_encode((const unsigned char *)msg, strlen(msg), out, size);
}

/* The client-final message for the server-first message sf (base64). */
static int
scram_final(struct conn *c, const char *sf64, size_t sflen, char *out,
            size_t size, const char **why)
{
	unsigned char sf[1024], salt[MAX_SALT + 4], stored[EVP_MAX_MD_SIZE];
	unsigned char csig[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE];
	char wp[sizeof(sf) + 16], p64[128], final[sizeof(wp) + sizeof(p64) + 8];
	char auth[sizeof(c->scram->cfb) + sizeof(sf) + sizeof(wp) + 8];
	const char *r = NULL, *s = NULL, *it = NULL;
	size_t len, rl = 0, sl = 0, saltlen, hlen;
	const EVP_MD *md = mech_md((enum mech)c->mech);
	const struct keyent *k;
	unsigned int outl;
	long iter;

	*why = "malformed server-first-message";
	if (b64_decode(sf64, sflen, sf, sizeof(sf) - 1, &len) != 0)
		return -1;
	sf[len] = '\0';
	for (char *f = (char *)sf; f != NULL && *f != '\0';) {
		char *comma = strchr(f, ',');
		size_t fl = comma != NULL ? (size_t)(comma - f) : strlen(f);

		if (fl >= 2 && f[1] == '=') {
			if (f[0] == 'r') {
				r = f + 2;
				rl = fl - 2;
			} else if (f[0] == 's') {
				s = f + 2;
				sl = fl - 2;
			} else if (f[0] == 'i') {
				it = f + 2;
			} else if (f[0] == 'm') {
				*why = "server demands an extension (m=)";
				return -1;
			}
		}
		f = comma != NULL ? comma + 1 : NULL;
	}
	if (r == NULL || s == NULL || it == NULL)
		return -1;
	len = strlen(c->scram->nonce);
	if (rl <= len || memcmp(r, c->scram->nonce, len) != 0) {
		*why = "server nonce does not extend ours";
		return -1;
	}
	iter = strtol(it, NULL, 10);
	if (iter < 1 || iter > 10000000) {
		*why = "bad iteration count";
		return -1;
	}
	if (b64_decode(s, sl, salt, sizeof(salt), &saltlen) != 0 ||
	    saltlen > MAX_SALT) {
		*why = "bad salt";
		return -1;
	}
	k = keys_get(c->b, (enum mech)c->mech, (uint32_t)iter, salt, saltlen);
	if (k == NULL) {
		*why = "key derivation failed";
		return -1;
	}
	hlen = (size_t)EVP_MD_get_size(md);
	/* c=biws is base64("n,,"): no channel binding. */
	snprintf(wp, sizeof(wp), "c=biws,r=%.*s", (int)rl, r);
	snprintf(auth, sizeof(auth), "%s,%s,%s", c->scram->cfb, (char *)sf, wp);
	if (EVP_Digest(k->ck, hlen, stored, &outl, md, NULL) != 1 ||
	    HMAC(md, stored, (int)hlen, (unsigned char *)auth, strlen(auth),
	         csig, &outl) == NULL ||
	    HMAC(md, k->sk, (int)hlen, (unsigned char *)auth, strlen(auth),
	         c->scram->ssig, &outl) == NULL) {
		*why = "HMAC failed";
		return -1;
	}
	c->scram->hlen = hlen;
	for (size_t i = 0; i < hlen; i++)
		proof[i] = k->ck[i] ^ csig[i];
	if (b64_encode(proof, hlen, p64, sizeof(p64)) != 0)
		return -1;
	snprintf(final, sizeof(final), "%s,p=%s", wp, p64);
	return b64_encode((unsigned char *) final, strlen(final), out, size);
}

/* Checks the server signature in server-final data v=... (base64). */
static int
scram_verify(struct conn *c, const char *d64, size_t dlen, const char **why)
{
	unsigned char d[512], v[EVP_MAX_MD_SIZE + 4];
	size_t len, vlen;

	*why = "malformed server-final-message";
	if (b64_decode(d64, dlen, d, sizeof(d) - 1, &len) != 0)
		return -1;
	d[len] = '\0';
	if (len >= 2 && d[0] == 'e' && d[1] == '=') {
		*why = "server-final-message carries an error";
		return -1;
	}
	if (len < 2 || d[0] != 'v' || d[1] != '=')
		return -1;
	char *end = strchr((char *)d, ',');
	size_t vl = end != NULL ? (size_t)(end - (char *)d) - 2 : len - 2;
	if (b64_decode((char *)d + 2, vl, v, sizeof(v), &vlen) != 0 ||
	    vlen != c->scram->hlen ||
	    CRYPTO_memcmp(v, c->scram->ssig, vlen) != 0) {
		*why = "server signature mismatch";
		return -1;
	}
	c->flags |= CF_SIG_OK;
	return 0;
}

/* ---- connections -------------------------------------------------------- */

static void
conn_link(struct bench *b, struct conn *c)
{
	c->prev = NULL;
	c->next = b->live;
	if (b->live != NULL)
		b->live->prev = c;
	b->live = c;
	b->open++;
}

/* Ends a connection without counting a failure.  It is freed by the
 * reaper on the next loop turn: we may be inside its own callback. */
static void
conn_kill(struct conn *c)
{
	struct bench *b = c->b;

	if (c->state == CS_DEAD)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		b->live = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	/* c->next is left as it was so that a walk of b->live that is at c
	 * can go on (nothing is freed before the walk ends). */
	c->prev = NULL;
	c->state = CS_DEAD;
	if (c->bev != NULL) {
		bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	}
	if (c->slot >= 0 && c->slot < b->nconns && b->conns[c->slot] == c)
		b->conns[c->slot] = NULL;
	free(c->scram);
	c->scram = NULL;
	b->open--;
	/* The dead list reuses prev, which the live list no longer needs. */
	c->prev = b->dead;
	b->dead = c;
	event_active(b->reaper, EV_TIMEOUT, 0);
}

static void
conn_free(struct conn *c)
{
	if (c->bev != NULL)
		bufferevent_free(c->bev); /* closes the fd, frees the SSL */
	else if (c->fd >= 0)
		close(c->fd);
	free(c->scram);
	free(c);
}

static void
reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;

	while (b->dead != NULL) {
		struct conn *c = b->dead;
		b->dead = c->prev;
		conn_free(c);
	}
	if (b->phase == PH_CLOSE && b->open == 0)
		event_base_loopexit(b->base, NULL);
}

static void
conn_fail(struct conn *c, enum fail_kind kind, const char *fmt, ...)
{
	struct bench *b = c->b;
	/* pepset: a session still publishing is in flight. */
	int publishing = b->o.sc == SC_PEPSET && c->state == CS_READY;
	int was_ready = c->state == CS_READY && !publishing;
	int negotiating = c->state < CS_READY || publishing;
	char user[MAX_NAME];
	va_list ap;

	if (c->state == CS_DEAD || c->state == CS_CLOSING) {
		conn_kill(c);
		return;
	}
	if (was_ready)
		kind = F_DROPPED;
	if (b->details < DETAIL_LIMIT || b->o.verbose) {
		user_name(b, c->idx, user, sizeof(user));
		fprintf(stderr, "pigeon-load: %s@%s (%s): %s: ", user,
		        b->o.domain, state_names[c->state], fail_names[kind]);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fprintf(stderr, "\n");
		if (++b->details == DETAIL_LIMIT && !b->o.verbose)
			fprintf(stderr, "pigeon-load: (further failures are "
			                "only counted; -v shows them)\n");
	}
	b->fails[kind]++;
	conn_kill(c);
	if (negotiating) {
		b->inflight--;
		b->failed++;
	} else if (was_ready) {
		b->dropped++;
	}
	progress(b);
}

static int
conn_write(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
	if (r < 0) {
		conn_fail(c, F_LOCAL, "cannot queue output");
		return -1;
	}
	return 0;
}

static void
conn_step(struct conn *c, enum cstate next)
{
	c->state = (uint8_t)next;
	c->deadline = pgn_lat_now_ns() + (uint64_t)(c->b->o.timeout * 1e9);
}

static int
conn_open_stream(struct conn *c, enum cstate next)
{
	c->depth = 0;
	conn_step(c, next);
	return conn_write(c,
	                  "<?xml version='1.0'?><stream:stream to='%s' "
	                  "version='1.0' xml:lang='en' xmlns='jabber:client' "
	                  "xmlns:stream='" NS_STREAMS "'>",
	                  c->b->o.domain);
}

/* Sends our stream close and waits (a while) for the server's. */
static void
conn_close_stream(struct conn *c)
{
	if (conn_write(c, "</stream:stream>") != 0)
		return;
	c->state = CS_CLOSING;
	c->deadline = pgn_lat_now_ns() + 3 * NS_PER_S;
}

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* Replaces the plain bufferevent with an OpenSSL one on the same fd
 * (after <proceed/>, or at once for direct TLS). */
static int
conn_start_tls(struct conn *c)
{
	struct bench *b = c->b;
	struct bufferevent *bev;
	SSL *ssl = SSL_new(b->ssl_ctx);

	if (ssl == NULL)
		goto fail;
	if (SSL_set_tlsext_host_name(ssl, b->o.domain) != 1)
		goto fail;
	if (b->o.cafile != NULL && SSL_set1_host(ssl, b->o.domain) != 1)
		goto fail;
	bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bev = bufferevent_openssl_socket_new(b->base, c->fd, ssl,
	                                     BUFFEREVENT_SSL_CONNECTING,
	                                     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		goto fail;
	/* From here the OpenSSL bufferevent owns ssl; the plain one must
	 * not close the fd it hands over. */
	ssl = NULL;
	bufferevent_setfd(c->bev, -1);
	bufferevent_free(c->bev);
	c->bev = bev;
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0)
		goto fail;
	conn_step(c, CS_TLS);
	return 0;
fail:
	SSL_free(ssl);
	return -1;
}

/* Opens connection number idx (account) in slot; returns 0, or the
 * failure kind (>0) when it could not even start. */
static int
conn_new(struct bench *b, long idx, long slot, long nth)
{
	struct sockaddr_in src;
	struct conn *c = NULL;
	int fd = -1, one = 1, kind = F_LOCAL, err;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
		goto fail;
	if (b->o.src_ips > 1) {
		/* Spread the source addresses over 127.0.0.1..N: each
		 * gives its own 64k ports.  NO_PORT defers the port choice
		 * to connect(), so ports are shared between destinations. */
		if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
		               sizeof(one)) != 0)
			goto fail;
		memset(&src, 0, sizeof(src));
		src.sin_family = AF_INET;
		src.sin_addr.s_addr =
		        htonl(0x7f000001u + (uint32_t)(nth % b->o.src_ips));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0)
			goto fail;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto fail;
	c->b = b;
	c->fd = fd;
	c->idx = (int32_t)idx;
	c->slot = (int32_t)slot;
	c->mech = (uint8_t)b->o.mech;
	c->t_start = pgn_lat_now_ns();
	c->bev = bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		goto fail;
	fd = -1; /* the bufferevent closes it */
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
	                  c);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0)
		goto fail;
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&b->dst,
	                               sizeof(b->dst)) != 0) {
		/* Refused at once (loopback can be that quick). */
		kind = errno == ECONNREFUSED ? F_REFUSED : F_CONNECT;
		goto fail;
	}
	conn_step(c, CS_CONNECT);
	if (slot >= 0)
		b->conns[slot] = c;
	conn_link(b, c);
	return 0;
fail:
	err = errno;
	if (b->details < DETAIL_LIMIT || b->o.verbose) {
		fprintf(stderr, "pigeon-load: cannot open a connection: %s\n",
		        strerror(err));
		b->details++;
	}
	if (c != NULL) {
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		free(c);
	}
	if (fd >= 0)
		close(fd);
	return kind;
}

/* ---- negotiation -------------------------------------------------------- */

static enum mech
pick_mech(struct conn *c, const char *p, size_t n)
{
	int have[4] = {0};
	size_t from = 1, at, tl;
	const char *t;

	while (el_find(p, n, from, "mechanism", &at, &t, &tl) == 0) {
		if (name_eq(t, tl, "SCRAM-SHA-256"))
			have[M_SCRAM256] = 1;
		else if (name_eq(t, tl, "SCRAM-SHA-1"))
			have[M_SCRAM1] = 1;
		else if (name_eq(t, tl, "PLAIN"))
			have[M_PLAIN] = 1;
		from = at + 1;
	}
	if (c->b->o.mech != M_AUTO)
		return have[c->b->o.mech] ? c->b->o.mech : M_AUTO;
	if (have[M_SCRAM256])
		return M_SCRAM256;
	if (have[M_SCRAM1])
		return M_SCRAM1;
	return M_AUTO;
}

static void
start_auth(struct conn *c)
{
	char buf[1024], user[MAX_NAME], raw[2 * MAX_NAME + 512];
	const char *pw = c->b->o.password;
	size_t ul, pl;

	if (c->b->mech_used == M_AUTO)
		c->b->mech_used = (enum mech)c->mech;
	if (c->mech == M_PLAIN) {
		user_name(c->b, c->idx, user, sizeof(user));
		ul = strlen(user);
		pl = strlen(pw);
		if (ul + pl + 2 > sizeof(raw)) {
			conn_fail(c, F_LOCAL, "password too long");
			return;
		}
		raw[0] = '\0';
		memcpy(raw + 1, user, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, pw, pl);
		if (b64_encode((unsigned char *)raw, ul + pl + 2, buf,
		               sizeof(buf)) != 0) {
			conn_fail(c, F_LOCAL, "credentials too long");
			return;
		}
		if (conn_write(c,
		               "<auth xmlns='" NS_SASL
		               "' mechanism='PLAIN'>%s</auth>",
		               buf) == 0)
			conn_step(c, CS_SUCCESS);
		return;
	}
	c->scram = calloc(1, sizeof(*c->scram));
	if (c->scram == NULL || scram_first(c, buf, sizeof(buf)) != 0) {
		conn_fail(c, F_LOCAL, "cannot start SCRAM");
		return;
	}
	if (conn_write(c, "<auth xmlns='" NS_SASL "' mechanism='%s'>%s</auth>",
	               mech_names[c->mech], buf) == 0)
		conn_step(c, CS_CHALLENGE);
}

static void
send_register(struct conn *c)
{
	char user[MAX_NAME], eu[MAX_NAME * 6], ep[1024];

	user_name(c->b, c->idx, user, sizeof(user));
	xml_escape(user, eu, sizeof(eu));
	xml_escape(c->b->o.password, ep, sizeof(ep));
	if (conn_write(c,
	               "<iq type='set' id='reg'><query xmlns='" NS_REGISTER
	               "'><username>%s</username><password>%s</password>"
	               "</query></iq>",
	               eu, ep) == 0)
		conn_step(c, CS_REGISTER);
}

static void
on_ready(struct conn *c)
{
	struct bench *b = c->b;
	uint64_t now = pgn_lat_now_ns();

	c->state = CS_READY;
	c->deadline = 0;
	b->inflight--;
	if (b->o.sc == SC_LOGIN) {
		if (b->phase == PH_LOGINS) {
			pgn_lat_hist_add(&b->login, now - c->t_start);
			b->done++;
			b->t_last = now;
		} else {
			b->done++;
		}
		conn_close_stream(c);
	} else if (b->o.sc == SC_PEPSET) {
		pepset_start(c);
	} else {
		b->ready++;
		if (b->o.sc == SC_OFFLINE)
			bufferevent_setwatermark(c->bev, EV_WRITE,
			                         FILL_OUTPUT / 2, 0);
	}
	progress(b);
}

static void
after_bind(struct conn *c)
{
	struct bench *b = c->b;

	if (b->o.sm) {
		if (c->flags & CF_SM_OFFER) {
			if (conn_write(c, "<enable xmlns='" NS_SM "'/>") == 0)
				conn_step(c, CS_SM);
			return;
		}
		b->sm_unavailable++;
	}
	if (b->o.presence && pep_presence(c) != 0)
		return;
	on_ready(c);
}

static void
features_auth(struct conn *c, const char *p, size_t n)
{
	char res[MAX_NAME * 6];
	const char *t;
	size_t at, tl;

	if (!el_has(p, n, "bind")) {
		conn_fail(c, F_BIND, "no <bind/> offered after SASL");
		return;
	}
	if (el_find(p, n, 1, "session", &at, &t, &tl) == 0 &&
	    el_find(p, n, at + 1, "optional", &at, &t, &tl) != 0)
		c->flags |= CF_SESSION;
	/* Servers offer urn:xmpp:sm:2 beside :3; we speak :3. */
	for (size_t from = 1; el_find(p, n, from, "sm", &at, &t, &tl) == 0;
	     from = at + 1)
		if (attr_eq(p + at, n - at, "xmlns", NS_SM))
			c->flags |= CF_SM_OFFER;
	xml_escape(c->b->o.resource, res, sizeof(res));
	if (conn_write(c,
	               "<iq type='set' id='bind'><bind xmlns='" NS_BIND
	               "'><resource>%s</resource></bind></iq>",
	               res) == 0)
		conn_step(c, CS_BIND);
}

static void
on_bind(struct conn *c, const char *p, size_t n)
{
	const char *t, *slash;
	size_t at, tl;

	if (!attr_eq(p, n, "type", "result")) {
		char cond[40];
		if (el_find(p, n, 1, "error", &at, &t, &tl) == 0)
			el_condition(p, n, at, cond, sizeof(cond));
		else
			snprintf(cond, sizeof(cond), "unknown");
		conn_fail(c, F_BIND, "bind refused: %s", cond);
		return;
	}
	/* Chat addresses full JIDs with the resource we asked for. */
	if (c->b->o.sc == SC_CHAT &&
	    el_find(p, n, 1, "jid", &at, &t, &tl) == 0) {
		slash = memchr(t, '/', tl);
		if (slash == NULL ||
		    !name_eq(slash + 1, tl - (size_t)(slash + 1 - t),
		             c->b->o.resource)) {
			conn_fail(c, F_BIND,
			          "the server changed the resource "
			          "(chat needs the one asked)");
			return;
		}
	}
	if (c->flags & CF_SESSION) {
		if (conn_write(c, "<iq type='set' id='sess'><session "
		                  "xmlns='" NS_SESSION "'/></iq>") == 0)
			conn_step(c, CS_SESSION);
		return;
	}
	after_bind(c);
}

static void
on_register(struct conn *c, const char *p, size_t n)
{
	struct bench *b = c->b;
	const char *t;
	size_t at, tl;
	char cond[40];

	if (attr_eq(p, n, "type", "result")) {
		b->registered++;
	} else if (el_find(p, n, 1, "error", &at, &t, &tl) == 0) {
		el_condition(p, n, at, cond, sizeof(cond));
		if (strcmp(cond, "conflict") != 0) {
			/* Say when the server never offered it: the usual
			 * cause is a configuration that does not allow it. */
			conn_fail(c, F_REGISTER, "registration refused: %s%s",
			          cond,
			          (c->flags & CF_REG_OFFER)
			                  ? ""
			                  : " (in-band registration not "
			                    "offered)");
			return;
		}
		b->existed++;
	} else {
		conn_fail(c, F_REGISTER, "unexpected answer to registration");
		return;
	}
	if (b->o.sc == SC_REGISTER) {
		c->state = CS_READY;
		b->inflight--;
		b->done++;
		b->t_last = pgn_lat_now_ns();
		conn_close_stream(c);
		progress(b);
		return;
	}
	start_auth(c);
}

/* ---- the scenarios' stanzas --------------------------------------------- */

static void
count_error(struct bench *b, const char *p, size_t n)
{
	char cond[40];
	const char *t;
	size_t at, tl;
	int i;

	b->msg_errors++;
	if (el_find(p, n, 1, "error", &at, &t, &tl) == 0)
		el_condition(p, n, at, cond, sizeof(cond));
	else
		snprintf(cond, sizeof(cond), "unknown");
	for (i = 0; i < b->nerrs; i++)
		if (strcmp(b->errs[i].name, cond) == 0)
			break;
	if (i == b->nerrs) {
		if (b->nerrs == MAX_ERRCOND)
			i = MAX_ERRCOND -
			    1; /* the last one collects the rest */
		else
			snprintf(b->errs[b->nerrs++].name,
			         sizeof(b->errs[0].name), "%s", cond);
	}
	b->errs[i].count++;
}

static void
on_chat_message(struct conn *c, const char *t, size_t tl)
{
	struct bench *b = c->b;
	uint64_t now = pgn_lat_now_ns(), ts;
	char num[24];
	size_t i = 3, k = 0;

	/* body: "pl TIMESTAMP SEQ ..." */
	while (i < tl && k + 1 < sizeof(num) && t[i] >= '0' && t[i] <= '9')
		num[k++] = t[i++];
	num[k] = '\0';
	if (k == 0) {
		b->other_msgs++;
		return;
	}
	ts = strtoull(num, NULL, 10);
	b->delivered++;
	if (ts >= b->t_measure && ts < b->t_stop) {
		b->delivered_meas++;
		pgn_lat_hist_add(&b->lat, now >= ts ? now - ts : 0);
	}
	if (b->phase == PH_RUN && b->o.msg_rate <= 0) {
		/* Flat out: each delivery lets the sender send one more. */
		struct conn *peer = c->slot >= 0 ? b->conns[c->slot ^ 1] : NULL;
		if (peer != NULL && peer->state == CS_READY)
			chat_send(peer);
	}
	if (b->phase == PH_DRAIN && b->delivered >= b->sent)
		finish(b);
}

static void
ready_element(struct conn *c, const char *name, size_t nl, const char *p,
              size_t n)
{
	struct bench *b = c->b;
	const char *v, *t;
	size_t vl, at, tl;

	if (name_eq(name, nl, "message")) {
		if (attr_eq(p, n, "type", "error")) {
			count_error(b, p, n);
			return;
		}
		if (b->o.sc == SC_PEP && el_has(p, n, "event")) {
			pep_on_event(c, p, n);
			return;
		}
		if (el_find(p, n, 1, "body", &at, &t, &tl) == 0 && tl > 3 &&
		    memcmp(t, "pl ", 3) == 0)
			on_chat_message(c, t, tl);
		else
			b->other_msgs++;
	} else if (name_eq(name, nl, "iq")) {
		const char *id = "", *from = "";
		size_t idl = 0, froml = 0;

		if (el_attr(p, n, "type", &v, &vl) != 0)
			return;
		(void)el_attr(p, n, "id", &id, &idl);
		if (name_eq(v, vl, "get") || name_eq(v, vl, "set")) {
			/* A server ping (XEP-0199) or anything else: answer
			 * so that the server does not drop us.  The values
			 * are copied as the server escaped them. */
			(void)el_attr(p, n, "from", &from, &froml);
			if (b->o.sc == SC_PEP && name_eq(v, vl, "get") &&
			    el_has(p, n, "query"))
				pep_answer_disco(c, p, n);
			else if (el_has(p, n, "ping"))
				(void)conn_write(
				        c,
				        "<iq type='result' id=\"%.*s\" "
				        "to=\"%.*s\"/>",
				        (int)idl, id, (int)froml, from);
			else
				(void)conn_write(
				        c,
				        "<iq type='error' id=\"%.*s\" "
				        "to=\"%.*s\"><error type='cancel'>"
				        "<service-unavailable xmlns='"
				        "urn:ietf:params:xml:ns:xmpp-stanzas'/>"
				        "</error></iq>",
				        (int)idl, id, (int)froml, from);
		} else if (name_eq(id, idl, "fin") && b->phase == PH_FIN) {
			if (++b->fin_done >= b->fin_expected)
				offline_fin(b);
		} else if (b->o.sc == SC_PEP || b->o.sc == SC_PEPSET) {
			pep_on_answer(c, id, idl, p, n);
		}
	} else if (name_eq(name, nl, "r")) {
		(void)conn_write(c, "<a xmlns='" NS_SM "' h='%" PRIu32 "'/>",
		                 c->sm_in);
	} else if (name_eq(name, nl, "a")) {
		b->sm_acks++;
	}
}

/* One complete unit of the stream (see scan_unit). */
static int
conn_unit(struct conn *c, int kind, const char *p, size_t n)
{
	struct bench *b = c->b;
	const char *name, *t, *why = "no challenge data";
	size_t nl, at, tl;
	char cond[40], buf[2048];

	if (kind == U_TEXT)
		return 0;
	if (kind == U_HEADER) {
		c->depth = 1;
		return 0;
	}
	if (kind == U_CLOSE) {
		if (c->state == CS_CLOSING)
			conn_kill(c);
		else
			conn_fail(c, F_CLOSED, "the server closed the stream");
		return -1;
	}
	nl = tag_name(p, n, &name);
	if (name_eq(name, nl, "error")) {
		/* Only <stream:error/> is a top-level <error/>. */
		el_condition(p, n, 0, cond, sizeof(cond));
		conn_fail(c, F_STREAM_ERROR, "stream error %s", cond);
		return -1;
	}
	if ((c->flags & CF_SM) &&
	    (name_eq(name, nl, "message") || name_eq(name, nl, "presence") ||
	     name_eq(name, nl, "iq")))
		c->sm_in++;
	switch (c->state) {
	case CS_FEAT_PLAIN:
		if (!name_eq(name, nl, "features"))
			break;
		if (!el_has(p, n, "starttls")) {
			conn_fail(c, F_TLS, "the server offers no STARTTLS");
			return -1;
		}
		if (conn_write(c, "<starttls xmlns='" NS_TLS "'/>") != 0)
			return -1;
		conn_step(c, CS_PROCEED);
		return 0;
	case CS_PROCEED:
		if (!name_eq(name, nl, "proceed")) {
			conn_fail(c, F_TLS, "STARTTLS refused");
			return -1;
		}
		c->flags |= CF_WANT_TLS;
		return 0;
	case CS_FEAT_TLS:
		if (!name_eq(name, nl, "features"))
			break;
		c->mech = (uint8_t)pick_mech(c, p, n);
		if (c->mech == M_AUTO) {
			conn_fail(c, F_AUTH,
			          "no usable SASL mechanism offered "
			          "(asked: %s)",
			          mech_names[b->o.mech]);
			return -1;
		}
		if (el_has(p, n, "register"))
			c->flags |= CF_REG_OFFER;
		if (b->o.do_register)
			send_register(c);
		else
			start_auth(c);
		return 0;
	case CS_REGISTER:
		if (!name_eq(name, nl, "iq"))
			break;
		on_register(c, p, n);
		return 0;
	case CS_CHALLENGE:
		if (name_eq(name, nl, "challenge")) {
			if (el_find(p, n, 0, "challenge", &at, &t, &tl) != 0 ||
			    scram_final(c, t, tl, buf, sizeof(buf), &why) !=
			            0) {
				conn_fail(c, F_AUTH, "SCRAM: %s", why);
				return -1;
			}
			if (conn_write(c,
			               "<response xmlns='" NS_SASL
			               "'>%s</response>",
			               buf) != 0)
				return -1;
			conn_step(c, CS_SUCCESS);
			return 0;
		}
		if (name_eq(name, nl, "failure")) {
			el_condition(p, n, 0, cond, sizeof(cond));
			conn_fail(c, F_AUTH, "SASL failure %s", cond);
			return -1;
		}
		break;
	case CS_SUCCESS:
		if (name_eq(name, nl, "failure")) {
			el_condition(p, n, 0, cond, sizeof(cond));
			conn_fail(c, F_AUTH, "SASL failure %s", cond);
			return -1;
		}
		if (c->mech != M_PLAIN && (name_eq(name, nl, "challenge") ||
		                           name_eq(name, nl, "success"))) {
			/* The signature may come in a last challenge or in
			 * <success/>; one of them must carry it. */
			(void)el_find(p, n, 0,
			              name_eq(name, nl, "success")
			                      ? "success"
			                      : "challenge",
			              &at, &t, &tl);
			if (tl > 0 && !(c->flags & CF_SIG_OK) &&
			    scram_verify(c, t, tl, &why) != 0) {
				conn_fail(c, F_AUTH, "SCRAM: %s", why);
				return -1;
			}
			if (name_eq(name, nl, "challenge"))
				return conn_write(c, "<response xmlns='" NS_SASL
				                     "'/>");
			if (!(c->flags & CF_SIG_OK)) {
				conn_fail(c, F_AUTH,
				          "SCRAM: no server "
				          "signature");
				return -1;
			}
		} else if (!name_eq(name, nl, "success")) {
			break;
		}
		free(c->scram);
		c->scram = NULL;
		return conn_open_stream(c, CS_FEAT_AUTH);
	case CS_FEAT_AUTH:
		if (!name_eq(name, nl, "features"))
			break;
		features_auth(c, p, n);
		return 0;
	case CS_BIND:
		if (!name_eq(name, nl, "iq") || !attr_eq(p, n, "id", "bind"))
			return 0; /* e.g. a pushed presence: not ours */
		on_bind(c, p, n);
		return 0;
	case CS_SESSION:
		if (!name_eq(name, nl, "iq") || !attr_eq(p, n, "id", "sess"))
			return 0;
		if (!attr_eq(p, n, "type", "result")) {
			conn_fail(c, F_BIND, "session refused");
			return -1;
		}
		after_bind(c);
		return 0;
	case CS_SM:
		if (name_eq(name, nl, "enabled")) {
			c->flags |= CF_SM;
			b->sm_enabled++;
		} else if (name_eq(name, nl, "failed")) {
			b->sm_unavailable++;
		} else {
			return 0;
		}
		if (b->o.presence && pep_presence(c) != 0)
			return -1;
		on_ready(c);
		return 0;
	case CS_READY:
		ready_element(c, name, nl, p, n);
		return 0;
	default:
		return 0;
	}
	snprintf(buf, sizeof(buf), "%.*s", n > 200 ? 200 : (int)n, p);
	conn_fail(c, F_PROTOCOL, "unexpected %s", buf);
	return -1;
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		size_t n = evbuffer_get_length(in), used = 0;
		const char *p;
		int kind = U_TEXT, rc;

		if (n == 0)
			return;
		p = (const char *)evbuffer_pullup(in, -1);
		if (p == NULL) {
			conn_fail(c, F_LOCAL, "out of memory");
			return;
		}
		if (scan_unit(p, n, c->depth, &used, &kind) == 0) {
			if (n > MAX_ELEMENT)
				conn_fail(c, F_PROTOCOL,
				          "element over %d bytes", MAX_ELEMENT);
			return;
		}
		rc = conn_unit(c, kind, p, used);
		if (evbuffer_drain(in, used) != 0) {
			conn_fail(c, F_LOCAL, "cannot drain input");
			return;
		}
		if (rc != 0 || c->state == CS_DEAD)
			return;
		if (c->flags & CF_WANT_TLS) {
			/* Nothing may follow <proceed/> in the plain
			 * stream: the new bufferevent starts empty. */
			c->flags &= (uint8_t)~CF_WANT_TLS;
			if (conn_start_tls(c) != 0)
				conn_fail(c, F_TLS, "cannot start TLS");
			return;
		}
	}
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->state == CS_READY && c->b->o.sc == SC_OFFLINE &&
	    c->b->phase == PH_RUN && c->b->o.msg_rate <= 0)
		offline_fill(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	int err = EVUTIL_SOCKET_ERROR();
	unsigned long ssl_err;
	char buf[256];

	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == CS_CONNECT) {
			if (c->b->o.direct_tls) {
				if (conn_start_tls(c) != 0)
					conn_fail(c, F_TLS, "cannot start TLS");
				return;
			}
			(void)conn_open_stream(c, CS_FEAT_PLAIN);
		} else if (c->state == CS_TLS) {
			(void)conn_open_stream(c, CS_FEAT_TLS);
		}
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	switch (c->state) {
	case CS_CLOSING:
		conn_kill(c);
		break;
	case CS_CONNECT:
		conn_fail(c, err == ECONNREFUSED ? F_REFUSED : F_CONNECT, "%s",
		          strerror(err));
		break;
	case CS_TLS:
		ssl_err = bufferevent_get_openssl_error(bev);
		if (ssl_err != 0)
			ERR_error_string_n(ssl_err, buf, sizeof(buf));
		else
			snprintf(buf, sizeof(buf), "%s",
			         (what & BEV_EVENT_EOF) ? "connection closed"
			                                : strerror(err));
		conn_fail(c, F_TLS, "TLS handshake failed: %s", buf);
		break;
	default:
		conn_fail(c, F_CLOSED, "connection %s",
		          (what & BEV_EVENT_EOF) ? "closed by the server"
		                                 : strerror(err));
	}
}

/* ---- scenarios ---------------------------------------------------------- */

static long
pick_account(const struct bench *b)
{
	if (b->o.sc == SC_LOGIN)
		return b->o.first + b->launched % b->o.users;
	return b->o.first + b->launched;
}

static void
launch_more(struct bench *b)
{
	uint64_t now = pgn_lat_now_ns();
	static const long unlimited = LONG_MAX;
	long allowed = unlimited;

	if (b->launching)
		return;
	if (b->o.rate > 0)
		allowed = 1 +
		          (long)(b->o.rate * (double)(now - b->t_launch) / 1e9);
	b->launching = 1;
	while (b->launched < b->target && !b->stop_launch &&
	       b->inflight < b->o.concurrency && b->launched < allowed) {
		int slot = b->o.sc == SC_LOGIN || b->o.sc == SC_REGISTER ||
		                           b->o.sc == SC_PEPSET
		                   ? -1
		                   : (int)b->launched;
		long idx = pick_account(b);
		int kind = conn_new(b, idx, slot, b->launched);

		b->launched++;
		if (kind != 0) {
			b->fails[kind]++;
			b->failed++;
			continue;
		}
		b->inflight++;
	}
	b->launching = 0;
}

/* CPU used since cpu_mark by the server and by this tool, in all and per
 * unit (login, message, session; the keys name it): next to a rate, it
 * says which side was the limit and what one unit costs. */
static void
cpu_report(struct bench *b, double units, const char *srv_key,
           const char *self_key)
{
	double srv = server_cpu(b), self = self_cpu();

	if (b->cpu_srv0 >= 0 && srv >= 0) {
		result_add(b, "server_cpu_s", NULL, srv - b->cpu_srv0, 2);
		if (units > 0)
			result_add(b, srv_key, NULL,
			           (srv - b->cpu_srv0) * 1e6 / units, 1);
	}
	if (b->cpu_self0 >= 0 && self >= 0) {
		result_add(b, "client_cpu_s", NULL, self - b->cpu_self0, 2);
		if (units > 0)
			result_add(b, self_key, NULL,
			           (self - b->cpu_self0) * 1e6 / units, 1);
	}
}

/* ---- Pigeon's delivery latency (--server-ctl) ------------------------- */

/* Connects to pigeond's control socket and sends one command without
 * arguments (netstrings, include/pigeon/ctl.h).  The fd, or -1. */
static int
ctl_send(const char *path, const char *cmd)
{
	struct sockaddr_un sun;
	char req[64];
	int fd, n;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	n = snprintf(req, sizeof(req), "1:1,%zu:%s,", strlen(cmd), cmd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
	    write(fd, req, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads the answer to latency_reset and closes; the loop never waits. */
static void
ctl_reset_cb(evutil_socket_t fd, short what, void *arg)
{
	struct event *ev = arg;
	char buf[256];
	ssize_t r = read(fd, buf, sizeof(buf));

	if (r > 0) {
		if (buf[0] != '0')
			fprintf(stderr,
			        "pigeon-load: latency_reset failed: %.*s\n",
			        (int)r, buf);
		return;
	}
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	event_free(ev);
	close(fd);
}

/* Clears the server's histograms when the measured phase begins, as this
 * tool starts counting. */
static void
ctl_reset(struct bench *b)
{
	struct event *ev;
	int fd = ctl_send(b->o.server_ctl, "latency_reset");

	b->ctl_reset_sent = 1;
	if (fd < 0 || evutil_make_socket_nonblocking(fd) != 0 ||
	    (ev = event_new(b->base, fd, EV_READ | EV_PERSIST, ctl_reset_cb,
	                    event_self_cbarg())) == NULL ||
	    event_add(ev, NULL) != 0) {
		fprintf(stderr, "pigeon-load: %s: latency_reset: %s\n",
		        b->o.server_ctl, strerror(errno));
		if (fd >= 0)
			close(fd);
		b->ctl_reset_sent = -1;
	}
}

/* The server's figures next to ours: "queued" is its read of a stanza to
 * the stanza in the recipient's output buffer, "flushed" to its bytes
 * written to the recipient's socket (what our latency adds the two
 * networks hops and both ends' TLS to). */
static void
server_latency(struct bench *b)
{
	static const struct {
		const char *name, *key, *label;
		int decimals;
	} figs[] = {
		{"queued_count", "srv_queued_count", NULL, 0},
		{"queued_p50_us", "srv_queued_p50_us", NULL, 1},
		{"queued_p99_us", "srv_queued_p99_us", NULL, 1},
		{"queued_p999_us", "srv_queued_p999_us", NULL, 1},
		{"queued_max_us", "srv_queued_max_us", NULL, 1},
		{"flushed_count", "srv_flushed_count", NULL, 0},
		{"flushed_p50_us", "srv_flushed_p50_us", "srv p50 us", 1},
		{"flushed_p99_us", "srv_flushed_p99_us", "srv p99 us", 1},
		{"flushed_p999_us", "srv_flushed_p999_us", "srv p99.9 us", 1},
		{"flushed_max_us", "srv_flushed_max_us", NULL, 1},
	};
	char buf[2048], *line, *save = NULL;
	size_t len = 0;
	ssize_t r = 0;
	struct timeval tv = {5, 0};
	int fd;

	if (b->ctl_reset_sent < 0)
		return;
	fd = ctl_send(b->o.server_ctl, "latency");
	if (fd < 0) {
		fprintf(stderr, "pigeon-load: %s: %s\n", b->o.server_ctl,
		        strerror(errno));
		return;
	}
	/* After the run: blocking here costs the measurement nothing. */
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (len + 1 < sizeof(buf) &&
	       (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = '\0';
	if (r < 0 || strncmp(buf, "0\n", 2) != 0) {
		fprintf(stderr, "pigeon-load: `latency` failed: %s\n", buf);
		return;
	}
	for (line = strtok_r(buf + 2, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' ');

		if (sp == NULL)
			continue;
		*sp = '\0';
		for (size_t i = 0; i < sizeof(figs) / sizeof(figs[0]); i++)
			if (strcmp(line, figs[i].name) == 0)
				result_add(b, figs[i].key, figs[i].label,
				           strtod(sp + 1, NULL),
				           figs[i].decimals);
	}
}

static void
report_common(struct bench *b)
{
	result_add(b, "failed", "failed", (double)b->failed, 0);
	if (b->dropped > 0 || b->o.sc == SC_IDLE || b->o.sc == SC_CHAT)
		result_add(b, "dropped", NULL, (double)b->dropped, 0);
	if (b->o.sm) {
		result_add(b, "sm_enabled", NULL, (double)b->sm_enabled, 0);
		result_add(b, "sm_unavailable", NULL, (double)b->sm_unavailable,
		           0);
		result_add(b, "sm_acks", NULL, (double)b->sm_acks, 0);
	}
	result_add(b, "keys_derived", NULL, (double)b->keys.derived, 0);
}

static void
report(struct bench *b)
{
	print_table(b);
	(void)write_json(b);
}

static void
idle_measure(struct bench *b)
{
	long n = b->ready;

	b->rss_after = server_rss(b);
	/* What the handshakes left in free lists is not per-session cost. */
	(void)malloc_trim(0);
	b->self_after = rss_kib("self");
	result_add(b, "sessions", "sessions", (double)b->target, 0);
	result_add(b, "logged_in", "logged in", (double)b->ready, 0);
	report_common(b);
	result_add(b, "setup_s", "setup s",
	           (double)(b->t_up - b->t_launch) / 1e9, 2);
	result_add(b, "setup_per_s", "logins/s",
	           b->t_up > b->t_launch
	                   ? (double)b->target * 1e9 /
	                             (double)(b->t_up - b->t_launch)
	                   : 0,
	           0);
	if (b->o.server_pid > 0 && b->rss_before >= 0 && b->rss_after >= 0) {
		result_add(b, "rss_before_kib", "RSS before KiB",
		           (double)b->rss_before, 0);
		result_add(b, "rss_after_kib", "RSS after KiB",
		           (double)b->rss_after, 0);
		result_add(b, "rss_per_session_kib", "KiB/session",
		           n > 0 ? (double)(b->rss_after - b->rss_before) /
		                           (double)n
		                 : 0,
		           2);
	}
	if (b->self_before >= 0 && b->self_after >= 0)
		result_add(b, "client_kib_per_session", NULL,
		           n > 0 ? (double)(b->self_after - b->self_before) /
		                           (double)n
		                 : 0,
		           2);
	result_add(b, "hold_s", NULL, b->o.hold, 1);
	cpu_report(b, (double)b->ready, "server_cpu_us_per_session",
	           "client_cpu_us_per_session");
	if (b->dropped > 0)
		b->exit_code = 1;
}

static void
chat_report(struct bench *b)
{
	/* The time actually measured (shorter when interrupted). */
	uint64_t end = b->t_stop != UINT64_MAX ? b->t_stop : pgn_lat_now_ns();
	double secs =
	        end > b->t_measure ? (double)(end - b->t_measure) / 1e9 : 0;

	result_add(b, "pairs", "pairs", (double)b->o.pairs, 0);
	result_add(b, "msg_rate", "rate asked", b->o.msg_rate, 0);
	result_add(b, "duration_s", NULL, secs, 2);
	result_add(b, "sent", "sent", (double)b->sent, 0);
	result_add(b, "delivered", "delivered", (double)b->delivered, 0);
	result_add(b, "lost", "lost", (double)(b->sent - b->delivered), 0);
	result_add(b, "skipped", NULL, (double)b->skipped, 0);
	result_add(b, "sent_per_s", NULL,
	           secs > 0 ? (double)b->sent_meas / secs : 0, 0);
	result_add(b, "delivered_per_s", "msgs/s",
	           secs > 0 ? (double)b->delivered_meas / secs : 0, 0);
	result_add(b, "lat_p50_us", "p50 us",
	           (double)pgn_lat_hist_pct(&b->lat, 0.50) / 1e3, 0);
	result_add(b, "lat_p99_us", "p99 us",
	           (double)pgn_lat_hist_pct(&b->lat, 0.99) / 1e3, 0);
	result_add(b, "lat_p999_us", "p99.9 us",
	           (double)pgn_lat_hist_pct(&b->lat, 0.999) / 1e3, 0);
	result_add(b, "lat_max_us", "max us", (double)b->lat.max / 1e3, 0);
	result_add(b, "lat_mean_us", NULL,
	           b->lat.count
	                   ? (double)b->lat.sum / 1e3 / (double)b->lat.count
	                   : 0,
	           1);
	result_add(b, "samples", NULL, (double)b->lat.count, 0);
	if (b->o.server_ctl != NULL)
		server_latency(b);
	if (b->send_lag.count > 0) {
		result_add(b, "send_lag_p50_us", NULL,
		           (double)pgn_lat_hist_pct(&b->send_lag, 0.50) / 1e3, 0);
		result_add(b, "send_lag_p99_us", NULL,
		           (double)pgn_lat_hist_pct(&b->send_lag, 0.99) / 1e3, 0);
		result_add(b, "send_lag_max_us", NULL,
		           (double)b->send_lag.max / 1e3, 0);
	}
	result_add(b, "msg_errors", NULL, (double)b->msg_errors, 0);
	result_add(b, "other_msgs", NULL, (double)b->other_msgs, 0);
	cpu_report(b, (double)b->delivered, "server_cpu_us_per_msg",
	           "client_cpu_us_per_msg");
	report_common(b);
	if (b->sent != b->delivered && b->interrupted) {
		fprintf(stderr,
		        "pigeon-load: %" PRIu64 " of %" PRIu64
		        " messages were in flight when interrupted\n",
		        b->sent - b->delivered, b->sent);
	} else if (b->sent != b->delivered) {
		fprintf(stderr,
		        "pigeon-load: %" PRIu64 " of %" PRIu64
		        " messages were not delivered within %.1f s\n",
		        b->sent - b->delivered, b->sent, b->o.drain);
		b->exit_code = 1;
	}
	if (b->dropped > 0)
		b->exit_code = 1;
}

static void
login_report(struct bench *b)
{
	double secs =
	        b->t_last > b->t_run ? (double)(b->t_last - b->t_run) / 1e9 : 0;

	if (b->o.sc == SC_REGISTER) {
		result_add(b, "accounts", "accounts", (double)b->done, 0);
		result_add(b, "registered", "registered", (double)b->registered,
		           0);
		result_add(b, "existed", "existed", (double)b->existed, 0);
		result_add(b, "per_s", "per s",
		           secs > 0 ? (double)b->done / secs : 0, 0);
		report_common(b);
		if (b->failed > 0)
			b->exit_code = 1;
		return;
	}
	result_add(b, "logins", "logins", (double)b->done, 0);
	result_add(b, "concurrency", "concurrency", (double)b->o.concurrency,
	           0);
	result_add(b, "duration_s", "seconds", secs, 2);
	result_add(b, "logins_per_s", "logins/s",
	           secs > 0 ? (double)b->done / secs : 0, 0);
	result_add(b, "login_p50_ms", "p50 ms",
	           (double)pgn_lat_hist_pct(&b->login, 0.50) / 1e6, 2);
	result_add(b, "login_p99_ms", "p99 ms",
	           (double)pgn_lat_hist_pct(&b->login, 0.99) / 1e6, 2);
	result_add(b, "login_max_ms", "max ms", (double)b->login.max / 1e6, 2);
	cpu_report(b, (double)b->done, "server_cpu_us_per_login",
	           "client_cpu_us_per_login");
	report_common(b);
	if (b->failed > 0)
		b->exit_code = 1;
}

/* Runs --verify-cmd; returns the number it prints, or -1. */
static long
run_verify(const struct bench *b)
{
	char line[64];
	long v = -1;
	FILE *f;

	if (b->o.verify_cmd == NULL)
		return -1;
	fflush(stdout);
	f = popen(b->o.verify_cmd, "r");
	if (f == NULL)
		return -1;
	if (fgets(line, sizeof(line), f) != NULL)
		v = strtol(line, NULL, 10);
	if (pclose(f) != 0)
		v = -1;
	return v;
}

static void
offline_report(struct bench *b)
{
	double secs = (double)(b->t_fin - b->t_run) / 1e9;

	result_add(b, "senders", "senders", (double)b->o.senders, 0);
	result_add(b, "recipients", "recipients", (double)b->o.users, 0);
	result_add(b, "sent", "sent", (double)b->sent, 0);
	result_add(b, "errors", "errors", (double)b->msg_errors, 0);
	result_add(b, "accepted_s", "seconds", secs, 2);
	result_add(b, "sent_per_s", "msgs/s",
	           secs > 0 ? (double)b->sent / secs : 0, 0);
	if (b->o.verify_cmd != NULL) {
		long stored = b->verify_after - b->verify_before;
		double ss = (double)(b->t_stored - b->t_run) / 1e9;
		result_add(b, "stored", "stored", (double)stored, 0);
		result_add(b, "stored_per_s", "stored/s",
		           ss > 0 && stored > 0 ? (double)stored / ss : 0, 0);
		if (b->verify_before < 0 || b->verify_after < 0) {
			fprintf(stderr, "pigeon-load: --verify-cmd failed\n");
			b->exit_code = 1;
		}
	}
	cpu_report(b, (double)b->sent, "server_cpu_us_per_msg",
	           "client_cpu_us_per_msg");
	report_common(b);
	if (b->dropped > 0 || b->fin_done < b->fin_expected)
		b->exit_code = 1;
}

static void
offline_verify(struct bench *b)
{
	uint64_t deadline = pgn_lat_now_ns() + (uint64_t)(b->o.timeout * 1e9);

	if (b->o.verify_cmd == NULL)
		return;
	/* The store may lag behind the pings: poll until the count is
	 * reached (or the step timeout), which times the storing. */
	for (;;) {
		b->verify_after = run_verify(b);
		b->t_stored = pgn_lat_now_ns();
		if (b->verify_after < 0 || b->verify_before < 0 ||
		    b->verify_after - b->verify_before >=
		            (long)b->sent - b->msg_errors ||
		    b->t_stored > deadline)
			break;
		usleep(50000);
	}
}

/* The server has read every message (the pings came back): time the
 * storing if we can, then wait --drain for late bounces. */
static void
offline_fin(struct bench *b)
{
	b->t_fin = pgn_lat_now_ns();
	offline_verify(b);
	b->phase = PH_DRAIN;
	b->t_drain_end = pgn_lat_now_ns() + (uint64_t)(b->o.drain * 1e9);
}

static void
phase_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;

	if (b->o.sc == SC_PEP) {
		pep_timer(b);
		return;
	}
	switch (b->phase) {
	case PH_SETTLE:
		idle_measure(b);
		report(b);
		if (b->o.hold > 0) {
			struct timeval tv = tv_of(b->o.hold);
			b->phase = PH_HOLD;
			if (evtimer_add(b->timer, &tv) != 0)
				finish(b);
			return;
		}
		finish(b);
		return;
	case PH_HOLD:
		/* Sessions dropped while holding count. */
		if (b->dropped > 0) {
			fprintf(stderr,
			        "pigeon-load: %ld sessions were dropped while "
			        "idle\n",
			        b->dropped);
			b->exit_code = 1;
		}
		finish(b);
		return;
	case PH_RUN:
		if (b->o.sc == SC_CHAT) {
			b->t_stop = pgn_lat_now_ns();
			b->phase = PH_DRAIN;
			b->t_drain_end =
			        b->t_stop + (uint64_t)(b->o.drain * 1e9);
			if (b->delivered >= b->sent)
				finish(b);
		} else {
			offline_stop(b);
		}
		return;
	case PH_LOGINS:
		b->stop_launch = 1;
		progress(b);
		return;
	default:
		return;
	}
}

static int
arm_timer(struct bench *b, double seconds)
{
	struct timeval tv = tv_of(seconds);

	return evtimer_add(b->timer, &tv);
}

static void
chat_send(struct conn *c)
{
	struct bench *b = c->b;
	struct conn *peer = b->conns[c->slot ^ 1];
	char user[MAX_NAME];
	uint64_t ts, seq;
	size_t queued = evbuffer_get_length(bufferevent_get_output(c->bev));

	if (peer == NULL) {
		b->skipped++;
		return;
	}
	if (queued > MAX_OUTPUT) {
		b->skipped++;
		return;
	}
	user_name(b, peer->idx, user, sizeof(user));
	seq = b->next_seq++;
	ts = pgn_lat_now_ns();
	if (conn_write(c,
	               "<message to='%s@%s/%s' type='chat' id='c%" PRIu64
	               "'><body>pl %" PRIu64 " %" PRIu64 "%s</body></message>",
	               user, b->o.domain, b->o.resource, seq, ts, seq,
	               b->pad) != 0)
		return;
	b->sent++;
	if (ts >= b->t_measure)
		b->sent_meas++;
	/* Written at the end of this loop turn rather than after the next
	 * epoll_wait, as Pigeon does (kick_write in src/stream.c): the
	 * stamp above is then closer to the write, and the EPOLLOUT on and
	 * off costs no epoll_ctl. */
	if (queued == 0)
		event_active(&c->bev->ev_write, EV_WRITE, 1);
	if (c->flags & CF_SM) {
		c->sm_out++;
		if (b->o.sm_every > 0 && c->sm_out % b->o.sm_every == 0)
			(void)conn_write(c, "<r xmlns='" NS_SM "'/>");
	}
}

static void
chat_start(struct bench *b)
{
	b->phase = PH_RUN;
	b->t_run = pgn_lat_now_ns();
	cpu_mark(b);
	b->t_measure = b->t_run + (uint64_t)(b->o.warmup * 1e9);
	b->t_stop = UINT64_MAX;
	b->rate_t0 = b->t_run;
	if (b->o.msg_rate <= 0)
		for (long w = 0; w < b->o.window; w++)
			for (long i = 0; i < b->nconns; i++)
				if (b->conns[i] != NULL)
					chat_send(b->conns[i]);
	if (arm_timer(b, b->o.warmup + b->o.duration) != 0)
		finish(b);
}

static int
offline_can_send(const struct bench *b)
{
	return b->phase == PH_RUN && (b->o.n <= 0 || (long)b->sent < b->o.n);
}

static void
offline_send(struct conn *c)
{
	struct bench *b = c->b;
	char user[MAX_NAME];
	uint64_t seq = b->next_seq++;

	user_name(b,
	          b->o.first + b->o.senders +
	                  (long)(seq % (uint64_t)b->o.users),
	          user, sizeof(user));
	if (conn_write(c,
	               "<message to='%s@%s' type='chat' id='o%" PRIu64
	               "'><body>offline %" PRIu64 "%s</body></message>",
	               user, b->o.domain, seq, seq, b->pad) != 0)
		return;
	b->sent++;
}

static void
offline_fill(struct conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	while (c->state == CS_READY && offline_can_send(c->b) &&
	       evbuffer_get_length(out) < FILL_OUTPUT)
		offline_send(c);
	if (c->b->phase == PH_RUN && c->b->o.n > 0 &&
	    (long)c->b->sent >= c->b->o.n)
		offline_stop(c->b);
}

/* Stops sending; a ping behind each sender's messages tells when the
 * server has read (and routed) all of them. */
static void
offline_stop(struct bench *b)
{
	b->phase = PH_FIN;
	b->t_stop = pgn_lat_now_ns();
	evtimer_del(b->timer);
	b->fin_expected = 0;
	for (long i = 0; i < b->nconns; i++) {
		struct conn *c = b->conns[i];
		if (c == NULL || c->state != CS_READY)
			continue;
		if (conn_write(c,
		               "<iq type='get' id='fin' to='%s'><ping "
		               "xmlns='" NS_PING "'/></iq>",
		               b->o.domain) == 0)
			b->fin_expected++;
	}
	/* In PH_FIN, t_drain_end bounds the wait for the pings. */
	b->t_drain_end = pgn_lat_now_ns() + (uint64_t)(b->o.timeout * 1e9);
	if (b->fin_expected == 0)
		offline_fin(b);
}

static void
offline_start(struct bench *b)
{
	b->phase = PH_RUN;
	b->t_run = pgn_lat_now_ns();
	cpu_mark(b);
	b->rate_t0 = b->t_run;
	if (b->o.duration > 0 && arm_timer(b, b->o.duration) != 0) {
		finish(b);
		return;
	}
	if (b->o.msg_rate <= 0)
		for (long i = 0; i < b->nconns && b->phase == PH_RUN; i++)
			if (b->conns[i] != NULL)
				offline_fill(b->conns[i]);
}

/* ---- pep: the cost of a PEP publish fanned out to contacts ------------
 * Session 0 is the owner (account --first), sessions 1..C its contacts
 * (rosters with subscription both are provisioned beforehand: run.sh
 * does it with pigeonctl).  Each contact announces <node>+notify in its
 * XEP-0115 caps and answers the server's disco#info query.  After
 * --settle s the owner publishes a warm-up item: the contacts it reaches
 * are the interested ones.  Then it publishes -n items, --window at a
 * time, each id the CLOCK_MONOTONIC ns of its sending, and the tool
 * counts the notifications (and their latency) until each interested
 * contact had all of them, or --drain s after the last result.  Server
 * CPU over that span / items is the cost of one publish with fan-out.
 *
 * ---- pepset: what an account's usual PEP data costs the store ---------
 * -n transient sessions (accounts --first...), --concurrency at a time,
 * each logs in, publishes what an OMEMO client with an avatar and
 * bookmarks publishes (PEPSET_PUBLISHES items, sizes below), and closes.
 * With --verify-cmd (it prints the store's size in bytes, run before and
 * after) the growth per account. */

#define PUBOPT_HEAD                                                           \
	"<publish-options><x xmlns='jabber:x:data' type='submit'>"            \
	"<field var='FORM_TYPE' type='hidden'><value>" NS_PUBSUB              \
	"#publish-options</value></field>"
#define PUBOPT_FIELD(var, val)                                                \
	"<field var='pubsub#" var "'><value>" val "</value></field>"
#define PUBOPT_TAIL "</x></publish-options>"

#define PEPSET_PREKEYS 100     /* one-time prekeys in the OMEMO bundle */
#define PEPSET_AVATAR 2048     /* bytes of the avatar image */
#define PEPSET_BOOKMARKS 3     /* rooms */
#define PEPSET_PUBLISHES (4 + PEPSET_BOOKMARKS)

/* The contacts' caps features, sorted (XEP-0115 §5.1); notify holds the
 * +notify one. */
static void
pep_features(const struct bench *b, const char *f[3], char *notify,
             size_t size)
{
	snprintf(notify, size, "%s+notify", b->o.pep_node);
	f[0] = NS_CAPS;
	f[1] = NS_DISCO_INFO;
	f[2] = notify;
	for (int i = 0; i < 3; i++)
		for (int j = i + 1; j < 3; j++)
			if (strcmp(f[j], f[i]) < 0) {
				const char *t = f[i];
				f[i] = f[j];
				f[j] = t;
			}
}

/* XEP-0115 §5.1: the ver of identity client/pc "pigeon-load" and the
 * features above. */
static int
pep_caps_init(struct bench *b)
{
	const char *f[3];
	char notify[256], s[1024];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	pep_features(b, f, notify, sizeof(notify));
	snprintf(s, sizeof(s), "client/pc//pigeon-load<%s<%s<%s<", f[0], f[1],
	         f[2]);
	if (EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha1(), NULL) != 1)
		return -EINVAL;
	return b64_encode(md, mdlen, b->caps_ver, sizeof(b->caps_ver));
}

static int
pep_presence(struct conn *c)
{
	if (c->b->o.sc == SC_PEP && c->slot > 0)
		return conn_write(c,
		                  "<presence><c xmlns='" NS_CAPS
		                  "' hash='sha-1' node='" CAPS_NODE
		                  "' ver='%s'/></presence>",
		                  c->b->caps_ver);
	return conn_write(c, "<presence/>");
}

static void
pep_answer_disco(struct conn *c, const char *p, size_t n)
{
	struct bench *b = c->b;
	const char *id = "", *from = "", *f[3];
	size_t idl = 0, froml = 0;
	char notify[256];

	(void)el_attr(p, n, "id", &id, &idl);
	(void)el_attr(p, n, "from", &from, &froml);
	pep_features(b, f, notify, sizeof(notify));
	(void)conn_write(c,
	                 "<iq type='result' id=\"%.*s\" to=\"%.*s\"><query "
	                 "xmlns='" NS_DISCO_INFO "' node='" CAPS_NODE
	                 "#%s'><identity category='client' type='pc' "
	                 "name='pigeon-load'/><feature var='%s'/><feature "
	                 "var='%s'/><feature var='%s'/></query></iq>",
	                 (int)idl, id, (int)froml, from, b->caps_ver, f[0], f[1],
	                 f[2]);
}

/* One publish of the owner: the warm-up item, or a timed one. */
static void
pep_publish(struct bench *b, int warm)
{
	struct conn *owner = b->conns[0];
	char item[32];

	if (owner == NULL || owner->state != CS_READY)
		return;
	if (warm)
		snprintf(item, sizeof(item), "%s", b->warm_id);
	else
		snprintf(item, sizeof(item), "%" PRIu64, pgn_lat_now_ns());
	if (conn_write(owner,
	               "<iq type='set' id='%s'><pubsub xmlns='" NS_PUBSUB
	               "'><publish node='%s'><item id='%s'><x "
	               "xmlns='urn:xmpp:pigeon-load:0'>pep%s</x></item>"
	               "</publish></pubsub></iq>",
	               warm ? "pw" : "pp", b->o.pep_node, item, b->pad) != 0)
		return;
	if (!warm)
		b->pub_sent++;
}

static void
pep_report(struct bench *b)
{
	uint64_t end = b->t_notified > b->t_measure ? b->t_notified
	                                            : pgn_lat_now_ns();
	double secs = (double)(end - b->t_measure) / 1e9;
	double pub_secs = b->t_stop != UINT64_MAX && b->t_stop > b->t_measure
	                          ? (double)(b->t_stop - b->t_measure) / 1e9
	                          : secs;
	uint64_t expected = b->published * (uint64_t)b->interested;
	double srv = server_cpu(b);

	result_add(b, "contacts", "contacts", (double)b->o.contacts, 0);
	result_add(b, "interested", "interested", (double)b->interested, 0);
	result_add(b, "published", "published", (double)b->published, 0);
	result_add(b, "publish_errors", NULL, (double)b->pub_errors, 0);
	result_add(b, "publish_per_s", "publish/s",
	           pub_secs > 0 ? (double)b->published / pub_secs : 0, 0);
	result_add(b, "notifications", "notified", (double)b->notified, 0);
	result_add(b, "notifications_lost", "lost",
	           expected > b->notified ? (double)(expected - b->notified)
	                                  : 0,
	           0);
	result_add(b, "notifications_per_s", "notif/s",
	           secs > 0 ? (double)b->notified / secs : 0, 0);
	result_add(b, "notify_p50_us", "p50 us",
	           (double)pgn_lat_hist_pct(&b->lat, 0.50) / 1e3, 0);
	result_add(b, "notify_p99_us", "p99 us",
	           (double)pgn_lat_hist_pct(&b->lat, 0.99) / 1e3, 0);
	result_add(b, "notify_max_us", NULL, (double)b->lat.max / 1e3, 0);
	result_add(b, "duration_s", NULL, secs, 2);
	if (b->cpu_srv0 >= 0 && srv >= 0 && b->notified > 0)
		result_add(b, "server_cpu_us_per_notification", NULL,
		           (srv - b->cpu_srv0) * 1e6 / (double)b->notified, 2);
	cpu_report(b, (double)b->published, "server_cpu_us_per_publish",
	           "client_cpu_us_per_publish");
	result_add(b, "msg_errors", NULL, (double)b->msg_errors, 0);
	report_common(b);
	if (b->interested < b->o.contacts) {
		fprintf(stderr,
		        "pigeon-load: the warm-up item reached %ld of %ld "
		        "contacts (rosters? caps?)\n",
		        b->interested, b->o.contacts);
		b->exit_code = 1;
	}
	if (expected > b->notified || b->pub_errors > 0 || b->dropped > 0)
		b->exit_code = 1;
}

static void
pep_done(struct bench *b)
{
	if (b->phase == PH_CLOSE)
		return;
	pep_report(b);
	report(b);
	finish(b);
}

/* The timed publishes start: interest is what the warm-up showed. */
static void
pep_run(struct bench *b)
{
	evtimer_del(b->timer);
	b->phase = PH_RUN;
	b->t_run = b->t_measure = pgn_lat_now_ns();
	b->t_stop = UINT64_MAX;
	cpu_mark(b);
	for (long w = 0; w < b->o.window && (long)b->pub_sent < b->o.n; w++)
		pep_publish(b, 0);
}

static void
pep_all_up(struct bench *b)
{
	unsigned char r[8];

	/* An id no earlier run used: a last item sent at login is not it. */
	if (RAND_bytes(r, sizeof(r)) != 1) {
		finish(b);
		return;
	}
	snprintf(b->warm_id, sizeof(b->warm_id), "warm-%02x%02x%02x%02x%02x%02x",
	         r[0], r[1], r[2], r[3], r[4], r[5]);
	b->phase = PH_SETTLE;
	if (arm_timer(b, b->o.settle) != 0)
		finish(b);
}

/* pep's phase timer: the settle time is over (publish the warm-up), or
 * the warm-up's notifications did not all come (run with those that
 * did). */
static void
pep_timer(struct bench *b)
{
	if (b->phase == PH_SETTLE) {
		b->phase = PH_WARM;
		pep_publish(b, 1);
		if (arm_timer(b, b->o.timeout) != 0)
			finish(b);
	} else if (b->phase == PH_WARM) {
		if (b->interested == 0) {
			pep_done(b);
			return;
		}
		pep_run(b);
	}
}

static void
pep_check_done(struct bench *b)
{
	if (b->phase == PH_DRAIN &&
	    b->notified >= b->published * (uint64_t)b->interested)
		pep_done(b);
}

static void
pep_on_event(struct conn *c, const char *p, size_t n)
{
	struct bench *b = c->b;
	const char *t, *v;
	size_t at, tl, vl;
	uint64_t now = pgn_lat_now_ns(), ts;
	char num[24];

	if (el_find(p, n, 1, "item", &at, &t, &tl) != 0 ||
	    el_attr(p + at, n - at, "id", &v, &vl) != 0) {
		b->other_msgs++; /* a retract, a purge ... */
		return;
	}
	if (name_eq(v, vl, b->warm_id)) {
		if (b->phase == PH_WARM && ++b->interested >= b->o.contacts)
			pep_run(b);
		return;
	}
	if (vl == 0 || vl >= sizeof(num) || v[0] < '0' || v[0] > '9') {
		b->other_msgs++;
		return;
	}
	memcpy(num, v, vl);
	num[vl] = '\0';
	ts = strtoull(num, NULL, 10);
	if (ts < b->t_measure || b->t_measure == 0) {
		b->other_msgs++; /* an earlier run's last item */
		return;
	}
	b->notified++;
	b->t_notified = now;
	pgn_lat_hist_add(&b->lat, now >= ts ? now - ts : 0);
	pep_check_done(b);
}

/* Appends open, the base64 of len random bytes (at most 64), close.
 * 0, or 1 on failure (to be or'ed). */
static int
add_random_b64(struct evbuffer *out, const char *open, size_t len,
               const char *close)
{
	unsigned char raw[64];
	char b64[4 * (sizeof(raw) / 3 + 1) + 1];

	if (len > sizeof(raw) || RAND_bytes(raw, (int)len) != 1 ||
	    b64_encode(raw, len, b64, sizeof(b64)) != 0)
		return 1;
	return evbuffer_add_printf(out, "%s%s%s", open, b64, close) < 0;
}

/* pepset: the session's items, each publish answered once. */
static void
pepset_start(struct conn *c)
{
	struct bench *b = c->b;
	unsigned char raw[PEPSET_AVATAR], hash[EVP_MAX_MD_SIZE];
	char b64[4 * (PEPSET_AVATAR / 3 + 1) + 4], hex[2 * 20 + 1], user[MAX_NAME];
	unsigned int hl = 0;
	uint32_t dev;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int rc = 0;

	b->inflight++; /* until its publishes are answered */
	c->pending = PEPSET_PUBLISHES;
	user_name(b, c->idx, user, sizeof(user));
	if (RAND_bytes((unsigned char *)&dev, sizeof(dev)) != 1)
		goto fail;
	dev = dev % 2147483647u + 1;
	/* 1. the OMEMO device list (eu.siacs.conversations.axolotl) */
	rc |= evbuffer_add_printf(
	        out,
	        "<iq type='set' id='ps1'><pubsub xmlns='" NS_PUBSUB
	        "'><publish node='eu.siacs.conversations.axolotl.devicelist'>"
	        "<item id='current'><list xmlns='eu.siacs.conversations."
	        "axolotl'><device id='%" PRIu32 "'/></list></item></publish>"
	        PUBOPT_HEAD PUBOPT_FIELD("access_model", "open") PUBOPT_TAIL
	        "</pubsub></iq>",
	        dev) < 0;
	/* 2. its bundle: identity key, signed prekey, 100 prekeys (33-byte
	 * Curve25519 keys, a 64-byte signature, random here) */
	rc |= evbuffer_add_printf(
	        out,
	        "<iq type='set' id='ps2'><pubsub xmlns='" NS_PUBSUB
	        "'><publish node='eu.siacs.conversations.axolotl.bundles:%" PRIu32
	        "'><item id='current'><bundle xmlns='eu.siacs.conversations."
	        "axolotl'>",
	        dev) < 0;
	rc |= add_random_b64(out, "<signedPreKeyPublic signedPreKeyId='1'>", 33,
	                     "</signedPreKeyPublic>");
	rc |= add_random_b64(out, "<signedPreKeySignature>", 64,
	                     "</signedPreKeySignature>");
	rc |= add_random_b64(out, "<identityKey>", 33, "</identityKey><prekeys>");
	for (int k = 1; k <= PEPSET_PREKEYS; k++) {
		char open[48];

		snprintf(open, sizeof(open), "<preKeyPublic preKeyId='%d'>", k);
		rc |= add_random_b64(out, open, 33, "</preKeyPublic>");
	}
	rc |= evbuffer_add_printf(out,
	                          "</prekeys></bundle></item></publish>"
	                          PUBOPT_HEAD PUBOPT_FIELD("access_model",
	                                                   "open")
	                                  PUBOPT_TAIL "</pubsub></iq>") < 0;
	/* 3-4. the avatar (XEP-0084): data, then metadata */
	if (RAND_bytes(raw, sizeof(raw)) != 1 ||
	    b64_encode(raw, sizeof(raw), b64, sizeof(b64)) ||
	    EVP_Digest(raw, sizeof(raw), hash, &hl, EVP_sha1(), NULL) != 1)
		goto fail;
	for (unsigned int k = 0; k < 20 && k < hl; k++)
		snprintf(hex + 2 * k, 3, "%02x", hash[k]);
	rc |= evbuffer_add_printf(
	        out,
	        "<iq type='set' id='ps3'><pubsub xmlns='" NS_PUBSUB
	        "'><publish node='urn:xmpp:avatar:data'><item id='%s'><data "
	        "xmlns='urn:xmpp:avatar:data'>%s</data></item></publish>"
	        "</pubsub></iq>"
	        "<iq type='set' id='ps4'><pubsub xmlns='" NS_PUBSUB
	        "'><publish node='urn:xmpp:avatar:metadata'><item id='%s'>"
	        "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='%d' "
	        "id='%s' height='64' width='64' type='image/png'/></metadata>"
	        "</item></publish></pubsub></iq>",
	        hex, b64, hex, PEPSET_AVATAR, hex) < 0;
	/* 5... bookmarks (XEP-0402): one item per room */
	for (int k = 1; k <= PEPSET_BOOKMARKS; k++)
		rc |= evbuffer_add_printf(
		        out,
		        "<iq type='set' id='ps%d'><pubsub xmlns='" NS_PUBSUB
		        "'><publish node='urn:xmpp:bookmarks:1'><item "
		        "id='room%d@conference.%s'><conference xmlns='urn:xmpp:"
		        "bookmarks:1' name='Room %d' autojoin='true'><nick>%s"
		        "</nick></conference></item></publish>" PUBOPT_HEAD
		        PUBOPT_FIELD("persist_items", "true")
		                PUBOPT_FIELD("max_items", "max")
		                        PUBOPT_FIELD("send_last_published_item",
		                                     "never")
		                                PUBOPT_FIELD("access_model",
		                                             "whitelist")
		                                        PUBOPT_TAIL
		        "</pubsub></iq>",
		        4 + k, k, b->o.domain, k, user) < 0;
	if (rc != 0)
		goto fail;
	b->pub_sent += PEPSET_PUBLISHES;
	c->deadline = pgn_lat_now_ns() + (uint64_t)(b->o.timeout * 1e9);
	return;
fail:
	conn_fail(c, F_LOCAL, "cannot queue the publishes");
}

/* An iq answer of pep (the owner's publishes) or pepset. */
static void
pep_on_answer(struct conn *c, const char *id, size_t idl, const char *p,
              size_t n)
{
	struct bench *b = c->b;
	int ok = attr_eq(p, n, "type", "result");

	if (idl < 2 || id[0] != 'p')
		return;
	if (!ok) {
		b->pub_errors++;
		count_error(b, p, n);
	}
	if (b->o.sc == SC_PEPSET) {
		if (ok)
			b->published++;
		if (--c->pending > 0)
			return;
		c->deadline = 0;
		b->inflight--;
		b->done++;
		b->t_last = pgn_lat_now_ns();
		conn_close_stream(c);
		progress(b);
		return;
	}
	if (id[1] == 'w') { /* the warm-up: its error ends the run */
		if (!ok)
			pep_done(b);
		return;
	}
	if (ok)
		b->published++;
	if ((long)b->pub_sent < b->o.n) {
		pep_publish(b, 0);
	} else if (b->phase == PH_RUN &&
	           b->published + (uint64_t)b->pub_errors >= b->pub_sent) {
		b->t_stop = pgn_lat_now_ns();
		b->phase = PH_DRAIN;
		b->t_drain_end = b->t_stop + (uint64_t)(b->o.drain * 1e9);
		pep_check_done(b);
	}
}

static void
pepset_report(struct bench *b)
{
	double secs =
	        b->t_last > b->t_run ? (double)(b->t_last - b->t_run) / 1e9 : 0;

	result_add(b, "accounts", "accounts", (double)b->done, 0);
	result_add(b, "published", "published", (double)b->published, 0);
	result_add(b, "publish_errors", "errors", (double)b->pub_errors, 0);
	result_add(b, "accounts_per_s", "accounts/s",
	           secs > 0 ? (double)b->done / secs : 0, 0);
	b->verify_after = run_verify(b);
	if (b->verify_before >= 0 && b->verify_after >= 0) {
		result_add(b, "store_bytes_before", "store before",
		           (double)b->verify_before, 0);
		result_add(b, "store_bytes_after", "store after",
		           (double)b->verify_after, 0);
		result_add(b, "store_bytes_per_account", "bytes/account",
		           b->done > 0 ? (double)(b->verify_after -
		                                  b->verify_before) /
		                                 (double)b->done
		                       : 0,
		           0);
	}
	/* Per account: its login and logout are in the span too. */
	cpu_report(b, (double)b->done, "server_cpu_us_per_account",
	           "client_cpu_us_per_account");
	report_common(b);
	if (b->failed > 0 || b->pub_errors > 0)
		b->exit_code = 1;
}

/* Every persistent session is up (or failed). */
static void
all_up(struct bench *b)
{
	b->t_up = pgn_lat_now_ns();
	if (b->failed > 0) {
		fprintf(stderr,
		        "pigeon-load: %ld of %ld sessions failed to log in\n",
		        b->failed, b->target);
		b->exit_code = 1;
		result_add(b, "sessions", "sessions", (double)b->target, 0);
		result_add(b, "logged_in", "logged in", (double)b->ready, 0);
		report_common(b);
		report(b);
		finish(b);
		return;
	}
	switch (b->o.sc) {
	case SC_IDLE:
		/* Nothing to do each millisecond while idle. */
		evtimer_del(b->tick);
		b->phase = PH_SETTLE;
		if (arm_timer(b, b->o.settle) != 0)
			finish(b);
		break;
	case SC_CHAT:
		chat_start(b);
		break;
	case SC_OFFLINE:
		b->verify_before = run_verify(b);
		offline_start(b);
		break;
	case SC_PEP:
		pep_all_up(b);
		break;
	default:
		break;
	}
}

static void
logins_over(struct bench *b)
{
	if (b->phase == PH_WARM) {
		if (b->failed > 0) {
			fprintf(stderr,
			        "pigeon-load: %ld of %ld warm-up logins "
			        "failed\n",
			        b->failed, b->target);
			login_report(b);
			report(b);
			finish(b);
			return;
		}
		b->phase = PH_LOGINS;
		b->launched = 0;
		b->done = 0;
		b->target = b->o.n > 0 ? b->o.n : LONG_MAX;
		b->t_run = b->t_launch = b->t_last = pgn_lat_now_ns();
		cpu_mark(b);
		if (b->o.n <= 0 && arm_timer(b, b->o.duration) != 0) {
			finish(b);
			return;
		}
		launch_more(b);
		return;
	}
	if (b->o.sc == SC_PEPSET)
		pepset_report(b);
	else
		login_report(b);
	report(b);
	finish(b);
}

static void
progress(struct bench *b)
{
	switch (b->phase) {
	case PH_UP:
		launch_more(b);
		if (b->ready + b->failed >= b->target)
			all_up(b);
		break;
	case PH_WARM:
	case PH_LOGINS:
		launch_more(b);
		if (b->inflight == 0 &&
		    (b->launched >= b->target || b->stop_launch))
			logins_over(b);
		break;
	default:
		break;
	}
}

/* The tick's period.  At a fixed message rate, one message's interval,
 * at least 200 µs and at most 1 ms, unless --tick-us says otherwise: the
 * messages then leave in ones and twos as they fall due, as independent
 * clients would send them, instead of in bursts of rate / 1000 every 1-2
 * ms that queue behind each other in the server.  Not shorter: every
 * tick is a wake-up (a context switch costs 20-40 µs of CPU in this VM),
 * and at 100 µs the tool itself ran at 90 % of its core and stalled. */
static long
tick_us(const struct opts *o)
{
	long us;

	if (o->tick_us > 0)
		return o->tick_us;
	if (o->msg_rate <= 0)
		return 1000;
	us = (long)(1e6 / o->msg_rate);
	return us < 200 ? 200 : us > 1000 ? 1000 : us;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	uint64_t now = pgn_lat_now_ns();

	switch (b->phase) {
	case PH_UP:
	case PH_WARM:
	case PH_LOGINS:
		if (b->o.rate > 0)
			launch_more(b);
		break;
	case PH_RUN:
		if (b->o.server_ctl != NULL && b->ctl_reset_sent == 0 &&
		    b->o.sc == SC_CHAT && now >= b->t_measure)
			ctl_reset(b);
		if (b->o.msg_rate > 0 && b->nconns > 0) {
			uint64_t due =
			        (uint64_t)(b->o.msg_rate *
			                   (double)(now - b->rate_t0) / 1e9);
			/* Bounded per tick: after a stall we do not burst
			 * more than 0.1 s of messages at once. */
			uint64_t cap = (uint64_t)(b->o.msg_rate / 10) + 1;
			uint64_t k = 0;

			while (b->rate_sent < due && k < cap &&
			       b->phase == PH_RUN) {
				struct conn *c =
				        b->conns[b->cursor++ % b->nconns];
				uint64_t due_t =
				        b->rate_t0 +
				        (uint64_t)((double)b->rate_sent * 1e9 /
				                   b->o.msg_rate);

				if (due_t >= b->t_measure && due_t <= now)
					pgn_lat_hist_add(&b->send_lag, now - due_t);
				b->rate_sent++;
				k++;
				if (c == NULL || c->state != CS_READY) {
					b->skipped++;
					continue;
				}
				if (b->o.sc == SC_CHAT) {
					chat_send(c);
				} else if (offline_can_send(b)) {
					offline_send(c);
					if (!offline_can_send(b))
						offline_stop(b);
				}
			}
		}
		break;
	case PH_FIN:
		if (now > b->t_drain_end) {
			fprintf(stderr,
			        "pigeon-load: %ld of %ld senders did not "
			        "answer the final ping\n",
			        b->fin_expected - b->fin_done, b->fin_expected);
			offline_fin(b);
		}
		break;
	case PH_DRAIN:
		if (b->o.sc == SC_CHAT &&
		    (b->delivered >= b->sent || now > b->t_drain_end)) {
			finish(b);
		} else if (b->o.sc == SC_OFFLINE && now > b->t_drain_end) {
			offline_report(b);
			report(b);
			finish(b);
		} else if (b->o.sc == SC_PEP && now > b->t_drain_end) {
			pep_done(b);
		}
		break;
	default:
		break;
	}
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	uint64_t now = pgn_lat_now_ns();

	for (struct conn *c = b->live, *next; c != NULL; c = next) {
		next = c->next;
		if (c->state == CS_DEAD || c->deadline == 0 ||
		    c->deadline > now)
			continue;
		if (c->state == CS_CLOSING)
			conn_kill(c);
		else
			conn_fail(c, F_TIMEOUT, "no answer within %.0f s",
			          b->o.timeout);
		if (b->phase == PH_CLOSE)
			break;
	}
}

/* Reports (chat) and closes every stream; the loop ends when the last
 * one is gone or after 3 s. */
static void
finish(struct bench *b)
{
	struct timeval tv = {3, 0};

	if (b->phase == PH_CLOSE)
		return;
	if (b->o.sc == SC_CHAT && b->phase == PH_DRAIN) {
		b->phase = PH_CLOSE; /* before the report: no re-entry */
		chat_report(b);
		report(b);
	}
	b->phase = PH_CLOSE;
	b->stop_launch = 1;
	evtimer_del(b->tick);
	evtimer_del(b->timer);
	for (struct conn *c = b->live, *next; c != NULL; c = next) {
		next = c->next;
		if (c->state == CS_READY)
			conn_close_stream(c);
		else if (c->state != CS_CLOSING)
			conn_kill(c);
	}
	if (b->open == 0)
		event_base_loopexit(b->base, NULL);
	else if (event_base_loopexit(b->base, &tv) != 0)
		event_base_loopbreak(b->base);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct bench *b = arg;

	if (b->phase == PH_CLOSE) {
		event_base_loopbreak(b->base);
		return;
	}
	fprintf(stderr, "pigeon-load: interrupted\n");
	b->interrupted = 1;
	b->exit_code = 1;
	switch (b->o.sc) {
	case SC_CHAT:
		if (b->phase == PH_RUN || b->phase == PH_DRAIN) {
			b->phase = PH_DRAIN;
			finish(b);
			return;
		}
		break;
	case SC_LOGIN:
	case SC_REGISTER:
		if (b->phase == PH_LOGINS) {
			login_report(b);
			report(b);
		}
		break;
	case SC_PEPSET:
		if (b->phase == PH_LOGINS) {
			pepset_report(b);
			report(b);
		}
		break;
	case SC_PEP:
		if (b->phase == PH_RUN || b->phase == PH_DRAIN) {
			pep_done(b);
			return;
		}
		break;
	case SC_IDLE:
		if (b->phase == PH_HOLD && b->dropped == 0)
			b->exit_code = 0; /* the figures were printed */
		break;
	default:
		break;
	}
	finish(b);
}

/* ---- set-up ------------------------------------------------------------- */

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: pigeon-load -s SCENARIO [options]\n"
	        "\n"
	        "Scenarios:\n"
	        "  idle      -n N sessions log in and stay idle; with "
	        "--server-pid, prints\n"
	        "            the server's RSS per session (VmRSS before and "
	        "after)\n"
	        "  chat      --pairs P pairs exchange messages for --duration "
	        "at --msg-rate\n"
	        "            msgs/s in all (0: flat out, --window per "
	        "sender); latency from\n"
	        "            a CLOCK_MONOTONIC stamp in each body\n"
	        "  login     logins (TLS + SASL + bind, then close) for "
	        "--duration or -n,\n"
	        "            --concurrency at a time, over --users accounts\n"
	        "  offline   --senders K sessions send -n messages (or for "
	        "--duration) to\n"
	        "            --users accounts that are not connected\n"
	        "  register  creates -n accounts by in-band registration "
	        "(XEP-0077)\n"
	        "  pep       the owner (--first) publishes -n items (--window "
	        "in flight) to\n"
	        "            --contacts C contacts (rosters provisioned, "
	        "subscription both)\n"
	        "            whose caps say <--pep-node>+notify: "
	        "notifications/s, CPU/publish\n"
	        "  pepset    -n accounts each publish an OMEMO device list and "
	        "bundle (100\n"
	        "            prekeys), an avatar (2 KiB) and 3 bookmarks; with "
	        "--verify-cmd\n"
	        "            (prints the store's bytes) the growth per "
	        "account\n"
	        "\n"
	        "Server:   -H HOST (127.0.0.1)  -p PORT (5222; 5223 with "
	        "--direct-tls)\n"
	        "          -d DOMAIN (localhost)  --direct-tls  --cafile FILE "
	        "(verify)\n"
	        "          --mech auto|SCRAM-SHA-256|SCRAM-SHA-1|PLAIN  "
	        "--server-pid PID\n"
	        "          --server-ctl SOCKET (chat: Pigeon's own delivery "
	        "latency, via its\n"
	        "          control socket: `latency_reset` after the warm-up, "
	        "`latency` at the end)\n"
	        "Accounts: --user-fmt FMT (load%%d)  --password PW "
	        "(load-pass)  --first I (1)\n"
	        "          --register (register each account in-band "
	        "first)  --key-cache FILE\n"
	        "Load:     -n N  --pairs P  --users M  --senders K  "
	        "--concurrency C (100)\n"
	        "          --rate CONN/S (0: none)  --src-ips N (1: "
	        "127.0.0.1..127.0.0.N)\n"
	        "          --msg-rate R (0: flat out)  --tick-us T (1/R, "
	        "200..1000)  --window W (16)  "
	        "--duration S (10)\n"
	        "          --warmup S (0)  --hold S (0)  --settle S (2)  "
	        "--drain S (5)\n"
	        "          --body-size B  --no-presence | --presence  --sm  "
	        "--sm-every N (10)\n"
	        "          --resource R (load)  --timeout S (30, per "
	        "step)\n"
	        "          --contacts C (100)  --pep-node NODE "
	        "(urn:xmpp:pigeon-load:0)\n"
	        "Output:   --json FILE  --verify-cmd CMD (offline: prints a "
	        "stored count)  -v\n"
	        "\n"
	        "Exit status: 0 ok, 1 failures (counted by kind), 2 usage.\n");
}

static int
parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int
parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min) ||
	    !(v <= max))
		return -1;
	*out = v;
	return 0;
}

/* --user-fmt must hold exactly one %d and no other conversion. */
static int
check_user_fmt(const char *fmt)
{
	int conv = 0;

	if (strlen(fmt) > 64)
		return -1;
	for (const char *s = fmt; *s != '\0'; s++) {
		if (*s == '@' || *s == '/' || *s == '\'' || *s == '"' ||
		    *s == '\\' || *s == '<' || *s == '&' || is_space(*s))
			return -1;
		if (*s != '%')
			continue;
		if (s[1] == '%') {
			s++;
			continue;
		}
		if (s[1] != 'd' || conv++)
			return -1;
		s++;
	}
	return conv == 1 ? 0 : -1;
}

/* Values printed into JSON and into XML attributes unescaped. */
static int
check_plain(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s == '"' || *s == '\\' || *s == '\'' || *s == '<' ||
		    *s == '&' || *s == '/' || (unsigned char)*s < 0x21)
			return -1;
	return 0;
}

enum {
	O_DIRECT = 256,
	O_CAFILE,
	O_MECH,
	O_USERFMT,
	O_PASSWORD,
	O_FIRST,
	O_PAIRS,
	O_USERS,
	O_SENDERS,
	O_CONC,
	O_RATE,
	O_SRCIPS,
	O_MSGRATE,
	O_WINDOW,
	O_DURATION,
	O_WARMUP,
	O_HOLD,
	O_SETTLE,
	O_DRAIN,
	O_PID,
	O_SERVER_CTL,
	O_TICK_US,
	O_PRESENCE,
	O_NOPRESENCE,
	O_SM,
	O_SMEVERY,
	O_REGISTER,
	O_RESOURCE,
	O_TIMEOUT,
	O_JSON,
	O_VERIFY,
	O_KEYCACHE,
	O_BODY,
	O_CONTACTS,
	O_PEPNODE,
};

static const struct option long_opts[] = {
        {"scenario", required_argument, NULL, 's'},
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"domain", required_argument, NULL, 'd'},
        {"sessions", required_argument, NULL, 'n'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"direct-tls", no_argument, NULL, O_DIRECT},
        {"cafile", required_argument, NULL, O_CAFILE},
        {"mech", required_argument, NULL, O_MECH},
        {"user-fmt", required_argument, NULL, O_USERFMT},
        {"password", required_argument, NULL, O_PASSWORD},
        {"first", required_argument, NULL, O_FIRST},
        {"pairs", required_argument, NULL, O_PAIRS},
        {"users", required_argument, NULL, O_USERS},
        {"senders", required_argument, NULL, O_SENDERS},
        {"concurrency", required_argument, NULL, O_CONC},
        {"rate", required_argument, NULL, O_RATE},
        {"src-ips", required_argument, NULL, O_SRCIPS},
        {"msg-rate", required_argument, NULL, O_MSGRATE},
        {"window", required_argument, NULL, O_WINDOW},
        {"duration", required_argument, NULL, O_DURATION},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"hold", required_argument, NULL, O_HOLD},
        {"settle", required_argument, NULL, O_SETTLE},
        {"drain", required_argument, NULL, O_DRAIN},
        {"server-pid", required_argument, NULL, O_PID},
        {"server-ctl", required_argument, NULL, O_SERVER_CTL},
        {"tick-us", required_argument, NULL, O_TICK_US},
        {"presence", no_argument, NULL, O_PRESENCE},
        {"no-presence", no_argument, NULL, O_NOPRESENCE},
        {"sm", no_argument, NULL, O_SM},
        {"sm-every", required_argument, NULL, O_SMEVERY},
        {"register", no_argument, NULL, O_REGISTER},
        {"resource", required_argument, NULL, O_RESOURCE},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"json", required_argument, NULL, O_JSON},
        {"verify-cmd", required_argument, NULL, O_VERIFY},
        {"key-cache", required_argument, NULL, O_KEYCACHE},
        {"body-size", required_argument, NULL, O_BODY},
        {"contacts", required_argument, NULL, O_CONTACTS},
        {"pep-node", required_argument, NULL, O_PEPNODE},
        {NULL, 0, NULL, 0},
};

static int
parse_args(struct opts *o, int argc, char **argv)
{
	const long big = 100000000;
	long port = 0, v;
	int ch, sc_set = 0;

	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->domain = "localhost";
	o->user_fmt = "load%d";
	o->password = "load-pass";
	o->first = 1;
	o->concurrency = 100;
	o->src_ips = 1;
	o->window = 16;
	o->duration = 10;
	o->settle = 2;
	o->drain = -1; /* the scenario's default, below */
	o->presence = -1;
	o->sm_every = 10;
	o->resource = "load";
	o->timeout = 30;
	o->contacts = 100;
	o->pep_node = "urn:xmpp:pigeon-load:0";
	while ((ch = getopt_long(argc, argv, "s:H:p:d:n:vh", long_opts,
	                         NULL)) != -1) {
		int bad = 0;

		switch (ch) {
		case 's':
			for (v = 0; v < NSCENARIO; v++)
				if (strcmp(optarg, scenario_names[v]) == 0)
					break;
			if (v == NSCENARIO)
				bad = 1;
			o->sc = (enum scenario)v;
			sc_set = 1;
			break;
		case 'H':
			o->host = optarg;
			break;
		case 'p':
			bad = parse_long(optarg, 1, 65535, &port);
			break;
		case 'd':
			o->domain = optarg;
			break;
		case 'n':
			bad = parse_long(optarg, 1, big, &o->n);
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case O_DIRECT:
			o->direct_tls = 1;
			break;
		case O_CAFILE:
			o->cafile = optarg;
			break;
		case O_MECH:
			for (v = 0; v < 4; v++)
				if (strcmp(optarg, mech_names[v]) == 0)
					break;
			if (v == 4)
				bad = 1;
			o->mech = (enum mech)v;
			break;
		case O_USERFMT:
			o->user_fmt = optarg;
			bad = check_user_fmt(optarg);
			break;
		case O_PASSWORD:
			o->password = optarg;
			bad = strlen(optarg) > 200;
			break;
		case O_FIRST:
			bad = parse_long(optarg, 0, big, &o->first);
			break;
		case O_PAIRS:
			bad = parse_long(optarg, 1, big / 2, &o->pairs);
			break;
		case O_USERS:
			bad = parse_long(optarg, 1, big, &o->users);
			break;
		case O_SENDERS:
			bad = parse_long(optarg, 1, big, &o->senders);
			break;
		case O_CONC:
			bad = parse_long(optarg, 1, big, &o->concurrency);
			break;
		case O_RATE:
			bad = parse_double(optarg, 0, 1e9, &o->rate);
			break;
		case O_SRCIPS:
			bad = parse_long(optarg, 1, 254, &v);
			o->src_ips = (int)v;
			break;
		case O_MSGRATE:
			bad = parse_double(optarg, 0, 1e9, &o->msg_rate);
			break;
		case O_WINDOW:
			bad = parse_long(optarg, 1, 100000, &o->window);
			break;
		case O_DURATION:
			bad = parse_double(optarg, 0.01, 1e6, &o->duration);
			break;
		case O_WARMUP:
			bad = parse_double(optarg, 0, 1e6, &o->warmup);
			break;
		case O_HOLD:
			bad = parse_double(optarg, 0, 1e7, &o->hold);
			break;
		case O_SETTLE:
			bad = parse_double(optarg, 0, 1e6, &o->settle);
			break;
		case O_DRAIN:
			bad = parse_double(optarg, 0, 1e6, &o->drain);
			break;
		case O_PID:
			bad = parse_long(optarg, 1, INT_MAX, &o->server_pid);
			break;
		case O_TICK_US:
			bad = parse_long(optarg, 10, 999999, &o->tick_us);
			break;
		case O_SERVER_CTL:
			o->server_ctl = optarg;
			bad = strlen(optarg) >= sizeof(((struct sockaddr_un *)0)
			                                       ->sun_path);
			break;
		case O_PRESENCE:
			o->presence = 1;
			break;
		case O_NOPRESENCE:
			o->presence = 0;
			break;
		case O_SM:
			o->sm = 1;
			break;
		case O_SMEVERY:
			bad = parse_long(optarg, 0, big, &o->sm_every);
			break;
		case O_REGISTER:
			o->do_register = 1;
			break;
		case O_RESOURCE:
			o->resource = optarg;
			bad = strlen(optarg) > 64 || check_plain(optarg) != 0;
			break;
		case O_TIMEOUT:
			bad = parse_double(optarg, 0.1, 1e6, &o->timeout);
			break;
		case O_JSON:
			o->json = optarg;
			break;
		case O_VERIFY:
			o->verify_cmd = optarg;
			break;
		case O_KEYCACHE:
			o->key_cache = optarg;
			break;
		case O_BODY:
			bad = parse_long(optarg, 0, 1000000, &o->body_size);
			break;
		case O_CONTACTS:
			bad = parse_long(optarg, 1, 100000, &o->contacts);
			break;
		case O_PEPNODE:
			o->pep_node = optarg;
			bad = strlen(optarg) > 200 || check_plain(optarg) != 0;
			break;
		default:
			usage(stderr);
			return -1;
		}
		if (bad) {
			fprintf(stderr, "pigeon-load: bad value for %s: %s\n",
			        argv[optind - 1], optarg ? optarg : "");
			return -1;
		}
	}
	if (optind != argc || !sc_set) {
		usage(stderr);
		return -1;
	}
	if (strlen(o->domain) > 200 || check_plain(o->domain) != 0 ||
	    strlen(o->host) > 200 || check_plain(o->host) != 0) {
		fprintf(stderr, "pigeon-load: bad --host or --domain\n");
		return -1;
	}
	o->port = port ? (int)port : o->direct_tls ? 5223 : 5222;
	/* Chat waits at most this long for the last deliveries; offline
	 * always waits this long for late bounces. */
	if (o->drain < 0)
		o->drain = o->sc == SC_OFFLINE ? 1 : 5;
	if (o->presence < 0)
		o->presence = o->sc != SC_LOGIN && o->sc != SC_REGISTER &&
		              o->sc != SC_PEPSET;
	switch (o->sc) {
	case SC_REGISTER:
		o->do_register = 1;
		/* fall through */
	case SC_IDLE:
		if (o->n <= 0) {
			fprintf(stderr, "pigeon-load: -n is required\n");
			return -1;
		}
		break;
	case SC_CHAT:
		if (o->pairs <= 0)
			o->pairs = 1;
		break;
	case SC_LOGIN:
		if (o->users <= 0)
			o->users = o->n > 0 && o->n < 1000 ? o->n : 1000;
		break;
	case SC_OFFLINE:
		if (o->senders <= 0)
			o->senders = 1;
		if (o->users <= 0)
			o->users = 100;
		if (o->n > 0 && o->duration == 10)
			o->duration = 0; /* -n alone ends the run */
		break;
	case SC_PEP:
		if (o->n <= 0)
			o->n = 1000;
		if (!o->presence) {
			fprintf(stderr, "pigeon-load: pep needs presence\n");
			return -1;
		}
		break;
	case SC_PEPSET:
		if (o->n <= 0) {
			fprintf(stderr, "pigeon-load: -n is required\n");
			return -1;
		}
		break;
	default:
		break;
	}
	return 0;
}

static int
raise_nofile(long need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			return -errno;
	}
	if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)need > rl.rlim_cur) {
		fprintf(stderr,
		        "pigeon-load: %ld file descriptors needed, the limit "
		        "is %llu (raise it: ulimit -n)\n",
		        need, (unsigned long long)rl.rlim_cur);
		return -EMFILE;
	}
	return 0;
}

static SSL_CTX *
make_ssl_ctx(const struct opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		goto fail;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto fail;
	/* Idle sessions keep no record buffers (as the server does). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (o->cafile != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1)
			goto fail;
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
fail:
	ERR_print_errors_fp(stderr);
	SSL_CTX_free(ctx);
	return NULL;
}

static int
bench_init(struct bench *b)
{
	long persistent = 0;

	b->exit_code = 0;
	b->t_stop = UINT64_MAX;
	b->rss_before = b->rss_after = -1;
	b->verify_before = b->verify_after = -1;
	memset(&b->dst, 0, sizeof(b->dst));
	b->dst.sin_family = AF_INET;
	b->dst.sin_port = htons((uint16_t)b->o.port);
	if (inet_pton(AF_INET, b->o.host, &b->dst.sin_addr) != 1) {
		fprintf(stderr, "pigeon-load: -H takes an IPv4 address\n");
		return -EINVAL;
	}
	switch (b->o.sc) {
	case SC_IDLE:
		persistent = b->o.n;
		break;
	case SC_CHAT:
		persistent = 2 * b->o.pairs;
		break;
	case SC_OFFLINE:
		persistent = b->o.senders;
		break;
	case SC_PEP:
		persistent = b->o.contacts + 1;
		if (pep_caps_init(b) != 0)
			return -EINVAL;
		break;
	default:
		break;
	}
	if (raise_nofile((persistent > 0 ? persistent : 2 * b->o.concurrency) +
	                 64) != 0)
		return -EMFILE;
	b->pad = malloc((size_t)b->o.body_size + 2);
	if (b->pad == NULL)
		return -ENOMEM;
	b->pad[0] = '\0';
	if (b->o.body_size > 0) {
		b->pad[0] = ' ';
		memset(b->pad + 1, 'x', (size_t)b->o.body_size);
		b->pad[b->o.body_size + 1] = '\0';
	}
	if (persistent > 0) {
		b->conns = calloc((size_t)persistent, sizeof(*b->conns));
		if (b->conns == NULL)
			return -ENOMEM;
		b->nconns = persistent;
		b->target = persistent;
		b->phase = PH_UP;
	} else if (b->o.sc == SC_LOGIN) {
		b->target = b->o.users;
		b->phase = PH_WARM;
	} else {
		b->target = b->o.n;
		b->phase = PH_LOGINS;
	}
	b->ssl_ctx = make_ssl_ctx(&b->o);
	if (b->ssl_ctx == NULL)
		return -EINVAL;
	{
		/* Timers to the microsecond (timerfd under epoll): epoll's
		 * own timeout is in whole milliseconds, rounded up, which
		 * made the 1 ms tick fire every 1-2 ms and send its
		 * messages in bursts. */
		struct event_config *ec = event_config_new();

		if (ec == NULL)
			return -ENOMEM;
		(void)event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
		b->base = event_base_new_with_config(ec);
		event_config_free(ec);
	}
	if (b->base == NULL)
		return -ENOMEM;
	b->tick = event_new(b->base, -1, EV_PERSIST, tick_cb, b);
	b->sweep = event_new(b->base, -1, EV_PERSIST, sweep_cb, b);
	b->reaper = event_new(b->base, -1, 0, reaper_cb, b);
	b->timer = evtimer_new(b->base, phase_timer_cb, b);
	b->sigint = evsignal_new(b->base, SIGINT, signal_cb, b);
	b->sigterm = evsignal_new(b->base, SIGTERM, signal_cb, b);
	if (b->tick == NULL || b->sweep == NULL || b->reaper == NULL ||
	    b->timer == NULL || b->sigint == NULL || b->sigterm == NULL)
		return -ENOMEM;
	{
		struct timeval ms = {0, tick_us(&b->o)}, s = {1, 0};
		if (event_add(b->tick, &ms) != 0 ||
		    event_add(b->sweep, &s) != 0 ||
		    event_add(b->sigint, NULL) != 0 ||
		    event_add(b->sigterm, NULL) != 0)
			return -ENOMEM;
	}
	if (keys_load(b) != 0) {
		fprintf(stderr, "pigeon-load: cannot read %s\n",
		        b->o.key_cache);
		return -EIO;
	}
	return 0;
}

static void
bench_free(struct bench *b)
{
	while (b->live != NULL)
		conn_kill(b->live);
	while (b->dead != NULL) {
		struct conn *c = b->dead;
		b->dead = c->prev;
		conn_free(c);
	}
	if (b->tick != NULL)
		event_free(b->tick);
	if (b->sweep != NULL)
		event_free(b->sweep);
	if (b->reaper != NULL)
		event_free(b->reaper);
	if (b->timer != NULL)
		event_free(b->timer);
	if (b->sigint != NULL)
		event_free(b->sigint);
	if (b->sigterm != NULL)
		event_free(b->sigterm);
	if (b->base != NULL)
		event_base_free(b->base);
	SSL_CTX_free(b->ssl_ctx);
	free(b->conns);
	free(b->keys.e);
	free(b->pad);
}

int
main(int argc, char **argv)
{
	struct bench *b;
	int rc = 2;

	/* Large (histograms): on the heap, zeroed. */
	b = calloc(1, sizeof(*b));
	if (b == NULL) {
		fprintf(stderr, "pigeon-load: out of memory\n");
		return 2;
	}
	if (parse_args(&b->o, argc, argv) != 0)
		goto out;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		goto out;
	if (bench_init(b) != 0)
		goto out;
	b->rss_before = server_rss(b);
	b->self_before = rss_kib("self");
	if (b->o.server_pid > 0 && b->rss_before < 0) {
		fprintf(stderr, "pigeon-load: cannot read /proc/%ld/status\n",
		        b->o.server_pid);
		goto out;
	}
	if (b->o.sc == SC_PEPSET)
		b->verify_before = run_verify(b);
	b->t_launch = b->t_run = pgn_lat_now_ns();
	cpu_mark(b);
	launch_more(b);
	progress(b);
	if (event_base_dispatch(b->base) < 0) {
		fprintf(stderr, "pigeon-load: event loop failed\n");
		goto out;
	}
	if (b->failed > 0 && b->exit_code == 0)
		b->exit_code = 1;
	if (b->failed > 0 || b->dropped > 0) {
		fprintf(stderr, "pigeon-load: failures:");
		for (int i = 0; i < NFAIL; i++)
			if (b->fails[i] > 0)
				fprintf(stderr, " %s=%ld", fail_names[i],
				        b->fails[i]);
		fprintf(stderr, "\n");
	}
	(void)keys_save(b);
	rc = b->exit_code;
out:
	bench_free(b);
	free(b);
	return rc;
}
