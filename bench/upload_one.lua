-- One fileapi contender run: upload a file, download one to a path, send
-- N mkdir calls (on one client, or a fresh client each call), or upload a
-- batch of files (one at a time, or in a group).  Run under /usr/bin/time
-- by run.lua.
local files = require "fileapi.files"

local mode, base, arg3 = arg[1], arg[2], arg[3]
if mode == "upload" then
  local client = assert(files.new({ api_key = "bench-key", base_url = base }))
  assert(client:upload(arg3))
elseif mode == "mkdir" then
  local client = assert(files.new({ api_key = "bench-key", base_url = base }))
  for _ = 1, tonumber(arg3) do assert(client:mkdir("d")) end
elseif mode == "mkdir-store" then
  -- the same calls, the budget in a fleet's Redis (arg[4]: its URL)
  local client = assert(files.new({ api_key = "bench-key", base_url = base, store = { url = arg[4] } }))
  for _ = 1, tonumber(arg3) do assert(client:mkdir("d")) end
elseif mode == "mkdir-fresh" then
  for _ = 1, tonumber(arg3) do
    local client = assert(files.new({ api_key = "bench-key", base_url = base }))
    assert(client:mkdir("d"))
    client:close()
  end
end
if mode == "download" then
  -- the core's sink on its own: GET a static file to a path
  local client = assert(files.new({ api_key = "bench-key", base_url = base }))
  local res = assert(client.engine:send({ url = base .. "/" .. arg3, sink = arg[4], overwrite = true }))
  assert(res.download.size > 0)
end
if mode == "share-upload" then
  -- arg[4]: chunk size in bytes
  local shares = require "fileapi.shares"
  local share = assert(shares.new({ token = "bench-token", base_url = base }))
  assert(share:upload(arg3, { chunk_size = tonumber(arg[4]) }))
end
if mode == "mkp-download" then
  -- the API call: a link from /v1/files/{id}/download, then the file from it
  local client = assert(files.new({ api_key = "bench-key", base_url = base .. "/v1" }))
  assert(client:download(arg3, arg[4], { overwrite = true }))
end
if mode == "drive-upload" then
  -- the owner's upload: always chunked, 64,000,000 bytes a chunk
  local drive = require "fileapi.drive"
  local d = assert(drive.new({ token = "1|bench", base_url = base }))
  assert(d:upload(arg3))
end
if mode == "drive-zip" then
  local drive = require "fileapi.drive"
  local d = assert(drive.new({ token = "1|bench", base_url = base }))
  assert(d:zip({ { type = "folder", id = "00000000-0000-4000-8000-000000000001" } }, arg3, { overwrite = true }))
end
if mode == "batch" then
  -- every path listed in arg[4] (one a line) on one client: one after
  -- another (arg3 = 1) or arg3 at once in a group; arg[5]: the client's
  -- rate_window, arg[6]: a fleet store's URL
  local fileapi = require "fileapi"
  local paths = {}
  for line in io.lines(arg[4]) do paths[#paths + 1] = line end
  local client = assert(files.new({ api_key = "bench-key", base_url = base, timeout = 600,
    rate_window = tonumber(arg[5]), store = arg[6] and { url = arg[6] } or nil }))
  local parallel = tonumber(arg3)
  if parallel == 1 then
    for _, path in ipairs(paths) do assert(client:upload(path)) end
  else
    local g = assert(fileapi.group({ parallel = parallel }))
    for _, path in ipairs(paths) do g:spawn(function() return client:upload(path) end) end
    for _, res, err in g:results() do assert(res, tostring(err)) end
  end
  client:close()
end
