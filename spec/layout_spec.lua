-- The layers of lua/fileapi, held (docs/internals/layout.md): data goes API
-- module -> engine (http/) -> transport; the store is handed to the engine,
-- not imported by it; each service's folder serves its own public modules;
-- nothing in the library depends on the command line; no module requires
-- another inside a function; the layout's page names every module.
local helper = require "helper"

-- What each part of the tree may require (beyond the Lua and C libraries
-- it builds on): patterns over module names, the first match decides.
local NEUTRAL = { "^fileapi%.core$", "^fileapi%.util$", "^fileapi%.kinds$", "^fileapi%.mime$", "^fileapi%.pager$",
  "^fileapi%.tree$", "^fileapi%.credentials$", "^fileapi%.ngx_phase$" }
local function with(list, ...)
  local out = {}
  for _, p in ipairs(NEUTRAL) do out[#out + 1] = p end
  for _, p in ipairs(list or {}) do out[#out + 1] = p end
  for _, p in ipairs({ ... }) do out[#out + 1] = p end
  return out
end
local RULES = {
  -- the mock of both services (`fileapi mock`): itself only, never the library it is there to test
  { "^fileapi%.mock", { "^fileapi%.mock" } },
  { "^fileapi$", { "^fileapi%.core$", "^fileapi%.files$", "^fileapi%.shares$", "^fileapi%.drive$", "^fileapi%.group$" } },
  { "^fileapi%.http%.", with({ "^fileapi%.http%." }) },
  { "^fileapi%.store", with({ "^fileapi%.store" }) },
  { "^fileapi%.client_options$", with({ "^fileapi%.http%.engine$", "^fileapi%.store$" }) },
  { "^fileapi%.mijnklantportaal%.", with({ "^fileapi%.mijnklantportaal%.", "^fileapi%.http%.engine$",
    "^fileapi%.client_options$" }) },
  { "^fileapi%.filesro%.", with({ "^fileapi%.filesro%.", "^fileapi%.http%.engine$" }) },
  { "^fileapi%.cli", { "^fileapi%." } },
  -- the public modules: anything of the library, never the command line
  { "^fileapi%.[%w_]+$", with({ "^fileapi%.http%.engine$", "^fileapi%.client_options$", "^fileapi%.mijnklantportaal%.",
    "^fileapi%.filesro%.", "^fileapi%.files$", "^fileapi%.shares$", "^fileapi%.drive$", "^fileapi%.group$",
    "^fileapi%.batch$" }) },
}
-- the Lua and C libraries modules build on (a pcall'd probe is no dependency)
local OUTSIDE = { cjson = true, argparse = true, socket = true, ssl = true }

local function lua_files()
  local p = assert(io.popen("cd " .. helper.sh_quote(helper.root .. "/lua") .. " && find fileapi -name '*.lua' | sort"))
  local list = {}
  for path in p:lines() do list[#list + 1] = path end
  p:close()
  return list
end

local function module_of(path)
  return (path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", "."))
end

local function allowed(module, required)
  if OUTSIDE[required] then return true end
  for _, rule in ipairs(RULES) do
    if module:find(rule[1]) then
      for _, p in ipairs(rule[2]) do
        if required:find(p) then return true end
      end
      return false
    end
  end
  return false
end

describe("the layout of lua/fileapi", function()
  local files = lua_files()

  it("finds the modules", function()
    assert.is_true(#files > 30, #files)
  end)

  it("each module requires only what its layer may", function()
    local wrong = {}
    for _, path in ipairs(files) do
      local module = module_of(path)
      local text = assert(helper.read_file(helper.root .. "/lua/" .. path))
      for line in text:gmatch("[^\n]+") do
        if not line:find("^%s*%-%-") and not line:find("pcall%(require") then
          for required in line:gmatch("require%s*%(?%s*[\"']([%w_.]+)[\"']") do
            if not allowed(module, required) then wrong[#wrong + 1] = module .. " requires " .. required end
          end
        end
      end
    end
    assert.same({}, wrong)
  end)

  -- A function at the top level starts at the line's first column and its
  -- `end` closes at the first column too (the sources' style): a require
  -- between the two, or on a line that defines a function, is inside one.
  it("no module requires another inside a function", function()
    local inside = {}
    for _, path in ipairs(files) do
      local n, depth = 0, false
      for line in io.lines(helper.root .. "/lua/" .. path) do
        n = n + 1
        local code = line:gsub("%-%-.*$", "")
        local requires = code:find("require%s*%(?%s*[\"']") and not code:find("pcall%(require")
        local defines = code:find("function%s*[%w_.:]*%(")
        if code:find("^%S") and defines and not code:find("end%)?%s*$") then depth = true end
        if requires and (depth or defines) then inside[#inside + 1] = path .. ":" .. n end
        if code:find("^end") then depth = false end
      end
    end
    assert.same({}, inside)
  end)

  it("docs/internals/layout.md names every module", function()
    local doc = assert(helper.read_file(helper.root .. "/docs/internals/layout.md"))
    local missing = {}
    for _, path in ipairs(files) do
      local name = path:match("[^/]+$")
      if not doc:find(" " .. name .. " ", 1, true) then missing[#missing + 1] = path end
    end
    assert.same({}, missing)
  end)

  it("no source file is over 600 lines", function()
    local long = {}
    for _, path in ipairs(files) do
      local n = 0
      for _ in io.lines(helper.root .. "/lua/" .. path) do n = n + 1 end
      if n > 600 then long[#long + 1] = path .. ": " .. n end
    end
    assert.same({}, long)
  end)
end)
