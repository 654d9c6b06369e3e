/* Results of a finished transfer: its facts read into C before the handle
 * is reset, then pushed as the response table or as nil, err.  Pushing may
 * raise (memory): the callers push only what nothing else depends on (a
 * perform's client is usable again by then; a run's transfer stays queued
 * until its result is in place). */
#include <stdio.h>
#include <string.h>
#include "transfer.h"

void fa_gather(CURL *c, CURLcode code, const char *errbuf, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    o->code = code;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &o->status);
    curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &o->request_size);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &o->connects);
    curl_easy_getinfo(c, CURLINFO_SIZE_UPLOAD_T, &o->uploaded);
    curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &o->downloaded);
    snprintf(o->errbuf, sizeof o->errbuf, "%s", errbuf);
}

void fa_push_headers(lua_State *L, const fa_buf *head)
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
    /* what on_event's request events report: the response body's bytes as
     * they came (before a sink skipped any), and whether the request went
     * out on a connection an earlier one had opened */
    fa_pushwhole(L, o->downloaded);
    lua_setfield(L, -2, "downloaded");
    lua_pushboolean(L, sent && o->connects == 0);
    lua_setfield(L, -2, "reused");
}

/* "<callback> raised: <what it raised>", from the value at cause_idx */
static void push_callback_error(lua_State *L, const struct xfer *x, int cause_idx)
{
    char text[400];
    if (x->fail_msg[0] != '\0') {
        fa_error_push(L, FA_KIND(callback), x->fail_msg);
    } else {
        fa_describe(L, cause_idx, text, sizeof text);
        lua_pushfstring(L, "%s raised: %s", x->raised_by ? x->raised_by : "a callback", text);
        fa_error_push(L, FA_KIND(callback), lua_tostring(L, -1));
        lua_remove(L, -2);
    }
    if (!lua_isnil(L, cause_idx)) {
        lua_pushvalue(L, cause_idx);
        lua_setfield(L, -2, "cause");
    }
}

static int push_failure(lua_State *L, const struct xfer *x, int cause_idx)
{
    const struct outcome *o = &x->o;
    lua_pushnil(L);
    if (x->fail_kind != NULL && strcmp(x->fail_kind, FA_KIND(callback)) == 0)
        push_callback_error(L, x, cause_idx);
    else if (x->fail_kind != NULL)
        fa_error_push(L, x->fail_kind, x->fail_msg);
    else if (x->oom)
        fa_error_push(L, FA_KIND(io), "not enough memory");
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

static int push_response(lua_State *L, const struct xfer *x)
{
    const struct outcome *o = &x->o;
    lua_createtable(L, 0, 11);
    fa_pushwhole(L, o->status);
    lua_setfield(L, -2, "status");
    fa_push_headers(L, &x->s->head);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, x->s->body.data ? x->s->body.data : "", x->s->body.len);
    lua_setfield(L, -2, "body");
    lua_pushboolean(L, x->sinking);
    lua_setfield(L, -2, "sunk");
    set_transfer_facts(L, o, x);
    return 1;
}

/* The response, or nil and the error: what session:perform returns. */
int fa_push_result(lua_State *L, const struct xfer *x, int cause_idx)
{
    return x->o.code == CURLE_OK ? push_response(L, x) : push_failure(L, x, cause_idx);
}

/* A failure before the transfer began: the error alone, no transfer facts. */
int fa_push_early_failure(lua_State *L, const struct xfer *x, int cause_idx)
{
    if (x->oom)
        return luaL_error(L, "not enough memory");
    lua_pushnil(L);
    if (x->fail_kind != NULL && strcmp(x->fail_kind, FA_KIND(callback)) == 0)
        push_callback_error(L, x, cause_idx);
    else
        fa_error_push(L, x->fail_kind ? x->fail_kind : FA_KIND(io), x->fail_msg);
    if (x->fail_errno != 0)
        fa_error_set_errno(L, x->fail_errno);
    return 2;
}
