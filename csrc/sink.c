/* A download's destination file: written under a temporary name in the same
 * folder and renamed into place only when complete, so the final name never
 * holds a partial file -- not even after a power loss: the file reaches the
 * disk (fsync) before the rename, and the folder's new entry after it.  The
 * libcurl transport writes to its descriptor from the write callback; the
 * cosocket transport through sink:write. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkostemp: O_CLOEXEC from the creation on */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fileapi.h"

/* Writes go out in whole multiples of the page size: a write that ends
 * inside a new page makes the kernel zero that page before copying into it
 * (measured: 15% of a download's CPU time), which stdio spares curl -o. */
#define FA_SINK_BUFFER (256 * 1024)

struct fa_sink {
    int fd;
    char *tmp;
    char *final;
    int overwrite;
    curl_off_t size;
    char *buf;
    size_t used;
    int claimed; /* a transfer writes to it (one at a time) */
};

fa_sink *fa_sink_test(lua_State *L, int idx)
{
    return (fa_sink *)fa_testudata(L, idx, FA_SINK_MT);
}

/* One transfer at a time: two writing one file would interleave.  Returns
 * 0, or -1 when another transfer has it. */
int fa_sink_claim(fa_sink *k, int claim)
{
    if (claim && k->claimed)
        return -1;
    k->claimed = claim;
    return 0;
}

static fa_sink *check_sink(lua_State *L)
{
    return (fa_sink *)luaL_checkudata(L, 1, FA_SINK_MT);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int flush(fa_sink *k)
{
    int rc = write_all(k->fd, k->buf, k->used);
    k->used = 0;
    return rc;
}

int fa_sink_write(fa_sink *k, const char *p, size_t n)
{
    if (k->fd < 0 || k->buf == NULL) {
        errno = EBADF;
        return -1;
    }
    k->size += (curl_off_t)n;
    while (n > 0) {
        size_t take = FA_SINK_BUFFER - k->used;
        if (k->used == 0 && n >= FA_SINK_BUFFER) { /* whole buffers skip the copy */
            size_t whole = n - n % FA_SINK_BUFFER;
            if (write_all(k->fd, p, whole) != 0)
                return -1;
            p += whole;
            n -= whole;
            continue;
        }
        if (take > n)
            take = n;
        memcpy(k->buf + k->used, p, take);
        k->used += take;
        p += take;
        n -= take;
        if (k->used == FA_SINK_BUFFER && flush(k) != 0)
            return -1;
    }
    return 0;
}

static void sink_discard(fa_sink *k)
{
    if (k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
    if (k->tmp != NULL)
        unlink(k->tmp);
    free(k->tmp);
    free(k->final);
    free(k->buf);
    k->tmp = k->final = k->buf = NULL;
    k->used = 0;
}

static int push_errno(lua_State *L, const char *what, const char *path)
{
    int e = errno;
    lua_pushfstring(L, "%s: %s", what, path);
    fa_push_errno(L, lua_tostring(L, -1), e);
    lua_remove(L, -3);
    return 2;
}

/* The folder holding path, so that its new entry can be made durable. */
static int sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd, rc;
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= sizeof dir)
            return -1;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

static char *dup_string(const char *s, size_t extra)
{
    size_t n = strlen(s);
    char *d = malloc(n + extra + 1);
    if (d != NULL)
        memcpy(d, s, n + 1);
    return d;
}

/* core.file_sink(path, overwrite) -> sink | nil, err */
static int l_file_sink(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int overwrite = lua_toboolean(L, 2);
    struct stat st;
    const char *slash;
    fa_sink *k;
    mode_t mask;

    if (lstat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            lua_pushnil(L);
            fa_error_push(L, FA_KIND(invalid_argument), "the destination is a directory");
            return 2;
        }
        if (!overwrite) {
            lua_pushnil(L);
            fa_error_push(L, FA_KIND(io), "the destination exists (pass overwrite = true to replace it)");
            return 2;
        }
    }
    k = fa_newuserdata(L, sizeof *k);
    memset(k, 0, sizeof *k);
    k->fd = -1;
    fa_setmetatable(L, FA_SINK_MT);
    k->overwrite = overwrite;
    k->final = dup_string(path, 0);
    k->tmp = dup_string(path, 32);
    k->buf = malloc(FA_SINK_BUFFER);
    if (k->final == NULL || k->tmp == NULL || k->buf == NULL) {
        sink_discard(k);
        return luaL_error(L, "not enough memory");
    }
    /* the temporary name is hidden beside the destination: same file system,
     * so the rename at the end is atomic */
    slash = strrchr(path, '/');
    {
        size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
        snprintf(k->tmp + dir_len, strlen(path) - dir_len + 32, ".%s.part-XXXXXX", path + dir_len);
    }
    k->fd = mkostemp(k->tmp, O_CLOEXEC);
    if (k->fd < 0) {
        free(k->tmp);
        k->tmp = NULL;
        return push_errno(L, "cannot create a file beside", path);
    }
    /* mkstemp makes 0600; the finished file gets what open(2) would give */
    mask = umask(022);
    umask(mask);
    (void)fchmod(k->fd, 0666 & ~mask);
    return 1;
}

/* sink:write(s) -> true | nil, err */
static int k_write(lua_State *L)
{
    fa_sink *k = check_sink(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (fa_sink_write(k, s, n) != 0)
        return fa_push_errno(L, "writing the file failed", errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* sink:truncate(): a download that starts over */
static int k_truncate(lua_State *L)
{
    fa_sink *k = check_sink(L);
    k->used = 0;
    if (k->fd < 0 || ftruncate(k->fd, 0) != 0 || lseek(k->fd, 0, SEEK_SET) != 0)
        return push_errno(L, "cannot truncate the file beside", k->final ? k->final : "?");
    k->size = 0;
    lua_pushboolean(L, 1);
    return 1;
}

static int k_size(lua_State *L)
{
    fa_pushwhole(L, check_sink(L)->size);
    return 1;
}

/* sink:commit() -> true | nil, err: the file takes its final name.  Without
 * overwrite, link(2) refuses a name that appeared meanwhile, atomically. */
static int k_commit(lua_State *L)
{
    fa_sink *k = check_sink(L);
    int rc;
    if (k->fd < 0 || k->tmp == NULL)
        return luaL_error(L, "the sink is closed");
    rc = flush(k);
    if (rc == 0)
        rc = fsync(k->fd);
    if (close(k->fd) != 0 || rc != 0) {
        k->fd = -1;
        rc = errno;
        sink_discard(k);
        errno = rc;
        return push_errno(L, "cannot finish the file", "destination");
    }
    k->fd = -1;
    if (k->overwrite) {
        rc = rename(k->tmp, k->final);
    } else {
        rc = link(k->tmp, k->final);
        if (rc != 0 && errno != EEXIST) {
            struct stat st; /* a file system without hard links */
            rc = lstat(k->final, &st) == 0 ? (errno = EEXIST, -1) : rename(k->tmp, k->final);
        }
    }
    if (rc != 0) {
        int e = errno;
        sink_discard(k);
        if (e != EEXIST)
            return fa_push_errno(L, "cannot rename the file into place", e);
        lua_pushnil(L);
        fa_error_push(L, FA_KIND(io), "the destination appeared during the download; not replaced");
        fa_error_set_errno(L, e);
        return 2;
    }
    if (!k->overwrite)
        unlink(k->tmp);
    /* The new name's entry: some file systems cannot sync a folder (EINVAL);
     * the file itself is whole on disk either way. */
    (void)sync_parent(k->final);
    free(k->tmp);
    k->tmp = NULL;
    sink_discard(k);
    lua_pushboolean(L, 1);
    return 1;
}

/* sink:abort(): removes the temporary file; idempotent (also __gc) */
static int k_abort(lua_State *L)
{
    sink_discard(check_sink(L));
    return 0;
}

static int k_tostring(lua_State *L)
{
    fa_sink *k = check_sink(L);
    lua_pushfstring(L, "fileapi.sink (%s)", k->fd >= 0 ? "open" : "closed");
    return 1;
}

void fa_open_sink(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"write", k_write},
        {"truncate", k_truncate},
        {"size", k_size},
        {"commit", k_commit},
        {"abort", k_abort},
        {NULL, NULL},
    };
    fa_newclass(L, FA_SINK_MT, methods, k_abort, k_tostring);
    lua_pushcfunction(L, l_file_sink);
    lua_setfield(L, -2, "file_sink");
}
