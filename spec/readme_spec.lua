-- The runnable examples of README.md and docs/ (a ```lua or ```sh block after
-- a "runnable" comment) run as written, each in a child process in a folder
-- of its own, against the mock: Lua with this checkout's paths, shell with
-- `fileapi` on PATH.  A block marked "runnable: with redis" also gets a Redis
-- (REDIS_URL), and must leave its keys there.  A lua block marked "runnable:
-- busted" is a spec of its own, run by busted (docs/testing.md).
local helper = require "helper"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("*a")
  f:close()
  return text
end

local function pages()
  local p = assert(io.popen("cd " .. helper.sh_quote(helper.root) .. " && find README.md docs -name '*.md' | LC_ALL=C sort"))
  local out = {}
  for path in p:lines() do out[#out + 1] = path end
  p:close()
  return out
end

-- { page, n, lang, code, redis } of every runnable block, page by page.
local function runnable_blocks()
  local blocks = {}
  for _, page in ipairs(pages()) do
    local n = 0
    local text = read_file(helper.root .. "/" .. page)
    for marker, lang, code in text:gmatch("<!%-%- (runnable[^\n]*)%-%->\n```(%w+)\n(.-)\n```") do
      n = n + 1
      assert(lang == "lua" or lang == "sh", page .. ": a runnable block is lua or sh, not " .. lang)
      blocks[#blocks + 1] = { page = page, n = n, lang = lang, code = code, redis = marker:find("with redis", 1, true),
        busted = marker:find("^runnable: busted") ~= nil }
    end
  end
  return blocks
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("the examples of README.md and docs/ #children", function()
  local q = helper.sh_quote
  local blocks = runnable_blocks()
  local mock, redis, dir, env

  setup(function()
    mock = helper.start_mock()
    for _, b in ipairs(blocks) do
      if b.redis and not redis then redis = helper.start_redis() end
    end
    dir = helper.tmpname(".examples")
    assert(os.execute("mkdir -p " .. q(dir .. "/bin")))
    -- `fileapi` as the rock installs it: this checkout's command, on the suite's Lua
    write(dir .. "/bin/fileapi", ("#!/bin/sh\nexec sh %s %s %s \"$@\"\n"):format(q(helper.root .. "/tools/with-paths.sh"),
      helper.lua, q(helper.root .. "/bin/fileapi")))
    assert(os.execute("chmod +x " .. q(dir .. "/bin/fileapi")))
    env = helper.mock_env(mock)
    env.FILESRO_TOKEN = helper.EDITOR_SHARE
    env.HOME, env.XDG_CONFIG_HOME = dir, dir .. "/config"
    if redis then env.REDIS_URL = redis:url() end
  end)
  teardown(function()
    mock:stop()
    if redis then redis:stop() end
    os.execute("rm -rf " .. q(dir))
  end)

  it("are there: the guides' and the reference's", function()
    local count = {}
    for _, b in ipairs(blocks) do count[b.page] = (count[b.page] or 0) + 1 end
    for _, page in ipairs({ "docs/files.md", "docs/shares.md", "docs/oauth.md", "docs/drive.md", "docs/fleet.md",
        "docs/cli.md", "docs/testing.md" }) do
      assert.truthy(count[page], page .. " starts from a runnable example")
    end
    local specs = 0
    for _, b in ipairs(blocks) do
      if b.busted and b.page == "docs/testing.md" then specs = specs + 1 end
    end
    assert.same(1, specs, "docs/testing.md shows a busted spec of the reader's own")
    assert.is_true(#blocks >= 10, #blocks)
  end)

  for i, b in ipairs(blocks) do
    -- an example that calls curl(1) drives another tool: under ASan's
    -- preloaded runtime curl itself can hang (#toolchain is left out there)
    local tags = b.code:find("curl ", 1, true) and " #toolchain" or ""
    it(("%s, example %d, runs%s"):format(b.page, b.n, tags), function()
      local here = ("%s/%d"):format(dir, i)
      assert(os.execute("mkdir -p " .. q(here)))
      helper.write_file(here .. "/contract.pdf", 4096)
      local code, out
      if b.busted then
        write(here .. "/example_spec.lua", b.code)
        code, out = helper.run_sh(("cd %s && env %s sh %s busted --lua=%s example_spec.lua"):format(q(here),
          helper.env_words(env), q(helper.root .. "/tools/with-paths.sh"), helper.lua))
        assert.matches("%d+ successes / 0 failures / 0 errors / 0 pending", out)
      elseif b.lang == "lua" then
        write(here .. "/example.lua", b.code)
        code, out = helper.run_lua(q(here .. "/example.lua"), env, here)
      else
        write(here .. "/example.sh", b.code .. "\n")
        local parts = {}
        for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
        code, out = helper.run_sh(("cd %s && env %s PATH=%s:\"$PATH\" sh -e example.sh"):format(q(here),
          table.concat(parts, " "), q(dir .. "/bin")))
      end
      assert.same(0, code, out)
      if b.redis then assert.matches("^fileapi:", redis:cli({ "KEYS", "*" }), "the example left nothing in Redis") end
    end)
  end
end)

-- The "Try it" section, as a newcomer follows it: the start block as
-- written (in the checkout, with a fresh HOME), whose export lines name
-- what the README shows; then, with those lines in the environment, the
-- commands as written; then SIGTERM to the FILEAPI_MOCK_PID it printed.
local function try_it()
  local text = assert(io.open(helper.root .. "/README.md")):read("*a")
  local start, shown = text:match("<!%-%- try%-it: mock %-%->\n```sh\n(.-)\n```\n\n```sh\n(.-)\n```")
  local commands = text:match("<!%-%- try%-it: commands[^\n]*%-%->\n```sh\n(.-)\n```")
  return start, shown, commands
end

local function names_of(exports)
  local names = {}
  for name in exports:gmatch("export (%u[%u_]*)=") do names[#names + 1] = name end
  return names
end

local proc = require "fileapi.mock.proc"
local running = proc.running

describe("README: Try it #children", function()
  local start, shown, commands = try_it()

  it("is there: the start command, what it prints, the commands", function()
    assert.truthy(start and shown and commands)
    assert.matches("fileapi mock", start)
    assert.same({ "MKP_BASE_URL", "MKP_API_KEY", "MKP_OAUTH_BASE_URL", "MKP_CLIENT_ID", "MKP_CLIENT_SECRET",
      "FILESRO_BASE_URL", "FILESRO_TOKEN", "FILESRO_API_TOKEN", "FILESRO_EMAIL", "FILESRO_PASSWORD", "FILEAPI_MOCK_PID" },
      names_of(shown))
  end)

  it("fileapi mock starts as written, prints those variables, serves the commands and stops on SIGTERM", function()
    local q = helper.sh_quote
    local dir = helper.tmpname(".tryit")
    assert(os.execute("mkdir -p " .. q(dir)))
    local out, err, pidfile = dir .. "/mock.out", dir .. "/mock.err", dir .. "/mock.pid"
    -- a user's shell: the README names lua5.4; a fresh HOME
    local env = ("env HOME=%s XDG_CONFIG_HOME=%s LUA=lua5.4"):format(q(dir), q(dir .. "/config"))
    helper.write_text(dir .. "/start.sh", start .. "\n")
    assert(os.execute(("cd %s && %s sh %s >%s 2>%s & echo $! >%s"):format(q(helper.root), env, q(dir .. "/start.sh"),
      q(out), q(err), q(pidfile))))
    local shell = (helper.read_file(pidfile) or ""):match("%d+")
    local exports = helper.wait_for(function()
      local text = helper.read_file(out) or ""
      return (text:find("FILEAPI_MOCK_PID=%d+\n") or not running(shell)) and text
    end, 30) or ""
    local pid = exports:match("FILEAPI_MOCK_PID=(%d+)")
    local since = pid and proc.start_time(pid)
    if pid then helper.remember_pid("tryit-" .. pid, pid) end -- spec/run.sh stops it if this spec dies
    finally(function()
      if pid then proc.signal(pid, "TERM", since) end -- (unless it ended: its id may be another's now)
      os.execute("rm -rf " .. q(dir))
    end)
    assert.same(names_of(shown), names_of(exports), helper.read_file(err) or "")

    local script = dir .. "/try.sh"
    helper.write_text(script, exports .. "set -e\n" .. commands .. "\n")
    local ok = os.execute(("cd %s && %s sh %s >%s 2>&1"):format(q(helper.root), env, q(script), q(dir .. "/try.out")))
    local text = helper.read_file(dir .. "/try.out") or ""
    assert.truthy(ok == true or ok == 0, text)
    assert.matches("fsd_%w+ Contracts\n", text)
    assert.matches("fsf_%w+ README%.md %d+ ", text)
    assert.matches("%x+%-[%x-]+ Makefile Makefile\n", text) -- no extension: its name is its extension
    assert.matches("upload %S+ nginx/nginx%.conf", text)
    assert.matches("files %d+, bytes %d+, skipped 0, failed 0", text)
    assert.matches("owner@example%.com\n", text)

    local port = exports:match("FILESRO_BASE_URL=http://127%.0%.0%.1:(%d+)")
    proc.signal(pid, "TERM", since)
    assert.truthy(helper.wait_for(function() return not running(pid, since) and not running(shell) end, 20),
      "fileapi mock still runs after SIGTERM")
    local c = require("socket").connect("127.0.0.1", tonumber(port))
    if c then c:close() end
    assert.is_nil(c, "the mock still listens after fileapi mock stopped")
  end)
end)
