# snapworker — one Makefile, pkg-config for the libraries, -MMD -MP for dependencies.
# Sources are found by folder, so adding a module needs no edit here.
PREFIX ?= /usr/local
CC     ?= cc
# libcurl, libarchive, libpq and libcrypto: headers only. They are dlopen()ed on first use
# (common/lazylib.h) so an idle worker never maps them; nothing here (binary, unit tests,
# asan) links them, since that would map them, and all they pull in, at start again.
LINKED  = hiredis libevent libevent_pthreads jansson
LAZY    = libcurl libarchive libpq libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(LINKED) $(LAZY))
PKG_LIBS   := $(shell pkg-config --libs $(LINKED))
WARN    = -Wall -Wextra -Werror -Wformat=2 -Wstrict-prototypes -Wwrite-strings -Wshadow \
          -Wno-missing-field-initializers
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -pthread -I. $(WARN) $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
LDLIBS  = $(PKG_LIBS) -ldl -pthread -lm

LIB_SRC  = $(wildcard common/*.c) $(wildcard jobs/*.c) $(filter-out worker/main.c,$(wildcard worker/*.c))
# Files compiled into the binary (common/embedded.h), sorted so lookups are stable.
EMBED_FILES = $(sort $(wildcard migrations/*.sql) $(wildcard jobs/templates/*))
UNIT_SRC = $(wildcard tests/unit/test_*.c)

# Two build flavours share the rules: normal (build/) and sanitized (build/asan/).
B ?= build
LIB_OBJ  = $(LIB_SRC:%.c=$(B)/%.o) $(B)/gen/embedded.o
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all run test unit unit-run asan asan-build integration bench drills charts install clean fuzz-kubeconfig
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

# fuzz-kubeconfig: libFuzzer on the YAML/kubeconfig reader for FUZZ_SECONDS (clang only; not
# part of `make test`). New inputs go to build/fuzz/corpus, seeded with the unit fixtures.
FUZZ_SECONDS ?= 60
fuzz-kubeconfig:
	@mkdir -p build/fuzz/corpus
	clang -std=c11 -D_GNU_SOURCE -I. $(WARN) $(shell pkg-config --cflags jansson) -O1 -g \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -o build/fuzz/fuzz_kubeconfig \
	    tests/fuzz/fuzz_kubeconfig.c common/yaml.c common/kubeconfig.c common/err.c common/xmalloc.c \
	    $(shell pkg-config --libs jansson)
	build/fuzz/fuzz_kubeconfig -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
	    build/fuzz/corpus tests/unit/fixtures/kube

integration: all
	SNAPWORKER_BIN=$(CURDIR)/snapworker scripts/run-integration

bootstrap-quiet:
	@scripts/bootstrap

test: bootstrap-quiet
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory unit-run B=build
	SNAPWORKER_BIN=$(CURDIR)/snapworker scripts/run-integration
	$(MAKE) --no-print-directory asan

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
