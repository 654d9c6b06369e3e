# fileapi: build, test and run the demo.  `make LUA=luajit` builds for
# LuaJIT 2.1 (the Lua of Debian's nginx module) into its own folder, since a
# module built for one Lua does not load in another.

LUA ?= lua5.4
CC ?= cc

ifeq ($(LUA),luajit)
  LUA_PC := luajit
  LUA_BIN := luajit
  LUA_PKGS := luajit2 libluajit2-5.1-dev
else ifeq ($(LUA),lua5.1)
  LUA_PC := lua5.1
  LUA_BIN := lua5.1
  LUA_PKGS := lua5.1 liblua5.1-0-dev
else
  LUA_PC := $(LUA)
  LUA_BIN := $(LUA)
  LUA_PKGS := $(LUA) lib$(LUA)-dev
endif

# The mock always runs on lua5.4 with LuaSocket, cjson and LuaSec (HTTPS).
PKGS := $(LUA_PKGS) lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev lua-cjson lua-socket lua-sec openssl lua-busted lua-argparse \
	lua-check luarocks libcurl4-openssl-dev pkg-config gcc make cppcheck nginx-light libnginx-mod-http-lua curl strace \
	libhiredis-dev libssl-dev redis-server lua-nginx-redis
# The benchmark's sink is nginx with its Lua module; /usr/bin/time measures.
BENCH_PKGS := nginx-light libnginx-mod-http-lua time curl redis-server
# Sanitizers, valgrind and libFuzzer for the memory-safety stages of `make test`.
CHECK_PKGS := clang libclang-rt-14-dev valgrind

BUILD := build/$(LUA)
CORE := $(BUILD)/fileapi/core.so
SRCS := $(wildcard csrc/*.c)
HDRS := $(wildcard csrc/*.h csrc/gen/*.h)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-function -Wformat=2
CFLAGS ?= -O2 -g
# The fleet's store (fileapi.store) needs hiredis outside nginx and
# libcrypto for its key names and sealed tokens; a build without their
# headers still builds, and `store` then says what it needs.
HAVE_HIREDIS := $(shell pkg-config --exists hiredis 2>/dev/null && echo yes)
HAVE_CRYPTO := $(shell pkg-config --exists libcrypto 2>/dev/null && echo yes)
STORE_CFLAGS := $(if $(HAVE_HIREDIS),-DFA_HAVE_HIREDIS $(shell pkg-config --cflags hiredis)) \
	$(if $(HAVE_CRYPTO),-DFA_HAVE_CRYPTO $(shell pkg-config --cflags libcrypto))
STORE_LIBS := $(if $(HAVE_HIREDIS),$(shell pkg-config --libs hiredis)) \
	$(if $(HAVE_CRYPTO),$(shell pkg-config --libs libcrypto))
FA_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(WARN) \
	$(shell pkg-config --cflags $(LUA_PC) libcurl 2>/dev/null) $(STORE_CFLAGS)
FA_LDFLAGS = -shared $(shell pkg-config --libs libcurl 2>/dev/null) $(STORE_LIBS) -lm -lpthread

# LuaRocks builds with `make rock` (build.type = "make"): the same flags, with
# Lua's and curl's folders as LuaRocks found them.  Warnings stay on but do
# not fail a user's install on a newer compiler.
LUA_INCDIR ?= $(shell pkg-config --variable=includedir $(LUA_PC) 2>/dev/null)
ROCK_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(filter-out -Werror,$(WARN)) \
	-I$(LUA_INCDIR) $(if $(CURL_INCDIR),-I$(CURL_INCDIR)) $(STORE_CFLAGS)
ROCK_LIBS = $(if $(CURL_LIBDIR),-L$(CURL_LIBDIR)) -lcurl $(STORE_LIBS) -lm -lpthread

SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_BUILD := build/asan-$(LUA)
FUZZ_TIME ?= 60
SOAK_COUNT ?= 20000

export LUA LUA_BIN

ALL_LUAS := lua5.1 lua5.2 lua5.3 lua5.4 luajit

.PHONY: test-prism
.PHONY: all deps check-deps build gen test test-specs test-all test-asan test-valgrind fuzz soak demo bench lint clean

all: build

deps:
	@sh tools/deps.sh $(PKGS)

check-deps:
	@sh tools/deps.sh $(CHECK_PKGS)

build: $(CORE)

# What is made from the one lists of options and kinds (the C core's
# csrc/gen/*.h, the README's tables); committed, and a spec fails while stale.
gen:
	@lua5.4 tools/gen.lua

$(CORE): $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(FA_CFLAGS) $(CFLAGS) -o $@ $(SRCS) $(FA_LDFLAGS) $(LDFLAGS)

.PHONY: rock
rock:
	@mkdir -p build/rock/fileapi
	$(CC) $(ROCK_CFLAGS) $(CFLAGS) -o build/rock/fileapi/core.so $(SRCS) $(LIBFLAG) -shared $(ROCK_LIBS)

# The whole suite: every stage runs, then one closing line adds them up.
test: deps check-deps build
	@sh tools/suite.sh

# The nginx specs load the LuaJIT build whatever Lua runs busted.
test-specs: deps build
	@$(MAKE) -s LUA=luajit build >/dev/null
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
$(ASAN_BUILD)/fileapi/core.so: $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	clang $(FA_CFLAGS) $(SAN_FLAGS) -shared-libasan -O1 -g -o $@ $(SRCS) $(FA_LDFLAGS)

test-asan: deps check-deps $(ASAN_BUILD)/fileapi/core.so
	@FILEAPI_BUILD=$(ASAN_BUILD) \
	LD_PRELOAD=$$(clang -print-file-name=libclang_rt.asan-x86_64.so) \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp:print_suppressions=0:use_tls=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	sh spec/run.sh --exclude-tags=toolchain,soak,nginx,slow,prism,oom

# memcheck over the suite's process, where the core runs: any invalid access
# or definitely-lost block fails the run.  Specs that run fileapi only in
# child processes (#children) are left out: valgrind does not follow them
# (ASan's preloaded runtime does, so they run there).
test-valgrind: deps check-deps build
	@valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
		--show-leak-kinds=definite $(LUA_BIN) /usr/bin/busted --exclude-tags=toolchain,nginx,slow,prism,oom,children

build/fuzz/fuzz_%: fuzz/fuzz_%.c $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	clang -std=c99 -D_POSIX_C_SOURCE=200809L -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer $(SAN_FLAGS) \
		$(shell pkg-config --cflags lua5.4 libcurl) $(STORE_CFLAGS) -o $@ $< $(SRCS) \
		$(shell pkg-config --libs lua5.4 libcurl) $(STORE_LIBS) -lm -lpthread

# Each target for FUZZ_TIME seconds from the seed corpus (copied, so the
# checkout is never written to).
fuzz: check-deps build/fuzz/fuzz_retry_after build/fuzz/fuzz_multipart
	@sh tools/fuzz.sh $(FUZZ_TIME) retry_after multipart

# The suite's MijnKlantportaal calls through Prism (proxy mode) in front of
# the mock, checked against the reference OpenAPI document.
test-prism: deps build
	@FILEAPI_PRISM=$$(sh tools/prism.sh) && export FILEAPI_PRISM && sh spec/run.sh --run=prism spec/prism_spec.lua

soak: deps build
	@SOAK_COUNT=$(SOAK_COUNT) sh spec/run.sh --tags=soak

demo: deps build
	@sh tools/with-paths.sh $(LUA_BIN) examples/demo.lua

bench: deps build
	@sh tools/deps.sh $(BENCH_PKGS)
	@sh tools/with-paths.sh lua5.4 bench/run.lua

clean:
	rm -rf build

# The out-of-memory sweep (spec/c/harness.c): the core's sources and a Lua
# 5.4 state whose allocator fails on demand, under ASan/UBSan.
build/harness/harness: spec/c/harness.c $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	clang -std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 $(SAN_FLAGS) \
		$(shell pkg-config --cflags lua5.4 libcurl) $(STORE_CFLAGS) -o $@ $< $(SRCS) \
		$(shell pkg-config --libs lua5.4 libcurl) $(STORE_LIBS) -lm -lpthread

test-oom: deps check-deps build build/harness/harness
	@ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 sh spec/run.sh --run=oom spec/oom_spec.lua
