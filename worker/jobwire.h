/* worker/jobwire.h — the frames of the daemon <-> job process channel (docs/processes.md).
 * Owns: framing only: a 4-byte big-endian length, then that many bytes of one JSON object.
 * Blocking send (both sides) and blocking receive (the job process); the daemon reads
 * without blocking through jw_reader. */
#ifndef SW_WORKER_JOBWIRE_H
#define SW_WORKER_JOBWIRE_H
#include <jansson.h>
#include <stddef.h>

#define JW_MAX_FRAME (16 * 1024 * 1024)

/* Send one frame (retries EINTR and short writes). 0, or -1 (errno set). */
int jw_send(int fd, const json_t *msg);
/* Receive one frame, blocking. 1 with *msg (owned), 0 at end of file, -1 on error. */
int jw_recv(int fd, json_t **msg);

/* Incremental reader for a non-blocking socket. */
typedef struct jw_reader {
    char *buf;
    size_t len, cap;
    int eof;          /* the peer closed its end */
} jw_reader;
/* Read what is there (until EAGAIN or EOF). 0, or -1 on a read error. */
int jw_fill(jw_reader *r, int fd);
/* The next complete frame: 1 with *msg (owned), 0 when none is complete yet, -1 on a
 * malformed frame (bad length or not a JSON object). */
int jw_next(jw_reader *r, json_t **msg);
void jw_reader_free(jw_reader *r);

#endif
