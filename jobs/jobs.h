/* jobs/jobs.h — the run functions of each job type, for the table in jobs/job.c. */
#ifndef SW_JOBS_JOBS_H
#define SW_JOBS_JOBS_H
#include <string.h>

#include "jobs/job.h"

int job_noop_run(job_ctx *ctx, json_t **result, sw_err *err);

#endif
