/* Module entry: fileapi.core.  libcurl's global state is set up once per
 * process, guarded, since several Lua states may load the module. */
#include <pthread.h>
#include "fileapi.h"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_status = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int luaopen_fileapi_core(lua_State *L)
{
    const curl_version_info_data *info;
    pthread_once(&global_once, global_init);
    if (global_status != CURLE_OK)
        return luaL_error(L, "fileapi: libcurl initialisation failed: %s",
                          curl_easy_strerror(global_status));
    info = curl_version_info(CURLVERSION_NOW);
    lua_newtable(L);
    fa_open_errors(L);
    fa_open_multipart(L);
    fa_open_session(L);
    fa_open_multi(L);
    fa_open_share(L);
    fa_open_request(L);
    fa_open_sink(L);
    fa_open_fs(L);
    fa_open_retry_after(L);
    fa_open_system(L);
    fa_open_store(L);
    fa_open_seal(L);
    lua_pushliteral(L, FA_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, info->version);
    lua_setfield(L, -2, "curl_version");
    lua_pushstring(L, info->ssl_version ? info->ssl_version : "");
    lua_setfield(L, -2, "ssl_version");
    return 1;
}
