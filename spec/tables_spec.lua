-- The one list of transport options and the one list of error kinds, held
-- against every place that is made from them or must agree with them: the
-- generated files (the C core's headers, the tables and the reference's
-- calls in README.md and docs/: stale fails here), the engine's checks, the request contract, what the C core reads,
-- the cosocket transport, the command line.  An option or a kind added to
-- its list and not carried through fails here.
local helper = require "helper"
local core = require "fileapi.core"
local options = require "fileapi.http.options"
local kinds = require "fileapi.kinds"
local request = require "fileapi.http.request"
local engine = require "fileapi.http.engine"
local gen = dofile(helper.root .. "/tools/gen.lua")

local function set(list)
  local out = {}
  for _, v in ipairs(list) do out[v] = true end
  return out
end

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function sources(pattern)
  local p = assert(io.popen("cd " .. helper.sh_quote(helper.root) .. " && ls " .. pattern))
  local out = {}
  for path in p:lines() do out[#out + 1] = path end
  p:close()
  return out
end

local function lines(text)
  local out = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line end
  return out
end

-- The first line where two texts differ, to say where a stale file is.
local function first_difference(have, want)
  local h, w = lines(have), lines(want)
  for i = 1, math.max(#h, #w) do
    if h[i] ~= w[i] then return ("line %d: have %q, want %q"):format(i, tostring(h[i]), tostring(w[i])) end
  end
end

describe("the generated files", function()
  it("are what tools/gen.lua makes of the lists now", function()
    local stale = {}
    for _, file in ipairs(gen.FILES) do
      local have = assert(helper.read_file(helper.root .. "/" .. file.path))
      local want = file.make(have)
      if have ~= want then stale[#stale + 1] = file.path .. " (" .. first_difference(have, want) .. ")" end
    end
    if #stale > 0 then error("stale, run `make gen`:\n  " .. table.concat(stale, "\n  "), 0) end
  end)
end)

describe("the one list of transport options", function()
  it("the engine takes exactly the listed names, with the listed types, defaults and ranges", function()
    assert.same(keys(set(options.NAMES)), keys(set(engine.OPTION_NAMES)))
    local opts = assert(engine.check_options({}, "new"))
    for _, o in ipairs(options.LIST) do
      if o.name ~= "store" then assert.same(o.default, opts[o.name], o.name) end
      local wrong = (o.type == "number" and "x") or (o.type == "rate" and true) or 5
      assert.has_error(function() engine.check_options({ [o.name] = wrong }, "new") end, nil, o.name)
      if o.range then
        for _, v in ipairs({ o.range[1], o.range[2] }) do assert.truthy(engine.check_options({ [o.name] = v }, "new")) end
        for _, v in ipairs({ o.range[1] - 0.5, o.range[2] * 2, 0 / 0 }) do
          local ok, why = engine.check_options({ [o.name] = v }, "new")
          assert.is_nil(ok, o.name .. " = " .. v)
          assert.matches(o.name, why)
        end
      end
    end
  end)

  it("the request contract carries the options marked for the transports, and nothing else", function()
    local want = {}
    for k in pairs(request.CALL_FIELDS) do want[k] = true end
    for _, o in ipairs(options.REQUEST) do want[o.name] = true end
    assert.same(keys(want), keys(request.FIELDS))
  end)

  it("the C core reads exactly the request contract's fields (but cosockets' cancelled), options in list order", function()
    local c = set(core.request_fields())
    c.cancelled = true
    assert.same(keys(request.FIELDS), keys(c))
    local read_by_c, rows = {}, {}
    for _, name in ipairs(core.request_fields()) do
      if options.BY_NAME[name] then read_by_c[#read_by_c + 1] = name end
    end
    for _, o in ipairs(options.REQUEST) do
      if o.honoured:find("curl", 1, true) then rows[#rows + 1] = o.name end
    end
    assert.same(rows, read_by_c)
  end)

  it("the C core reads each of them: a wrong type raises, an option out of its range raises", function()
    local session = assert(core.session())
    local url = "http://127.0.0.1:" .. helper.closed_port() .. "/"
    local function perform(field, value)
      local req = { url = url, connect_timeout = 5 }
      req[field] = value
      return session:perform(req)
    end
    local res, err = perform("method", "GET")
    assert.is_nil(res)
    assert.same("network", err.kind)
    for _, field in ipairs(core.request_fields()) do
      -- expect_continue is read for its truth, as Lua reads any value
      if field ~= "expect_continue" then assert.has_error(function() perform(field, true) end, nil, field) end
      local o = options.BY_NAME[field]
      if o and o.range then
        assert.has_error(function() perform(field, o.range[2] * 2) end, "request: '" .. field .. "' is out of range")
        assert.has_error(function() perform(field, 0 / 0) end, "request: '" .. field .. "' is out of range")
        for _, v in ipairs(o.range) do
          local _, ferr = perform(field, v)
          assert.same("network", ferr.kind, field .. " = " .. v)
        end
      elseif o then
        assert.has_error(function() perform(field, "a\nb") end, "request: '" .. field .. "' has control characters")
      end
    end
    session:close()
  end)

  it("the cosocket transport reads every field its transports' options name", function()
    local text = assert(helper.read_file(helper.root .. "/lua/fileapi/http/cosocket.lua"))
    local used = {}
    for name in text:gmatch("creq%.([%w_]+)") do used[name] = true end
    local want = {}
    for k in pairs(request.CALL_FIELDS) do want[k] = true end
    for _, o in ipairs(options.REQUEST) do
      if o.honoured:find("ngx", 1, true) then want[o.name] = true end
    end
    assert.same(keys(want), keys(used))
  end)

  it("the command line's transport flags are the rows marked cli, passed on to the client", function()
    local cli_flags = {}
    local code, out = helper.run_lua(helper.sh_quote(helper.root .. "/bin/fileapi") .. " mkdir --help")
    assert.same(0, code)
    local cli_page = assert(helper.read_file(helper.root .. "/docs/cli.md"))
    local given = { quiet = true }
    for _, o in ipairs(options.CLI) do
      local flag = "--" .. o.name:gsub("_", "-")
      cli_flags[#cli_flags + 1] = flag
      assert.truthy(out:find(flag .. " <" .. o.name .. ">", 1, true), flag)
      assert.truthy(cli_page:find(flag, 1, true), "docs/cli.md names " .. flag)
      given[o.name] = o.type == "number" and 7 or "x"
    end
    assert.is_true(#cli_flags >= 5)
    local copts = require("fileapi.cli.clients").options(given, {})
    for _, o in ipairs(options.CLI) do assert.same(given[o.name], copts[o.name], o.name) end
  end)
end)

describe("the one list of error kinds", function()
  local names = {}
  for i, k in ipairs(kinds.LIST) do names[i] = k.kind end

  it("the C core knows exactly these kinds and refuses any other", function()
    assert.same(names, core.error_tables().kinds)
    assert.has_error(function() core.error({ kind = "oops", message = "x" }) end)
    for _, k in ipairs(names) do assert.truthy(core.error({ kind = k, message = "x" })) end
  end)

  it("C maps libcurl's results as the list says", function()
    local want = {}
    for _, k in ipairs(kinds.LIST) do
      if type(k.curl) == "table" then
        for _, c in ipairs(k.curl) do want[c] = k.kind end
      end
    end
    assert.same(want, core.error_tables().curl)
  end)

  it("the map of HTTP statuses is the list's alone: C has none", function()
    assert.is_nil(core.kind_for_status)
    for status = 100, 599 do
      local want
      for _, k in ipairs(kinds.LIST) do
        if type(k.statuses) == "table" and set(k.statuses)[status] then want = k.kind end
      end
      if status >= 200 and status < 300 then
        want = nil
      elseif not want then
        want = (status >= 500 and status < 600) and "server" or "http"
      end
      assert.same(want, kinds.for_status(status), status)
    end
  end)

  it("every kind named in the Lua sources is in the list (C's do not compile otherwise: FA_KIND)", function()
    local known, found = set(names), 0
    for _, path in ipairs(sources("lua/fileapi/*.lua lua/fileapi/*/*.lua")) do
      local text = assert(helper.read_file(helper.root .. "/" .. path))
      for _, pattern in ipairs({ 'new_error%("([%w_]+)"', 'kind = "([%w_]+)"', 'return "([%w_]+)", "',
          '[^:%w_]fail%("([%w_]+)"', 'return nil, "([%w_]+)", "' }) do
        for kind in text:gmatch(pattern) do
          found = found + 1
          assert.truthy(known[kind], path .. ": " .. kind)
        end
      end
    end
    assert.is_true(found > 30, found)
  end)

  it("the command line's exit statuses and help come from the list", function()
    local cli = require "fileapi.cli"
    for _, k in ipairs(kinds.LIST) do assert.same(k.exit, cli.EXIT[k.kind], k.kind) end
    local code, out = helper.run_lua(helper.sh_quote(helper.root .. "/bin/fileapi") .. " --help")
    assert.same(0, code)
    local flat = out:gsub("%s+", " ")
    assert.truthy(flat:find(kinds.exit_summary():gsub("%s+", " "), 1, true), out)
  end)
end)

-- The reference's lists of calls are made from the `--- ` lines above each
-- public function (tools/gen.lua): every function a user can reach has one,
-- and every call a line names is there.
describe("the reference's calls", function()
  local function objects()
    local fileapi = require "fileapi"
    local client = assert(fileapi.files.new({ api_key = "k" }))
    local share = assert(fileapi.shares.new({ token = "t" }))
    local d = assert(fileapi.drive.new({ token = "1|t" }))
    return { fileapi = fileapi, files = fileapi.files, shares = fileapi.shares, drive = fileapi.drive,
      client = getmetatable(client).__index, share = getmetatable(share).__index, d = getmetatable(d).__index },
      function() client:close() share:close() d:close() end
  end

  it("name every public function of fileapi, fileapi.files, fileapi.shares and fileapi.drive, and nothing else", function()
    local documented, receivers = {}, {}
    for _, c in ipairs(gen.calls()) do documented[c.id] = c end
    for _, section in ipairs(gen.CALLS) do
      for name, sep in pairs(section.receivers) do receivers[name] = sep end
    end
    local reachable, close = objects()
    local missing = {}
    for receiver, sep in pairs(receivers) do
      assert.truthy(reachable[receiver], receiver)
      for k, v in pairs(reachable[receiver]) do
        local id = receiver .. sep .. k
        if type(v) == "function" and not k:find("^__") and not documented[id] then missing[#missing + 1] = id end
      end
    end
    for id, c in pairs(documented) do
      local owner = reachable[c.receiver]
      assert.is_not_nil(owner[c.name], c.where .. ": " .. id .. " is documented, and not there")
    end
    close()
    table.sort(missing)
    assert.same({}, missing, "no `--- ` line above them: " .. table.concat(missing, ", "))
  end)

  it("are in docs/reference.md, one list per module", function()
    local text = assert(helper.read_file(helper.root .. "/docs/reference.md"))
    for _, section in ipairs(gen.CALLS) do
      assert.truthy(text:find("<!-- list: " .. section.block .. " -->", 1, true), section.block)
    end
  end)
end)
