-- The runnable examples of the README and of docs/ (Lua blocks after a
-- "runnable" comment) run as written, in a child process, against the mock.
local helper = require "helper"

local function documents()
  local list = { "README.md" }
  local p = assert(io.popen("cd " .. helper.sh_quote(helper.root) .. " && ls docs/*.md 2>/dev/null"))
  for name in p:lines() do list[#list + 1] = name end
  p:close()
  return list
end

local function runnable_blocks()
  local blocks = {}
  for _, name in ipairs(documents()) do
    local text = assert(io.open(helper.root .. "/" .. name)):read("*a")
    for block in text:gmatch("<!%-%- runnable[^\n]*%-%->\n```lua\n(.-)\n```") do
      blocks[#blocks + 1] = { name = name, code = block }
    end
  end
  return blocks
end

describe("README examples #children", function()
  local mock, dir

  setup(function()
    mock = helper.start_mock()
    dir = helper.tmpname(".readme")
    os.execute("mkdir -p " .. helper.sh_quote(dir))
    helper.write_file(dir .. "/contract.pdf", 4096)
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. helper.sh_quote(dir))
  end)

  local blocks = runnable_blocks()

  it("has runnable examples", function()
    assert.is_true(#blocks >= 2)
  end)

  for i, block in ipairs(blocks) do
    it("example " .. i .. " (" .. block.name .. ") runs", function()
      local path = dir .. "/example" .. i .. ".lua"
      local f = assert(io.open(path, "w"))
      f:write(block.code)
      f:close()
      local code, out = helper.run_lua(helper.sh_quote(path), helper.mock_env(mock), dir)
      assert.same(0, code, out)
    end)
  end
end)

-- The "Try it" section, as a newcomer follows it: the start command as
-- written (in the checkout, with a fresh HOME), whose export lines name
-- what the README shows; then, with those lines in the environment, the
-- commands as written.
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

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("*a")
  f:close()
  return text
end

local function running(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("*l"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= "Z"
end

describe("README: Try it #children", function()
  local start, shown, commands = try_it()

  it("is there: the start command, what it prints, the commands", function()
    assert.truthy(start and shown and commands)
    assert.same({ "MKP_BASE_URL", "MKP_API_KEY", "MKP_OAUTH_BASE_URL", "MKP_CLIENT_ID", "MKP_CLIENT_SECRET",
      "FILESRO_BASE_URL", "FILESRO_TOKEN", "FILESRO_API_TOKEN", "FILESRO_EMAIL", "FILESRO_PASSWORD" }, names_of(shown))
  end)

  it("the mock starts as written, prints those variables, serves the commands and stops on SIGTERM", function()
    local q = helper.sh_quote
    local dir = helper.tmpname(".tryit")
    assert(os.execute("mkdir -p " .. q(dir)))
    local out, err, pidfile = dir .. "/mock.out", dir .. "/mock.err", dir .. "/mock.pid"
    -- a user's shell: the README names lua5.4; a fresh HOME
    local env = ("env HOME=%s XDG_CONFIG_HOME=%s LUA=lua5.4"):format(q(dir), q(dir .. "/config"))
    local line = start:match("^[^\n#]*"):gsub("%s+$", "")
    assert(os.execute(("cd %s && %s %s >%s 2>%s & echo $! >%s"):format(q(helper.root), env, line, q(out), q(err),
      q(pidfile))))
    local pid = read_file(pidfile):match("%d+")
    local run_dir = os.getenv("FILEAPI_RUN_DIR") -- spec/run.sh stops it if this spec dies
    if run_dir then
      local f = assert(io.open(run_dir .. "/tryit-" .. pid .. ".pid", "w"))
      f:write(pid, "\n")
      f:close()
    end
    finally(function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      os.execute("rm -rf " .. q(dir))
    end)
    local exports
    for _ = 1, 200 do
      exports = read_file(out)
      if exports:find("FILESRO_PASSWORD", 1, true) or not running(pid) then break end
      require("socket").sleep(0.05)
    end
    assert.same(names_of(shown), names_of(exports), read_file(err))

    local script = dir .. "/try.sh"
    local f = assert(io.open(script, "w"))
    f:write(exports, "set -e\n", commands, "\n")
    f:close()
    local ok = os.execute(("cd %s && %s sh %s >%s 2>&1"):format(q(helper.root), env, q(script), q(dir .. "/try.out")))
    local text = read_file(dir .. "/try.out")
    assert.truthy(ok == true or ok == 0, text)
    assert.matches("fsd_%w+ Contracts\n", text)
    assert.matches("fsf_%w+ README%.md %d+ ", text)
    assert.matches("%x+%-[%x-]+ Makefile Makefile\n", text) -- no extension: its name is its extension
    assert.matches("upload %S+ nginx/nginx%.conf", text)
    assert.matches("files %d+, bytes %d+, skipped 0, failed 0", text)
    assert.matches("owner@example%.com\n", text)

    local port = exports:match("FILESRO_BASE_URL=http://127%.0%.0%.1:(%d+)")
    os.execute("kill -TERM " .. pid)
    for _ = 1, 200 do
      if not running(pid) then break end
      require("socket").sleep(0.05)
    end
    assert.is_false(running(pid), "the tool still runs after SIGTERM")
    local c = require("socket").connect("127.0.0.1", tonumber(port))
    if c then c:close() end
    assert.is_nil(c, "the mock still listens after its tool stopped")
  end)
end)
