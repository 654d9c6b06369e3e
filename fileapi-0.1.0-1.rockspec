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
  summary = "Upload files and create folders on the MijnKlantportaal Files API and files.ro shares",
  detailed = [[
A C core on libcurl (kept-alive connections, streaming multipart uploads in
constant memory, safe retries) with a small Lua layer: files.upload,
files.mkdir and shares.mkdir.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
external_dependencies = {
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["fileapi.core"] = {
      sources = { "csrc/core.c", "csrc/errors.c", "csrc/multipart.c", "csrc/retry.c", "csrc/session.c" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      libraries = { "curl", "pthread", "m" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
    ["fileapi"] = "lua/fileapi/init.lua",
    ["fileapi.files"] = "lua/fileapi/files.lua",
    ["fileapi.shares"] = "lua/fileapi/shares.lua",
    ["fileapi.transport"] = "lua/fileapi/transport.lua",
    ["fileapi.ngx_transport"] = "lua/fileapi/ngx_transport.lua",
    ["fileapi.util"] = "lua/fileapi/util.lua",
    ["fileapi.mime"] = "lua/fileapi/mime.lua",
    ["fileapi.cli"] = "lua/fileapi/cli.lua",
  },
  install = {
    bin = { fileapi = "bin/fileapi" },
  },
}
