-- The one list of transport options and the one list of error kinds,
-- held against every place that must agree with them: the engine's checks,
-- the request contract, the C core's reading of the request table and its
-- maps of kinds, the cosocket transport, the command line and the README.
-- Adding an option or a kind in one place and not the others fails here.
local helper = require "helper"
local core = require "fileapi.core"
local options = require "fileapi.http.options"
local kinds = require "fileapi.kinds"
local request = require "fileapi.http.request"
local engine = require "fileapi.http.engine"
local tables = dofile(helper.root .. "/tools/tables.lua")

local function read(path)
  local f = assert(io.open(helper.root .. "/" .. path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

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

describe("the one list of transport options", function()
  it("the engine takes exactly the listed names, with the listed types and defaults", function()
    assert.same(keys(set(options.NAMES)), keys(set(engine.OPTION_NAMES)))
    local opts = assert(engine.check_options({}, "new"))
    for _, o in ipairs(options.LIST) do
      if o.type == "number" or o.type == "boolean" or o.name == "transport" or o.name == "rate_limit" then
        assert.same(o.default, opts[o.name], o.name)
      end
      if o.type ~= "rate" and o.type ~= "function" then
        local wrong = o.type == "number" and "x" or 5
        assert.has_error(function() engine.check_options({ [o.name] = wrong }, "new") end, nil, o.name)
      end
    end
  end)

  it("the request contract carries the options marked for the transports, and nothing else", function()
    local want = {}
    for k in pairs(request.CALL_FIELDS) do want[k] = true end
    for _, o in ipairs(options.LIST) do
      if o.request then want[o.name] = true end
    end
    assert.same(keys(want), keys(request.FIELDS))
  end)

  it("the C core reads exactly the request contract's fields (but cosockets' cancelled)", function()
    local c = set(core.request_fields())
    c.cancelled = true
    assert.same(keys(request.FIELDS), keys(c))
    -- and request.c reads what it says it reads
    local text = read("csrc/request.c")
    local read_there = {}
    for name in text:gmatch('fa_opt%a+field%(L, t, "([%w_]+)"') do read_there[name] = true end
    for name in text:gmatch('lua_getfield%(L, t, "([%w_]+)"') do read_there[name] = true end
    for name in text:gmatch('optfunction%(L, t, "([%w_]+)"') do read_there[name] = true end
    assert.same(keys(set(core.request_fields())), keys(read_there))
  end)

  it("the cosocket transport reads every field its transports' options name", function()
    local text = read("lua/fileapi/http/cosocket.lua")
    local used = {}
    for name in text:gmatch("creq%.([%w_]+)") do used[name] = true end
    local want = {}
    for k in pairs(request.CALL_FIELDS) do want[k] = true end
    for _, o in ipairs(options.LIST) do
      if o.request and o.honoured:find("ngx", 1, true) then want[o.name] = true end
    end
    assert.same(keys(want), keys(used))
  end)

  it("the README's options table is the list's", function()
    local readme = read("README.md")
    assert.same(tables.BLOCKS.options, tables.blocks(readme).options, "run: lua5.4 tools/tables.lua --write README.md")
    for _, o in ipairs(options.LIST) do
      assert.truthy(readme:find("| `" .. o.name .. "` |", 1, true), o.name)
    end
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

  it("C maps every HTTP status as the list says", function()
    for status = 100, 599 do
      assert.same(kinds.for_status(status), core.kind_for_status(status), status)
    end
  end)

  it("every kind named in the sources is in the list", function()
    local known, found = set(names), 0
    local function check(glob, patterns)
      for _, path in ipairs(sources(glob)) do
        local text = read(path)
        for _, pattern in ipairs(patterns) do
          for kind in text:gmatch(pattern) do
            found = found + 1
            assert.truthy(known[kind], path .. ": " .. kind)
          end
        end
      end
    end
    check("csrc/*.c", { 'fa_error_push%(L, "([%w_]+)"', 'fail%(x, "([%w_]+)"', 'push_error%(L, "([%w_]+)"',
      'fa_mp_set_error%(mp, "([%w_]+)"' })
    check("lua/fileapi/*.lua lua/fileapi/*/*.lua", { 'new_error%("([%w_]+)"', 'kind = "([%w_]+)"',
      'return "([%w_]+)", "', '[^:%w_]fail%("([%w_]+)"', 'return nil, "([%w_]+)", "' })
    assert.is_true(found > 50, found)
  end)

  it("the command line's exit statuses and help come from the list", function()
    local cli = require "fileapi.cli"
    for _, k in ipairs(kinds.LIST) do assert.same(k.exit, cli.EXIT[k.kind], k.kind) end
    local code, out = helper.run_lua(helper.sh_quote(helper.root .. "/bin/fileapi") .. " --help")
    assert.same(0, code)
    local flat = out:gsub("%s+", " ")
    assert.truthy(flat:find(kinds.exit_summary():gsub("%s+", " "), 1, true), out)
  end)

  it("the README's kinds table and exit statuses are the list's", function()
    local readme = read("README.md")
    local blocks = tables.blocks(readme)
    assert.same(tables.BLOCKS.kinds, blocks.kinds, "run: lua5.4 tools/tables.lua --write README.md")
    assert.same(tables.BLOCKS.exit, blocks.exit, "run: lua5.4 tools/tables.lua --write README.md")
    for _, k in ipairs(names) do assert.truthy(readme:find("| `" .. k .. "` |", 1, true), k) end
  end)
end)
