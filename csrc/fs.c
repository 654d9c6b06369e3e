/* The file system: opening a file to upload (never waiting on a FIFO), its
 * size, a directory's entries (for a tree upload), an append-only journal
 * whose lines reach the disk before the call returns (so a rerun after a
 * crash knows what was done), and private temporary files. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkostemp */
#endif
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "fileapi.h"

static const char *type_of(mode_t m)
{
    if (S_ISREG(m))
        return "file";
    if (S_ISDIR(m))
        return "directory";
    if (S_ISLNK(m))
        return "link";
    return "other";
}

/* Opens a regular file for reading.  O_NONBLOCK: opening a FIFO (or a
 * device) must not hang before the type check refuses it; regular files
 * ignore the flag, which is cleared again.  Returns the descriptor, or -1
 * with *why NULL for open(2)'s own failure, else what is wrong (errno 0 for
 * a file that is not a regular one). */
int fa_open_regular(const char *path, curl_off_t *size, const char **why)
{
    struct stat st;
    int fd, flags, e;
    *why = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) != 0) {
        *why = "cannot inspect the file";
    } else if (!S_ISREG(st.st_mode)) {
        *why = "not a regular file";
        errno = 0;
    } else {
        flags = fcntl(fd, F_GETFL);
        if (flags >= 0 && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0) {
            *size = (curl_off_t)st.st_size;
            return fd;
        }
        *why = "cannot use the file";
    }
    e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* core.file_size(path) -> bytes | nil, err: a regular file's size, checked
 * the way an upload opens it. */
static int l_file_size(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    curl_off_t size = 0;
    const char *why;
    int fd = fa_open_regular(path, &size, &why), e = errno;
    if (fd >= 0) {
        close(fd);
        fa_pushwhole(L, size);
        return 1;
    }
    if (why == NULL)
        return fa_push_errno(L, path, e);
    lua_pushfstring(L, "%s: %s", path, why);
    if (e != 0) {
        fa_push_errno(L, lua_tostring(L, -1), e);
        lua_remove(L, -3);
        return 2;
    }
    lua_pushnil(L);
    fa_error_push(L, FA_KIND(invalid_argument), lua_tostring(L, -2));
    lua_remove(L, -3);
    return 2;
}

/* Device and inode, whole (inode numbers pass 2^32 on XFS inode64, btrfs
 * and overlayfs), as a string: a followed link must not loop. */
void fa_inode_id(char *out, size_t size, unsigned long long dev, unsigned long long ino)
{
    snprintf(out, size, "%llu:%llu", dev, ino);
}

static void push_stat(lua_State *L, const struct stat *st)
{
    lua_pushstring(L, type_of(st->st_mode));
    lua_setfield(L, -2, "type");
    fa_pushwhole(L, st->st_size);
    lua_setfield(L, -2, "size");
    {
        char id[48];
        fa_inode_id(id, sizeof id, (unsigned long long)st->st_dev, (unsigned long long)st->st_ino);
        lua_pushstring(L, id);
    }
    lua_setfield(L, -2, "inode");
}

static int push_errno(lua_State *L, const char *path)
{
    return fa_push_errno(L, path, errno);
}

/* An open directory as userdata, so that a raise mid-listing (memory)
 * still closes it, from __gc -- as liolib does with FILE*. */
#define FA_DIR_MT "fileapi.dir"

static int dir_close(lua_State *L)
{
    DIR **d = (DIR **)luaL_checkudata(L, 1, FA_DIR_MT);
    if (*d != NULL) {
        closedir(*d);
        *d = NULL;
    }
    return 0;
}

static int dir_tostring(lua_State *L)
{
    lua_pushliteral(L, "fileapi.dir");
    return 1;
}

/* core.stat(path [, follow]) -> { type, size, inode } | nil, err */
static int l_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if ((lua_toboolean(L, 2) ? stat(path, &st) : lstat(path, &st)) != 0)
        return push_errno(L, path);
    lua_createtable(L, 0, 3);
    push_stat(L, &st);
    return 1;
}

/* core.list_dir(path) -> { { name, type, size, inode }, ... } | nil, err
 * (links are reported as links: following one is the caller's choice) */
static int l_list_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR **box = fa_newuserdata(L, sizeof *box);
    DIR *d;
    struct dirent *e;
    int n = 0;
    *box = NULL;
    fa_setmetatable(L, FA_DIR_MT);
    d = *box = opendir(path);
    if (d == NULL)
        return push_errno(L, path);
    lua_newtable(L);
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue; /* gone meanwhile */
        lua_createtable(L, 0, 4);
        lua_pushstring(L, e->d_name);
        lua_setfield(L, -2, "name");
        push_stat(L, &st);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    *box = NULL;
    return 1;
}

/* core.append_line(path, line) -> true | nil, err: appended and fsync'd */
static int l_append_line(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *line = luaL_checklstring(L, 2, &len);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    const char *p = line;
    if (fd < 0)
        return push_errno(L, path);
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return push_errno(L, path);
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        close(fd);
        return push_errno(L, path);
    }
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.temp_file(dir, prefix) -> path | nil, err: a new, empty file only
 * its owner may read (mode 0600), under a name nobody can guess. */
static int l_temp_file(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    const char *prefix = luaL_checkstring(L, 2);
    char *path;
    int fd;
    lua_pushfstring(L, "%s/%s-XXXXXX", dir, prefix);
    path = fa_newuserdata(L, fa_rawlen(L, -1) + 1);
    memcpy(path, lua_tostring(L, -2), fa_rawlen(L, -2) + 1);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return push_errno(L, dir);
    close(fd);
    lua_pushstring(L, path);
    return 1;
}

/* core.mkdir_private(path) -> true | nil, err: a folder only its owner may
 * enter (0700); one that exists is left as it is. */
static int l_mkdir_private(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return push_errno(L, path);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.fsync(path) -> true | nil, err: a file's bytes, or a folder's
 * entries, reach the disk.  A file written and renamed into place survives
 * a crash only once both the file and its folder are synced. */
static int l_fsync(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY), e;
    if (fd < 0)
        return push_errno(L, path);
    if (fsync(fd) != 0) {
        e = errno;
        close(fd);
        return fa_push_errno(L, path, e);
    }
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* An exclusive lock on a file, held by an open descriptor (flock(2)): the
 * command line's processes refresh stored tokens one at a time. */
#define FA_LOCK_MT "fileapi.lock"

static int lock_release(lua_State *L)
{
    int *fd = (int *)luaL_checkudata(L, 1, FA_LOCK_MT);
    if (*fd >= 0) {
        close(*fd); /* releases the lock */
        *fd = -1;
    }
    return 0;
}

static int lock_tostring(lua_State *L)
{
    int *fd = (int *)luaL_checkudata(L, 1, FA_LOCK_MT);
    lua_pushstring(L, *fd >= 0 ? "fileapi.lock (held)" : "fileapi.lock (released)");
    return 1;
}

/* core.lock_file(path, seconds) -> lock | nil, err: waits up to seconds for
 * the lock (the file is made 0600 when missing); a lock still held elsewhere
 * then is errno_name ETIMEDOUT (seconds 0: one try). */
static int l_lock_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    double wait = luaL_optnumber(L, 2, 30);
    int *fd = fa_newuserdata(L, sizeof *fd);
    double waited = 0;
    *fd = -1;
    fa_setmetatable(L, FA_LOCK_MT);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (*fd < 0)
        return push_errno(L, path);
    while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= wait || fa_interrupted()) {
            int e = errno == EWOULDBLOCK ? ETIMEDOUT : errno;
            close(*fd);
            *fd = -1;
            return fa_push_errno(L, path, e);
        }
        nanosleep(&ts, NULL);
        waited += 0.02;
    }
    return 1;
}

void fa_open_fs(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"stat", l_stat},
        {"list_dir", l_list_dir},
        {"append_line", l_append_line},
        {"temp_file", l_temp_file},
        {"file_size", l_file_size},
        {"mkdir_private", l_mkdir_private},
        {"lock_file", l_lock_file},
        {"fsync", l_fsync},
        {NULL, NULL},
    };
    static const luaL_Reg no_methods[] = {{NULL, NULL}};
    static const luaL_Reg lock_methods[] = {{"unlock", lock_release}, {NULL, NULL}};
    fa_newclass(L, FA_DIR_MT, no_methods, dir_close, dir_tostring);
    fa_newclass(L, FA_LOCK_MT, lock_methods, lock_release, lock_tostring);
    fa_setfuncs(L, funcs);
}
