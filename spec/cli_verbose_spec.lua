-- fileapi -v: the command line's words for the events a client tells of
-- (spec/events_spec.lua has the events themselves): each attempt and wait
-- on stderr, a refresh of the stored sign-in, a group's attempts under the
-- batch's progress line, and no secret in any of it.
local helper = require "helper"
local cjson = require "cjson"
local core = require "fileapi.core"

local q = helper.sh_quote

describe("fileapi -v #children", function()
  local mock, env, home

  setup(function()
    mock = helper.start_mock()
    home = helper.tmpname(".home")
    assert(os.execute("mkdir -p " .. q(home)))
    env = helper.mock_env(mock)
    env.HOME, env.XDG_CONFIG_HOME = home, home .. "/config"
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. q(home))
  end)
  before_each(function() mock:reset() end)

  local function lines_of(out, prefix)
    local got = {}
    for line in out:gmatch("[^\n]+") do
      if line:sub(1, #prefix) == prefix then got[#got + 1] = line end
    end
    return got
  end

  it("prints each attempt and wait on stderr, one line each, before or after the command's name", function()
    for _, args in ipairs({ "-v mkdir Seen", "mkdir Seen --verbose", "--quiet -v mkdir Seen" }) do
      mock:reset()
      mock:faults({ { type = "status", status = 503, headers = { ["Retry-After"] = "0" } } })
      local code, out = helper.run_fileapi(args:gsub("%-%-quiet (.*)$", "%1 --quiet"), env, { MKP_API_KEY = helper.API_KEY })
      assert.same(0, code, out)
      local sent = lines_of(out, "> ")
      assert.same(2, #sent, out)
      local host = mock.mkp_url:gsub("%p", "%%%0")
      -- {"directory":"Seen"}: 20 bytes up
      assert.matches("^> POST " .. host .. "/files 503 20 B up %d+ B down %d+%.%d%d%d s$", sent[1])
      assert.matches("^> POST " .. host .. "/files 201 20 B up %d+ B down %d+%.%d%d%d s reused %(attempt 2%)$", sent[2])
      assert.same({ "* waiting 0.0 s: the server asked (Retry-After)" }, lines_of(out, "* "))
      -- the plain waiting line is not said twice
      assert.is_nil(out:find("fileapi: waiting", 1, true), out)
      assert.matches("fsd_%w+ Seen\n", out)
    end
    -- without it, none of these lines
    local code, out = helper.run_fileapi("mkdir Unseen", env, { MKP_API_KEY = helper.API_KEY })
    assert.same(0, code, out)
    assert.matches("^fsd_%w+ Unseen\n$", out)
  end)

  it("shows a share's URL without its token, and a refused connection's kind", function()
    local code, out = helper.run_fileapi("share-mkdir Visited -v", env, { FILESRO_TOKEN = helper.EDITOR_SHARE })
    assert.same(0, code, out)
    assert.matches("> POST " .. mock.base:gsub("%p", "%%%0") .. "/api/v1/shares/%[REDACTED%]/items 201 ", out)
    assert.is_nil(out:find(helper.EDITOR_SHARE, 1, true), out)
    code, out = helper.run_fileapi("mkdir Nowhere -v --retries 0", env,
      { MKP_API_KEY = helper.API_KEY, MKP_BASE_URL = "http://127.0.0.1:" .. helper.closed_port() .. "/v1" })
    assert.same(4, code, out)
    assert.matches("> POST http://127%.0%.0%.1:%d+/v1/files network 0 B up 0 B down %d+%.%d+ s\n", out)
  end)

  it("prints a token refresh of the stored sign-in, with no token in the output", function()
    local t = mock:oauth_grant()
    assert(os.execute("mkdir -p " .. q(home .. "/config/fileapi")))
    helper.write_text(home .. "/config/fileapi/credentials.json", cjson.encode({ client_id = helper.OAUTH_CLIENT_ID,
      client_secret = helper.OAUTH_CLIENT_SECRET, access_token = t.access_token, refresh_token = t.refresh_token,
      login = "events-login", expires_at = math.floor(core.time() + 30) }), "600")
    local code, out = helper.run_fileapi("mkdir Refreshed -v", env, { MKP_API_KEY = "" })
    os.remove(home .. "/config/fileapi/credentials.json")
    assert.same(0, code, out)
    local host = mock.oauth_url:gsub("%p", "%%%0")
    assert.matches("> POST " .. host .. "/oauth/tokens 200 %d+ B up %d+ B down [%d.]+ s\n"
      .. "%* token refreshed %(self%) in [%d.]+ s\n> POST ", out)
    for _, s in ipairs({ t.access_token, t.refresh_token, helper.OAUTH_CLIENT_SECRET, helper.OAUTH_CLIENT_ID }) do
      assert.is_nil(out:find(s, 1, true), "a secret in the output")
    end
  end)

  -- files uploaded side by side (a fileapi.group inside the command), on a
  -- terminal (script(1) gives it one): a line per attempt, each whole, the
  -- batch's progress line wiped before it and drawn again after
  it("with --parallel: a line per attempt of the group's uploads, under the batch's progress line #toolchain", function()
    mock:config({ latency = 0.05 })
    local paths = {}
    for i = 1, 4 do
      paths[i] = home .. "/side-" .. i .. ".txt"
      helper.write_text(paths[i], ("s"):rep(1000 + i))
    end
    local screen = helper.tmpname(".tty")
    local inner = ("env %s %s -v upload %s --parallel 4"):format(helper.env_words(env, { MKP_API_KEY = helper.API_KEY }),
      helper.FILEAPI, table.concat(paths, " "))
    local ok = os.execute(("script -qfec %s %s >/dev/null 2>&1"):format(q(inner), q(screen)))
    local text = helper.read_file(screen) or ""
    os.remove(screen)
    assert.truthy(ok == true or ok == 0, text)
    local host = mock.mkp_url:gsub("%p", "%%%0")
    local sent = {}
    for line in text:gmatch("\r\27%[K(> POST [^\r\n]*)\r?\n") do sent[#sent + 1] = line end
    assert.same(4, #sent, text)
    for _, line in ipairs(sent) do
      assert.matches("^> POST " .. host .. "/files 201 [%d.]+ KiB up %d+ B down %d+%.%d%d%d s", line)
    end
    assert.matches("files 4/4  ", text)
    for i = 1, 4 do assert.matches("\r\27%[Kfsf_%w+ side%-" .. i .. "%.txt 100" .. i .. " text/plain\r?\n", text) end
  end)

  it("words each event as curl would: the store's outage, a refresh by a peer, its wait", function()
    local line = require("fileapi.cli.verbose").line
    assert.same("* token refreshed (peer) in 0.12 s", line({ type = "refresh", ok = true, by = "peer", seconds = 0.12 }))
    assert.same("* token refresh failed (self) after 0.50 s",
      line({ type = "refresh", ok = false, by = "self", seconds = 0.5 }))
    assert.same("* store down: connection refused", line({ type = "store", state = "down", reason = "connection refused" }))
    assert.same("* store up: answering again", line({ type = "store", state = "up" }))
    assert.same("* waiting for a token refresh under way elsewhere (at most 30.0 s)",
      line({ type = "wait", reason = "refresh", seconds = 30 }))
    assert.same("* waiting 1.5 s: the shared store", line({ type = "wait", reason = "store", seconds = 1.5 }))
  end)
end)

