# snapworker — one Makefile, pkg-config for the libraries, -MMD -MP for dependencies.
# Sources are found by folder, so adding a module needs no edit here.
PREFIX ?= /usr/local
CC     ?= cc
# Every library is linked normally (docs/decisions.md: the lazy-loading layer is gone; the
# heavy ones are used only in job processes, docs/processes.md). pkg-config runs when a
# recipe first needs its output, not when make reads this file: on a fresh machine
# `make test` runs scripts/bootstrap (which installs the -dev packages) before any compile,
# so parsing must not ask pkg-config about packages that are not there yet. The values are
# recursively expanded and cached on first use (PKG_CFLAGS_ / PKG_LIBS_).
LINKED  = hiredis libevent libevent_pthreads libevent_openssl jansson libcurl libarchive libpq libssl libcrypto
PKG_CFLAGS = $(if $(PKG_CFLAGS_),,$(eval PKG_CFLAGS_ := $(shell pkg-config --cflags $(LINKED))))$(PKG_CFLAGS_)
PKG_LIBS   = $(if $(PKG_LIBS_),,$(eval PKG_LIBS_ := $(shell pkg-config --libs $(LINKED))))$(PKG_LIBS_)
WARN    = -Wall -Wextra -Werror -Wformat=2 -Wstrict-prototypes -Wwrite-strings -Wshadow \
          -Wno-missing-field-initializers
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -pthread -I. $(WARN) $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
LDLIBS  = $(PKG_LIBS) -pthread -lm

LIB_SRC  = $(wildcard common/*.c) $(wildcard jobs/*.c) $(filter-out worker/main.c,$(wildcard worker/*.c))
# Files compiled into the binary (common/embedded.h), sorted so lookups are stable:
# migrations, job templates, the queue's Lua scripts (worker/lua/) and the dashboard (worker/ui/).
EMBED_FILES = $(sort $(wildcard migrations/*.sql) $(wildcard jobs/templates/*) $(wildcard worker/lua/*.lua) \
                    $(wildcard worker/ui/*))
UNIT_SRC = $(wildcard tests/unit/test_*.c)

# Two build flavours share the rules: normal (build/) and sanitized (build/asan/).
B ?= build
LIB_OBJ  = $(LIB_SRC:%.c=$(B)/%.o) $(B)/gen/embedded.o
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all run test unit unit-run asan asan-build integration integration-tls bench drills charts install clean \
        fuzz fuzz-ci fuzz-build fuzz-kubeconfig
all: snapworker

snapworker: $(B)/snapworker
	cp $< $@.tmp && mv -f $@.tmp $@

$(B)/snapworker: $(B)/worker/main.o $(B)/libsw.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS) $(LDFLAGS)

$(B)/libsw.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/tools/embed: tools/embed.c
	@mkdir -p $(dir $@)
	$(CC) -O1 -o $@ $<

$(B)/gen/embedded.c: $(B)/tools/embed $(EMBED_FILES) Makefile
	@mkdir -p $(dir $@)
	$(B)/tools/embed $@ $(EMBED_FILES)

$(B)/gen/embedded.o: $(B)/gen/embedded.c
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/tests/%: tests/unit/%.c $(B)/libsw.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libsw.a $(LDLIBS) -lcmocka $(LDFLAGS)

# unit: cmocka tests, no servers, seconds.
unit: bootstrap-quiet
	$(MAKE) --no-print-directory unit-run B=build

unit-run: $(UNIT_BIN)
	@scripts/run-unit $(UNIT_BIN)

# asan: the unit tests and the fast integration subset under ASan+UBSan (+LeakSanitizer).
ASAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
asan: bootstrap-quiet
	$(MAKE) --no-print-directory CC=clang B=build/asan CFLAGS="$(ASAN_FLAGS)" LDFLAGS="$(ASAN_FLAGS)" \
	    build/asan/snapworker asan-units
	SNAPWORKER_BIN=$(CURDIR)/build/asan/snapworker SNAPWORKER_ASAN=1 scripts/run-integration --fast

asan-units: $(UNIT_BIN)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 scripts/run-unit $(UNIT_BIN)

# fuzz: every libFuzzer harness in tests/fuzz/ (clang only; docs/reliability.md, "Fuzzing").
# Each harness is compiled together with just the sources it tests, all with the fuzz flags
# (so they are instrumented), and links the libraries it needs. New inputs go to build/fuzz/corpus/<name>, seeded read-only from
# tests/fuzz/corpus/<name>; a crash fails the target and names its reproducer.
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 2
FUZZ_TARGETS ?= payload celery arc_extract kubeconfig ws k8s_status s3_xml
FUZZ_CC      ?= clang
FUZZ_FLAGS    = -std=c11 -D_GNU_SOURCE -pthread -I. $(WARN) $(PKG_CFLAGS) -O1 -g \
                -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_COMMON   = common/err.c common/xmalloc.c
FUZZ_SRC_payload     = common/payload.c common/ids.c common/redact.c
FUZZ_LIBS_payload    = jansson libcrypto
FUZZ_SRC_celery      = worker/celery_msg.c common/payload.c common/ids.c common/redact.c
FUZZ_LIBS_celery     = jansson libcrypto
FUZZ_SRC_arc_extract = common/arc_extract.c common/arc_check.c common/arc.c common/fdio.c
FUZZ_LIBS_arc_extract = libarchive
FUZZ_SRC_kubeconfig  = common/yaml.c common/kubeconfig.c
FUZZ_LIBS_kubeconfig = jansson
FUZZ_SRC_ws          = common/ws.c
FUZZ_LIBS_ws         = libcrypto
FUZZ_SRC_k8s_status  = common/k8s_status.c
FUZZ_LIBS_k8s_status = jansson
FUZZ_SRC_s3_xml      = common/store_s3.c common/store_s3_http.c common/aws_creds.c common/sha256.c
FUZZ_LIBS_s3_xml     = libcurl libcrypto jansson
FUZZ_BIN = $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
FUZZ_HDR = $(wildcard common/*.h worker/*.h jobs/*.h tests/fuzz/*.h)

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	@scripts/run-fuzz $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)

# fuzz-ci: what `make test` (.ci/run) runs: 20 s per harness, two at a time.
fuzz-ci: fuzz-build
	@scripts/run-fuzz 20 2 $(FUZZ_TARGETS)

# The kubeconfig harness alone (its former target).
fuzz-kubeconfig:
	@$(MAKE) --no-print-directory fuzz FUZZ_TARGETS=kubeconfig

.SECONDEXPANSION:
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $$(FUZZ_SRC_$$*) $(FUZZ_COMMON) $(FUZZ_HDR) Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC_$*) $(FUZZ_COMMON) \
	    $(shell pkg-config --libs $(FUZZ_LIBS_$*)) -lm

integration: all
	SNAPWORKER_BIN=$(CURDIR)/snapworker scripts/run-integration

# integration-tls: the suite again with every module's Redis serving TLS only (rediss://;
# scripts/run-integration --tls, SW_REDIS_TLS=1); modules where it would only repeat the
# first pass (TLS_PASS = False, listed in scripts/run-integration) are left out.
integration-tls: all
	SNAPWORKER_BIN=$(CURDIR)/snapworker scripts/run-integration --tls

bootstrap-quiet:
	@scripts/bootstrap

test: bootstrap-quiet
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory unit-run B=build
	SNAPWORKER_BIN=$(CURDIR)/snapworker scripts/run-integration
	SNAPWORKER_BIN=$(CURDIR)/snapworker scripts/run-integration --tls
	SNAPWORKER_BIN=$(CURDIR)/snapworker scripts/run-python-client
	$(MAKE) --no-print-directory asan
	$(MAKE) --no-print-directory fuzz-ci

run: bootstrap-quiet all
	@scripts/run-worker

bench: bootstrap-quiet all
	@bench/run-all

# drills: fault drills on real servers; rewrites the table of docs/reliability.md (under 10
# minutes on 2 cores; root for the tmpfs of the disk-full drill). DRILL=name runs one.
DRILL ?=
drills: bootstrap-quiet all
	bench/drills $(DRILL)

# charts: docs/img/*.png from the latest results in build/bench/ (bench/run-all calls it).
charts:
	bench/charts

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 snapworker $(DESTDIR)$(PREFIX)/bin/snapworker
	install -d $(DESTDIR)$(PREFIX)/share/snapworker/migrations
	install -m 0644 migrations/*.sql $(DESTDIR)$(PREFIX)/share/snapworker/migrations/ 2>/dev/null || true

clean:
	rm -rf build snapworker

-include $(shell find build -name '*.d' 2>/dev/null)
