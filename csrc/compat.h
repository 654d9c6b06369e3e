/* Shims so one source builds on Lua 5.1-5.4 and LuaJIT 2.1.  Every shim is
 * static and prefixed, so nothing clashes with symbols the host already has. */
#ifndef FILEAPI_COMPAT_H
#define FILEAPI_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 504
#define fa_newuserdata(L, sz) lua_newuserdatauv((L), (sz), 0)
#else
#define fa_newuserdata(L, sz) lua_newuserdata((L), (sz))
#endif

#if LUA_VERSION_NUM >= 502
#define fa_rawlen(L, i) lua_rawlen((L), (i))
#else
#define fa_rawlen(L, i) lua_objlen((L), (i))
#endif

/* Whole numbers stay integers where the language has them. */
#if LUA_VERSION_NUM >= 503
#define fa_pushwhole(L, n) lua_pushinteger((L), (lua_Integer)(n))
#else
#define fa_pushwhole(L, n) lua_pushnumber((L), (lua_Number)(n))
#endif

static inline void fa_setfuncs(lua_State *L, const luaL_Reg *l)
{
    for (; l->name != NULL; l++) {
        lua_pushcfunction(L, l->func);
        lua_setfield(L, -2, l->name);
    }
}

/* A userdata class: methods in __index; close serves __gc and __close
 * (Lua 5.4's to-be-closed variables), so cleanup must be idempotent. */
static inline void fa_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                               lua_CFunction close, lua_CFunction tostring)
{
    luaL_newmetatable(L, tname);
    lua_newtable(L);
    fa_setfuncs(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

static inline void fa_setmetatable(lua_State *L, const char *tname)
{
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}

/* The userdata at idx if its metatable is tname, else NULL (luaL_testudata
 * is missing from 5.1). */
static inline void *fa_testudata(lua_State *L, int idx, const char *tname)
{
    void *p = lua_touserdata(L, idx);
    int same;
    if (p == NULL || !lua_getmetatable(L, idx))
        return NULL;
    luaL_getmetatable(L, tname);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}

/* An optional number field of the table at idx; raises on a wrong type. */
static inline double fa_optnumfield(lua_State *L, int idx, const char *k, double def)
{
    double v = def;
    lua_getfield(L, idx, k);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "field '%s' must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* An optional string field; the string stays alive while the table does. */
static inline const char *fa_optstrfield(lua_State *L, int idx, const char *k, size_t *len)
{
    const char *s = NULL;
    lua_getfield(L, idx, k);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "field '%s' must be a string", k);
        s = lua_tolstring(L, -1, len);
    }
    lua_pop(L, 1);
    return s;
}

/* luaL_tolstring (5.2+): any value as text, __tostring honoured; pushes it. */
#if LUA_VERSION_NUM >= 502
#define fa_tolstring(L, i, len) luaL_tolstring((L), (i), (len))
#else
static inline const char *fa_tolstring(lua_State *L, int idx, size_t *len)
{
    if (!luaL_callmeta(L, idx, "__tostring")) {
        switch (lua_type(L, idx)) {
        case LUA_TNUMBER:
        case LUA_TSTRING:
            lua_pushvalue(L, idx);
            lua_tostring(L, -1);
            break;
        case LUA_TBOOLEAN:
            lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
            break;
        case LUA_TNIL:
            lua_pushliteral(L, "nil");
            break;
        default:
            lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
            break;
        }
    }
    return lua_tolstring(L, -1, len);
}
#endif

#endif
