/* pigeon.yml: parsed once with libyaml into plain structs.  Errors name
 * file:line and what is wrong. */
#ifndef PIGEON_CONFIG_H
#define PIGEON_CONFIG_H

#include <stddef.h>

enum pgn_listen_kind {
	PGN_LISTEN_C2S = 0,     /* module: c2s (STARTTLS) */
	PGN_LISTEN_C2S_TLS,     /* module: c2s_tls (XEP-0368 direct TLS) */
	PGN_LISTEN_COMPONENT,   /* module: component (XEP-0114) */
};

struct pgn_cfg_listen {
	enum pgn_listen_kind kind;
	char *ip;               /* default "127.0.0.1"? no: "::" ; see doc */
	int port;
	int starttls_required;  /* c2s only; default 1 */
	int line;               /* where it was defined, for messages */
};

struct pgn_cfg_component {
	char *domain;           /* prepared with nameprep */
	char *secret;
	int line;
};

/* One option of a module: a scalar, kept as text; or a sequence of
 * scalars (list set), kept as its items joined with newlines, for a
 * PGN_OPT_LIST option (src/core/modopt.c refuses it for other types). */
struct pgn_cfg_opt {
	char *key;
	char *value;
	int line;               /* of the key, for messages */
	int list;               /* written as a YAML sequence */
};

struct pgn_cfg_module {
	char *name;             /* "mod_ping" */
	struct pgn_cfg_opt *opts;
	size_t nopts;
	int line;
};

struct pgn_cfg_host {
	char *name;             /* prepared with nameprep */
	struct pgn_cfg_module *modules; /* the global list merged with host_config */
	size_t nmodules;
};

struct pgn_cfg_limits {
	size_t max_stanza_size;     /* bytes; default 262144 */
	unsigned max_depth;         /* default 32 */
	unsigned max_attrs;         /* default 64 */
	unsigned max_children;      /* default 4096 */
	unsigned negotiation_timeout; /* seconds; default 30 */
	unsigned idle_timeout;      /* seconds without any byte; default 600 */
	unsigned keepalive_interval; /* seconds between whitespace pings; default 120 */
	unsigned auth_fail_delay_ms; /* base delay after a SASL failure per IP; default 1000 */
	unsigned max_sessions_per_user; /* default 100 */
	unsigned ping_interval;     /* XEP-0199 ping after this many idle seconds; 0 off; default 300 */
	unsigned ping_timeout;      /* seconds to answer it; default 60 */
	unsigned resume_timeout;    /* XEP-0198 hibernation, seconds; 0 no resumption; default 300 */
	unsigned max_unacked;       /* stanzas queued for a client's ack; default 5000 */
	unsigned max_connections_per_ip; /* c2s + component, per IPv4 address or IPv6 /64; 0 none; default 100 */
	unsigned max_connections;   /* in all; 0 (default): the descriptor limit less a reserve */
	size_t max_unacked_bytes;   /* the same in bytes per session; default 8 MiB */
	size_t max_unacked_bytes_per_account; /* summed over its sessions; default 32 MiB */
};

struct pgn_config {
	char *path;                 /* the file it was read from */
	struct pgn_cfg_host *hosts;
	size_t nhosts;
	struct pgn_cfg_listen *listen;
	size_t nlisten;
	char **certfiles;           /* PEM files: certificate chain + key */
	size_t ncertfiles;
	struct pgn_cfg_component *components;
	size_t ncomponents;
	char *storage_driver;       /* "sqlite" (default) or "pgsql" */
	char *storage_path;         /* sqlite file; default "pigeon.db" beside the config */
	char *storage_conninfo;     /* pgsql */
	unsigned storage_outage_hold; /* s a request waits for a store that is down; default 30 */
	struct pgn_cfg_limits limits;
	char *log_level;            /* default "info" */
	char *log_file;             /* default NULL = stderr */
	char *ctl_socket;           /* default "pigeon.sock" beside the config */
	char *module_path;          /* default PKGLIBDIR (installed modules) */
	char *schema_dir;           /* default PKGDATADIR "/schemas" */
	char *pid_file;             /* optional */
};

/* Reads path.  On success *out is set (free with pgn_config_free) and 0 is
 * returned; on failure err holds "FILE:LINE: message" and -EINVAL (or
 * -errno when the file cannot be read) is returned. */
int pgn_config_load(const char *path, struct pgn_config **out, char *err,
		    size_t errlen);
void pgn_config_free(struct pgn_config *cfg);
/* The host config for name, or NULL. */
const struct pgn_cfg_host *pgn_config_host(const struct pgn_config *cfg,
					   const char *name);
/* Option value of a module or NULL. */
const char *pgn_cfg_module_opt(const struct pgn_cfg_module *mod,
			       const char *key);

#endif
