/* A session: one libcurl easy handle per client, so connections (and TLS
 * sessions) are kept alive and reused from call to call.  perform() runs one
 * request described by a Lua table.
 *
 * Nothing may unwind through libcurl's frames, and in Lua anything that
 * allocates may raise (a memory error at least).  So every callback does its
 * Lua work -- pushes, the call, reading the results into C -- inside one
 * protected call of a trampoline that was pushed before the transfer began
 * (pushing a C function allocates on Lua 5.1 and LuaJIT).  A failure is kept
 * in the transfer state (what a callback raised stays on the stack, as
 * err.cause), the transfer aborted, and after curl_easy_perform has returned
 * the facts are read into C, the handle reset and the busy guard cleared
 * before any result is pushed: a memory error raised then leaves a client
 * that still works. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "fileapi.h"

#define FA_MAX_HEADERS (128 * 1024)
#define FA_DEFAULT_MAX_RESPONSE (1024 * 1024)
#define FA_KEEP_BUFFER (256 * 1024)
/* 2^53: the largest whole number every Lua's numbers hold exactly */
#define FA_MAX_WHOLE 9007199254740992.0

typedef struct {
    char *data;
    size_t len, cap;
} fa_buf;

typedef struct {
    CURL *curl;
    fa_buf body, head;
    int closed;
    int busy;          /* a perform is running; its callbacks may call back in */
    int close_pending; /* close() came from one of those callbacks */
} fa_session;

/* One perform call's state; it lives on the C stack for that call only, and
 * libcurl's pointers to it are cleared before the call returns, so nothing
 * outlives the frame (nor the lua_State the call was given). */
struct xfer {
    fa_session *s;
    lua_State *L;
    fa_multipart *mp;
    const char *body;         /* a string body, when there is no multipart */
    curl_off_t body_off;
    curl_off_t handed;        /* request body bytes given to libcurl so far */
    curl_off_t total;         /* request body bytes on the wire */
    curl_off_t payload_total; /* the caller's bytes among them */
    curl_off_t last_sent;     /* payload bytes last reported */
    size_t max_body;
    int tramp_idx;            /* the trampoline, pushed before the transfer */
    int cause_idx;            /* a stack slot for what a callback raised */
    int progress_idx;         /* on_progress(sent, total): the upload */
    int received_idx;         /* on_received(n): body bytes given to the sink */
    int writer_idx;           /* sink: a writer function... */
    fa_sink *sink;            /* ...or a file */
    int decide_idx;           /* decide(status, headers) -> "sink"|"buffer", skip */
    long status;              /* of the response being read */
    int head_done;            /* its header block ended (later lines: trailers) */
    int sinking;              /* its body goes to the sink */
    curl_off_t skip;          /* body bytes the sink already has */
    curl_off_t sunk;          /* body bytes given to the sink */
    double idle_timeout;   /* seconds; 0 for none */
    double last_move;      /* monotonic time bytes last moved */
    curl_off_t moved;      /* bytes up and down at last_move */
    curl_off_t header_bytes; /* dlnow leaves response headers out */
    const char *fail_kind; /* set by a callback that stopped the transfer */
    char fail_msg[512];
    int fail_errno;        /* the system's reason for an io failure, or 0 */
    const char *raised_by; /* the callback whose raise is at cause_idx */
    int oom;
};

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
static void buf_trim(fa_buf *b)
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

static void fail_errno(struct xfer *x, const char *what, int e)
{
    char msg[200];
    if (x->fail_kind != NULL)
        return;
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
    fail(x, "io", msg);
    x->fail_errno = e;
}

/* close() from a callback: the running call ends as soon as control is
 * back in libcurl, and the client closes when it has returned. */
static int cancelled(struct xfer *x)
{
    if (fa_interrupted()) {
        fail(x, "aborted", "interrupted");
        return 1;
    }
    if (!x->s->close_pending)
        return 0;
    fail(x, "aborted", "the client was closed by a callback during the call");
    return 1;
}

static void push_headers(lua_State *L, const fa_buf *head);

/* A number a callback gave as a byte count: whole, >= 0, exact. */
static int to_count(lua_State *L, int idx, curl_off_t *out)
{
    lua_Number v;
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    v = lua_tonumber(L, idx);
    if (!(v >= 0 && v <= FA_MAX_WHOLE) || v != floor(v))
        return 0;
    *out = (curl_off_t)v;
    return 1;
}

/* Calls the function at fn_idx with nargs values pushed above it and
 * marks which callback it was, so that its raise can be named; raises
 * propagate to run_lua's protected call. */
static void call_user(lua_State *L, struct xfer *x, int nargs, int nresults, const char *what)
{
    x->raised_by = what;
    lua_call(L, nargs, nresults);
    x->raised_by = NULL;
}

/* The trampoline runs in a frame of its own: the callback's function comes
 * as its second argument, at this index. */
#define FA_JOB_FN 2

/* decide(status, headers) -> "sink"|"buffer"|nil, skip|why */
static void job_decide(lua_State *L, struct lcall *c)
{
    struct xfer *x = c->x;
    const char *mode;
    lua_pushvalue(L, FA_JOB_FN);
    fa_pushwhole(L, x->status);
    push_headers(L, &x->s->head);
    call_user(L, x, 2, 2, "decide");
    mode = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (mode == NULL) {
        const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        fail(x, "protocol", why ? why : "the response cannot be used");
        c->stop = 1;
        return;
    }
    x->sinking = strcmp(mode, "sink") == 0;
    x->skip = 0;
    if (!lua_isnil(L, -1) && !to_count(L, -1, &x->skip)) {
        fail(x, "protocol", "decide gave a skip that is not a whole number of bytes");
        c->stop = 1;
    }
}

/* writer(chunk) -> true | nil, message */
static void job_write(lua_State *L, struct lcall *c)
{
    struct xfer *x = c->x;
    lua_pushvalue(L, FA_JOB_FN);
    lua_pushlstring(L, c->ptr, c->n);
    call_user(L, x, 1, 2, "the writer");
    if (!lua_toboolean(L, -2)) {
        char msg[400];
        snprintf(msg, sizeof msg, "the writer failed: %s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(no message)");
        fail(x, "io", msg);
        c->stop = 1;
    }
}

/* on_received(n) or on_progress(sent, total); false stops */
static void job_progress(lua_State *L, struct lcall *c)
{
    struct xfer *x = c->x;
    lua_pushvalue(L, FA_JOB_FN);
    if (c->job == JOB_RECEIVED) {
        fa_pushwhole(L, x->sunk);
        call_user(L, x, 1, 1, "on_progress");
    } else {
        fa_pushwhole(L, c->sent);
        fa_pushwhole(L, x->payload_total);
        call_user(L, x, 2, 1, "on_progress");
    }
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        fail(x, "aborted", "the progress callback returned false");
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
        c->body_cause = strcmp(kind, "callback") == 0;
    }
}

static int trampoline(lua_State *L)
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

/* Runs a job under lua_pcall; the stack is as it was afterwards.  Returns
 * 0, or -1 when the job failed or said stop (the failure recorded). */
static int job_function(const struct xfer *x, enum lua_job job)
{
    switch (job) {
    case JOB_DECIDE: return x->decide_idx;
    case JOB_WRITE: return x->writer_idx;
    case JOB_RECEIVED: return x->received_idx;
    case JOB_PROGRESS: return x->progress_idx;
    default: return 0;
    }
}

static int run_lua(struct xfer *x, struct lcall *c)
{
    lua_State *L = x->L;
    int top = lua_gettop(L), rc, fn = job_function(x, c->job);
    c->x = x;
    c->stop = 0;
    /* copies of slots reserved by luaL_checkstack: nothing allocates */
    lua_pushvalue(L, x->tramp_idx);
    lua_pushlightuserdata(L, c);
    if (fn != 0)
        lua_pushvalue(L, fn);
    else
        lua_pushnil(L);
    rc = lua_pcall(L, 2, 0, 0);
    if (rc == LUA_ERRMEM) {
        x->oom = 1;
        c->stop = 1;
    } else if (rc != 0) {
        /* what the callback raised, kept as it is for err.cause */
        lua_replace(L, x->cause_idx);
        fail(x, "callback", "");
        if (x->raised_by == NULL)
            x->raised_by = "a callback";
        c->stop = 1;
    }
    lua_settop(L, top);
    if (c->body_cause && fa_multipart_push_cause(x->mp, L)) {
        lua_replace(L, x->cause_idx);
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
        fail(x, "protocol", msg);
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
    if (x->received_idx != 0) {
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
        if (x->decide_idx == 0)
            return n;
        memset(&c, 0, sizeof c);
        c.job = JOB_DECIDE;
        return run_lua(x, &c) == 0 ? n : 0;
    }
    if (n > FA_MAX_HEADERS || x->s->head.len > FA_MAX_HEADERS - n) {
        fail(x, "protocol", "the response headers are too large");
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
        fail(x, "network", "the connection closed without an answer after the request was sent; "
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
        fail(x, "timeout", msg);
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
    if (x->progress_idx == 0)
        return 0;
    /* Strictly increasing: a resend after a rewind starts from 0 again. */
    sent = payload_sent(x, ulnow);
    if (sent <= x->last_sent)
        return 0;
    return report_progress(x, sent);
}

/* ---- the request table -------------------------------------------------- */
/* ---- the request table -------------------------------------------------- */

/* The Lua side (fileapi.request) checks the whole table first, for both
 * transports; these checks are the core's own guard against bad pointers. */
struct request {
    const char *url, *method, *body, *ca_file, *proxy, *user_agent;
    size_t body_len;
    double timeout, connect_timeout, idle_timeout, max_response;
    int headers_idx;
    int expect_continue;
};

static int has_ctl(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
            return 1;
    return 0;
}

static int optfunction(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) != LUA_TFUNCTION)
        luaL_error(L, "request: '%s' must be a function", k);
    return lua_gettop(L); /* stays on the stack for the call */
}

static void read_sink(lua_State *L, int t, struct xfer *x)
{
    lua_getfield(L, t, "sink");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
    } else if (lua_type(L, -1) == LUA_TFUNCTION) {
        x->writer_idx = lua_gettop(L);
    } else if ((x->sink = fa_sink_test(L, -1)) == NULL) {
        luaL_error(L, "request: 'sink' must be a writer function or a file sink");
    } /* else it stays on the stack: the sink must outlive the transfer */
    x->decide_idx = optfunction(L, t, "decide");
    if ((x->writer_idx || x->sink) && x->decide_idx == 0)
        luaL_error(L, "request: a 'sink' needs 'decide'");
    x->received_idx = optfunction(L, t, "on_received");
}

/* Reads and checks every field before anything is allocated, so a wrong
 * type raises with nothing to leak. */
static void read_request(lua_State *L, int t, struct request *r, struct xfer *x)
{
    size_t len;
    int i, n;
    memset(r, 0, sizeof *r);
    r->url = fa_optstrfield(L, t, "url", &len);
    if (r->url == NULL || has_ctl(r->url, len) || strlen(r->url) != len)
        luaL_error(L, "request: 'url' must be a string without control characters");
    r->method = fa_optstrfield(L, t, "method", &len);
    if (r->method != NULL && (len == 0 || has_ctl(r->method, len) || strchr(r->method, ' ')))
        luaL_error(L, "request: invalid 'method'");
    r->body = fa_optstrfield(L, t, "body", &r->body_len);
    r->ca_file = fa_optstrfield(L, t, "ca_file", NULL);
    r->proxy = fa_optstrfield(L, t, "proxy", NULL);
    r->user_agent = fa_optstrfield(L, t, "user_agent", &len);
    if (r->user_agent != NULL && has_ctl(r->user_agent, len))
        luaL_error(L, "request: 'user_agent' has control characters");
    r->timeout = fa_optnumfield(L, t, "timeout", 0);
    r->connect_timeout = fa_optnumfield(L, t, "connect_timeout", 0);
    r->idle_timeout = fa_optnumfield(L, t, "idle_timeout", 0);
    r->max_response = fa_optnumfield(L, t, "max_response", FA_DEFAULT_MAX_RESPONSE);
    if (!(r->max_response >= 1 && r->max_response <= 1e12))
        luaL_error(L, "request: 'max_response' out of range");
    /* milliseconds must fit a long: NaN and huge values are refused here */
    if (!(r->timeout >= 0 && r->timeout <= 1e9) || !(r->connect_timeout >= 0 && r->connect_timeout <= 1e9) ||
        !(r->idle_timeout >= 0 && r->idle_timeout <= 1e9))
        luaL_error(L, "request: a timeout is out of range (0 to 1e9 seconds)");
    lua_getfield(L, t, "expect_continue");
    r->expect_continue = lua_toboolean(L, -1);
    lua_pop(L, 1);

    lua_getfield(L, t, "headers");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        n = (int)fa_rawlen(L, -1);
        for (i = 1; i <= n; i++) {
            const char *h;
            lua_rawgeti(L, -1, i);
            h = lua_tolstring(L, -1, &len);
            if (lua_type(L, -1) != LUA_TSTRING || has_ctl(h, len) || strlen(h) != len)
                luaL_error(L, "request: header %d must be a string without control characters", i);
            lua_pop(L, 1);
        }
        r->headers_idx = lua_gettop(L); /* stays on the stack for the call */
    } else {
        lua_pop(L, 1);
    }

    lua_getfield(L, t, "multipart");
    if (!lua_isnil(L, -1)) {
        x->mp = fa_multipart_check(L, -1);
        x->total = fa_multipart_length(x->mp);
        x->payload_total = fa_multipart_payload_length(x->mp);
        /* stays on the stack: the body must outlive the transfer */
    } else {
        lua_pop(L, 1);
        x->body = r->body;
        x->total = x->payload_total = (curl_off_t)r->body_len;
    }
    if (x->mp != NULL && r->body != NULL)
        luaL_error(L, "request: 'body' and 'multipart' exclude each other");
    if (r->method != NULL && strcmp(r->method, "HEAD") == 0 && (x->mp != NULL || r->body != NULL))
        luaL_error(L, "request: a HEAD request has no body");
    x->progress_idx = optfunction(L, t, "on_progress");
    read_sink(L, t, x);
}

/* Strings of the headers table stay alive on the stack while the list is
 * built; nothing is pushed, so nothing can raise with the list half made. */
static struct curl_slist *build_headers(lua_State *L, int idx, int expect, int *oom)
{
    struct curl_slist *list = NULL, *next;
    int i, n = idx == 0 ? 0 : (int)fa_rawlen(L, idx);
    for (i = 1; i <= n + 1; i++) {
        const char *h;
        if (i <= n) {
            lua_rawgeti(L, idx, i);
            h = lua_tostring(L, -1);
            lua_pop(L, 1); /* the table keeps the string alive */
        } else {
            /* Both transports ask for 100 Continue on large bodies only, so a
             * refusal arrives before a gigabyte was sent for nothing. */
            h = expect ? "Expect: 100-continue" : "Expect:";
        }
        next = curl_slist_append(list, h);
        if (next == NULL) {
            curl_slist_free_all(list);
            *oom = 1;
            return NULL;
        }
        list = next;
    }
    return list;
}

static long to_ms(double seconds)
{
    return seconds <= 0 ? 0 : (long)ceil(seconds * 1000.0);
}

static void configure_method(CURL *c, const struct request *r, struct xfer *x)
{
    int has_body = x->mp != NULL || r->body != NULL;
    const char *method = r->method ? r->method : (has_body ? "POST" : "GET");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        return;
    }
    /* Bodies go through the read callback, strings too: only there can a
     * resend be refused (see on_seek). */
    if (has_body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, x);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, x);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, x->total);
        if (x->mp != NULL)
            curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024L);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        return;
    }
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
}

static void configure(CURL *c, const struct request *r, struct xfer *x, struct curl_slist *hdrs,
                      char *errbuf)
{
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 1000L);
    if (x->sink != NULL || x->writer_idx != 0)
        curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 128L * 1024L);
    if (r->user_agent)
        curl_easy_setopt(c, CURLOPT_USERAGENT, r->user_agent);
    if (r->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
    if (r->proxy)
        curl_easy_setopt(c, CURLOPT_PROXY, r->proxy);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, to_ms(r->timeout));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, to_ms(r->connect_timeout));
    configure_method(c, r, x);
    /* always: the progress callback is where an interrupt is noticed */
    {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
    }
}

/* ---- results ------------------------------------------------------------ */

/* What a finished transfer left, read into C before the handle is reset. */
struct outcome {
    CURLcode code;
    long status;
    long request_size, connects;
    curl_off_t uploaded;
    char errbuf[CURL_ERROR_SIZE];
};

static void gather(CURL *c, CURLcode code, const char *errbuf, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    o->code = code;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &o->status);
    curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &o->request_size);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &o->connects);
    curl_easy_getinfo(c, CURLINFO_SIZE_UPLOAD_T, &o->uploaded);
    snprintf(o->errbuf, sizeof o->errbuf, "%s", errbuf);
}

static void push_headers(lua_State *L, const fa_buf *head)
{
    const char *p, *end;
    lua_newtable(L);
    if (head->data == NULL)
        return;
    p = head->data;
    end = head->data + head->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *colon, *v, *ve;
        if (eol == NULL)
            eol = end;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (colon != NULL && colon > p && memcmp(p, "HTTP/", 5) != 0) {
            luaL_Buffer b;
            const char *k;
            for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
                ;
            for (ve = eol; ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'); ve--)
                ;
            luaL_buffinit(L, &b);
            for (k = p; k < colon; k++)
                luaL_addchar(&b, (char)((*k >= 'A' && *k <= 'Z') ? *k + 32 : *k));
            luaL_pushresult(&b);
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            } else { /* a repeated field is one comma-joined list (RFC 9110 5.3) */
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            }
            lua_rawset(L, -3);
        }
        p = eol + 1;
    }
}

static void set_transfer_facts(lua_State *L, const struct outcome *o, const struct xfer *x)
{
    int sent = o->request_size > 0 || o->uploaded > 0;
    /* Whether any byte of the request reached the wire decides whether the
     * server can have acted on it; whether all of the body did, whether a
     * POST may go again after a rewind. */
    lua_pushboolean(L, sent);
    lua_setfield(L, -2, "request_sent");
    /* handed, not uploaded: libcurl counts again from 0 when it resends on
     * a fresh connection, and what it was handed may have gone out. */
    lua_pushboolean(L, sent && x->handed >= x->total);
    lua_setfield(L, -2, "body_sent");
    fa_pushwhole(L, o->uploaded);
    lua_setfield(L, -2, "uploaded");
    fa_pushwhole(L, x->sunk);
    lua_setfield(L, -2, "received");
    fa_pushwhole(L, o->connects);
    lua_setfield(L, -2, "new_connections");
}

/* "<callback> raised: <what it raised>", from the value kept at cause_idx */
static void push_callback_error(lua_State *L, const struct xfer *x)
{
    char text[400];
    if (x->fail_msg[0] != '\0') {
        fa_error_push(L, "callback", x->fail_msg);
    } else {
        fa_describe(L, x->cause_idx, text, sizeof text);
        lua_pushfstring(L, "%s raised: %s", x->raised_by ? x->raised_by : "a callback", text);
        fa_error_push(L, "callback", lua_tostring(L, -1));
        lua_remove(L, -2);
    }
    if (!lua_isnil(L, x->cause_idx)) {
        lua_pushvalue(L, x->cause_idx);
        lua_setfield(L, -2, "cause");
    }
}

static int push_failure(lua_State *L, const struct outcome *o, const struct xfer *x)
{
    lua_pushnil(L);
    if (x->fail_kind != NULL && strcmp(x->fail_kind, "callback") == 0)
        push_callback_error(L, x);
    else if (x->fail_kind != NULL)
        fa_error_push(L, x->fail_kind, x->fail_msg);
    else if (x->oom)
        fa_error_push(L, "io", "not enough memory");
    else
        fa_error_push(L, fa_kind_for_curl(o->code), o->errbuf[0] ? o->errbuf : curl_easy_strerror(o->code));
    if (x->fail_errno != 0)
        fa_error_set_errno(L, x->fail_errno);
    fa_pushwhole(L, o->code);
    lua_setfield(L, -2, "curl_code");
    if (x->head_done && (o->code == CURLE_PARTIAL_FILE || o->code == CURLE_RECV_ERROR ||
                         o->code == CURLE_OPERATION_TIMEDOUT || x->sunk > 0)) {
        lua_pushboolean(L, 1); /* the response began, then broke off */
        lua_setfield(L, -2, "partial");
    }
    if (x->status >= 200 && x->head_done) { /* a whole final header block */
        fa_pushwhole(L, x->status);
        lua_setfield(L, -2, "status");
    }
    set_transfer_facts(L, o, x);
    return 2;
}

static int push_response(lua_State *L, const struct outcome *o, const struct xfer *x)
{
    lua_createtable(L, 0, 9);
    fa_pushwhole(L, o->status);
    lua_setfield(L, -2, "status");
    push_headers(L, &x->s->head);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, x->s->body.data ? x->s->body.data : "", x->s->body.len);
    lua_setfield(L, -2, "body");
    lua_pushboolean(L, x->sinking);
    lua_setfield(L, -2, "sunk");
    set_transfer_facts(L, o, x);
    return 1;
}

/* ---- Lua methods -------------------------------------------------------- */

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

/* A failure before the transfer began: the error alone, no transfer facts. */
static int push_early_failure(lua_State *L, const struct xfer *x)
{
    if (x->oom)
        return luaL_error(L, "not enough memory");
    lua_pushnil(L);
    if (x->fail_kind != NULL && strcmp(x->fail_kind, "callback") == 0)
        push_callback_error(L, x);
    else
        fa_error_push(L, x->fail_kind ? x->fail_kind : "io", x->fail_msg);
    if (x->fail_errno != 0)
        fa_error_set_errno(L, x->fail_errno);
    return 2;
}

static int is_http_url(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* Runs the transfer; only C happens after it, up to the return. */
static CURLcode transfer(fa_session *s, const struct request *r, struct xfer *x, struct curl_slist *hdrs,
                         struct outcome *o)
{
    char errbuf[CURL_ERROR_SIZE];
    CURLcode code;
    errbuf[0] = '\0';
    curl_easy_reset(s->curl); /* keeps the connection cache */
    configure(s->curl, r, x, hdrs, errbuf);
    code = curl_easy_perform(s->curl);
    if (code == CURLE_OK && x->progress_idx != 0 && x->last_sent < x->payload_total) {
        curl_off_t uploaded = 0;
        curl_easy_getinfo(s->curl, CURLINFO_SIZE_UPLOAD_T, &uploaded);
        if (uploaded >= x->total)
            report_progress(x, x->payload_total); /* the transfer is over: no abort left */
    }
    if (code == CURLE_OK && (x->s->close_pending || (x->fail_kind != NULL && strcmp(x->fail_kind, "aborted") == 0))) {
        cancelled(x);
        code = CURLE_ABORTED_BY_CALLBACK; /* closed, or stopped by that last report */
    }
    gather(s->curl, code, errbuf, o);
    /* Nothing libcurl keeps may point into this frame once it returns. */
    curl_easy_reset(s->curl);
    return code;
}

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
        return push_error(L, "invalid_argument",
                          "the client is busy: a call from inside one of its own callbacks");
    memset(&x, 0, sizeof x);
    x.s = s;
    x.L = L;
    x.last_sent = -1;
    read_request(L, 2, &r, &x);
    if (!is_http_url(r.url)) /* as the cosocket transport answers */
        return push_error(L, "invalid_argument", "not an http(s) URL");
    x.max_body = (size_t)r.max_response;
    x.idle_timeout = r.idle_timeout;
    lua_pushcfunction(L, trampoline);
    x.tramp_idx = lua_gettop(L);
    lua_pushnil(L);
    x.cause_idx = lua_gettop(L);
    /* busy from here: a rewind function may call close() or the client */
    s->busy = 1;
    if (x.mp != NULL) { /* to the first byte, under the same protection as a callback */
        struct lcall c;
        memset(&c, 0, sizeof c);
        c.job = JOB_REWIND;
        if (run_lua(&x, &c) != 0) {
            s->busy = 0;
            if (s->close_pending)
                session_release(s);
            return push_early_failure(L, &x);
        }
    }
    hdrs = build_headers(L, r.headers_idx, r.expect_continue, &x.oom);
    if (x.oom || s->close_pending) {
        curl_slist_free_all(hdrs);
        s->busy = 0;
        if (s->close_pending)
            session_release(s);
        return x.oom ? luaL_error(L, "not enough memory")
                     : push_error(L, "aborted", "the client was closed by a callback during the call");
    }
    s->body.len = s->head.len = 0;
    transfer(s, &r, &x, hdrs, &o);
    curl_slist_free_all(hdrs);
    s->busy = 0;
    if (s->close_pending) { /* an error needs neither buffer: free them first */
        session_release(s);
        return push_failure(L, &o, &x);
    }
    /* from here on a raise (memory) leaves a client that works */
    if (o.code != CURLE_OK)
        nret = push_failure(L, &o, &x);
    else
        nret = push_response(L, &o, &x);
    buf_trim(&s->body);
    buf_trim(&s->head);
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
        fa_error_push(L, "io", "libcurl could not create a handle");
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
