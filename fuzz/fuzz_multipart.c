/* libFuzzer target: multipart encoding of user-given names and filenames.
 * The input is split at NUL bytes into field name, filename, content type
 * and content.  Properties: the body has exactly the announced length; it
 * parses back into one part whose headers are exactly Content-Disposition and
 * (when given) Content-Type, with no header injected; the quoted parameters
 * percent-decode to the given name and filename; the content is unchanged.
 * An input that starts with 0xFF carries 16 more bytes first: the offset and
 * length of a slice of the content, as two signed 64-bit numbers (so huge,
 * negative and overflowing pairs come up); the part must then be refused
 * exactly when the slice is not inside the content, and be that slice
 * otherwise. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "../csrc/fileapi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static void check(int ok)
{
    if (!ok)
        abort();
}

/* The escaping a quoted parameter must get: '"', '\\', controls and DEL as
 * %XX, every other byte as it is (what browsers send). */
static size_t escape(const char *s, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, n = 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f) {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        } else {
            out[n++] = (char)c;
        }
    }
    return n;
}

/* Parses `key="value"` at *pos, as a server walks the parameters one after
 * another; the value (up to the next quote) must be the escaped form of
 * want, so it holds no quote, CR or LF of its own.  Advances *pos. */
static void check_param(const char **pos, const char *end, const char *key, const char *want,
                        size_t want_len)
{
    const char *p = *pos, *q;
    char *expected;
    size_t n, klen = strlen(key);
    check((size_t)(end - p) >= klen && memcmp(p, key, klen) == 0);
    p += klen;
    q = memchr(p, '"', (size_t)(end - p));
    check(q != NULL);
    expected = malloc(3 * want_len + 1);
    n = escape(want, want_len, expected);
    check(n == (size_t)(q - p) && memcmp(expected, p, n) == 0);
    free(expected);
    *pos = q + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *fields[4] = {"", "", "", ""};
    size_t lens[4] = {0, 0, 0, 0};
    size_t i, start = 0;
    int f = 0, top, has_ctype;
    const char *body, *delim_end, *head_end, *line;
    size_t body_len, length;
    char boundary[80];
    int64_t slice_off = 0, slice_len = 0;
    int sliced = 0, fits;
    const char *content;
    size_t content_len;

    if (size > 17 && data[0] == 0xFF) {
        memcpy(&slice_off, data + 1, 8);
        memcpy(&slice_len, data + 9, 8);
        sliced = 1;
        data += 17;
        size -= 17;
    }
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaopen_fileapi_core(L);
        lua_setglobal(L, "core");
    }
    for (i = 0; i <= size && f < 4; i++) {
        if (i == size || (data[i] == 0 && f < 3)) {
            fields[f] = (const char *)data + start;
            lens[f++] = i - start;
            start = i + 1;
        }
    }
    if (lens[0] == 0 || lens[1] == 0)
        return 0;
    /* content types are checked by the Lua layer; feed only plausible ones */
    for (i = 0; i < lens[2]; i++)
        if ((unsigned char)fields[2][i] < 0x20 || (unsigned char)fields[2][i] >= 0x7f)
            return 0;
    has_ctype = lens[2] > 0;

    top = lua_gettop(L);
    lua_getglobal(L, "core");
    lua_getfield(L, -1, "multipart");
    lua_createtable(L, 1, 0);
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, fields[0], lens[0]);
    lua_setfield(L, -2, "name");
    lua_pushlstring(L, fields[1], lens[1]);
    lua_setfield(L, -2, "filename");
    if (has_ctype) {
        lua_pushlstring(L, fields[2], lens[2]);
        lua_setfield(L, -2, "content_type");
    }
    lua_pushlstring(L, fields[3], lens[3]);
    lua_setfield(L, -2, "data");
    content = fields[3];
    content_len = lens[3];
    fits = 1;
    if (sliced) {
        lua_pushnumber(L, (lua_Number)slice_off);
        lua_setfield(L, -2, "offset");
        lua_pushnumber(L, (lua_Number)slice_len);
        lua_setfield(L, -2, "length");
        fits = slice_off >= 0 && slice_len >= 0 && (uint64_t)slice_off <= lens[3] &&
               (uint64_t)slice_len <= lens[3] - (uint64_t)slice_off;
        if (fits) {
            content = fields[3] + slice_off;
            content_len = (size_t)slice_len;
        }
    }
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "fuzzBOUNDARY");
    if (!fits) { /* refused by a raise, never read */
        check(lua_pcall(L, 2, 1, 0) != 0);
        lua_settop(L, top);
        return 0;
    }
    check(lua_pcall(L, 2, 1, 0) == 0);
    check(!lua_isnil(L, -1));
    lua_getfield(L, -1, "length");
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    length = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    /* read it all through the streaming path in small chunks */
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "concat");
    lua_newtable(L);
    for (i = 1;; i++) {
        lua_getfield(L, -4, "read");
        lua_pushvalue(L, -5);
        lua_pushinteger(L, 7);
        lua_call(L, 2, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        lua_rawseti(L, -2, (int)i);
    }
    lua_call(L, 1, 1);
    body = lua_tolstring(L, -1, &body_len);
    check(body_len == length);

    strcpy(boundary, "--fuzzBOUNDARY\r\n");
    check(memcmp(body, boundary, strlen(boundary)) == 0);
    delim_end = body + strlen(boundary);
    head_end = memmem(delim_end, body_len - (size_t)(delim_end - body), "\r\n\r\n", 4);
    check(head_end != NULL);
    /* header lines: Content-Disposition, then Content-Type; nothing else */
    line = delim_end;
    {
        const char *eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
        size_t line_len = (size_t)(eol - line);
        const char *pos = line + 30;
        check(line_len > 31 && memcmp(line, "Content-Disposition: form-data; ", 32) == 0);
        check(memchr(line, '\n', line_len) == NULL && memchr(line, '\r', line_len) == NULL);
        check_param(&pos, eol, "; name=\"", fields[0], lens[0]);
        check_param(&pos, eol, "; filename=\"", fields[1], lens[1]);
        /* then only the RFC 8187 form of the same name may follow */
        check(pos == eol || ((size_t)(eol - pos) > 12 && memcmp(pos, "; filename*=", 12) == 0 &&
                             memchr(pos, '"', (size_t)(eol - pos)) == NULL &&
                             memchr(pos + 1, ';', (size_t)(eol - pos - 1)) == NULL));
        line = eol + 2;
        eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
        check(eol != NULL && eol == head_end);
        line_len = (size_t)(eol - line);
        check(line_len > 14 && memcmp(line, "Content-Type: ", 14) == 0);
        if (has_ctype)
            check(line_len - 14 == lens[2] && memcmp(line + 14, fields[2], lens[2]) == 0);
        else
            check(line_len == 38 && memcmp(line + 14, "application/octet-stream", 24) == 0);
    }
    check((size_t)(body + body_len - (head_end + 4)) == content_len + strlen("\r\n--fuzzBOUNDARY--\r\n"));
    check(memcmp(head_end + 4, content, content_len) == 0);
    check(memcmp(head_end + 4 + content_len, "\r\n--fuzzBOUNDARY--\r\n", 20) == 0);
    lua_settop(L, top);
    /* Free this run's garbage now: libFuzzer counts a run with more mallocs
     * than frees as a possible leak and scans for it, which is slow. */
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
