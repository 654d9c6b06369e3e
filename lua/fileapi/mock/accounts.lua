-- What the mock accepts, in one place: the API key, the OAuth application,
-- the editor share's token, the files.ro owner's token and sign-in; and the
-- variables `fileapi mock` prints for them, with the names the library and
-- the command read.  Plain Lua 5.1 (read by fileapi.mock on any Lua).
local proc = require "fileapi.mock.proc"

local M = {}

M.API_KEY = "test-key"
M.CLIENT_ID, M.CLIENT_SECRET = "app_test", "app-secret-7f3k"
M.EDITOR_SHARE = "editor-token"
M.OWNER_TOKEN = "1|ownerTestToken0123456789abcdefghijklmnopq"
M.OWNER_EMAIL, M.OWNER_PASSWORD = "owner@example.com", "correct horse battery"

-- The variables in the order they are printed, for a mock whose API port
-- answers at `base` (both services) and whose manage host at `oauth`.
function M.variables(base, oauth)
  return {
    { "MKP_BASE_URL", base .. "/v1" }, { "MKP_API_KEY", M.API_KEY },
    { "MKP_OAUTH_BASE_URL", oauth }, { "MKP_CLIENT_ID", M.CLIENT_ID },
    { "MKP_CLIENT_SECRET", M.CLIENT_SECRET }, { "FILESRO_BASE_URL", base },
    { "FILESRO_TOKEN", M.EDITOR_SHARE }, { "FILESRO_API_TOKEN", M.OWNER_TOKEN },
    { "FILESRO_EMAIL", M.OWNER_EMAIL }, { "FILESRO_PASSWORD", M.OWNER_PASSWORD },
  }
end

-- A value a shell reads back as it is: as it is when plain, else quoted.
function M.shell_word(v)
  v = tostring(v)
  if v:match("^[%w%%+,./:=@_-]+$") then return v end
  return proc.quote(v)
end

-- `export NAME=value` lines a shell can eval, one per variable.
function M.export_lines(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = ("export %s=%s\n"):format(v[1], M.shell_word(v[2])) end
  return table.concat(out)
end

return M
