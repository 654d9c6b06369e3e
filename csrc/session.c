/* A session: one libcurl easy handle per client, so connections (and TLS
 * sessions) are kept alive and reused from call to call.  perform() runs one
 * request described by a Lua table: read it (request.c), run it
 * (transfer.c), then -- the handle reset and the busy guard cleared --
 * push what came of it (results.c).  A callback may call back into its own
 * client: that call is refused while this one runs, and close() is
 * deferred until it has returned. */
#include <stdlib.h>
#include <string.h>
#include "transfer.h"

static fa_session *check_open(lua_State *L)
{
    fa_session *s = (fa_session *)luaL_checkudata(L, 1, FA_SESSION_MT);
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

static void session_release(fa_session *s);

/* session:perform(request) -> response | nil, err */
static int s_perform(lua_State *L)
{
    fa_session *s = check_open(L);
    struct request r;
    struct xfer x;
    struct outcome o;
    struct curl_slist *hdrs;
    int nret;

    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checkstack(L, 40, "fileapi: perform");
    if (s->busy || s->close_pending) /* called from one of the running call's callbacks */
        return push_error(L, FA_KIND(invalid_argument),
                          "the client is busy: a call from inside one of its own callbacks");
    memset(&x, 0, sizeof x);
    x.s = s;
    x.L = L;
    x.last_sent = -1;
    fa_read_request(L, 2, &r, &x);
    if (!fa_is_http_url(r.url)) /* as the cosocket transport answers */
        return push_error(L, FA_KIND(invalid_argument), "not an http(s) URL");
    x.max_body = (size_t)r.max_response;
    x.idle_timeout = r.idle_timeout;
    lua_pushcfunction(L, fa_trampoline);
    x.tramp_idx = lua_gettop(L);
    lua_pushnil(L);
    x.cause_idx = lua_gettop(L);
    /* busy from here: a rewind function may call close() or the client */
    s->busy = 1;
    if (x.mp != NULL) { /* to the first byte, under the same protection as a callback */
        if (fa_rewind_body(&x) != 0) {
            s->busy = 0;
            if (s->close_pending)
                session_release(s);
            return fa_push_early_failure(L, &x);
        }
    }
    hdrs = fa_build_headers(L, r.headers_idx, r.expect_continue, &x.oom);
    if (x.oom || s->close_pending) {
        curl_slist_free_all(hdrs);
        s->busy = 0;
        if (s->close_pending)
            session_release(s);
        return x.oom ? luaL_error(L, "not enough memory")
                     : push_error(L, FA_KIND(aborted), "the client was closed by a callback during the call");
    }
    s->body.len = s->head.len = 0;
    fa_transfer(s, &r, &x, hdrs, &o);
    curl_slist_free_all(hdrs);
    s->busy = 0;
    if (s->close_pending) { /* an error needs neither buffer: free them first */
        session_release(s);
        return fa_push_failure(L, &o, &x);
    }
    /* from here on a raise (memory) leaves a client that works */
    if (o.code != CURLE_OK)
        nret = fa_push_failure(L, &o, &x);
    else
        nret = fa_push_response(L, &o, &x);
    fa_buf_trim(&s->body);
    fa_buf_trim(&s->head);
    return nret;
}

static void session_release(fa_session *s)
{
    if (s->closed)
        return;
    if (s->busy) { /* close() from a callback: done when perform returns */
        s->close_pending = 1;
        return;
    }
    s->closed = 1;
    curl_easy_cleanup(s->curl);
    s->curl = NULL;
    free(s->body.data);
    free(s->head.data);
    memset(&s->body, 0, sizeof s->body);
    memset(&s->head, 0, sizeof s->head);
}
static int s_close(lua_State *L)
{
    session_release((fa_session *)luaL_checkudata(L, 1, FA_SESSION_MT));
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

/* core.session() -> session | nil, err */
static int l_session(lua_State *L)
{
    fa_session *s = fa_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->closed = 1;
    fa_setmetatable(L, FA_SESSION_MT);
    s->curl = curl_easy_init();
    if (s->curl == NULL) {
        lua_pushnil(L);
        fa_error_push(L, FA_KIND(io), "libcurl could not create a handle");
        return 2;
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
    lua_pushcfunction(L, l_session);
    lua_setfield(L, -2, "session");
}
