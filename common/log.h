/* common/log.h — one structured (logfmt) line per event, written with one write(2).
 * Owns: formatting, quoting and the level filter. Callers never pass secrets;
 * URLs go through cfg_redact_url() first. Thread-safe: each line is built in a
 * private buffer. */
#ifndef SW_COMMON_LOG_H
#define SW_COMMON_LOG_H
#include <stddef.h>
#include <stdint.h>

typedef enum log_level { SW_LOG_DEBUG, SW_LOG_INFO, SW_LOG_WARN, SW_LOG_ERROR } log_level;

typedef struct log_line {
    char buf[2048];   /* the line being built; cut (with "…") when too long */
    size_t len;       /* bytes used */
    int skip;         /* 1 when filtered by level: calls are no-ops */
} log_line;

void log_init(log_level min, int fd);              /* default: SW_LOG_INFO on fd 2 */
int log_parse_level(const char *s, log_level *out); /* 0 ok, -1 unknown name */
void log_begin(log_line *l, log_level lvl, const char *msg); /* ts, level, msg */
void log_str(log_line *l, const char *key, const char *val); /* quoted if needed; NULL skipped */
void log_int(log_line *l, const char *key, int64_t val);
void log_end(log_line *l);                         /* newline + write */

/* One-shot convenience: log_msg(SW_LOG_WARN, "redis_reconnect", "reason", s, NULL). */
void log_msg(log_level lvl, const char *msg, ...);

#endif
