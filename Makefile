# fileapi: build, test and run the demo.  `make LUA=luajit` builds for
# LuaJIT 2.1 (the Lua of Debian's nginx module) into its own folder, since a
# module built for one Lua does not load in another.

LUA ?= lua5.4
CC ?= cc

ifeq ($(LUA),luajit)
  LUA_PC := luajit
  LUA_BIN := luajit2
  LUA_PKGS := luajit2 libluajit2-5.1-dev lua-cjson lua-socket
else
  LUA_PC := $(LUA)
  LUA_BIN := $(LUA)
  LUA_PKGS := $(LUA) lib$(LUA)-dev lua-cjson lua-socket
endif

PKGS := $(LUA_PKGS) lua-busted lua-check luarocks libcurl4-openssl-dev pkg-config gcc make cppcheck

BUILD := build/$(LUA)
CORE := $(BUILD)/fileapi/core.so
SRCS := $(wildcard csrc/*.c)
HDRS := $(wildcard csrc/*.h)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-function
CFLAGS ?= -O2 -g
FA_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(WARN) \
	$(shell pkg-config --cflags $(LUA_PC) libcurl 2>/dev/null)
FA_LDFLAGS = -shared $(shell pkg-config --libs libcurl 2>/dev/null) -lm -lpthread

export LUA LUA_BIN

.PHONY: all deps build test demo bench clean lint

all: build

deps:
	@sh tools/deps.sh $(PKGS)

build: $(CORE)

$(CORE): $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(FA_CFLAGS) $(CFLAGS) -o $@ $(SRCS) $(FA_LDFLAGS) $(LDFLAGS)

test: deps build lint
	@sh spec/run.sh

demo: deps build
	@sh tools/with-paths.sh $(LUA_BIN) examples/demo.lua

bench: deps build
	@sh tools/with-paths.sh $(LUA_BIN) bench/run.lua

lint: deps
	@luacheck --no-color -q --formatter plain lua spec examples $(wildcard bench)
	@cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 \
		--suppress=missingIncludeSystem --suppress=toomanyconfigs \
		$(shell pkg-config --cflags-only-I $(LUA_PC) libcurl 2>/dev/null) csrc

clean:
	rm -rf build
