-- The build as a new machine meets it: `make` in a copy of the checkout,
-- with stand-ins on PATH for the compilers (they log their arguments and
-- write an empty output) and for dpkg-query, apt-get and pkg-config, which
-- play a machine where libhiredis-dev is installed or not.
local helper = require "helper"

local q = helper.sh_quote

local FAKE_CC = [[#!/bin/sh
echo "$(basename "$0") $*" >>"$FAKE/cc.log"
out="" prev=""
for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
[ -z "$out" ] || { mkdir -p "$(dirname "$out")" && : >"$out"; }
]]
-- hiredis is "installed" when $FAKE/hiredis exists; everything else is.
local FAKE_PKG_CONFIG = [[#!/bin/sh
for a in "$@"; do [ "$a" != hiredis ] || [ -f "$FAKE/hiredis" ] || exit 1; done
exec "$REAL_PKG_CONFIG" "$@"
]]
local FAKE_DPKG_QUERY = [[#!/bin/sh
for a in "$@"; do pkg=$a; done
case "$pkg" in libhiredis-dev|liblua5.4-dev) [ -f "$FAKE/hiredis" ] || exit 1 ;; esac
printf 'install ok installed'
]]
local FAKE_APT_GET = [[#!/bin/sh
echo "apt-get $*" >>"$FAKE/apt.log"
case " $* " in *" install "*" libhiredis-dev "*) : >"$FAKE/hiredis" ;; esac
]]
local FAKE_ID = [[#!/bin/sh
[ "${1:-}" = -u ] && { echo 0; exit 0; }
exec /usr/bin/id "$@"
]]

-- A copy of what the build reads, and a folder of stand-ins.
local function sandbox()
  local dir = helper.tmpname(".build")
  local r = helper.root
  assert(os.execute(("mkdir -p %s/src/spec %s/fake/bin && cp -r %s %s %s %s %s/src/ && cp -r %s %s/src/spec/"):format(
    q(dir), q(dir), q(r .. "/Makefile"), q(r .. "/tools"), q(r .. "/csrc"), q(r .. "/fuzz"), q(dir), q(r .. "/spec/c"), q(dir))))
  local fake = dir .. "/fake"
  for name, text in pairs({ cc = FAKE_CC, clang = FAKE_CC, ["pkg-config"] = FAKE_PKG_CONFIG,
    ["dpkg-query"] = FAKE_DPKG_QUERY, ["apt-get"] = FAKE_APT_GET, id = FAKE_ID }) do
    helper.write_text(fake .. "/bin/" .. name, text, "755")
  end
  local box = { dir = dir, src = dir .. "/src", fake = fake }
  -- `make ARGS` in the copy with the stand-ins first on PATH (and no make
  -- settings inherited from a make that runs this suite).
  function box.make(args)
    return helper.run_sh(("cd %s && env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS FAKE=%s REAL_PKG_CONFIG=%s PATH=%s make %s")
      :format(q(box.src), q(fake), q(box.real_pkg_config), q(fake .. "/bin:" .. os.getenv("PATH")), args))
  end
  function box.compiles() return select(2, (helper.read_file(fake .. "/cc.log") or ""):gsub("\n", "")) end
  function box.last_compile(target)
    local last
    for line in (helper.read_file(fake .. "/cc.log") or ""):gmatch("[^\n]+") do
      if line:find(" -o " .. target .. " ", 1, true) then last = line end
    end
    return last
  end
  function box.installed(yes)
    if yes then helper.write_text(fake .. "/hiredis", "") else os.remove(fake .. "/hiredis") end
  end
  function box.remove() os.execute("rm -rf " .. q(dir)) end
  return box
end

local function real_pkg_config()
  local p = io.popen("command -v pkg-config")
  local path = p:read("*l")
  p:close()
  return path
end

describe("the build #toolchain", function()
  local box

  before_each(function()
    box = sandbox()
    box.real_pkg_config = real_pkg_config()
  end)
  after_each(function() box.remove() end)

  it("make demo installs first and builds with what it installed (also under -j)", function()
    assert.truthy(box.real_pkg_config, "pkg-config is needed to run the build")
    for _, jobs in ipairs({ "", "-j4" }) do
      box.installed(false)
      os.execute("rm -rf " .. q(box.src .. "/build"))
      local code, out = box.make(jobs .. " LUA=lua5.4 LUA_BIN=true CC=" .. q(box.fake .. "/bin/cc") .. " demo")
      assert.same(0, code, out)
      assert.matches("apt%-get install .*libhiredis%-dev", helper.read_file(box.fake .. "/apt.log") or "")
      -- the Lua the build is for is also in the list of all: named once
      local _, named = (out:match("fileapi: installing[^\n]*") or ""):gsub(" liblua5%.4%-dev", "")
      assert.same(1, named, out)
      local line = assert(box.last_compile("build/lua5.4/fileapi/core.so"), out)
      assert.matches("-DFA_HAVE_HIREDIS", line, 1, true)
      assert.matches("-lhiredis", line, 1, true)
    end
  end)

  it("rebuilds the core, ASan, fuzz and harness builds when their features change, and only then", function()
    assert.truthy(box.real_pkg_config, "pkg-config is needed to run the build")
    local targets = { "build/lua5.4/fileapi/core.so", "build/asan-lua5.4/fileapi/core.so",
      "build/fuzz/fuzz_retry_after", "build/harness/harness" }
    local args = "LUA=lua5.4 CC=" .. q(box.fake .. "/bin/cc") .. " " .. table.concat(targets, " ")
    local function build(expect_compiles, with_hiredis)
      local before = box.compiles()
      local code, out = box.make(args)
      assert.same(0, code, out)
      assert.same(expect_compiles, box.compiles() - before, out)
      for _, target in ipairs(targets) do
        local line = assert(box.last_compile(target), target)
        assert.same(with_hiredis, line:find("-DFA_HAVE_HIREDIS", 1, true) ~= nil, line)
      end
      return out
    end
    box.installed(true)
    build(#targets, true)
    build(0, true) -- nothing changed: nothing is built
    box.installed(false)
    local out = build(#targets, false)
    assert.matches("built without fileapi.store's hiredis or libcrypto (install libhiredis-dev", out, 1, true)
    build(0, false)
    box.installed(true)
    build(#targets, true)
    -- the rock (LuaRocks' build) always builds, with the features of now
    local code
    code, out = box.make("rock CC=" .. q(box.fake .. "/bin/cc"))
    assert.same(0, code, out)
    assert.matches("-DFA_HAVE_HIREDIS", box.last_compile("build/rock/fileapi/core.so"), 1, true)
    box.installed(false)
    code, out = box.make("rock CC=" .. q(box.fake .. "/bin/cc"))
    assert.same(0, code, out)
    assert.is_nil(box.last_compile("build/rock/fileapi/core.so"):find("-DFA_HAVE_HIREDIS", 1, true))
  end)

  it("make LUA=... without that Lua's headers names the package to install, and installs nothing", function()
    -- the real dpkg-query and compiler; only apt-get is a stand-in (it logs)
    local lua
    for _, v in ipairs({ "lua5.3", "lua5.2" }) do
      local code = helper.run_sh("dpkg-query -W -f='${Status}' lib" .. v .. "-dev 2>/dev/null | grep -q ' installed$'")
      if code ~= 0 then lua = v break end
    end
    if not lua then
      print("      (not run: this machine has the headers of every Lua it could try)")
      return
    end
    for _, name in ipairs({ "dpkg-query", "pkg-config", "id", "cc", "clang" }) do os.remove(box.fake .. "/bin/" .. name) end
    local code, out = box.make("LUA=" .. lua)
    assert.is_not.same(0, code)
    assert.matches("fileapi: missing Debian packages: lib" .. lua .. "-dev", out, 1, true)
    assert.matches("make LUA=" .. lua .. " deps", out, 1, true)
    assert.is_nil(out:find("lua.h", 1, true), out)
    assert.same("", helper.read_file(box.fake .. "/apt.log") or "")
  end)

  it("sanitized runs name the symbolizer, and the symbolizer package is a check dependency", function()
    local code, out = box.make("-n check-deps")
    assert.same(0, code, out)
    assert.matches("tools/deps.sh [^\n]*llvm%-14", out)
    -- every sanitized run goes through tools/sanitize.sh
    code, out = box.make("-n LUA=lua5.4 CC=" .. q(box.fake .. "/bin/cc") .. " test-asan test-oom fuzz")
    assert.same(0, code, out)
    for _, run in ipairs({ "spec/run.sh %-%-exclude%-tags", "spec/run.sh %-%-run=oom", "tools/fuzz.sh" }) do
      assert.matches("sh tools/sanitize.sh sh " .. run, out)
    end
  end)
end)

-- A leak LSan suppresses by function name: matching it starts the
-- symbolizer.  Where the runtime cannot run the one it looks for, it prints
-- "invalid path to external symbolizer" into output specs compare.
describe("sanitized runs #toolchain", function()
  local dir, run

  setup(function()
    dir = helper.tmpname(".san")
    assert(os.execute("mkdir -p " .. q(dir)))
    helper.write_text(dir .. "/leak.c", "#include <stdlib.h>\nvoid *keep;\nstatic void *leaky(void) { return malloc(64); }\n"
      .. "int main(void) { keep = leaky(); keep = 0; return 0; }\n")
    helper.write_text(dir .. "/supp", "leak:leaky\n")
    run = ("LSAN_OPTIONS=suppressions=%s:print_suppressions=0 sh %s %s"):format(q(dir .. "/supp"),
      q(helper.root .. "/tools/sanitize.sh"), q(dir .. "/leak"))
  end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  local function compiled()
    if helper.run_sh("command -v clang") ~= 0 then
      print("      (not run: needs clang, one of make check-deps' packages)")
      return false
    end
    local code, out = helper.run_sh(("cd %s && clang -fsanitize=address -g -O0 -o leak leak.c"):format(q(dir)))
    assert.same(0, code, out)
    return true
  end

  it("name the symbolizer this machine has, so suppressions by name apply", function()
    if not compiled() then return end
    local code, out = helper.run_sh(run)
    if out:find("fileapi: no llvm-symbolizer", 1, true) then -- none here: said once, no warning
      assert.is_nil(out:find("invalid path to external symbolizer", 1, true), out)
    else
      assert.same(0, code, out)
      assert.same("", out)
    end
  end)

  -- The symbolizer hidden in a mount namespace of its own (/dev/null bound
  -- over it, as on a machine without llvm-14).
  it("print no symbolizer warning where there is none", function()
    if not compiled() then return end
    local hide = "for s in /usr/bin/llvm-symbolizer-14 $(command -v llvm-symbolizer); do"
      .. " [ ! -e \"$s\" ] || mount --bind /dev/null \"$s\" || exit 0; done; echo hidden; "
    local out = select(2, helper.run_sh("unshare -m sh -c " .. q(hide .. run)))
    if not out:find("^hidden\n") then
      print("      (not run: the symbolizer cannot be hidden in a mount namespace here: "
        .. (out:match("[^\n]+") or "no output") .. ")")
      return
    end
    assert.is_nil(out:find("invalid path to external symbolizer", 1, true), out)
    assert.matches("fileapi: no llvm-symbolizer (Debian package llvm-14)", out, 1, true)
    assert.matches("ERROR: LeakSanitizer", out, 1, true) -- reports still come, with addresses
  end)
end)

describe("tools/with-paths.sh #toolchain", function()
  -- The path of the core a Lua finds, then its version.
  local probe = q('for t in package.cpath:gmatch("[^;]+") do local f = io.open((t:gsub("%?", "fileapi/core")))'
    .. ' if f then f:close() print(t) break end end require "fileapi.core" print(jit and "luajit" or _VERSION)')

  it("takes the Lua from its first argument when that is a Lua interpreter", function()
    for _, case in ipairs({ { env = "lua5.4", lua = "luajit", says = "luajit" },
      { env = "luajit", lua = "lua5.4", says = "Lua 5.4" }, { env = "luajit", lua = "/usr/bin/lua5.4", says = "Lua 5.4" } }) do
      local build = case.lua:match("[^/]+$")
      local so = helper.root .. "/build/" .. build .. "/fileapi/core.so"
      assert.truthy(io.open(so), so .. " is missing: make LUA=" .. build .. " build")
      local code, out = helper.run_sh(("env -u LUA_PATH -u LUA_CPATH -u FILEAPI_BUILD LUA=%s sh %s %s -e %s"):format(case.env,
        q(helper.root .. "/tools/with-paths.sh"), case.lua, probe))
      assert.same(0, code, out)
      assert.same(helper.root .. "/build/" .. build .. "/?.so\n" .. case.says .. "\n", out)
    end
  end)
end)

describe("spec/run.sh #toolchain", function()
  -- A run that ends stops the servers its specs left, and only those: an
  -- id that came round to another process (this machine wraps its 32768
  -- ids in minutes under two suites) is left alone.
  it("stops what a spec left running, and not a process that has a left server's id now", function()
    local dir = helper.tmpname(".runsh")
    assert(os.execute("mkdir -p " .. q(dir)))
    local ours, other = dir .. "/ours.pid", dir .. "/other.pid"
    helper.write_text(dir .. "/left_spec.lua", ([[
local helper = require "helper"
it("leaves two processes", function()
  os.execute("sleep 60 & echo $! > %s; sleep 60 & echo $! > %s")
  local p = io.open(%q):read("*l")
  helper.remember_pid("left-" .. p, p)
  local o = io.open(%q):read("*l")
  -- as a server stopped long ago whose id another process got since
  local f = io.open(os.getenv("FILEAPI_RUN_DIR") .. "/gone-" .. o .. ".pid", "w")
  f:write(o, " 1\n")
  f:close()
end)
]]):format(q(ours), q(other), ours, other))
    local code, out = helper.run_sh(("cd %s && sh spec/run.sh %s"):format(q(helper.root), q(dir .. "/left_spec.lua")))
    assert.same(0, code, out)
    local pid_ours, pid_other = helper.read_file(ours):match("%d+"), helper.read_file(other):match("%d+")
    local proc = require "fileapi.mock.proc"
    local deadline = os.time() + 10
    while proc.running(pid_ours) and os.time() < deadline do os.execute("sleep 0.1") end
    local other_alive = proc.running(pid_other)
    os.execute(("kill %s %s 2>/dev/null; rm -rf %s"):format(pid_ours, pid_other, q(dir)))
    assert.is_false(proc.running(pid_ours) and true or false)
    assert.is_true(other_alive)
  end)
end)
