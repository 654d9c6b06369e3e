/* A Lua 5.4 state whose allocator fails when told to, for the core's
 * out-of-memory contract: a transfer whose Nth Lua allocation fails ends
 * with a result, nil, err, or a memory error raised after perform -- never
 * a longjmp through libcurl, a stuck "busy" client or a leak -- and the
 * client works (or is closed) afterwards.  Built with ASan/UBSan; the
 * script (spec/c/oom.lua) drives the sweep against the mock.
 *   harness SCRIPT ARGS...  (exit 0: every check held) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "../../csrc/fileapi.h"

struct arena {
    long count;    /* allocations since arm() */
    long fail_at;  /* the first to fail (1-based); 0: none */
    long fail_for; /* how many in a row fail from there */
    long failed;   /* how many did */
    int paused;    /* the script's own bookkeeping: neither counted nor failed */
};

static struct arena arena;

/* Only allocations and growth may fail: Lua retries a failed one once
 * after a full collection, so fail_for = 2 fails "the Nth" for real. */
static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (!arena.paused && (ptr == NULL || nsize > osize)) {
        arena.count++;
        if (arena.fail_at > 0 && arena.count >= arena.fail_at && arena.count < arena.fail_at + arena.fail_for) {
            arena.failed++;
            return NULL;
        }
    }
    return realloc(ptr, nsize);
}

/* harness.arm(n [, run]): the nth allocation from now on (and run-1 after
 * it) fails; n = 0 only counts. */
static int h_arm(lua_State *L)
{
    long n = (long)luaL_checkinteger(L, 1);
    long run = (long)luaL_optinteger(L, 2, 2);
    arena.count = 0;
    arena.failed = 0;
    arena.paused = 0;
    arena.fail_for = run;
    arena.fail_at = n; /* last: the calls above allocate nothing */
    return 0;
}

/* harness.pause(), harness.resume(): between the calls under test, the
 * script's own allocations are left out. */
static int h_pause(lua_State *L)
{
    (void)L;
    arena.paused = 1;
    return 0;
}

static int h_resume(lua_State *L)
{
    (void)L;
    arena.paused = 0;
    return 0;
}

/* harness.disarm() -> allocations counted, how many failed */
static int h_disarm(lua_State *L)
{
    arena.fail_at = 0;
    arena.paused = 0;
    lua_pushinteger(L, arena.count);
    lua_pushinteger(L, arena.failed);
    return 2;
}

static int h_inode_id(lua_State *L)
{
    char id[48];
    fa_inode_id(id, sizeof id, (unsigned long long)luaL_checkinteger(L, 1),
                (unsigned long long)luaL_checkinteger(L, 2));
    lua_pushstring(L, id);
    return 1;
}

static int open_core(lua_State *L)
{
    return luaopen_fileapi_core(L);
}

int main(int argc, char **argv)
{
    static const luaL_Reg funcs[] = {
        {"arm", h_arm},
        {"disarm", h_disarm},
        {"pause", h_pause},
        {"resume", h_resume},
        {"inode_id", h_inode_id},
        {NULL, NULL},
    };
    lua_State *L;
    int i, status;
    if (argc < 2) {
        fprintf(stderr, "usage: harness SCRIPT ARGS...\n");
        return 2;
    }
    L = lua_newstate(alloc, NULL);
    if (L == NULL)
        return 2;
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open_core);
    lua_setfield(L, -2, "fileapi.core");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_setglobal(L, "harness");
    lua_createtable(L, argc, 0);
    for (i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    status = luaL_dofile(L, argv[1]);
    if (status != 0)
        fprintf(stderr, "harness: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == 0 ? 0 : 1;
}
