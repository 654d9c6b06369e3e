/* Reading a multipart body out (the libcurl transport from its read
 * callback, the cosocket transport through body:pull), rewinding it for a
 * resend, and its Lua methods.  A reader may close its own body: the close
 * waits until the read that called it is over. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "multipart.h"

/* ---- reading ------------------------------------------------------------ */

static size_t copy_segment(fa_multipart *mp, const char *seg, size_t seg_len, char *buf, size_t n)
{
    size_t left = seg_len - (size_t)mp->off;
    size_t take = left < n ? left : n;
    memcpy(buf, seg + mp->off, take);
    mp->off += (curl_off_t)take;
    return take;
}

/* Calls the Lua function behind ref under lua_pcall, leaving one result on
 * the stack; on an error sets "<what> raised: ..." and returns -1. */
static int call_ref(fa_multipart *mp, lua_State *L, int ref, const char *what)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (lua_pcall(L, 0, 1, 0) != 0) {
        char msg[200];
        fa_describe(L, -1, msg, sizeof msg);
        fa_mp_unref(L, &mp->cause_ref);
        mp->cause_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* err.cause: the value itself */
        fa_mp_set_error(mp, FA_KIND(callback), "%s raised: %s", what, msg);
        return -1;
    }
    if (mp->close_pending) {
        lua_pop(L, 1);
        fa_mp_set_error(mp, FA_KIND(invalid_argument), "%s closed its own multipart body", what);
        return -1;
    }
    return 0;
}

/* Calls a reader; leaves its chunk (a string, possibly empty) or nil on the
 * stack and returns 0, or returns -1 with the error set.  In pull mode the
 * value comes from body:feed, and FA_NEED_READER asks the caller for it. */
static int call_reader(fa_multipart *mp, lua_State *L, struct part *p)
{
    p->touched = 1;
    if (mp->pull_mode) {
        if (!mp->has_fed) {
            mp->need_part = (int)(p - mp->parts) + 1;
            return FA_NEED_READER;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, mp->fed_ref);
        fa_mp_unref(L, &mp->fed_ref);
        mp->has_fed = 0;
    } else if (call_ref(mp, L, p->ref, "reader") != 0) {
        return -1;
    }
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) {
        fa_mp_set_error(mp, FA_KIND(callback), "reader returned a %s, not a string or nil",
                  luaL_typename(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static long read_reader(fa_multipart *mp, lua_State *L, struct part *p, char *buf, size_t want)
{
    int empties = 0;
    while (mp->pending == NULL) {
        size_t len;
        const char *chunk;
        int rc = call_reader(mp, L, p);
        if (rc != 0)
            return rc;
        if (lua_isnil(L, -1)) {
            char msg[128];
            lua_pop(L, 1);
            snprintf(msg, sizeof msg, "reader ended after %lld of %lld declared bytes",
                     (long long)mp->off, (long long)p->size);
            fa_mp_set_error(mp, FA_KIND(io), "%s", msg);
            return -1;
        }
        chunk = lua_tolstring(L, -1, &len);
        if ((curl_off_t)len > p->size - mp->off) {
            lua_pop(L, 1);
            fa_mp_set_error(mp, FA_KIND(io), "%s", "reader produced more bytes than its declared size");
            return -1;
        }
        if (len == 0) {
            lua_pop(L, 1);
            if (++empties > 64) {
                fa_mp_set_error(mp, FA_KIND(io), "%s", "reader keeps returning empty strings");
                return -1;
            }
            continue;
        }
        /* anchored first: luaL_ref may raise, and pending must never point
         * at a string nothing holds */
        mp->pending_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        mp->pending = chunk;
        mp->pending_len = len;
        mp->pending_off = 0;
    }
    {
        size_t left = mp->pending_len - mp->pending_off;
        size_t take = left < want ? left : want;
        memcpy(buf, mp->pending + mp->pending_off, take);
        mp->pending_off += take;
        if (mp->pending_off == mp->pending_len)
            fa_mp_drop_pending(mp, L);
        return (long)take;
    }
}

/* After a reader's declared size: one more call must say it has ended. */
static int check_reader_end(fa_multipart *mp, lua_State *L, struct part *p)
{
    int extra, rc = call_reader(mp, L, p);
    if (rc != 0)
        return rc;
    extra = !lua_isnil(L, -1) && fa_rawlen(L, -1) > 0;
    lua_pop(L, 1);
    if (extra) {
        fa_mp_set_error(mp, FA_KIND(io), "%s", "reader produced more bytes than its declared size");
        return -1;
    }
    return 0;
}

static long read_content(fa_multipart *mp, lua_State *L, struct part *p, char *buf, size_t want)
{
    ssize_t r;
    switch (p->kind) {
    case PART_DATA:
        memcpy(buf, p->data + mp->off, want);
        return (long)want;
    case PART_READER:
        return read_reader(mp, L, p, buf, want);
    case PART_FILE:
    default:
        do {
            r = read(p->fd, buf, want);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            fa_mp_set_errno(mp, errno, "reading the file failed", NULL);
            return -1;
        }
        if (r == 0) {
            fa_mp_set_error(mp, FA_KIND(io), "%s", "the file shrank while it was being uploaded");
            return -1;
        }
        return (long)r;
    }
}

/* Whether the body may be read or rewound now: not closed (or closing), and
 * not from inside a read of its own (a reader reading its own body). */
static int usable(fa_multipart *mp)
{
    if (mp->closed || mp->close_pending) {
        fa_mp_set_error(mp, FA_KIND(invalid_argument), "%s", "multipart body is closed");
        return 0;
    }
    if (mp->reading) {
        fa_mp_set_error(mp, FA_KIND(invalid_argument), "%s", "the multipart body is in use by a read in progress");
        return 0;
    }
    return 1;
}

/* A read or rewind starts here. */
static int enter(fa_multipart *mp)
{
    if (!usable(mp))
        return -1;
    mp->reading = 1;
    return 0;
}

/* ...and ends here, closing the body if a callback asked for it meanwhile. */
static long leave(fa_multipart *mp, lua_State *L, long rc)
{
    mp->reading = 0;
    if (mp->close_pending) {
        fa_mp_close(mp, L);
        if (rc >= 0 || rc == FA_NEED_READER) {
            fa_mp_set_error(mp, FA_KIND(invalid_argument), "%s", "the multipart body was closed by its own callback");
            rc = -1;
        }
    }
    return rc;
}

static long read_bytes(fa_multipart *mp, lua_State *L, char *buf, size_t n);

long fa_multipart_read(fa_multipart *mp, lua_State *L, char *buf, size_t n)
{
    if (enter(mp) != 0)
        return -1;
    return leave(mp, L, read_bytes(mp, L, buf, n));
}

static long read_bytes(fa_multipart *mp, lua_State *L, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n && mp->cur <= mp->nparts) {
        struct part *p;
        if (mp->cur == mp->nparts) {
            got += copy_segment(mp, mp->tail, mp->tail_len, buf + got, n - got);
            if ((size_t)mp->off == mp->tail_len)
                mp->cur++;
            continue;
        }
        p = &mp->parts[mp->cur];
        if (!mp->in_content) {
            got += copy_segment(mp, p->head, p->head_len, buf + got, n - got);
            if ((size_t)mp->off == p->head_len) {
                mp->in_content = 1;
                mp->off = 0;
            }
            continue;
        }
        if (mp->off == p->size) {
            int rc = p->kind == PART_READER ? check_reader_end(mp, L, p) : 0;
            if (rc == FA_NEED_READER)
                return got > 0 ? (long)got : FA_NEED_READER;
            if (rc != 0)
                return -1;
            mp->cur++;
            mp->in_content = 0;
            mp->off = 0;
            continue;
        }
        {
            curl_off_t left = p->size - mp->off;
            size_t want = (curl_off_t)(n - got) < left ? n - got : (size_t)left;
            long r = read_content(mp, L, p, buf + got, want);
            if (r == FA_NEED_READER)
                return got > 0 ? (long)got : FA_NEED_READER;
            if (r < 0)
                return -1;
            got += (size_t)r;
            mp->off += r;
        }
    }
    return (long)got;
}

static int check_rewindable(fa_multipart *mp)
{
    int i;
    if (!usable(mp))
        return -1;
    for (i = 0; i < mp->nparts; i++) {
        struct part *p = &mp->parts[i];
        if (p->kind == PART_READER && p->touched && p->rewind_ref == LUA_NOREF) {
            fa_mp_set_error(mp, FA_KIND(io), "%s", "a reader source without 'rewind' cannot be sent again");
            return -1;
        }
    }
    return 0;
}

/* Back to the first byte, once the readers' rewind functions have run. */
static int restart(fa_multipart *mp, lua_State *L)
{
    int i;
    for (i = 0; i < mp->nparts; i++) {
        struct part *p = &mp->parts[i];
        if (p->kind == PART_FILE && lseek(p->fd, (off_t)p->start, SEEK_SET) != (off_t)p->start) {
            fa_mp_set_errno(mp, errno, "cannot rewind the file", NULL);
            return -1;
        }
        p->touched = 0;
    }
    fa_mp_drop_pending(mp, L);
    fa_mp_unref(L, &mp->fed_ref);
    mp->has_fed = 0;
    mp->cur = 0;
    mp->in_content = 0;
    mp->off = 0;
    return 0;
}

static int at_start(const fa_multipart *mp)
{
    return mp->cur == 0 && !mp->in_content && mp->off == 0;
}

static int rewind_parts(fa_multipart *mp, lua_State *L);

int fa_multipart_rewind(fa_multipart *mp, lua_State *L)
{
    if (check_rewindable(mp) != 0)
        return -1;
    if (at_start(mp))
        return 0;
    if (enter(mp) != 0)
        return -1;
    return (int)leave(mp, L, rewind_parts(mp, L));
}

static int rewind_parts(fa_multipart *mp, lua_State *L)
{
    int i;
    for (i = 0; i < mp->nparts; i++) {
        struct part *p = &mp->parts[i];
        if (p->kind == PART_READER && p->touched) {
            if (call_ref(mp, L, p->rewind_ref, "rewind") != 0)
                return -1;
            if (!lua_toboolean(L, -1)) {
                lua_pop(L, 1);
                fa_mp_set_error(mp, FA_KIND(io), "%s", "the reader's rewind failed");
                return -1;
            }
            lua_pop(L, 1);
        }
    }
    return restart(mp, L);
}

/* One transfer at a time: two reading one body in turns would each send
 * pieces of it.  Returns 0, or -1 when another transfer has it. */
int fa_multipart_claim(fa_multipart *mp, int claim)
{
    if (claim && mp->claimed)
        return -1;
    mp->claimed = claim;
    return 0;
}

/* ---- Lua methods -------------------------------------------------------- */

fa_multipart *fa_multipart_check(lua_State *L, int idx)
{
    return (fa_multipart *)luaL_checkudata(L, idx, FA_MULTIPART_MT);
}

static int push_failure(lua_State *L, fa_multipart *mp)
{
    const char *msg, *kind = fa_multipart_error(mp, &msg);
    lua_pushnil(L);
    fa_error_push(L, kind, msg);
    if (mp->err_errno != 0)
        fa_error_set_errno(L, mp->err_errno);
    if (strcmp(kind, FA_KIND(callback)) == 0 && fa_multipart_push_cause(mp, L))
        lua_setfield(L, -2, "cause");
    return 2;
}

/* body:read([n]) -> string | nil at the end | nil, err
 * body:pull([n]) -> the same, or false, reader: call that reader (it may
 * yield) and hand its result to body:feed. */
static int read_method(lua_State *L, int pull)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    size_t n = (size_t)luaL_optinteger(L, 2, 65536);
    long r;
    luaL_argcheck(L, n > 0 && n <= (1u << 24), 2, "chunk size out of range");
    if (mp->closed || mp->reading) { /* a reader reading its own body: scratch is in use */
        fa_mp_set_error(mp, FA_KIND(invalid_argument), "%s",
                  mp->closed ? "multipart body is closed" : "the multipart body is in use by a read in progress");
        return push_failure(L, mp);
    }
    if (mp->scratch_len < n) {
        char *buf = realloc(mp->scratch, n);
        if (buf == NULL)
            return luaL_error(L, "not enough memory");
        mp->scratch = buf;
        mp->scratch_len = n;
    }
    mp->pull_mode = pull;
    r = fa_multipart_read(mp, L, mp->scratch, n);
    mp->pull_mode = 0;
    if (r == FA_NEED_READER) {
        lua_pushboolean(L, 0);
        lua_rawgeti(L, LUA_REGISTRYINDEX, mp->parts[mp->need_part - 1].ref);
        return 2;
    }
    if (r < 0)
        return push_failure(L, mp);
    if (r == 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, mp->scratch, (size_t)r);
    return 1;
}

static int mp_read(lua_State *L)
{
    return read_method(L, 0);
}

static int mp_pull(lua_State *L)
{
    return read_method(L, 1);
}

/* body:feed(chunk_or_nil): what the reader asked for by pull returned. */
static int mp_feed(lua_State *L)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    lua_settop(L, 2);
    if (mp->reading)
        return luaL_error(L, "body:feed during a read of the same body");
    fa_mp_unref(L, &mp->fed_ref);
    mp->fed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    mp->has_fed = 1;
    return 0;
}

static int mp_rewind(lua_State *L)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    if (fa_multipart_rewind(mp, L) != 0)
        return push_failure(L, mp);
    lua_pushboolean(L, 1);
    return 1;
}

/* body:rewinders() -> { rewind functions to call } | nil, err: for callers
 * that run them themselves (they may yield under cosockets), then call
 * body:restart(). */
static int mp_rewinders(lua_State *L)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    int i, n = 0;
    if (check_rewindable(mp) != 0)
        return push_failure(L, mp);
    lua_newtable(L);
    for (i = 0; i < mp->nparts; i++) {
        struct part *p = &mp->parts[i];
        if (p->kind == PART_READER && p->touched) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, p->rewind_ref);
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

static int mp_restart(lua_State *L)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    if (check_rewindable(mp) != 0 || restart(mp, L) != 0)
        return push_failure(L, mp);
    lua_pushboolean(L, 1);
    return 1;
}

static int mp_payload_length(lua_State *L)
{
    fa_pushwhole(L, fa_multipart_payload_length(fa_multipart_check(L, 1)));
    return 1;
}

static int mp_payload_at(lua_State *L)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    curl_off_t wire = 0;
    luaL_argcheck(L, fa_whole_count(luaL_checknumber(L, 2), &wire), 2, "a whole number of bytes expected");
    fa_pushwhole(L, fa_multipart_payload_at(mp, wire));
    return 1;
}

static int mp_length(lua_State *L)
{
    fa_pushwhole(L, fa_multipart_check(L, 1)->length);
    return 1;
}

static int mp_content_type(lua_State *L)
{
    lua_pushstring(L, fa_multipart_check(L, 1)->content_type);
    return 1;
}

static int mp_boundary(lua_State *L)
{
    lua_pushstring(L, fa_multipart_check(L, 1)->boundary);
    return 1;
}

static int mp_close(lua_State *L)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    fa_mp_close(mp, L);
    if (!mp->reading) { /* else body:read is filling it: freed on that close */
        free(mp->scratch); /* a read after close may have made one again */
        mp->scratch = NULL;
        mp->scratch_len = 0;
    }
    return 0;
}

static int mp_tostring(lua_State *L)
{
    fa_multipart *mp = fa_multipart_check(L, 1);
    lua_pushfstring(L, "fileapi.multipart (%s)", mp->closed ? "closed" : "open");
    return 1;
}

void fa_open_multipart(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"read", mp_read},
        {"pull", mp_pull},
        {"feed", mp_feed},
        {"rewind", mp_rewind},
        {"rewinders", mp_rewinders},
        {"restart", mp_restart},
        {"payload_length", mp_payload_length},
        {"payload_at", mp_payload_at},
        {"length", mp_length},
        {"content_type", mp_content_type},
        {"boundary", mp_boundary},
        {"close", mp_close},
        {NULL, NULL},
    };
    fa_newclass(L, FA_MULTIPART_MT, methods, mp_close, mp_tostring);
    lua_pushcfunction(L, fa_mp_new);
    lua_setfield(L, -2, "multipart");
}
