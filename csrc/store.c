/* A connection to Redis for the fleet's shared state (fileapi.store), outside
 * nginx.  hiredis speaks the protocol (inside nginx, lua-resty-redis does, on
 * cosockets): this file only moves arguments in and replies out, in the shape
 * lua-resty-redis gives them, so one Lua layer serves both.
 *
 * core.redis(host, port, timeout) -> conn | nil, message
 * conn:call(name, arg...) -> reply | nil, message, "server" | "io" | "closed"
 *   string and status replies are strings, integers numbers, nil is false,
 *   arrays tables; an error reply is nil, its text, "server"; a failed
 *   connection is nil, message and "closed" when Redis had closed it (end
 *   of file, reset: CLIENT KILL, its idle timeout, a restart; the command
 *   never reached a server that reads it), "io" otherwise (a timeout: the
 *   command may have run); either way the connection is closed then: a
 *   reply half read cannot be resynced.
 * conn:close(): idempotent, also __gc and __close.
 *
 * Built only when hiredis's headers were found (FA_HAVE_HIREDIS); without
 * them core.redis is absent and fileapi.store says what it needs. */
#include "fileapi.h"

#ifdef FA_HAVE_HIREDIS
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/time.h>
#include <hiredis.h>

#define FA_REDIS_MT "fileapi.redis"
#define FA_REPLY_MT "fileapi.redis_reply"
#define MAX_ARGS 256
#define MAX_DEPTH 8

typedef struct {
    redisContext *c;
} fa_redis;

/* A reply waiting to be converted: freed by __gc if a push raises. */
typedef struct {
    redisReply *r;
} fa_reply_box;

static int reply_gc(lua_State *L)
{
    fa_reply_box *b = (fa_reply_box *)luaL_checkudata(L, 1, FA_REPLY_MT);
    if (b->r) {
        freeReplyObject(b->r);
        b->r = NULL;
    }
    return 0;
}

static int redis_close(lua_State *L)
{
    fa_redis *r = (fa_redis *)luaL_checkudata(L, 1, FA_REDIS_MT);
    if (r->c) {
        redisFree(r->c);
        r->c = NULL;
    }
    return 0;
}

static int redis_tostring(lua_State *L)
{
    fa_redis *r = (fa_redis *)luaL_checkudata(L, 1, FA_REDIS_MT);
    lua_pushstring(L, r->c ? "fileapi.redis (open)" : "fileapi.redis (closed)");
    return 1;
}

static int to_timeval(double seconds, struct timeval *tv)
{
    if (!(seconds > 0 && seconds <= 3600))
        return 0;
    tv->tv_sec = (time_t)seconds;
    tv->tv_usec = (suseconds_t)((seconds - (double)tv->tv_sec) * 1e6);
    if (tv->tv_sec == 0 && tv->tv_usec == 0)
        tv->tv_usec = 1;
    return 1;
}

static int l_redis(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    struct timeval tv;
    fa_redis *r;
    redisContext *c;
    if (port < 1 || port > 65535)
        return luaL_argerror(L, 2, "a port from 1 to 65535 expected");
    if (!to_timeval(timeout, &tv))
        return luaL_argerror(L, 3, "a timeout from 0 to 3600 seconds expected");
    /* the userdata first: once connected, nothing may raise before it owns c */
    r = (fa_redis *)fa_newuserdata(L, sizeof *r);
    r->c = NULL;
    fa_setmetatable(L, FA_REDIS_MT);
    c = redisConnectWithTimeout(host, (int)port, tv);
    if (c == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "redis: out of memory");
        return 2;
    }
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "redis: %s", c->err ? c->errstr : "cannot set the timeout");
        redisFree(c);
        return 2;
    }
    r->c = c;
    return 1;
}

static void push_reply(lua_State *L, const redisReply *rep, int depth)
{
    size_t i;
    luaL_checkstack(L, 3, "redis reply");
    switch (rep->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        lua_pushlstring(L, rep->str, rep->len);
        break;
    case REDIS_REPLY_INTEGER:
        fa_pushwhole(L, rep->integer);
        break;
    case REDIS_REPLY_ARRAY:
        if (depth >= MAX_DEPTH || rep->elements > (size_t)INT32_MAX) {
            lua_pushboolean(L, 0);
            break;
        }
        lua_createtable(L, (int)rep->elements, 0);
        for (i = 0; i < rep->elements; i++) {
            push_reply(L, rep->element[i], depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    default: /* nil */
        lua_pushboolean(L, 0);
        break;
    }
}

static int redis_call(lua_State *L)
{
    fa_redis *r = (fa_redis *)luaL_checkudata(L, 1, FA_REDIS_MT);
    int argc = lua_gettop(L) - 1, i;
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    fa_reply_box *box;
    redisReply *rep;
    int failed;
    if (argc < 1 || argc > MAX_ARGS)
        return luaL_error(L, "redis: from 1 to %d arguments expected", MAX_ARGS);
    for (i = 0; i < argc; i++) {
        int t = lua_type(L, i + 2);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_argerror(L, i + 2, "a string or number expected");
        argv[i] = lua_tolstring(L, i + 2, &lens[i]);
    }
    if (r->c == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "redis: the connection is closed");
        lua_pushliteral(L, "io");
        return 3;
    }
    box = (fa_reply_box *)fa_newuserdata(L, sizeof *box);
    box->r = NULL;
    fa_setmetatable(L, FA_REPLY_MT);
    rep = (redisReply *)redisCommandArgv(r->c, argc, argv, lens);
    if (rep == NULL) {
        int why = errno;
        int closed = r->c->err == REDIS_ERR_EOF
            || (r->c->err == REDIS_ERR_IO && (why == ECONNRESET || why == EPIPE));
        lua_pushnil(L);
        lua_pushfstring(L, "redis: %s", r->c->err ? r->c->errstr : "no reply");
        if (closed)
            lua_pushliteral(L, "closed");
        else
            lua_pushliteral(L, "io");
        redisFree(r->c);
        r->c = NULL;
        return 3;
    }
    box->r = rep;
    failed = rep->type == REDIS_REPLY_ERROR;
    if (failed) {
        lua_pushnil(L);
        push_reply(L, rep, 0);
        lua_pushliteral(L, "server");
    } else {
        push_reply(L, rep, 0);
    }
    freeReplyObject(rep);
    box->r = NULL;
    return failed ? 3 : 1;
}

void fa_open_store(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "call", redis_call },
        { "close", redis_close },
        { NULL, NULL },
    };
    fa_newclass(L, FA_REDIS_MT, methods, redis_close, redis_tostring);
    luaL_newmetatable(L, FA_REPLY_MT);
    lua_pushcfunction(L, reply_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_redis);
    lua_setfield(L, -2, "redis");
}

#else

void fa_open_store(lua_State *L)
{
    (void)L;
}

#endif
