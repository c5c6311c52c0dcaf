/* common/arc.h — snapshot archives: stream a session out as tar.gz, extract one safely.
 * Owns: the member layout (outputs/..., attachments/...), the extraction safety rules
 * and limits, and the tree helpers the restore path needs (rmtree, copytree).
 * Does not own: where the bytes go or come from (the store, through sink/source
 * callbacks), staging folders and swaps (jobs/), or any retry policy.
 * Every function is thread-safe: no chdir, no umask, no process-wide locale.
 * Layout, rules and the reasons behind them: docs/archive.md. */
#ifndef SW_COMMON_ARC_H
#define SW_COMMON_ARC_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "common/excl.h"

/* Receives the archive bytes in order; returns 0, or -1 with 'err' filled. */
typedef int (*arc_sink_fn)(void *arg, const void *buf, size_t n, sw_err *err);
/* Fills up to n bytes of 'buf'; returns >0 bytes, 0 at end of stream, -1 with 'err' filled. */
typedef ssize_t (*arc_source_fn)(void *arg, void *buf, size_t n, sw_err *err);

typedef struct arc_stats {
    int64_t entries;   /* archive members written/extracted (dirs, files, links) */
    int64_t bytes;     /* uncompressed regular-file bytes */
} arc_stats;

typedef struct arc_limits {
    int64_t max_bytes;   /* total declared regular-file bytes; <= 0 = unlimited */
    int64_t max_entries; /* total members; <= 0 = unlimited */
} arc_limits;

/* A running member count that another thread may read while an arc_ function works
 * (progress events). A function given one stores 0 when it starts counting, then its count
 * so far after every member (counted as arc_stats.entries counts them); -1 until then. */
typedef struct arc_live {
    _Atomic int64_t entries;
} arc_live;
void arc_live_init(arc_live *l);          /* entries = -1: not counted (yet) */
int64_t arc_live_get(arc_live *l);        /* the count so far, -1 = none; any thread */

#define ARC_MAX_DEPTH 256      /* deepest directory nesting any arc_ function walks or creates */
#define ARC_MAX_PATH 4096      /* longest member name (bytes) */

/* Stream session_dir/outputs and (when non-empty) session_dir/attachments as a gzip tar
 * (level 1..9) into 'sink'. 'st' may be NULL. 0, or -1 with SW_E_WORKSPACE_MISSING (no
 * outputs/), SW_E_BACKEND (I/O, retryable), SW_E_INTERNAL, or the sink's error unchanged. */
int arc_write_session(const char *session_dir, int gzip_level, arc_sink_fn sink, void *arg,
                      arc_stats *st, sw_err *err);
/* The same from an open session directory 'sfd' (borrowed; 'what' names it in messages):
 * the walk starts at that folder, so a caller that opened it without following symlinks
 * never archives a tree outside it. */
int arc_write_session_at(int sfd, const char *what, int gzip_level, arc_sink_fn sink, void *arg,
                         arc_stats *st, sw_err *err);

/* The same, leaving out every member below outputs/ or attachments/ whose name matches one
 * of 'ex' (common/excl.h; NULL = none); a matching folder is left out with its subtree.
 * 'live' (may be NULL) follows the members written. */
int arc_write_session_ex(int sfd, const char *what, int gzip_level, const excl *ex,
                         arc_live *live, arc_sink_fn sink, void *arg, arc_stats *st, sw_err *err);

/* Extract a tar, tar.gz or tar.zst read from 'source' into the existing empty 'dest_dir'.
 * 'lim' and 'st' may be NULL. 0, or -1 with SW_E_UNSAFE_ARCHIVE (refused or corrupt),
 * SW_E_ARCHIVE_TOO_LARGE, SW_E_BACKEND (local I/O, retryable), SW_E_INTERNAL (setup, or
 * libarchive cannot be loaded), or the source's error unchanged. On error dest_dir holds
 * a partial tree: the caller removes it (arc_rmtree). Decompression runs on a second
 * thread; 'source' is called from it (never from two threads at once). */
int arc_extract(arc_source_fn source, void *arg, const char *dest_dir, const arc_limits *lim,
                arc_stats *st, sw_err *err);
/* The same into the open, empty directory 'dest_fd' (borrowed; 'what' names it in messages);
 * 'live' (may be NULL) follows the members extracted. */
int arc_extract_at(arc_source_fn source, void *arg, int dest_fd, const char *what,
                   const arc_limits *lim, arc_live *live, arc_stats *st, sw_err *err);

/* Archive the folder 'dir' (followed when it is a symlink) as members 'as/', 'as/...' in a
 * gzip tar into 'sink': the same walk and order as arc_write_session (an outputs template
 * sent to a pod as "outputs"). 'st' may be NULL. 0, or -1 with SW_E_BACKEND (I/O, or 'dir'
 * missing), SW_E_INTERNAL, or the sink's error unchanged. */
int arc_write_tree(const char *dir, const char *as, int gzip_level, arc_sink_fn sink, void *arg,
                   arc_stats *st, sw_err *err);

/* ---- arc_check.c: the extraction rules without extracting -------------------------- */

typedef enum arc_compression {
    ARC_COMP_NONE,     /* a plain tar */
    ARC_COMP_GZIP,
    ARC_COMP_ZSTD,
} arc_compression;

typedef struct arc_check_info {
    arc_stats st;            /* counted exactly as arc_extract counts them */
    arc_compression comp;
    bool special_bits;       /* a member carries setuid/setgid/sticky (arc_extract strips
                                them; an extractor that keeps them must strip them too) */
} arc_check_info;

/* Read the whole tar, tar.gz or tar.zst from 'source' and apply every rule and limit of
 * arc_extract to every member without writing anything: normalized names only under
 * outputs/ and attachments/, no absolute or '..' name, symlink targets that stay inside,
 * hard links only to an earlier regular-file member, nothing below a symlink or file
 * member, no name taken twice (directories excepted), no devices/FIFOs/sockets, the size
 * and entry limits. An archive arc_check accepts is one arc_extract accepts into an empty
 * folder. The whole stream is read and must inflate cleanly to its end.
 * 'lim' and 'live' (the members checked so far) may be NULL; 'out' is filled on 0. 0, or -1
 * with SW_E_UNSAFE_ARCHIVE, SW_E_ARCHIVE_TOO_LARGE, SW_E_INTERNAL, or the source's error
 * unchanged. Memory grows with the number of distinct names (bounded by lim->max_entries
 * and ARC_MAX_PATH). */
int arc_check(arc_source_fn source, void *arg, const arc_limits *lim, arc_live *live,
              arc_check_info *out, sw_err *err);

/* Count a tar.gz that passes by in pieces (a snapshot streamed from elsewhere): members and
 * regular-file bytes as arc_write_session counts them, no rules applied. A second thread
 * reads what arc_counter_feed() hands over through a pipe; feed blocks only while that
 * thread is behind. Caller ends with arc_counter_finish() or arc_counter_abort(). 'live'
 * (borrowed, may be NULL) follows the members that thread has counted so far: it lags
 * behind what was fed by at most the pipe's contents. */
typedef struct arc_counter arc_counter;
arc_counter *arc_counter_start(arc_live *live, sw_err *err);   /* NULL with SW_E_INTERNAL */
int arc_counter_feed(arc_counter *c, const void *buf, size_t n, sw_err *err);
/* End of stream: 0 with *st filled when the bytes were one complete, readable tar.gz (or
 * tar), else -1 with SW_E_BACKEND retryable ("the pod's archive is truncated or corrupt").
 * Frees c. */
int arc_counter_finish(arc_counter *c, arc_stats *st, sw_err *err);
void arc_counter_abort(arc_counter *c);          /* frees c; NULL-safe */

/* Remove 'path' and everything under it without following symlinks. Missing is success.
 * 0, or -1 with SW_E_BACKEND. */
int arc_rmtree(const char *path, sw_err *err);
/* Remove 'name' in directory 'dfd' the same way ('name' is one path component). */
int arc_rmtree_at(int dfd, const char *name, sw_err *err);

/* Copy the tree 'src' to 'dst' (which must not exist): dirs, regular files, symlinks as
 * symlinks, modes and mtimes; other file types are skipped. On failure 'dst' is removed.
 * 0, or -1 with SW_E_BACKEND. */
int arc_copytree(const char *src, const char *dst, sw_err *err);
/* The same with the destination 'name' (one component) created in directory 'dfd'. */
int arc_copytree_at(const char *src, int dfd, const char *name, sw_err *err);

#endif
