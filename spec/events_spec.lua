-- on_event: what a client tells of what it does -- each HTTP attempt, each
-- wait and its reason, each OAuth refresh and who did it, the fleet's store
-- going down and coming back -- from real transfers against the mock, a
-- real Redis and nginx (the cosocket transport's request events are in
-- spec/conformance_spec.lua's table too); and none of it carries a secret.
local helper = require "helper"
local cjson = require "cjson"
local core = require "fileapi.core"
local fileapi = require "fileapi"
local files = require "fileapi.files"
local group_body = require "group_body"

-- Every secret the scenarios used (those the services hand out are added
-- as they come), and every event they saw: the last test walks them all.
local SECRETS = { helper.API_KEY, helper.EDITOR_SHARE, helper.DRIVE_TOKEN, helper.DRIVE_PASSWORD,
  helper.OAUTH_CLIENT_ID, helper.OAUTH_CLIENT_SECRET }
local ALL = {}

local function secret(s)
  if type(s) == "string" and s ~= "" then SECRETS[#SECRETS + 1] = s end
  return s
end

-- A list of events and the handler that fills it.
local function recorder()
  local list = {}
  return list, function(ev)
    list[#list + 1] = ev
    ALL[#ALL + 1] = ev
  end
end

local function of_type(list, t)
  local out = {}
  for _, ev in ipairs(list) do
    if ev.type == t then out[#out + 1] = ev end
  end
  return out
end

-- "type:what" of each event (a wait's reason, an attempt's status or
-- kind, who refreshed, the store's state), for the order of things.
local function trace(list)
  local out = {}
  for i, ev in ipairs(list) do
    local what = ev.state or ev.reason or ev.status or ev.kind or ev.by
    out[i] = ev.type .. ":" .. (type(what) == "number" and ("%d"):format(what) or tostring(what))
  end
  return table.concat(out, " ")
end

-- Walks every field of every event (and of any table in one).
local function assert_no_secret(list)
  local function walk(v, where)
    if type(v) == "table" then
      for k, x in pairs(v) do
        walk(k, where .. "[key]")
        walk(x, where .. "." .. tostring(k))
      end
    elseif type(v) == "string" then
      for _, s in ipairs(SECRETS) do
        assert(not v:find(s, 1, true), ("a secret in %s: %s"):format(where, v:gsub(s:gsub("%p", "%%%0"), "<secret>")))
      end
    end
  end
  for i, ev in ipairs(list) do walk(ev, "event " .. i .. " (" .. tostring(ev.type) .. ")") end
end

local warnings_of = helper.warnings_of

describe("on_event", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  local function client(on_event, extra)
    return helper.mkp_client(mock, extra, { on_event = on_event, backoff = 0.01, timeout = 20 })
  end

  it("is an option of every constructor; a wrong type raises", function()
    assert.has_error(function() files.new({ api_key = "k", on_event = "print" }) end,
      "bad option 'on_event' to 'new' (function expected, got string)")
    for _, new in ipairs({ function(o) return require("fileapi.shares").new(o) end,
        function(o) return require("fileapi.drive").new(o) end }) do
      assert.has_error(function() new({ token = "t", on_event = 1 }) end)
      assert.truthy(new({ token = helper.EDITOR_SHARE, base_url = mock.base, on_event = function() end }))
    end
  end)

  it("request: one per attempt, its fields as the mock saw the transfer; reused on the kept-alive connection", function()
    local evs, on_event = recorder()
    local c = client(on_event)
    assert(c:mkdir("first"))
    -- a body of known length from the server
    local body = '{"id":"fsd_events000001","type":"directory","name":"second"}'
    mock:faults({ { type = "status", status = 201, body = body } })
    assert(c:mkdir("second"))
    local item = assert(c:upload({ data = ("u"):rep(100000), filename = "u.bin" }))
    local reqs = mock:requests()
    assert.same(3, #evs, trace(evs))
    for i, ev in ipairs(evs) do
      assert.same("request", ev.type)
      assert.same("POST", ev.method)
      assert.same(mock.mkp_url .. "/files", ev.url)
      assert.same(201, ev.status)
      assert.is_nil(ev.kind)
      assert.same(1, ev.attempt)
      assert.same(reqs[i].body_length, ev.bytes_sent)
      assert.is_true(ev.bytes_received > 0)
      assert.is_true(ev.seconds >= 0 and ev.seconds < 20, ev.seconds)
      assert.same(i > 1, ev.reused, "attempt " .. i)
    end
    assert.same(#body, evs[2].bytes_received)
    assert.is_true(evs[3].bytes_sent > 100000)
    assert.same(reqs[1].conn, reqs[3].conn)
    -- a download: the link, then the storage host's file by its signed URL, its query cut
    local dest = helper.tmpname(".dl")
    assert(c:download(item.id, dest))
    os.remove(dest)
    reqs = mock:requests()
    local fetched = reqs[#reqs]
    assert.truthy(fetched.storage)
    secret(fetched.query.token)
    assert.same(5, #evs)
    assert.same(mock.mkp_url .. "/files/" .. item.id .. "/download", evs[4].url)
    assert.same("http://127.0.0.1:" .. mock.storage_port .. "/storage/" .. item.id, evs[5].url)
    assert.same({ "GET", 200, 0, 100000 }, { evs[5].method, evs[5].status, evs[5].bytes_sent, evs[5].bytes_received })
    assert_no_secret(evs)
    c:close()
  end)

  it("a retry: attempt numbers, a failed attempt's status, the wait between them (retry_after)", function()
    local evs, on_event = recorder()
    local waits = {}
    local c = client(on_event, { on_wait = function(s, r) waits[#waits + 1] = { s, r } end })
    mock:faults({ { type = "status", status = 503, headers = { ["Retry-After"] = "0" } } })
    assert(c:mkdir("again"))
    assert.same("request:503 wait:retry_after request:201", trace(evs))
    assert.same({ 1, 2 }, { evs[1].attempt, evs[3].attempt })
    assert.same(0, evs[2].seconds)
    -- on_wait hears the same waits, from the same place
    assert.same({ { 0, "retry_after" } }, waits)
    c:close()
  end)

  it("backoff: after a refused connection (kind network, nothing sent) and after a 502 with retry_unsafe", function()
    local evs, on_event = recorder()
    local refused = assert(files.new({ api_key = helper.API_KEY, base_url = "http://127.0.0.1:" .. helper.closed_port()
      .. "/v1", retries = 1, backoff = 0.01, on_event = on_event }))
    local _, err = refused:mkdir("nowhere")
    assert.same("network", err.kind)
    assert.same("request:network wait:backoff request:network", trace(evs))
    assert.same({ 1, 2 }, { evs[1].attempt, evs[3].attempt })
    assert.same({ 0, 0, false }, { evs[1].bytes_sent, evs[1].bytes_received, evs[1].reused })
    assert.is_nil(evs[1].status)
    assert.is_true(evs[2].seconds > 0 and evs[2].seconds <= 0.01, evs[2].seconds)
    local evs2, on_event2 = recorder()
    local c = client(on_event2, { retry_unsafe = true })
    mock:faults({ { type = "status", status = 502 } })
    assert(c:mkdir("unsafe"))
    assert.same("request:502 wait:backoff request:201", trace(evs2))
    c:close()
  end)

  it("rate_limit: pacing within the mock's limit, the same waits on_wait hears #waits", function()
    mock:config({ rate_limit = 2, rate_window = 1 })
    local evs, on_event = recorder()
    local heard = {}
    local c = client(on_event, { rate_window = 1, on_wait = function(s, r) heard[#heard + 1] = { s, r } end })
    for i = 1, 4 do assert(c:mkdir("paced" .. i)) end
    local waits = of_type(evs, "wait")
    assert.is_true(#waits >= 1, trace(evs))
    assert.same(#waits, #heard)
    for i, w in ipairs(waits) do
      assert.same("rate_limit", w.reason)
      assert.is_true(w.seconds > 0 and w.seconds <= 2, w.seconds)
      assert.same({ w.seconds, w.reason }, heard[i])
    end
    assert.same(0, mock:stats().rejected)
    c:close()
  end)

  it("shares and drive: a share token in the path, a password, a link's token are never in an event", function()
    local evs, on_event = recorder()
    local share = assert(require("fileapi.shares").new({ token = helper.EDITOR_SHARE, base_url = mock.base,
      on_event = on_event }))
    assert(share:mkdir("Visited"))
    assert.matches("/api/v1/shares/%[REDACTED%]/items$", evs[1].url)
    local drive = require "fileapi.drive"
    local token = secret(assert(drive.login({ email = helper.DRIVE_EMAIL, password = helper.DRIVE_PASSWORD,
      base_url = mock.base, on_event = on_event })))
    assert.same("POST", evs[2].method)
    local d = assert(drive.new({ token = helper.DRIVE_TOKEN, base_url = mock.base, on_event = on_event }))
    local link = assert(d:share({ type = "folder", id = "22222222-2222-4222-8222-222222222222" },
      { permission = "editor", password = secret("link-pw-3x9") }))
    secret(link.token)
    -- another client, that did not make the link, revokes it by its token
    local other = assert(drive.new({ token = token, base_url = mock.base, on_event = on_event }))
    assert.is_true(other:revoke_shares({ link.token }))
    assert.matches("/api/v1/share/%[REDACTED%]$", evs[#evs].url)
    assert.same(4, #of_type(evs, "request"))
    assert_no_secret(evs)
    share:close()
    d:close()
    other:close()
  end)

  it("refresh: by self, before a call and after a 401, with rotating refresh tokens", function()
    mock:config({ oauth_rotate = true })
    local t = mock:oauth_grant()
    secret(t.access_token)
    secret(t.refresh_token)
    local evs, on_event = recorder()
    local c = assert(files.new({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0,
      on_event = on_event, on_tokens = function(new)
        secret(new.access_token)
        secret(new.refresh_token)
      end,
      oauth = { client_id = helper.OAUTH_CLIENT_ID, client_secret = helper.OAUTH_CLIENT_SECRET,
        access_token = t.access_token, refresh_token = t.refresh_token, expires_at = math.floor(core.time() + 30) } }))
    assert(c:mkdir("o1"))
    assert.same("request:200 refresh:self request:201", trace(evs))
    assert.same(mock.oauth_url .. "/oauth/tokens", evs[1].url)
    assert.is_true(evs[2].ok)
    assert.is_true(evs[2].seconds >= 0 and evs[2].seconds < 20)
    mock:oauth_expire()
    assert(c:mkdir("o2"))
    local after = {}
    for i = 4, #evs do after[#after + 1] = evs[i] end
    assert.same("request:401 request:200 refresh:self request:201", trace(after))
    assert.same({ 1, 2 }, { evs[4].attempt, evs[7].attempt })
    assert.same(2, c:token_info().refreshes)
    -- a refresh the server refuses: ok false, and the call fails
    mock:oauth_expire()
    mock:faults({ { type = "status", status = 400, path = "/oauth/tokens",
      body = '{"error":"invalid_grant","error_description":"gone"}' } })
    local _, err = c:mkdir("o3")
    assert.same("unauthorized", err.kind)
    local last = evs[#evs]
    assert.same({ "refresh", false, "self" }, { last.type, last.ok, last.by })
    assert_no_secret(evs)
    c:close()
  end)

  it("a handler that raises: the call succeeds, one warning (scrubbed), the handler still told", function()
    local told = 0
    local c = client(function(ev)
      told = told + 1
      error("cannot count " .. ev.type .. " for " .. helper.API_KEY)
    end)
    local said, item = warnings_of(function()
      local a = c:mkdir("one")
      assert(c:mkdir("two"))
      return a
    end)
    assert.same("one", item.name)
    assert.same(2, told)
    local _, n = said:gsub("on_event raised", "")
    assert.same(1, n, said)
    assert.matches("cannot count request for %[REDACTED%]", said)
    assert.is_nil(said:find(helper.API_KEY, 1, true))
    c:close()
  end)

  it("inside a group: every function's events, one at a time, before wait() returns", function()
    mock:config({ latency = 0.1 })
    local depth, overlapped, requests = 0, false, {}
    local c = client(function(ev)
      depth = depth + 1
      if depth > 1 then overlapped = true end
      if ev.type == "request" then requests[#requests + 1] = ev end
      depth = depth - 1
    end)
    local g = assert(fileapi.group({ parallel = 3 }))
    for i = 1, 6 do g:spawn(function() return c:mkdir("g" .. i) end) end
    for _, r in ipairs(g:wait()) do assert(r[1], tostring(r[2])) end
    assert.same(6, #requests)
    assert.is_false(overlapped)
    for _, ev in ipairs(requests) do assert.same(201, ev.status) end
    -- the same body the nginx test below runs on light threads
    local out = group_body.run({ api_key = helper.API_KEY, base_url = mock.mkp_url, parallel = 3, n = 8, raise_at = 2,
      fail_at = 5 })
    assert.same({ requests = 8, overlapped = false, not_found = 1 }, out.events)
    c:close()
  end)
end)

describe("on_event and the fleet's store", function()
  local mock, redis

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis({ password = "store-pw-81k" })
    secret("store-pw-81k")
  end)
  teardown(function()
    redis:stop()
    mock:stop()
  end)
  before_each(function() mock:reset() end)

  local function url(db) return ("redis://:store-pw-81k@127.0.0.1:%d/%d"):format(redis.port, db) end

  it("store: down (with its reason) when Redis is killed, up when it is back; once per handler", function()
    local evs, on_event = recorder()
    local store = { url = url(1) }
    local a = helper.mkp_client(mock, { store = store, on_event = on_event, retries = 0 })
    local b = helper.mkp_client(mock, { store = store, on_event = on_event, retries = 0 })
    assert(a:mkdir("up"))
    assert.same(0, #of_type(evs, "store"))
    redis:kill()
    local said = warnings_of(function()
      assert(a:mkdir("down"))
      assert(b:mkdir("down too"))
    end)
    assert.matches("unavailable", said)
    local st = of_type(evs, "store")
    assert.same(1, #st, trace(evs))
    assert.same("down", st[1].state)
    assert.is_true(type(st[1].reason) == "string" and #st[1].reason > 0)
    redis:start()
    -- the store is tried again a second after it failed
    core.sleep(require("fileapi.store").RETRY_AFTER + 0.1)
    assert(a:mkdir("back"))
    assert(b:mkdir("back too"))
    st = of_type(evs, "store")
    assert.same(2, #st, trace(evs))
    assert.same("up", st[2].state)
    assert_no_secret(evs)
    a:close()
    b:close()
  end)

  it('wait with reason store: on_unavailable = "wait" and a store that does not answer', function()
    local evs, on_event = recorder()
    local heard = {}
    local c = helper.mkp_client(mock, { timeout = 1.5, retries = 0, on_event = on_event,
      on_wait = function(_, r) heard[#heard + 1] = r end,
      store = { url = "redis://127.0.0.1:" .. helper.closed_port() .. "/0", on_unavailable = "wait" } })
    local said, _, err = warnings_of(function() return c:mkdir("w") end)
    assert.same("network", err.kind)
    assert.matches("unavailable", said)
    local waits = of_type(evs, "wait")
    assert.is_true(#waits >= 1, trace(evs))
    for _, w in ipairs(waits) do
      assert.same("store", w.reason)
      assert.is_true(w.seconds > 0 and w.seconds <= 1.01, w.seconds)
    end
    assert.same(#waits, #heard)
    assert.same("down", of_type(evs, "store")[1].state)
    assert.same(0, #of_type(evs, "request"))
    c:close()
  end)

  it("refresh by a peer: a client that finds the grant's refresh under way waits (reason refresh) and takes its token",
    function()
    local t = mock:oauth_grant()
    secret(t.access_token)
    secret(t.refresh_token)
    -- the token endpoint is slow: the second client meets the first's lock
    mock:faults({ { type = "delay", seconds = 0.5, path = "/oauth/tokens" } })
    local function oauth_client(on_event)
      -- (no rate budget: the fleet's would hold the second back until the
      -- first has heard the server, past the refresh)
      return assert(files.new({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0, timeout = 20,
        rate_limit = false, store = { url = url(2) }, on_event = on_event, on_tokens = function(new) secret(new.access_token) end,
        oauth = { client_id = helper.OAUTH_CLIENT_ID, client_secret = helper.OAUTH_CLIENT_SECRET,
          access_token = t.access_token, refresh_token = t.refresh_token, expires_at = math.floor(core.time() + 30) } }))
    end
    local first_evs, first_on = recorder()
    local second_evs, second_on = recorder()
    local first, second = oauth_client(first_on), oauth_client(second_on)
    local g = assert(fileapi.group({ parallel = 2 }))
    g:spawn(function() return first:mkdir("self") end)
    g:spawn(function() return second:mkdir("peer") end)
    for _, r in ipairs(g:wait()) do assert(r[1], tostring(r[2])) end
    assert.same(1, mock:stats().token_requests)
    assert.same("request:200 refresh:self request:201", trace(first_evs))
    assert.same("wait:refresh refresh:peer request:201", trace(second_evs))
    local wait, refresh = second_evs[1], second_evs[2]
    assert.is_true(wait.seconds > 0 and wait.seconds <= 20, wait.seconds)
    assert.is_true(refresh.ok)
    assert.is_true(refresh.seconds >= 0.3 and refresh.seconds < 20, refresh.seconds)
    assert_no_secret(first_evs)
    assert_no_secret(second_evs)
    first:close()
    second:close()
  end)
end)

describe("on_event inside nginx #nginx", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  it("refresh by a peer on token_dict, and a group's events on light threads", function()
    local nginx = helper.start_test_nginx(mock)
    local ok, err = pcall(function()
      local t = mock:oauth_grant()
      secret(t.access_token)
      secret(t.refresh_token)
      mock:faults({ { type = "delay", seconds = 0.5, path = "/oauth/tokens" } })
      local out = assert(helper.post_json(nginx:url("/oauth_peers"), { base_url = mock.mkp_url,
        oauth_base_url = mock.oauth_url, oauth = { client_id = helper.OAUTH_CLIENT_ID,
          client_secret = helper.OAUTH_CLIENT_SECRET, access_token = t.access_token, refresh_token = t.refresh_token,
          expires_at = math.floor(core.time() + 30) } }, 60))
      assert.is_true(out.results[1].ok and out.results[2].ok, cjson.encode(out))
      assert.same(1, mock:stats().token_requests)
      assert.same("request:200 refresh:self request:201", trace(out.first))
      assert.same("wait:refresh refresh:peer request:201", trace(out.second))
      for _, evs in ipairs({ out.first, out.second }) do
        for _, ev in ipairs(evs) do ALL[#ALL + 1] = ev end
        assert_no_secret(evs)
      end
      mock:reset()
      local g = assert(helper.post_json(nginx:url("/group"), { api_key = helper.API_KEY, base_url = mock.mkp_url,
        parallel = 3, n = 8, raise_at = 2, fail_at = 5 }, 60))
      assert.same({ requests = 8, overlapped = false, not_found = 1 }, g.events)
    end)
    local log = nginx:log_tail(40)
    nginx:stop()
    assert(ok, tostring(err) .. "\n" .. log)
  end)

  it("store: down and up once per handler, a wait for it, and a raising handler warned once, on cosockets", function()
    local redis = helper.start_redis({ password = "store-pw-nx7" })
    secret("store-pw-nx7")
    local nginx = helper.start_test_nginx(mock)
    local ok, err = pcall(function()
      local function call(doc)
        doc.api_key, doc.base_url = helper.API_KEY, mock.mkp_url
        local out = assert(helper.post_json(nginx:url("/store_events"), doc, 60))
        for i, r in ipairs(out.results) do assert(r.ok, "call " .. i .. ": " .. tostring(r.message)) end
        return out.events
      end
      local outage = { name = "outage", raise = true,
        store = ("redis://:store-pw-nx7@127.0.0.1:%d/3"):format(redis.port) }
      local evs = call(outage)
      assert.same("request:201 request:201", trace(evs))
      redis:kill()
      evs = call(outage)
      -- two clients on one store and one handler: one down event
      assert.same("request:201 request:201 store:down request:201 request:201", trace(evs))
      assert.is_true(#evs[3].reason > 0)
      redis:start()
      core.sleep(require("fileapi.store").RETRY_AFTER + 0.1)
      evs = call(outage)
      assert.same("request:201 request:201 store:down request:201 request:201 store:up request:201 request:201",
        trace(evs))
      for _, ev in ipairs(evs) do ALL[#ALL + 1] = ev end
      assert_no_secret(evs)
      -- the handler raised on each of its events: warned once, scrubbed
      local log = nginx:log_tail(400)
      local _, n = log:gsub("on_event raised", "")
      assert.same(1, n, log)
      assert.matches("cannot count request for %[REDACTED%]", log)
      assert.is_nil(log:find(helper.API_KEY, 1, true))
      assert.is_nil(log:find("store-pw-nx7", 1, true))
      -- a store that does not answer, waited for: wait events (reason store), no request
      local waited = assert(helper.post_json(nginx:url("/store_events"), { name = "wait", api_key = helper.API_KEY,
        base_url = mock.mkp_url, timeout = 1.5, on_unavailable = "wait",
        store = "redis://127.0.0.1:" .. helper.closed_port() .. "/0" }, 60))
      assert.same({ false, "network" }, { waited.results[1].ok, waited.results[1].kind })
      evs = waited.events
      local waits = of_type(evs, "wait")
      assert.is_true(#waits >= 1, trace(evs))
      for _, w in ipairs(waits) do
        assert.same("store", w.reason)
        assert.is_true(w.seconds > 0 and w.seconds <= 1.01, w.seconds)
      end
      assert.same(1, #of_type(evs, "store"))
      assert.same(0, #of_type(evs, "request"))
      for _, ev in ipairs(evs) do ALL[#ALL + 1] = ev end
    end)
    local log = nginx:log_tail(40)
    nginx:stop()
    redis:stop()
    assert(ok, tostring(err) .. "\n" .. log)
  end)

  -- The example's /metrics, scraped and parsed as Prometheus reads the
  -- text format: # HELP and # TYPE before each metric's samples.
  local function parse(text)
    local types, samples = {}, {}
    for line in text:gmatch("([^\n]*)\n") do
      local name, kind = line:match("^# TYPE ([%a_:][%w_:]*) (%a+)$")
      if name then
        assert.is_nil(types[name], "one TYPE line per metric: " .. name)
        types[name] = kind
      elseif not line:match("^# HELP [%a_:][%w_:]* .+$") then
        local metric, labels, value = line:match("^([%a_:][%w_:]*)(%b{}) (%S+)$")
        if not metric then
          metric, value = line:match("^([%a_:][%w_:]*) (%S+)$")
          labels = "{}"
        end
        assert(metric, "not a sample line: " .. line)
        assert(types[metric], "a sample before its TYPE: " .. line)
        local set = {}
        for k, v in labels:sub(2, -2):gmatch('([%a_][%w_]*)="([^"\\]*)",?') do set[#set + 1] = k .. "=" .. v end
        table.sort(set)
        local key = metric .. "{" .. table.concat(set, ",") .. "}"
        assert.is_nil(samples[key], "one sample per label set: " .. key)
        samples[key] = assert(tonumber(value), line)
      end
    end
    return types, samples
  end

  it("the example counts requests by status and waits by reason, and serves them as Prometheus text", function()
    -- the client's window as the mock's limit counts (the APIs': a minute)
    local nginx = helper.start_nginx(mock, { edit = function(conf)
      return (conf:gsub("client = { timeout = 30 }", "client = { timeout = 30, rate_window = 1 }"))
    end })
    local ok, err = pcall(function()
      local status, body = helper.http_get(nginx:url("/metrics"))
      assert.same(200, status)
      assert.same("", body)
      for i = 1, 3 do
        status = helper.http_get(nginx:url("/mkdir?name=M" .. i))
        assert.same(200, status)
      end
      mock:faults({ { type = "status", status = 503, path = "/v1/files", headers = { ["Retry-After"] = "0" } } })
      assert.same(200, (helper.http_get(nginx:url("/mkdir?name=Retried"))))
      -- a directory the API does not know: a 404, told by its status
      assert.same(200, (helper.http_get(nginx:url("/mkdir?name=Lost&dir=fsd_missing000000"))))
      -- the limit reached: the example's client waits for the server's reset
      mock:config({ rate_limit = 2, rate_window = 1 })
      for i = 1, 3 do assert.same(200, (helper.http_get(nginx:url("/mkdir?name=P" .. i)))) end
      local text
      status, text = helper.http_get(nginx:url("/metrics"))
      assert.same(200, status)
      local types, s = parse(text)
      for _, name in ipairs({ "fileapi_requests_total", "fileapi_waits_total", "fileapi_wait_seconds_total" }) do
        assert.same("counter", types[name], text)
      end
      assert.same(3 + 1 + 3, s['fileapi_requests_total{status=201}'], text)
      assert.same(1, s['fileapi_requests_total{status=503}'], text)
      assert.same(1, s['fileapi_requests_total{status=404}'], text)
      assert.same(1, s['fileapi_waits_total{reason=retry_after}'], text)
      assert.same(0, s['fileapi_wait_seconds_total{reason=retry_after}'], text)
      local paced = s['fileapi_waits_total{reason=rate_limit}']
      assert.is_true(paced and paced >= 1, text)
      assert.is_true(s['fileapi_wait_seconds_total{reason=rate_limit}'] > 0, text)
      -- what the mock answered, counted
      local total = 0
      for key, v in pairs(s) do
        if key:find("^fileapi_requests_total") then total = total + v end
      end
      assert.same(#mock:requests(), total)
    end)
    local log = nginx:log_tail(40)
    nginx:stop()
    assert(ok, tostring(err) .. "\n" .. log)
  end)
end)

describe("the events of every scenario above", function()
  it("carry no secret: every field of every event, against every secret used", function()
    assert.is_true(#ALL >= 40, #ALL)
    assert.is_true(#SECRETS >= 14, #SECRETS)
    assert_no_secret(ALL)
  end)
end)
