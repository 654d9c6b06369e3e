-- `fileapi mock` as a user runs it: the command of the installed rock (a
-- fresh tree, `luarocks path`), in sh, `eval "$(fileapi mock --daemon)"`;
-- then the command and a Lua script of the user's against it, faults
-- posted with curl, its latency and rate limit, and its end: SIGTERM to the
-- daemon or to the foreground, Ctrl-C to the foreground's process group.
local helper = require "helper"
local socket = require "socket"

local q = helper.sh_quote
local NAMES = { "MKP_BASE_URL", "MKP_API_KEY", "MKP_OAUTH_BASE_URL", "MKP_CLIENT_ID", "MKP_CLIENT_SECRET",
  "FILESRO_BASE_URL", "FILESRO_TOKEN", "FILESRO_API_TOKEN", "FILESRO_EMAIL", "FILESRO_PASSWORD", "FILEAPI_MOCK_PID" }

local function running(pid)
  return pid ~= nil and require("fileapi.mock.proc").running(pid)
end

local function listening(port)
  local c = socket.connect("127.0.0.1", tonumber(port))
  if c then c:close() end
  return c ~= nil
end

-- NAME=value of `export NAME=value` lines as a shell reads them back.
local function variables(text)
  local out, names = {}, {}
  for name, value in text:gmatch("export (%u[%u_]*)=([^\n]*)") do
    names[#names + 1] = name
    out[name] = value:match("^'(.*)'$") and value:match("^'(.*)'$"):gsub("'\\''", "'") or value
  end
  return out, names
end

-- A user's script, run with the variables the mock exported.
local JOB = [[
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local drive = require "fileapi.drive"
local mkp = assert(files.new({ api_key = os.getenv("MKP_API_KEY"), base_url = os.getenv("MKP_BASE_URL") }))
print("script mkdir", assert(mkp:mkdir("From a script")).id)
local share = assert(shares.new({ token = os.getenv("FILESRO_TOKEN"), base_url = os.getenv("FILESRO_BASE_URL") }))
print("script share mkdir", assert(share:mkdir("Inbox")).name)
print("script owner", assert(drive.new({ base_url = os.getenv("FILESRO_BASE_URL") }):me()).email)
]]

describe("fileapi mock, from the installed rock #children #toolchain", function()
  local rock, dir, n = nil, nil, 0

  setup(function()
    rock = helper.installed_rock()
    assert(rock.ok, rock.log)
    dir = helper.tmpname(".mockcli")
    assert(os.execute("mkdir -p " .. q(dir)))
  end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  -- A sh script in a folder of its own, as a user's shell: the rock's tree
  -- on the paths, a fresh HOME, none of the variables set beforehand; a
  -- daemon it starts is recorded for spec/run.sh, and killed at the end.
  local function sh(script, files)
    n = n + 1
    local here = ("%s/%d"):format(dir, n)
    assert(os.execute("mkdir -p " .. q(here)))
    for name, text in pairs(files or {}) do helper.write_text(here .. "/" .. name, text) end
    local unset = {}
    for _, name in ipairs(NAMES) do unset[#unset + 1] = "-u " .. name end
    local run_dir = os.getenv("FILEAPI_RUN_DIR")
    local text = table.concat({ "set -e", rock.path(),
      run_dir and ("FILEAPI_RUN_DIR=%s; . %s"):format(q(run_dir), q(helper.support .. "/pid_file.sh")) or "",
      "remember() { " .. (run_dir and 'remember_pid "mockcli-$1" "$1"' or ":") .. "; }",
      script }, "\n")
    helper.write_text(here .. "/try.sh", text .. "\n")
    local code, out = helper.run_sh(("cd %s && env %s HOME=%s XDG_CONFIG_HOME=%s sh try.sh"):format(q(here),
      table.concat(unset, " "), q(here), q(here .. "/config")))
    return code, out, here
  end

  it("eval \"$(fileapi mock --port 0 --daemon)\" exports its variables and serves the command and a script until "
    .. "killed, then nothing is left", function()
    local code, out, here = sh([[
      eval "$(fileapi mock --port 0 --daemon)"
      remember "$FILEAPI_MOCK_PID"
      for name in MKP_BASE_URL MKP_API_KEY MKP_OAUTH_BASE_URL MKP_CLIENT_ID MKP_CLIENT_SECRET FILESRO_BASE_URL \
          FILESRO_TOKEN FILESRO_API_TOKEN FILESRO_EMAIL FILESRO_PASSWORD FILEAPI_MOCK_PID; do
        eval "echo \"$name=\$$name\""
      done
      curl -fsS "$FILESRO_BASE_URL/_mock/stats" >stats.json
      echo "report 42" >report.txt
      dir=$(fileapi mkdir Reports | cut -d " " -f 1)
      echo "made $dir"
      fileapi upload report.txt --dir "$dir"
      fileapi share-upload report.txt
      ]] .. helper.lua .. [[ job.lua
      kill "$FILEAPI_MOCK_PID"
    ]], { ["job.lua"] = JOB })
    assert.same(0, code, out)
    local vars = {}
    for name, value in out:gmatch("(%u[%u_]+)=([^\n]*)") do vars[name] = value end
    for _, name in ipairs(NAMES) do assert.truthy(vars[name] and vars[name] ~= "", name .. "\n" .. out) end
    assert.same("test-key", vars.MKP_API_KEY)
    assert.same("correct horse battery", vars.FILESRO_PASSWORD)
    local port = assert(vars.FILESRO_BASE_URL:match("^http://127%.0%.0%.1:(%d+)$"))
    assert.same("http://127.0.0.1:" .. port .. "/v1", vars.MKP_BASE_URL)
    assert.matches("^http://127%.0%.0%.1:%d+$", vars.MKP_OAUTH_BASE_URL)
    assert.matches("made fsd_%w+\n", out)
    assert.matches("fsf_%w+ report%.txt 10 text/plain\n", out)
    assert.matches("%x+%-[%x-]+ report txt\n", out)
    assert.matches("script mkdir\tfsd_%w+\n", out)
    assert.matches("script share mkdir\tInbox\n", out)
    assert.matches("script owner\towner@example%.com\n", out)
    -- killed: the command's process and the mock's own are gone, every port closed
    local server_pid = tostring(require("cjson").decode(helper.read_file(here .. "/stats.json")).pid)
    local oauth_port = vars.MKP_OAUTH_BASE_URL:match(":(%d+)$")
    assert.truthy(helper.wait_for(function()
      return not running(vars.FILEAPI_MOCK_PID) and not running(server_pid) and not listening(port)
        and not listening(oauth_port)
    end, 20), "still running or listening after kill")
  end)

  it("a fault posted with curl to /_mock/faults is seen by the client: a 503 waited out, a 500 surfaced", function()
    local code, out = sh([[
      eval "$(fileapi mock --daemon)"
      remember "$FILEAPI_MOCK_PID"
      trap 'kill "$FILEAPI_MOCK_PID"' EXIT
      curl -fsS -o /dev/null -d '[{"type":"status","status":503,"retry_after":1}]' "$FILESRO_BASE_URL/_mock/faults"
      start=$(date +%s%N)
      fileapi mkdir Retried
      echo "took $(( ($(date +%s%N) - start) / 1000000 )) ms"
      curl -fsS -o /dev/null -d '[{"type":"status","status":500,"message":"boom"}]' "$FILESRO_BASE_URL/_mock/faults"
      status=0
      fileapi mkdir Failed || status=$?
      echo "status $status"
      curl -fsS "$FILESRO_BASE_URL/_mock/requests" >requests.json
      ]] .. helper.lua .. [[ -e 'local n = 0
        for _ in io.open("requests.json"):read("*a"):gmatch("\"method\"") do n = n + 1 end
        print("requests " .. n)'
      curl -sS -d '[{"type":"nonsense"}]' "$FILESRO_BASE_URL/_mock/faults"
      curl -sS -d '[{"type":"stall","seconds":"x"}]' "$FILESRO_BASE_URL/_mock/faults"
    ]])
    assert.same(0, code, out)
    assert.matches("fsd_%w+ Retried\n", out)
    local ms = tonumber(out:match("took (%d+) ms"))
    assert.is_true(ms >= 900, out) -- Retry-After: 1, waited before the second attempt
    assert.matches("status 10\n", out) -- a server error (500): not retried, surfaced
    assert.matches("HTTP 500", out)
    assert.matches("requests 3\n", out) -- 503, the retry, the 500
    assert.matches('"message":"fault 1: type must be one of status, refuse', out)
    -- a field of the wrong type is refused when posted, not met by a request later
    assert.matches('"message":"fault 1: seconds must be a number >= 0"', out)
  end)

  it("--latency MS delays every API answer", function()
    local code, out = sh([[
      eval "$(fileapi mock --daemon --latency 400)"
      remember "$FILEAPI_MOCK_PID"
      trap 'kill "$FILEAPI_MOCK_PID"' EXIT
      ]] .. helper.lua .. [[ -e '
        local socket = require "socket"
        local files = require "fileapi.files"
        local c = assert(files.new({ api_key = os.getenv("MKP_API_KEY"), base_url = os.getenv("MKP_BASE_URL") }))
        local t = socket.gettime()
        for i = 1, 3 do assert(c:mkdir("slow " .. i)) end
        print(("3 mkdirs %.3f s"):format(socket.gettime() - t))'
    ]])
    assert.same(0, code, out)
    local seconds = tonumber(out:match("3 mkdirs ([%d.]+) s"))
    assert.is_true(seconds >= 1.2, out) -- 3 x 400 ms at least, whatever the load
  end)

  it("--rate-limit N/SECONDS: X-RateLimit headers on every answer; a client on that window paces, no 429", function()
    local code, out = sh([[
      eval "$(fileapi mock --daemon --rate-limit 3/2)"
      remember "$FILEAPI_MOCK_PID"
      trap 'kill "$FILEAPI_MOCK_PID"' EXIT
      ]] .. helper.lua .. [[ -e '
        local socket = require "socket"
        local files = require "fileapi.files"
        local c = assert(files.new({ api_key = os.getenv("MKP_API_KEY"), base_url = os.getenv("MKP_BASE_URL"),
          rate_window = 2 }))
        local t = socket.gettime()
        for i = 1, 6 do assert(c:mkdir("paced " .. i)) end
        print(("6 mkdirs %.3f s, limit %d"):format(socket.gettime() - t, c:rate_limit().limit))'
      curl -fsS "$FILESRO_BASE_URL/_mock/stats"
      sleep 2.5 # the window passed: a request as the only one in it
      curl -sS -i -H "Authorization: Bearer $MKP_API_KEY" "$MKP_BASE_URL/files/fsd_missing0001" | tr -d '\r'
    ]])
    assert.same(0, code, out)
    assert.matches("HTTP/1%.1 404 Not Found\n", out)
    assert.matches("\nX%-RateLimit%-Limit: 3\n", out)
    assert.matches("\nX%-RateLimit%-Remaining: 2\n", out)
    local seconds = tonumber(out:match("6 mkdirs ([%d.]+) s, limit 3"))
    assert.is_true(seconds >= 1.5, out) -- 6 in windows of 3 per 2 s
    assert.matches('"rejected":0[,}]', out)
  end)

  it("--port N: the API on N, the OAuth host on N+1, download links on N+2; a port in use is said", function()
    -- three free ports in a row
    local port
    repeat
      port = tonumber(helper.closed_port())
      local free = port < 65533
      for p = port + 1, port + 2 do
        local s = free and socket.bind("127.0.0.1", p)
        if s then s:close() else free = false end
      end
    until free
    local code, out = sh(([[
      eval "$(fileapi mock --daemon --port %d)"
      remember "$FILEAPI_MOCK_PID"
      echo "api $FILESRO_BASE_URL oauth $MKP_OAUTH_BASE_URL"
      status=0
      fileapi mock --daemon --port %d 2>err.txt || status=$?
      echo "again: status $status: $(cat err.txt)"
      kill "$FILEAPI_MOCK_PID"
      status=0
      fileapi mock --daemon --port 65535 2>err.txt || status=$?
      echo "too high: status $status: $(cat err.txt)"
    ]]):format(port, port))
    assert.same(0, code, out)
    assert.matches(("api http://127%%.0%%.0%%.1:%d oauth http://127%%.0%%.0%%.1:%d\n"):format(port, port + 1), out)
    assert.matches("again: status 4: fileapi mock: the mock could not start: port " .. port .. ": address already in use",
      out)
    -- its neighbours must be ports too
    assert.matches("too high: status 2: fileapi: %-%-port must be 0 %(free ports%) or a port up to 65533", out)
  end)

  -- The foreground, started as a shell starts a job; its pid and its mock's.
  local function foreground(here)
    local pidfile = here .. "/fg.pid"
    assert(os.execute(("cd %s && %s && { setsid sh -c 'echo $$ >%s; exec fileapi mock >out.txt 2>err.txt' ; echo $? >rc.txt; } &")
      :format(q(here), rock.path(), q(pidfile))))
    local vars = helper.wait_for(function()
      local v = variables(helper.read_file(here .. "/out.txt") or "")
      return v.FILEAPI_MOCK_PID and v
    end, 30)
    assert.truthy(vars, helper.read_file(here .. "/err.txt"))
    helper.remember_pid("mockcli-" .. vars.FILEAPI_MOCK_PID, vars.FILEAPI_MOCK_PID)
    local port = vars.FILESRO_BASE_URL:match(":(%d+)$")
    local stats = helper.wait_for(function()
      local ok, body = helper.http_get(vars.FILESRO_BASE_URL .. "/_mock/stats")
      return ok == 200 and body
    end, 10)
    return vars, port, tostring(require("cjson").decode(stats).pid)
  end

  local function ended(here, vars, port, server_pid)
    local rc = helper.wait_for(function() return helper.first_line(here .. "/rc.txt") end, 20)
    assert.same("0", rc, helper.read_file(here .. "/err.txt"))
    assert.is_false(running(vars.FILEAPI_MOCK_PID))
    assert.truthy(helper.wait_for(function() return not running(server_pid) end, 10), "the mock's process is left")
    assert.is_false(listening(port))
    assert.is_nil((helper.read_file(here .. "/err.txt") or ""):find("interrupted", 1, true))
  end

  it("in the foreground, prints its variables first, and SIGTERM ends it: status 0, ports closed, no process left",
    function()
    n = n + 1
    local here = ("%s/%d"):format(dir, n)
    assert(os.execute("mkdir -p " .. q(here)))
    local vars, port, server_pid = foreground(here)
    local text = helper.read_file(here .. "/out.txt")
    local _, names = variables(text)
    assert.same(NAMES, names)
    assert.matches("^export MKP_BASE_URL=http://127%.0%.0%.1:%d+/v1\n", text)
    assert.matches("\nexport FILESRO_API_TOKEN='1|ownerTestToken%w+'\n", text)
    os.execute("kill -TERM " .. vars.FILEAPI_MOCK_PID)
    ended(here, vars, port, server_pid)
  end)

  it("in the foreground, Ctrl-C (SIGINT to its process group) ends it: status 0, ports closed, no process left",
    function()
    n = n + 1
    local here = ("%s/%d"):format(dir, n)
    assert(os.execute("mkdir -p " .. q(here)))
    local vars, port, server_pid = foreground(here)
    local group = helper.first_line(here .. "/fg.pid")
    os.execute("kill -INT -" .. group)
    ended(here, vars, port, server_pid)
  end)
end)
