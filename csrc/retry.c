/* Time, waiting and interrupts: what a server says about when to come back: Retry-After is either a
 * number of seconds or an HTTP date (RFC 9110 section 10.2.3). */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
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

/* The interrupt: a flag set by a SIGINT/SIGTERM handler that only the
 * command-line tool installs (core.catch_interrupts), never the library by
 * itself and never inside nginx.  Sleeps and transfers look at it. */
static volatile sig_atomic_t interrupted = 0;

int fa_interrupted(void)
{
    return interrupted != 0;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* core.catch_interrupts(): SIGINT and SIGTERM set the flag.  No SA_RESTART:
 * a wait in poll(2) or nanosleep(2) returns at once to look at it. */
static int l_catch_interrupts(lua_State *L)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    lua_pushboolean(L, sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0);
    return 1;
}

static int l_interrupted(lua_State *L)
{
    lua_pushboolean(L, interrupted != 0);
    return 1;
}

/* core.sleep(seconds) -> true, or false when interrupted: the pause
 * between attempts outside nginx. */
static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct timespec ts;
    if (s > 0) {
        ts.tv_sec = (time_t)s;
        ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
        while (!interrupted && nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    lua_pushboolean(L, !interrupted);
    return 1;
}

/* core.time(): wall-clock seconds with a fraction, comparable with the UNIX
 * times servers send (X-RateLimit-Reset) and the same in every process. */
static int l_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.now(): monotonic seconds, for elapsed-time arithmetic. */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.isatty(fd): whether a descriptor is a terminal (the command-line
 * tool draws its progress bar only there). */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
    return 1;
}

void fa_open_retry(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"isatty", l_isatty},
        {"retry_after", l_retry_after},
        {"sleep", l_sleep},
        {"now", l_now},
        {"time", l_time},
        {"catch_interrupts", l_catch_interrupts},
        {"interrupted", l_interrupted},
        {NULL, NULL},
    };
    fa_setfuncs(L, funcs);
}
