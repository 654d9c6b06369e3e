-- The C core's multi: many transfers at once in one thread, on sessions that
-- share connections, each keeping what session:perform promises (streaming,
-- callbacks one at a time under protection, re-entrancy refused, Ctrl-C).
local helper = require "helper"
local core = require "fileapi.core"
local cjson = require "cjson"

local q = helper.sh_quote

describe("core multi", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  local function mkdir_request(name, extra)
    local req = { method = "POST", url = mock.mkp_url .. "/files", body = cjson.encode({ directory = name }),
      headers = { "Authorization: Bearer " .. helper.API_KEY, "Content-Type: application/json" }, timeout = 30 }
    for k, v in pairs(extra or {}) do req[k] = v end
    return req
  end

  -- A body large enough for several progress reports.
  local function upload_request(name, extra)
    local body = assert(core.multipart({ { name = "file", filename = name, data = ("x"):rep(300000) } }))
    local req = { method = "POST", url = mock.mkp_url .. "/files", multipart = body, timeout = 30,
      headers = { "Authorization: Bearer " .. helper.API_KEY, "Content-Type: " .. body:content_type() } }
    for k, v in pairs(extra or {}) do req[k] = v end
    return req
  end

  -- Runs m until nothing is left; returns { [session] = { res, err } } and
  -- the sessions in the order they were reported.
  local function run_all(m, limit)
    local out, order = {}, {}
    local deadline = core.now() + (limit or 60)
    while m:count() > 0 do
      assert(core.now() < deadline, "the transfers did not end in time")
      for _, r in ipairs(assert(m:run(1))) do
        assert.is_nil(out[r[1]], "a transfer reported twice")
        out[r[1]] = { r[2], r[3] }
        order[#order + 1] = r[1]
      end
    end
    return out, order
  end

  local function sessions(n, share)
    local list = {}
    for i = 1, n do list[i] = assert(core.session(share)) end
    return list
  end

  it("runs N transfers on N sessions of one share at once", function()
    local n, latency = 8, 1
    mock:config({ latency = latency })
    local share = assert(core.share())
    local list, m = sessions(n, share), assert(core.multi())
    local t = core.now()
    for i, s in ipairs(list) do assert.is_true(m:add(s, mkdir_request("d" .. i))) end
    assert.same(n, m:count())
    local out = run_all(m)
    local elapsed = core.now() - t
    print(("\n      %d transfers at %.1f s latency: %.2f s (one after another: >= %d s)"):format(n, latency, elapsed,
      n * latency))
    for _, s in ipairs(list) do
      assert.same(201, out[s][1].status, tostring(out[s][2]))
      assert.matches('"id":"fsd_', out[s][1].body)
    end
    assert.same(0, m:count())
    local stats = mock:stats()
    assert.same(n, stats.max_in_flight)
    assert.same(n, stats.requests)
    assert.is_true(elapsed < n * latency * 0.6, elapsed)
    m:close()
  end)

  it("reuses the share's connections across its sessions, alone or at once", function()
    mock:config({ latency = 0.3 })
    local share = assert(core.share())
    local m = assert(core.multi())
    for _, s in ipairs(sessions(4, share)) do m:add(s, mkdir_request("a")) end
    run_all(m)
    assert.same(4, mock:stats().connections)
    -- other sessions of the same share: no new connection, on a multi or alone
    local second = sessions(4, share)
    for _, s in ipairs(second) do m:add(s, mkdir_request("b")) end
    for s, r in pairs(run_all(m)) do
      assert.same(201, r[1].status)
      assert.same(0, r[1].new_connections, tostring(s))
    end
    local alone = assert(core.session(share))
    assert.same(0, assert(alone:perform(mkdir_request("c"))).new_connections)
    assert.same(4, mock:stats().connections)
    assert.same(4, mock:stats().max_in_flight)
    -- a session without the share has connections of its own
    local other = assert(core.session())
    assert.same(1, assert(other:perform(mkdir_request("d"))).new_connections)
    assert.same(5, mock:stats().connections)
    -- the share's own close leaves its sessions sharing
    share:close()
    share:close()
    assert.same(0, assert(alone:perform(mkdir_request("e"))).new_connections)
    assert.has_error(function() core.session(share) end, "attempt to use a closed share")
    m:close()
  end)

  it("downloads to file sinks and writers, each its own bytes", function()
    local size = 3 * 1024 * 1024
    mock:faults({ { type = "file", size = size, path = "/conf", count = 4 } })
    local m, share = assert(core.multi()), assert(core.share())
    local list = sessions(4, share)
    local paths, sinks, chunks, received = {}, {}, {}, {}
    for i, s in ipairs(list) do
      local req = { url = mock.base .. "/conf/" .. i, decide = function(status) return status == 200 and "sink" or nil end,
        on_received = function(bytes) received[i] = bytes end }
      if i <= 3 then
        paths[i] = helper.tmpname(".bin")
        sinks[i] = assert(core.file_sink(paths[i]))
        req.sink = sinks[i]
      else
        chunks[i] = {}
        req.sink = function(chunk)
          chunks[i][#chunks[i] + 1] = chunk
          return true
        end
      end
      assert(m:add(s, req))
    end
    local out = run_all(m)
    local want = helper.sha256_of_pattern(size)
    for i, s in ipairs(list) do
      local res = assert(out[s][1], tostring(out[s][2]))
      assert.is_true(res.sunk)
      assert.same(size, res.received)
      assert.same(size, received[i])
      if sinks[i] then
        assert(sinks[i]:commit())
        assert.same(want, helper.sha256(paths[i]))
        os.remove(paths[i])
      else
        local data = table.concat(chunks[i])
        assert.same(size, #data)
        assert.same(("0123456789abcdef"):rep(4), data:sub(1, 64))
      end
    end
    m:close()
  end)

  it("a callback that raises ends only its own transfer, its raise kept as err.cause", function()
    local m = assert(core.multi())
    local list = sessions(3)
    local raised = { mine = true }
    for i, s in ipairs(list) do
      local extra = i == 2 and { on_progress = function() error(raised) end } or { on_progress = function() end }
      assert(m:add(s, upload_request("f" .. i, extra)))
    end
    local out = run_all(m)
    assert.same(201, out[list[1]][1].status)
    assert.same(201, out[list[3]][1].status)
    local err = out[list[2]][2]
    assert.is_nil(out[list[2]][1])
    assert.same("callback", err.kind)
    assert.equal(raised, err.cause)
    assert.matches("on_progress raised", err.message)
    -- each session works after
    for _, s in ipairs(list) do assert.same(201, assert(s:perform(mkdir_request("after"))).status) end
  end)

  it("on_progress returning false aborts only its own transfer", function()
    local m = assert(core.multi())
    local list = sessions(3)
    for i, s in ipairs(list) do
      assert(m:add(s, upload_request("g" .. i, { on_progress = function() return i ~= 1 end })))
    end
    local out = run_all(m)
    assert.same("aborted", out[list[1]][2].kind)
    assert.matches("progress callback returned false", out[list[1]][2].message)
    assert.same(201, out[list[2]][1].status)
    assert.same(201, out[list[3]][1].status)
  end)

  it("refuses calls back into the multi or a busy session from a callback; other clients work", function()
    local m = assert(core.multi())
    local a, b, idle, other = assert(core.session()), assert(core.session()), assert(core.session()),
      assert(core.session())
    local seen
    assert(m:add(b, mkdir_request("b")))
    assert(m:add(a, upload_request("a", { on_progress = function()
      if seen then return end
      seen = {
        run = { m:run(0) },
        add = { m:add(idle, mkdir_request("idle")) },
        own = { a:perform(mkdir_request("own")) },
        busy = { b:perform(mkdir_request("busy")) },
        other = { other:perform(mkdir_request("other")) },
      }
    end })))
    local out = run_all(m)
    assert.same(201, out[a][1].status)
    assert.same(201, out[b][1].status)
    for _, what in ipairs({ "run", "add", "own", "busy" }) do
      assert.is_nil(seen[what][1], what)
      assert.same("invalid_argument", seen[what][2].kind, what)
      assert.matches("busy", seen[what][2].message, 1, true)
    end
    assert.same(201, seen.other[1].status)
    -- outside callbacks: a session busy on a multi refuses perform and add
    assert(m:add(a, mkdir_request("again")))
    local res, err = a:perform(mkdir_request("beside"))
    assert.is_nil(res)
    assert.same("invalid_argument", err.kind)
    assert.matches("not over", err.message)
    assert.same("invalid_argument", select(2, m:add(a, mkdir_request("twice"))).kind)
    assert.same("invalid_argument", select(2, assert(core.multi()):add(a, mkdir_request("elsewhere"))).kind)
    run_all(m)
  end)

  it("current() names the session whose callback runs, nil anywhere else", function()
    local m = assert(core.multi())
    local a, b, other = assert(core.session()), assert(core.session()), assert(core.session())
    local seen = {}
    local body = assert(core.multipart({ { name = "file", filename = "r.txt", size = 3, reader = function()
      seen.reader = seen.reader or m:current()
      if seen.read then return nil end
      seen.read = true
      return "abc"
    end } }))
    assert(m:add(a, upload_request("a", { on_progress = function()
      seen.progress = seen.progress or m:current()
      -- a perform from the callback drives its own transfer: this multi's stays the one
      if not seen.nested then
        seen.nested = true
        other:perform(mkdir_request("nested", { on_progress = function() seen.inner = m:current() end }))
      end
    end })))
    assert(m:add(b, { method = "POST", url = mock.mkp_url .. "/files", multipart = body,
      headers = { "Authorization: Bearer " .. helper.API_KEY, "Content-Type: " .. body:content_type() } }))
    assert.is_nil(m:current())
    local out = run_all(m)
    assert.same(201, out[a][1].status)
    assert.same(201, out[b][1].status)
    assert.equal(a, seen.progress)
    assert.equal(b, seen.reader)
    assert.equal(a, seen.inner)
    assert.is_nil(m:current())
    m:close()
    assert.is_nil(m:current())
  end)

  it("a multipart body or a file sink serves one transfer at a time", function()
    local m = assert(core.multi())
    local a, b = assert(core.session()), assert(core.session())
    local req = upload_request("shared")
    assert(m:add(a, req))
    local res, err = m:add(b, req)
    assert.is_nil(res)
    assert.same("invalid_argument", err.kind)
    assert.matches("in use by another transfer", err.message)
    assert.same(1, m:count())
    assert.same(201, run_all(m)[a][1].status)
    assert.same(201, assert(b:perform(req)).status) -- free again, from its first byte
    local path = helper.tmpname(".bin")
    local sink = assert(core.file_sink(path))
    mock:faults({ { type = "file", size = 1000, path = "/conf", count = 2 } })
    local function download() return { url = mock.base .. "/conf/x", sink = sink, decide = function() return "sink" end } end
    assert(m:add(a, download()))
    assert.same("invalid_argument", select(2, m:add(b, download())).kind)
    run_all(m)
    sink:abort()
    os.remove(path)
  end)

  it("remove ends one transfer, reported as aborted by the next run; the others go on", function()
    mock:config({ latency = 1 })
    local m = assert(core.multi())
    local list = sessions(3)
    for i, s in ipairs(list) do assert(m:add(s, mkdir_request("r" .. i))) end
    assert.is_false(m:remove(assert(core.session())))
    assert.is_true(m:remove(list[2]))
    local t = core.now()
    local first = assert(m:run(5))
    assert.is_true(core.now() - t < 0.9, "the removed transfer was reported at once")
    assert.same(1, #first)
    assert.equal(list[2], first[1][1])
    assert.is_nil(first[1][2])
    assert.same("aborted", first[1][3].kind)
    assert.matches("removed", first[1][3].message)
    assert.is_false(m:remove(list[2]))
    local out = run_all(m)
    assert.same(201, out[list[1]][1].status)
    assert.same(201, out[list[3]][1].status)
    -- from a callback: the transfer ends once libcurl has returned
    mock:config({ latency = 0.5 })
    local stalled, mover = assert(core.session()), assert(core.session())
    assert(m:add(stalled, mkdir_request("stalled")))
    assert(m:add(mover, upload_request("mover", { on_progress = function() m:remove(stalled) end })))
    out = run_all(m)
    assert.same("aborted", out[stalled][2].kind)
    assert.same(201, out[mover][1].status)
    assert.same(201, assert(stalled:perform(mkdir_request("after"))).status)
  end)

  it("run waits at most its timeout, returns as soon as one finishes, and at once with nothing to do", function()
    local m = assert(core.multi())
    local t = core.now()
    assert.same({}, m:run())
    assert.same({}, m:run(5))
    assert.is_true(core.now() - t < 1)
    mock:config({ latency = 2 })
    local s = assert(core.session())
    assert(m:add(s, mkdir_request("slow")))
    t = core.now()
    assert.same({}, m:run(0.2))
    local waited = core.now() - t
    assert.is_true(waited >= 0.2 and waited < 1.5, waited)
    t = core.now()
    local done = m:run(30)
    assert.is_true(core.now() - t < 10)
    assert.same(201, done[1][2].status)
    assert.has_error(function() m:run(-1) end)
    assert.has_error(function() m:run("soon") end)
  end)

  it("keeps the request's values while it runs: the table may change or go", function()
    local m = assert(core.multi())
    local s = assert(core.session())
    local req = mkdir_request("kept")
    assert(m:add(s, req))
    req.body, req.headers, req.url = nil, nil, nil
    req = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    local out = run_all(m)
    assert.same(201, out[s][1].status)
    assert.same('{"directory":"kept"}', mock:last_request().body)
  end)

  it("keeps nothing of a transfer once it is reported, removed, or its multi closed", function()
    local weak = setmetatable({}, { __mode = "k" })
    local function tracked(name)
      local on_progress = function() end
      local req = upload_request(name, { on_progress = on_progress })
      weak[on_progress], weak[req.multipart] = true, true
      return req
    end
    local function left()
      collectgarbage()
      collectgarbage()
      local n = 0
      for _ in pairs(weak) do n = n + 1 end
      return n
    end
    local s, m = assert(core.session()), assert(core.multi())
    assert(s:perform(tracked("alone")))
    assert(m:add(s, tracked("reported")))
    run_all(m)
    assert.same(0, left())
    mock:config({ latency = 1 })
    assert(m:add(s, tracked("removed")))
    m:remove(s)
    assert.same(2, left()) -- until it is reported
    run_all(m)
    assert.same(0, left())
    assert(m:add(s, tracked("closed")))
    m:close()
    assert.same(0, left())
  end)

  it("a session closed during its transfer ends it aborted and closes once reported", function()
    mock:config({ latency = 0.5 })
    local m = assert(core.multi())
    local a, b, c = assert(core.session()), assert(core.session()), assert(core.session())
    assert(m:add(a, mkdir_request("a")))
    assert(m:add(b, upload_request("b", { on_progress = function() b:close() end })))
    assert(m:add(c, mkdir_request("c")))
    a:close()
    assert.is_false(a:is_open())
    local out = run_all(m)
    assert.same("aborted", out[a][2].kind)
    assert.matches("closed during the call", out[a][2].message)
    assert.same("aborted", out[b][2].kind)
    assert.matches("closed by a callback", out[b][2].message)
    assert.same(201, out[c][1].status)
    assert.has_error(function() a:perform(mkdir_request("x")) end, "attempt to use a closed session")
    assert.has_error(function() m:add(b, mkdir_request("x")) end, "attempt to use a closed session")
  end)

  it("closing a multi with transfers running leaves its sessions usable", function()
    mock:config({ latency = 1 })
    local m = assert(core.multi())
    local list = sessions(3)
    for i, s in ipairs(list) do assert(m:add(s, upload_request("c" .. i))) end
    assert.same({}, m:run(0.1))
    m:close()
    m:close()
    assert.has_error(function() m:run(0) end, "attempt to use a closed multi")
    assert.matches("closed", tostring(m))
    mock:config({ latency = cjson.null })
    for _, s in ipairs(list) do assert.same(201, assert(s:perform(mkdir_request("after"))).status) end
    -- dropped unclosed, transfers and all
    local dropped = assert(core.multi())
    for _, s in ipairs(list) do assert(dropped:add(s, mkdir_request("dropped"))) end
    dropped = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    for _, s in ipairs(list) do assert.same(201, assert(s:perform(mkdir_request("after gc"))).status) end
    -- closed from a callback: this run reports every transfer, then it closes
    local closing = assert(core.multi())
    mock:config({ latency = 1 })
    assert(closing:add(list[1], mkdir_request("waits")))
    assert(closing:add(list[2], upload_request("closer", { on_progress = function() closing:close() end })))
    local out = run_all(closing)
    for i = 1, 2 do
      assert.same("aborted", out[list[i]][2].kind)
      assert.matches("multi was closed", out[list[i]][2].message)
    end
    assert.same(0, closing:count())
    assert.has_error(function() closing:add(list[3], mkdir_request("x")) end, "attempt to use a closed multi")
  end)

  it("raises for wrong types, before anything starts", function()
    local m, s = assert(core.multi()), assert(core.session())
    assert.has_error(function() m:add(s) end)
    assert.has_error(function() m:add({}, mkdir_request("x")) end)
    assert.has_error(function() m:add(s, { url = 1 }) end)
    assert.has_error(function() m:remove("x") end)
    assert.has_error(function() core.session("not a share") end)
    local _, err = m:add(s, { url = "file:///etc/passwd" })
    assert.same("invalid_argument", err.kind)
    assert.same(0, m:count())
    assert.same(201, assert(s:perform(mkdir_request("fine"))).status)
  end)

  it("streams uploads from files in constant memory, several at once #children", function()
    local n, size = 4, 64 * 1024 * 1024
    mock:config({ latency = 0.5 }) -- all of them in flight before any body is read
    local dir = helper.tmpname(".up")
    assert(os.execute(("mkdir -p %s"):format(q(dir))))
    for i = 1, n do assert(os.execute(("truncate -s %d %s/f%d"):format(size, q(dir), i))) end
    local script = helper.tmpname(".lua")
    local f = assert(io.open(script, "w"))
    f:write([[
      local core = require "fileapi.core"
      local base, dir, n = arg[1], arg[2], tonumber(arg[3])
      local share, m = assert(core.share()), assert(core.multi())
      local calls = 0
      for i = 1, n do
        local body = assert(core.multipart({ { name = "file", filename = "f" .. i, path = dir .. "/f" .. i } }))
        assert(m:add(assert(core.session(share)), { method = "POST", url = base .. "/files", multipart = body,
          headers = { "Authorization: Bearer test-key", "Content-Type: " .. body:content_type() },
          on_progress = function() calls = calls + 1 end }))
      end
      local ok = 0
      while m:count() > 0 do
        for _, r in ipairs(m:run(1)) do
          assert(r[2] and r[2].status == 201, tostring(r[3]))
          ok = ok + 1
        end
      end
      local hwm
      for line in io.lines("/proc/self/status") do hwm = hwm or line:match("^VmHWM:%s*(%d+) kB") end
      io.write(ok, " ", hwm, " ", calls)
    ]])
    f:close()
    local code, out = helper.run_lua(q(script) .. " " .. q(mock.mkp_url) .. " " .. q(dir) .. " " .. n)
    os.remove(script)
    os.execute("rm -rf " .. q(dir))
    assert.same(0, code, out)
    local ok, hwm = out:match("^(%d+) (%d+) %d+$")
    assert.same(n, tonumber(ok), out)
    print(("\n      %d uploads of 64 MiB at once: peak RSS %.1f MiB"):format(n, tonumber(hwm) / 1024))
    assert.is_true(tonumber(hwm) < 48 * 1024, "peak RSS " .. hwm .. " kB")
    for _, rec in ipairs(mock:requests()) do assert.same(size, rec.parts[1].size) end
    assert.same(n, mock:stats().max_in_flight)
  end)

  it("Ctrl-C ends every transfer within a moment, each aborted #children", function()
    mock:faults({ { type = "stall", seconds = 30, count = 3 } })
    local script, pidfile, out = helper.tmpname(".lua"), helper.tmpname(".pid"), helper.tmpname(".out")
    local f = assert(io.open(script, "w"))
    f:write([[
      local core = require "fileapi.core"
      assert(core.catch_interrupts())
      local share, m = assert(core.share()), assert(core.multi())
      for i = 1, 3 do
        assert(m:add(assert(core.session(share)), { method = "POST", url = arg[1] .. "/files", body = "{}",
          headers = { "Authorization: Bearer test-key", "Content-Type: application/json" } }))
      end
      while m:count() > 0 do
        for _, r in ipairs(m:run(1)) do print(r[3] and r[3].kind, r[3] and r[3].message) end
      end
      os.exit(core.interrupted() and 130 or 1)
    ]])
    f:close()
    local inner = ("echo $$ > %s; exec sh %s %s %s %s"):format(q(pidfile), q(helper.root .. "/tools/with-paths.sh"),
      helper.lua, q(script), q(mock.mkp_url))
    assert(os.execute(("(sh -c %s >%s 2>&1; echo \"exit $?\" >>%s) &"):format(q(inner), q(out), q(out))))
    local deadline = core.now() + 20
    while #mock:requests() < 3 and core.now() < deadline do core.sleep(0.05) end
    assert.same(3, #mock:requests())
    local text, elapsed = helper.interrupt(io.open(pidfile):read("*l"), out)
    for _, p in ipairs({ script, pidfile, out }) do os.remove(p) end
    print(("\n      Ctrl-C with 3 stalled transfers: exit after %.3f s"):format(elapsed))
    assert.is_true(elapsed < 3, elapsed)
    local _, aborted = text:gsub("aborted\tinterrupted", "")
    assert.same(3, aborted, text)
    assert.matches("exit 130", text)
  end)
end)
