-- Handlers for spec/support/nginx/test.conf: each takes a JSON request
-- body, runs fileapi inside the worker and answers with a JSON summary.
local cjson = require "cjson"
local files = require "fileapi.files"
local conformance = require "conformance"
local causes = require "causes"
local group_body = require "group_body"

local M = {}

local shared -- one client per worker, as docs/nginx.md advises

function M.init_worker()
  shared = assert(files.new({ timeout = 30 }))
end

local function input()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  return body and cjson.decode(body) or {}
end

local function reply(doc)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(doc))
end

local function summary(item, err)
  if item then return { ok = true, id = item.id } end
  return { ok = false, kind = err.kind, message = err.message, attempts = err.attempts }
end

function M.conformance()
  reply(conformance.run(input()))
end

function M.causes()
  reply(causes.run(input()))
end

-- The group body the busted process runs too, here on light threads.
function M.group()
  reply(group_body.run(input()))
end

-- A call from a callback of a running call on the same client, and close()
-- from one: what the cosocket transport answers.
function M.reentrant()
  local spec = input()
  local client = assert(files.new({ base_url = spec.base_url, transport = spec.transport }))
  local nested
  local source = { data = string.rep("x", 200000), filename = "r.bin" }
  local item, err
  if spec.case == "mkdir" then
    item, err = client:upload(source, { on_progress = function()
      if not nested then nested = summary(client:mkdir("nested")) end
    end })
  elseif spec.case == "close" then
    item, err = client:upload(source, { on_progress = function() client:close() end })
    nested = summary(client:mkdir("after close"))
  elseif spec.case == "reader" then
    local done = false
    item, err = client:upload({ size = 3, filename = "r.txt", reader = function()
      if done then return nil end
      done = true
      nested = summary(client:mkdir("from reader"))
      return "abc"
    end })
  end
  reply({ outer = summary(item, err), nested = nested })
end

-- n light threads share the worker's client, each call held by the mock.
function M.concurrent()
  local spec = input()
  ngx.update_time()
  local started = ngx.now()
  local threads, results = {}, {}
  for i = 1, spec.n do
    threads[i] = ngx.thread.spawn(function() return shared:mkdir("c" .. i) end)
  end
  for i = 1, spec.n do
    local _, item, err = ngx.thread.wait(threads[i])
    results[i] = summary(item, err)
  end
  ngx.update_time()
  reply({ seconds = ngx.now() - started, results = results })
end

-- transport "auto" with an option only libcurl has: the worker is warned
-- (once) that it will block.
function M.blocking()
  local spec = input()
  local client = assert(files.new({ base_url = spec.base_url, ca_file = spec.ca_file }))
  local out = {}
  for i = 1, 2 do out[i] = summary(client:mkdir("blocking" .. i)) end
  client:close()
  reply(out)
end

-- One mkdir on this worker's paced client: every worker's client for the
-- key draws from the budget in the fileapi_rate shared dict.
local paced
function M.paced()
  local args = ngx.req.get_uri_args()
  paced = paced or assert(files.new({ timeout = 120, rate_limit_dict = "fileapi_rate",
    rate_window = tonumber(args.window) }))
  local item, err = paced:mkdir("paced")
  local out = summary(item, err)
  out.worker = ngx.worker.pid()
  reply(out)
end

-- One mkdir on this worker's fleet client for the query: the budget in the
-- store it names (?store=redis://...&window=3, and store_timeout, prefix,
-- on_unavailable, retries), over this nginx's own dict while the store is
-- away.  One client per query, made by its first request.
local fleets = {}
function M.fleet()
  local args = ngx.req.get_uri_args()
  local query = ngx.var.args or ""
  fleets[query] = fleets[query] or assert(files.new({ timeout = 120, retries = tonumber(args.retries) or 2,
    rate_limit_dict = "fileapi_rate", rate_window = tonumber(args.window),
    store = { url = args.store, timeout = tonumber(args.store_timeout), prefix = args.prefix,
      on_unavailable = args.on_unavailable } }))
  local t = ngx.now()
  local item, err = fleets[query]:mkdir("fleet")
  ngx.update_time()
  local out = summary(item, err)
  out.worker = ngx.worker.pid()
  out.seconds = ngx.now() - t
  if err then out.retryable, out.request_sent = err.retryable, err.request_sent end
  reply(out)
end

-- One mkdir on this worker's OAuth client, made from the first request's
-- tokens; every worker's client shares them through token_dict.
local oauth_client
function M.oauth_mkdir()
  local spec = input()
  if not oauth_client then
    oauth_client = assert(files.new({ base_url = spec.base_url, oauth_base_url = spec.oauth_base_url,
      oauth = spec.oauth, token_dict = "fileapi_tokens", timeout = 30, retries = 0, store = spec.store,
      on_tokens = function() ngx.log(ngx.WARN, "fileapi-test: on_tokens ran in this worker") end }))
  end
  local out = summary(oauth_client:mkdir("o"))
  out.worker = ngx.worker.pid()
  out.refreshes = oauth_client:token_info().refreshes
  reply(out)
end

-- Two clients of one grant in this worker, sharing its tokens through
-- token_dict, calling at once from light threads of their own: what each
-- told its on_event (the second finds the first's refresh under way).
function M.oauth_peers()
  local spec = input()
  local out, threads = { results = {} }, {}
  for i, name in ipairs({ "first", "second" }) do
    local evs = {}
    out[name] = evs
    local client = assert(files.new({ base_url = spec.base_url, oauth_base_url = spec.oauth_base_url,
      oauth = spec.oauth, token_dict = "fileapi_tokens", timeout = 30, retries = 0,
      on_event = function(ev) evs[#evs + 1] = ev end }))
    threads[i] = ngx.thread.spawn(function() return client:mkdir("peer" .. i) end)
  end
  for i = 1, 2 do
    local _, item, err = ngx.thread.wait(threads[i])
    out.results[i] = summary(item, err)
  end
  reply(out)
end

-- Two clients of this worker on one store and one on_event handler, made by
-- the first request of a `name` (the store's outages are told once per
-- handler); with `raise`, the handler raises on every event after recording
-- it.  Each request: one mkdir per client, and every event the handler was
-- told so far.
local watchers = {}
function M.store_events()
  local spec = input()
  local watched = watchers[spec.name]
  if not watched then
    local evs = {}
    local function on_event(ev)
      evs[#evs + 1] = ev
      if spec.raise then error("cannot count " .. ev.type .. " for " .. spec.api_key) end
    end
    local store = { url = spec.store, on_unavailable = spec.on_unavailable }
    watched = { evs = evs, clients = {} }
    watchers[spec.name] = watched
    for i = 1, 2 do
      watched.clients[i] = assert(files.new({ api_key = spec.api_key, base_url = spec.base_url, timeout = spec.timeout
        or 30, retries = 0, store = store, on_event = on_event }))
    end
  end
  local out = { results = {}, events = watched.evs }
  for i, c in ipairs(watched.clients) do out.results[i] = summary(c:mkdir("store" .. i)) end
  reply(out)
end

-- The tokens a worker's OAuth client is made from: the request's, or with
-- `load`, those an earlier refresh's on_tokens kept in the dict under that
-- name (`keep`), as the example's lazy per-worker clients are made.
local function oauth_tokens(spec)
  local saved = spec.load and ngx.shared.fileapi_tokens:get("saved:" .. spec.load)
  if not saved then return spec.oauth end
  local t = cjson.decode(saved)
  return { client_id = spec.oauth.client_id, client_secret = spec.oauth.client_secret,
    access_token = t.access_token, refresh_token = t.refresh_token, expires_at = t.expires_at }
end

-- One mkdir on this worker's OAuth client for the scenario the request
-- names (`name`), made at the worker's first request for it, with
-- token_dict and rate_limit_dict, and the store and the refresh lock's
-- lease (lock_ms, shortened for a spec) the request names; on_tokens keeps
-- the tokens (`keep`), and raises when asked to (its words then name the
-- new token and the client id).
local fleet_oauth = {}
function M.oauth_fleet()
  local spec = input()
  -- the lease knobs are the worker's: set for every request, as its scenario has them
  require("fileapi.store.tokens").LOCK_MS = spec.lock_ms or 30000
  require("fileapi.mijnklantportaal.token_dict").LEASE = (spec.lock_ms or 30000) / 1000
  local client = fleet_oauth[spec.name]
  if not client then
    client = assert(files.new({ base_url = spec.base_url, oauth_base_url = spec.oauth_base_url,
      oauth = oauth_tokens(spec), token_dict = "fileapi_tokens", rate_limit_dict = "fileapi_rate",
      rate_limit = spec.rate_limit, timeout = spec.timeout or 30, retries = spec.retries or 0, store = spec.store,
      on_tokens = function(t)
        ngx.log(ngx.WARN, "fileapi-test: on_tokens ran in this worker")
        if spec.keep then ngx.shared.fileapi_tokens:set("saved:" .. spec.keep, cjson.encode(t)) end
        if spec.on_tokens_raise then
          error("could not keep " .. t.refresh_token .. " of " .. spec.oauth.client_id .. " (disk full)")
        end
      end }))
    fleet_oauth[spec.name] = client
  end
  local started = ngx.now()
  local item, err = client:mkdir("o")
  ngx.update_time()
  local out = summary(item, err)
  out.oauth_error = err and err.oauth_error
  out.worker, out.refreshes, out.seconds = ngx.worker.pid(), client:token_info().refreshes, ngx.now() - started
  reply(out)
end

-- The owner's typical script inside a worker, over the chosen transport:
-- upload in chunks, share the folder, zip it to a path (a drop mid-archive
-- when the mock is told so: the zip starts over), a typed 200 error.
function M.drive()
  local spec = input()
  local drive = require "fileapi.drive"
  local d = assert(drive.new({ token = spec.token, base_url = spec.base_url, transport = spec.transport,
    timeout = 30, backoff = 0.01 }))
  local out = {}
  local file, err = d:upload({ data = string.rep("n", 250000), filename = "nginx.txt" },
    { parent_id = spec.folder, chunk_size = 100000 })
  out.upload = file and { ok = true, id = file.id, name = file.name } or summary(nil, err)
  local link
  link, err = d:share({ type = "folder", id = spec.folder }, { permission = "editor", expiration = 1 })
  out.share = link and { ok = true, link = link.link, expire_in = link.expire_in } or summary(nil, err)
  local res
  res, err = d:zip({ { type = "folder", id = spec.folder } }, spec.zip_path, { overwrite = true })
  out.zip = res and { ok = true, size = res.size } or summary(nil, err)
  out.missing = summary(d:rename({ type = "file", id = spec.missing }, "x"))
  out.missing.status = select(2, d:rename({ type = "file", id = spec.missing }, "x")).status
  d:close()
  reply(out)
end

-- Worker CPU seconds (utime + stime) from /proc/self/stat.
local function cpu_seconds()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("*l")
  f:close()
  local fields = {}
  for v in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = v end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

-- One upload or download in this worker over the chosen transport, with the
-- worker's CPU time it took (for make bench).
function M.cpu()
  local spec = input()
  local client = assert(files.new({ base_url = spec.base_url, transport = spec.transport, timeout = 600 }))
  local before = cpu_seconds()
  ngx.update_time()
  local started = ngx.now()
  local out
  if spec.upload then
    out = summary(client:upload(spec.upload))
  else
    local t = client.engine
    local res, err = t:send({ url = spec.download, sink = spec.path, overwrite = true })
    out = res and { ok = true, size = res.download.size } or { ok = false, kind = err.kind, message = err.message }
  end
  ngx.update_time()
  out.seconds = ngx.now() - started
  out.cpu = cpu_seconds() - before
  client:close()
  reply(out)
end

return M
