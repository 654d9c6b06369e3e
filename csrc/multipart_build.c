/* A multipart/form-data body that is produced as it is read: file parts come
 * from disk in the reader's chunk size, so memory stays constant whatever the
 * file's size, and the total length is known before the first byte goes out.
 * This half builds it: the parts from their descriptions (data, a file or a
 * slice of one, a reader), their headers encoded so no name can break the
 * body, the boundary, the length; failures and closing. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "multipart.h"

void fa_mp_set_error(fa_multipart *mp, const char *kind, const char *fmt, ...)
{
    va_list ap;
    mp->err_kind = kind;
    mp->err_errno = 0;
    va_start(ap, fmt);
    vsnprintf(mp->err_msg, sizeof mp->err_msg, fmt, ap);
    va_end(ap);
}

/* An io failure with the system's reason (err.errno). */
void fa_mp_set_errno(fa_multipart *mp, int e, const char *what, const char *path)
{
    if (path != NULL)
        fa_mp_set_error(mp, FA_KIND(io), "%s: %s: %s", path, what, strerror(e));
    else
        fa_mp_set_error(mp, FA_KIND(io), "%s: %s", what, strerror(e));
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
    return mp->err_kind ? mp->err_kind : FA_KIND(io);
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

void fa_mp_unref(lua_State *L, int *ref)
{
    if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
        luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
}

void fa_mp_drop_pending(fa_multipart *mp, lua_State *L)
{
    fa_mp_unref(L, &mp->pending_ref);
    mp->pending = NULL;
    mp->pending_len = mp->pending_off = 0;
}

void fa_mp_close(fa_multipart *mp, lua_State *L)
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
    fa_mp_unref(L, &mp->cause_ref);
    for (i = 0; i < mp->nparts; i++) {
        struct part *p = &mp->parts[i];
        free(p->head);
        fa_mp_unref(L, &p->ref);
        fa_mp_unref(L, &p->rewind_ref);
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
    fa_mp_drop_pending(mp, L);
    fa_mp_unref(L, &mp->fed_ref);
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

/* A boundary no content can guess: 128 random bits.  Without randomness
 * there is no boundary worth the name, so the body is refused. */
static int random_boundary(char *out, size_t size)
{
    unsigned char raw[16];
    size_t i;
    if (!fa_random_bytes(raw, sizeof raw))
        return -1;
    snprintf(out, size, "fileapi-");
    for (i = 0; i < sizeof raw; i++)
        snprintf(out + 8 + 2 * i, size - 8 - 2 * i, "%02x", raw[i]);
    return 0;
}

/* A part may be a slice of its file or string: `offset` and `length`
 * (chunked uploads send one file as several requests, each read straight
 * from disk).  Raises on values that are not whole numbers >= 0; no length
 * means "to the end" (-1 inside; a -1 from Lua is refused like any
 * negative number, so the sentinel cannot be passed in). */
static void read_slice(lua_State *L, int t, int index, curl_off_t *offset, curl_off_t *length)
{
    double o = fa_optnumfield(L, t, "offset", 0);
    double n = fa_optnumfield(L, t, "length", 0);
    int given;
    lua_getfield(L, t, "length");
    given = !lua_isnil(L, -1);
    lua_pop(L, 1);
    *offset = 0;
    *length = -1;
    if (!fa_whole_count(o, offset) || (given && !fa_whole_count(n, length)))
        luaL_error(L, "multipart part %d: 'offset' and 'length' must be whole numbers from 0 to 2^53", index + 1);
}

/* Whether offset (+ length, when given) lies within size; compared without
 * adding, so no sum can overflow. */
static int slice_fits(curl_off_t offset, curl_off_t length, curl_off_t size)
{
    if (offset > size)
        return 0;
    return length < 0 || length <= size - offset;
}

/* Opens a file part: a regular file (fs.c refuses a FIFO at once) holding
 * the slice.  Returns 0, or -1 with the error set on mp. */
static int open_file_part(fa_multipart *mp, struct part *p, const char *path, curl_off_t offset,
                          curl_off_t length)
{
    curl_off_t size = 0;
    const char *why;
    p->fd = fa_open_regular(path, &size, &why);
    if (p->fd < 0) {
        int e = errno;
        if (why == NULL) {
            fa_mp_set_error(mp, FA_KIND(io), "%s: %s", path, strerror(e));
            mp->err_errno = e;
        } else if (e == 0) {
            fa_mp_set_error(mp, FA_KIND(invalid_argument), "%s: %s", path, why);
        } else {
            fa_mp_set_errno(mp, e, why, path);
        }
        return -1;
    }
    if (!slice_fits(offset, length, size)) {
        fa_mp_set_error(mp, FA_KIND(io), "%s: the file is shorter than the part to send", path);
        return -1;
    }
    if (offset > 0 && lseek(p->fd, (off_t)offset, SEEK_SET) != (off_t)offset) {
        fa_mp_set_errno(mp, errno, "cannot seek in the file", path);
        return -1;
    }
    p->start = offset;
    p->size = length < 0 ? size - offset : length;
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
        if (!fa_whole_count(size, &p->size))
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
int fa_mp_new(lua_State *L)
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
        fa_mp_close(mp, L);
        lua_pushnil(L);
        fa_error_push(L, FA_KIND(io), "no random bytes for a multipart boundary (/dev/urandom)");
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
            fa_mp_close(mp, L);
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
