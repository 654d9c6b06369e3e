-- `make demo`: starts the bundled mock on a free loopback port, creates a
-- directory, uploads a file into it with a progress bar, shows a handled
-- error (the storage quota), creates a folder in a share, stops the mock.
local helper = require "helper"
local files = require "fileapi.files"
local shares = require "fileapi.shares"

local mock = helper.start_mock()
local function step(fmt, ...) print(("==> " .. fmt):format(...)) end

local ok, failure = pcall(function()
  step("mock API on %s (fileapi %s, libcurl %s)", mock.base, require("fileapi").version,
    require("fileapi").curl_version)
  local mkp = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url }))

  local dir = assert(mkp:mkdir("Contracts"))
  step("created directory %s (%s)", dir.name, dir.id)

  local path = helper.write_file(helper.tmpname(".pdf"), 48 * 1024 * 1024)
  local started, shown = os.clock(), -1
  local item = assert(mkp:upload(path, { directory = dir.id, filename = "contract_v2.pdf",
    on_progress = function(sent, total)
      local pct = math.floor(sent / total * 100)
      if pct == shown then return end
      shown = pct
      local done = math.floor(pct * 40 / 100)
      io.write(("\r    [%s%s] %3d%%"):format(("#"):rep(done), ("."):rep(40 - done), pct))
      io.flush()
    end }))
  io.write("\n")
  step("uploaded %s: %s, %d bytes, %s (%.2f s CPU)", item.name, item.id, item.size, item.mime,
    os.clock() - started)

  mock:config({ quota = 1024 })
  local nothing, err = mkp:upload(path, { directory = dir.id })
  os.remove(path)
  assert(nothing == nil)
  step("a handled error: kind=%s status=%s retryable=%s", err.kind, err.status, tostring(err.retryable))
  step("  tostring(err) = %s", tostring(err))
  mkp:close()

  local share = assert(shares.new({ token = "editor-token", base_url = mock.base }))
  local folder = assert(share:mkdir("Projects"))
  local sub = assert(share:mkdir("2026", { parent_id = folder.id }))
  step("created share folder %s (%s), and %s inside it", folder.name, folder.id, sub.name)
  share:close()
  step("TCP connections the mock saw: %d for %d requests", mock:stats().connections, mock:stats().requests)
end)
mock:stop()
if not ok then
  io.stderr:write("demo failed: ", tostring(failure), "\n")
  os.exit(1)
end
