/* Logging to stderr or a file, one line per event, level checked by the
 * pgn_log() macro before any formatting happens. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pigeon/log.h"

int pgn_log_threshold = PGN_LOG_INFO;

/* The one log destination of the process; written only at start-up and on
 * SIGHUP from the loop thread. */
static FILE *log_fp;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int
pgn_log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	if (strcmp(name, "warning") == 0)
		return PGN_LOG_WARN;
	return -1;
}

int
pgn_log_open(const char *path, enum pgn_log_level level)
{
	pgn_log_threshold = level;
	if (path == NULL || strcmp(path, "-") == 0) {
		pgn_log_close();
		return 0;
	}
	FILE *fp = fopen(path, "a");
	if (fp == NULL)
		return -errno;
	setvbuf(fp, NULL, _IOLBF, 0);
	pgn_log_close();
	log_fp = fp;
	return 0;
}

void
pgn_log_close(void)
{
	if (log_fp != NULL)
		fclose(log_fp);
	log_fp = NULL;
}

void
pgn_log_write(enum pgn_log_level level, const char *fmt, ...)
{
	FILE *fp = log_fp != NULL ? log_fp : stderr;
	char stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	flockfile(fp);
	fprintf(fp, "%s.%03ldZ %-5s ", stamp, ts.tv_nsec / 1000000L,
		level_names[level < 0 || level > 3 ? 0 : level]);
	va_start(ap, fmt);
	vfprintf(fp, fmt, ap);
	va_end(ap);
	fputc('\n', fp);
	funlockfile(fp);
}
