/* The file system beyond one file: a directory's entries (for a tree
 * upload) and an append-only journal whose lines reach the disk before the
 * call returns, so a rerun after a crash knows what was done. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static void push_stat(lua_State *L, const struct stat *st)
{
    lua_pushstring(L, type_of(st->st_mode));
    lua_setfield(L, -2, "type");
    fa_pushwhole(L, st->st_size);
    lua_setfield(L, -2, "size");
    /* device and inode, as a string: a followed link must not loop */
    lua_pushfstring(L, "%d:%d", (int)st->st_dev, (int)st->st_ino);
    lua_setfield(L, -2, "inode");
}

static int push_errno(lua_State *L, const char *path)
{
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    fa_error_push(L, "io", lua_tostring(L, -1));
    lua_remove(L, -2);
    return 2;
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
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
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

void fa_open_fs(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"stat", l_stat},
        {"list_dir", l_list_dir},
        {"append_line", l_append_line},
        {NULL, NULL},
    };
    fa_setfuncs(L, funcs);
}
