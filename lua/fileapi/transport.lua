-- The transport both API modules share: one kept-alive session, the
-- transport options, the retry policy, JSON decoding and the mapping of an
-- API's error bodies to error fields.
local core = require "fileapi.core"
local cjson_module = require "cjson"
local util = require "fileapi.util"
local ngx_transport = require "fileapi.ngx_transport"

local type, ipairs, setmetatable = type, ipairs, setmetatable
local min, random = math.min, math.random
local format = string.format

local cjson = cjson_module.new()
cjson.decode_max_depth(64)
cjson.decode_invalid_numbers(false)

local M = {}
local Transport = {}
Transport.__index = Transport

M.USER_AGENT = format("fileapi/%s libcurl/%s", core.version, core.curl_version)

local DEFAULTS = {
  connect_timeout = 10,
  idle_timeout = 60,
  retries = 2,
  max_retry_wait = 60,
  backoff = 0.5,
  max_response = 1024 * 1024,
}

local NUMBER_OPTIONS = { "timeout", "connect_timeout", "idle_timeout", "retries",
  "max_retry_wait", "backoff", "max_response" }
local STRING_OPTIONS = { "ca_file", "proxy", "user_agent", "base_url", "transport" }

local BOOLEAN_OPTIONS = { "allow_insecure", "retry_unsafe" }

-- Raises for wrong types (all of them first); returns the normalised
-- options, or nil and a message for a bad value.
function M.check_options(opts, fname)
  local out = {}
  for _, group in ipairs({ { NUMBER_OPTIONS, "number" }, { STRING_OPTIONS, "string" },
      { BOOLEAN_OPTIONS, "boolean" } }) do
    for _, k in ipairs(group[1]) do out[k] = util.check_field(opts, k, group[2], fname) end
  end
  for _, k in ipairs(NUMBER_OPTIONS) do
    local v = out[k]
    if v ~= nil and (v ~= v or v < 0 or v == math.huge) then
      return nil, k .. " must be a finite number >= 0"
    end
    if v == nil then out[k] = DEFAULTS[k] end
  end
  for _, k in ipairs(STRING_OPTIONS) do
    if out[k] ~= nil and util.has_control(out[k]) then return nil, k .. " must not contain control characters" end
  end
  if out.retries ~= math.floor(out.retries) then return nil, "retries must be a whole number" end
  out.transport = out.transport or "auto"
  if out.transport ~= "auto" and out.transport ~= "curl" and out.transport ~= "ngx" then
    return nil, 'transport must be "auto", "curl" or "ngx"'
  end
  if out.transport == "ngx" and (out.ca_file or out.proxy) then
    return nil, "ca_file and proxy need the curl transport (in nginx, use lua_ssl_trusted_certificate)"
  end
  if out.max_response < 1 then return nil, "max_response must be at least 1 byte" end
  out.allow_insecure = out.allow_insecure or false
  out.retry_unsafe = out.retry_unsafe or false
  return out
end

-- opts: checked options; secrets: strings that must never appear in errors.
function M.new(opts, secrets)
  local session, err = core.session()
  if not session then return nil, err end
  if opts.proxy then
    local creds = opts.proxy:match("^%a[%w+.-]*://([^@/]*)@") or opts.proxy:match("^([^@/]*)@")
    if creds then secrets[#secrets + 1] = creds end
  end
  local function curl(creq) return session:perform(creq) end
  return setmetatable({ session = session, curl = curl, opts = opts, secrets = secrets }, Transport)
end

local function request_for(self, req)
  local o = self.opts
  return {
    method = req.method, url = req.url, headers = req.headers, body = req.body,
    multipart = req.multipart, on_progress = req.on_progress, readers = req.readers,
    timeout = o.timeout, connect_timeout = o.connect_timeout, idle_timeout = o.idle_timeout,
    ca_file = o.ca_file, proxy = o.proxy, user_agent = o.user_agent or M.USER_AGENT,
    max_response = o.max_response,
  }
end

local function decode_json(body)
  local ok, value = pcall(cjson.decode, body)
  if ok then return util.normalize(value, cjson.null) end
  return nil
end

-- The API's own words where it sent any: {message} and Laravel's {errors}.
local function http_error(res)
  local kind = core.kind_for_status(res.status)
  local doc = decode_json(res.body)
  local message, fields
  if type(doc) == "table" then
    if type(doc.message) == "string" and doc.message ~= "" then message = doc.message end
    if type(doc.errors) == "table" then fields = doc.errors end
  end
  return util.new_error(kind, message or format("the server answered HTTP %d", res.status), {
    status = res.status, fields = fields,
  })
end

-- Decides whether another attempt is allowed, setting err.retryable.
local function may_retry(self, err, res)
  local status = res and res.status
  local safe
  if status then
    err.retryable = status == 429 or status >= 500
    safe = status == 429 or status == 503
  elseif err.kind == "network" or err.kind == "timeout" then
    err.retryable = true
    safe = not err.request_sent
  else
    err.retryable = false
  end
  return err.retryable and (safe or self.opts.retry_unsafe)
end

local function wait_before(self, res, attempt)
  local o = self.opts
  local header = res and res.headers["retry-after"]
  local seconds = header and core.retry_after(header)
  if seconds then return min(seconds, o.max_retry_wait), seconds end
  local backoff = min(o.backoff * 2 ^ (attempt - 1), o.max_retry_wait)
  return backoff * (0.5 + random() * 0.5)
end

local function finish(self, err, attempts)
  err.attempts = attempts
  if err.retryable == nil then err.retryable = false end
  return nil, util.redact(err, self.secrets)
end

-- Where cosockets can be used (nginx handlers and timers) requests go over
-- them, unless told otherwise; everywhere else over libcurl.  Decided per
-- call: one client may serve init_by_lua and content handlers alike.  Waits
-- between attempts never block a worker that can yield.
local function choose(self, url)
  local o = self.opts
  local usable = ngx_transport.available()
  local sleep = usable and ngx_transport.sleep or core.sleep
  if o.transport == "curl" then return self.curl, sleep end
  local verifiable = ngx_transport.can_verify(url)
  if o.transport == "ngx" then
    if not usable then return nil, "the ngx transport needs an nginx phase that allows cosockets" end
    if not verifiable then
      return nil, "nginx cannot verify a certificate for an IP address: use a host name or the curl transport"
    end
    return ngx_transport.perform, sleep
  end
  -- auto: cosockets, unless asked for what only libcurl does
  if usable and verifiable and not (o.ca_file or o.proxy) then return ngx_transport.perform, sleep end
  return self.curl, sleep
end

-- One request with the retry policy.  Returns the 2xx response, or nil, err.
function Transport:send(req)
  if not self.session:is_open() then
    return nil, util.new_error("invalid_argument", "the client is closed")
  end
  local perform, sleep = choose(self, req.url)
  if not perform then return nil, util.new_error("invalid_argument", sleep) end
  local creq = request_for(self, req)
  local attempts = 0
  local res, err
  while true do
    attempts = attempts + 1
    res, err = perform(creq)
    if res and res.status >= 200 and res.status < 300 then
      res.attempts = attempts
      return res
    end
    if res then err = http_error(res) end
    local wait, asked = wait_before(self, res, attempts)
    err.retry_after = asked
    if not may_retry(self, err, res) or attempts > self.opts.retries then break end
    if req.multipart and not req.multipart:rewind() then break end
    sleep(wait)
  end
  return finish(self, err, attempts)
end

-- A 2xx response whose body must be a JSON object.
function Transport:send_json(req)
  local res, err = self:send(req)
  if not res then return nil, err end
  local doc = decode_json(res.body)
  if type(doc) ~= "table" then
    return finish(self, util.new_error("protocol",
      format("the server's %d response is not a JSON object", res.status),
      { status = res.status }), res.attempts)
  end
  return doc, res
end

function Transport:protocol_error(res, message)
  return finish(self, util.new_error("protocol", message, { status = res.status }), res.attempts)
end

function Transport:fail(err)
  return finish(self, err, err.attempts or 0)
end

function Transport:close()
  self.session:close()
end

M.json = cjson

return M
