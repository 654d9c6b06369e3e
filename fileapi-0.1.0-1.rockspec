-- LuaRocks build of the same sources as the Makefile.
-- Debian keeps curl/curl.h in the multiarch include folder, where LuaRocks 3.8
-- does not look for a `header =` rule: the library alone is checked, and the
-- compiler finds the header on its default path.  Where Debian already
-- provides lua-cjson, install with --deps-mode=none.
rockspec_format = "3.0"
package = "fileapi"
version = "0.1.0-1"
source = {
  url = "git+https://fileapi.invalid/fileapi.git",
  tag = "v0.1.0",
}
description = {
  summary = "Files on MijnKlantportaal (upload, download, share, request) and files.ro shares, from Lua and nginx",
  detailed = [[
A C core on libcurl (kept-alive connections, streaming uploads and downloads
in constant memory, pacing within rate limits, safe retries) with a small Lua
layer for the MijnKlantportaal Files, File Share and File Request APIs and
files.ro shares, inside nginx over cosockets too; and a fileapi command.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
  "argparse",
  "luasocket", -- fileapi login's loopback listener, and the mock (fileapi mock, fileapi.mock)
}
-- The mock serves HTTPS only when asked (fileapi.mock.start's tls, for the
-- suite): then it needs LuaSec (luasec; Debian's lua-sec), not a dependency.
-- `luarocks test` runs the busted suite (it starts its own mock servers).
test_dependencies = {
  "busted",
  "luasocket",
}
test = {
  type = "busted",
}
external_dependencies = {
  CURL = { library = "curl" },
}
-- The C core is built by the Makefile's `rock` target, so the rock gets the
-- same flags as `make` (C99, warnings, only luaopen_fileapi_core exported).
-- hiredis and libcrypto are linked where pkg-config finds them (`store`
-- outside nginx needs both; without them the rest works and `store` says so).
build = {
  type = "make",
  build_target = "rock",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CURL_INCDIR = "$(CURL_INCDIR)",
    CURL_LIBDIR = "$(CURL_LIBDIR)",
  },
  install_pass = false,
  install = {
    lib = { ["fileapi.core"] = "build/rock/fileapi/core.so" },
    lua = {
      ["fileapi.cli.clients"] = "lua/fileapi/cli/clients.lua",
      ["fileapi.cli.credentials"] = "lua/fileapi/cli/credentials.lua",
      ["fileapi.cli.filesro_owner"] = "lua/fileapi/cli/filesro_owner.lua",
      ["fileapi.cli"] = "lua/fileapi/cli/init.lua",
      ["fileapi.cli.mijnklantportaal_login"] = "lua/fileapi/cli/mijnklantportaal_login.lua",
      ["fileapi.cli.mijnklantportaal"] = "lua/fileapi/cli/mijnklantportaal.lua",
      ["fileapi.cli.mock"] = "lua/fileapi/cli/mock.lua",
      ["fileapi.cli.output"] = "lua/fileapi/cli/output.lua",
      ["fileapi.cli.filesro_visitor"] = "lua/fileapi/cli/filesro_visitor.lua",
      ["fileapi.cli.sources"] = "lua/fileapi/cli/sources.lua",
      ["fileapi.cli.verbose"] = "lua/fileapi/cli/verbose.lua",
      ["fileapi.client_options"] = "lua/fileapi/client_options.lua",
      ["fileapi.credentials"] = "lua/fileapi/credentials.lua",
      ["fileapi.drive"] = "lua/fileapi/drive.lua",
      ["fileapi.filesro.owner_common"] = "lua/fileapi/filesro/owner_common.lua",
      ["fileapi.filesro.owner_items"] = "lua/fileapi/filesro/owner_items.lua",
      ["fileapi.filesro.owner_sharing"] = "lua/fileapi/filesro/owner_sharing.lua",
      ["fileapi.files"] = "lua/fileapi/files.lua",
      ["fileapi.filesro.documents"] = "lua/fileapi/filesro/documents.lua",
      ["fileapi.group"] = "lua/fileapi/group.lua",
      ["fileapi.http.budget"] = "lua/fileapi/http/budget.lua",
      ["fileapi.http.cosocket"] = "lua/fileapi/http/cosocket.lua",
      ["fileapi.http.download"] = "lua/fileapi/http/download.lua",
      ["fileapi.http.engine"] = "lua/fileapi/http/engine.lua",
      ["fileapi.http.events"] = "lua/fileapi/http/events.lua",
      ["fileapi.http.options"] = "lua/fileapi/http/options.lua",
      ["fileapi.http.pool"] = "lua/fileapi/http/pool.lua",
      ["fileapi.http.request"] = "lua/fileapi/http/request.lua",
      ["fileapi.http.scheduler"] = "lua/fileapi/http/scheduler.lua",
      ["fileapi.http.threads"] = "lua/fileapi/http/threads.lua",
      ["fileapi"] = "lua/fileapi/init.lua",
      ["fileapi.kinds"] = "lua/fileapi/kinds.lua",
      ["fileapi.mime"] = "lua/fileapi/mime.lua",
      ["fileapi.mock"] = "lua/fileapi/mock/init.lua",
      ["fileapi.mock.accounts"] = "lua/fileapi/mock/accounts.lua",
      ["fileapi.mock.admin"] = "lua/fileapi/mock/admin.lua",
      ["fileapi.mock.drive"] = "lua/fileapi/mock/drive.lua",
      ["fileapi.mock.drive_sharing"] = "lua/fileapi/mock/drive_sharing.lua",
      ["fileapi.mock.faults"] = "lua/fileapi/mock/faults.lua",
      ["fileapi.mock.filesro"] = "lua/fileapi/mock/filesro.lua",
      ["fileapi.mock.http"] = "lua/fileapi/mock/http.lua",
      ["fileapi.mock.loop"] = "lua/fileapi/mock/loop.lua",
      ["fileapi.mock.mkp"] = "lua/fileapi/mock/mkp.lua",
      ["fileapi.mock.oauth"] = "lua/fileapi/mock/oauth.lua",
      ["fileapi.mock.proc"] = "lua/fileapi/mock/proc.lua",
      ["fileapi.mock.server"] = "lua/fileapi/mock/server.lua",
      ["fileapi.mock.storage"] = "lua/fileapi/mock/storage.lua",
      ["fileapi.mock.zip"] = "lua/fileapi/mock/zip.lua",
      ["fileapi.ngx_phase"] = "lua/fileapi/ngx_phase.lua",
      ["fileapi.pager"] = "lua/fileapi/pager.lua",
      ["fileapi.mijnklantportaal.oauth"] = "lua/fileapi/mijnklantportaal/oauth.lua",
      ["fileapi.mijnklantportaal.oauth_keeper"] = "lua/fileapi/mijnklantportaal/oauth_keeper.lua",
      ["fileapi.filesro.chunks"] = "lua/fileapi/filesro/chunks.lua",
      ["fileapi.mijnklantportaal.token_dict"] = "lua/fileapi/mijnklantportaal/token_dict.lua",
      ["fileapi.shares"] = "lua/fileapi/shares.lua",
      ["fileapi.store"] = "lua/fileapi/store/init.lua",
      ["fileapi.store.budget"] = "lua/fileapi/store/budget.lua",
      ["fileapi.store.redis"] = "lua/fileapi/store/redis.lua",
      ["fileapi.store.tokens"] = "lua/fileapi/store/tokens.lua",
      ["fileapi.tree"] = "lua/fileapi/tree.lua",
      ["fileapi.batch"] = "lua/fileapi/batch.lua",
      ["fileapi.util"] = "lua/fileapi/util.lua",
    },
    bin = { fileapi = "bin/fileapi" },
  },
}
