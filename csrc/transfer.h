/* A transfer and what runs it, shared by the files that make it up: the
 * session handle (session.c), the request as read from its table and set on
 * the handle (request.c), libcurl's callbacks and the trampoline their Lua
 * work runs in (transfer.c), the driver that runs transfers on a libcurl
 * multi handle (drive.c), the results pushed once one is over (results.c),
 * and the Lua face of a multi (multi.c) and of a share (share.c).
 *
 * A transfer's state lives in its session's userdata, and the Lua values it
 * needs in a table anchored in the registry for as long as it runs; no
 * lua_State is kept beyond the call (a perform, a run) that drives it. */
#ifndef FILEAPI_TRANSFER_H
#define FILEAPI_TRANSFER_H

#include "fileapi.h"
#include "gen/options.h"

#define FA_MAX_HEADERS (128 * 1024)
#define FA_KEEP_BUFFER (256 * 1024)
/* The longest one wait for the network lasts before the interrupt flag is
 * looked at again: a signal taken by another thread (libcurl's resolver)
 * does not cut the wait short. */
#define FA_WAIT_SLICE_MS 100
/* Idle connections a share's cache keeps (see fa_drive_open). */
#define FA_MAX_IDLE_CONNECTIONS 64

typedef struct {
    char *data;
    size_t len, cap;
} fa_buf;

/* Stack slots for a call that drives transfers: the callbacks push onto
 * them inside libcurl's frames, where nothing may allocate.  Growing the
 * stack can fail for want of memory, which luaL_checkstack would call a
 * stack overflow; this says either. */
static inline void fa_reserve(lua_State *L, int n, const char *what)
{
    if (!lua_checkstack(L, n))
        luaL_error(L, "stack overflow or not enough memory (%s)", what);
}

/* The Lua values of one transfer, in the slots of its anchor table. */
enum fa_anchor_slot {
    FA_A_SESSION = 1, /* the session userdata: kept alive while it runs */
    FA_A_BODY,        /* the string body: x->body points into it */
    FA_A_MULTIPART,   /* the multipart body */
    FA_A_SINK,        /* a writer function or a file sink */
    FA_A_DECIDE,      /* decide(status, headers) */
    FA_A_RECEIVED,    /* on_received(n) */
    FA_A_PROGRESS,    /* on_progress(sent, total) */
    FA_A_CAUSE,       /* what a callback raised (err.cause) */
    FA_A_COUNT = FA_A_CAUSE
};

/* What a finished transfer left, read into C before the handle is reset. */
struct outcome {
    CURLcode code;
    long status;
    long request_size, connects;
    curl_off_t uploaded, downloaded;
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct fa_driver fa_driver;
typedef struct fa_session fa_session;
typedef struct fa_share fa_share;

/* One transfer's state, inside its session (a session runs one at a time). */
struct xfer {
    fa_session *s;
    fa_driver *d;             /* what runs it; NULL while the session is idle */
    struct xfer *next;        /* in d's list of running or of finished ones */
    int anchor;               /* registry reference of its anchor table */
    int stop;                 /* no more Lua: ending, or ended (see cancelled()) */
    int done;                 /* finished; the outcome waits to be reported */
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    struct outcome o;
    fa_multipart *mp;
    const char *body;         /* a string body, when there is no multipart */
    curl_off_t body_off;
    curl_off_t handed;        /* request body bytes given to libcurl so far */
    curl_off_t total;         /* request body bytes on the wire */
    curl_off_t payload_total; /* the caller's bytes among them */
    curl_off_t last_sent;     /* payload bytes last reported */
    size_t max_body;
    int has_progress, has_received, has_decide;
    int claimed;              /* it holds its multipart body and file sink */
    fa_sink *sink;            /* the sink when it is a file */
    long status;              /* of the response being read */
    int head_done;            /* its header block ended (later lines: trailers) */
    int sinking;              /* its body goes to the sink */
    curl_off_t skip;          /* body bytes the sink already has */
    curl_off_t sunk;          /* body bytes given to the sink */
    double idle_timeout;      /* seconds; 0 for none */
    double last_move;         /* monotonic time bytes last moved */
    curl_off_t moved;         /* bytes up and down at last_move */
    curl_off_t header_bytes;  /* dlnow leaves response headers out */
    const char *fail_kind;    /* set by a callback that stopped the transfer */
    char fail_msg[512];
    int fail_errno;           /* the system's reason for an io failure, or 0 */
    const char *raised_by;    /* the callback whose raise is in FA_A_CAUSE */
    int has_cause;            /* FA_A_CAUSE holds it */
    int oom;
};

/* Runs transfers on one libcurl multi handle: a session's own (perform) or
 * a core.multi().  L and tramp_idx are set only while a call drives it. */
struct fa_driver {
    CURLM *cm;
    lua_State *L;
    int tramp_idx;            /* the trampoline, pushed before driving */
    int driving;              /* callbacks may run: calls back in are refused */
    struct xfer *current;     /* the transfer whose callback runs now, or NULL */
    struct xfer *live;        /* running */
    struct xfer *done, *done_tail; /* finished, in that order, not yet reported */
    int count;                /* both */
};

struct fa_session {
    CURL *curl;
    fa_buf body, head;
    fa_share *share;          /* shared caches, or NULL */
    fa_driver own;            /* perform's multi handle, made at the first */
    struct xfer x;
    int closed;
    int busy;                 /* a transfer of its own is running or unreported */
    int close_pending;        /* close() came while it was busy */
};

/* The Lua side (fileapi.http.request) checks the whole table first, for both
 * transports; these checks are the core's own guard against bad pointers.
 * The *_idx fields are stack slots of the call that reads the table. */
struct request {
    const char *url, *method, *body;
    size_t body_len;
    int body_idx, headers_idx, mp_idx, sink_idx, decide_idx, received_idx, progress_idx;
    int expect_continue;
    /* the transport options: a field per row of gen/options.h */
#define FA_OPTION_TYPE_number double
#define FA_OPTION_TYPE_string const char *
#define FA_OPTION_FIELD(name, type, lo, hi, missing, curlopt, as) FA_OPTION_TYPE_##type name;
    FA_REQUEST_OPTIONS(FA_OPTION_FIELD)
#undef FA_OPTION_FIELD
};

/* request.c: reads and checks the table (raises on wrong types, before
 * anything is held); the header list for libcurl (NULL and *oom set when
 * out of memory); whether a URL is http(s); the handle's options. */
void fa_read_request(lua_State *L, int t, struct request *r, struct xfer *x);
struct curl_slist *fa_build_headers(lua_State *L, int idx, int expect, int *oom);
int fa_is_http_url(const char *url);
void fa_configure(CURL *c, const struct request *r, struct xfer *x);

/* transfer.c: the callbacks set on a handle, the trampoline every
 * callback's Lua work runs in, the first rewind of a body under the same
 * protection, what a finished transfer still reports (its last progress),
 * failures as callbacks record them, and the buffers' trimming. */
void fa_set_callbacks(CURL *c, struct xfer *x);
int fa_trampoline(lua_State *L);
int fa_rewind_body(struct xfer *x);
CURLcode fa_transfer_settle(struct xfer *x, CURLcode code);
void fa_xfer_fail(struct xfer *x, const char *kind, const char *msg);
void fa_buf_trim(fa_buf *b);

/* drive.c: starting a transfer on a driver, driving, waiting, ending one
 * early, and handing finished ones back; see the comment there. */
int fa_start(lua_State *L, fa_driver *d, fa_session *s, int s_idx, int t, int tramp_idx);
void fa_drive_enter(fa_driver *d, lua_State *L, int tramp_idx);
void fa_drive_leave(fa_driver *d);
void fa_drive_step(fa_driver *d);
void fa_drive_wait(fa_driver *d, long ms);
int fa_drive_interrupt(fa_driver *d);
void fa_drive_cancel(struct xfer *x, const char *why);
void fa_drive_cancel_all(fa_driver *d, const char *why);
struct xfer *fa_drive_first_done(fa_driver *d);
int fa_drive_push_cause(lua_State *L, const struct xfer *x);
void fa_drive_push_session(lua_State *L, const struct xfer *x);
void fa_drive_release(lua_State *L, struct xfer *x);
void fa_drive_detach(lua_State *L, struct xfer *x);
void fa_drive_abandon(lua_State *L, fa_driver *d);
int fa_drive_open(fa_driver *d);
void fa_drive_close(fa_driver *d);

/* session.c: sessions as the multi sees them */
fa_session *fa_session_check_open(lua_State *L, int idx);
int fa_session_busy_error(lua_State *L, const fa_session *s);
void fa_session_release(fa_session *s);

/* share.c: the caches a share holds, counted by its users */
fa_share *fa_share_check(lua_State *L, int idx);
CURLSH *fa_share_handle(const fa_share *sh);
void fa_share_hold(fa_share *sh);
void fa_share_drop(fa_share *sh);

/* results.c: what the transfer left, read into C; then pushed to Lua.
 * cause_idx: the stack slot of what a callback raised (nil if none). */
void fa_gather(CURL *c, CURLcode code, const char *errbuf, struct outcome *o);
void fa_push_headers(lua_State *L, const fa_buf *head);
int fa_push_result(lua_State *L, const struct xfer *x, int cause_idx);
int fa_push_early_failure(lua_State *L, const struct xfer *x, int cause_idx);

#endif
