/* Internal interface between the C files of fileapi.core.  Built with
 * -fvisibility=hidden: only luaopen_fileapi_core leaves the shared object. */
#ifndef FILEAPI_H
#define FILEAPI_H

#include <stddef.h>
#include <curl/curl.h>
#include "compat.h"
#include "gen/kinds.h"

#define FA_VERSION "0.1.0"

/* 2^53: the largest whole number every Lua's numbers hold exactly; byte
 * counts and offsets from Lua are checked against it before any cast. */
#define FA_MAX_WHOLE 9007199254740992.0

/* A byte count from Lua: a whole number from 0 to 2^53, checked before it
 * is converted (a double past curl_off_t's range has no defined cast). */
static inline int fa_whole_count(double v, curl_off_t *out)
{
    if (!(v >= 0 && v <= FA_MAX_WHOLE) || v != (double)(long long)v)
        return 0;
    *out = (curl_off_t)v;
    return 1;
}

#define FA_ERROR_MT "fileapi.error"
#define FA_SESSION_MT "fileapi.session"
#define FA_MULTIPART_MT "fileapi.multipart"
#define FA_SINK_MT "fileapi.sink"
#define FA_SHARE_MT "fileapi.share"
#define FA_MULTI_MT "fileapi.multi"

/* core.c: the one exported symbol */
__attribute__((visibility("default"))) int luaopen_fileapi_core(lua_State *L);

/* An error kind as C names it: FA_KIND(io) is "io", and a kind outside the
 * list (lua/fileapi/kinds.lua, through gen/kinds.h) does not compile. */
enum fa_kind {
#define FA_KIND_ENUM(kind) FA_KIND_##kind,
    FA_KINDS(FA_KIND_ENUM)
#undef FA_KIND_ENUM
    FA_KIND_COUNT
};
#define FA_KIND(kind) ((void)FA_KIND_##kind, #kind)

/* errors.c */
void fa_error_push(lua_State *L, const char *kind, const char *message);
/* err.errno and err.errno_name on the error object at the top */
void fa_error_set_errno(lua_State *L, int e);
/* nil, err for an io failure with errno e: "<what>: <strerror>" */
int fa_push_errno(lua_State *L, const char *what, int e);
const char *fa_kind_for_curl(CURLcode code);
/* tostring of the value at idx into out, protected: for what a callback raised */
void fa_describe(lua_State *L, int idx, char *out, size_t size);
void fa_open_errors(lua_State *L);

/* multipart_build.c, multipart_read.c: the body, as the transfer reads it */
typedef struct fa_multipart fa_multipart;
fa_multipart *fa_multipart_check(lua_State *L, int idx);
curl_off_t fa_multipart_length(const fa_multipart *mp);
/* Reads up to n bytes; returns the count, 0 at the end, -1 on failure
 * (see fa_multipart_error).  L runs reader callbacks under lua_pcall. */
long fa_multipart_read(fa_multipart *mp, lua_State *L, char *buf, size_t n);
/* Content bytes of all parts, and those within the first `wire` body bytes. */
curl_off_t fa_multipart_payload_length(const fa_multipart *mp);
curl_off_t fa_multipart_payload_at(const fa_multipart *mp, curl_off_t wire);
/* Taken by a transfer (claim 1) and given back (0): 0, or -1 when taken. */
int fa_multipart_claim(fa_multipart *mp, int claim);
/* Back to the first byte; 0 on success, -1 when a part cannot rewind. */
int fa_multipart_rewind(fa_multipart *mp, lua_State *L);
/* Kind and message of the last failure, for the error object; its errno
 * (0 when none), and what a callback raised (pushed: returns 1). */
const char *fa_multipart_error(const fa_multipart *mp, const char **message);
int fa_multipart_errno(const fa_multipart *mp);
int fa_multipart_push_cause(fa_multipart *mp, lua_State *L);
void fa_open_multipart(lua_State *L);

/* sink.c: a download's destination file, renamed into place when done */
typedef struct fa_sink fa_sink;
fa_sink *fa_sink_test(lua_State *L, int idx);
int fa_sink_write(fa_sink *k, const char *p, size_t n); /* 0, or -1 with errno */
int fa_sink_claim(fa_sink *k, int claim); /* as fa_multipart_claim */
void fa_open_sink(lua_State *L);

/* fs.c: opening a file to upload, listings, the journal, temporary files */
int fa_open_regular(const char *path, curl_off_t *size, const char **why);
void fa_inode_id(char *out, size_t size, unsigned long long dev, unsigned long long ino);
void fa_open_fs(lua_State *L);

/* store.c: core.redis, a hiredis connection (when built with hiredis) */
void fa_open_store(lua_State *L);
/* seal.c: core.sha256, core.seal, core.unseal (when built with libcrypto) */
void fa_open_seal(lua_State *L);

/* session.c: the session userdata; multi.c: many transfers at once;
 * share.c: caches shared by sessions (request.c, transfer.c, drive.c and
 * results.c are their parts, behind transfer.h) */
void fa_open_session(lua_State *L);
void fa_open_multi(lua_State *L);
void fa_open_share(lua_State *L);
void fa_open_request(lua_State *L); /* core.request_fields(): what request.c reads */

/* retry_after.c: parsing of what a server says about waiting */
double fa_retry_after(const char *value, size_t len, double now);
void fa_open_retry_after(lua_State *L);

/* system.c: clocks, sleep, the interrupt flag, terminals, random bytes */
int fa_interrupted(void); /* SIGINT/SIGTERM arrived (core.catch_interrupts) */
int fa_random_bytes(unsigned char *raw, size_t n); /* 1 when all n came */
void fa_open_system(lua_State *L);

#endif
