/* common/metrics.c — counters and histograms, relaxed atomics only.
 *
 * Job types get a slot the first time they are seen (claimed with a compare-and-swap,
 * at most TYPES_MAX; later ones share the "other" slot), so a new job type needs no
 * edit here. Outcome words map onto a fixed list. Readers may see a histogram's count
 * and its buckets a few increments apart while a scrape races a job; Prometheus
 * tolerates that (each series is monotonic on its own). */
#include "common/metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TYPES_MAX 24
#define TYPE_NAME_MAX 32

const double metrics_bucket_s[METRICS_NBUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
    2.5,   5,      10,    30,   60,    120,  300, 600,  1800, 3600};

/* The `outcome` label of snapworker_jobs_total, one per metrics_outcome. */
static const char *const outcome_names[MO_COUNT] = {
    "succeeded", "failed", "dead", "rejected", "released", "deferred", "lease_lost",
    "cancelled", "abandoned", "other"};

typedef struct hist {
    _Atomic uint64_t bucket[METRICS_NBUCKETS]; /* not cumulative here; summed when rendered */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
} hist;

typedef struct type_slot {
    atomic_int state;               /* 0 free, 1 being claimed, 2 ready */
    char name[TYPE_NAME_MAX];
    _Atomic uint64_t outcomes[MO_COUNT];
    hist duration;
} type_slot;

static struct {
    type_slot types[TYPES_MAX + 1]; /* the last one is "other" */
    hist wait;
    _Atomic uint64_t counters[MC_COUNT];
    atomic_int inflight, redis_up, draining, pg_used, store_used;
    _Atomic int64_t tick_ms;
} M;

int64_t metrics_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void metrics_count(metric_counter c, uint64_t n)
{
    if (c >= 0 && c < MC_COUNT) atomic_fetch_add_explicit(&M.counters[c], n, memory_order_relaxed);
}

uint64_t metrics_counter_value(metric_counter c)
{
    return c >= 0 && c < MC_COUNT ? atomic_load_explicit(&M.counters[c], memory_order_relaxed) : 0;
}

static void observe(hist *h, uint64_t us)
{
    int i = 0;
    while (i < METRICS_NBUCKETS && (double)us > metrics_bucket_s[i] * 1e6) i++;
    if (i < METRICS_NBUCKETS) atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

static type_slot *slot_for(const char *type)
{
    if (!type || !*type) type = "unknown";
    for (int i = 0; i < TYPES_MAX; i++) {
        type_slot *s = &M.types[i];
        int st = atomic_load(&s->state);
        if (st == 0) {
            int expect = 0;
            if (atomic_compare_exchange_strong(&s->state, &expect, 1)) {
                snprintf(s->name, sizeof s->name, "%s", type);
                atomic_store(&s->state, 2);
                return s;
            }
            st = atomic_load(&s->state);
        }
        while (st == 1) st = atomic_load(&s->state); /* a few stores away */
        if (strncmp(s->name, type, TYPE_NAME_MAX - 1) == 0) return s;
    }
    type_slot *o = &M.types[TYPES_MAX];
    if (atomic_load(&o->state) != 2) {
        snprintf(o->name, sizeof o->name, "other");
        atomic_store(&o->state, 2);
    }
    return o;
}

void metrics_job_done(const char *type, metrics_outcome o, int64_t duration_ms)
{
    type_slot *s = slot_for(type);
    if (o < 0 || o >= MO_COUNT) o = MO_OTHER;
    atomic_fetch_add_explicit(&s->outcomes[o], 1, memory_order_relaxed);
    bool ran = o == MO_SUCCEEDED || o == MO_FAILED || o == MO_DEAD || o == MO_CANCELLED ||
               o == MO_LEASE_LOST;
    if (ran)
        observe(&s->duration, (uint64_t)(duration_ms > 0 ? duration_ms : 0) * 1000);
}

void metrics_job_started(const char *entry_id)
{
    if (!entry_id) return;
    char *end = NULL;
    long long ms = strtoll(entry_id, &end, 10);
    if (!end || *end != '-' || ms <= 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    int64_t d = now_us - (int64_t)ms * 1000;
    observe(&M.wait, (uint64_t)(d > 0 ? d : 0));
}

void metrics_job_result(const char *type, const json_t *result)
{
    if (!type || !result) return;
    if (!strcmp(type, "snapshot")) {
        json_int_t n = json_integer_value(json_object_get(result, "size_bytes"));
        if (n > 0) metrics_count(MC_BYTES_SNAPSHOT, (uint64_t)n);
    } else if (!strcmp(type, "restore")) {
        json_int_t n = json_integer_value(json_object_get(result, "bytes"));
        if (n > 0) metrics_count(MC_BYTES_RESTORE, (uint64_t)n);
    }
}

void metrics_loop_tick(int inflight, int redis_up, int draining)
{
    atomic_store(&M.inflight, inflight);
    atomic_store(&M.redis_up, redis_up);
    atomic_store(&M.draining, draining);
    atomic_store(&M.tick_ms, metrics_mono_ms());
}

void metrics_pg_connecting(int replacing)
{
    atomic_store(&M.pg_used, 1);
    if (replacing) metrics_count(MC_PG_RECONNECTS, 1);
}

void metrics_mark_store_used(void) { atomic_store(&M.store_used, 1); }

void metrics_loop_read(metrics_loop *out)
{
    out->inflight = atomic_load(&M.inflight);
    out->redis_up = atomic_load(&M.redis_up);
    out->draining = atomic_load(&M.draining);
    out->tick_ms = atomic_load(&M.tick_ms);
    out->pg_used = atomic_load(&M.pg_used);
    out->store_used = atomic_load(&M.store_used);
}

void metrics_label(const char *v, char *out, size_t n)
{
    size_t j = 0;
    for (; v && *v && j + 3 < n; v++) {
        if (*v == '\\' || *v == '"') out[j++] = '\\', out[j++] = *v;
        else if (*v == '\n') out[j++] = '\\', out[j++] = 'n';
        else out[j++] = *v;
    }
    out[j] = '\0';
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_render(FILE *f, const char *name, const char *labels, const hist *h)
{
    uint64_t cum = 0;
    char le[32];
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        snprintf(le, sizeof le, "%g", metrics_bucket_s[i]);
        fprintf(f, "%s_bucket{%s,le=\"%s\"} %llu\n", name, labels, le, (unsigned long long)cum);
    }
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    if (count < cum) count = cum; /* a racing observe: keep +Inf >= every bucket */
    fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)count);
    fprintf(f, "%s_sum{%s} %.6f\n", name, labels,
            (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)count);
}

void metrics_render(FILE *f, const char *queue, const char *version)
{
    char q[160], t[80], lab[300];
    metrics_label(queue, q, sizeof q);
    int ntypes = 0;
    type_slot *ready[TYPES_MAX + 1];
    for (int i = 0; i <= TYPES_MAX; i++)
        if (atomic_load(&M.types[i].state) == 2) ready[ntypes++] = &M.types[i];

    head(f, "snapworker_jobs_total", "counter",
         "Jobs ended by this process, by type and outcome (failed = will be retried).");
    for (int i = 0; i < ntypes; i++) {
        metrics_label(ready[i]->name, t, sizeof t);
        for (int o = 0; o < MO_COUNT; o++)
            fprintf(f, "snapworker_jobs_total{queue=\"%s\",type=\"%s\",outcome=\"%s\"} %llu\n", q,
                    t, outcome_names[o],
                    (unsigned long long)atomic_load_explicit(&ready[i]->outcomes[o],
                                                             memory_order_relaxed));
    }
    head(f, "snapworker_job_retries_total", "counter",
         "Attempts that failed with a retryable error and were scheduled again.");
    for (int i = 0; i < ntypes; i++) {
        metrics_label(ready[i]->name, t, sizeof t);
        fprintf(f, "snapworker_job_retries_total{queue=\"%s\",type=\"%s\"} %llu\n", q, t,
                (unsigned long long)atomic_load(&ready[i]->outcomes[MO_FAILED]));
    }
    head(f, "snapworker_jobs_cancelled_total", "counter", "Jobs that ended cancelled.");
    for (int i = 0; i < ntypes; i++) {
        metrics_label(ready[i]->name, t, sizeof t);
        fprintf(f, "snapworker_jobs_cancelled_total{queue=\"%s\",type=\"%s\"} %llu\n", q, t,
                (unsigned long long)atomic_load(&ready[i]->outcomes[MO_CANCELLED]));
    }
    head(f, "snapworker_job_duration_seconds", "histogram",
         "Run time of one attempt, from an executor taking it to its outcome.");
    for (int i = 0; i < ntypes; i++) {
        metrics_label(ready[i]->name, t, sizeof t);
        snprintf(lab, sizeof lab, "queue=\"%s\",type=\"%s\"", q, t);
        hist_render(f, "snapworker_job_duration_seconds", lab, &ready[i]->duration);
    }
    head(f, "snapworker_queue_wait_seconds", "histogram",
         "Time from a job entering the stream (enqueue or retry due) to an executor starting it.");
    snprintf(lab, sizeof lab, "queue=\"%s\"", q);
    hist_render(f, "snapworker_queue_wait_seconds", lab, &M.wait);

    metrics_loop lp;
    metrics_loop_read(&lp);
    head(f, "snapworker_inflight", "gauge", "Jobs held by this process (running or read ahead).");
    fprintf(f, "snapworker_inflight{queue=\"%s\"} %d\n", q, lp.inflight);
    head(f, "snapworker_redis_up", "gauge", "1 while both broker connections are ready.");
    fprintf(f, "snapworker_redis_up %d\n", lp.redis_up);
    head(f, "snapworker_draining", "gauge", "1 after SIGTERM while running jobs finish.");
    fprintf(f, "snapworker_draining %d\n", lp.draining);

    head(f, "snapworker_reclaimed_total", "counter",
         "Entries taken over from consumers idle past the lease (crashed or frozen workers).");
    fprintf(f, "snapworker_reclaimed_total{queue=\"%s\"} %llu\n", q,
            (unsigned long long)atomic_load(&M.counters[MC_RECLAIMED]));
    head(f, "snapworker_bytes_total", "counter",
         "Archive bytes moved by jobs: written by snapshots, extracted by restores.");
    fprintf(f, "snapworker_bytes_total{queue=\"%s\",direction=\"snapshot\"} %llu\n", q,
            (unsigned long long)atomic_load(&M.counters[MC_BYTES_SNAPSHOT]));
    fprintf(f, "snapworker_bytes_total{queue=\"%s\",direction=\"restore\"} %llu\n", q,
            (unsigned long long)atomic_load(&M.counters[MC_BYTES_RESTORE]));
    head(f, "snapworker_redis_reconnects_total", "counter",
         "Ready Redis connections lost (each is reconnected with backoff).");
    fprintf(f, "snapworker_redis_reconnects_total %llu\n",
            (unsigned long long)atomic_load(&M.counters[MC_REDIS_RECONNECTS]));
    head(f, "snapworker_postgres_reconnects_total", "counter",
         "PostgreSQL connections found dead and replaced (by the readiness probe and by job processes).");
    fprintf(f, "snapworker_postgres_reconnects_total %llu\n",
            (unsigned long long)atomic_load(&M.counters[MC_PG_RECONNECTS]));
    char v[64];
    metrics_label(version, v, sizeof v);
    head(f, "snapworker_build_info", "gauge", "Always 1; the version is in the label.");
    fprintf(f, "snapworker_build_info{version=\"%s\"} 1\n", v);
}
