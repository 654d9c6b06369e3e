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


-- ---- a third-party application's two OAuth routes -----------------------
-- /oauth/connect sends the user to the consent page (the state kept under a
-- session cookie), /oauth/callback checks the state and exchanges the code;
-- /oauth/mkdir then works on the user's portal with a client that refreshes
-- by itself, one refresh per expiry for all workers (token_dict).  A real
-- application keeps tokens per user in its own store; here one user, in
-- the fileapi_oauth dict.
local OAUTH = "fileapi_oauth"

local function redirect_uri()
  return ngx.var.scheme .. "://" .. ngx.var.http_host .. "/oauth/callback"
end

local function say(status, text)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.say(text)
end

function M.oauth_connect()
  local url, state = files.authorize_url({ client_id = os.getenv("MKP_CLIENT_ID"), redirect_uri = redirect_uri(),
    scope = { "files.read", "files.write" } })
  if not url then return say(500, tostring(state)) end
  local session = require("fileapi.core").random_token(24)
  ngx.shared[OAUTH]:set("state:" .. session, state, 600) -- ten minutes to decide
  ngx.header["Set-Cookie"] = "sid=" .. session .. "; Path=/oauth; HttpOnly; SameSite=Lax"
  return ngx.redirect(url, 302)
end

function M.oauth_callback()
  local dict, args = ngx.shared[OAUTH], ngx.req.get_uri_args()
  local session = ngx.var.cookie_sid or ""
  local expected = dict:get("state:" .. session)
  dict:delete("state:" .. session) -- one redirect per state
  if not files.check_state(expected, args.state) then return say(403, "not our sign-in") end
  if args.error then return say(200, "not connected: " .. tostring(args.error)) end
  local tokens, err = files.exchange_code({ client_id = os.getenv("MKP_CLIENT_ID"),
    client_secret = os.getenv("MKP_CLIENT_SECRET"), redirect_uri = redirect_uri(), code = args.code })
  if not tokens then return say(502, tostring(err)) end
  dict:set("tokens", cjson.encode(tokens))
  return say(200, "connected")
end

local app_client
function M.oauth_mkdir()
  if not app_client then
    local saved = ngx.shared[OAUTH]:get("tokens")
    if not saved then return say(409, "not connected: visit /oauth/connect") end
    local t = cjson.decode(saved)
    app_client = assert(files.new({ timeout = 30, token_dict = OAUTH,
      oauth = { client_id = os.getenv("MKP_CLIENT_ID"), client_secret = os.getenv("MKP_CLIENT_SECRET"),
        access_token = t.access_token, refresh_token = t.refresh_token, expires_at = t.expires_at },
      on_tokens = function(new) ngx.shared[OAUTH]:set("tokens", cjson.encode(new)) end }))
  end
  reply(app_client:mkdir(ngx.req.get_uri_args().name or ""))
end

return M
