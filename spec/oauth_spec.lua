-- MijnKlantportaal for third-party applications: the consent URL, the code
-- exchange, tokens that refresh themselves (before expiry, once after a
-- 401), refusals that stop at once, and secrets that appear nowhere.
local helper = require "helper"
local files = require "fileapi.files"
local core = require "fileapi.core"
local http = require "socket.http"

local CLIENT_ID, SECRET = "app_test", "app-secret-7f3k"

local function query_of(url)
  local out = {}
  for k, v in (url:match("%?(.*)$") or ""):gmatch("([^&=]+)=([^&]*)") do
    out[k] = v:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  end
  return out
end

-- What a browser does with the consent URL: GET it, take the redirect.
local function consent(url)
  local _, status, headers = http.request({ url = url, redirect = false })
  return status, headers and headers.location
end

describe("OAuth #waits", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  local function client(tokens, extra)
    local opts = { base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0,
      oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = tokens.access_token,
        refresh_token = tokens.refresh_token, expires_at = tokens.expires_at } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return assert(files.new(opts))
  end

  local function granted(ttl)
    local t = mock:oauth_grant()
    t.expires_at = math.floor(core.time() + (ttl or t.expires_in))
    return t
  end

  local function api_requests()
    local n = 0
    for _, r in ipairs(mock:requests()) do
      if not r.manage and r.path:find("^/v1/") then n = n + 1 end
    end
    return n
  end

  describe("the consent URL", function()
    it("carries exactly the documented parameters, percent-encoded", function()
      local url, state = files.authorize_url({ client_id = CLIENT_ID, redirect_uri = "https://app.example/cb?x=1",
        scope = { "files.read", "files.write" }, prompt = "login" })
      assert.matches("^https://manage%.mijnklantportaal%.nl/oauth/authorize%?", url)
      assert.matches("scope=files%.read%%20files%.write", url)
      assert.matches("redirect_uri=https%%3A%%2F%%2Fapp%.example%%2Fcb%%3Fx%%3D1", url)
      local q = query_of(url)
      assert.same({ client_id = CLIENT_ID, redirect_uri = "https://app.example/cb?x=1", state = state,
        scope = "files.read files.write", response_type = "code", prompt = "login" }, q)
      assert.matches("^[a-z0-9]+$", state)
      assert.same(26, #state) -- 26 of 36 characters: 134 bits
      local _, other = files.authorize_url({ client_id = CLIENT_ID, redirect_uri = "https://a.example/", scope = "files.read" })
      assert.are_not.equal(state, other)
      local given = files.authorize_url({ client_id = CLIENT_ID, redirect_uri = "https://a.example/",
        scope = "files.read", state = "s 1", oauth_base_url = mock.oauth_url })
      assert.matches("^" .. mock.oauth_url:gsub("%p", "%%%0") .. "/oauth/authorize%?", given)
      assert.same("s 1", query_of(given).state)
      assert.is_nil(query_of(given).prompt)
    end)

    it("refuses bad values before anything is made", function()
      for _, bad in ipairs({ { client_id = "", redirect_uri = "https://a/", scope = "files.read" },
          { client_id = "x", redirect_uri = "ftp://a/", scope = "files.read" },
          { client_id = "x", redirect_uri = "https://a/", scope = {} },
          { client_id = "x", redirect_uri = "https://a/", scope = "files read" },
          { client_id = "x", redirect_uri = "https://a/", scope = "files.read", prompt = "never" } }) do
        local url, err = files.authorize_url(bad)
        assert.is_nil(url)
        assert.same("invalid_argument", err.kind)
      end
      assert.has_error(function() files.authorize_url({ client_id = "x", redirect_uri = "https://a/", scope = 5 }) end)
      assert.has_error(function() files.authorize_url({ client_id = "x", typo = 1 }) end)
    end)

    it("check_state compares in full", function()
      assert.is_true(files.check_state("abc", "abc"))
      assert.is_false(files.check_state("abc", "abd"))
      assert.is_false(files.check_state("abc", "ab"))
      assert.is_false(files.check_state("abc", "abcd"))
      assert.is_false(files.check_state("abc", nil))
      assert.is_false(files.check_state("", ""))
    end)
  end)

  it("the code from the consent page is exchanged once for tokens", function()
    local url, state = files.authorize_url({ client_id = CLIENT_ID, redirect_uri = "http://127.0.0.1:9/cb",
      scope = "files.write", oauth_base_url = mock.oauth_url })
    local status, location = consent(url)
    assert.same(302, status)
    local back = query_of(location)
    assert.is_true(files.check_state(state, back.state))
    local tokens = assert(files.exchange_code({ client_id = CLIENT_ID, client_secret = SECRET,
      redirect_uri = "http://127.0.0.1:9/cb", code = back.code, oauth_base_url = mock.oauth_url }))
    assert.matches("^at_", tokens.access_token)
    assert.matches("^rt_", tokens.refresh_token)
    assert.same(3600, tokens.expires_in)
    assert.is_true(math.abs(tokens.expires_at - (os.time() + 3600)) <= 2)
    local rec = mock:last_request()
    assert.same("POST", rec.method)
    assert.same("/oauth/tokens", rec.path)
    assert.same("application/json", rec.headers["content-type"])
    assert.same({ grant_type = "authorization_code", client_id = CLIENT_ID, client_secret = SECRET,
      redirect_uri = "http://127.0.0.1:9/cb", code = back.code }, require("cjson").decode(rec.body))
    -- single use: the same code again is refused
    local again, err = files.exchange_code({ client_id = CLIENT_ID, client_secret = SECRET,
      redirect_uri = "http://127.0.0.1:9/cb", code = back.code, oauth_base_url = mock.oauth_url })
    assert.is_nil(again)
    assert.same("unauthorized", err.kind)
    assert.same("invalid_grant", err.oauth_error)
    assert.is_nil(tostring(err):find(SECRET, 1, true))
    assert.is_nil(tostring(err):find(back.code, 1, true))
  end)

  it("a declined consent comes back as error and state", function()
    mock:config({ oauth_decline = true })
    local url, state = files.authorize_url({ client_id = CLIENT_ID, redirect_uri = "http://127.0.0.1:9/cb",
      scope = "files.read", oauth_base_url = mock.oauth_url })
    local _, location = consent(url)
    local back = query_of(location)
    assert.same("access_denied", back.error)
    assert.is_true(files.check_state(state, back.state))
  end)

  it("a token that expires within a minute is refreshed first: one token request, then the call", function()
    local c = client(granted(30))
    assert(c:mkdir("x"))
    local stats = mock:stats()
    assert.same(1, stats.token_requests)
    assert.same(1, api_requests())
    assert.same(1, c:token_info().refreshes)
    assert.is_true(c:token_info().expires_at > os.time() + 3000)
    assert(c:mkdir("y")) -- fresh now: no other refresh
    assert.same(1, mock:stats().token_requests)
    c:close()
  end)

  for _, case in ipairs({ "mkdir", "upload from a path" }) do
    it("a 401 refreshes once and sends the call once more (" .. case .. ")", function()
      local t = granted()
      t.access_token = "at_revoked_by_the_server"
      local seen = {}
      local c = client(t, { on_tokens = function(tokens) seen[#seen + 1] = tokens end })
      local path = helper.write_file(helper.tmpname(".bin"), 200000)
      local item, err
      if case == "mkdir" then item, err = c:mkdir("again") else item, err = c:upload(path) end
      os.remove(path)
      assert.truthy(item, err and tostring(err))
      assert.same(2, api_requests())
      assert.same(1, mock:stats().token_requests)
      assert.same(1, #seen)
      assert.same(t.refresh_token, seen[1].refresh_token) -- no new one sent: the old one is kept
      assert.are_not.equal("at_revoked_by_the_server", seen[1].access_token)
      c:close()
    end)
  end

  it("a reader without rewind cannot be sent again: the 401 comes back", function()
    local t = granted()
    t.access_token = "at_revoked_by_the_server"
    local c = client(t)
    local done = false
    local _, err = c:upload({ size = 3, filename = "r.txt", reader = function()
      if done then return nil end
      done = true
      return "abc"
    end })
    assert.same("unauthorized", err.kind)
    assert.same(401, err.status)
    assert.same(1, api_requests())
    c:close()
  end)

  it("a refresh answer with a new refresh token replaces the old one", function()
    mock:config({ oauth_rotate = true })
    local t = granted(10)
    local seen = {}
    local c = client(t, { on_tokens = function(tokens) seen[#seen + 1] = tokens end })
    assert(c:mkdir("a"))
    assert.are_not.equal(t.refresh_token, seen[1].refresh_token)
    -- the next refresh must use the new one: the old one is dead at the server
    c:set_tokens({ access_token = "at_gone", refresh_token = seen[1].refresh_token, expires_in = 5 })
    assert(c:mkdir("b"))
    assert.same(2, mock:stats().token_requests)
    c:close()
  end)

  it("invalid_grant: unauthorized, not retried, and later calls fail fast until set_tokens", function()
    local t = granted(10)
    t.refresh_token = "rt_dead"
    local c = client(t, { retries = 3 })
    local _, err = c:mkdir("x")
    assert.same("unauthorized", err.kind)
    assert.same("invalid_grant", err.oauth_error)
    assert.same("The refresh token is invalid.", err.message)
    assert.is_false(err.retryable)
    assert.same(1, mock:stats().token_requests)
    local started = core.now()
    local _, again = c:mkdir("y")
    assert.same("invalid_grant", again.oauth_error)
    assert.is_true(core.now() - started < 0.1)
    assert.same(1, mock:stats().token_requests)
    assert.same(0, api_requests())
    assert(c:set_tokens(granted()))
    assert(c:mkdir("z"))
    c:close()
  end)

  it("a token endpoint that fails (5xx, slow) is temporary: the tokens stay, the next call refreshes", function()
    mock:faults({ { type = "status", status = 503, path = "/oauth/tokens" } })
    local c = client(granted(10), { retries = 0, timeout = 5 })
    local _, err = c:mkdir("x")
    assert.same("server", err.kind)
    assert.is_true(err.retryable)
    assert(c:mkdir("y"))
    c:close()
  end)

  it("api_key and oauth exclude each other; the oauth table is checked", function()
    local c, err = files.new({ api_key = "k", oauth = { client_id = "a" } })
    assert.is_nil(c)
    assert.same("invalid_argument", err.kind)
    c, err = files.new({ oauth = { client_id = "a", client_secret = "b" } })
    assert.is_nil(c)
    assert.matches("refresh_token", err.message)
    assert.has_error(function() files.new({ oauth = { client_id = "a", typo = "b" } }) end)
    assert.has_error(function() files.new({ oauth = { client_id = 5 } }) end)
  end)

  it("a token endpoint's words naming the client id, the secret or the code show none of them (exchange and refresh)",
    function()
    local echo = '{"error":"invalid_client","error_description":"unknown client ' .. CLIENT_ID .. ' with secret '
      .. SECRET .. ' for %s"}'
    mock:faults({ { type = "status", status = 401, path = "/oauth/tokens", body = echo:format("code_abc123") } })
    local tokens, err = files.exchange_code({ client_id = CLIENT_ID, client_secret = SECRET,
      redirect_uri = "http://127.0.0.1:9/cb", code = "code_abc123", oauth_base_url = mock.oauth_url })
    assert.is_nil(tokens)
    assert.same("invalid_client", err.oauth_error)
    assert.matches("unknown client [REDACTED] with secret [REDACTED] for [REDACTED]", err.message, 1, true)
    local t = granted(10)
    mock:faults({ { type = "status", status = 401, path = "/oauth/tokens", body = echo:format(t.refresh_token) } })
    local c = client(t)
    local _, rerr = c:mkdir("x")
    assert.same("invalid_client", rerr.oauth_error)
    for _, e in ipairs({ err, rerr }) do
      for _, secret in ipairs({ CLIENT_ID, SECRET, "code_abc123", t.refresh_token }) do
        assert.is_nil(tostring(e):find(secret, 1, true), secret)
      end
    end
    c:close()
  end)

  it("a long-lived client redacts with a bounded list: 100 refreshes later, the newest tokens are still scrubbed",
    function()
    -- a token that lives 60 s is never fresh (REFRESH_AHEAD is 60 s): every call refreshes
    mock:config({ oauth_rotate = true, oauth_token_ttl = 60 })
    local latest
    local c = client(granted(10), { rate_limit = false, on_tokens = function(t) latest = t end })
    local held = {}
    for i = 1, 100 do
      assert(c:mkdir("r" .. i))
      held[i] = c.engine:secret_count()
    end
    assert.same(100, mock:stats().token_requests)
    -- the configured four (client id and secret, the first tokens), and the newest rotating ones
    assert.is_true(held[100] <= 4 + require("fileapi.util").MAX_ROTATING, held[100])
    assert.same(held[50], held[100])
    mock:faults({ { type = "status", status = 500, path = "/v1/files",
      body = '{"message":"echo ' .. latest.refresh_token .. ' ' .. latest.access_token .. '"}' } })
    local _, err = c:mkdir("x")
    assert.same("echo [REDACTED] [REDACTED]", err.message)
    c:close()
  end)

  it("an on_tokens that raises is reported as one warning, scrubbed of the client's secrets; calls go on #children",
    function()
    mock:config({ oauth_rotate = true })
    local t = granted(10)
    local doc = { base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0, on_tokens_raise = true,
      oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = t.access_token,
        refresh_token = t.refresh_token, expires_at = t.expires_at } }
    local code, text = helper.run_lua(helper.sh_quote(helper.support .. "/fleet_client.lua"),
      { FLEET_MODE = "oauth", FLEET_CALLS = "2", FLEET_DOC = require("cjson").encode(doc) })
    local results, other = helper.json_lines(text)
    assert.same(0, code, text)
    assert.same(2, #results)
    assert.is_true(results[1].ok and results[2].ok, text)
    local _, warnings = other:gsub("fileapi: on_tokens raised: ", "")
    assert.same(1, warnings, other)
    assert.matches("could not keep [REDACTED] of [REDACTED] (disk full)", other, 1, true)
    for _, secret in ipairs({ CLIENT_ID, SECRET, t.refresh_token, t.access_token }) do
      assert.is_nil(other:find(secret, 1, true), secret)
    end
  end)

  it("no secret in errors, messages, token_info or any table pairs() reaches", function()
    local t = granted(10)
    local c = client(t, { retries = 0 })
    assert(c:mkdir("ok"))
    mock:faults({ { type = "status", status = 500, path = "/v1/files",
      body = '{"message":"echo ' .. t.refresh_token .. ' ' .. SECRET .. '"}' } })
    local _, err = c:mkdir("x")
    local texts = { tostring(err), err.message }
    local seen = {}
    local function walk(v, depth)
      if depth > 6 or seen[v] then return end
      seen[v] = true
      for k, x in pairs(v) do
        texts[#texts + 1] = tostring(k)
        if type(x) == "string" then texts[#texts + 1] = x elseif type(x) == "table" then walk(x, depth + 1) end
      end
    end
    walk(c, 0)
    walk(c:token_info(), 0)
    local all = table.concat(texts, "\n")
    for _, secret in ipairs({ SECRET, t.refresh_token, t.access_token }) do
      assert.is_nil(all:find(secret, 1, true), secret)
    end
    c:close()
  end)
end)

describe("OAuth inside nginx #nginx #waits", function()
  local mock, nginx

  setup(function()
    mock = helper.start_mock()
    nginx = helper.start_test_nginx(mock, { workers = 4 })
  end)
  teardown(function()
    if nginx then nginx:stop() end
    mock:stop()
  end)

  it("4 workers sharing token_dict, 200 concurrent calls, the token expiring mid-run: one refresh", function()
    local t = mock:oauth_grant()
    -- fresh for half a second more (REFRESH_AHEAD is 60 s); the calls start
    -- over the next 2.5 s, so the refresh falls in the middle of the run
    local expires_at = core.time() + 60.5
    local doc = require("cjson").encode({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url,
      oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = t.access_token,
        refresh_token = t.refresh_token, expires_at = expires_at } })
    local body = helper.tmpname(".json")
    local f = io.open(body, "w")
    f:write(doc)
    f:close()
    local out = helper.tmpname(".out")
    local started = core.now()
    assert(os.execute(("seq 200 | xargs -P 40 -I{} sh -c 'sleep $(( {} / 80 )).$(( {} %% 80 / 8 )); curl -s --max-time 60 -X POST"
      .. " --data-binary @%s %s; echo' >> %s"):format(helper.sh_quote(body), helper.sh_quote(nginx:url("/oauth_mkdir")),
      helper.sh_quote(out))))
    local elapsed = core.now() - started
    local ok, failed, workers = 0, {}, {}
    for line in io.lines(out) do
      if line ~= "" then
        local d = require("cjson").decode(line)
        if d.ok then ok = ok + 1 else failed[#failed + 1] = line end
        workers[d.worker] = true
      end
    end
    os.remove(out)
    os.remove(body)
    local n = 0
    for _ in pairs(workers) do n = n + 1 end
    local stats = mock:stats()
    local log = nginx:log_tail(5000)
    local _, on_tokens = log:gsub("on_tokens ran in this worker", "")
    for _, secret in ipairs({ SECRET, t.refresh_token, t.access_token }) do
      assert.is_nil(log:find(secret, 1, true), "a secret in nginx's log")
    end
    print(("      %d calls over %d workers in %.2f s: %d ok, %d token requests, on_tokens ran %d time(s)"):format(
      ok + #failed, n, elapsed, ok, stats.token_requests, on_tokens))
    assert.same(200, ok, table.concat(failed, "\n"))
    assert.same(1, stats.token_requests)
    assert.same(1, on_tokens)
    assert.is_true(n >= 2, n)
  end)

  local cjson = require "cjson"

  -- n POSTs to /oauth_fleet, `every` seconds apart (each in the
  -- background), of the documents in `docs` by turns; the decoded answers
  -- once all are back.
  local function spread(docs, n, every)
    local bodies, script, out = {}, helper.tmpname(".sh"), helper.tmpname(".out")
    for i, doc in ipairs(docs) do
      bodies[i] = helper.tmpname(".json")
      local f = assert(io.open(bodies[i], "w"))
      f:write(cjson.encode(doc))
      f:close()
    end
    local f = assert(io.open(script, "w"))
    for i = 1, n do
      f:write(("(sleep %.3f; curl -s --max-time 60 -X POST --data-binary @%s %s; echo) >>%s &\n"):format((i - 1) * every,
        helper.sh_quote(bodies[(i - 1) % #bodies + 1]), helper.sh_quote(nginx:url("/oauth_fleet")), helper.sh_quote(out)))
    end
    f:write("wait\n")
    f:close()
    assert(os.execute("sh " .. helper.sh_quote(script)))
    local answers = helper.json_lines(io.open(out):read("*a"))
    for _, p in ipairs(bodies) do os.remove(p) end
    os.remove(script)
    os.remove(out)
    return answers
  end

  local function doc_for(name, t, extra)
    local doc = { name = name, base_url = mock.mkp_url, oauth_base_url = mock.oauth_url,
      oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = t.access_token,
        refresh_token = t.refresh_token, expires_at = t.expires_at or core.time() + 30 } }
    for k, v in pairs(extra or {}) do doc[k] = v end
    return doc
  end

  it("clients made later from the tokens on_tokens kept (a rotated refresh token) share the record of those made"
    .. " from the grant's first tokens: one refresh per expiry, no failed call", function()
    mock:reset()
    mock:config({ oauth_rotate = true, oauth_token_ttl = 64 })
    local t = mock:oauth_grant()
    local early = doc_for("early", t, { keep = "lazy" })
    -- the first request's worker refreshes, and on_tokens keeps the rotated tokens in the dict
    local first = assert(helper.post_json(nginx:url("/oauth_fleet"), early))
    assert.is_true(first.ok)
    assert.same(1, mock:stats().token_requests)
    -- by turns: a client made from the grant's first tokens, one made later from the kept ones
    -- (in each worker); the new token needs refreshing again 4 s after it was issued
    local answers = spread({ early, doc_for("later", t, { keep = "lazy", load = "lazy" }) }, 48, 0.12)
    local failed, workers, n = {}, {}, 0
    for _, a in ipairs(answers) do
      if not a.ok then failed[#failed + 1] = cjson.encode(a) end
      if not workers[a.worker] then n = n + 1 end
      workers[a.worker] = true
    end
    local stats = mock:stats()
    print(("      %d calls over %d workers: %d failed, %d token requests, %d refused"):format(#answers, n, #failed,
      stats.token_requests, stats.refresh_refused))
    assert.same({}, failed)
    assert.same(48, #answers)
    assert.same(2, stats.token_requests)
    assert.same(0, stats.refresh_refused)
    assert.is_true(n >= 2, n)
  end)

  it("an on_tokens that raises is reported as one warning in nginx's log, scrubbed of the client's secrets", function()
    mock:reset()
    mock:config({ oauth_rotate = true })
    local t = mock:oauth_grant()
    local answer = assert(helper.post_json(nginx:url("/oauth_fleet"), doc_for("raising", t, { on_tokens_raise = true })))
    assert.is_true(answer.ok, cjson.encode(answer))
    local log = nginx:log_tail(5000)
    local _, warnings = log:gsub("%[warn%][^\n]*fileapi: on_tokens raised: ", "")
    assert.same(1, warnings, log)
    assert.matches("could not keep [REDACTED] of [REDACTED] (disk full)", log, 1, true)
    for _, secret in ipairs({ CLIENT_ID, SECRET, t.refresh_token, t.access_token }) do
      assert.is_nil(log:find(secret, 1, true), secret)
    end
  end)

  it('store on_unavailable = "wait", the store away: no refresh without its lock; the call fails in its time', function()
    mock:reset()
    local answer = assert(helper.post_json(nginx:url("/oauth_fleet"), doc_for("away", mock:oauth_grant(), {
      store = { url = "redis://127.0.0.1:" .. helper.closed_port(), on_unavailable = "wait" }, timeout = 1.5,
      rate_limit = false })))
    assert.is_false(answer.ok)
    assert.same("network", answer.kind)
    assert.matches("did not answer", answer.message)
    assert.is_true(answer.seconds >= 1.4 and answer.seconds <= 5, answer.seconds)
    assert.same(0, mock:stats().token_requests)
  end)
end)
