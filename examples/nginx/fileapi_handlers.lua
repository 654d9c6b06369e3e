-- Request handlers that use fileapi from nginx.  In content, rewrite and
-- access handlers and in timers fileapi talks over cosockets, so a slow API
-- never blocks the worker; elsewhere (init phases) it uses libcurl.
--
-- Where a credential goes is the server's choice, never a request's: the
-- API key, the share token, the application's id and secret and every base
-- URL come from the environment (nginx.conf's `env` lines), the other client
-- options and the OAuth redirect address from the table nginx.conf gives
-- init_worker.  A request names only what to make (a name, a folder id) and
-- brings the file.
--
-- Every client counts what it does (on_event) in the fileapi_metrics
-- shared dict, which /metrics serves as Prometheus text.
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local cjson = require "cjson"

local M = {}

local settings = {
  client = {},                      -- files.new / shares.new options
  redirect_uri = nil,               -- where /oauth/callback is reached, as registered with the application
  stream_above = 8 * 1024 * 1024,   -- bodies larger than this are streamed, not buffered
}
-- One client per worker (its pooled cosocket connections serve every
-- request), or why there is none.
local client, client_err, share, share_err

-- ---- metrics: the clients' events, counted per worker into one dict ----
-- Keys are the metric's name and its labels as Prometheus writes them
-- (`fileapi_requests_total{status="201"}`): serving them is a sort.
local METRICS = "fileapi_metrics"

local HELP = {
  fileapi_requests_total = "HTTP attempts fileapi made, by status (or error kind when none came back)",
  fileapi_waits_total = "waits fileapi announced, by reason",
  fileapi_wait_seconds_total = "seconds of those waits (refresh: the longest each could last)",
  fileapi_refreshes_total = "OAuth token refreshes that ended, by who did it and whether it worked",
  fileapi_store_outages_total = "times the fleet's store went down",
}

local function add(key, value)
  local dict = ngx.shared[METRICS]
  if not dict then return end
  local ok, err = dict:incr(key, value, 0)
  if not ok and err ~= "not found" then ngx.log(ngx.WARN, "fileapi metrics: ", err) end
end

-- The on_event handler of every client here: a counter or two per event.
local function count_event(ev)
  local t = ev.type
  if t == "request" then
    local labels = ev.status and ('status="' .. ev.status .. '"') or ""
    if ev.kind then labels = labels .. (labels ~= "" and "," or "") .. 'kind="' .. ev.kind .. '"' end
    add("fileapi_requests_total{" .. labels .. "}", 1)
  elseif t == "wait" then
    add('fileapi_waits_total{reason="' .. ev.reason .. '"}', 1)
    add('fileapi_wait_seconds_total{reason="' .. ev.reason .. '"}', ev.seconds)
  elseif t == "refresh" then
    add('fileapi_refreshes_total{by="' .. ev.by .. '",ok="' .. tostring(ev.ok) .. '"}', 1)
  elseif t == "store" and ev.state == "down" then
    add("fileapi_store_outages_total", 1)
  end
end

-- GET /metrics: the text exposition format, each metric's samples under
-- its HELP and TYPE lines.
function M.metrics()
  local dict = ngx.shared[METRICS]
  local keys = dict and dict:get_keys(0) or {}
  table.sort(keys)
  local lines, named = {}, nil
  for _, key in ipairs(keys) do
    local name = key:match("^[%w_]+")
    if name ~= named then
      named = name
      lines[#lines + 1] = "# HELP " .. name .. " " .. (HELP[name] or name)
      lines[#lines + 1] = "# TYPE " .. name .. " counter"
    end
    local value = dict:get(key)
    if value then
      local whole = value == math.floor(value)
      lines[#lines + 1] = key .. " " .. (whole and ("%d"):format(value) or ("%.6f"):format(value))
    end
  end
  ngx.header["Content-Type"] = "text/plain; version=0.0.4"
  ngx.print(table.concat(lines, "\n"), #lines > 0 and "\n" or "")
end

local function client_options(extra)
  local opts = { on_event = count_event }
  for k, v in pairs(settings.client) do opts[k] = v end
  for k, v in pairs(extra or {}) do opts[k] = v end
  return opts
end

-- Created per worker; the first calls happen in request handlers.
function M.init_worker(opts)
  for k, v in pairs(opts or {}) do settings[k] = v end
  if settings.client.base_url or settings.client.oauth_base_url then
    -- one table serves both services: their addresses come from the environment
    client_err = "set MKP_BASE_URL, FILESRO_BASE_URL and MKP_OAUTH_BASE_URL in the environment, not base_url"
    share_err = client_err
    return ngx.log(ngx.ERR, client_err)
  end
  client, client_err = files.new(client_options())
  local token = os.getenv("FILESRO_TOKEN")
  if token then
    share, share_err = shares.new(client_options({ token = token }))
  else
    share_err = "FILESRO_TOKEN is not set"
  end
end

local function reply(result, err, extra, status)
  local doc = extra or {}
  if result then
    doc.ok, doc.result = true, result
  else
    doc.ok, doc.error = false, { kind = err.kind, status = err.status, message = err.message,
      attempts = err.attempts, retryable = err.retryable }
  end
  ngx.status = status or ngx.HTTP_OK
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(doc))
end

local function not_configured(why)
  return reply(nil, { kind = "invalid_argument", message = "not configured: " .. tostring(why) }, nil,
    ngx.HTTP_INTERNAL_SERVER_ERROR)
end

function M.mkdir()
  if not client then return not_configured(client_err) end
  local args = ngx.req.get_uri_args()
  reply(client:mkdir(args.name or "", { directory = args.dir }))
end

-- ---- the request body as an upload source -------------------------------

-- A reader over the request socket for `length` bytes (the Content-Length),
-- nothing buffered.  `failed.message` says why the body could not be read.
local function socket_source(length, filename)
  local sock, err = ngx.req.socket()
  if not sock then return nil, "reading the request body: " .. tostring(err) end
  local left, failed = length, {}
  local function reader()
    if left == 0 then return nil end
    local chunk, rerr, partial = sock:receive(math.min(left, 65536))
    if not chunk then
      failed.message = ("the request body ended after %d of %d bytes (%s)")
        :format(length - left + #(partial or ""), length, tostring(rerr))
      error(failed.message)
    end
    left = left - #chunk
    return chunk
  end
  return { reader = reader, size = length, filename = filename }, failed
end

-- The body as nginx holds it once read: in memory, or in a temporary file
-- when it is larger than client_body_buffer_size (streamed from there by
-- fileapi, and like a string it can be sent again on a retry).
local function buffered_source(filename)
  local data, path = ngx.req.get_body_data(), ngx.req.get_body_file()
  if path then return { path = path, filename = filename }, "file" end
  if data then return { data = data, filename = filename }, "memory" end
  if (tonumber(ngx.var.content_length) or 0) > 0 then return nil, "the request body was not kept" end
  return { data = "", filename = filename }, "memory"
end

-- The upload source for this request's body, and where it comes from
-- ("memory", "file" or "socket").  A body up to settings.stream_above (or
-- one without a Content-Length) is read by nginx first, so a 429 or 503 can
-- be retried; a larger one streams from the socket (a reader: sent once).
local function body_source(filename)
  if ngx.req.get_body_data() or ngx.req.get_body_file() then return buffered_source(filename) end
  local length = tonumber(ngx.var.content_length)
  if length and length > settings.stream_above then
    local source, failed = socket_source(length, filename)
    return source, source and "socket" or failed, failed
  end
  -- on a body that breaks off, nginx ends the request here (400)
  ngx.req.read_body()
  return buffered_source(filename)
end

-- The request body uploaded as a file, whatever its size.
function M.upload()
  if not client then return not_configured(client_err) end
  local args = ngx.req.get_uri_args()
  local source, from, failed = body_source(args.name or "upload.bin")
  if not source then -- nginx did not give the body to this handler
    return reply(nil, { kind = "request_body", message = from }, nil, ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  local item, err = client:upload(source, { directory = args.dir })
  if not item and failed and failed.message then
    return reply(nil, { kind = "request_body", message = failed.message }, { body = from }, ngx.HTTP_BAD_REQUEST)
  end
  if not item and from == "file" and err.kind == "io" then
    -- nginx's temporary file could not be read: the server's fault
    return reply(nil, err, { body = from }, ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  reply(item, err, { body = from })
end

local function memory_kb(field)
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^" .. field .. ":%s*(%d+) kB")
    if kb then return tonumber(kb) end
  end
end

-- Streams the incoming request body to the Files API without buffering it,
-- whatever its size: a reader over ngx.req.socket() with the declared
-- Content-Length.
function M.forward()
  if not client then return not_configured(client_err) end
  local args = ngx.req.get_uri_args()
  local size = tonumber(ngx.var.content_length)
  if not size then
    return reply(nil, { kind = "request_body", message = "Content-Length required" }, nil, 411)
  end
  local source, failed = socket_source(size, args.name or "forwarded.bin")
  if not source then
    return reply(nil, { kind = "request_body", message = failed }, nil, ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  local before = memory_kb("VmRSS")
  local item, err = client:upload(source)
  local extra = { rss_before_kb = before, hwm_after_kb = memory_kb("VmHWM") }
  if not item and failed.message then
    return reply(nil, { kind = "request_body", message = failed.message }, extra, ngx.HTTP_BAD_REQUEST)
  end
  reply(item, err, extra)
end

function M.share_mkdir()
  if not share then return not_configured(share_err) end
  local args = ngx.req.get_uri_args()
  reply(share:mkdir(args.name or "", { parent_id = args.parent }))
end


-- ---- a third-party application's two OAuth routes -----------------------
-- /oauth/connect sends the user to the consent page (the state kept under a
-- session cookie), /oauth/callback checks the state and exchanges the code;
-- /oauth/mkdir then works on the user's portal with a client that refreshes
-- by itself, one refresh per expiry for all workers (token_dict).  A real
-- application keeps tokens per user in its own store; here one user, in
-- the fileapi_oauth dict.  The redirect address is the configured one, not
-- one made from the request's Host header: the code goes only there.
local OAUTH = "fileapi_oauth"

local function redirect_uri() return settings.redirect_uri end

local function say(status, text)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.say(text)
end

function M.oauth_connect()
  if not redirect_uri() then return say(500, "not configured: redirect_uri") end
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
    app_client = assert(files.new(client_options({ token_dict = OAUTH,
      oauth = { client_id = os.getenv("MKP_CLIENT_ID"), client_secret = os.getenv("MKP_CLIENT_SECRET"),
        access_token = t.access_token, refresh_token = t.refresh_token, expires_at = t.expires_at },
      on_tokens = function(new) ngx.shared[OAUTH]:set("tokens", cjson.encode(new)) end })))
  end
  reply(app_client:mkdir(ngx.req.get_uri_args().name or ""))
end

return M
