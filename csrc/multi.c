/* core.multi(): many transfers at once, in one OS thread, on one libcurl
 * multi handle -- what a scheduler (fileapi.group, a pool of sessions per
 * client) builds on.  The C API, as Lua sees it (failures are nil, err with
 * the core's error object; wrong types raise; so does using a closed
 * session, share or multi):
 *
 *   core.share() -> share | nil, err
 *       libcurl's connection cache, DNS cache and TLS sessions, shared by
 *       the sessions made with it.  share:close() (also __gc, __close) lets
 *       go of the share's own hold; sessions made with it go on sharing
 *       until the last of them closes.
 *   core.session([share]) -> session | nil, err
 *       a client's handle.  With a share, its connections come from and go
 *       back to the share's cache whether it runs alone (perform) or on a
 *       multi: the sessions of one client reuse each other's connections.
 *       Without one, as before: perform reuses the session's own, and on a
 *       multi it uses the multi's.  A share's cache keeps up to 64 idle
 *       connections.
 *   session:perform(request) -> response | nil, err
 *       unchanged: one transfer, run to its end -- by the same code as a
 *       multi's transfers, on a multi handle of the session's own.
 *   core.multi() -> multi | nil, err
 *   multi:add(session, request) -> true | nil, err
 *       starts the request (the table session:perform takes, read and
 *       checked by the same code) on the session.  The session is busy
 *       until a run has reported the transfer: perform or add on it
 *       meanwhile gives nil + kind invalid_argument ("busy").  Also kind
 *       invalid_argument: not an http(s) URL; called from a callback of
 *       this multi; the multi is closing; the multipart body or the file
 *       sink is in another transfer (each serves one at a time).  A body
 *       that cannot go back to its first byte gives its error.  On nil,
 *       err nothing was started.
 *   multi:run([timeout]) -> results | nil, err
 *       drives every transfer; waits for the network up to `timeout`
 *       seconds (nil: until one finishes; 0: not at all), returning as soon
 *       as one or more have finished, or at once when none is running.
 *       results: an array, possibly empty, in the order they finished, of
 *       { session, response } or { session, nil, err } -- each what
 *       session:perform would have returned.  Each transfer added is
 *       reported exactly once: a memory error raised while the results are
 *       made loses none (the next run returns them).  Called from one of
 *       this multi's callbacks: nil + kind invalid_argument ("busy").
 *   multi:remove(session) -> true | false
 *       true: the session's transfer was running on this multi; it ends
 *       with kind aborted ("removed"), reported by the next run, as every
 *       result is.  From a callback too: it ends once libcurl has returned.
 *   multi:count() -> n
 *       transfers added and not yet reported (0 once closed).
 *   multi:current() -> session | nil
 *       from inside a callback (or what it calls): the session whose
 *       transfer that callback serves; nil anywhere else.  A scheduler
 *       tells by it a call from a callback of a client's own running call
 *       (refused) from another call on the same client (allowed).
 *   multi:close() (also __gc, __close)
 *       idempotent; transfers still running end unreported and their
 *       sessions are idle again (closed, if close() came meanwhile).  From
 *       a callback: every transfer ends aborted, the run in progress
 *       reports them all, and the multi closes as that run returns.
 *
 * What holds per transfer, as for perform: bodies stream (files in chunks,
 * responses to sinks) in constant memory; response buffers and their limit
 * (max_response) are per session.  Callbacks run one at a time, each
 * under one protected call on the lua_State of the run driving it; what
 * one raises ends only its own transfer (kind callback, err.cause), as does
 * on_progress returning false (kind aborted).  A callback may use other
 * clients (perform on an idle session, another multi).  Ctrl-C (the core's
 * interrupt flag, core.catch_interrupts) ends every running transfer with
 * kind aborted, "interrupted", within a tenth of a second of waiting.  A
 * session closed during its transfer ends it with kind aborted and closes
 * once it is reported.  The Lua values a transfer needs are anchored in the
 * registry until it is reported, so the request table may be dropped or
 * changed once add has returned.
 *
 * A scheduler's loop (coroutines parked on their session):
 *   m:add(session, request); waiting[session] = coroutine.running()
 *   while m:count() > 0 do
 *     for _, r in ipairs(m:run(1)) do resume(waiting[r[1]], r[2], r[3]) end
 *   end
 *
 * An outside event loop (cqueues, luv) later: the driver keeps waiting
 * (fa_drive_wait: curl_multi_poll) apart from driving (fa_drive_step:
 * curl_multi_perform, then the finished transfers off the handle), so that
 * binding is an addition.  It would set CURLMOPT_SOCKETFUNCTION and
 * CURLMOPT_TIMERFUNCTION to C functions that only record, in the multi's C
 * state, which descriptors to watch for what and when libcurl wants its
 * timeout -- libcurl calls them from inside its own frames, the timer one
 * even from curl_multi_add_handle, where no Lua may run -- and add
 * multi:socket_action(fd, events) (fd nil: the timeout fired), a step that
 * calls curl_multi_socket_action in place of curl_multi_perform and is
 * otherwise fa_drive_step, returning results as run does, and
 * multi:watches() -> the recorded descriptor changes and the next timeout,
 * read by the loop after each call into the multi.  A multi is driven one
 * way or the other, never both; run stays the way without a loop. */
#include <math.h>
#include <string.h>
#include <time.h>
#include "transfer.h"

typedef struct {
    fa_driver d;
    int closed;
    int close_pending; /* close() from a callback: done when the run returns */
    int ready;         /* results made, not yet returned (a table's reference) */
} fa_multi;

static fa_multi *check_multi(lua_State *L)
{
    fa_multi *m = (fa_multi *)luaL_checkudata(L, 1, FA_MULTI_MT);
    if (m->closed)
        luaL_error(L, "attempt to use a closed multi");
    return m;
}

static int push_error(lua_State *L, const char *kind, const char *msg)
{
    lua_pushnil(L);
    fa_error_push(L, kind, msg);
    return 2;
}

static int busy_error(lua_State *L)
{
    return push_error(L, FA_KIND(invalid_argument), "the multi is busy: a call from inside one of its own callbacks");
}

static void multi_release(lua_State *L, fa_multi *m)
{
    if (m->closed)
        return;
    if (m->d.driving) {
        m->close_pending = 1;
        fa_drive_cancel_all(&m->d, "the multi was closed by a callback during the run");
        return;
    }
    fa_drive_abandon(L, &m->d);
    luaL_unref(L, LUA_REGISTRYINDEX, m->ready);
    m->ready = LUA_NOREF;
    fa_drive_close(&m->d);
    m->closed = 1;
}

/* multi:add(session, request) -> true | nil, err */
static int m_add(lua_State *L)
{
    fa_multi *m = check_multi(L);
    fa_session *s = fa_session_check_open(L, 2);
    int tramp, rc;
    luaL_checktype(L, 3, LUA_TTABLE);
    fa_reserve(L, 40, "fileapi: add");
    if (m->d.driving)
        return busy_error(L);
    if (m->close_pending)
        return push_error(L, FA_KIND(invalid_argument), "the multi is closing");
    if (s->busy || s->close_pending)
        return fa_session_busy_error(L, s);
    lua_pushcfunction(L, fa_trampoline);
    tramp = lua_gettop(L);
    rc = fa_start(L, &m->d, s, 2, 3, tramp);
    if (rc != 0)
        return rc;
    fa_drive_leave(&m->d);
    if (m->close_pending) { /* a rewind function closed the multi */
        multi_release(L, m);
        return push_error(L, FA_KIND(aborted), "the multi was closed by a callback");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One { session, response } or { session, nil, err } per queued transfer,
 * into the table m->ready keeps: a transfer leaves the queue only once its
 * result is in place, so a memory error loses none (the next run returns
 * what this one made). */
static void collect(lua_State *L, fa_multi *m)
{
    struct xfer *x;
    int ready, top = lua_gettop(L);
    if (m->ready == LUA_NOREF) {
        lua_newtable(L);
        m->ready = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->ready);
    ready = lua_gettop(L);
    while ((x = fa_drive_first_done(&m->d)) != NULL) {
        fa_session *s = x->s;
        int cause = fa_drive_push_cause(L, x);
        lua_createtable(L, 3, 0);
        fa_drive_push_session(L, x);
        lua_rawseti(L, -2, 1);
        if (fa_push_result(L, x, cause) == 1) {
            lua_rawseti(L, -2, 2);
        } else {
            lua_rawseti(L, -3, 3);
            lua_pop(L, 1);
        }
        lua_rawseti(L, ready, (int)fa_rawlen(L, ready) + 1);
        fa_drive_release(L, x);
        fa_buf_trim(&s->body);
        fa_buf_trim(&s->head);
        lua_settop(L, ready);
    }
    lua_settop(L, top);
}

/* Pushes the results made so far (an empty table if none). */
static void hand_over(lua_State *L, fa_multi *m)
{
    if (m->ready == LUA_NOREF) {
        lua_newtable(L);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->ready);
    luaL_unref(L, LUA_REGISTRYINDEX, m->ready);
    m->ready = LUA_NOREF;
}

/* Steps and waits until a transfer is over, none runs, or the time is up. */
static void drive(fa_multi *m, double timeout)
{
    double deadline = monotonic() + timeout;
    for (;;) {
        double left;
        fa_drive_interrupt(&m->d);
        fa_drive_step(&m->d);
        if (m->d.done != NULL || m->d.live == NULL)
            return;
        left = deadline - monotonic();
        if (timeout >= 0 && left <= 0)
            return;
        fa_drive_wait(&m->d, timeout < 0 || left * 1000.0 > FA_WAIT_SLICE_MS ? FA_WAIT_SLICE_MS
                                                                             : (long)ceil(left * 1000.0));
    }
}

/* multi:run([timeout]) -> results | nil, err */
static int m_run(lua_State *L)
{
    fa_multi *m = check_multi(L);
    double timeout = -1;
    int tramp;
    if (!lua_isnoneornil(L, 2)) {
        timeout = luaL_checknumber(L, 2);
        luaL_argcheck(L, timeout >= 0, 2, "a number of seconds, 0 or more");
    }
    fa_reserve(L, 40, "fileapi: run");
    if (m->d.driving)
        return busy_error(L);
    lua_pushcfunction(L, fa_trampoline);
    tramp = lua_gettop(L);
    if (m->d.live != NULL) {
        fa_drive_enter(&m->d, L, tramp);
        drive(m, timeout);
        fa_drive_leave(&m->d);
    }
    collect(L, m);
    hand_over(L, m);
    if (m->close_pending) {
        m->close_pending = 0;
        multi_release(L, m);
    }
    return 1;
}

/* multi:remove(session) -> true | false */
static int m_remove(lua_State *L)
{
    fa_multi *m = check_multi(L);
    fa_session *s = (fa_session *)luaL_checkudata(L, 2, FA_SESSION_MT);
    int running = s->busy && s->x.d == &m->d && !s->x.done;
    if (running)
        fa_drive_cancel(&s->x, "the transfer was removed from its multi");
    lua_pushboolean(L, running);
    return 1;
}

/* multi:current() -> the session whose callback runs now | nil */
static int m_current(lua_State *L)
{
    fa_multi *m = (fa_multi *)luaL_checkudata(L, 1, FA_MULTI_MT);
    if (m->closed || m->d.current == NULL)
        lua_pushnil(L);
    else
        fa_drive_push_session(L, m->d.current);
    return 1;
}

static int m_count(lua_State *L)
{
    fa_multi *m = (fa_multi *)luaL_checkudata(L, 1, FA_MULTI_MT);
    lua_pushinteger(L, m->closed ? 0 : m->d.count);
    return 1;
}

static int m_close(lua_State *L)
{
    multi_release(L, (fa_multi *)luaL_checkudata(L, 1, FA_MULTI_MT));
    return 0;
}

static int m_tostring(lua_State *L)
{
    fa_multi *m = (fa_multi *)luaL_checkudata(L, 1, FA_MULTI_MT);
    if (m->closed)
        lua_pushliteral(L, "fileapi.multi (closed)");
    else
        lua_pushfstring(L, "fileapi.multi (%d transfers)", m->d.count);
    return 1;
}

/* core.multi() -> multi | nil, err */
static int l_multi(lua_State *L)
{
    fa_multi *m = fa_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    m->closed = 1;
    m->ready = LUA_NOREF;
    fa_setmetatable(L, FA_MULTI_MT);
    if (fa_drive_open(&m->d) != 0)
        return push_error(L, FA_KIND(io), "libcurl could not create a multi handle");
    m->closed = 0;
    return 1;
}

void fa_open_multi(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", m_add},
        {"run", m_run},
        {"remove", m_remove},
        {"count", m_count},
        {"current", m_current},
        {"close", m_close},
        {NULL, NULL},
    };
    fa_newclass(L, FA_MULTI_MT, methods, m_close, m_tostring);
    lua_pushcfunction(L, l_multi);
    lua_setfield(L, -2, "multi");
}
