/* worker/jobwire.c — frames of the job process channel (worker/jobwire.h). */
#include "worker/jobwire.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/xmalloc.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

int jw_send(int fd, const json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    if (!s) return -1;
    size_t n = strlen(s);
    if (n > JW_MAX_FRAME) {
        free(s);
        errno = EMSGSIZE;
        return -1;
    }
    char *f = xmalloc(n + 4);
    f[0] = (char)(n >> 24);
    f[1] = (char)(n >> 16);
    f[2] = (char)(n >> 8);
    f[3] = (char)n;
    memcpy(f + 4, s, n);
    free(s);
    int rc = write_all(fd, f, n + 4);
    free(f);
    return rc;
}

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static json_t *parse_obj(const char *p, size_t n)
{
    json_t *m = json_loadb(p, n, 0, NULL);
    if (m && !json_is_object(m)) {
        json_decref(m);
        m = NULL;
    }
    return m;
}

int jw_recv(int fd, json_t **msg)
{
    char h[4];
    int rc = read_all(fd, h, 4);
    if (rc <= 0) return rc;
    uint32_t n = be32(h);
    if (n > JW_MAX_FRAME) return -1;
    char *b = xmalloc(n ? n : 1);
    if (read_all(fd, b, n) != 1 && n > 0) {
        free(b);
        return -1;
    }
    *msg = parse_obj(b, n);
    free(b);
    return *msg ? 1 : -1;
}

int jw_fill(jw_reader *r, int fd)
{
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap ? r->cap * 2 : 131072;
            r->buf = xrealloc(r->buf, r->cap);
        }
        ssize_t n = read(fd, r->buf + r->len, r->cap - r->len);
        if (n > 0) {
            r->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            r->eof = 1;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -1;
    }
}

int jw_next(jw_reader *r, json_t **msg)
{
    if (r->len < 4) return 0;
    uint32_t n = be32(r->buf);
    if (n > JW_MAX_FRAME) return -1;
    if (r->len < 4 + (size_t)n) return 0;
    *msg = parse_obj(r->buf + 4, n);
    memmove(r->buf, r->buf + 4 + n, r->len - 4 - n);
    r->len -= 4 + (size_t)n;
    return *msg ? 1 : -1;
}

void jw_reader_free(jw_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof *r);
}
