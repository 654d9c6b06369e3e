/* What a server says about when to come back: Retry-After is either a
 * number of seconds or an HTTP date (RFC 9110 section 10.2.3). */
#include <ctype.h>
#include <string.h>
#include <time.h>
#include "fileapi.h"

#define FA_MAX_HEADER_VALUE 256

/* Seconds to wait from `now`, or -1 when the value says nothing usable. */
double fa_retry_after(const char *value, size_t len, double now)
{
    char buf[FA_MAX_HEADER_VALUE];
    size_t start = 0, end = len, i;
    double seconds = 0;
    time_t when;

    while (start < end && (value[start] == ' ' || value[start] == '\t'))
        start++;
    while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
        end--;
    if (start == end || end - start >= sizeof buf)
        return -1;
    for (i = start; i < end && isdigit((unsigned char)value[i]); i++) {
        seconds = seconds * 10 + (value[i] - '0');
        if (seconds > 1e9)
            seconds = 1e9; /* absurd, and the caller caps it anyway */
    }
    if (i == end)
        return seconds;
    for (i = start; i < end; i++)
        if (value[i] == '\0' || (unsigned char)value[i] < 0x20)
            return -1;
    memcpy(buf, value + start, end - start);
    buf[end - start] = '\0';
    when = curl_getdate(buf, NULL);
    if (when == (time_t)-1)
        return -1;
    return (double)when > now ? (double)when - now : 0;
}

/* core.retry_after(value [, now]) -> seconds | nil */
static int l_retry_after(lua_State *L)
{
    size_t len;
    const char *value = luaL_checklstring(L, 1, &len);
    double now = luaL_optnumber(L, 2, (lua_Number)time(NULL));
    double s = fa_retry_after(value, len, now);
    if (s < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, s);
    return 1;
}

void fa_open_retry_after(lua_State *L)
{
    lua_pushcfunction(L, l_retry_after);
    lua_setfield(L, -2, "retry_after");
}
