-- A fleet sharing one key through one Redis (`store`): 3 nginx instances
-- (own prefixes and ports, 2 workers each) and 2 plain-Lua processes.  The
-- mock allows 30 requests in any 3 s, so 300 calls take 27 s at best.
-- Tagged #fleet: the test run gives these their own stage, beside the
-- LuaJIT one (they are paced, so mostly idle).
local helper = require "helper"
local files = require "fileapi.files"
local core = require "fileapi.core"
local cjson = require "cjson"

local LIMIT, WINDOW = 30, 3
local socket_time = require("socket").gettime
local q = helper.sh_quote

local function ideal(calls) return (calls / LIMIT - 1) * WINDOW end

local results_of = helper.json_lines

-- How close the server saw the fleet come to its limit: the least time
-- between a request and the one LIMIT later, less the window (negative:
-- the server counted more than LIMIT in a window).  The budget's margin
-- less this is the spread of delays between taking a slot and arriving.
local function min_slack(mock, since)
  local at = {}
  for _, r in ipairs(mock:requests()) do
    if r.path == "/v1/files" and r.method == "POST" and r.at >= (since or 0) then at[#at + 1] = r.at end
  end
  table.sort(at)
  local least = math.huge
  for i = LIMIT + 1, #at do least = math.min(least, at[i] - at[i - LIMIT] - WINDOW) end
  return least
end

local function count(text, pattern)
  local _, n = text:gsub(pattern, "")
  return n
end

describe("a fleet sharing one budget through Redis #nginx #fleet", function()
  local mock, redis
  local nginxes = {}

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis()
    for i = 1, 3 do nginxes[i] = helper.start_test_nginx(mock, { workers = 2 }) end
  end)
  teardown(function()
    for _, n in ipairs(nginxes) do pcall(n.stop, n) end
    if redis then redis:stop() end
    mock:stop()
  end)
  before_each(function()
    mock:reset()
    mock:config({ rate_limit = LIMIT, rate_window = WINDOW })
    redis:cli({ "FLUSHALL" })
  end)

  -- Two plain-Lua members, `calls` each, starting at `at`.
  local function start_members(calls, at, doc, mode)
    local members = {}
    for i = 1, 2 do
      local out = helper.tmpname(".member")
      local env = ("FLEET_MODE=%s FLEET_CALLS=%d FLEET_START_AT=%.3f FLEET_DOC=%s"):format(mode or "paced", calls, at,
        q(cjson.encode(doc)))
      assert(os.execute(("env %s sh %s %s %s >%s 2>&1 &"):format(env, q(helper.root .. "/tools/with-paths.sh"),
        helper.lua, q(helper.support .. "/fleet_client.lua"), q(out))))
      members[i] = out
    end
    return members
  end

  -- `calls` curl requests spread over the three nginx, `parallel` at once,
  -- from `at`; returns the file its answers go to and the file that says done.
  local function start_nginx_calls(calls, query, parallel, at)
    local urls, out, done = helper.tmpname(".urls"), helper.tmpname(".curl"), helper.tmpname(".done")
    local f = assert(io.open(urls, "w"))
    for i = 1, calls do f:write(nginxes[(i - 1) % #nginxes + 1]:url("/fleet?" .. query), "\n") end
    f:close()
    local wait = math.max(0, at - core.time())
    assert(os.execute(("(sleep %.3f; xargs -P %d -n 1 sh -c 'curl -s --max-time 120 \"$0\"; echo' <%s >>%s; touch %s) &")
      :format(wait, parallel, q(urls), q(out), q(done))))
    return { out = out, done = done, urls = urls }
  end

  local function wait_all(members, calls, deadline, during)
    while core.time() < deadline do
      if during then during() end
      local finished = io.open(calls.done) ~= nil
      for _, m in ipairs(members) do
        if not (helper.read_file(m) or ""):find('{"done":true}', 1, true) then finished = false end
      end
      if finished then return true end
      core.sleep(0.1)
    end
    return false
  end

  -- Every call's result, the members' other output lines, and the files removed.
  local function collect(members, calls)
    local all, other = {}, {}
    for _, m in ipairs(members) do
      local r, o = results_of(helper.read_file(m) or "")
      for _, d in ipairs(r) do all[#all + 1] = d end
      other[#other + 1] = o
      os.remove(m)
    end
    local nginx_results = results_of(helper.read_file(calls.out) or "")
    for _, d in ipairs(nginx_results) do all[#all + 1] = d end
    for _, p in ipairs({ calls.out, calls.done, calls.urls }) do os.remove(p) end
    return all, other, nginx_results
  end

  local function failures(all)
    local bad = {}
    for _, d in ipairs(all) do
      if not d.ok then bad[#bad + 1] = cjson.encode(d) end
    end
    return bad
  end

  local function run(member_calls, nginx_calls, doc, query, during)
    local at = core.time() + 1.5
    local members = start_members(member_calls, at, doc)
    local calls = start_nginx_calls(nginx_calls, query, 30, at)
    local finished = wait_all(members, calls, at + 120, during)
    local elapsed = core.time() - at
    local all, other, via_nginx = collect(members, calls)
    assert.is_true(finished, "the fleet did not finish")
    return all, other, via_nginx, elapsed
  end

  it("300 calls from 3 nginx and 2 processes: zero 429s, within 1.15x the ideal 27 s #slow", function()
    local doc = { base_url = mock.mkp_url, api_key = helper.API_KEY, window = WINDOW, store = { url = redis:url() } }
    local all, _, via_nginx, elapsed = run(60, 180, doc, "window=" .. WINDOW .. "&store=" .. redis:url())
    local workers = {}
    for _, d in ipairs(via_nginx) do workers[d.worker or "?"] = true end
    local n = 0
    for _ in pairs(workers) do n = n + 1 end
    print(("      fleet: %d calls (%d through %d nginx workers) in %.2f s (ideal %d s, %.3fx), %d rejected;"
      .. " the closest the server saw: %.3f s to spare (margin %.2f s)"):format(#all, #via_nginx, n, elapsed,
      ideal(300), elapsed / ideal(300), mock:stats().rejected, min_slack(mock),
      require("fileapi.store.budget").margin(WINDOW)))
    assert.same({}, failures(all))
    assert.same(300, #all)
    assert.same(0, mock:stats().rejected)
    assert.is_true(n >= 4, n)
    assert.is_true(elapsed >= ideal(300) - 0.5 and elapsed <= ideal(300) * 1.15, elapsed)
  end)

  it("300 calls, Redis killed mid-way and started again: every call succeeds, one warning per process, pacing resumes #slow",
    function()
      local doc = { base_url = mock.mkp_url, api_key = helper.API_KEY, window = WINDOW, store = { url = redis:url() } }
      local started = socket_time()
      local killed, restarted = false, false
      local all, other, _, elapsed = run(60, 180, doc, "window=" .. WINDOW .. "&store=" .. redis:url(), function()
        local t = socket_time() - started
        if not killed and t > 10 then
          redis:kill()
          killed = true
        elseif killed and not restarted and t > 17 then
          redis:start()
          restarted = true
        end
      end)
      assert.is_true(killed and restarted)
      -- every process that ran while Redis was away warned once
      local per_member = {}
      for i, text in ipairs(other) do per_member[i] = count(text, "the store %(redis [^)]*%) is unavailable") end
      local per_worker = {}
      for _, n in ipairs(nginxes) do
        for pid in n:log_tail(100000):gmatch("%[warn%] (%d+)#%d+: [^\n]-the store %(redis") do
          per_worker[pid] = (per_worker[pid] or 0) + 1
        end
      end
      local warned_workers, most = 0, 0
      for _, c in pairs(per_worker) do
        warned_workers = warned_workers + 1
        most = math.max(most, c)
      end
      local log_entries = tonumber(redis:cli({ "EVAL", "local n = 0 for _, k in ipairs(redis.call('KEYS', '*:log'))"
        .. " do n = n + redis.call('ZCARD', k) end return n", 0 })) or 0
      print(("      Redis killed 8.5 s in, back 7 s later: %d calls in %.2f s (ideal %d s), %d failed, %d rejected"
        .. " (retried), warnings per member %s, %d nginx workers warned (at most %d each), %d sends in the new"
        .. " Redis's log"):format(#all, elapsed, ideal(300), #failures(all), mock:stats().rejected,
        table.concat(per_member, "/"), warned_workers, most, log_entries))
      local when = {}
      for i, at in ipairs(mock:stats().rejected_at) do when[i] = ("%.1f"):format(at - started) end
      print("      rejected at (s from the start): " .. table.concat(when, " "))
      assert.same({}, failures(all))
      assert.same(300, #all)
      -- while Redis is away each process keeps to its share (and in the first
      -- window to its own sends): safe, a little slower (measured 1.16x)
      assert.is_true(elapsed <= ideal(300) * 1.3, elapsed)
      -- each falls back to its share, and in the outage's first window to
      -- what it sent itself: measured 0 to 3 rejected, each retried
      assert.is_true(mock:stats().rejected <= 10, mock:stats().rejected)
      -- a member asleep in a wait while Redis was away never saw it go
      assert.is_true(per_member[1] <= 1 and per_member[2] <= 1 and per_member[1] + per_member[2] >= 1)
      assert.is_true(warned_workers >= 3, warned_workers)
      assert.same(1, most)
      assert.is_true(log_entries > 0, "the fleet did not go back to the store")
    end)

  it("Redis stopped (SIGSTOP): each call is late by at most the store's timeout and a little; then pacing resumes #slow",
    function()
      mock:config({ rate_limit = 100000, rate_window = WINDOW })
      -- the last test's sends leave every budget's window: what is measured
      -- here is the stalled store, not the pacing of a limit the mock dropped
      core.sleep(WINDOW + 0.5)
      local store = { url = redis:url(), timeout = 0.1 }
      local doc = { base_url = mock.mkp_url, api_key = helper.API_KEY, window = WINDOW, store = store }
      redis:signal("STOP")
      local ok, all = pcall(run, 20, 40, doc, "window=" .. WINDOW .. "&store_timeout=0.1&store=" .. redis:url())
      redis:signal("CONT")
      assert(ok, all)
      local slowest = 0
      for _, d in ipairs(all) do
        slowest = math.max(slowest, d.seconds or 99)
        if (d.seconds or 99) > 0.25 then print("      a slow call: " .. cjson.encode(d)) end
      end
      -- then the fleet paces together again: 90 calls at 30 per 3 s
      mock:config({ rate_limit = LIMIT, rate_window = WINDOW })
      -- the stopped phase's sends leave the server's window (its members are
      -- gone, and what they sent with them), and the store is tried again
      core.sleep(WINDOW + 0.5)
      local back = socket_time()
      local paced, _, _, elapsed = run(30, 30, doc, "window=" .. WINDOW .. "&store=" .. redis:url())
      print(("      Redis stopped: %d calls, the slowest %.3f s (store timeout 0.1 s); back: 90 calls in %.2f s"
        .. " (ideal %d s), %d rejected, %.3f s to spare"):format(#all, slowest, elapsed, ideal(90), mock:stats().rejected,
        min_slack(mock, back)))
      assert.same({}, failures(all))
      assert.same(80, #all)
      assert.is_true(slowest <= 0.1 + 0.15, slowest)
      assert.same({}, failures(paced))
      assert.same(0, mock:stats().rejected)
      -- for a window after the store's return, each process that was on its
      -- own needs its share as well as the store's slot: up to a window more
      assert.is_true(elapsed >= ideal(90) - 0.5 and elapsed <= ideal(90) * 1.15 + WINDOW + 0.5, elapsed)
    end)
end)

describe("OAuth tokens shared by a fleet through Redis #nginx #fleet #children", function()
  local mock, redis, nginx
  local CLIENT_ID, SECRET = "app_test", "app-secret-7f3k"

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis({ debug = true })
    nginx = helper.start_test_nginx(mock, { workers = 2 })
  end)
  teardown(function()
    if nginx then nginx:stop() end
    redis:signal("CONT")
    redis:stop()
    mock:stop()
  end)
  before_each(function()
    mock:reset()
    redis:signal("CONT")
    redis:cli({ "FLUSHALL" })
  end)

  local scenarios = 0

  -- A member's document: the grant's tokens, expiring at `expires_at`.
  local function doc_for(t, expires_at, store)
    return { base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, store = store, retries = 0,
      oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = t.access_token,
        refresh_token = t.refresh_token, expires_at = expires_at } }
  end

  -- o.members plain-Lua processes making o.calls calls each (o.doc.interval
  -- apart) and o.nginx_calls requests to nginx's /oauth_fleet (o.every
  -- apart, spread over its two workers), all from o.at; o.during(elapsed)
  -- is called every few hundredths of a second meanwhile.
  local function run_oauth(o)
    scenarios = scenarios + 1
    local log_before = #(helper.read_file(nginx.prefix .. "/error.log") or "") -- this scenario's lines come after
    local doc = o.doc
    doc.name = "scenario" .. scenarios
    local outs = {}
    for i = 1, o.members do
      outs[i] = helper.tmpname(".member")
      assert(os.execute(("env FLEET_MODE=oauth FLEET_CALLS=%d FLEET_START_AT=%.3f FLEET_DOC=%s sh %s %s %s >%s 2>&1 &")
        :format(o.calls, o.at, q(cjson.encode(doc)), q(helper.root .. "/tools/with-paths.sh"), helper.lua,
          q(helper.support .. "/fleet_client.lua"), q(outs[i]))))
    end
    local body, script, out, done = helper.tmpname(".json"), helper.tmpname(".sh"), helper.tmpname(".curl"),
      helper.tmpname(".done")
    local f = assert(io.open(body, "w"))
    f:write(cjson.encode(doc))
    f:close()
    f = assert(io.open(script, "w"))
    for i = 1, o.nginx_calls do
      f:write(("(sleep %.3f; curl -s --max-time 90 -X POST --data-binary @%s %s; echo) >>%s &\n"):format(
        math.max(0, o.at - core.time()) + (i - 1) * o.every, q(body), q(nginx:url("/oauth_fleet")), q(out)))
    end
    f:write(("wait; touch %s\n"):format(q(done)))
    f:close()
    assert(os.execute(("sh %s >/dev/null 2>&1 &"):format(q(script))))
    local texts
    repeat
      core.sleep(0.05)
      if o.during then o.during(core.time() - o.at) end
      texts = {}
      local finished = io.open(done) ~= nil
      for i, m in ipairs(outs) do
        texts[i] = helper.read_file(m) or ""
        if not texts[i]:find('{"done":true}', 1, true) then finished = false end
      end
    until finished or core.time() > o.at + (o.limit or 90)
    local r = { all = {}, bad = {}, texts = texts, on_tokens = 0 }
    for _, text in ipairs(texts) do
      for _, d in ipairs((results_of(text))) do r.all[#r.all + 1] = d end
      r.on_tokens = r.on_tokens + count(text, "on_tokens ran in this process")
    end
    for _, d in ipairs(results_of(helper.read_file(out) or "")) do r.all[#r.all + 1] = d end
    r.log = (helper.read_file(nginx.prefix .. "/error.log") or ""):sub(log_before + 1)
    r.on_tokens = r.on_tokens + count(r.log, "on_tokens ran in this worker")
    for _, p in ipairs(outs) do os.remove(p) end
    for _, p in ipairs({ body, script, out, done }) do os.remove(p) end
    for _, d in ipairs(r.all) do
      if not d.ok then r.bad[#r.bad + 1] = cjson.encode(d) end
    end
    r.stats = mock:stats()
    if os.getenv("FLEET_DEBUG") then
      for _, d in ipairs(r.all) do print("        " .. cjson.encode(d)) end
      for _, req in ipairs(mock:requests()) do
        if req.path == "/oauth/tokens" then print(("        token request at %.2f"):format(req.at - o.at)) end
      end
      print(("        took %.2f s"):format(core.time() - o.at))
    end
    print(("      %d calls from %d processes and nginx, %d failed, %d token request(s), %d refused, %d refresh"
      .. " token(s) sent again, on_tokens ran %d time(s)"):format(#r.all, o.members, #r.bad, r.stats.token_requests,
      r.stats.refresh_refused, r.stats.refresh_reused, r.on_tokens))
    assert.same(o.members * o.calls + o.nginx_calls, #r.all, table.concat(texts, "\n"))
    return r
  end

  local function token_posts()
    local n = 0
    for _, req in ipairs(mock:requests()) do
      if req.path == "/oauth/tokens" then n = n + 1 end
    end
    return n
  end

  local function keys(pattern)
    local n = 0
    for _ in redis:cli({ "KEYS", pattern }):gmatch("[^\n]+") do n = n + 1 end
    return n
  end

  it("5 processes and 2 nginx workers at the token's expiry: one token request, no failed call", function()
    mock:config({ oauth_rotate = true })
    local t = mock:oauth_grant()
    local at = core.time() + 2
    -- within REFRESH_AHEAD of its expiry when the calls start: every member needs a new token at once
    local doc = doc_for(t, at + 30, { url = redis:url() })
    local r = run_oauth({ members = 5, calls = 10, doc = doc, at = at, nginx_calls = 40, every = 0.02 })
    assert.same({}, r.bad)
    assert.same(1, r.stats.token_requests)
    assert.same(1, r.on_tokens)
    local everything = table.concat(r.texts, "\n") .. r.log
    local record = redis:cli({ "KEYS", "*:oauth:*:token" })
    assert.matches("^fileapi:oauth:{%x+}:token$", record)
    everything = everything .. redis:cli({ "HGETALL", record })
    for _, secret in ipairs({ SECRET, t.refresh_token, t.access_token }) do
      assert.is_nil(everything:find(secret, 1, true), "a secret in the store, a log or the output")
    end
  end)

  for _, mode in ipairs({ "local", "wait" }) do
    it(("on_unavailable = %q: every connection dropped (CLIENT KILL) and Redis stalled (DEBUG SLEEP) while a"
      .. " refresh is under way: still one token request, no failed call"):format(mode), function()
      mock:config({ oauth_rotate = true })
      local t = mock:oauth_grant()
      -- the refresh under the lock takes 2 s at the token endpoint: the store fails meanwhile,
      -- for the members waiting for the lock and for the holder's publishing alike
      mock:faults({ { type = "delay", seconds = 2, path = "/oauth/tokens" } })
      local at = core.time() + 2
      local doc = doc_for(t, at + 30, { url = redis:url(), on_unavailable = mode })
      -- the rate budget's own fallback is the store's spec: here the tokens only
      doc.interval, doc.rate_limit = 0.3, false
      local killed, stalled = false, false
      local r = run_oauth({ members = 3, calls = 6, doc = doc, at = at, nginx_calls = 12, every = 0.15,
        during = function(elapsed)
          if not killed and elapsed > 0.6 then
            killed = true
            redis:cli({ "CLIENT", "KILL", "TYPE", "normal" })
          elseif killed and not stalled and elapsed > 0.9 then
            stalled = true
            redis:cli({ "DEBUG", "SLEEP", "0.4" })
          end
        end })
      assert.is_true(killed and stalled)
      assert.same({}, r.bad)
      assert.same(1, r.stats.token_requests)
      assert.same(0, r.stats.refresh_refused)
      assert.same(1, r.on_tokens)
    end)
  end

  it("503s with a Retry-After that outlasts the refresh lock's lease: the lease bounds the refresh, and no refresh"
    .. " token is sent twice", function()
    mock:config({ oauth_rotate = true })
    local t = mock:oauth_grant()
    -- a 3 s lease (shortened for the spec; 30 s in use), and two 503s asking for 2 s each
    mock:faults({ { type = "status", status = 503, path = "/oauth/tokens", headers = { ["Retry-After"] = "2" },
      count = 2 } })
    local at = core.time() + 2
    local doc = doc_for(t, at + 30, { url = redis:url() })
    doc.lock_ms, doc.retries, doc.interval = 3000, 2, 0.5
    local r = run_oauth({ members = 2, calls = 8, doc = doc, at = at, nginx_calls = 12, every = 0.3 })
    assert.same(0, r.stats.refresh_reused)
    assert.same(0, r.stats.refresh_refused)
    -- two 503s, then the one refresh the endpoint acted on
    assert.same(3, token_posts())
    assert.same(1, r.stats.token_requests)
    -- the lock holder's refresh stopped short of the lease: its call says what the server said
    assert.is_true(#r.bad <= 1, table.concat(r.bad, "\n"))
    for _, line in ipairs(r.bad) do assert.matches('"kind":"server"', line) end
    assert.same(1, r.on_tokens)
  end)

  it("Redis stopped at the expiry: each member falls back and refreshes; the ones the server refused (their"
    .. " answers came late) take the winner's token from the record once Redis is back", function()
    mock:config({ oauth_rotate = true })
    local t = mock:oauth_grant()
    -- the second and third token requests are answered 5 s late: their refusal comes after Redis is back
    mock:faults({ { type = "delay", seconds = 5, path = "/oauth/tokens", skip = 1, count = 2 } })
    local at = core.time() + 2
    local doc = doc_for(t, at + 30, { url = redis:url(), on_unavailable = "local" })
    doc.interval, doc.rate_limit = 0.5, false
    redis:signal("STOP")
    local back = false
    local r = run_oauth({ members = 2, calls = 14, doc = doc, at = at, nginx_calls = 14, every = 0.5,
      during = function(elapsed)
        if not back and elapsed > 4.5 then
          back = true
          redis:signal("CONT")
        end
      end })
    assert.is_true(back)
    assert.same({}, r.bad)
    assert.same(3, r.stats.token_requests)
    assert.same(2, r.stats.refresh_refused)
    assert.same(1, r.on_tokens) -- where the refresh succeeded; the others took its token
    -- each member warned once that the store was away
    for _, text in ipairs(r.texts) do assert.same(1, count(text, "the store %(redis [^)]*%) is unavailable")) end
  end)

  it("Redis stopped at the expiry, and the nginx worker that refreshed alone gets no more requests: its token"
    .. " reaches the record once Redis is back, and a member built from the spent refresh token takes it", function()
    mock:config({ oauth_rotate = true })
    local t = mock:oauth_grant()
    local doc = doc_for(t, core.time() + 30, { url = redis:url(), on_unavailable = "local" })
    doc.rate_limit = false
    redis:signal("STOP")
    local r = run_oauth({ members = 0, calls = 0, doc = doc, at = core.time(), nginx_calls = 1, every = 0 })
    assert.same({}, r.bad)
    assert.same(1, r.stats.token_requests)
    redis:signal("CONT")
    -- no request reaches nginx meanwhile: what puts the token there is the worker's own doing
    local deadline = core.time() + 30
    while keys("*:oauth:*:token") == 0 and core.time() < deadline do core.sleep(0.1) end
    assert.same(1, keys("*:oauth:*:token"))
    r = run_oauth({ members = 1, calls = 2, doc = doc, at = core.time(), nginx_calls = 0, every = 0 })
    assert.same({}, r.bad)
    assert.same(1, r.stats.token_requests)
    assert.same(0, r.stats.refresh_refused)
  end)

  it("members built from the tokens on_tokens saved (a rotated refresh token) find the grant's record and"
    .. " budget: one refresh per expiry", function()
    mock:config({ oauth_rotate = true, oauth_token_ttl = 64 })
    local t = mock:oauth_grant()
    local saved, first_saves = nil, 0
    local first = assert(files.new({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0,
      store = { url = redis:url() }, on_tokens = function(new)
        saved, first_saves = new, first_saves + 1
      end,
      oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = t.access_token,
        refresh_token = t.refresh_token, expires_at = core.time() + 30 } }))
    assert(first:mkdir("first"))
    assert.same(1, mock:stats().token_requests)
    assert.are_not.equal(t.refresh_token, saved.refresh_token)
    -- the others are built from what on_tokens saved, as a worker made later or a machine
    -- restarted is; the token needs refreshing again 4 s after it was issued (REFRESH_AHEAD 60 s)
    local at = saved.expires_at - 60 + 0.3
    local doc = doc_for(saved, saved.expires_at, { url = redis:url() })
    doc.interval = 0.1
    local firsts = {}
    first_saves = 0
    local r = run_oauth({ members = 2, calls = 4, doc = doc, at = at, nginx_calls = 10, every = 0.05,
      during = function(elapsed)
        if elapsed > 0 and #firsts < 3 then
          local item, err = first:mkdir("first-again")
          firsts[#firsts + 1] = item and "ok" or tostring(err)
        end
      end })
    first:close()
    assert.same({ "ok", "ok", "ok" }, firsts)
    assert.same({}, r.bad)
    assert.same(2, r.stats.token_requests)
    assert.same(0, r.stats.refresh_refused)
    -- whoever got there first (on a loaded machine, `first` here may):
    -- one refresh, saved once
    assert.same(1, r.on_tokens + first_saves)
    assert.same(1, keys("*:oauth:*:token"))
    assert.same(1, keys("*:rate:*:log"))
  end)
end)
