/* common/arc.h — snapshot archives: stream a session out as tar.gz, extract one safely.
 * Owns: the member layout (outputs/..., attachments/...), the extraction safety rules
 * and limits, and the tree helpers the restore path needs (rmtree, copytree).
 * Does not own: where the bytes go or come from (the store, through sink/source
 * callbacks), staging folders and swaps (jobs/), or any retry policy.
 * Every function is thread-safe: no chdir, no umask, no process-wide locale.
 * Layout, rules and the reasons behind them: docs/archive.md. */
#ifndef SW_COMMON_ARC_H
#define SW_COMMON_ARC_H
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
 * of 'ex' (common/excl.h; NULL = none); a matching folder is left out with its subtree. */
int arc_write_session_ex(int sfd, const char *what, int gzip_level, const excl *ex,
                         arc_sink_fn sink, void *arg, arc_stats *st, sw_err *err);

/* Extract a tar, tar.gz or tar.zst read from 'source' into the existing empty 'dest_dir'.
 * 'lim' and 'st' may be NULL. 0, or -1 with SW_E_UNSAFE_ARCHIVE (refused or corrupt),
 * SW_E_ARCHIVE_TOO_LARGE, SW_E_BACKEND (local I/O, retryable), SW_E_INTERNAL (setup, or
 * libarchive cannot be loaded), or the source's error unchanged. On error dest_dir holds
 * a partial tree: the caller removes it (arc_rmtree). Decompression runs on a second
 * thread; 'source' is called from it (never from two threads at once). */
int arc_extract(arc_source_fn source, void *arg, const char *dest_dir, const arc_limits *lim,
                arc_stats *st, sw_err *err);
/* The same into the open, empty directory 'dest_fd' (borrowed; 'what' names it in messages). */
int arc_extract_at(arc_source_fn source, void *arg, int dest_fd, const char *what,
                   const arc_limits *lim, arc_stats *st, sw_err *err);

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
