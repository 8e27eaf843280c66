/* Logging: one call that checks the level first, one line per event.
 * Never log passwords, SASL data, tokens or message bodies. */
#ifndef PIGEON_LOG_H
#define PIGEON_LOG_H

enum pgn_log_level {
	PGN_LOG_ERROR = 0,
	PGN_LOG_WARN = 1,
	PGN_LOG_INFO = 2,
	PGN_LOG_DEBUG = 3,
};

/* Current threshold; read by the pgn_log() macro before formatting. */
extern int pgn_log_threshold;

/* Sets the threshold and the destination.  path NULL or "-" means stderr.
 * Returns 0 or -errno. */
int pgn_log_open(const char *path, enum pgn_log_level level);
void pgn_log_close(void);
/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int pgn_log_level_parse(const char *name);

void pgn_log_write(enum pgn_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define pgn_log(level, ...)                                                    \
	do {                                                                   \
		if ((int)(level) <= pgn_log_threshold)                         \
			pgn_log_write((level), __VA_ARGS__);                   \
	} while (0)

#endif
