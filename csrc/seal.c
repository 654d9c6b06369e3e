/* What fileapi keeps in a fleet's store must not give a secret away to
 * whoever reads the store: keys are named by a SHA-256 of the credential,
 * and OAuth tokens are sealed with AES-256-GCM under a key every machine
 * derives from the application's client secret (which the store never
 * sees).  OpenSSL's libcrypto does the cryptography; libcurl links it
 * already on Debian.
 *
 * core.sha256(s) -> 64 hex digits; core.sha1(s) -> 40 (EVALSHA's script names)
 * core.seal(key, plain) -> nonce .. ciphertext .. tag | nil, message
 * core.unseal(key, sealed) -> plain | nil, message (tampered, wrong key)
 *   key: any string; the cipher key is its SHA-256. */
#include "fileapi.h"

#ifdef FA_HAVE_CRYPTO
#include <string.h>
#include <openssl/evp.h>

#define NONCE 12
#define TAG 16
#define MAX_PLAIN (1 << 20)

int fa_random_bytes(unsigned char *raw, size_t n);

/* The digest in hex; sha1 names scripts for Redis's EVALSHA. */
static int hex_digest(lua_State *L, const EVP_MD *type)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0, i;
    char hex[2 * EVP_MAX_MD_SIZE];
    static const char digits[] = "0123456789abcdef";
    if (!EVP_Digest(s, n, md, &len, type, NULL))
        return luaL_error(L, "digest: libcrypto failed");
    for (i = 0; i < len; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    lua_pushlstring(L, hex, 2 * (size_t)len);
    return 1;
}

static int l_sha256(lua_State *L)
{
    return hex_digest(L, EVP_sha256());
}

static int l_sha1(lua_State *L)
{
    return hex_digest(L, EVP_sha1());
}

static int cipher_key(const char *key, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    return EVP_Digest(key, n, out, &len, EVP_sha256(), NULL) && len == 32;
}

/* One GCM pass; out must hold n bytes.  Returns 1 when it went through
 * (for opening: when the tag matched). */
static int gcm(int enc, const unsigned char key[32], const unsigned char *nonce, const unsigned char *in,
               size_t n, unsigned char *out, unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, ok;
    if (ctx == NULL)
        return 0;
    ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) &&
         EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) &&
         (n == 0 || EVP_CipherUpdate(ctx, out, &len, in, (int)n));
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG, tag);
    if (ok)
        ok = EVP_CipherFinal_ex(ctx, out + len, &len);
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG, tag);
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

static int l_seal(lua_State *L)
{
    size_t kn, n;
    const char *key = luaL_checklstring(L, 1, &kn);
    const char *plain = luaL_checklstring(L, 2, &n);
    unsigned char k[32];
    unsigned char *out;
    luaL_argcheck(L, n <= MAX_PLAIN, 2, "too long to seal");
    out = (unsigned char *)fa_newuserdata(L, NONCE + n + TAG);
    if (!cipher_key(key, kn, k) || !fa_random_bytes(out, NONCE) ||
        !gcm(1, k, out, (const unsigned char *)plain, n, out + NONCE, out + NONCE + n)) {
        memset(k, 0, sizeof k);
        lua_pushnil(L);
        lua_pushliteral(L, "seal: libcrypto or /dev/urandom failed");
        return 2;
    }
    memset(k, 0, sizeof k);
    lua_pushlstring(L, (const char *)out, NONCE + n + TAG);
    return 1;
}

static int l_unseal(lua_State *L)
{
    size_t kn, n;
    const char *key = luaL_checklstring(L, 1, &kn);
    const char *sealed = luaL_checklstring(L, 2, &n);
    unsigned char k[32], tag[TAG];
    unsigned char *out;
    size_t body;
    if (n < NONCE + TAG || n > NONCE + TAG + MAX_PLAIN) {
        lua_pushnil(L);
        lua_pushliteral(L, "unseal: not a sealed value");
        return 2;
    }
    body = n - NONCE - TAG;
    out = (unsigned char *)fa_newuserdata(L, body + 1);
    memcpy(tag, sealed + NONCE + body, TAG);
    if (!cipher_key(key, kn, k) ||
        !gcm(0, k, (const unsigned char *)sealed, (const unsigned char *)sealed + NONCE, body, out, tag)) {
        memset(k, 0, sizeof k);
        lua_pushnil(L);
        lua_pushliteral(L, "unseal: the value was not sealed with this key");
        return 2;
    }
    memset(k, 0, sizeof k);
    lua_pushlstring(L, (const char *)out, body);
    memset(out, 0, body);
    return 1;
}

void fa_open_seal(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "sha256", l_sha256 },
        { "sha1", l_sha1 },
        { "seal", l_seal },
        { "unseal", l_unseal },
        { NULL, NULL },
    };
    fa_setfuncs(L, fns);
}

#else

void fa_open_seal(lua_State *L)
{
    (void)L;
}

#endif
