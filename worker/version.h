/* worker/version.h — the version `snapworker version` prints and
 * snapworker_build_info{version} reports. */
#ifndef SW_WORKER_VERSION_H
#define SW_WORKER_VERSION_H
#define SNAPWORKER_VERSION "0.1.0"
#endif
