-- Request handlers that use fileapi from nginx.  In content, rewrite and
-- access handlers and in timers fileapi talks over cosockets, so a slow API
-- never blocks the worker; elsewhere (init phases) it uses libcurl.
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local cjson = require "cjson"

local M = {}

local client

-- Created per worker; the first calls happen in request handlers.
function M.init_worker()
  client = assert(files.new({ timeout = 30 }))
end

local function reply(result, err, extra)
  local doc = extra or {}
  if result then
    doc.ok, doc.result = true, result
  else
    doc.ok, doc.error = false, { kind = err.kind, status = err.status, message = err.message,
      attempts = err.attempts, retryable = err.retryable }
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(doc))
end

local function options()
  local args = ngx.req.get_uri_args()
  local opts = {}
  if args.timeout then opts.timeout = tonumber(args.timeout) end
  if args.transport then opts.transport = args.transport end
  if args.base then opts.base_url = args.base end
  return args, opts
end

-- A per-request client only when the request asks for other options.
local function client_for(opts)
  if next(opts) == nil then return client end
  return assert(files.new(opts))
end

function M.mkdir()
  local args, opts = options()
  reply(client_for(opts):mkdir(args.name or "", { directory = args.dir }))
end

-- The request body (small) uploaded as a file.
function M.upload()
  local args, opts = options()
  ngx.req.read_body()
  local data = ngx.req.get_body_data() or ""
  reply(client_for(opts):upload({ data = data, filename = args.name or "upload.bin" }, { directory = args.dir }))
end

local function memory_kb(field)
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^" .. field .. ":%s*(%d+) kB")
    if kb then return tonumber(kb) end
  end
end

-- Streams the incoming request body to the Files API without buffering it:
-- a reader over ngx.req.socket() with the declared Content-Length.
function M.forward()
  local args = options()
  local size = tonumber(ngx.var.content_length)
  if not size then return reply(nil, { kind = "invalid_argument", message = "Content-Length required" }) end
  local sock = assert(ngx.req.socket())
  local left = size
  local function reader()
    if left == 0 then return nil end
    local chunk, err = sock:receive(math.min(left, 65536))
    if not chunk then error("reading the request body: " .. tostring(err)) end
    left = left - #chunk
    return chunk
  end
  local before = memory_kb("VmRSS")
  local item, err = client:upload({ reader = reader, size = size, filename = args.name or "forwarded.bin" })
  reply(item, err, { rss_before_kb = before, hwm_after_kb = memory_kb("VmHWM") })
end

function M.share_mkdir()
  local args, opts = options()
  reply(shares.mkdir(args.token or "", args.name or "", {
    parent_id = args.parent, timeout = opts.timeout, transport = opts.transport,
  }))
end

return M
