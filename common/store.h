/* common/store.h — the snapshot store of docs/store.md: put, get, head, delete, list.
 * Owns: the one interface every caller codes against, key validation, the
 * whole-object sha256 and its KEY.sha256 sidecar, and dispatch by URL to one
 * backend (store_file.c for file:///ROOT, store_s3.c for s3://BUCKET[/PREFIX]).
 * Does not own: archives (arc_), snapshot rows (db_), paths of jobs (they pass
 * keys such as "public/snapshots/<session>/<id>.tar.gz").
 * One store per executor thread: it keeps connections for reuse and is not
 * thread-safe. docs/store.md describes the formats, retries and errors. */
#ifndef SW_COMMON_STORE_H
#define SW_COMMON_STORE_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/cfg.h"
#include "common/err.h"

#define STORE_KEY_MAX 1024           /* bytes, without the ".sha256" suffix */
#define STORE_SIDECAR_SUFFIX ".sha256"

typedef struct store store;                 /* one per executor thread; reuses connections */
typedef struct store_info {
    int64_t size_bytes;                     /* -1 when unknown */
    char sha256[65];                        /* lowercase hex; "" when unknown */
    bool adopted;                           /* put: KEY existed, this is the existing object */
} store_info;
typedef struct store_writer store_writer;   /* push-style upload */
typedef struct store_reader store_reader;   /* pull-style download */

/* Open the store named by c->store_url (file:///ROOT or s3://[BUCKET][/PREFIX],
 * bucket defaulting to c->s3_bucket). Returns an owned store (free with
 * store_close()), or NULL with err: SW_E_STORAGE non-retryable for a bad URL,
 * missing bucket or missing credentials.
 * 'c' is only read during the call. */
store *store_open(const cfg *c, sw_err *err);
void store_close(store *s);                 /* NULL-safe; aborts nothing still open */
/* Borrowed cancel flag (may be NULL): when it reads non-zero, retries stop and
 * transfers in progress fail with SW_E_TIMEOUT. Valid until reset or close. */
void store_set_cancel(store *s, const atomic_int *cancel);
const char *store_describe(const store *s); /* "s3://bucket" / "file:///root"; borrowed */

/* 0 when 'key' is a valid object key: relative, no leading '/', no empty, "." or
 * ".." segment, no control characters, valid UTF-8, at most STORE_KEY_MAX bytes,
 * not ending in ".sha256", no segment starting with ".swtmp-"; else -1 with
 * SW_E_INVALID_PAYLOAD. Every function below validates its key this way. */
int store_key_check(const char *key, sw_err *err);

/* ---- puts are write-once (docs/store.md "Write-once objects") ----------------
 * An object, once published, is never replaced: the first commit of KEY wins. A
 * commit that finds KEY already there discards its own bytes and ADOPTS the
 * existing object: it succeeds with *out describing what is stored (size from the
 * backend, sha256 from KEY.sha256, else computed by reading the object, then
 * written to KEY.sha256) and out->adopted = true. So what a put returns always
 * matches the stored bytes, whoever wrote them. To write new bytes under a key,
 * store_delete() it first.
 *
 * Begin an upload to 'key'. Returns an owned writer ended by exactly one of
 * store_put_commit() or store_put_abort(); NULL with err on a bad key or a
 * failure to start. Nothing is visible until commit succeeds. */
store_writer *store_put_begin(store *s, const char *key, sw_err *err);
/* Append n bytes. 0, or -1 with err (SW_E_STORAGE, retryable unless
 * authorization); after -1 only store_put_abort() is allowed. */
int store_put_write(store_writer *w, const void *buf, size_t n, sw_err *err);
/* Publish the object unless KEY exists (then adopt it, see above), then write
 * KEY.sha256. Always frees w. 0 with *out (may be NULL) filled, or -1 with err;
 * on -1 the object may be absent or another writer's, never a partial one. */
int store_put_commit(store_writer *w, store_info *out, sw_err *err);
void store_put_abort(store_writer *w);      /* frees w; nothing becomes visible; NULL-safe */

/* ---- known-length upload ---------------------------------------------------
 * A pull source of exactly 'size' bytes. read: >0 bytes, 0 at the end, -1 with
 * err. rewind: start again from the first byte (0, or -1 with err); NULL when the
 * source cannot (a pipe): a failed attempt after bytes were read is then not
 * retried (SW_E_STORAGE, retryable). */
typedef struct store_source {
    ssize_t (*read)(void *arg, void *buf, size_t n, sw_err *err);
    int (*rewind)(void *arg, sw_err *err);
    void *arg;
} store_source;
#define STORE_SINGLE_PUT_MAX ((int64_t)5 * 1024 * 1024 * 1024)   /* S3's single-PUT limit */

/* Upload exactly 'size' bytes pulled from src to 'key' unless it exists (then
 * adopt it, as store_put_commit), then KEY.sha256. S3 sends one streaming PUT with
 * Content-Length = size up to STORE_SINGLE_PUT_MAX (multipart above); retries
 * restart from the first byte through src->rewind. If src ends before 'size'
 * bytes or has more, fails with SW_E_INVALID_PAYLOAD (non-retryable) and nothing
 * becomes visible. 0 with *out (may be NULL) filled, or -1 with err, as commit. */
int store_put_sized(store *s, const char *key, int64_t size, const store_source *src,
                    store_info *out, sw_err *err);
/* Upload what fd holds from its current offset on. A regular file goes through
 * store_put_sized() (size from fstat, read with pread, so retries rewind);
 * anything else (pipe, socket, tty) streams to EOF through store_put_begin().
 * fd's offset is left unspecified. 0 or -1 with err as store_put_sized(). */
int store_put_fd(store *s, const char *key, int fd, store_info *out, sw_err *err);

/* Open 'key' for streaming. Returns an owned reader (free with store_get_close())
 * with *info_out (may be NULL) filled: size from the object, sha256 from
 * KEY.sha256 ("" when there is none). NULL with err: SW_E_SNAPSHOT_NOT_FOUND on
 * 404/missing, SW_E_STORAGE otherwise. */
store_reader *store_get_open(store *s, const char *key, store_info *info_out, sw_err *err);
/* Read up to n bytes: >0 bytes, 0 at the end once the size and the sha256 are
 * verified, -1 with err. A sha256 mismatch is SW_E_STORAGE non-retryable (the
 * stored object is corrupt); a short object or lost connection beyond the retry
 * budget is SW_E_STORAGE retryable. Dropped connections are resumed with Range. */
ssize_t store_get_read(store_reader *r, void *buf, size_t n, sw_err *err);
/* Read and discard the rest, verifying as store_get_read(); 0 or -1 with err.
 * For consumers (libarchive) that may stop before the end of the object. */
int store_get_drain(store_reader *r, sw_err *err);
void store_get_close(store_reader *r);      /* NULL-safe; may stop a transfer midway */

/* Size and sha256 of 'key' (sha256 "" without sidecar). 0, or -1 with err:
 * SW_E_SNAPSHOT_NOT_FOUND when missing, SW_E_STORAGE otherwise. */
int store_head(store *s, const char *key, store_info *out, sw_err *err);
/* Delete KEY.sha256, then 'key' (never a sidecar without its object). A missing
 * key is success. 0 or -1 with err. */
int store_delete(store *s, const char *key, sw_err *err);
/* Call cb for every object whose key starts with 'prefix' ("" or NULL = all),
 * sidecars and temp files left out; keys are borrowed for the call. S3 lists in
 * byte order; file:// lists depth-first, each folder sorted. cb returns 0 to go
 * on, non-zero to stop (store_list then returns 0). 0 or -1 with err. */
int store_list(store *s, const char *prefix, int (*cb)(void *arg, const char *key, int64_t size),
               void *arg, sw_err *err);
/* store_list with each object's last modification time (unix seconds, -1 when unknown):
 * file:// the file's st_mtime, s3:// the listing's LastModified. What `store gc` ages
 * orphan snapshot objects by (docs/store.md "Orphan snapshot objects"). */
int store_list_mtime(store *s, const char *prefix,
                     int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime), void *arg,
                     sw_err *err);

/* ---- orphans -----------------------------------------------------------------
 * What a killed or stalled writer left behind: file:// temp files (".swtmp-*"),
 * S3 multipart uploads never completed nor aborted. Never a published object. */
typedef struct store_gc_stats {
    int64_t seen;                           /* temp files / uploads looked at */
    int64_t removed;                        /* removed / aborted */
    int64_t kept;                           /* younger than the grace period */
    int64_t removed_bytes;                  /* file:// only */
    bool truncated;                         /* the time budget ran out first */
} store_gc_stats;
/* Remove the orphans under 'prefix' ("" = the whole store) older than grace_s
 * (file mtime / upload initiation time), spending at most budget_ms (then
 * out->truncated). 0 with *out filled, or -1 with err (SW_E_STORAGE). */
int store_gc(store *s, const char *prefix, int64_t grace_s, int64_t budget_ms,
             store_gc_stats *out, sw_err *err);

/* ---- backend interface (store_file.c, store_s3.c, fakes in tests) ----------
 * Backends store raw bytes under already-validated keys; the sidecar, hashing
 * and verification live in store.c. Each op fills err at the failure site with
 * the codes documented above. A writer/reader handle is the backend's own. */
typedef struct store_ops {
    const char *scheme;                                  /* "file", "s3", "fake" */
    void (*close)(void *impl);
    void *(*put_begin)(void *impl, const char *key, sw_err *err);
    int (*put_write)(void *w, const void *buf, size_t n, sw_err *err);
    int (*put_commit)(void *w, sw_err *err);            /* always frees w */
    void (*put_abort)(void *w);                         /* frees w */
    /* put_commit and put_sized publish only when KEY does not exist yet: they
     * return 1 when it did (nothing published, the attempt's staging data
     * discarded), 0 when published, -1 with err. A backend returning only 0/-1
     * replaces (fakes). */
    /* *size_out: object size or -1 when unknown */
    void *(*get_open)(void *impl, const char *key, int64_t *size_out, sw_err *err);
    ssize_t (*get_read)(void *r, void *buf, size_t n, sw_err *err);
    void (*get_close)(void *r);
    int (*head)(void *impl, const char *key, int64_t *size_out, sw_err *err);
    int (*del)(void *impl, const char *key, sw_err *err);    /* missing is success */
    /* raw listing: sidecars included; cb as in store_list_mtime */
    int (*list)(void *impl, const char *prefix,
                int (*cb)(void *arg, const char *key, int64_t size, int64_t mtime), void *arg,
                sw_err *err);
    void (*set_cancel)(void *impl, const atomic_int *cancel);   /* may be NULL */
    /* Optional known-length put (NULL = store.c streams src through put_begin):
     * publish 'key' only if exactly 'size' bytes came from src, else fail with
     * SW_E_INVALID_PAYLOAD and publish nothing. Used up to put_sized_max bytes. */
    int (*put_sized)(void *impl, const char *key, int64_t size, const store_source *src,
                     sw_err *err);
    int64_t put_sized_max;
    /* Optional (NULL = nothing to sweep): remove orphans, as store_gc(); stop
     * (out->truncated) once CLOCK_MONOTONIC ms pass deadline_ms. */
    int (*gc)(void *impl, const char *prefix, int64_t grace_s, int64_t deadline_ms,
              store_gc_stats *out, sw_err *err);
} store_ops;

/* Wrap a backend: takes ownership of 'impl' (released through ops->close).
 * 'desc' is copied and used in messages. Never NULL. */
store *store_new(const store_ops *ops, void *impl, const char *desc);

/* Backend constructors used by store_open(). */
void *store_file_new(const char *root, sw_err *err);   /* root: absolute folder */
extern const store_ops store_file_ops;
void *store_s3_new(const cfg *c, const char *bucket, const char *prefix, sw_err *err);
extern const store_ops store_s3_ops;

/* ---- S3 helpers exposed for unit tests ---------------------------------- */
/* Append 's' percent-encoded for SigV4 (unreserved A-Za-z0-9-._~ kept, '/' kept
 * when keep_slash, everything else %XX uppercase) to out (size n). Returns the
 * length written, or -1 when it does not fit. */
int store_s3_uri_encode(const char *s, bool keep_slash, char *out, size_t n);
/* The request URL for 'key' (may be NULL = bucket) and an already canonical
 * query (may be NULL): path-style under 'endpoint' when given, else
 * virtual-host https://BUCKET.s3.REGION.amazonaws.com. Caller frees. */
char *store_s3_url(const char *endpoint, const char *region, const char *bucket,
                   const char *key, const char *query);
/* Largest object a multipart upload with this part size can hold (10000 parts). */
int64_t store_s3_max_object_bytes(int64_t part_size);
/* Parse an ISO-8601 UTC time as S3 writes it ("2024-05-01T12:00:00.000Z") into
 * seconds since the epoch; -1 when unparseable. */
int64_t store_s3_parse_time(const char *iso);
/* Backoff before attempt 'attempt' (1 = first retry): equal jitter over
 * min(cap_ms, base_ms << (attempt-1)); 'rnd' is any 64-bit random value. */
int64_t store_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd);
/* The text of the first <tag>…</tag> at or after *pos in xml[0..n), XML entities
 * decoded, as an owned string (caller frees); *pos moves past it. NULL when absent. */
char *store_xml_take(const char *xml, size_t n, size_t *pos, const char *tag);

#endif
