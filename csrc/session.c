/* A session: one libcurl easy handle per client, so connections (and TLS
 * sessions) are kept alive and reused from call to call -- across the
 * sessions of a share too (share.c).  perform() runs one request described
 * by a Lua table on the session's own multi handle, by the same code a
 * core.multi() runs many with (drive.c): start it, step and wait until it is
 * over, then -- the session idle again -- push what came of it (results.c).
 * A callback may call back into its own client: that call is refused while
 * the transfer runs, and close() is deferred until it has been reported. */
#include <stdlib.h>
#include <string.h>
#include "transfer.h"

fa_session *fa_session_check_open(lua_State *L, int idx)
{
    fa_session *s = (fa_session *)luaL_checkudata(L, idx, FA_SESSION_MT);
    if (s->closed)
        luaL_error(L, "attempt to use a closed session");
    return s;
}

static int push_error(lua_State *L, const char *kind, const char *msg)
{
    lua_pushnil(L);
    fa_error_push(L, kind, msg);
    return 2;
}

/* nil, err for a call on a session whose transfer is not over: from one of
 * that transfer's callbacks, or beside it (it runs on a multi). */
int fa_session_busy_error(lua_State *L, const fa_session *s)
{
    if (s->x.d != NULL && !s->x.d->driving && !s->close_pending)
        return push_error(L, FA_KIND(invalid_argument), "the client is busy: its transfer on a multi is not over");
    return push_error(L, FA_KIND(invalid_argument), "the client is busy: a call from inside one of its own callbacks");
}

/* session:perform(request) -> response | nil, err */
static int s_perform(lua_State *L)
{
    fa_session *s = fa_session_check_open(L, 1);
    struct xfer *x = &s->x;
    int tramp, rc, cause, nret;

    luaL_checktype(L, 2, LUA_TTABLE);
    fa_reserve(L, 40, "fileapi: perform");
    if (s->busy || s->close_pending)
        return fa_session_busy_error(L, s);
    if (s->own.cm == NULL && fa_drive_open(&s->own) != 0)
        return push_error(L, FA_KIND(io), "libcurl could not create a handle");
    lua_pushcfunction(L, fa_trampoline);
    tramp = lua_gettop(L);
    rc = fa_start(L, &s->own, s, 1, 2, tramp);
    if (rc != 0)
        return rc;
    while (!x->done) {
        fa_drive_interrupt(&s->own);
        fa_drive_step(&s->own);
        if (!x->done)
            fa_drive_wait(&s->own, FA_WAIT_SLICE_MS);
    }
    fa_drive_leave(&s->own);
    /* the client works again before anything is pushed (pushing may raise);
     * an error needs neither buffer, so a close() pending frees them first */
    cause = fa_drive_push_cause(L, x);
    fa_drive_release(L, x);
    nret = fa_push_result(L, x, cause);
    fa_buf_trim(&s->body);
    fa_buf_trim(&s->head);
    return nret;
}

/* close(): at once when idle.  A transfer running on a multi ends aborted
 * (reported by the multi's next run), or -- when close() comes from a
 * callback -- at libcurl's next call into it; the session closes once that
 * transfer has been reported. */
void fa_session_release(fa_session *s)
{
    if (s->closed)
        return;
    if (s->busy) {
        s->close_pending = 1;
        if (s->x.d != NULL && !s->x.d->driving)
            fa_drive_cancel(&s->x, "the client was closed during the call");
        return;
    }
    s->closed = 1;
    s->close_pending = 0;
    fa_drive_close(&s->own);
    curl_easy_cleanup(s->curl);
    s->curl = NULL;
    if (s->share != NULL)
        fa_share_drop(s->share); /* after the handle that used it */
    s->share = NULL;
    free(s->body.data);
    free(s->head.data);
    memset(&s->body, 0, sizeof s->body);
    memset(&s->head, 0, sizeof s->head);
}

static int s_close(lua_State *L)
{
    fa_session_release((fa_session *)luaL_checkudata(L, 1, FA_SESSION_MT));
    return 0;
}

/* __gc: nothing will report a transfer still held (only lua_close finalizes
 * a session whose transfer runs: a running one is anchored), so it leaves
 * its multi unreported first. */
static int s_gc(lua_State *L)
{
    fa_session *s = (fa_session *)luaL_checkudata(L, 1, FA_SESSION_MT);
    if (s->busy && s->x.d != NULL && !s->x.d->driving)
        fa_drive_detach(L, &s->x);
    fa_session_release(s);
    return 0;
}

static int s_is_open(lua_State *L)
{
    fa_session *s = (fa_session *)luaL_checkudata(L, 1, FA_SESSION_MT);
    lua_pushboolean(L, !s->closed && !s->close_pending);
    return 1;
}

static int s_tostring(lua_State *L)
{
    fa_session *s = (fa_session *)luaL_checkudata(L, 1, FA_SESSION_MT);
    lua_pushfstring(L, "fileapi.session (%s)", s->closed ? "closed" : "open");
    return 1;
}

/* core.session([share]) -> session | nil, err */
static int l_session(lua_State *L)
{
    fa_share *share = lua_isnoneornil(L, 1) ? NULL : fa_share_check(L, 1);
    fa_session *s = fa_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->closed = 1;
    s->x.anchor = LUA_NOREF;
    fa_setmetatable(L, FA_SESSION_MT);
    s->curl = curl_easy_init();
    if (s->curl == NULL) {
        lua_pushnil(L);
        fa_error_push(L, FA_KIND(io), "libcurl could not create a handle");
        return 2;
    }
    if (share != NULL) { /* kept across curl_easy_reset */
        curl_easy_setopt(s->curl, CURLOPT_SHARE, fa_share_handle(share));
        fa_share_hold(share);
        s->share = share;
    }
    s->closed = 0;
    return 1;
}

void fa_open_session(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"perform", s_perform},
        {"close", s_close},
        {"is_open", s_is_open},
        {NULL, NULL},
    };
    fa_newclass(L, FA_SESSION_MT, methods, s_close, s_tostring);
    luaL_getmetatable(L, FA_SESSION_MT);
    lua_pushcfunction(L, s_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_session);
    lua_setfield(L, -2, "session");
}
