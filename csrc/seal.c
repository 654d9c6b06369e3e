/* What fileapi keeps in a fleet's store must not give a secret away to
 * whoever reads the store: keys are named by a SHA-256 of the credential,
 * and OAuth tokens are sealed with AES-256-GCM under a key every machine
 * derives from the application's client secret (which the store never
 * sees).  OpenSSL's libcrypto does the cryptography; libcurl links it
 * already on Debian.
 *
 * core.sha256(s) -> 64 hex digits; core.sha1(s) -> 40 (EVALSHA's script names)
 * core.seal(key, plain, aad) -> nonce .. ciphertext .. tag | nil, message
 * core.unseal(key, sealed, aad) -> plain | nil, message (tampered, wrong key,
 *   other associated data)
 *   key: a non-empty string of secret material; the cipher key is drawn from
 *   it with HKDF-SHA256 (RFC 5869), not a bare hash, so that one secret can
 *   key several uses without their keys being related.
 *   aad: associated data, authenticated but not encrypted: the caller names
 *   where the sealed value belongs (the store's key and the record's
 *   version), so a value copied to another place, or put back at another
 *   version, does not open. */
#include "fileapi.h"

#ifdef FA_HAVE_CRYPTO
#include <string.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/core_names.h>
#include <openssl/opensslv.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "fileapi's sealing uses OpenSSL 3's EVP_KDF (Debian 12: libssl-dev 3.0)"
#endif

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

/* HKDF-SHA256 of the key material: a fixed salt and info name this use,
 * so the same secret used elsewhere gives an unrelated key. */
static int cipher_key(const char *key, size_t n, unsigned char out[32])
{
    static const char salt[] = "fileapi seal salt v1";
    static const char info[] = "fileapi AES-256-GCM record key";
    EVP_KDF *kdf;
    EVP_KDF_CTX *ctx;
    OSSL_PARAM params[5];
    int ok;
    if (n == 0)
        return 0;
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (kdf == NULL)
        return 0;
    ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (ctx == NULL)
        return 0;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, n);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof salt - 1);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, sizeof info - 1);
    params[4] = OSSL_PARAM_construct_end();
    ok = EVP_KDF_derive(ctx, out, 32, params) > 0;
    EVP_KDF_CTX_free(ctx);
    return ok;
}

/* Bytes and their count (the associated data). */
struct span {
    const unsigned char *p;
    size_t n;
};

/* One GCM pass over in, with aad authenticated too; out must hold n bytes.
 * Returns 1 when it went through (for opening: when the tag matched). */

static int gcm(int enc, const unsigned char key[32], const unsigned char *nonce, struct span aad,
               const unsigned char *in, size_t n, unsigned char *out, unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, aad_len = 0, ok;
    if (ctx == NULL)
        return 0;
    ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) &&
         EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) &&
         (aad.n == 0 || EVP_CipherUpdate(ctx, NULL, &aad_len, aad.p, (int)aad.n)) &&
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

/* The associated data argument: any string up to MAX_PLAIN bytes. */
static struct span check_aad(lua_State *L, int arg)
{
    struct span aad;
    aad.p = (const unsigned char *)luaL_checklstring(L, arg, &aad.n);
    luaL_argcheck(L, aad.n <= MAX_PLAIN, arg, "associated data too long");
    return aad;
}

static int l_seal(lua_State *L)
{
    size_t kn, n;
    const char *key = luaL_checklstring(L, 1, &kn);
    const char *plain = luaL_checklstring(L, 2, &n);
    struct span aad = check_aad(L, 3);
    unsigned char k[32];
    unsigned char *out;
    luaL_argcheck(L, n <= MAX_PLAIN, 2, "too long to seal");
    out = (unsigned char *)fa_newuserdata(L, NONCE + n + TAG);
    if (!cipher_key(key, kn, k) || !fa_random_bytes(out, NONCE) ||
        !gcm(1, k, out, aad, (const unsigned char *)plain, n, out + NONCE, out + NONCE + n)) {
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
    struct span aad = check_aad(L, 3);
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
        !gcm(0, k, (const unsigned char *)sealed, aad, (const unsigned char *)sealed + NONCE, body, out, tag)) {
        memset(k, 0, sizeof k);
        lua_pushnil(L);
        lua_pushliteral(L, "unseal: the value was not sealed with this key for this place");
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
