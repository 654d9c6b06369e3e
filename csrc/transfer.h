/* One perform call, shared by the files that run it: the session handle
 * (session.c), the request as read from its table (request.c), the
 * transfer's state and libcurl's callbacks (transfer.c), and the results
 * pushed once it is over (results.c).  Calls go session -> request,
 * transfer -> results; nothing here outlives one perform. */
#ifndef FILEAPI_TRANSFER_H
#define FILEAPI_TRANSFER_H

#include "fileapi.h"
#include "gen/options.h"

#define FA_MAX_HEADERS (128 * 1024)
#define FA_KEEP_BUFFER (256 * 1024)

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

/* The Lua side (fileapi.http.request) checks the whole table first, for both
 * transports; these checks are the core's own guard against bad pointers. */
struct request {
    const char *url, *method, *body;
    size_t body_len;
    int headers_idx;
    int expect_continue;
    /* the transport options: a field per row of gen/options.h */
#define FA_OPTION_TYPE_number double
#define FA_OPTION_TYPE_string const char *
#define FA_OPTION_FIELD(name, type, lo, hi, missing, curlopt, as) FA_OPTION_TYPE_##type name;
    FA_REQUEST_OPTIONS(FA_OPTION_FIELD)
#undef FA_OPTION_FIELD
};

/* What a finished transfer left, read into C before the handle is reset. */
struct outcome {
    CURLcode code;
    long status;
    long request_size, connects;
    curl_off_t uploaded;
    char errbuf[CURL_ERROR_SIZE];
};

/* request.c: reads and checks the table (raises on wrong types, before
 * anything is allocated); the header list for libcurl (NULL and *oom set
 * when out of memory); whether a URL is http(s). */
void fa_read_request(lua_State *L, int t, struct request *r, struct xfer *x);
struct curl_slist *fa_build_headers(lua_State *L, int idx, int expect, int *oom);
int fa_is_http_url(const char *url);

/* transfer.c: the transfer itself (only C runs after curl_easy_perform, up
 * to the return), the first rewind of a body under the same protection as
 * a callback, the trampoline every callback's Lua work runs in, and the
 * buffers' trimming. */
CURLcode fa_transfer(fa_session *s, const struct request *r, struct xfer *x, struct curl_slist *hdrs,
                     struct outcome *o);
int fa_rewind_body(struct xfer *x);
int fa_trampoline(lua_State *L);
void fa_buf_trim(fa_buf *b);

/* results.c: what the transfer left, read into C; then pushed to Lua. */
void fa_gather(CURL *c, CURLcode code, const char *errbuf, struct outcome *o);
void fa_push_headers(lua_State *L, const fa_buf *head);
int fa_push_failure(lua_State *L, const struct outcome *o, const struct xfer *x);
int fa_push_response(lua_State *L, const struct outcome *o, const struct xfer *x);
int fa_push_early_failure(lua_State *L, const struct xfer *x);

#endif
