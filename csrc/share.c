/* core.share(): what the sessions of one client share -- libcurl's
 * connection cache, DNS cache and TLS sessions -- whether each runs alone
 * (session:perform) or several run at once on a multi.
 *
 * The caches belong to a libcurl share handle, which may not be cleaned up
 * while an easy handle still uses it, and Lua finalizes objects in no order
 * we could rely on (lua_close finalizes everything).  So the handle lives in
 * a counted C block: the share userdata holds one count, each session made
 * with it another, and the last to let go cleans it up.  All of them run in
 * one thread (the Lua state's), so the share needs no lock callbacks. */
#include <stdlib.h>
#include <string.h>
#include "transfer.h"

struct fa_share {
    CURLSH *sh;
    int users;
};

typedef struct {
    fa_share *share; /* NULL once closed */
} share_ud;

fa_share *fa_share_check(lua_State *L, int idx)
{
    share_ud *u = (share_ud *)luaL_checkudata(L, idx, FA_SHARE_MT);
    if (u->share == NULL)
        luaL_error(L, "attempt to use a closed share");
    return u->share;
}

CURLSH *fa_share_handle(const fa_share *sh)
{
    return sh->sh;
}

void fa_share_hold(fa_share *sh)
{
    sh->users++;
}

void fa_share_drop(fa_share *sh)
{
    if (--sh->users > 0)
        return;
    curl_share_cleanup(sh->sh); /* closes the connections it kept */
    free(sh);
}

/* share:close(): the share's own count; sessions made with it go on
 * sharing until they close.  Idempotent (also __gc and __close). */
static int sh_close(lua_State *L)
{
    share_ud *u = (share_ud *)luaL_checkudata(L, 1, FA_SHARE_MT);
    if (u->share != NULL) {
        fa_share_drop(u->share);
        u->share = NULL;
    }
    return 0;
}

static int sh_tostring(lua_State *L)
{
    share_ud *u = (share_ud *)luaL_checkudata(L, 1, FA_SHARE_MT);
    lua_pushfstring(L, "fileapi.share (%s)", u->share ? "open" : "closed");
    return 1;
}

static int share_setup(CURLSH *sh)
{
    int ok = curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) == CURLSHE_OK &&
             curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) == CURLSHE_OK;
#if LIBCURL_VERSION_NUM >= 0x073900 /* 7.57: the connection cache */
    ok = ok && curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) == CURLSHE_OK;
#endif
    return ok;
}

/* core.share() -> share | nil, err */
static int l_share(lua_State *L)
{
    share_ud *u = fa_newuserdata(L, sizeof *u);
    fa_share *sh;
    u->share = NULL;
    fa_setmetatable(L, FA_SHARE_MT);
    sh = malloc(sizeof *sh);
    if (sh == NULL)
        return luaL_error(L, "not enough memory");
    sh->users = 1;
    sh->sh = curl_share_init();
    if (sh->sh == NULL || !share_setup(sh->sh)) {
        if (sh->sh != NULL)
            curl_share_cleanup(sh->sh);
        free(sh);
        lua_pushnil(L);
        fa_error_push(L, FA_KIND(io), "libcurl could not create a share");
        return 2;
    }
    u->share = sh;
    return 1;
}

void fa_open_share(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"close", sh_close},
        {NULL, NULL},
    };
    fa_newclass(L, FA_SHARE_MT, methods, sh_close, sh_tostring);
    lua_pushcfunction(L, l_share);
    lua_setfield(L, -2, "share");
}
