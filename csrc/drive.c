/* The driver: transfers on a libcurl multi handle, in one thread.
 *
 * session:perform and core.multi() run their transfers by this one code:
 *   fa_start          reads a request, anchors its Lua values, rewinds its
 *                     body and adds the session's handle to the multi handle;
 *   fa_drive_step     lets libcurl move every transfer as far as it can
 *                     without waiting (curl_multi_perform: the callbacks run
 *                     inside it), then takes every transfer that finished
 *                     (curl_multi_info_read) or was ended meanwhile off the
 *                     multi handle and queues it, its outcome read;
 *   fa_drive_wait     waits for the network (curl_multi_poll), at most a
 *                     slice at a time so that Ctrl-C is seen within one;
 *   fa_drive_release  once the caller has pushed a queued transfer's result:
 *                     the session is idle again.
 * A perform is a driver of one (the session's own multi handle) stepped and
 * waited on until its transfer is queued, as curl_easy_perform does.
 *
 * Between fa_drive_enter and fa_drive_leave the driver has a lua_State and
 * the stack slot of a trampoline (transfer.c) for the callbacks, and is
 * "driving": a call back into it from a callback is refused by the caller,
 * and a transfer ended from a callback (remove, close) is only marked, and
 * taken off by the step once libcurl has returned -- libcurl forbids
 * removing a handle from inside its callbacks.  Ending one outside of that
 * takes it off at once.  Before any handle is removed its transfer is
 * marked stopped: removing an unfinished one runs its progress callback,
 * which then ends at once without Lua. */
#include <string.h>
#include "transfer.h"

static int push_error(lua_State *L, const char *kind, const char *msg)
{
    lua_pushnil(L);
    fa_error_push(L, kind, msg);
    return 2;
}

static void unlink_live(fa_driver *d, struct xfer *x)
{
    struct xfer **p = &d->live;
    while (*p != NULL && *p != x)
        p = &(*p)->next;
    if (*p == x)
        *p = x->next;
    x->next = NULL;
}

void fa_drive_enter(fa_driver *d, lua_State *L, int tramp_idx)
{
    d->L = L;
    d->tramp_idx = tramp_idx;
    d->driving = 1;
}

void fa_drive_leave(fa_driver *d)
{
    d->L = NULL;
    d->tramp_idx = 0;
    d->driving = 0;
}

/* What a transfer holds, let go: the session is idle (closed, if close()
 * came meanwhile: that is the caller's, see fa_drive_release). */
static void unhold(lua_State *L, struct xfer *x)
{
    if (x->claimed) {
        if (x->mp != NULL)
            fa_multipart_claim(x->mp, 0);
        if (x->sink != NULL)
            fa_sink_claim(x->sink, 0);
        x->claimed = 0;
    }
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, x->anchor);
    x->anchor = LUA_NOREF;
    x->d = NULL;
    x->next = NULL;
    x->done = 0;
    x->stop = 1;
    x->s->busy = 0;
}

/* The request's Lua values in one table, referenced from the registry:
 * every slot exists from the start (false when unused), so that storing
 * err.cause later, inside libcurl's frames, allocates nothing. */
static void anchor(lua_State *L, struct xfer *x, const struct request *r, int s_idx)
{
    const int from[FA_A_COUNT + 1] = {
        0, s_idx, r->body_idx, r->mp_idx, r->sink_idx, r->decide_idx, r->received_idx, r->progress_idx, 0,
    };
    int i;
    lua_createtable(L, FA_A_COUNT, 0);
    for (i = 1; i <= FA_A_COUNT; i++) {
        if (from[i] != 0)
            lua_pushvalue(L, from[i]);
        else
            lua_pushboolean(L, 0);
        lua_rawseti(L, -2, i);
    }
    x->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The body and the sink, for this transfer alone. */
static int claim(struct xfer *x)
{
    if (x->mp != NULL && fa_multipart_claim(x->mp, 1) != 0) {
        fa_xfer_fail(x, FA_KIND(invalid_argument), "the multipart body is in use by another transfer");
        return -1;
    }
    if (x->sink != NULL && fa_sink_claim(x->sink, 1) != 0) {
        if (x->mp != NULL)
            fa_multipart_claim(x->mp, 0);
        fa_xfer_fail(x, FA_KIND(invalid_argument), "the sink is in use by another transfer");
        return -1;
    }
    x->claimed = 1;
    return 0;
}

/* A start that failed after the transfer was held: let go, then say why
 * (pushing may raise; the session is already idle). */
static int start_failed(lua_State *L, fa_driver *d, struct xfer *x)
{
    fa_session *s = x->s;
    int cause = fa_drive_push_cause(L, x);
    fa_drive_leave(d);
    unhold(L, x);
    if (s->close_pending)
        fa_session_release(s);
    return fa_push_early_failure(L, x, cause);
}

/* Starts the request in the table at t on s (its userdata at s_idx) on d.
 * Returns 0 when it runs, with d entered on L (tramp_idx: a trampoline the
 * caller pushed); else d is left, the session idle, nil and err are pushed
 * and 2 returned.  Raises for wrong types before anything is held, and for
 * memory after letting go. */
int fa_start(lua_State *L, fa_driver *d, fa_session *s, int s_idx, int t, int tramp_idx)
{
    struct request r;
    struct xfer *x = &s->x;
    CURLMcode mc;

    memset(x, 0, sizeof *x);
    x->s = s;
    x->anchor = LUA_NOREF;
    x->last_sent = -1;
    fa_read_request(L, t, &r, x);
    if (!fa_is_http_url(r.url)) /* as the cosocket transport answers */
        return push_error(L, FA_KIND(invalid_argument), "not an http(s) URL");
    x->max_body = (size_t)r.max_response;
    x->idle_timeout = r.idle_timeout;
    anchor(L, x, &r, s_idx);
    /* held from here: a rewind function may call back in */
    s->busy = 1;
    x->d = d;
    fa_drive_enter(d, L, tramp_idx);
    if (claim(x) != 0)
        return start_failed(L, d, x);
    if (x->mp != NULL && fa_rewind_body(x) != 0) /* to the first byte, as a callback */
        return start_failed(L, d, x);
    x->hdrs = fa_build_headers(L, r.headers_idx, r.expect_continue, &x->oom);
    if (s->close_pending || x->stop)
        fa_xfer_fail(x, FA_KIND(aborted), "the client was closed by a callback during the call");
    if (x->oom || x->fail_kind != NULL)
        return start_failed(L, d, x);
    s->body.len = s->head.len = 0;
    curl_easy_reset(s->curl); /* keeps the connections and the share */
    fa_configure(s->curl, &r, x);
    mc = curl_multi_add_handle(d->cm, s->curl);
    if (mc != CURLM_OK) {
        fa_xfer_fail(x, FA_KIND(io), curl_multi_strerror(mc));
        curl_easy_reset(s->curl);
        return start_failed(L, d, x);
    }
    x->next = d->live;
    d->live = x;
    d->count++;
    return 0;
}

/* libcurl is done with x (code), or x was ended: its last report, its
 * outcome read, its handle off the multi handle and reset, and x queued. */
static void finish(fa_driver *d, struct xfer *x, CURLcode code)
{
    CURL *c = x->s->curl;
    code = fa_transfer_settle(x, code);
    x->stop = 1; /* no Lua from here: removing may call back */
    fa_gather(c, code, x->errbuf, &x->o);
    curl_multi_remove_handle(d->cm, c);
    curl_easy_reset(c);
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    unlink_live(d, x);
    x->done = 1;
    if (d->done_tail != NULL)
        d->done_tail->next = x;
    else
        d->done = x;
    d->done_tail = x;
}

void fa_drive_step(fa_driver *d)
{
    int running = 0, left = 0;
    CURLMsg *msg;
    struct xfer *x, *next;
    CURLMcode mc = curl_multi_perform(d->cm, &running);
    if (mc != CURLM_OK) { /* the multi handle itself failed (memory): none can go on */
        for (x = d->live; x != NULL; x = x->next) {
            fa_xfer_fail(x, FA_KIND(io), curl_multi_strerror(mc));
            x->stop = 1;
        }
    }
    while ((msg = curl_multi_info_read(d->cm, &left)) != NULL) {
        char *p = NULL;
        CURLcode code = msg->data.result;
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* msg is gone once its handle is removed: read it first */
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &p);
        x = (struct xfer *)(void *)p;
        if (x != NULL && x->d == d && !x->done)
            finish(d, x, code);
    }
    for (x = d->live; x != NULL; x = next) { /* ended from a callback */
        next = x->next;
        if (x->stop)
            finish(d, x, CURLE_ABORTED_BY_CALLBACK);
    }
}

void fa_drive_wait(fa_driver *d, long ms)
{
    if (ms > FA_WAIT_SLICE_MS)
        ms = FA_WAIT_SLICE_MS;
    if (ms > 0)
        curl_multi_poll(d->cm, NULL, 0, (int)ms, NULL);
}

/* Ends x with kind aborted: at once, or, while its driver drives, at the
 * next step (its callbacks end it as soon as libcurl calls one). */
void fa_drive_cancel(struct xfer *x, const char *why)
{
    fa_driver *d = x->d;
    if (d == NULL || x->done)
        return;
    fa_xfer_fail(x, FA_KIND(aborted), why);
    x->stop = 1;
    if (!d->driving)
        finish(d, x, CURLE_ABORTED_BY_CALLBACK);
}

void fa_drive_cancel_all(fa_driver *d, const char *why)
{
    struct xfer *x, *next;
    for (x = d->live; x != NULL; x = next) {
        next = x->next;
        fa_drive_cancel(x, why);
    }
}

/* Ctrl-C (the core's interrupt flag): every running transfer ends. */
int fa_drive_interrupt(fa_driver *d)
{
    if (d->live == NULL || !fa_interrupted())
        return 0;
    fa_drive_cancel_all(d, "interrupted");
    return 1;
}

struct xfer *fa_drive_first_done(fa_driver *d)
{
    return d->done;
}

/* Pushes what a callback of x raised (nil if none) and returns its slot;
 * allocates nothing. */
int fa_drive_push_cause(lua_State *L, const struct xfer *x)
{
    if (x->has_cause) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, x->anchor);
        lua_rawgeti(L, -1, FA_A_CAUSE);
        lua_remove(L, -2);
    } else {
        lua_pushnil(L);
    }
    return lua_gettop(L);
}

/* Pushes the session userdata x runs on. */
void fa_drive_push_session(lua_State *L, const struct xfer *x)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->anchor);
    lua_rawgeti(L, -1, FA_A_SESSION);
    lua_remove(L, -2);
}

/* x, the first queued, was reported: off the queue, and its session idle
 * (or closed, if close() came while it ran). */
void fa_drive_release(lua_State *L, struct xfer *x)
{
    fa_driver *d = x->d;
    fa_session *s = x->s;
    if (d == NULL || d->done != x)
        return;
    d->done = x->next;
    if (d->done == NULL)
        d->done_tail = NULL;
    d->count--;
    unhold(L, x);
    if (s->close_pending)
        fa_session_release(s);
}

/* x leaves its driver unreported (its session or its multi is going away);
 * never while the driver drives. */
void fa_drive_detach(lua_State *L, struct xfer *x)
{
    fa_driver *d = x->d;
    struct xfer **p;
    if (d == NULL)
        return;
    if (!x->done) {
        x->stop = 1;
        curl_multi_remove_handle(d->cm, x->s->curl);
        curl_easy_reset(x->s->curl);
        unlink_live(d, x);
    } else {
        for (p = &d->done; *p != NULL && *p != x; p = &(*p)->next)
            ;
        if (*p == x)
            *p = x->next;
        d->done_tail = NULL;
        for (p = &d->done; *p != NULL; p = &(*p)->next)
            d->done_tail = *p;
    }
    d->count--;
    unhold(L, x);
}

/* Every transfer leaves d unreported; sessions closed meanwhile close. */
void fa_drive_abandon(lua_State *L, fa_driver *d)
{
    while (d->live != NULL || d->done != NULL) {
        struct xfer *x = d->live != NULL ? d->live : d->done;
        fa_session *s = x->s;
        fa_drive_detach(L, x);
        if (s->close_pending)
            fa_session_release(s);
    }
}

/* The multi handle.  A share's connections go back to its cache as each
 * transfer ends, bounded by the multi handle that ran it: libcurl's default
 * bound is four per handle running on it, which would cut a pool of many
 * down to four whenever one runs alone (perform).  So every driver keeps
 * as many as a large pool needs (curl -Z runs 50 at once). */
int fa_drive_open(fa_driver *d)
{
    d->cm = curl_multi_init();
    if (d->cm == NULL)
        return -1;
    curl_multi_setopt(d->cm, CURLMOPT_MAXCONNECTS, (long)FA_MAX_IDLE_CONNECTIONS);
    return 0;
}

void fa_drive_close(fa_driver *d)
{
    if (d->cm != NULL)
        curl_multi_cleanup(d->cm);
    d->cm = NULL;
}
