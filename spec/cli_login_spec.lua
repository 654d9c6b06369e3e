-- The command line's OAuth sign-in, through real sockets against the mock:
-- `fileapi login` from the consent URL to the stored tokens every command
-- then uses and refreshes, the stored tokens shared by commands running side by side (every refresh
-- under the file lock, after reading the file again; a write that fails is
-- said; logout under the lock), and `fileapi login`'s listener (a stray,
-- forged or slow request neither ends nor holds up the sign-in; the browser
-- hears "signed in" only once the tokens are stored; the server's words
-- reach the terminal without control characters).
local helper = require "helper"
local core = require "fileapi.core"
local cjson = require "cjson"
local socket = require "socket"
local http = require "socket.http"

local SECRET = helper.OAUTH_CLIENT_SECRET
local q = helper.sh_quote

local function count(text, pattern)
  local _, n = text:gsub(pattern, "")
  return n
end

-- What a browser does with the consent URL: GET it, take the redirect.
local function open_consent(url)
  local _, status, headers = http.request({ url = url, redirect = false })
  return status, headers and headers.location
end

-- One request to a listener on 127.0.0.1:port, raw: status and body (nil
-- when nothing came back within `timeout`).
local function raw_request(port, data, timeout)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(timeout or 20)
  assert(c:send(data))
  local resp = c:receive("*a")
  c:close()
  local status, body = (resp or ""):match("^HTTP/1%.1 (%d+)[^\n]*\n.-\r\n\r\n(.*)$")
  return tonumber(status), body
end

local function get(port, target, timeout)
  return raw_request(port, "GET " .. target .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout)
end

describe("fileapi's stored sign-in #toolchain #waits", function()
  local mock, home, jobs

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function()
    mock:reset()
    home = helper.tmpname(".home")
    assert(os.execute("mkdir -p " .. q(home)))
    jobs = {}
  end)
  after_each(function()
    for _, job in ipairs(jobs) do job:kill() end
    -- a gate left shut would keep its feeding shell looping after the test
    for _, job in ipairs(jobs) do
      if job.gate then helper.write_text(job.gate, "") end
    end
    for _, job in ipairs(jobs) do job:wait(10) end
    os.execute("rm -rf " .. q(home))
  end)

  local function creds_path() return home .. "/config/fileapi/credentials.json" end

  local function cmd(args)
    return ("env %s %s %s"):format(helper.env_words({ MKP_BASE_URL = mock.mkp_url, MKP_OAUTH_BASE_URL = mock.oauth_url,
      XDG_CONFIG_HOME = home .. "/config", HOME = home, TMPDIR = home, MKP_CLIENT_SECRET = SECRET, MKP_API_KEY = "" }),
      helper.FILEAPI, args)
  end

  -- Runs a command to its end; `prefix` is shell run before it.
  local function run(args, prefix)
    local p = assert(io.popen((prefix or "") .. cmd(args) .. " 2>&1; echo \"exit $?\""))
    local out = p:read("*a")
    p:close()
    return tonumber(out:match("exit (%d+)\n$")), out
  end

  -- A command in the background.  With `gate`, its standard input gives
  -- one line once that file exists (so `upload FILE -` stops between its
  -- two uploads until the test says).
  local Job = {}
  Job.__index = Job
  function Job:text() return helper.read_file(self.out) or "" end
  function Job:status() return tonumber(helper.read_file(self.status_file) or "") end
  function Job:wait(seconds)
    local status = helper.wait_for(function() return self:status() end, seconds or 60)
    return status, self:text()
  end
  function Job:kill()
    local pid = tonumber(helper.read_file(self.pid) or "")
    if pid and not self:status() then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  local function start(args, gate)
    local job = setmetatable({ out = home .. "/job" .. (#jobs + 1) .. ".out", pid = home .. "/job" .. (#jobs + 1)
      .. ".pid", status_file = home .. "/job" .. (#jobs + 1) .. ".status", gate = gate }, Job)
    -- the gate's shell gives up after 2 minutes, whatever happens to the test
    local feed = gate and ("(n=0; while [ ! -e %s ] && [ $n -lt 2400 ]; do sleep 0.05; n=$((n+1)); done; echo gated) | ")
      :format(q(gate)) or ""
    assert(os.execute(("(%s%s > %s 2>&1 & echo $! > %s; wait $!; echo $? > %s) &"):format(feed, cmd(args),
      q(job.out), q(job.pid), q(job.status_file))))
    jobs[#jobs + 1] = job
    return job
  end

  -- Tokens as `fileapi login` leaves them, from a grant of the mock's.
  local function store(tokens, expires_in)
    assert(os.execute("mkdir -p " .. q(home .. "/config/fileapi")))
    helper.write_text(creds_path(), cjson.encode({ client_id = helper.OAUTH_CLIENT_ID, client_secret = SECRET,
      access_token = tokens.access_token, refresh_token = tokens.refresh_token, login = "test-login",
      expires_at = math.floor(core.time() + (expires_in or 3600)) }))
  end

  local function stored()
    local text = helper.read_file(creds_path())
    assert.truthy(text, "no stored tokens")
    return cjson.decode(text)
  end

  local function no_secret(text, tokens)
    for _, s in ipairs({ SECRET, tokens and tokens.access_token, tokens and tokens.refresh_token }) do
      assert.is_nil(text:find(s, 1, true), "a secret in the output")
    end
  end

  local function small_file()
    return helper.write_file(home .. "/first.txt", 1000)
  end

  -- These commands upload a file, then standard input once the gate opens:
  -- --parallel 1 sends the file before standard input is read (side by
  -- side, reading it would hold up the group until the gate opens).
  describe("commands side by side", function()
    it("two commands whose token lapses mid-run send one refresh (rotating) and both go on", function()
      mock:config({ oauth_rotate = true })
      local t = mock:oauth_grant()
      store(t)
      local file, gate = small_file(), home .. "/go"
      local a = start("upload --parallel 1 " .. q(file) .. " -", gate)
      local b = start("upload --parallel 1 " .. q(file) .. " -", gate)
      -- both made their first upload on the first token
      assert.truthy(helper.wait_for(function() return a:text():find("fsf_") and b:text():find("fsf_") end, 60),
        a:text() .. b:text())
      mock:oauth_expire()
      helper.write_text(gate, "")
      local sa, ta = a:wait(60)
      local sb, tb = b:wait(60)
      assert.same(0, sa, ta)
      assert.same(0, sb, tb)
      assert.same(2, count(ta, "fsf_%w+ "), ta)
      assert.same(2, count(tb, "fsf_%w+ "), tb)
      assert.same(1, mock:stats().token_requests)
      no_secret(ta .. tb, t)
      -- the file holds the newest tokens: the next lapse refreshes with them
      local doc = stored()
      assert.are_not.equal(t.refresh_token, doc.refresh_token)
      assert.is_true(doc.expires_at > core.time() + 3000)
      mock:oauth_expire()
      local status, text = run("mkdir Later")
      assert.same(0, status, text)
      assert.same(2, mock:stats().token_requests)
    end)

    it("a refresh waits for the lock and takes the tokens a peer wrote under it", function()
      mock:config({ oauth_rotate = true })
      local t = mock:oauth_grant()
      store(t)
      local file, gate = small_file(), home .. "/go"
      local job = start("upload --parallel 1 " .. q(file) .. " -", gate)
      assert.truthy(helper.wait_for(function() return job:text():find("fsf_") end, 60), job:text())
      -- this process is the peer: it holds the lock while the command's token lapses
      local lock = assert(core.lock_file(creds_path() .. ".lock", 10))
      mock:oauth_expire()
      helper.write_text(gate, "")
      local function uploads()
        local n = 0
        for _, r in ipairs(mock:requests()) do
          if r.method == "POST" and r.path == "/v1/files" then n = n + 1 end
        end
        return n >= 2
      end
      assert.truthy(helper.wait_for(uploads, 60))
      socket.sleep(0.3)
      local peer = mock:oauth_grant()
      local doc = stored()
      doc.access_token, doc.refresh_token = peer.access_token, peer.refresh_token
      doc.expires_at, doc.version = math.floor(core.time() + 3600), (doc.version or 0) + 1
      helper.write_text(creds_path(), cjson.encode(doc))
      lock:unlock()
      local status, text = job:wait(60)
      assert.same(0, status, text)
      assert.same(2, count(text, "fsf_%w+ "), text)
      assert.same(0, mock:stats().token_requests)
      assert.same(peer.refresh_token, stored().refresh_token)
    end)

    it("a refresh whose tokens cannot be written says so, and the stored ones stay", function()
      local t = mock:oauth_grant()
      store(t, 10) -- due for a refresh
      local before = helper.read_file(creds_path())
      -- no file may grow past 0 bytes (EFBIG, as a full disk gives ENOSPC)
      local status, text = run("mkdir Unstored", "trap '' XFSZ; ulimit -f 0; ")
      assert.same(0, status, text)
      assert.matches("fsd_%w+ Unstored", text)
      assert.same(1, mock:stats().token_requests)
      assert.matches("fileapi: warning: the refreshed tokens could not be stored[^\n]*File too large", text)
      no_secret(text, t)
      assert.same(before, helper.read_file(creds_path()))
      local p = io.popen("ls -A " .. q(home .. "/config/fileapi"))
      local names = p:read("*a")
      p:close()
      assert.same("credentials.json\ncredentials.json.lock\n", names)
    end)

    it("logout waits for the lock", function()
      store(mock:oauth_grant())
      local lock = assert(core.lock_file(creds_path() .. ".lock", 10))
      local job = start("logout")
      socket.sleep(1)
      assert.is_nil(job:status(), job:text())
      assert.truthy(helper.read_file(creds_path()))
      lock:unlock()
      local status, text = job:wait(60)
      assert.same(0, status, text)
      assert.matches("signed out", text)
      assert.is_nil(helper.read_file(creds_path()))
    end)

    it("after a logout, a running command's refresh writes nothing back", function()
      local t = mock:oauth_grant()
      store(t)
      local file, gate = small_file(), home .. "/go"
      local job = start("upload --parallel 1 " .. q(file) .. " -", gate)
      assert.truthy(helper.wait_for(function() return job:text():find("fsf_") end, 60), job:text())
      local status, text = run("logout")
      assert.same(0, status, text)
      mock:oauth_expire()
      helper.write_text(gate, "")
      status, text = job:wait(60)
      assert.same(0, status, text)
      assert.same(1, mock:stats().token_requests)
      assert.is_nil(helper.read_file(creds_path()))
    end)

    it("a refresh the token endpoint refused is kept: the next command asks for a sign-in at once", function()
      store({ access_token = "at_gone", refresh_token = "rt_unknown" }, 10)
      local status, text = run("mkdir Refused")
      assert.same(5, status, text)
      assert.same(1, mock:stats().token_requests)
      assert.same("invalid_grant", stored().oauth_error)
      status, text = run("mkdir Again")
      assert.same(5, status, text)
      assert.matches("sign in again with fileapi login", text)
      assert.same(1, mock:stats().token_requests)
    end)

    it("with no key and no stored sign-in, the error says how to sign in", function()
      local status, text = run("mkdir Nowhere")
      assert.same(2, status, text)
      assert.matches("fileapi login %-%-client%-id", text)
      assert.matches("MKP_API_KEY", text)
    end)
  end)

  describe("fileapi login's listener", function()
    -- Starts `fileapi login`; returns the job, the listener's port, the
    -- consent URL and its state.
    local function login()
      local port = helper.closed_port()
      local job = start(("login --client-id %s --redirect-uri http://127.0.0.1:%d/callback --wait 120")
        :format(helper.OAUTH_CLIENT_ID, port))
      local url = helper.wait_for(function() return job:text():match("(http://[^\n]*/oauth/authorize%?[^\n]+)") end, 60)
      assert.truthy(url, job:text())
      local state = url:match("[?&]state=([^&]+)")
      -- the listener is up once the URL is printed
      return job, port, url, state
    end

    -- The browser: the consent page redirects; the redirect's target.
    local function consent(url)
      local _, status, headers = http.request({ url = url, redirect = false })
      assert.same(302, status)
      return headers.location:match("^http://[^/]+(/.*)$")
    end

    it("answers a wrong or missing state, another path or a malformed request 4xx and goes on", function()
      local job, port, url, state = login()
      assert.same(400, (get(port, "/callback?code=stolen&state=wrong")))
      assert.same(400, (get(port, "/callback?code=stolen")))
      assert.same(400, (get(port, "/callback?error=access_denied")))
      assert.same(400, (get(port, "/callback?error=access_denied&state=wrong")))
      assert.same(404, (get(port, "/elsewhere?code=stolen&state=" .. state)))
      assert.same(400, (raw_request(port, "NONSENSE\r\n\r\n")))
      assert.same(400, (get(port, "/callback?state=" .. state)))
      assert.is_nil(job:status(), job:text())
      assert.same(0, mock:stats().token_requests)
      local status, page = get(port, consent(url))
      assert.same(200, status)
      assert.matches("Signed in", page)
      assert.truthy(helper.read_file(creds_path()), "signed in before the tokens were stored")
      local code, text = job:wait(60)
      assert.same(0, code, text)
      assert.same(1, mock:stats().token_requests)
      assert.same(helper.OAUTH_CLIENT_ID, stored().client_id)
      no_secret(text, stored())
    end)

    it("an error with this sign-in's state ends it; the server's words lose their control characters", function()
      local job, port, _, state = login()
      local desc = "\27[31mEvil\27]0;pwned\7 text \194\155" .. "6n"
      local enc = desc:gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end)
      local status, page = get(port, "/callback?error=access_denied%1B%5B2J&error_description=" .. enc
        .. "&state=" .. state)
      assert.same(200, status)
      assert.matches("not approved", page)
      local code, text = job:wait(60)
      assert.same(5, code, text)
      assert.is_nil(text:find("[%z\1-\9\11-\31\127]"), text)
      assert.is_nil(text:find("\194[\128-\159]"), text)
      assert.matches("fileapi: login: unauthorized: the sign%-in was refused: access_denied%[2J "
        .. "%(%[31mEvil%]0;pwned text 6n%)\n", text)
      assert.is_nil(helper.read_file(creds_path()))
    end)

    it("tells the browser it is signed in only once the code was exchanged", function()
      mock:config({ oauth_code_ttl = -1 }) -- every code has expired when it is exchanged
      local job, port, url = login()
      local status, page = get(port, consent(url))
      assert.same(502, status)
      assert.matches("could not get the tokens", page)
      assert.is_nil(page:find("Signed in", 1, true))
      local code, text = job:wait(60)
      assert.same(5, code, text)
      assert.matches("fileapi: login: unauthorized[^\n]*invalid or expired", text)
      assert.is_nil(helper.read_file(creds_path()))
    end)

    it("a client that sends its request slowly holds up neither the sign-in nor other requests", function()
      local job, port, url = login()
      -- a client that sends a header line every 0.2 s for a minute, and
      -- notes when the listener hung up on it
      local script, note = home .. "/slow.lua", home .. "/slow.note"
      helper.write_text(script, ([[
        local socket = require "socket"
        local c = assert(socket.connect("127.0.0.1", %d))
        local t0 = socket.gettime()
        c:send("GET /callback?state=slow HTTP/1.1\r\n")
        local f = io.open(%q, "w") f:write("connected\n") f:close()
        local why = "gave up"
        while socket.gettime() - t0 < 60 do
          if not c:send("X-Slow: 1\r\n") then why = "closed" break end
          c:settimeout(0.2)
          local _, err, partial = c:receive(1)
          if err ~= "timeout" or (partial and partial ~= "") then why = "closed" break end
        end
        f = io.open(%q, "w") f:write(why, " ", socket.gettime() - t0, "\n") f:close()
      ]]):format(port, note, note))
      assert(os.execute(("%s %s >/dev/null 2>&1 &"):format(helper.mock_lua, q(script))))
      assert.truthy(helper.wait_for(function() return helper.read_file(note) end, 30))
      -- another request is answered meanwhile, at once
      assert.same(400, (get(port, "/callback?code=stolen&state=wrong", 20)))
      -- and the slow one is hung up on after a few seconds
      local outcome = helper.wait_for(function() return (helper.read_file(note) or ""):match("^(%a+ [%d.]+)") end, 40)
      assert.matches("^closed", outcome or "still open")
      assert.is_nil(job:status(), job:text())
      local status, page = get(port, consent(url))
      assert.same(200, status)
      assert.matches("Signed in", page)
      local code, text = job:wait(60)
      assert.same(0, code, text)
    end)
  end)
end)

describe("fileapi login #toolchain #waits", function()
  local mock, home

  setup(function()
    mock = helper.start_mock()
    home = helper.tmpname(".config")
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. helper.sh_quote(home))
  end)

  local function fileapi_cmd(args, extra)
    return ("env %s %s %s"):format(helper.env_words({ MKP_BASE_URL = mock.mkp_url, MKP_OAUTH_BASE_URL = mock.oauth_url,
      XDG_CONFIG_HOME = home, MKP_CLIENT_SECRET = SECRET, MKP_API_KEY = "" }, extra), helper.FILEAPI, args)
  end

  local function run(args, extra)
    local p = assert(io.popen(fileapi_cmd(args, extra) .. " 2>&1; echo \"exit $?\""))
    local out = p:read("*a")
    p:close()
    return tonumber(out:match("exit (%d+)\n$")), out
  end

  -- Starts `fileapi login` in the background, plays the browser: fetches
  -- the printed URL, follows the redirect to the command's listener.
  local function login(extra)
    local port = helper.closed_port()
    local out, status = helper.tmpname(".login"), helper.tmpname(".status")
    assert(os.execute(("(%s > %s 2>&1; echo $? > %s) &"):format(fileapi_cmd(("login --client-id %s --redirect-uri "
      .. "http://127.0.0.1:%d/callback --wait 20"):format(helper.OAUTH_CLIENT_ID, port), extra), helper.sh_quote(out),
      helper.sh_quote(status))))
    local url = helper.wait_for(function()
      return (helper.read_file(out) or ""):match("(http://[^\n]*/oauth/authorize%?[^\n]+)")
    end, 10)
    assert.truthy(url, "no consent URL was printed")
    local code, location = open_consent(url)
    assert.same(302, code)
    local body = {}
    local _, page_status = http.request({ url = location, sink = require("ltn12").sink.table(body) })
    local code_text = helper.wait_for(function() return helper.first_line(status) end, 10)
    local text = assert(helper.read_file(out))
    os.remove(out)
    os.remove(status)
    return tonumber(code_text), text, page_status, table.concat(body)
  end

  local function stored()
    local f = io.open(home .. "/fileapi/credentials.json")
    local doc = require("cjson").decode(f:read("*a"))
    f:close()
    return doc
  end

  local function set_expiry(seconds)
    local doc = stored()
    doc.expires_at = math.floor(core.time() + seconds)
    local f = io.open(home .. "/fileapi/credentials.json", "w")
    f:write(require("cjson").encode(doc))
    f:close()
  end

  local function mode(path)
    local p = io.popen("stat -c %a " .. helper.sh_quote(path))
    local m = p:read("*l")
    p:close()
    return m
  end

  it("signs in, stores the tokens privately, and every command then uses and refreshes them", function()
    local code, out, page_status, page = login()
    assert.same(0, code, out)
    assert.same(200, page_status)
    assert.matches("You may close this tab", page)
    assert.same("700", mode(home .. "/fileapi"))
    assert.same("600", mode(home .. "/fileapi/credentials.json"))
    local doc = stored()
    assert.same(helper.OAUTH_CLIENT_ID, doc.client_id)
    assert.matches("^at_", doc.access_token)
    assert.is_nil(out:find(doc.access_token, 1, true))
    assert.is_nil(out:find(SECRET, 1, true))
    assert.same(1, mock:stats().token_requests)

    local file = helper.write_file(helper.tmpname(".txt"), 3000)
    local status, text = run("upload " .. helper.sh_quote(file))
    assert.same(0, status, text)
    assert.matches("fsf_%w+ ", text)
    assert.same(1, mock:stats().token_requests)

    -- at expiry: refreshed once, written back
    set_expiry(10)
    status, text = run("mkdir AfterExpiry")
    assert.same(0, status, text)
    assert.same(2, mock:stats().token_requests)
    assert.is_true(stored().expires_at > os.time() + 3000)
    assert.same(doc.refresh_token, stored().refresh_token)

    -- two commands at the same expiry: one refresh
    set_expiry(10)
    local a, b = helper.tmpname(".a"), helper.tmpname(".b")
    assert(os.execute(("(%s > %s 2>&1 &) ; %s > %s 2>&1; sleep 0.5; wait"):format(fileapi_cmd("mkdir One"),
      helper.sh_quote(a), fileapi_cmd("mkdir Two"), helper.sh_quote(b))))
    for _ = 1, 100 do
      local fa, fb = io.open(a), io.open(b)
      local ta, tb = fa and fa:read("*a") or "", fb and fb:read("*a") or ""
      if fa then fa:close() end
      if fb then fb:close() end
      if ta:find("fsd_") and tb:find("fsd_") then break end
      require("socket").sleep(0.05)
    end
    assert.matches("fsd_%w+ One", io.open(a):read("*a"))
    assert.matches("fsd_%w+ Two", io.open(b):read("*a"))
    assert.same(3, mock:stats().token_requests)
    os.remove(a)
    os.remove(b)
    os.remove(file)

    status, text = run("logout")
    assert.same(0, status, text)
    assert.is_nil(io.open(home .. "/fileapi/credentials.json"))
  end)

  it("a rejected consent: one line and a non-zero exit", function()
    mock:config({ oauth_decline = true })
    local code, out, _, page = login()
    assert.same(5, code)
    assert.matches("not approved", page)
    local lines = {}
    for line in out:gmatch("[^\n]+") do
      if line:find("^fileapi:") then lines[#lines + 1] = line end
    end
    assert.same({ "fileapi: login: unauthorized: the sign-in was refused: access_denied (The user declined.)" }, lines)
    assert.is_nil(io.open(home .. "/fileapi/credentials.json"))
  end)
end)
