/* The error object: a plain table with kind/message/status/... fields and a
 * metatable whose __tostring gives one readable line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fileapi.h"

void fa_error_push(lua_State *L, const char *kind, const char *message)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    fa_setmetatable(L, FA_ERROR_MT);
}

static const struct {
    int code;
    const char *name;
} errno_names[] = {
    {EPERM, "EPERM"}, {ENOENT, "ENOENT"}, {EIO, "EIO"}, {EBADF, "EBADF"}, {ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"}, {EBUSY, "EBUSY"}, {EEXIST, "EEXIST"}, {EXDEV, "EXDEV"}, {ENOTDIR, "ENOTDIR"},
    {EISDIR, "EISDIR"}, {EINVAL, "EINVAL"}, {ENFILE, "ENFILE"}, {EMFILE, "EMFILE"}, {ETXTBSY, "ETXTBSY"},
    {EFBIG, "EFBIG"}, {ENOSPC, "ENOSPC"}, {ESPIPE, "ESPIPE"}, {EROFS, "EROFS"}, {EMLINK, "EMLINK"},
    {ENAMETOOLONG, "ENAMETOOLONG"}, {ENOTEMPTY, "ENOTEMPTY"}, {ELOOP, "ELOOP"}, {EDQUOT, "EDQUOT"},
    {EOVERFLOW, "EOVERFLOW"}, {EAGAIN, "EAGAIN"}, {EINTR, "EINTR"}, {ETIMEDOUT, "ETIMEDOUT"},
};

/* The number and, for the common ones, the symbolic name: ENOSPC and EACCES
 * call for different things, and numbers differ between systems. */
void fa_error_set_errno(lua_State *L, int e)
{
    size_t i;
    fa_pushwhole(L, e);
    lua_setfield(L, -2, "errno");
    for (i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++) {
        if (errno_names[i].code == e) {
            lua_pushstring(L, errno_names[i].name);
            lua_setfield(L, -2, "errno_name");
            break;
        }
    }
}

int fa_push_errno(lua_State *L, const char *what, int e)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(e));
    fa_error_push(L, FA_KIND(io), lua_tostring(L, -1));
    lua_remove(L, -2);
    fa_error_set_errno(L, e);
    return 2;
}

/* Every kind an error may have, from the one list (lua/fileapi/kinds.lua). */
static const char *const kinds[] = {
#define KIND_NAME(kind) #kind,
    FA_KINDS(KIND_NAME)
#undef KIND_NAME
};

static int known_kind(const char *kind)
{
    size_t i;
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i], kind) == 0)
            return 1;
    return 0;
}

/* libcurl's results by kind, from the same list; any other is FA_CURL_OTHER. */
static const struct {
    CURLcode code;
    const char *name, *kind;
} curl_kinds[] = {
#define CURL_KIND(code, kind) {code, #code, #kind},
    FA_CURL_KINDS(CURL_KIND)
#undef CURL_KIND
};

#define NAME_OF(x) #x
#define NAME(x) NAME_OF(x)

const char *fa_kind_for_curl(CURLcode code)
{
    size_t i;
    if (code == CURLE_OK)
        return NULL;
    for (i = 0; i < sizeof curl_kinds / sizeof curl_kinds[0]; i++)
        if (curl_kinds[i].code == code)
            return curl_kinds[i].kind;
    return NAME(FA_CURL_OTHER);
}

/* core.error_tables() -> { kinds = { ... }, curl = { CURLE_NAME = kind } }:
 * the C side of the kinds list, for the spec that holds them together. */
static int l_error_tables(lua_State *L)
{
    size_t i;
    lua_createtable(L, 0, 2);
    lua_newtable(L);
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        lua_pushstring(L, kinds[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "kinds");
    lua_newtable(L);
    for (i = 0; i < sizeof curl_kinds / sizeof curl_kinds[0]; i++) {
        lua_pushstring(L, curl_kinds[i].kind);
        lua_setfield(L, -2, curl_kinds[i].name);
    }
    lua_setfield(L, -2, "curl");
    return 1;
}

static int describe_thunk(lua_State *L)
{
    fa_tolstring(L, 1, NULL);
    return 1;
}

/* What a callback raised, as text, into out: tostring of any value, under a
 * protected call since a __tostring may raise too (and this runs inside a
 * libcurl callback, where nothing may unwind). */
void fa_describe(lua_State *L, int idx, char *out, size_t size)
{
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    lua_pushcfunction(L, describe_thunk);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_type(L, -1) == LUA_TSTRING)
        snprintf(out, size, "%s", lua_tostring(L, -1));
    else
        snprintf(out, size, "(a %s that cannot be shown)", luaL_typename(L, idx));
    lua_pop(L, 1);
}

/* One line: newlines in a server's message must not split a log record. */
static void add_flat(luaL_Buffer *b, const char *s)
{
    for (; *s; s++)
        luaL_addchar(b, (*s == '\r' || *s == '\n' || *s == '\t') ? ' ' : *s);
}

#define FA_FIELDS_MAX 400
#define FA_FIELDS_KEYS 32

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

struct text {
    char data[FA_FIELDS_MAX + 8];
    size_t len;
};

/* Appends s flattened to one line; past the bound, "..." and nothing more. */
static void text_add(struct text *t, const char *s)
{
    for (; *s; s++) {
        if (t->len >= FA_FIELDS_MAX) {
            if (t->len == FA_FIELDS_MAX) {
                memcpy(t->data + t->len, "...", 3);
                t->len += 3;
            }
            return;
        }
        t->data[t->len++] = (*s == '\r' || *s == '\n' || *s == '\t') ? ' ' : *s;
    }
}

/* " (name: message; other: message)": what a 422 said per field, by field
 * name, bounded so a huge answer still gives one readable line.  Built
 * before the luaL_Buffer starts, which owns the stack top meanwhile. */
static void field_messages(lua_State *L, int err, struct text *t)
{
    const char *names[FA_FIELDS_KEYS] = {NULL};
    int n = 0, i, j, fields;
    t->len = 0;
    lua_getfield(L, err, "fields");
    fields = lua_gettop(L);
    if (lua_type(L, fields) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, fields) != 0) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING && n < FA_FIELDS_KEYS)
                names[n++] = lua_tostring(L, -1); /* kept alive by the fields table */
        }
    }
    qsort(names, (size_t)n, sizeof names[0], compare_names);
    for (i = 0; i < n; i++) {
        text_add(t, i == 0 ? " (" : "; ");
        text_add(t, names[i]);
        text_add(t, ":");
        lua_getfield(L, fields, names[i]);
        if (lua_type(L, -1) == LUA_TSTRING) {
            text_add(t, " ");
            text_add(t, lua_tostring(L, -1));
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            int m = (int)fa_rawlen(L, -1);
            for (j = 1; j <= m; j++) {
                lua_rawgeti(L, -1, j);
                if (lua_type(L, -1) == LUA_TSTRING) {
                    text_add(t, " ");
                    text_add(t, lua_tostring(L, -1));
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    if (n > 0)
        text_add(t, ")");
    t->data[t->len] = '\0';
    lua_pop(L, 1);
}

static int error_tostring(lua_State *L)
{
    luaL_Buffer b;
    const char *kind, *message;
    int has_status, status, attempts;
    struct text fields;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    field_messages(L, 1, &fields);
    lua_getfield(L, 1, "kind");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "status");
    lua_getfield(L, 1, "attempts");
    kind = lua_tostring(L, 2);
    message = lua_tostring(L, 3);
    has_status = lua_type(L, 4) == LUA_TNUMBER;
    status = (int)lua_tointeger(L, 4);
    attempts = lua_type(L, 5) == LUA_TNUMBER ? (int)lua_tointeger(L, 5) : 0;
    /* the buffer may take stack slots: no relative indices past here */
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "fileapi: ");
    add_flat(&b, kind ? kind : "error");
    if (has_status) {
        char text[32];
        snprintf(text, sizeof text, " (HTTP %d)", status);
        luaL_addstring(&b, text);
    }
    luaL_addstring(&b, ": ");
    add_flat(&b, message ? message : "no message");
    luaL_addstring(&b, fields.data);
    if (attempts > 1) {
        char text[32];
        snprintf(text, sizeof text, " [%d attempts]", attempts);
        luaL_addstring(&b, text);
    }
    luaL_pushresult(&b);
    return 1;
}

/* err .. "text" and "text" .. err: the error as its one line. */
static int error_concat(lua_State *L)
{
    int i;
    for (i = 1; i <= 2; i++) {
        if (lua_type(L, i) == LUA_TTABLE && luaL_getmetafield(L, i, "__tostring")) {
            lua_pushvalue(L, i);
            lua_call(L, 1, 1);
        } else if (lua_type(L, i) == LUA_TSTRING || lua_type(L, i) == LUA_TNUMBER) {
            lua_pushvalue(L, i);
        } else {
            return luaL_error(L, "attempt to concatenate a %s value", luaL_typename(L, i));
        }
    }
    lua_concat(L, 2);
    return 1;
}

/* core.error(t): gives t the error metatable (the Lua layer builds errors
 * from API bodies with it). */
static int l_error(lua_State *L)
{
    const char *kind;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "kind");
    kind = lua_tostring(L, -1);
    /* a kind outside the list is a programming error: say so at once */
    if (kind == NULL || !known_kind(kind))
        return luaL_error(L, "fileapi: unknown error kind '%s'", kind ? kind : "(none)");
    lua_pop(L, 1);
    fa_setmetatable(L, FA_ERROR_MT);
    return 1;
}

static int l_is_error(lua_State *L)
{
    int same = 0;
    if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, FA_ERROR_MT);
        same = lua_rawequal(L, -1, -2);
    }
    lua_pushboolean(L, same);
    return 1;
}

void fa_open_errors(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"error", l_error},
        {"is_error", l_is_error},
        {"error_tables", l_error_tables},
        {NULL, NULL},
    };
    luaL_newmetatable(L, FA_ERROR_MT);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, error_concat);
    lua_setfield(L, -2, "__concat");
    lua_pop(L, 1);
    fa_setfuncs(L, funcs);
}
