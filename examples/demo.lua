-- `make demo`: a short tour against the mock that ships with the rock
-- (fileapi.mock, what `fileapi mock` runs: started on free loopback ports
-- and stopped at the end): a directory and an upload with a
-- progress bar, the file read back and downloaded, shared with a customer,
-- a chunked upload into a files.ro share, the rate limit pacing a batch, a
-- third-party application's sign-in and refresh, and a handled error.  One
-- line a step; well under 30 s.
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local fileapi_mock = require "fileapi.mock"

local mock = assert(fileapi_mock.start())
local MIB = 1024 * 1024
local function step(fmt, ...) print(("==> " .. fmt):format(...)) end

local function tmpname(suffix)
  local name = os.tmpname()
  os.remove(name)
  return name .. suffix
end

-- `size` bytes of a repeating pattern at `path`.
local function write_file(path, size)
  local f = assert(io.open(path, "wb"))
  local chunk = ("0123456789abcdef"):rep(65536)
  for _ = 1, math.floor(size / #chunk) do f:write(chunk) end
  f:write(chunk:sub(1, size % #chunk))
  f:close()
  return path
end

local function same_bytes(a, b)
  local fa, fb = assert(io.open(a, "rb")), assert(io.open(b, "rb"))
  local same
  repeat
    local x, y = fa:read(MIB), fb:read(MIB)
    same = x == y
  until not same or x == nil
  fa:close()
  fb:close()
  return same
end
-- A 40-column bar on one line, redrawn as the percentage moves (on a
-- terminal only).
local function bar(label)
  if not require("fileapi.core").isatty(1) then return nil end
  local shown = -1
  return function(done, total)
    local pct = total and total > 0 and math.floor(done / total * 100) or 0
    if pct == shown then return end
    shown = pct
    local n = math.floor(pct * 40 / 100)
    io.write(("\r    %-9s [%s%s] %3d%%"):format(label, ("#"):rep(n), ("."):rep(40 - n), pct))
    if pct == 100 then io.write("\n") end
    io.flush()
  end
end

local ok, failure = pcall(function()
  step("mock APIs on %s (fileapi %s, libcurl %s)", mock.base, require("fileapi").version,
    require("fileapi").curl_version)
  local mkp = assert(files.new({ api_key = fileapi_mock.API_KEY, base_url = mock.mkp_url }))

  local dir = assert(mkp:mkdir("Contracts"))
  step("mkdir: directory %s (%s)", dir.name, dir.id)

  local path = write_file(tmpname(".pdf"), 48 * MIB)
  local item = assert(mkp:upload(path, { directory = dir.id, filename = "contract_v2.pdf",
    on_progress = bar("upload") }))
  step("upload: %s, %s, %d bytes, %s", item.name, item.id, item.size, item.mime)

  local back = assert(mkp:get(item.id))
  step("get: %s is a %s of %d bytes, created %s", back.id, back.type, back.size, tostring(back.createdAt))

  local dest = tmpname(".download")
  local got = assert(mkp:download(item.id, dest, { on_progress = bar("download") }))
  step("download: %d bytes to a local file (link fetched without the key), identical: %s", got.size,
    tostring(same_bytes(dest, path)))
  os.remove(dest)

  local shared = assert(mkp:share({ item.id }, { customer_id = "cst_abc12345678" }))
  step("share: %s with customer %s: %s", shared.id, shared.sharedWithCustomerId, shared.links.customer.href)

  local share = assert(shares.new({ token = fileapi_mock.EDITOR_SHARE, base_url = mock.base }))
  local before = mock:stats().chunks or 0
  local file = assert(share:upload(path, { chunk_size = 16 * MIB, path = "Projects/2026", name = "contract_v2",
    on_progress = bar("share") }))
  step("share upload: %s into Projects/2026 in %d chunks of 16 MiB (%s)", file.name,
    (mock:stats().chunks or 0) - before, file.id)
  share:close()
  os.remove(path)

  mock:config({ rate_limit = 3, rate_window = 2 })
  local paced = assert(files.new({ api_key = fileapi_mock.API_KEY, base_url = mock.mkp_url, rate_window = 2,
    on_wait = function(seconds) step("rate limit: 3 requests per 2 s, waiting %.1f s instead of a 429", seconds) end }))
  for i = 1, 4 do assert(paced:mkdir("batch " .. i)) end
  step("pacing: 4 directories made, %d refused by the server", mock:stats().rejected)
  paced:close()
  mock:config({ rate_limit = require("cjson").null })

  -- a third-party application: consent (the mock approves at once), code exchange, a call
  local url, state = assert(files.authorize_url({ client_id = fileapi_mock.CLIENT_ID,
    redirect_uri = "https://app.example/cb", scope = "files.write", oauth_base_url = mock.oauth_url }))
  local _, _, headers = require("socket.http").request({ url = url, redirect = false })
  local code, echoed = headers.location:match("code=([^&]+)"), headers.location:match("state=([^&]+)")
  local tokens = assert(files.exchange_code({ client_id = fileapi_mock.CLIENT_ID, client_secret = fileapi_mock.CLIENT_SECRET,
    redirect_uri = "https://app.example/cb", code = code, oauth_base_url = mock.oauth_url }))
  local app = assert(files.new({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url,
    oauth = { client_id = fileapi_mock.CLIENT_ID, client_secret = fileapi_mock.CLIENT_SECRET, access_token = "expired",
      refresh_token = tokens.refresh_token, expires_at = 0 } }))
  local made = assert(app:mkdir("From an app"))
  step("oauth: state checked %s, code exchanged, token refreshed %d time(s), then %s made", tostring(
    files.check_state(state, echoed)), app:token_info().refreshes, made.id)
  app:close()

  mock:config({ quota = 1024 })
  local nothing, err = mkp:upload({ data = ("x"):rep(4096), filename = "big.bin" }, { directory = dir.id })
  assert(nothing == nil)
  step("a handled error: %s (kind=%s, retryable=%s)", tostring(err), err.kind, tostring(err.retryable))
  mkp:close()
  step("the mock saw %d TCP connections for %d requests: connections are kept alive", mock:stats().connections,
    mock:stats().requests)
end)
mock:stop()
if not ok then
  io.stderr:write("demo failed: ", tostring(failure), "\n")
  os.exit(1)
end
