-- The bundled mock of both services (spec/support/mock.lua), to try
-- fileapi by hand:
--   sh tools/with-paths.sh lua5.4 tools/mock.lua [--port N]
-- starts it on free loopback ports (or port N), prints the variables the
-- library and the command read as `export NAME=value` lines, then serves in
-- the foreground, state in memory, until Ctrl-C or SIGTERM.
local helper = require "helper"
local core = require "fileapi.core"

local port
if arg[1] == "--port" and tonumber(arg[2]) then
  port = math.floor(tonumber(arg[2]))
elseif arg[1] then
  io.stderr:write("usage: tools/mock.lua [--port N]\n")
  os.exit(2)
end

-- A value a shell reads back as it is: quoted unless plain.
local function shell_word(v)
  if v:match("^[%w%%+,./:=@_-]+$") then return v end
  return helper.sh_quote(v)
end

local mock = helper.start_mock({ port = port })
core.catch_interrupts()
local exports = {
  { "MKP_BASE_URL", mock.mkp_url }, { "MKP_API_KEY", helper.API_KEY },
  { "MKP_OAUTH_BASE_URL", mock.oauth_url }, { "MKP_CLIENT_ID", helper.OAUTH_CLIENT_ID },
  { "MKP_CLIENT_SECRET", helper.OAUTH_CLIENT_SECRET }, { "FILESRO_BASE_URL", mock.base },
  { "FILESRO_TOKEN", helper.EDITOR_SHARE }, { "FILESRO_API_TOKEN", helper.DRIVE_TOKEN },
  { "FILESRO_EMAIL", helper.DRIVE_EMAIL }, { "FILESRO_PASSWORD", helper.DRIVE_PASSWORD },
}
for _, e in ipairs(exports) do io.stdout:write("export ", e[1], "=", shell_word(e[2]), "\n") end
io.stdout:flush()
io.stderr:write("fileapi mock: serving on ", mock.base, " until Ctrl-C\n")

local function alive()
  local f = io.open("/proc/" .. mock.pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

while not core.interrupted() and alive() do core.sleep(0.2) end
local stopped_by_itself = not core.interrupted()
mock:stop()
if stopped_by_itself then
  io.stderr:write("fileapi mock: the mock stopped\n")
  os.exit(1)
end
