/* The request table, read and checked on the C side (the Lua side,
 * fileapi.http.request, checks the whole table first, for both transports;
 * these checks are the core's own guard against bad pointers), and set on
 * the libcurl handle. */
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include "transfer.h"

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

static void read_sink(lua_State *L, int t, struct request *r, struct xfer *x)
{
    lua_getfield(L, t, "sink");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
    } else if (lua_type(L, -1) == LUA_TFUNCTION) {
        r->sink_idx = lua_gettop(L);
    } else if ((x->sink = fa_sink_test(L, -1)) == NULL) {
        luaL_error(L, "request: 'sink' must be a writer function or a file sink");
    } else {
        r->sink_idx = lua_gettop(L); /* the sink must outlive the transfer */
    }
    r->decide_idx = optfunction(L, t, "decide");
    if (r->sink_idx && r->decide_idx == 0)
        luaL_error(L, "request: a 'sink' needs 'decide'");
    r->received_idx = optfunction(L, t, "on_received");
    x->has_decide = r->decide_idx != 0;
    x->has_received = r->received_idx != 0;
}

/* The transport options, a descriptor per row of gen/options.h (made from
 * lua/fileapi/http/options.lua): read by one loop, into their fields. */
enum { OPTION_number, OPTION_string };

static const struct option_row {
    const char *name;
    int type;
    size_t offset;
    double lo, hi, missing;
} option_rows[] = {
#define OPTION_ROW(name, type, lo, hi, missing, curlopt, as) \
    {#name, OPTION_##type, offsetof(struct request, name), lo, hi, missing},
    FA_REQUEST_OPTIONS(OPTION_ROW)
#undef OPTION_ROW
};

#define OPTION_COUNT (sizeof option_rows / sizeof option_rows[0])

static void read_options(lua_State *L, int t, struct request *r)
{
    size_t i, len;
    for (i = 0; i < OPTION_COUNT; i++) {
        const struct option_row *o = &option_rows[i];
        char *field = (char *)r + o->offset;
        if (o->type == OPTION_number) {
            double v = fa_optnumfield(L, t, o->name, o->missing);
            /* NaN fails too; milliseconds of a timeout must fit a long */
            if (!(v >= o->lo && v <= o->hi))
                luaL_error(L, "request: '%s' is out of range", o->name);
            memcpy(field, &v, sizeof v);
        } else {
            const char *s = fa_optstrfield(L, t, o->name, &len);
            if (s != NULL && has_ctl(s, len))
                luaL_error(L, "request: '%s' has control characters", o->name);
            memcpy(field, &s, sizeof s);
        }
    }
}

/* Reads and checks every field before anything is held, so a wrong type
 * raises with nothing to leak.  The values the transfer uses stay on the
 * stack, at the *_idx slots, for the caller to anchor. */
void fa_read_request(lua_State *L, int t, struct request *r, struct xfer *x)
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
    lua_getfield(L, t, "body");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
    } else if (lua_type(L, -1) != LUA_TSTRING) {
        luaL_error(L, "field 'body' must be a string");
    } else { /* stays on the stack: its bytes are read during the transfer */
        r->body = lua_tolstring(L, -1, &r->body_len);
        r->body_idx = lua_gettop(L);
    }
    read_options(L, t, r);
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
        r->mp_idx = lua_gettop(L); /* the body must outlive the transfer */
    } else {
        lua_pop(L, 1);
        x->body = r->body;
        x->total = x->payload_total = (curl_off_t)r->body_len;
    }
    if (x->mp != NULL && r->body != NULL)
        luaL_error(L, "request: 'body' and 'multipart' exclude each other");
    if (r->method != NULL && strcmp(r->method, "HEAD") == 0 && (x->mp != NULL || r->body != NULL))
        luaL_error(L, "request: a HEAD request has no body");
    r->progress_idx = optfunction(L, t, "on_progress");
    x->has_progress = r->progress_idx != 0;
    read_sink(L, t, r, x);
}

/* Strings of the headers table stay alive on the stack while the list is
 * built; nothing is pushed, so nothing can raise with the list half made. */
struct curl_slist *fa_build_headers(lua_State *L, int idx, int expect, int *oom)
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

int fa_is_http_url(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* ---- libcurl's options for one request ---------------------------------- */

/* Milliseconds rounded up, and one more: libcurl subtracts times in whole
 * milliseconds truncated toward zero, which can end a transfer up to one
 * before its timeout (as nginx's clock can for the cosocket transport). */
static long to_ms(double seconds)
{
    return seconds <= 0 ? 0 : (long)ceil(seconds * 1000.0) + 1;
}

/* A row of gen/options.h sets its libcurl option on c from r as its `as`
 * says; a bespoke row has its own code (idle_expired, buffer_body). */
#define SET_ms(opt, v) curl_easy_setopt(c, opt, to_ms(v))
#define SET_string(opt, v) do { if ((v) != NULL) curl_easy_setopt(c, opt, v); } while (0)
#define SET_bespoke(opt, v) do { } while (0)
#define SET_OPTION(name, type, lo, hi, missing, curlopt, as) SET_##as(curlopt, r->name);

static void configure_method(CURL *c, const struct request *r, const struct xfer *x)
{
    int has_body = x->mp != NULL || r->body != NULL;
    const char *method = r->method ? r->method : (has_body ? "POST" : "GET");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        return;
    }
    if (has_body) { /* sent by the read callback (fa_set_callbacks) */
        curl_easy_setopt(c, CURLOPT_POST, 1L);
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

/* The handle, freshly reset, set up for the request; libcurl copies the
 * strings, and keeps pointers only to x (inside the session) and its
 * header list and error buffer, until the handle is reset again. */
void fa_configure(CURL *c, const struct request *r, struct xfer *x)
{
    curl_easy_setopt(c, CURLOPT_PRIVATE, (void *)x);
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(c, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 1000L);
    if (r->sink_idx != 0)
        curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 128L * 1024L);
    FA_REQUEST_OPTIONS(SET_OPTION) /* each row that names a libcurl option */
    configure_method(c, r, x);
    fa_set_callbacks(c, x);
}

/* Every field fa_read_request reads, for spec/tables_spec.lua to hold
 * against the request contract (fileapi.http.request): the call's own
 * fields, then the options' rows.  `cancelled` is the cosocket transport's:
 * this session learns of close() by itself. */
static const char *const call_fields[] = {
    "url", "method", "body", "expect_continue", "headers", "multipart", "on_progress", "sink", "decide", "on_received",
};

static int l_request_fields(lua_State *L)
{
    size_t i, n = sizeof call_fields / sizeof call_fields[0];
    lua_createtable(L, (int)(n + OPTION_COUNT), 0);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, call_fields[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    for (i = 0; i < OPTION_COUNT; i++) {
        lua_pushstring(L, option_rows[i].name);
        lua_rawseti(L, -2, (int)(n + i) + 1);
    }
    return 1;
}

void fa_open_request(lua_State *L)
{
    lua_pushcfunction(L, l_request_fields);
    lua_setfield(L, -2, "request_fields");
}
