-- `luarocks make` into a fresh tree, then the installed module talks to the mock.
local helper = require "helper"

describe("luarocks #toolchain", function()
  local mock, rock, dir

  setup(function()
    mock = helper.start_mock()
    rock = helper.installed_rock()
    dir = rock.dir
  end)
  teardown(function()
    mock:stop()
  end)

  it("builds with luarocks make and runs from the installed tree", function()
    local q = helper.sh_quote
    local lua_version = rock.lua_version
    assert.truthy(rock.ok, rock.log)
    assert.matches("is now installed", rock.log)
    local tree = rock.tree
    local script = ([[
      package.path = %q .. package.path
      package.cpath = %q .. package.cpath
      local files = require "fileapi.files"
      local dir = assert(files.new({ api_key = "test-key", base_url = %q }):mkdir("FromRock"))
      local found -- package.searchpath is missing from Lua 5.1
      for template in package.cpath:gmatch("[^;]+") do
        local candidate = template:gsub("%%?", "fileapi/core")
        local f = io.open(candidate)
        if f then f:close() found = found or candidate end
      end
      io.write(found, " ", dir.id)
    ]]):format(tree .. "/share/lua/" .. lua_version .. "/?.lua;" .. tree .. "/share/lua/" .. lua_version .. "/?/init.lua;",
      tree .. "/lib/lua/" .. lua_version .. "/?.so;", mock.mkp_url)
    local code, out = helper.run_lua("-e " .. q(script), { LUA_PATH_5_4 = ";;", LUA_CPATH_5_4 = ";;" })
    assert.same(0, code, out)
    assert.matches("/tree/lib/lua/" .. lua_version .. "/fileapi/core%.so fsd_%w+$", out)
  end)

  it("packs a binary rock that installs into a fresh tree, command included", function()
    local q = helper.sh_quote
    local lv = (os.getenv("LUA_BIN") or "lua5.4"):match("lua(5%.%d)") or "5.1"
    local log = dir .. "/pack.log"
    local script = table.concat({
      "set -e", "cd " .. q(dir),
      ("luarocks --lua-version=%s pack fileapi 0.1.0-1 --tree tree"):format(lv),
      ("luarocks --lua-version=%s install --tree fresh --deps-mode=none fileapi-0.1.0-1.*.rock"):format(lv),
      ("eval \"$(luarocks --lua-version=%s --tree fresh path)\""):format(lv),
      ("MKP_API_KEY=%s MKP_BASE_URL=%s fresh/bin/fileapi mkdir FromPackedRock"):format(helper.API_KEY, q(mock.mkp_url)),
    }, "\n")
    local ok = os.execute(("sh -c %s >%s 2>&1"):format(q(script), q(log)))
    local text = io.open(log):read("*a")
    assert.truthy(ok == true or ok == 0, text)
    assert.matches("Packed: .*fileapi%-0%.1%.0%-1%.linux%-x86_64%.rock", text)
    assert.matches("fileapi 0%.1%.0%-1 is now installed in .*fresh", text)
    assert.matches("\nfsd_%w+ FromPackedRock\n", text)
  end)

  -- Both builds export the module's entry point and nothing else: internal
  -- fa_* names must not clash with anything else the host process loads.
  it("both builds export only luaopen_fileapi_core", function()
    local lv = (os.getenv("LUA_BIN") or "lua5.4"):match("lua(5%.%d)") or "5.1"
    local builds = { helper.root .. "/build/" .. (os.getenv("LUA") or "lua5.4") .. "/fileapi/core.so",
      dir .. "/tree/lib/lua/" .. lv .. "/fileapi/core.so" }
    for _, so in ipairs(builds) do
      local p = assert(io.popen("nm -D --defined-only " .. helper.sh_quote(so) .. " 2>&1"))
      local names = {}
      for line in p:lines() do
        local name = line:match("^%x*%s+%u%s+(%S+)$")
        if name then names[#names + 1] = name end
      end
      p:close()
      assert.same({ "luaopen_fileapi_core" }, names, so)
    end
  end)

  it("the rockspec installs every Lua module of the checkout", function()
    local text = io.open(helper.root .. "/fileapi-0.1.0-1.rockspec"):read("*a")
    local p = assert(io.popen("cd " .. helper.sh_quote(helper.root .. "/lua") .. " && find fileapi -name '*.lua' | sort"))
    local count = 0
    for path in p:lines() do
      local module = path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      assert.truthy(text:find('["' .. module .. '"] = "lua/' .. path .. '"', 1, true), path .. " is missing")
      count = count + 1
    end
    p:close()
    local _, listed = text:gsub('%["fileapi[%w._]*"%] = "lua/', "")
    assert.same(count, listed) -- and nothing that is not there
  end)
end)
