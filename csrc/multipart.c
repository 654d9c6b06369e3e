/* A multipart/form-data body that is produced as it is read: file parts come
 * from disk in the reader's chunk size, so memory stays constant whatever the
 * file's size, and the total length is known before the first byte goes out. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fileapi.h"

enum part_kind { PART_DATA, PART_FILE, PART_READER };

struct part {
    enum part_kind kind;
    char *head;        /* delimiter line, part headers and the blank line */
    size_t head_len;
    curl_off_t size;   /* content bytes */
    curl_off_t start;  /* PART_FILE: where the part's slice of the file begins */
    int ref;           /* the data string or the reader function */
    int rewind_ref;    /* a reader's rewind function, if it has one */
    const char *data;  /* PART_DATA: the referenced string's bytes */
    int fd;            /* PART_FILE */
    int touched;       /* a reader was called since the last rewind */
};

struct fa_multipart {
    struct part *parts;
    int nparts;
    char *tail;
    size_t tail_len;
    char boundary[72];
    char content_type[128];
    curl_off_t length;
    int cur;           /* part being sent; nparts means the closing tail */
    int in_content;    /* 0 while sending the part's head */
    curl_off_t off;    /* offset inside the current segment */
    int pending_ref;   /* what a reader returned beyond the last buffer */
    const char *pending;
    size_t pending_len, pending_off;
    const char *err_kind;
    char err_msg[256];
    int err_errno;     /* the system's reason for an io failure, or 0 */
    int cause_ref;     /* what a reader or rewinder raised */
    int closed;
    /* A reader may close its own body: the close waits until the read (or
     * rewind) that called it is over, and every step after a callback
     * looks at close_pending first. */
    int reading;
    int close_pending;
    /* Pull mode (body:pull): readers are called by the Lua caller, which may
     * yield (nginx cosockets), and handed back with body:feed. */
    int pull_mode;
    int need_part;     /* 1-based part whose reader must be called */
    int has_fed;
    int fed_ref;
    char *scratch;     /* body:pull's buffer, reused from call to call */
    size_t scratch_len;
};

#define FA_NEED_READER (-2)

static void set_error(fa_multipart *mp, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(fa_multipart *mp, const char *kind, const char *fmt, ...)
{
    va_list ap;
    mp->err_kind = kind;
    mp->err_errno = 0;
    va_start(ap, fmt);
    vsnprintf(mp->err_msg, sizeof mp->err_msg, fmt, ap);
    va_end(ap);
}

/* An io failure with the system's reason (err.errno). */
static void set_errno(fa_multipart *mp, int e, const char *what, const char *path)
{
    if (path != NULL)
        set_error(mp, "io", "%s: %s: %s", path, what, strerror(e));
    else
        set_error(mp, "io", "%s: %s", what, strerror(e));
    mp->err_errno = e;
}

int fa_multipart_errno(const fa_multipart *mp)
{
    return mp->err_errno;
}

/* Pushes what the last failed callback raised and returns 1, or 0. */
int fa_multipart_push_cause(fa_multipart *mp, lua_State *L)
{
    if (mp->cause_ref == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, mp->cause_ref);
    return 1;
}

const char *fa_multipart_error(const fa_multipart *mp, const char **message)
{
    *message = mp->err_msg;
    return mp->err_kind ? mp->err_kind : "io";
}

curl_off_t fa_multipart_length(const fa_multipart *mp)
{
    return mp->length;
}

curl_off_t fa_multipart_payload_length(const fa_multipart *mp)
{
    curl_off_t n = 0;
    int i;
    for (i = 0; i < mp->nparts; i++)
        n += mp->parts[i].size;
    return n;
}

/* How many content bytes (part heads and the closing delimiter left out)
 * lie within the first `wire` bytes of the body: progress is reported in
 * the caller's bytes, not the encoding's. */
curl_off_t fa_multipart_payload_at(const fa_multipart *mp, curl_off_t wire)
{
    curl_off_t at = 0, payload = 0;
    int i;
    for (i = 0; i < mp->nparts; i++) {
        const struct part *p = &mp->parts[i];
        at += (curl_off_t)p->head_len;
        if (wire <= at)
            return payload;
        if (wire <= at + p->size)
            return payload + (wire - at);
        at += p->size;
        payload += p->size;
    }
    return payload;
}

static void unref(lua_State *L, int *ref)
{
    if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
        luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
}

static void drop_pending(fa_multipart *mp, lua_State *L)
{
    unref(L, &mp->pending_ref);
    mp->pending = NULL;
    mp->pending_len = mp->pending_off = 0;
}

static void multipart_close(fa_multipart *mp, lua_State *L)
{
    int i;
    if (mp->closed)
        return;
    if (mp->reading) {
        mp->close_pending = 1;
        return;
    }
    mp->closed = 1;
    mp->close_pending = 0;
    unref(L, &mp->cause_ref);
    for (i = 0; i < mp->nparts; i++) {
        struct part *p = &mp->parts[i];
        free(p->head);
        unref(L, &p->ref);
        unref(L, &p->rewind_ref);
        if (p->fd >= 0)
            close(p->fd);
    }
    free(mp->parts);
    mp->parts = NULL;
    mp->nparts = 0;
    free(mp->tail);
    mp->tail = NULL;
    mp->tail_len = 0;
    mp->cur = mp->in_content = 0;
    mp->off = 0;
    drop_pending(mp, L);
    unref(L, &mp->fed_ref);
    free(mp->scratch);
    mp->scratch = NULL;
    mp->scratch_len = 0;
}

/* ---- encoding of part headers ------------------------------------------ */

/* Inside a quoted header parameter: the bytes that could end the quotes or
 * the header line are percent-encoded as browsers do (WHATWG form encoding),
 * so no name can break the body or inject a header. */
static void add_quoted(luaL_Buffer *b, const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f) {
            char esc[4];
            snprintf(esc, sizeof esc, "%%%02X", c);
            luaL_addlstring(b, esc, 3);
        } else {
            luaL_addchar(b, (char)c);
        }
    }
}

/* RFC 8187 ext-value, for servers that read filename* for non-ASCII names. */
static void add_ext_value(luaL_Buffer *b, const char *s, size_t len)
{
    static const char keep[] = "!#$&+-.^_`|~";
    size_t i;
    luaL_addstring(b, "UTF-8''");
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c != 0 && strchr(keep, c) != NULL)) {
            luaL_addchar(b, (char)c);
        } else {
            char esc[4];
            snprintf(esc, sizeof esc, "%%%02X", c);
            luaL_addlstring(b, esc, 3);
        }
    }
}

static int has_high_bytes(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 1;
    return 0;
}

static int is_token_value(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f)
            return 0;
    }
    return len > 0;
}

/* Pushes the head of part `index` (a table at the top of the stack) as a
 * Lua string. */
static void push_head(lua_State *L, const fa_multipart *mp, int index)
{
    luaL_Buffer b;
    size_t name_len, fn_len = 0, ct_len = 0;
    const char *name, *filename, *ctype;
    int t = lua_gettop(L);

    name = fa_optstrfield(L, t, "name", &name_len);
    filename = fa_optstrfield(L, t, "filename", &fn_len);
    ctype = fa_optstrfield(L, t, "content_type", &ct_len);
    if (name == NULL)
        luaL_error(L, "multipart part %d: field 'name' is required", index + 1);
    if (ctype != NULL && !is_token_value(ctype, ct_len))
        luaL_error(L, "multipart part %d: invalid content_type", index + 1);

    luaL_buffinit(L, &b);
    if (index > 0)
        luaL_addstring(&b, "\r\n");
    luaL_addstring(&b, "--");
    luaL_addstring(&b, mp->boundary);
    luaL_addstring(&b, "\r\nContent-Disposition: form-data; name=\"");
    add_quoted(&b, name, name_len);
    luaL_addchar(&b, '"');
    if (filename != NULL) {
        luaL_addstring(&b, "; filename=\"");
        add_quoted(&b, filename, fn_len);
        luaL_addchar(&b, '"');
        if (has_high_bytes(filename, fn_len)) {
            luaL_addstring(&b, "; filename*=");
            add_ext_value(&b, filename, fn_len);
        }
    }
    luaL_addstring(&b, "\r\n");
    if (ctype != NULL) {
        luaL_addstring(&b, "Content-Type: ");
        luaL_addlstring(&b, ctype, ct_len);
        luaL_addstring(&b, "\r\n");
    } else if (filename != NULL) {
        luaL_addstring(&b, "Content-Type: application/octet-stream\r\n");
    }
    luaL_addstring(&b, "\r\n");
    luaL_pushresult(&b);
}

static char *dup_top_string(lua_State *L, size_t *len)
{
    const char *s = lua_tolstring(L, -1, len);
    char *copy = malloc(*len + 1);
    if (copy == NULL)
        luaL_error(L, "not enough memory");
    memcpy(copy, s, *len + 1);
    lua_pop(L, 1);
    return copy;
}

/* ---- construction ------------------------------------------------------- */

static int valid_boundary(const char *s, size_t len)
{
    static const char extra[] = "'()+_,-./:=?";
    size_t i;
    if (len == 0 || len > 70)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c != 0 && strchr(extra, c) != NULL)))
            return 0;
    }
    return 1;
}

/* n random bytes from /dev/urandom; 0 when it could not give them all */
static int random_bytes(unsigned char *raw, size_t n)
{
    size_t got = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    while (got < n) {
        ssize_t r = read(fd, raw + got, n - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    return got == n;
}

static int open_file_part(fa_multipart *mp, struct part *p, const char *path, curl_off_t offset,
                          curl_off_t length);

/* core.file_size(path) -> bytes | nil, err: a regular file's size, checked
 * the way an upload opens it (a FIFO is refused, never waited on). */
static int l_file_size(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    fa_multipart probe;
    struct part p;
    memset(&probe, 0, sizeof probe);
    memset(&p, 0, sizeof p);
    p.fd = -1;
    if (open_file_part(&probe, &p, path, 0, -1) != 0) {
        const char *msg, *kind = fa_multipart_error(&probe, &msg);
        if (p.fd >= 0)
            close(p.fd);
        lua_pushnil(L);
        fa_error_push(L, kind, msg);
        if (probe.err_errno != 0)
            fa_error_set_errno(L, probe.err_errno);
        return 2;
    }
    close(p.fd);
    fa_pushwhole(L, p.size);
    return 1;
}

/* core.random_token(n) -> n random characters [a-z0-9] | nil: a name no
 * other upload can have (files.ro keys appended chunks by the part's file
 * name). */
static int l_random_token(lua_State *L)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char raw[64];
    char out[64];
    lua_Integer n = luaL_checkinteger(L, 1), i;
    luaL_argcheck(L, n > 0 && n <= 64, 1, "length out of range");
    if (!random_bytes(raw, (size_t)n)) {
        lua_pushnil(L);
        return 1;
    }
    for (i = 0; i < n; i++)
        out[i] = alphabet[raw[i] % 36];
    lua_pushlstring(L, out, (size_t)n);
    return 1;
}

/* A boundary no content can guess: 128 random bits.  Without randomness
 * there is no boundary worth the name, so the body is refused. */
static int random_boundary(char *out, size_t size)
{
    unsigned char raw[16];
    size_t i;
    if (!random_bytes(raw, sizeof raw))
        return -1;
    snprintf(out, size, "fileapi-");
    for (i = 0; i < sizeof raw; i++)
        snprintf(out + 8 + 2 * i, size - 8 - 2 * i, "%02x", raw[i]);
    return 0;
}

/* A part may be a slice of its file or string: `offset` and `length`
 * (chunked uploads send one file as several requests, each read straight
 * from disk).  Raises on values that are not whole numbers >= 0. */
#define FA_MAX_WHOLE 9007199254740992.0 /* 2^53: exact in every Lua's numbers */

/* A byte count from Lua: a whole number from 0 to 2^53, checked before it
 * is converted (a double past curl_off_t's range has no defined cast). */
static int whole_count(double v, curl_off_t *out)
{
    if (!(v >= 0 && v <= FA_MAX_WHOLE) || v != (double)(long long)v)
        return 0;
    *out = (curl_off_t)v;
    return 1;
}

/* A part may be a slice of its file or string: `offset` and `length`
 * (chunked uploads send one file as several requests, each read straight
 * from disk).  Raises on values that are not whole numbers >= 0; length -1
 * means "to the end". */
static void read_slice(lua_State *L, int t, int index, curl_off_t *offset, curl_off_t *length)
{
    double o = fa_optnumfield(L, t, "offset", 0);
    double n = fa_optnumfield(L, t, "length", -1);
    *offset = 0;
    *length = -1;
    if (!whole_count(o, offset) || (n != -1 && !whole_count(n, length)))
        luaL_error(L, "multipart part %d: 'offset' and 'length' must be whole numbers from 0 to 2^53", index + 1);
    if (n == -1)
        *length = -1;
}

/* Whether offset (+ length, when given) lies within size; compared without
 * adding, so no sum can overflow. */
static int slice_fits(curl_off_t offset, curl_off_t length, curl_off_t size)
{
    if (offset > size)
        return 0;
    return length < 0 || length <= size - offset;
}

/* Opens a file part.  Returns 0, or -1 with the error set on mp. */
static int open_file_part(fa_multipart *mp, struct part *p, const char *path, curl_off_t offset,
                          curl_off_t length)
{
    struct stat st;
    int flags;
    /* O_NONBLOCK: opening a FIFO (or a device) must not hang before the
     * type check below refuses it; regular files ignore the flag. */
    p->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (p->fd < 0) {
        int e = errno;
        set_error(mp, "io", "%s: %s", path, strerror(e));
        mp->err_errno = e;
        return -1;
    }
    if (fstat(p->fd, &st) != 0) {
        set_errno(mp, errno, "cannot inspect the file", path);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        set_error(mp, "invalid_argument", "%s: not a regular file", path);
        return -1;
    }
    flags = fcntl(p->fd, F_GETFL);
    if (flags < 0 || fcntl(p->fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        set_error(mp, "io", "%s: cannot use the file", path);
        return -1;
    }
    if (!slice_fits(offset, length, (curl_off_t)st.st_size)) {
        set_error(mp, "io", "%s: the file is shorter than the part to send", path);
        return -1;
    }
    if (offset > 0 && lseek(p->fd, (off_t)offset, SEEK_SET) != (off_t)offset) {
        set_errno(mp, errno, "cannot seek in the file", path);
        return -1;
    }
    p->start = offset;
    p->size = length < 0 ? (curl_off_t)st.st_size - offset : length;
    return 0;
}

/* Fills part i from the table at the top of the stack.  Raises on a wrong
 * type; returns -1 with the error on mp for a file that cannot be used. */
static int fill_part(lua_State *L, fa_multipart *mp, int i)
{
    struct part *p = &mp->parts[i];
    int t = lua_gettop(L);
    size_t len;
    const char *path;
    curl_off_t offset, length;

    read_slice(L, t, i, &offset, &length);
    lua_getfield(L, t, "data");
    lua_getfield(L, t, "reader");
    path = fa_optstrfield(L, t, "path", &len);
    if (lua_type(L, -2) == LUA_TSTRING) {
        p->kind = PART_DATA;
        p->data = lua_tolstring(L, -2, &len);
        if (!slice_fits(offset, length, (curl_off_t)len))
            luaL_error(L, "multipart part %d: the slice is outside the data", i + 1);
        p->data += offset;
        p->size = length < 0 ? (curl_off_t)len - offset : length;
        lua_pushvalue(L, -2);
        p->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (lua_type(L, -1) == LUA_TFUNCTION) {
        double size = fa_optnumfield(L, t, "size", -1);
        p->kind = PART_READER;
        if (!whole_count(size, &p->size))
            luaL_error(L, "multipart part %d: a reader needs a whole 'size' from 0 to 2^53", i + 1);
        lua_pushvalue(L, -1);
        p->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_getfield(L, t, "rewind");
        if (lua_type(L, -1) == LUA_TFUNCTION)
            p->rewind_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    } else if (path != NULL) {
        p->kind = PART_FILE;
        if (open_file_part(mp, p, path, offset, length) != 0)
            return -1;
    } else {
        luaL_error(L, "multipart part %d: needs 'data', 'path' or 'reader'", i + 1);
    }
    lua_pop(L, 2);
    push_head(L, mp, i);
    p->head = dup_top_string(L, &p->head_len);
    /* every part is at most 2^53 bytes; the sum must stay far from the top */
    if (mp->length > (curl_off_t)FA_MAX_WHOLE * 16 - p->size - (curl_off_t)p->head_len)
        luaL_error(L, "multipart: the body is too large");
    mp->length += (curl_off_t)p->head_len + p->size;
    return 0;
}

/* core.multipart(parts [, boundary]) -> body | nil, err */
static int l_multipart(lua_State *L)
{
    fa_multipart *mp;
    int i, n;
    size_t blen = 0;
    const char *boundary = luaL_optlstring(L, 2, NULL, &blen);

    luaL_checktype(L, 1, LUA_TTABLE);
    if (boundary != NULL && !valid_boundary(boundary, blen))
        return luaL_argerror(L, 2, "invalid multipart boundary");
    n = (int)fa_rawlen(L, 1);
    if (n < 1)
        return luaL_argerror(L, 1, "at least one part is required");

    mp = fa_newuserdata(L, sizeof *mp);
    memset(mp, 0, sizeof *mp);
    mp->pending_ref = mp->fed_ref = mp->cause_ref = LUA_NOREF;
    mp->closed = 1; /* nothing to free until parts exist */
    fa_setmetatable(L, FA_MULTIPART_MT);
    mp->parts = calloc((size_t)n, sizeof *mp->parts);
    if (mp->parts == NULL)
        return luaL_error(L, "not enough memory");
    mp->closed = 0;
    for (i = 0; i < n; i++) {
        mp->parts[i].fd = -1;
        mp->parts[i].ref = mp->parts[i].rewind_ref = LUA_NOREF;
    }
    mp->nparts = n;
    if (boundary != NULL) {
        memcpy(mp->boundary, boundary, blen + 1);
    } else if (random_boundary(mp->boundary, sizeof mp->boundary) != 0) {
        multipart_close(mp, L);
        lua_pushnil(L);
        fa_error_push(L, "io", "no random bytes for a multipart boundary (/dev/urandom)");
        return 2;
    }
    snprintf(mp->content_type, sizeof mp->content_type, "multipart/form-data; boundary=%s",
             mp->boundary);

    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (lua_type(L, -1) != LUA_TTABLE)
            return luaL_error(L, "multipart part %d must be a table", i + 1);
        if (fill_part(L, mp, i) != 0) {
            const char *msg, *kind = fa_multipart_error(mp, &msg);
            fa_error_push(L, kind, msg);
            if (mp->err_errno != 0)
                fa_error_set_errno(L, mp->err_errno);
            multipart_close(mp, L);
            lua_pushnil(L);
            lua_insert(L, -2);
            return 2;
        }
        lua_pop(L, 1);
    }
    lua_pushfstring(L, "\r\n--%s--\r\n", mp->boundary);
    mp->tail = dup_top_string(L, &mp->tail_len);
    mp->length += (curl_off_t)mp->tail_len;
    return 1;
}

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
        unref(L, &mp->cause_ref);
        mp->cause_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* err.cause: the value itself */
        set_error(mp, "callback", "%s raised: %s", what, msg);
        return -1;
    }
    if (mp->close_pending) {
        lua_pop(L, 1);
        set_error(mp, "invalid_argument", "%s closed its own multipart body", what);
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
        unref(L, &mp->fed_ref);
        mp->has_fed = 0;
    } else if (call_ref(mp, L, p->ref, "reader") != 0) {
        return -1;
    }
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) {
        set_error(mp, "callback", "reader returned a %s, not a string or nil",
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
            set_error(mp, "io", "%s", msg);
            return -1;
        }
        chunk = lua_tolstring(L, -1, &len);
        if ((curl_off_t)len > p->size - mp->off) {
            lua_pop(L, 1);
            set_error(mp, "io", "%s", "reader produced more bytes than its declared size");
            return -1;
        }
        if (len == 0) {
            lua_pop(L, 1);
            if (++empties > 64) {
                set_error(mp, "io", "%s", "reader keeps returning empty strings");
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
            drop_pending(mp, L);
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
        set_error(mp, "io", "%s", "reader produced more bytes than its declared size");
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
            set_errno(mp, errno, "reading the file failed", NULL);
            return -1;
        }
        if (r == 0) {
            set_error(mp, "io", "%s", "the file shrank while it was being uploaded");
            return -1;
        }
        return (long)r;
    }
}

/* A read or rewind starts here: not on a closed body, and not from inside
 * another (a reader reading its own body). */
static int enter(fa_multipart *mp)
{
    if (mp->closed || mp->close_pending) {
        set_error(mp, "invalid_argument", "%s", "multipart body is closed");
        return -1;
    }
    if (mp->reading) {
        set_error(mp, "invalid_argument", "%s", "the multipart body is in use by a read in progress");
        return -1;
    }
    mp->reading = 1;
    return 0;
}

/* ...and ends here, closing the body if a callback asked for it meanwhile. */
static long leave(fa_multipart *mp, lua_State *L, long rc)
{
    mp->reading = 0;
    if (mp->close_pending) {
        multipart_close(mp, L);
        if (rc >= 0 || rc == FA_NEED_READER) {
            set_error(mp, "invalid_argument", "%s", "the multipart body was closed by its own callback");
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
    if (mp->closed || mp->close_pending) {
        set_error(mp, "invalid_argument", "%s", "multipart body is closed");
        return -1;
    }
    if (mp->reading) {
        set_error(mp, "invalid_argument", "%s", "the multipart body is in use by a read in progress");
        return -1;
    }
    for (i = 0; i < mp->nparts; i++) {
        struct part *p = &mp->parts[i];
        if (p->kind == PART_READER && p->touched && p->rewind_ref == LUA_NOREF) {
            set_error(mp, "io", "%s", "a reader source without 'rewind' cannot be sent again");
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
            set_errno(mp, errno, "cannot rewind the file", NULL);
            return -1;
        }
        p->touched = 0;
    }
    drop_pending(mp, L);
    unref(L, &mp->fed_ref);
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
                set_error(mp, "io", "%s", "the reader's rewind failed");
                return -1;
            }
            lua_pop(L, 1);
        }
    }
    return restart(mp, L);
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
    if (strcmp(kind, "callback") == 0 && fa_multipart_push_cause(mp, L))
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
        set_error(mp, "invalid_argument", "%s",
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
    unref(L, &mp->fed_ref);
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
    curl_off_t wire;
    luaL_argcheck(L, whole_count(luaL_checknumber(L, 2), &wire), 2, "a whole number of bytes expected");
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
    multipart_close(mp, L);
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
    lua_pushcfunction(L, l_multipart);
    lua_setfield(L, -2, "multipart");
    lua_pushcfunction(L, l_file_size);
    lua_setfield(L, -2, "file_size");
    lua_pushcfunction(L, l_random_token);
    lua_setfield(L, -2, "random_token");
}
