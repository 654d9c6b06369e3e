-- fileapi.group: many calls at once through real sockets against the mock
-- (with added latency and its rate limit): at most N in flight and N
-- reached, every item once, results per handle, completion and spawn order,
-- cancel, shared connections, one client from several functions, the
-- re-entrancy rule, close(), Ctrl-C, no 429 under a stated limit, and the
-- same group body inside nginx.
local helper = require "helper"
local core = require "fileapi.core"
local fileapi = require "fileapi"
local group_body = require "group_body"
local concurrent = require("fileapi.http.scheduler").CONCURRENT

local function client(mock, extra)
  local opts = { api_key = helper.API_KEY, base_url = mock.mkp_url, timeout = 30 }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(fileapi.files.new(opts))
end

local function names_of(mock)
  local seen = {}
  for _, it in ipairs(mock:mkp_items()) do seen[it.name] = (seen[it.name] or 0) + 1 end
  return seen
end

describe("fileapi.group", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  it("checks its options: a wrong type raises, a bad number is invalid_argument", function()
    assert.has_error(function() fileapi.group({ parallel = "8" }) end,
      "bad option 'parallel' to 'group' (number expected, got string)")
    assert.has_error(function() fileapi.group({ paralel = 8 }) end, "bad option 'paralel' to 'group' (unknown option)")
    assert.has_error(function() fileapi.group(8) end)
    for _, n in ipairs({ 0, -1, 2.5, 0 / 0, 1001 }) do
      local g, err = fileapi.group({ parallel = n })
      assert.is_nil(g)
      assert.same("invalid_argument", err.kind)
    end
    local g = assert(fileapi.group())
    assert.same(4, g.parallel)
    assert.has_error(function() g:spawn("not a function") end, "bad argument #1 to 'spawn' (function expected, got string)")
    assert.same({}, g:wait())
  end)

  it("keeps errors and raises per handle; the others finish", function()
    mock:config({ latency = 0.1 })
    local mkp = client(mock)
    local g = assert(fileapi.group({ parallel = 2 }))
    local cause = { reason = "a table of the caller's" }
    g:spawn(function() return mkp:mkdir("a") end)
    g:spawn(function() error(cause) end)
    g:spawn(function() return mkp:mkdir("refused", { directory = "fsd_missing000000" }) end)
    g:spawn(function() error("plain words") end)
    g:spawn(function() return mkp:mkdir("b") end)
    local all = g:wait()
    assert.same("a", all[1][1].name)
    assert.is_nil(all[2][1])
    assert.same("callback", all[2][2].kind)
    assert.equal(cause, all[2][2].cause)
    assert.same("not_found", all[3][2].kind)
    assert.same(404, all[3][2].status)
    assert.same("callback", all[4][2].kind)
    assert.matches("plain words", all[4][2].message)
    assert.same("b", all[5][1].name)
    mkp:close()
  end)

  it("lets a function spawn more on its own group, and refuses wait() from inside it", function()
    local mkp = client(mock)
    local g = assert(fileapi.group({ parallel = 2 }))
    g:spawn(function()
      for i = 1, 3 do g:spawn(function() return mkp:mkdir("child" .. i) end) end
      return mkp:mkdir("parent")
    end)
    g:spawn(function() return g:wait() end)
    local all = g:wait()
    assert.same(5, #all)
    assert.same("parent", all[1][1].name)
    assert.same("callback", all[2][2].kind)
    assert.matches("would wait for itself", all[2][2].message)
    for i = 3, 5 do assert.same("child" .. (i - 2), all[i][1].name) end
    mkp:close()
  end)

  it("refuses a call from a callback of the client's own running call, not another function's", function()
    mock:config({ latency = 0.2 })
    local mkp, other = client(mock), client(mock)
    local g = assert(fileapi.group({ parallel = 3 }))
    local nested, elsewhere, from_reader
    local done = false
    g:spawn(function()
      return mkp:upload({ data = ("x"):rep(300000), filename = "p.bin" }, { on_progress = function()
        if nested then return end
        nested = { mkp:mkdir("nested") }
        elsewhere = { other:mkdir("other client") }
      end })
    end)
    g:spawn(function()
      return mkp:upload({ size = 3, filename = "r.txt", reader = function()
        if done then return nil end
        done = true
        from_reader = { mkp:mkdir("from reader") }
        return "abc"
      end })
    end)
    g:spawn(function() return mkp:mkdir("beside") end)
    local all = g:wait()
    for i = 1, 3 do assert(all[i][1], tostring(all[i][2])) end
    assert.is_nil(nested[1])
    assert.same("invalid_argument", nested[2].kind)
    assert.is_nil(from_reader[1])
    assert.same("invalid_argument", from_reader[2].kind)
    assert.same("other client", elsewhere[1].name)
    mkp:close()
    other:close()
  end)

  local function rate_limited_batch(config)
    local n, parallel, limit, window = 90, 8, 30, 3
    local cfg = { latency = 0.05, rate_limit = limit, rate_window = window }
    for k, v in pairs(config) do cfg[k] = v end
    mock:config(cfg)
    local mkp = client(mock, { rate_window = window })
    local g = assert(fileapi.group({ parallel = parallel }))
    local t = core.now()
    for i = 1, n do
      g:spawn(function() return mkp:upload({ data = ("r"):rep(1024), filename = "r" .. i .. ".txt" }) end)
    end
    local done = 0
    for _, res, err in g:results() do
      assert(res, tostring(err))
      done = done + 1
    end
    local elapsed = core.now() - t
    print(("\n      %d uploads, parallel %d, at %d per %d s: %.2f s (ideal %d s), %d answered 429"):format(n,
      parallel, limit, window, elapsed, (n / limit - 1) * window, mock:stats().rejected))
    assert.same(n, done)
    assert.same(0, mock:stats().rejected)
    assert.same(n, mock:stats().requests)
    -- paced, not merely lucky: the limit allows 30 per window
    assert.is_true(elapsed >= (n / limit - 1) * window, elapsed)
    assert.is_true(elapsed < 60, elapsed)
    mkp:close()
  end

  it("stays within a stated limit with many in flight: no 429 #waits", function()
    rate_limited_batch({})
  end)

  it("stays within a limit whose every answer names its reset: no 429 #waits", function()
    rate_limited_batch({ rate_reset_always = true })
  end)
end)

-- Lua 5.1 cannot yield from inside pcall, as the engine's waits do: there a
-- group runs its functions one at a time, each call blocking as it does
-- outside a group.  Everywhere else they run side by side.
if concurrent then
  describe("fileapi.group: calls side by side", function()
    local mock

    setup(function() mock = helper.start_mock() end)
    teardown(function() mock:stop() end)
    before_each(function() mock:reset() end)

    it("runs at most N calls on one client at once, reaches N, and does every item once", function()
      local latency, n, parallel = 0.3, 12, 4
      mock:config({ latency = latency })
      local mkp = client(mock)
      local g = assert(fileapi.group({ parallel = parallel }))
      local t = core.now()
      for i = 1, n do g:spawn(function() return mkp:mkdir("item" .. i) end) end
      local all = g:wait()
      local elapsed = core.now() - t
      print(("\n      %d mkdirs at %.1f s latency, parallel %d: %.2f s (one at a time: >= %.1f s)"):format(n, latency,
        parallel, elapsed, n * latency))
      for i, r in ipairs(all) do assert.same("item" .. i, r[1] and r[1].name, tostring(r[2])) end
      local stats = mock:stats()
      assert.same(parallel, stats.max_in_flight)
      assert.same(n, stats.requests)
      local seen = names_of(mock)
      for i = 1, n do assert.same(1, seen["item" .. i]) end
      assert.is_true(elapsed < n * latency * 0.75, elapsed)
      mkp:close()
    end)

    it("reports in completion order through results(), in spawn order through wait()", function()
      mock:config({ latency = 0.2 })
      local mkp = client(mock)
      local g = assert(fileapi.group({ parallel = 3 }))
      local handles = {
        g:spawn(function() -- three calls one after another: last
          for i = 1, 3 do assert(mkp:mkdir("slow" .. i)) end
          return "slow"
        end),
        g:spawn(function() return mkp:mkdir("one") end),
        g:spawn(function() return "at once", "second value" end),
      }
      local order = {}
      for h, res, err in g:results() do
        order[#order + 1] = h.index
        assert.equal(handles[h.index], h)
        if h.index == 3 then assert.same({ "at once", "second value" }, { res, err }) end
      end
      assert.same({ 3, 2, 1 }, order)
      local all = g:wait()
      assert.same("slow", all[1][1])
      assert.same("one", all[2][1].name)
      assert.same({ "at once", "second value" }, all[3])
      -- everything was reported once: the iterator is done
      for _ in g:results() do error("reported twice") end
      mkp:close()
    end)

    it("reuses connections: a second batch opens none, nor does a call outside the group", function()
      mock:config({ latency = 0.2 })
      local mkp = client(mock)
      for batch = 1, 2 do
        local g = assert(fileapi.group({ parallel = 4 }))
        for i = 1, 8 do g:spawn(function() return mkp:mkdir(batch .. "-" .. i) end) end
        for _, r in ipairs(g:wait()) do assert(r[1], tostring(r[2])) end
        assert.same(4, mock:stats().connections)
      end
      assert(mkp:mkdir("alone"))
      assert.same(4, mock:stats().connections)
      assert.same(4, mock:stats().max_in_flight)
      mkp:close()
    end)

    it("cancel: queued functions never start, a call in flight ends aborted, nothing more is sent", function()
      mock:config({ latency = 0.1 })
      mock:faults({ { type = "delay", seconds = 20, path = "/v1/files", skip = 1 } })
      local mkp = client(mock)
      local g = assert(fileapi.group({ parallel = 2 }))
      for i = 1, 6 do g:spawn(function() return mkp:mkdir("c" .. i) end) end
      local t = core.now()
      local first
      for h, res in g:results() do
        first = first or { h.index, res }
        g:cancel()
      end
      local all = g:wait()
      local elapsed = core.now() - t
      assert.truthy(first[2] and first[2].id)
      local other = first[1] == 1 and 2 or 1
      assert.same("aborted", all[other][2].kind)
      assert.is_true(all[other][2].cancelled)
      for i = 3, 6 do
        assert.same("aborted", all[i][2].kind)
        assert.matches("before it started", all[i][2].message)
      end
      assert.is_true(elapsed < 10, elapsed)
      assert.same(2, mock:stats().requests)
      -- a spawn after cancel never starts either
      local late = g:spawn(function() return mkp:mkdir("late") end)
      assert.same("aborted", g:wait()[late.index][2].kind)
      assert.same(2, mock:stats().requests)
      mkp:close()
    end)

    it("cancel cuts a Retry-After wait short #waits", function()
      mock:faults({ { type = "status", status = 503, headers = { ["Retry-After"] = "20" }, path = "/v1/files" } })
      local mkp = client(mock, { max_retry_wait = 30 })
      local g = assert(fileapi.group({ parallel = 2 }))
      local t = core.now()
      g:spawn(function() return mkp:mkdir("waits") end)
      g:spawn(function()
        assert(mkp:mkdir("then cancels"))
        g:cancel()
      end)
      local all = g:wait()
      assert.is_true(core.now() - t < 10)
      assert.same("aborted", all[1][2].kind)
      assert.is_true(all[1][2].cancelled)
      assert.same(2, mock:stats().requests)
      mkp:close()
    end)

    it("close() of a client ends its calls in flight in the group aborted", function()
      mock:faults({ { type = "delay", seconds = 20, path = "/v1/files" } })
      local mkp = client(mock)
      local share = assert(fileapi.shares.new({ token = helper.EDITOR_SHARE, base_url = mock.base }))
      local g = assert(fileapi.group({ parallel = 2 }))
      local t = core.now()
      g:spawn(function() return mkp:mkdir("held") end)
      g:spawn(function()
        assert(share:mkdir("first"))
        mkp:close()
      end)
      local all = g:wait()
      assert.is_true(core.now() - t < 10)
      assert.same("aborted", all[1][2].kind)
      assert.is_nil(all[2][2])
      local _, err = mkp:mkdir("after")
      assert.same("invalid_argument", err.kind)
      share:close()
    end)

    it("waits for one OAuth refresh in a function while the others wait their turn, then all go at once", function()
      mock:config({ latency = 0.5 })
      mock:faults({ { type = "delay", seconds = 0.5, path = "/oauth/tokens" } })
      local t = mock:oauth_grant()
      local mkp = assert(fileapi.files.new({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, timeout = 30,
        oauth = { client_id = helper.OAUTH_CLIENT_ID, client_secret = helper.OAUTH_CLIENT_SECRET,
          access_token = t.access_token, refresh_token = t.refresh_token, expires_at = math.floor(core.time() + 30) } }))
      local g = assert(fileapi.group({ parallel = 4 }))
      local started = core.now()
      for i = 1, 4 do g:spawn(function() return mkp:mkdir("o" .. i) end) end
      for _, r in ipairs(g:wait()) do assert(r[1], tostring(r[2])) end
      local elapsed = core.now() - started
      local stats = mock:stats()
      assert.same(1, stats.token_requests)
      assert.same(4, stats.max_in_flight)
      assert.same(1, mkp:token_info().refreshes)
      -- one refresh, then the four calls side by side: under the refresh and four calls one after another
      assert.is_true(elapsed < 0.5 + 4 * 0.5, elapsed)
      mkp:close()
    end)
  end)
else
  describe("fileapi.group where pcall cannot yield", function()
    local mock

    setup(function() mock = helper.start_mock() end)
    teardown(function() mock:stop() end)
    before_each(function() mock:reset() end)

    it("runs the functions one at a time, each to its end, with every result", function()
      mock:config({ latency = 0.1 })
      local mkp = client(mock)
      local g = assert(fileapi.group({ parallel = 4 }))
      for i = 1, 6 do g:spawn(function() return mkp:mkdir("one" .. i) end) end
      local order = {}
      for h, res, err in g:results() do
        assert(res, tostring(err))
        order[#order + 1] = h.index
      end
      assert.same({ 1, 2, 3, 4, 5, 6 }, order)
      assert.same(1, mock:stats().max_in_flight)
      assert.same(6, mock:stats().requests)
      mkp:close()
    end)
  end)
end
describe("fileapi.group and Ctrl-C #children #waits", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  it("ends every transfer, starts nothing more, and returns within 3 s", function()
    mock:config({ latency = 30 })
    local q = helper.sh_quote
    local script, pidfile, out = helper.tmpname(".lua"), helper.tmpname(".pid"), helper.tmpname(".out")
    finally(function()
      for _, p in ipairs({ script, pidfile, out }) do os.remove(p) end
    end)
    local f = assert(io.open(script, "w"))
    f:write([[
      local core = require "fileapi.core"
      local fileapi = require "fileapi"
      assert(core.catch_interrupts())
      local mkp = assert(fileapi.files.new({ api_key = "test-key", base_url = arg[1], timeout = 120 }))
      local g = assert(fileapi.group({ parallel = 4 }))
      for i = 1, 8 do g:spawn(function() return mkp:mkdir("held" .. i) end) end
      for i, r in ipairs(g:wait()) do print(i, r[2] and r[2].kind, r[2] and r[2].message) end
      os.exit(core.interrupted() and 130 or 1)
    ]])
    f:close()
    local inner = ("echo $$ > %s; exec sh %s %s %s %s"):format(q(pidfile), q(helper.root .. "/tools/with-paths.sh"),
      helper.lua, q(script), q(mock.mkp_url))
    assert(os.execute(("(sh -c %s >%s 2>&1; echo \"exit $?\" >>%s) &"):format(q(inner), q(out), q(out))))
    local at_once = concurrent and 4 or 1
    local deadline = core.now() + 20
    while mock:stats().in_flight < at_once and core.now() < deadline do core.sleep(0.05) end
    assert.same(at_once, mock:stats().in_flight)
    local text, elapsed = helper.interrupt(io.open(pidfile):read("*l"), out)
    print(("\n      Ctrl-C with 4 transfers in flight, 4 queued: exit after %.3f s"):format(elapsed))
    assert.is_true(elapsed < 3, elapsed)
    -- the four started end "interrupted" (on Lua 5.1 the three waiting behind the first send nothing)
    for i = 1, 4 do assert.matches("%f[%d]" .. i .. "\taborted\tinterrupted\n", text) end
    for i = 5, 8 do assert.matches(i .. "\taborted\tinterrupted before it started\n", text) end
    assert.matches("exit 130", text)
    assert.same(at_once, mock:stats().requests)
  end)
end)

describe("fileapi.group inside nginx #nginx", function()
  local mock, nginx

  setup(function()
    mock = helper.start_mock()
    nginx = helper.start_test_nginx(mock)
  end)
  teardown(function()
    if nginx then nginx:stop() end
    mock:stop()
  end)

  it("runs the same group body on light threads as on the multi, with the same results", function()
    local spec = { api_key = helper.API_KEY, base_url = mock.mkp_url, parallel = 3, n = 8, raise_at = 2, fail_at = 5 }
    local outs = {}
    for _, where in ipairs({ "lua", "nginx" }) do
      mock:reset()
      mock:config({ latency = 0.2 })
      local out, err
      if where == "lua" then
        out = group_body.run(spec)
      else
        out, err = helper.post_json(nginx:url("/group"), spec, 60)
        assert(out, tostring(err) .. "\n" .. nginx:log_tail())
      end
      local at_once = (where == "nginx" or concurrent) and 3 or 1
      assert.same(at_once, mock:stats().max_in_flight, where .. ": " .. require("cjson").encode(out))
      assert.same(7 + 1, mock:stats().requests, where) -- 6 uploads, the refused mkdir, one before cancel
      assert.is_true(out.same_handles, where)
      local completed = {}
      for _, i in ipairs(out.completed) do completed[#completed + 1] = i end
      table.sort(completed)
      assert.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, completed, where)
      outs[where] = { results = out.results, cancelled = out.cancelled }
    end
    assert.same("callback", outs.lua.results[2].kind)
    assert.same("raised 2", outs.lua.results[2].cause)
    assert.same("not_found", outs.lua.results[5].kind)
    assert.same("g8.txt", outs.lua.results[8].name)
    assert.same({ "ok", "aborted", "aborted" }, outs.lua.cancelled)
    assert.same(outs.lua, outs.nginx)
  end)
end)
