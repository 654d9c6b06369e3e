# fileapi: build, test and run the demo.  `make LUA=luajit` builds for
# LuaJIT 2.1 (the Lua of Debian's nginx module) into its own folder, since a
# module built for one Lua does not load in another.

LUA ?= lua5.4
CC ?= cc

ifeq ($(LUA),luajit)
  LUA_PC := luajit
  LUA_BIN := luajit
  LUA_DEV := libluajit2-5.1-dev
  LUA_PKGS := luajit2 $(LUA_DEV)
else ifeq ($(LUA),lua5.1)
  LUA_PC := lua5.1
  LUA_BIN := lua5.1
  LUA_DEV := liblua5.1-0-dev
  LUA_PKGS := lua5.1 $(LUA_DEV)
else
  LUA_PC := $(LUA)
  LUA_BIN := $(LUA)
  LUA_DEV := lib$(LUA)-dev
  LUA_PKGS := $(LUA) $(LUA_DEV)
endif

# The mock always runs on lua5.4 with LuaSocket, cjson and LuaSec (HTTPS).
PKGS := $(LUA_PKGS) lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev lua-cjson lua-socket lua-sec openssl lua-busted lua-argparse \
	lua-check luarocks libcurl4-openssl-dev pkg-config gcc make cppcheck nginx-light libnginx-mod-http-lua curl strace \
	libhiredis-dev libssl-dev redis-server lua-nginx-redis
# The benchmark's sink is nginx with its Lua module; /usr/bin/time measures.
BENCH_PKGS := nginx-light libnginx-mod-http-lua time curl redis-server
# Sanitizers, valgrind and libFuzzer for the memory-safety stages of `make
# test`; llvm-14 has the symbolizer Debian's sanitizer runtime runs
# (/usr/bin/llvm-symbolizer-14), which clang does not bring.
CHECK_PKGS := clang libclang-rt-14-dev valgrind llvm-14
# `make test-fresh` makes a fresh Debian 12 root with debootstrap.
FRESH_PKGS := debootstrap

BUILD := build/$(LUA)
CORE := $(BUILD)/fileapi/core.so
SRCS := $(wildcard csrc/*.c)
HDRS := $(wildcard csrc/*.h csrc/gen/*.h)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-function -Wformat=2
CFLAGS ?= -O2 -g
# The fleet's store (fileapi.store) needs hiredis outside nginx and
# libcrypto for its key names and sealed tokens; a build without their
# headers still builds, and `store` then says what it needs.  Whether they
# are there is decided when a build runs, never when this file is read
# (`make demo` installs them just before it builds): tools/features.sh
# writes STORE_CFLAGS and STORE_LIBS to the build folder's `features` file,
# which each compile line sources, and rewrites it only when they changed,
# so a build whose features changed is rebuilt.  Every variable below that
# asks pkg-config is expanded in a recipe, after its prerequisites ran.
FEATURES = . ./$(1)/features &&
FA_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(WARN) \
	$(shell pkg-config --cflags $(LUA_PC) libcurl 2>/dev/null) $$STORE_CFLAGS
FA_LDFLAGS = -shared $(shell pkg-config --libs libcurl 2>/dev/null) $$STORE_LIBS -lm -lpthread
# A build whose Lua or libcurl headers pkg-config cannot find (or that has
# no compiler) names the packages to install and stops, as `deps` does,
# instead of failing in the compiler; it never installs anything itself.
NEED_HEADERS = @{ command -v $(firstword $(CC)) >/dev/null && pkg-config --exists $(LUA_PC) libcurl 2>/dev/null; } || \
	sh tools/deps.sh --check pkg-config $(LUA_DEV) libcurl4-openssl-dev $(if $(filter cc gcc,$(CC)),gcc) || \
	{ echo "fileapi: or, as root: make LUA=$(LUA) deps" >&2; exit 1; }

# LuaRocks builds with `make rock` (build.type = "make"): the same flags, with
# Lua's and curl's folders as LuaRocks found them.  Warnings stay on but do
# not fail a user's install on a newer compiler.
LUA_INCDIR ?= $(shell pkg-config --variable=includedir $(LUA_PC) 2>/dev/null)
ROCK_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(filter-out -Werror,$(WARN)) \
	-I$(LUA_INCDIR) $(if $(CURL_INCDIR),-I$(CURL_INCDIR)) $$STORE_CFLAGS
ROCK_LIBS = $(if $(CURL_LIBDIR),-L$(CURL_LIBDIR)) -lcurl $$STORE_LIBS -lm -lpthread

SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_BUILD := build/asan-$(LUA)
FUZZ_TIME ?= 60
SOAK_COUNT ?= 20000

export LUA LUA_BIN

ALL_LUAS := lua5.1 lua5.2 lua5.3 lua5.4 luajit

# Targets that install packages build in a second make (`$(MAKE) build`)
# started after the install, also under -j: nothing a build decides can
# predate `deps`.

.PHONY: all deps check-deps build rock test test-specs test-all build-asan test-asan test-valgrind test-prism test-oom \
	test-fresh gen fuzz soak demo bench lint clean

all: build

deps:
	@sh tools/deps.sh $(PKGS)

check-deps:
	@sh tools/deps.sh $(CHECK_PKGS)

build: $(CORE)

# What is made from the one lists of options and kinds and the public calls'
# `--- ` lines (the C core's csrc/gen/*.h, the tables and the reference's calls
# in README.md and docs/); committed, and a spec fails while stale.
gen:
	@lua5.4 tools/gen.lua

# Each build folder's features file (see FEATURES above), looked at on every
# run and rewritten only when the features changed.
FORCE:
.PRECIOUS: build/%/features
build/%/features: FORCE
	@sh tools/features.sh $@

$(CORE): $(SRCS) $(HDRS) Makefile $(BUILD)/features
	$(NEED_HEADERS)
	@mkdir -p $(dir $@)
	$(call FEATURES,$(BUILD)) $(CC) $(FA_CFLAGS) $(CFLAGS) -o $@ $(SRCS) $(FA_LDFLAGS) $(LDFLAGS)

rock: build/rock/features
	@mkdir -p build/rock/fileapi
	$(call FEATURES,build/rock) $(CC) $(ROCK_CFLAGS) $(CFLAGS) -o build/rock/fileapi/core.so $(SRCS) \
		$(LIBFLAG) -shared $(ROCK_LIBS)

# The whole suite: every stage runs, then one closing line adds them up.
test: deps
	@sh tools/deps.sh $(CHECK_PKGS)
	@$(MAKE) --no-print-directory build
	@sh tools/suite.sh

# The nginx specs load the LuaJIT build whatever Lua runs busted.
test-specs: deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory -s LUA=luajit build >/dev/null
	@sh spec/run.sh $(SPEC_ARGS)

# The suite on every Lua Debian ships: 5.1, 5.2, 5.3, 5.4 and LuaJIT.
test-all:
	@status=0; for v in $(ALL_LUAS); do \
		echo "== $$v"; $(MAKE) -s LUA=$$v test-specs || status=1; \
	done; exit $$status

lint: deps
	@luacheck --no-color -q --formatter plain lua spec examples $(wildcard bench) $(wildcard tools/*.lua)
	@cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 \
		--suppress=missingIncludeSystem --suppress=toomanyconfigs \
		$(shell pkg-config --cflags-only-I $(LUA_PC) libcurl 2>/dev/null) csrc

# ASan + UBSan: the core built with clang, loaded into the plain interpreter
# with the sanitizer runtime preloaded (see tools/lsan.supp for what is
# suppressed and why).  Specs that drive other tools (#toolchain) are left
# out: the preloaded runtime would judge those tools, not fileapi.  So is the
# RSS soak (#soak): ASan's quarantine holds freed memory back by design.
# Sanitized runs go through tools/sanitize.sh, which names the symbolizer.
$(ASAN_BUILD)/fileapi/core.so: $(SRCS) $(HDRS) Makefile $(ASAN_BUILD)/features
	$(NEED_HEADERS)
	@mkdir -p $(dir $@)
	$(call FEATURES,$(ASAN_BUILD)) clang $(FA_CFLAGS) $(SAN_FLAGS) -shared-libasan -O1 -g -o $@ $(SRCS) $(FA_LDFLAGS)

ASAN_ARGS ?= --exclude-tags=toolchain,soak,nginx,slow,prism,oom
build-asan: deps
	@sh tools/deps.sh $(CHECK_PKGS)
	@$(MAKE) --no-print-directory $(ASAN_BUILD)/fileapi/core.so

test-asan: build-asan
	@FILEAPI_BUILD=$(ASAN_BUILD) \
	LD_PRELOAD=$$(clang -print-file-name=libclang_rt.asan-x86_64.so) \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp:print_suppressions=0:use_tls=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	sh tools/sanitize.sh sh spec/run.sh $(ASAN_ARGS)

# memcheck over the suite's process, where the core runs: any invalid access
# or definitely-lost block fails the run.  Specs that run fileapi only in
# child processes (#children) are left out: valgrind does not follow them
# (ASan's preloaded runtime does, so they run there).
VALGRIND_ARGS ?= --exclude-tags=toolchain,nginx,slow,prism,oom,children
test-valgrind: deps
	@sh tools/deps.sh $(CHECK_PKGS)
	@$(MAKE) --no-print-directory build
	@valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
		--show-leak-kinds=definite $(LUA_BIN) /usr/bin/busted $(VALGRIND_ARGS)

build/fuzz/fuzz_%: fuzz/fuzz_%.c $(SRCS) $(HDRS) Makefile build/fuzz/features
	@mkdir -p $(dir $@)
	$(call FEATURES,build/fuzz) clang -std=c99 -D_POSIX_C_SOURCE=200809L -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer \
		$(SAN_FLAGS) $(shell pkg-config --cflags lua5.4 libcurl) $$STORE_CFLAGS -o $@ $< $(SRCS) \
		$(shell pkg-config --libs lua5.4 libcurl) $$STORE_LIBS -lm -lpthread

# Each target for FUZZ_TIME seconds from the seed corpus (copied, so the
# checkout is never written to).
fuzz:
	@sh tools/deps.sh $(CHECK_PKGS)
	@$(MAKE) --no-print-directory build/fuzz/fuzz_retry_after build/fuzz/fuzz_multipart
	@sh tools/sanitize.sh sh tools/fuzz.sh $(FUZZ_TIME) retry_after multipart

# The suite's MijnKlantportaal calls through Prism (proxy mode) in front of
# the mock, checked against the reference OpenAPI document.
test-prism: deps
	@$(MAKE) --no-print-directory build
	@FILEAPI_PRISM=$$(sh tools/prism.sh) && export FILEAPI_PRISM && sh spec/run.sh --run=prism spec/prism_spec.lua

soak: deps
	@$(MAKE) --no-print-directory build
	@SOAK_COUNT=$(SOAK_COUNT) sh spec/run.sh --tags=soak

demo: deps
	@$(MAKE) --no-print-directory build
	@sh tools/with-paths.sh $(LUA_BIN) examples/demo.lua

bench: deps
	@sh tools/deps.sh $(BENCH_PKGS)
	@$(MAKE) --no-print-directory build
	@sh tools/with-paths.sh lua5.4 bench/run.lua

# The README's two commands as a new user runs them: a minimal Debian 12
# made by debootstrap, a clone of HEAD in it, `make demo` then `make test`
# as root (tools/fresh.sh).  Too slow for every run: not part of `make test`.
test-fresh:
	@sh tools/deps.sh $(FRESH_PKGS)
	@sh tools/fresh.sh

clean:
	rm -rf build

# The out-of-memory sweep (spec/c/harness.c): the core's sources and a Lua
# 5.4 state whose allocator fails on demand, under ASan/UBSan.
build/harness/harness: spec/c/harness.c $(SRCS) $(HDRS) Makefile build/harness/features
	@mkdir -p $(dir $@)
	$(call FEATURES,build/harness) clang -std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 $(SAN_FLAGS) \
		$(shell pkg-config --cflags lua5.4 libcurl) $$STORE_CFLAGS -o $@ $< $(SRCS) \
		$(shell pkg-config --libs lua5.4 libcurl) $$STORE_LIBS -lm -lpthread

test-oom: deps
	@sh tools/deps.sh $(CHECK_PKGS)
	@$(MAKE) --no-print-directory build build/harness/harness
	@ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 sh tools/sanitize.sh sh spec/run.sh --run=oom spec/oom_spec.lua
