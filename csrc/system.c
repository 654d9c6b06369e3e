/* The system beyond files and sockets: clocks, sleeping, the interrupt
 * flag that SIGINT and SIGTERM set (the only mutable global, a
 * sig_atomic_t), whether a descriptor is a terminal, a password read at
 * the terminal without echo, and random bytes. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "fileapi.h"

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

/* n random bytes from /dev/urandom; 0 when it could not give them all */
int fa_random_bytes(unsigned char *raw, size_t n)
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
    if (!fa_random_bytes(raw, (size_t)n)) {
        lua_pushnil(L);
        return 1;
    }
    for (i = 0; i < n; i++)
        out[i] = alphabet[raw[i] % 36];
    lua_pushlstring(L, out, (size_t)n);
    return 1;
}

/* memset that the compiler may not drop as a dead store */
static void wipe(volatile char *p, size_t n)
{
    while (n--)
        *p++ = 0;
}

/* core.read_secret(prompt) -> the line typed at the terminal, echo off |
 * nil, message.  Read into a stack buffer and the terminal restored before
 * anything is pushed (a push may raise), then the buffer is wiped. */
static int l_read_secret(lua_State *L)
{
    const char *prompt = luaL_checkstring(L, 1);
    char line[1025];
    size_t n = 0;
    struct termios saved, quiet;
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC), echo_off = 0, ok = 1;
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "no terminal to read the password from");
        return 2;
    }
    if (tcgetattr(fd, &saved) == 0) {
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        echo_off = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    if (write(fd, prompt, strlen(prompt)) < 0)
        ok = 0;
    while (ok && n < sizeof line - 1) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR && !fa_interrupted())
            continue;
        if (r <= 0) {
            ok = 0;
            break;
        }
        if (c == '\n')
            break;
        line[n++] = c;
    }
    if (echo_off)
        (void)tcsetattr(fd, TCSAFLUSH, &saved);
    if (echo_off && write(fd, "\n", 1) < 0) /* the Enter that was not echoed */
        ok = 0;
    close(fd);
    if (!ok) {
        wipe(line, sizeof line);
        lua_pushnil(L);
        lua_pushstring(L, "no password was typed");
        return 2;
    }
    if (n > 0 && line[n - 1] == '\r')
        n--;
    lua_pushlstring(L, line, n);
    wipe(line, sizeof line);
    return 1;
}

void fa_open_system(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"isatty", l_isatty},
        {"sleep", l_sleep},
        {"now", l_now},
        {"time", l_time},
        {"catch_interrupts", l_catch_interrupts},
        {"interrupted", l_interrupted},
        {"random_token", l_random_token},
        {"read_secret", l_read_secret},
        {NULL, NULL},
    };
    fa_setfuncs(L, funcs);
}
