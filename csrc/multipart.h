/* The multipart body's insides, shared by its two halves: building it from
 * the parts' descriptions (multipart_build.c) and reading it out, rewinding
 * it and its Lua methods (multipart_read.c). */
#ifndef FILEAPI_MULTIPART_H
#define FILEAPI_MULTIPART_H

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
    int claimed;       /* a transfer is sending it (one at a time) */
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

/* multipart_build.c: failures, references, closing, construction */
void fa_mp_set_error(fa_multipart *mp, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fa_mp_set_errno(fa_multipart *mp, int e, const char *what, const char *path);
void fa_mp_unref(lua_State *L, int *ref);
void fa_mp_drop_pending(fa_multipart *mp, lua_State *L);
void fa_mp_close(fa_multipart *mp, lua_State *L);
int fa_mp_new(lua_State *L); /* core.multipart(parts [, boundary]) */

#endif
