/* A transfer's libcurl callbacks, and the trampoline their Lua work runs in.
 *
 * Nothing may unwind through libcurl's frames, and in Lua anything that
 * allocates may raise (a memory error at least).  So every callback does its
 * Lua work -- pushes, the call, reading the results into C -- inside one
 * protected call of a trampoline that the call driving the transfer pushed
 * before it began (pushing a C function allocates on Lua 5.1 and LuaJIT),
 * on the lua_State of that call (fa_driver: a perform, a multi's run).  The
 * callback's function comes from the transfer's anchor table, fetched inside
 * that protected call.  A failure is kept in the transfer state (what a
 * callback raised goes to the anchor table's FA_A_CAUSE slot, which exists
 * from the start, so storing it allocates nothing) and that transfer alone
 * is aborted; the results are pushed only after libcurl has returned and the
 * handle is reset (drive.c, results.c).  Callbacks of one driver never run
 * two at once: one thread, and no call back into a driver while it runs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "transfer.h"

/* What one callback asks of Lua; run_lua hands it to the trampoline. */
enum lua_job { JOB_DECIDE, JOB_WRITE, JOB_RECEIVED, JOB_PROGRESS, JOB_READ, JOB_REWIND };

struct lcall {
    enum lua_job job;
    struct xfer *x;
    const char *ptr;  /* JOB_WRITE: the bytes */
    char *buf;        /* JOB_READ: where they go */
    size_t n;
    long got;         /* JOB_READ: bytes read, or -1 */
    int body_cause;   /* a reader or rewinder raised: the body keeps it */
    curl_off_t sent;  /* JOB_PROGRESS */
    int stop;         /* the callback said stop, or failed */
};

static int buf_append(fa_buf *b, const char *p, size_t n)
{
    if (n > (size_t)-1 / 2 - b->len)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *d;
        while (cap < b->len + n + 1)
            cap *= 2;
        d = realloc(b->data, cap);
        if (d == NULL)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Large responses should not pin memory for the life of the client. */
void fa_buf_trim(fa_buf *b)
{
    b->len = 0;
    if (b->cap > FA_KEEP_BUFFER) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

static void fail(struct xfer *x, const char *kind, const char *msg)
{
    if (x->fail_kind != NULL)
        return; /* the first failure is the one worth reporting */
    x->fail_kind = kind;
    snprintf(x->fail_msg, sizeof x->fail_msg, "%s", msg);
}

void fa_xfer_fail(struct xfer *x, const char *kind, const char *msg)
{
    fail(x, kind, msg);
}

static void fail_errno(struct xfer *x, const char *what, int e)
{
    char msg[200];
    if (x->fail_kind != NULL)
        return;
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
    fail(x, FA_KIND(io), msg);
    x->fail_errno = e;
}

/* Whether the transfer must end now.  Its driver ended it (x->stop, the
 * reason recorded: removed, its multi closed; or it is over and libcurl
 * calls back while the handle is removed), and no Lua may run; no call
 * drives it (never expected: said, not run); Ctrl-C; or close() from a
 * callback: the running call ends as soon as control is back in libcurl,
 * and the client closes when it has been reported. */
static int cancelled(struct xfer *x)
{
    if (x->stop)
        return 1;
    if (x->d == NULL || x->d->L == NULL) {
        fail(x, FA_KIND(aborted), "the transfer was ended");
        x->stop = 1;
        return 1;
    }
    if (fa_interrupted()) {
        fail(x, FA_KIND(aborted), "interrupted");
        return 1;
    }
    if (!x->s->close_pending)
        return 0;
    fail(x, FA_KIND(aborted), "the client was closed by a callback during the call");
    return 1;
}

/* A number a callback gave as a byte count: whole, >= 0, exact. */
static int to_count(lua_State *L, int idx, curl_off_t *out)
{
    return lua_type(L, idx) == LUA_TNUMBER && fa_whole_count(lua_tonumber(L, idx), out);
}

/* Calls the callback pushed below nargs values and marks which one it was,
 * so that its raise can be named; raises propagate to run_lua's protected
 * call. */
static void call_user(lua_State *L, struct xfer *x, int nargs, int nresults, const char *what)
{
    x->raised_by = what;
    lua_call(L, nargs, nresults);
    x->raised_by = NULL;
}

/* Pushes the transfer's Lua value in slot (inside the protected call). */
static void push_anchored(lua_State *L, const struct xfer *x, int slot)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->anchor);
    lua_rawgeti(L, -1, slot);
    lua_remove(L, -2);
}

/* decide(status, headers) -> "sink"|"buffer"|nil, skip|why */
static void job_decide(lua_State *L, struct lcall *c)
{
    struct xfer *x = c->x;
    const char *mode;
    push_anchored(L, x, FA_A_DECIDE);
    fa_pushwhole(L, x->status);
    fa_push_headers(L, &x->s->head);
    call_user(L, x, 2, 2, "decide");
    mode = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (mode == NULL) {
        const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        fail(x, FA_KIND(protocol), why ? why : "the response cannot be used");
        c->stop = 1;
        return;
    }
    x->sinking = strcmp(mode, "sink") == 0;
    x->skip = 0;
    if (!lua_isnil(L, -1) && !to_count(L, -1, &x->skip)) {
        fail(x, FA_KIND(protocol), "decide gave a skip that is not a whole number of bytes");
        c->stop = 1;
    }
}

/* writer(chunk) -> true | nil, message */
static void job_write(lua_State *L, struct lcall *c)
{
    struct xfer *x = c->x;
    push_anchored(L, x, FA_A_SINK);
    lua_pushlstring(L, c->ptr, c->n);
    call_user(L, x, 1, 2, "the writer");
    if (!lua_toboolean(L, -2)) {
        char msg[400];
        snprintf(msg, sizeof msg, "the writer failed: %s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(no message)");
        fail(x, FA_KIND(io), msg);
        c->stop = 1;
    }
}

/* on_received(n) or on_progress(sent, total); false stops */
static void job_progress(lua_State *L, struct lcall *c)
{
    struct xfer *x = c->x;
    if (c->job == JOB_RECEIVED) {
        push_anchored(L, x, FA_A_RECEIVED);
        fa_pushwhole(L, x->sunk);
        call_user(L, x, 1, 1, "on_progress");
    } else {
        push_anchored(L, x, FA_A_PROGRESS);
        fa_pushwhole(L, c->sent);
        fa_pushwhole(L, x->payload_total);
        call_user(L, x, 2, 1, "on_progress");
    }
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        fail(x, FA_KIND(aborted), "the progress callback returned false");
        c->stop = 1;
    }
}

/* The multipart body's readers and rewinders run under their own pcall
 * inside the multipart code; what it allocates besides is covered here. */
static void job_body(lua_State *L, struct lcall *c)
{
    struct xfer *x = c->x;
    if (c->job == JOB_READ) {
        c->got = fa_multipart_read(x->mp, L, c->buf, c->n);
        c->stop = c->got < 0;
    } else {
        c->stop = fa_multipart_rewind(x->mp, L) != 0;
    }
    if (c->stop && !cancelled(x)) { /* a reader that closed the client, then failed: aborted */
        const char *msg, *kind = fa_multipart_error(x->mp, &msg);
        fail(x, kind, msg);
        x->fail_errno = fa_multipart_errno(x->mp);
        c->body_cause = strcmp(kind, FA_KIND(callback)) == 0;
    }
}

int fa_trampoline(lua_State *L)
{
    struct lcall *c = (struct lcall *)lua_touserdata(L, 1);
    switch (c->job) {
    case JOB_DECIDE: job_decide(L, c); break;
    case JOB_WRITE: job_write(L, c); break;
    case JOB_RECEIVED:
    case JOB_PROGRESS: job_progress(L, c); break;
    case JOB_READ:
    case JOB_REWIND: job_body(L, c); break;
    }
    return 0;
}

/* Keeps the value at the top as err.cause and pops it.  The slot exists in
 * the anchor table from the start: storing into it allocates nothing. */
static void keep_cause(lua_State *L, struct xfer *x)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->anchor);
    lua_insert(L, -2);
    lua_rawseti(L, -2, FA_A_CAUSE);
    lua_pop(L, 1);
    x->has_cause = 1;
}

/* Runs a job under lua_pcall on the state of the call driving the
 * transfer; the stack is as it was afterwards.  Returns 0, or -1 when the
 * job failed or said stop (the failure recorded). */
static int run_lua(struct xfer *x, struct lcall *c)
{
    fa_driver *d = x->d; /* x->d is left alone while d drives */
    lua_State *L = d->L;
    struct xfer *outer = d->current;
    int top = lua_gettop(L), rc;
    c->x = x;
    c->stop = 0;
    /* a copy of a slot, and slots reserved by fa_reserve: nothing allocates */
    lua_pushvalue(L, d->tramp_idx);
    lua_pushlightuserdata(L, c);
    d->current = x; /* multi:current() names it meanwhile */
    rc = lua_pcall(L, 1, 0, 0);
    d->current = outer;
    if (rc == LUA_ERRMEM) {
        x->oom = 1;
        c->stop = 1;
    } else if (rc != 0) {
        keep_cause(L, x); /* what the callback raised, as it is */
        fail(x, FA_KIND(callback), "");
        if (x->raised_by == NULL)
            x->raised_by = "a callback";
        c->stop = 1;
    }
    lua_settop(L, top);
    if (c->body_cause && fa_multipart_push_cause(x->mp, L)) {
        keep_cause(L, x);
        x->raised_by = "";
    }
    return c->stop ? -1 : 0;
}

/* ---- libcurl callbacks -------------------------------------------------- */

static int buffer_body(struct xfer *x, const char *ptr, size_t n)
{
    if (n > x->max_body || x->s->body.len > x->max_body - n) {
        char msg[96];
        snprintf(msg, sizeof msg, "the response body is larger than %zu bytes", x->max_body);
        fail(x, FA_KIND(protocol), msg);
        return -1;
    }
    if (buf_append(&x->s->body, ptr, n) != 0) {
        x->oom = 1;
        return -1;
    }
    return 0;
}

static int write_sink(struct xfer *x, const char *ptr, size_t n)
{
    struct lcall c;
    memset(&c, 0, sizeof c);
    if (x->sink != NULL) {
        if (fa_sink_write(x->sink, ptr, n) != 0) {
            fail_errno(x, "writing the file failed", errno);
            return -1;
        }
    } else {
        c.job = JOB_WRITE;
        c.ptr = ptr;
        c.n = n;
        if (run_lua(x, &c) != 0)
            return -1;
    }
    x->sunk += (curl_off_t)n;
    if (x->has_received) {
        c.job = JOB_RECEIVED;
        if (run_lua(x, &c) != 0)
            return -1;
    }
    return cancelled(x) ? -1 : 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (cancelled(x))
        return 0;
    if (!x->sinking)
        return buffer_body(x, ptr, n) == 0 ? n : 0;
    if (x->skip > 0) { /* bytes an earlier attempt already delivered */
        size_t drop = (curl_off_t)n < x->skip ? n : (size_t)x->skip;
        x->skip -= (curl_off_t)drop;
        if (drop == n)
            return n;
        return write_sink(x, ptr + drop, n - drop) == 0 ? n : 0;
    }
    return write_sink(x, ptr, n) == 0 ? n : 0;
}

static long parse_status(const char *p, size_t n)
{
    const char *sp = memchr(p, ' ', n);
    long status = 0;
    int i;
    if (sp == NULL || (size_t)(sp - p) + 4 > n)
        return 0;
    for (i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9')
            return 0;
        status = status * 10 + (sp[i] - '0');
    }
    return status;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    x->header_bytes += (curl_off_t)n;
    if (cancelled(x))
        return 0;
    /* Only the final response's headers count (not 100 Continue nor other
     * interim answers); trailers after a chunked body are left out. */
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        x->s->head.len = 0;
        x->status = parse_status(ptr, n);
        x->head_done = 0;
        x->sinking = 0;
    }
    if (x->head_done)
        return n;
    if ((n == 2 && ptr[0] == '\r') || (n == 1 && ptr[0] == '\n')) {
        struct lcall c;
        if (x->status < 200)
            return n; /* an interim response ended; the final one follows */
        x->head_done = 1;
        if (!x->has_decide)
            return n;
        memset(&c, 0, sizeof c);
        c.job = JOB_DECIDE;
        return run_lua(x, &c) == 0 ? n : 0;
    }
    if (n > FA_MAX_HEADERS || x->s->head.len > FA_MAX_HEADERS - n) {
        fail(x, FA_KIND(protocol), "the response headers are too large");
        return 0;
    }
    if (buf_append(&x->s->head, ptr, n) != 0) {
        x->oom = 1;
        return 0;
    }
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nitems;
    if (cancelled(x))
        return CURL_READFUNC_ABORT;
    if (x->mp == NULL) {
        curl_off_t left = x->total - x->body_off;
        if ((curl_off_t)n > left)
            n = (size_t)left;
        memcpy(buf, x->body + x->body_off, n);
        x->body_off += (curl_off_t)n;
    } else {
        struct lcall c;
        memset(&c, 0, sizeof c);
        c.job = JOB_READ;
        c.buf = buf;
        c.n = n;
        if (run_lua(x, &c) != 0 || cancelled(x)) /* a reader may have closed the client */
            return CURL_READFUNC_ABORT;
        n = (size_t)c.got;
    }
    x->handed += (curl_off_t)n;
    return n;
}

/* libcurl resends on a fresh connection when a kept-alive one fails, and
 * rewinds the body for it.  That is safe while the request was still being
 * sent; once all of it was handed over, a connection that closed without an
 * answer may have been read and acted on, and a POST must not go twice. */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
    struct xfer *x = ud;
    if (offset != 0 || origin != SEEK_SET)
        return CURL_SEEKFUNC_CANTSEEK;
    if (x->handed >= x->total) {
        fail(x, FA_KIND(network), "the connection closed without an answer after the request was sent; "
                           "not sending it again, since the server may have acted on it");
        return CURL_SEEKFUNC_CANTSEEK;
    }
    if (x->mp != NULL) {
        struct lcall c;
        memset(&c, 0, sizeof c);
        c.job = JOB_REWIND;
        if (run_lua(x, &c) != 0 || cancelled(x))
            return CURL_SEEKFUNC_FAIL;
    }
    x->body_off = 0;
    x->handed = 0;
    return CURL_SEEKFUNC_OK;
}

/* Calls on_progress(sent, total) in the caller's bytes; nonzero stops. */
static int report_progress(struct xfer *x, curl_off_t sent)
{
    struct lcall c;
    x->last_sent = sent;
    memset(&c, 0, sizeof c);
    c.job = JOB_PROGRESS;
    c.sent = sent;
    return run_lua(x, &c) != 0 || cancelled(x);
}
static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Idle: no byte moved either way for idle_timeout seconds.  libcurl's own
 * low-speed check averages over whole seconds and fires late; this runs on
 * every progress tick (several a second while waiting). */
static int idle_expired(struct xfer *x, curl_off_t moved)
{
    double now = monotonic();
    if (moved != x->moved || x->last_move == 0) {
        x->moved = moved;
        x->last_move = now;
        return 0;
    }
    if (now - x->last_move < x->idle_timeout)
        return 0;
    {
        char msg[96];
        snprintf(msg, sizeof msg, "no data moved for %.1f seconds (idle_timeout)", now - x->last_move);
        fail(x, FA_KIND(timeout), msg);
    }
    return 1;
}

static curl_off_t payload_sent(const struct xfer *x, curl_off_t wire)
{
    if (wire > x->total)
        wire = x->total;
    return x->mp != NULL ? fa_multipart_payload_at(x->mp, wire) : wire;
}

static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = ud;
    curl_off_t sent;
    (void)dltotal;
    (void)ultotal;
    if (cancelled(x))
        return 1;
    if (x->idle_timeout > 0 && idle_expired(x, dlnow + ulnow + x->header_bytes))
        return 1;
    if (!x->has_progress)
        return 0;
    /* Strictly increasing: a resend after a rewind starts from 0 again. */
    sent = payload_sent(x, ulnow);
    if (sent <= x->last_sent)
        return 0;
    return report_progress(x, sent);
}

/* ---- the handle's callbacks, and the end of a transfer ------------------ */

/* The callbacks: a body goes through the read callback (a string too: only
 * there can a resend be refused, see on_seek), and the progress callback,
 * always set, is where an interrupt and the idle timeout are noticed. */
void fa_set_callbacks(CURL *c, struct xfer *x)
{
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    if (x->mp != NULL || x->body != NULL) {
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, x);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, x);
    }
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
}

/* libcurl said the transfer is over (code): what it still reports, outside
 * libcurl's frames but under the same protection -- its last progress,
 * which a short body may never have had -- and whether a close() or that
 * report ended it after all. */
CURLcode fa_transfer_settle(struct xfer *x, CURLcode code)
{
    if (code == CURLE_OK && x->has_progress && x->last_sent < x->payload_total && !cancelled(x)) {
        curl_off_t uploaded = 0;
        curl_easy_getinfo(x->s->curl, CURLINFO_SIZE_UPLOAD_T, &uploaded);
        if (uploaded >= x->total)
            report_progress(x, x->payload_total); /* the transfer is over: no abort left */
    }
    if (code == CURLE_OK && (x->s->close_pending || x->stop ||
                             (x->fail_kind != NULL && strcmp(x->fail_kind, FA_KIND(aborted)) == 0))) {
        cancelled(x);
        code = CURLE_ABORTED_BY_CALLBACK; /* closed, or stopped by that last report */
    }
    return code;
}

int fa_rewind_body(struct xfer *x)
{
    struct lcall c;
    memset(&c, 0, sizeof c);
    c.job = JOB_REWIND;
    return run_lua(x, &c);
}
