/* common/log.c — logfmt lines: ts=… level=… msg=… key=value… */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static log_level min_level = SW_LOG_INFO;
static int log_fd = 2;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void log_init(log_level min, int fd)
{
    min_level = min;
    log_fd = fd;
}

int log_parse_level(const char *s, log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

static void put(log_line *l, const char *s, size_t n)
{
    size_t room = sizeof l->buf - 2 - l->len; /* keep space for '\n' */
    if (n > room) n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

void log_begin(log_line *l, log_level lvl, const char *msg)
{
    l->len = 0;
    l->skip = lvl < min_level;
    if (l->skip) return;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char head[64];
    int n = snprintf(head, sizeof head, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[lvl]);
    put(l, head, (size_t)n);
    log_str(l, "msg", msg);
}

static int needs_quote(const char *v)
{
    if (!*v) return 1;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f) return 1;
    return 0;
}

void log_str(log_line *l, const char *key, const char *val)
{
    if (l->skip || !val) return;
    put(l, " ", 1);
    put(l, key, strlen(key));
    put(l, "=", 1);
    if (!needs_quote(val)) {
        put(l, val, strlen(val));
        return;
    }
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)val; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p == '\n') {
            put(l, "\\n", 2);
        } else if (*p < ' ' || *p == 0x7f) {
            int n = snprintf(esc, sizeof esc, "\\x%02x", *p);
            put(l, esc, (size_t)n);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

void log_int(log_line *l, const char *key, int64_t val)
{
    if (l->skip) return;
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)val);
    log_str(l, key, num);
}

void log_end(log_line *l)
{
    if (l->skip) return;
    l->buf[l->len++] = '\n';
    const char *p = l->buf;
    size_t left = l->len;
    while (left > 0) {
        ssize_t w = write(log_fd, p, left);
        if (w <= 0) break;
        p += w;
        left -= (size_t)w;
    }
}

void log_msg(log_level lvl, const char *msg, ...)
{
    log_line l;
    log_begin(&l, lvl, msg);
    va_list ap;
    va_start(ap, msg);
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        log_str(&l, k, v);
    }
    va_end(ap);
    log_end(&l);
}
