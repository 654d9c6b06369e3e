-- The HTTP engine every API module sends through: a client's kept-alive
-- libcurl sessions (fileapi.http.pool: one per call in flight, sharing
-- connections), the transport options, the choice of transport per
-- call (libcurl, or cosockets inside nginx), the rate budget, the retry
-- policy, streamed responses (their policy in fileapi.http.download), JSON
-- decoding and the mapping of an API's error bodies to error fields.
-- Calls go API module -> engine -> transport (core session or cosocket).
-- A fleet's store is handed in (opts.store, opened by
-- fileapi.client_options), never imported: its budget wraps this one.
-- Inside a function of a fileapi.group, transfers and waits let the group's
-- other functions run (fileapi.http.scheduler).  What happens on the way
-- (attempts, waits, refreshes, the store's outages) is told to on_event
-- (fileapi.http.events), from here and from those the engine is handed to.
local core = require "fileapi.core"
local cjson_module = require "cjson"
local util = require "fileapi.util"
local request = require "fileapi.http.request"
local cosocket = require "fileapi.http.cosocket"
local budget = require "fileapi.http.budget"
local download = require "fileapi.http.download"
local pool_module = require "fileapi.http.pool"
local scheduler = require "fileapi.http.scheduler"
local threads = require "fileapi.http.threads"
local options = require "fileapi.http.options"
local events = require "fileapi.http.events"
local kinds = require "fileapi.kinds"

local type, pairs, ipairs, setmetatable, pcall, error = type, pairs, ipairs, setmetatable, pcall, error
local tostring = tostring
local min, random = math.min, math.random
local now = core.now
local format = string.format
local running = coroutine.running

local cjson = cjson_module.new()
cjson.decode_max_depth(64)
cjson.decode_invalid_numbers(false)

local M = {}
local Transport = {}
Transport.__index = Transport

-- What a user could dump from a client (pairs) must not show a secret:
-- secrets live here, keyed by the transport, never in its fields.
local private = setmetatable({}, { __mode = "k" })

M.USER_AGENT = format("fileapi/%s libcurl/%s", core.version, core.curl_version)

-- Names, types, defaults and checks come from the one list (fileapi.http.options).
M.OPTION_NAMES = options.NAMES

-- Raises for wrong types (all of them first) and unknown names (`own`
-- lists the API module's names besides the transport's) at the line that
-- called the API module's function (`depth`: the calls in between, 0 when
-- it calls this itself); returns the normalised options, or nil and a
-- message for a bad value.  `store` is checked by the store itself
-- (fileapi.client_options does both).
function M.check_options(opts, fname, own, depth)
  depth = depth or 0
  util.check_keys(opts, fname, M.OPTION_NAMES, own or {}, 4 + depth)
  local wrong, expected = options.wrong_type(opts)
  if wrong then
    error(format("bad option '%s' to '%s' (%s expected, got %s)", wrong, fname, expected, type(opts[wrong])), 3 + depth)
  end
  local out, why = options.normalise(opts)
  if not out then return nil, why end
  return out
end

-- A call over libcurl on a session of the pool: on the group's multi
-- inside one of a group's functions, else run to its end here.
local function pooled(pool, creq)
  local session, err = pool:take()
  if not session then return nil, err end
  local ctx = scheduler.current()
  local ok, res, rerr
  if ctx and ctx.multi then
    ok, res, rerr = pcall(ctx.perform, ctx, session, creq)
  else
    ok, res, rerr = pcall(session.perform, session, creq)
  end
  pool:give(session)
  if not ok then error(res, 0) end
  return res, rerr
end

function M.new(opts, secrets, rate_key)
  local pool, err = pool_module.new()
  if not pool then return nil, err end
  if opts.proxy then
    local creds = opts.proxy:match("^%a[%w+.-]*://([^@/]*)@") or opts.proxy:match("^([^@/]*)@")
    if creds then util.add_secret(secrets, creds) end
  end
  local t = setmetatable({ opts = opts, calls = 0, active = setmetatable({}, { __mode = "k" }) }, Transport)
  private[t] = { secrets = secrets, proxy = opts.proxy, pool = pool,
    curl = function(creq) return pooled(pool, creq) end }
  opts.proxy = nil
  -- what the budgets call before they wait (nothing to call: no cost)
  if opts.on_wait or opts.on_event then
    t.announce = function(seconds, reason) t:waiting(seconds, reason or "rate_limit") end
  end
  t.budget = budget.new(opts, rate_key)
  if opts.store and t.budget then
    t.budget = opts.store:budget(t.budget, rate_key or "", opts)
    -- the store's outages, told once per handler however many clients share both
    if opts.on_event then opts.store:listen(opts.on_event, secrets, events.deliver) end
  end
  return t
end

-- Tells the on_event handler of ev, if there is one.  A handler that raises
-- never breaks the call (fileapi.http.events).
function Transport:emit(ev)
  local handler = self.opts.on_event
  if handler then events.deliver(handler, ev, private[self].secrets) end
end

-- The one place a wait is announced, whatever waits (the budgets, the
-- retries, the store, an OAuth refresh): on_wait(seconds, reason), then a
-- wait event.
function Transport:waiting(seconds, reason)
  local o = self.opts
  if o.on_wait then pcall(o.on_wait, seconds, reason) end
  if o.on_event then self:emit({ type = "wait", reason = reason, seconds = seconds }) end
end

-- A sibling for another host of the same client (OAuth's token endpoint
-- beside the API): these options with `changes` (values already valid),
-- the same secrets, a session and a budget of its own.
function Transport:derive(changes, rate_key)
  local opts = {}
  for k, v in pairs(self.opts) do opts[k] = v end
  opts.proxy = private[self].proxy
  for k, v in pairs(changes) do opts[k] = v end
  return M.new(opts, private[self].secrets, rate_key)
end

-- What the budget counts by changed (an OAuth grant's name, learnt from
-- its shared record): the next requests count under the new name.
function Transport:rekey(rate_key)
  if self.budget and self.budget.rekey then self.budget:rekey(rate_key) end
end

-- The Authorization header of a fixed credential (an API key): nothing to
-- refresh.  OAuth clients hold a keeper (fileapi.mijnklantportaal.oauth_keeper)
-- in its place.
function M.static_auth(header)
  return { refreshable = false, header = function() return header end }
end

-- A value met on the way that must not show in errors (a link's token or
-- password): one of the rotating secrets (util.add_secret).
function Transport:add_secret(value)
  util.add_secret(private[self].secrets, value, true)
end

-- How many secrets this client redacts with (bounded: see util.add_secret).
function Transport:secret_count()
  return #private[self].secrets
end

-- transport:rate_limit() -> { limit, remaining, reset } as the server last said, or nil
function Transport:rate_limit()
  return self.budget and self.budget:said()
end

-- A call ends aborted at its transport's next look when its client closes
-- or its group stops; cosockets look at this, the C core at the session.
local function stop_reason(self, ctx)
  return function()
    if self.closing then return "the client was closed by a callback during the call" end
    if ctx and ctx.stop then return scheduler.stop_error(ctx.stop).message end
    return nil
  end
end

local function request_for(self, req)
  local o = self.opts
  local method = req.method or "GET"
  local body = req.body
  if body == nil and not req.multipart and request.WITH_BODY[method] then body = "" end
  local length = req.multipart and req.multipart:length() or (body and #body) or 0
  local creq = {
    method = method, url = req.url, headers = req.headers, body = body,
    multipart = req.multipart, on_progress = req.on_progress,
    expect_continue = length >= request.EXPECT_THRESHOLD,
    cancelled = stop_reason(self, scheduler.current()),
  }
  -- the options the transports read travel in the request itself
  for _, opt in ipairs(options.REQUEST) do creq[opt.name] = o[opt.name] end
  creq.proxy = private[self].proxy
  creq.user_agent = o.user_agent or M.USER_AGENT
  return request.check(creq)
end

local function decode_json(body)
  local ok, value = pcall(cjson.decode, body)
  if ok then return util.normalize(value, cjson.null) end
  return nil
end
M.decode_json = decode_json

-- What an error says when the server's body said nothing.
function M.status_message(status)
  return format("the server answered HTTP %d", status)
end

-- The API's own words where it sent any: {message} and Laravel's {errors};
-- then the API module's own reading of its bodies (refine_error), if any.
local function http_error(self, res)
  local kind = kinds.for_status(res.status)
  local doc = decode_json(res.body)
  local message, fields, oauth_error
  if type(doc) == "table" then
    if type(doc.message) == "string" and doc.message ~= "" then message = doc.message end
    if type(doc.errors) == "table" then fields = doc.errors end
    -- an OAuth token endpoint's RFC 6749 5.2 body
    if type(doc.error) == "string" then oauth_error = doc.error end
    if not message and type(doc.error_description) == "string" and doc.error_description ~= "" then
      message = doc.error_description
    end
  end
  local err = util.new_error(kind, message or M.status_message(res.status), {
    status = res.status, fields = fields, oauth_error = oauth_error,
  })
  if self.refine_error and type(doc) == "table" then self.refine_error(err, doc) end
  return err
end

-- Decides whether another attempt is allowed, setting err.retryable.
-- Idempotent methods (RFC 9110 9.2.2) may go again after anything
-- transient; POST and PATCH only where the server cannot have acted: the
-- request never went out, or its body did not go out whole, or 429/503.
-- never_resend (files.ro's chunks): not even retry_unsafe sends again what
-- the server may have taken.
local function may_retry(self, err, res, method, never_resend)
  local status = res and res.status
  local idempotent = request.IDEMPOTENT[method]
  local safe
  if status then
    err.retryable = status == 429 or status >= 500
    safe = status == 429 or status == 503 or idempotent
  elseif err.kind == "network" or err.kind == "timeout" or (err.kind == "protocol" and err.partial) then
    err.retryable = err.kind ~= "protocol" or idempotent
    safe = idempotent or not err.request_sent or err.body_sent == false
  else
    err.retryable = false
  end
  return err.retryable and (safe or (self.opts.retry_unsafe and not never_resend))
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
  -- what a callback raised is the caller's own value: a table of theirs is
  -- handed back untouched, a string scrubbed like every message
  local cause = err.cause
  err.cause = nil
  util.redact(err, private[self].secrets)
  err.cause = type(cause) == "string" and util.redact(cause, private[self].secrets) or cause
  return nil, err
end

local warned_blocking = false

-- Where cosockets can be used (nginx handlers and timers) requests go over
-- them, unless told otherwise; everywhere else over libcurl.  Decided per
-- call: one client may serve init_by_lua and content handlers alike.  Waits
-- between attempts never block a worker that can yield.
local function choose(self, url)
  local o = self.opts
  local usable = cosocket.available()
  local ctx = scheduler.current()
  local sleep = ctx and ctx.sleep_fn or usable and cosocket.sleep or core.sleep
  local curl = private[self].curl
  if o.transport == "curl" then return curl, sleep end
  local verifiable = cosocket.can_verify(url)
  if o.transport == "ngx" then
    if not usable then return nil, "the ngx transport needs an nginx phase that allows cosockets" end
    if not verifiable then
      return nil, "nginx cannot verify a certificate for an IP address: use a host name or the curl transport"
    end
    return cosocket.perform, sleep
  end
  -- auto: cosockets, unless asked for what only libcurl does
  if usable and verifiable and not (o.ca_file or private[self].proxy) then return cosocket.perform, sleep end
  if usable and not warned_blocking then
    warned_blocking = true
    local ngx = rawget(_G, "ngx")
    ngx.log(ngx.WARN, "fileapi: ", (o.ca_file or private[self].proxy) and "ca_file or proxy" or "an https IP address",
      " needs libcurl, which blocks this worker while a request runs")
  end
  return curl, sleep
end

-- Runs the readers' rewind functions here, in Lua, so that they may yield
-- under cosockets; then the body starts over.
local function rewind_body(body)
  local fns, err = body:rewinders()
  if not fns then return nil, err end
  for _, fn in ipairs(fns) do
    local ok, verdict = pcall(fn)
    if not ok then
      local shown, text = pcall(tostring, verdict)
      return nil, util.new_error("callback", "rewind raised: " .. (shown and text or "(a value that cannot be shown)"),
        { cause = verdict })
    end
    if not verdict then return nil, util.new_error("io", "the reader's rewind failed") end
  end
  return body:restart()
end

-- ---- sending ---------------------------------------------------------------

-- A wait cut short: Ctrl-C, the group's cancel(), or the client's close().
local function interrupted(self)
  if self.closing then return util.new_error("aborted", "the client was closed during the call") end
  local ctx = scheduler.current()
  return scheduler.stop_error(ctx and ctx.stop or "interrupted")
end

-- After a 401 to an OAuth token (the server did not act): refresh once, and
-- say whether to send once more -- a body that cannot start over keeps the
-- 401.  Returns true, or false and the error to return.
local function reauthorize(self, req, used, sleep, err)
  local ok, aerr = self.auth:after_401(used, sleep, self.opts.timeout)
  if not ok then return false, aerr end
  if req.multipart then
    local rewound, rerr = rewind_body(req.multipart)
    if not rewound then
      err.rewind_error = rerr.message
      return false, err
    end
  end
  return true
end

-- After a failed attempt: whether to try again (having waited), or false
-- and the error to return.
local function retry_after_failure(self, req, method, res, err, attempts, sleep)
  local wait, asked = wait_before(self, res, attempts)
  err.retry_after = asked
  if self.closing or not may_retry(self, err, res, method, req.never_resend) or attempts > self.opts.retries
      or (req.deadline and core.time() + wait > req.deadline) then
    return false, err
  end
  if req.multipart then
    local ok, rerr = rewind_body(req.multipart)
    if not ok then
      err.rewind_error = rerr.message
      err.cause = err.cause or rerr.cause
      return false, err
    end
  end
  if self.announce then self:waiting(wait, asked and "retry_after" or "backoff") end
  if sleep(wait) == false then return false, interrupted(self) end -- Ctrl-C, cancel(), close()
  return true
end

-- The headers of one attempt: the request's own, and the Authorization
-- header of the moment (before Accept, where the API modules always had it).
local function with_header(headers, extra)
  if not extra then return headers end
  local out, placed = {}, false
  for i = 1, #headers do
    if not placed and headers[i]:find("^Accept:") then
      out[#out + 1] = extra
      placed = true
    end
    out[#out + 1] = headers[i]
  end
  if not placed then out[#out + 1] = extra end
  return out
end

-- A request with a deadline (an OAuth refresh under its lock's lease): no
-- attempt outlives it, and no wait between attempts passes it.
local function within_deadline(self, creq, deadline)
  local left = deadline - core.time()
  if left <= 0 then return false end
  local whole = self.opts.timeout
  creq.timeout = (whole and whole > 0) and min(whole, left) or left
  return true
end

local function attempts_loop(self, req, perform, sleep)
  local creq = request_for(self, req)
  local d, derr
  if req.sink then
    d, derr = download.new(req)
    if not d then return nil, derr end
    creq.sink = d.file or d.writer
    creq.decide = download.decide_for(d)
    creq.on_received = download.received_for(d)
  end
  local base_headers = creq.headers or {}
  -- an OAuth client learns its grant's name, which its budget counts by,
  -- before its first slot is taken
  if req.auth and self.auth and self.auth.prepare then self.auth:prepare() end
  local attempts, reauthed = 0, false
  local res, err, used_auth
  local on_event, shown_url, started = self.opts.on_event, nil, nil
  while true do
    if req.deadline and not within_deadline(self, creq, req.deadline) then
      err = err or util.new_error("timeout", "no time was left for the request", { retryable = true })
      break
    end
    local go, too_long, why = true, nil, nil
    if self.budget then go, too_long, why = self.budget:acquire(sleep, self.announce) end
    if not go then
      err = why or too_long and util.new_error("rate_limited", format(
        "the rate limit allows the next request in %.0f s, longer than this client waits"
        .. " (rate_window, max_retry_wait)", too_long), { retryable = true, retry_after = too_long })
        or interrupted(self)
      break
    end
    if req.auth and self.auth then
      local aerr
      used_auth, aerr = self.auth:header(sleep, self.opts.timeout)
      if not used_auth then
        err = aerr
        break
      end
    end
    attempts = attempts + 1
    local headers = with_header(base_headers, used_auth)
    creq.headers = d and download.resume_headers(d, headers) or headers
    if on_event then started = now() end
    res, err = perform(creq)
    if on_event then
      shown_url = shown_url or events.url(req.url, private[self].secrets, req.signed)
      self:emit(events.request(creq.method, shown_url, attempts, res, err, now() - started))
    end
    if self.budget then
      if res then self.budget:observe(res.headers, res.status, sleep) end
      self.budget:done(res, err, sleep)
    end
    if d then download.settle(d, res or err) end
    if res and res.status >= 200 and res.status < 300 then break end
    if res then err = http_error(self, res) end
    local again
    if res and res.status == 401 and used_auth and self.auth.refreshable and not reauthed and not self.closing then
      reauthed = true
      again, err = reauthorize(self, req, used_auth, sleep, err)
    else
      again, err = retry_after_failure(self, req, creq.method, res, err, attempts - (reauthed and 1 or 0), sleep)
    end
    if not again then break end
  end
  if res and res.status >= 200 and res.status < 300 then
    res.attempts = attempts
    if d then
      if d.file then
        local ok, cerr = d.file:commit()
        if not ok then return finish(self, cerr, attempts) end
      end
      res.download = { size = d.offset, resumed = d.resumed }
    end
    return res
  end
  if d and d.file then d.file:abort() end
  return finish(self, err, attempts)
end

local MAIN = {} -- the key of the main thread where coroutine.running() is nil

local function busy_error()
  return nil, util.new_error("invalid_argument",
    "the client is busy: a call from inside one of its own callbacks")
end

-- One request with the retry policy.  Returns the 2xx response, or nil, err.
-- A call from one of this call's callbacks is refused: on the same thread
-- (libcurl's perform runs them on the caller's, cosockets on the light
-- thread's), or -- on a group's multi, whose callbacks run in its loop --
-- one of this client's sessions is the transfer the callback serves.
-- Other nginx light threads and other functions of a group may use the
-- client at the same time.
function Transport:send(req)
  if self.closing then
    return nil, util.new_error("invalid_argument", "the client is closed")
  end
  local key = running() or MAIN
  if self.active[key] or scheduler.in_callback_of(private[self].pool) then return busy_error() end
  local perform, sleep = choose(self, req.url)
  if not perform then return nil, util.new_error("invalid_argument", sleep) end
  self.active[key] = true
  self.calls = self.calls + 1
  local ok, res, err = pcall(attempts_loop, self, req, perform, sleep)
  self.active[key] = nil
  self.calls = self.calls - 1
  if not ok then error(res, 0) end
  return res, err
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

-- Calls in flight end with kind "aborted": from a callback of a running
-- call, that call once control is back in libcurl; on a group's multi, at
-- the next run; a call waiting (a backoff, the budget) at once.  Each
-- session closes once its call has returned.
function Transport:close()
  self.closing = true
  private[self].pool:close() -- the core defers a session's close while it runs a call
  for key in pairs(self.active) do
    if key ~= MAIN then scheduler.cut(key) end
  end
end

M.json = cjson

-- What runs a fileapi.group's functions here: light threads on cosockets
-- inside nginx, else coroutines on one libcurl multi handle.  -> runner |
-- nil, err
function M.group_runner()
  if cosocket.available() then return threads.new() end
  return scheduler.new()
end

-- The error a call stopped by its group (cancel, Ctrl-C) ends with.
M.stop_error = scheduler.stop_error

return M
