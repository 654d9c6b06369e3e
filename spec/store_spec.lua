-- The fleet's store (`store`) in one process against a real Redis: the
-- option, the hiredis binding and the sealing, the budget and the tokens
-- two clients share through it (as two machines would), and what happens
-- when the store fails.  spec/fleet_spec.lua runs the whole fleet.
local helper = require "helper"
local files = require "fileapi.files"
local core = require "fileapi.core"
local cjson = require "cjson"

local CLIENT_ID, SECRET = "app_test", "app-secret-7f3k"

-- Everything the store holds, as text: keys, strings, hashes, sorted sets.
local function dump(redis)
  local out = {}
  for key in redis:cli({ "--scan" }):gmatch("[^\n]+") do
    out[#out + 1] = key
    local t = redis:cli({ "TYPE", key })
    if t == "string" then out[#out + 1] = redis:cli({ "GET", key })
    elseif t == "hash" then out[#out + 1] = redis:cli({ "HGETALL", key })
    elseif t == "zset" then out[#out + 1] = redis:cli({ "ZRANGE", key, 0, -1 }) end
  end
  return table.concat(out, "\n")
end

-- A plain-Lua process with a store (spec/support/fleet_client.lua): its
-- results and everything else it printed (fileapi's warnings).
local function run_member(doc, calls)
  local code, text = helper.run_lua(helper.sh_quote(helper.support .. "/fleet_client.lua"),
    { FLEET_MODE = "paced", FLEET_CALLS = tostring(calls), FLEET_DOC = cjson.encode(doc) })
  local results, other = helper.json_lines(text)
  return code, results, other
end

describe("the store option", function()
  local function new(store)
    return files.new({ api_key = "k", base_url = "http://127.0.0.1:9/v1", store = store })
  end

  it("wrong types and unknown fields raise; bad values are invalid_argument", function()
    assert.has_error(function() new("redis://127.0.0.1:6379") end)
    assert.has_error(function() new({ url = "redis://127.0.0.1", tiemout = 1 }) end)
    assert.has_error(function() new({ url = 5 }) end)
    for _, case in ipairs({
      { {}, "store.url is required" },
      { { url = "http://127.0.0.1" }, "redis://host:port/db" },
      { { url = "redis://" }, "must name a host" },
      { { url = "redis://127.0.0.1:99999" }, "port" },
      { { url = "rediss://127.0.0.1" }, "TLS" },
      { { url = "redis://127.0.0.1", timeout = 0 }, "store.timeout" },
      { { url = "redis://127.0.0.1", on_unavailable = "fail" }, "on_unavailable" },
    }) do
      local c, err = new(case[1])
      assert.is_nil(c)
      assert.same("invalid_argument", err.kind)
      assert.matches(case[2], err.message, 1, true)
    end
  end)

  it("takes host, port, db, user and password from the URL; the password never shows", function()
    local store = require "fileapi.store"
    local cfg = assert(store.check({ url = "redis://ops:s%40cret@10.0.0.5:6380/3" }, "new"))
    assert.same({ "10.0.0.5", 6380, 3, "ops", "s@cret" }, { cfg.host, cfg.port, cfg.db, cfg.user, cfg.password })
    assert.same("local", cfg.on_unavailable)
    assert.same(0.1, cfg.timeout)
    assert.is_nil(cfg.pool:find("s@cret", 1, true))
    local plain = assert(store.check({ url = "redis://localhost" }, "new"))
    assert.same({ "localhost", 6379, 0 }, { plain.host, plain.port, plain.db })
  end)
end)

describe("the store's C pieces", function()
  local redis
  setup(function() redis = helper.start_redis() end)
  teardown(function() redis:stop() end)

  it("hiredis replies in lua-resty-redis's shapes", function()
    local c = assert(core.redis("127.0.0.1", redis.port, 1))
    assert.same("OK", c:call("SET", "a", "x\0y"))
    assert.same("x\0y", c:call("GET", "a"))
    assert.same(false, c:call("GET", "missing"))
    assert.same(3, c:call("RPUSH", "l", "1", 2, "3"))
    assert.same({ "1", "2", "3" }, c:call("LRANGE", "l", 0, -1))
    local r, msg, how = c:call("NOPE")
    assert.is_nil(r)
    assert.matches("unknown command", msg)
    assert.same("server", how)
    assert.has_error(function() c:call({}) end)
    assert.has_error(function() c:call() end)
    local many = { "RPUSH", "m" }
    for i = 1, 300 do many[#many + 1] = tostring(i) end
    local unpack_all = table.unpack or unpack -- luacheck: ignore 113
    assert.has_error(function() c:call(unpack_all(many)) end)
    c:close()
    c:close()
    r, msg, how = c:call("PING")
    assert.is_nil(r)
    assert.matches("closed", msg)
    assert.same("io", how)
  end)

  it("a refused connection and a closed one are io failures", function()
    local c, err = core.redis("127.0.0.1", helper.closed_port(), 0.2)
    assert.is_nil(c)
    assert.matches("refused", err)
    assert.has_error(function() core.redis("127.0.0.1", 0, 1) end)
    assert.has_error(function() core.redis("127.0.0.1", 6379, 0) end)
  end)

  it("seals bound to a place: a changed byte, another key or another place (associated data) opens nothing", function()
    local here, there = "fileapi:oauth:{a}:token\0" .. "3", "fileapi:oauth:{b}:token\0" .. "3"
    local sealed = assert(core.seal("key", "tokens", here))
    assert.same("tokens", core.unseal("key", sealed, here))
    assert.is_nil(sealed:find("tokens", 1, true))
    assert.not_same(sealed, core.seal("key", "tokens", here)) -- a fresh nonce each time
    assert.is_nil(core.unseal("other", sealed, here))
    assert.is_nil(core.unseal("key", sealed, there)) -- moved to another key
    assert.is_nil(core.unseal("key", sealed, "fileapi:oauth:{a}:token\0" .. "4")) -- put back at another version
    assert.is_nil(core.unseal("key", sealed, ""))
    for _, at in ipairs({ 1, 13, #sealed }) do -- the nonce, the ciphertext, the tag
      local bent = sealed:sub(1, at - 1) .. string.char((sealed:byte(at) + 1) % 256) .. sealed:sub(at + 1)
      assert.is_nil(core.unseal("key", bent, here))
    end
    assert.is_nil(core.unseal("key", "short", here))
    assert.same("", core.unseal("key", assert(core.seal("key", "", "")), ""))
    assert.is_nil(core.seal("", "tokens", here)) -- no key material: nothing sealed
    assert.has_error(function() core.seal("key", "tokens") end) -- the place is required
    assert.has_error(function() core.unseal("key", sealed) end)
    assert.same("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256("abc"))
  end)
end)

describe("clients sharing a store", function()
  local mock, redis

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis()
  end)
  teardown(function()
    redis:stop()
    mock:stop()
  end)
  before_each(function()
    mock:reset()
    redis:cli({ "FLUSHALL" })
  end)

  local function client(extra)
    return helper.mkp_client(mock, extra, { rate_window = 1, retries = 0, store = { url = redis:url() } })
  end

  it("two clients (two machines) draw from one budget: no 429, and nothing secret in the store", function()
    mock:config({ rate_limit = 5, rate_window = 1 })
    local a, b = client(), client()
    local t = core.now()
    for i = 1, 6 do
      assert(a:mkdir("a" .. i))
      assert(b:mkdir("b" .. i))
    end
    local elapsed = core.now() - t
    assert.same(0, mock:stats().rejected)
    assert.is_true(elapsed >= 2, elapsed) -- 12 calls at 5 a second
    local held = dump(redis)
    assert.matches("fileapi:rate:{%x+}:log", held)
    assert.is_nil(held:find(helper.API_KEY, 1, true))
    a:close()
    b:close()
  end)

  it("shares.new and drive.new take the same store: their budgets live in it, under hashes", function()
    local shares, drive = require "fileapi.shares", require "fileapi.drive"
    local share = assert(shares.new({ token = "editor-token", base_url = mock.base, store = { url = redis:url() } }))
    assert(share:mkdir("Shared"))
    local d = assert(drive.new({ token = helper.DRIVE_TOKEN, base_url = mock.base, store = { url = redis:url(),
      prefix = "gw1:" } }))
    assert(d:me())
    local keys = redis:cli({ "KEYS", "*" })
    local _, n = keys:gsub("fileapi:rate:{%x+}:log", "")
    assert.same(1, n, keys)
    assert.matches("gw1:rate:{%x+}:log", keys)
    assert.is_nil(keys:find("editor-token", 1, true))
    assert.is_nil(dump(redis):find(helper.DRIVE_TOKEN, 1, true))
    share:close()
    d:close()
  end)

  it("one client's 429 slows the other: the fleet-wide mark", function()
    mock:config({ rate_limit = 1000, rate_window = 1 })
    local a, b = client(), client()
    assert(a:mkdir("warm"))
    mock:faults({ { type = "status", status = 429, headers = { ["Retry-After"] = "1" },
      body = '{"code":429,"message":"Too many requests."}' } })
    local _, err = a:mkdir("x")
    assert.same("rate_limited", err.kind)
    local t = core.now()
    assert(b:mkdir("y"))
    local waited = core.now() - t
    assert.is_true(waited >= 0.9 and waited < 1.6, waited)
  end)

  it("a core built without hiredis: calls go on on their own budget, and the store says what it needs", function()
    local store = require "fileapi.store"
    local saved = core.redis
    core.redis = nil
    local cfg = assert(store.check({ url = redis:url(5) }, "new"))
    local ok, err = pcall(function()
      local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, store = { url = redis:url(5) } }))
      assert(c:mkdir("no-hiredis"))
      c:close()
    end)
    core.redis = saved
    assert(ok, err)
    assert.matches("needs hiredis", store.open(cfg).last_error)
    assert.same("", redis:cli({ "-n", 5, "KEYS", "*" }))
  end)

  it("a script Redis forgot (NOSCRIPT) is sent again with EVAL", function()
    mock:config({ rate_limit = 1000, rate_window = 1 })
    local a = client()
    assert(a:mkdir("one"))
    redis:cli({ "SCRIPT", "FLUSH" })
    assert(a:mkdir("two"))
    local sha = require("fileapi.store.budget").ACQUIRE.sha
    assert.same("1", redis:cli({ "SCRIPT", "EXISTS", sha }))
    assert.same("2", redis:cli({ "EVAL", "return #redis.call('ZRANGE', KEYS[1], 0, -1)", 1,
      (redis:cli({ "KEYS", "*:log" })) }))
  end)

  it("OAuth: two clients at a token's expiry send one refresh; on_tokens runs once", function()
    mock:config({ oauth_rotate = true })
    local t = mock:oauth_grant()
    local ran = 0
    local function oauth_client()
      return assert(files.new({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0,
        store = { url = redis:url() }, on_tokens = function() ran = ran + 1 end,
        oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = t.access_token,
          refresh_token = t.refresh_token, expires_at = core.time() + 30 } }))
    end
    local a, b = oauth_client(), oauth_client()
    assert(a:mkdir("a"))
    assert(b:mkdir("b"))
    assert(a:mkdir("a2"))
    assert.same(1, mock:stats().token_requests)
    assert.same(1, ran)
    assert.same(1, a:token_info().refreshes + b:token_info().refreshes)
    local held = dump(redis)
    assert.matches("fileapi:oauth:{%x+}:token", held)
    for _, secret in ipairs({ SECRET, t.refresh_token, t.access_token }) do
      assert.is_nil(held:find(secret, 1, true), "a secret in the store")
    end
  end)
end)

describe("a store that fails", function()
  local mock, redis

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis({ password = "pw-9d2kq" })
  end)
  teardown(function()
    redis:stop()
    mock:stop()
  end)
  before_each(function() mock:reset() end)

  local function doc(store)
    return { base_url = mock.mkp_url, api_key = helper.API_KEY, window = 1, store = store }
  end

  it("refused: the calls go on at once on the process's own budget, with one warning #children", function()
    local code, results, other = run_member(doc({ url = "redis://127.0.0.1:" .. helper.closed_port() }), 5)
    assert.same(0, code, other)
    assert.same(5, #results)
    for _, r in ipairs(results) do
      assert.is_true(r.ok)
      assert.is_true(r.seconds < 0.5, r.seconds)
    end
    local _, warnings = other:gsub("the store %(redis 127%.0%.0%.1:%d+/0%) is unavailable", "")
    assert.same(1, warnings, other)
  end)

  it("a wrong or missing password (NOAUTH) is a failure like any other; the right one works and never shows #children", function()
    local code, results, other = run_member(doc({ url = redis:url() }), 2)
    assert.same(0, code, other)
    assert.same(2, #results)
    -- Redis 7 names a command before AUTH NOAUTH, or a long one a protocol error
    assert.is_truthy(other:find("NOAUTH", 1, true) or other:find("unauthenticated", 1, true), other)
    code, results, other = run_member(doc({ url = "redis://:wrong@127.0.0.1:" .. redis.port }), 1)
    assert.same(0, code)
    assert.is_true(results[1].ok)
    assert.matches("WRONGPASS", other)
    assert.is_nil(other:find("wrong@", 1, true))
    code, results, other = run_member(doc({ url = "redis://:pw-9d2kq@127.0.0.1:" .. redis.port .. "/2" }), 2)
    assert.same(0, code, other)
    assert.same("", other)
    assert.is_true(results[2].ok)
    assert.matches(":log", redis:cli({ "-n", 2, "KEYS", "*" }))
  end)

  it("READONLY (a replica): falls back; the store is used again once it takes writes #children", function()
    redis:cli({ "REPLICAOF", "127.0.0.1", helper.closed_port() })
    local url = "redis://:pw-9d2kq@127.0.0.1:" .. redis.port .. "/3"
    local code, results, other = run_member(doc({ url = url }), 2)
    redis:cli({ "REPLICAOF", "NO", "ONE" })
    assert.same(0, code, other)
    assert.is_true(results[1].ok and results[2].ok)
    assert.matches("READONLY", other)
    code, results, other = run_member(doc({ url = url }), 1)
    assert.same(0, code, other)
    assert.is_true(results[1].ok)
    assert.same("", other)
  end)

  it('on_unavailable = "wait": waits within the call\'s timeout, then a network error; nothing sent', function()
    local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, timeout = 1.5, retries = 0,
      store = { url = "redis://127.0.0.1:" .. helper.closed_port(), on_unavailable = "wait" } }))
    local t = core.now()
    local item, err = c:mkdir("w")
    local elapsed = core.now() - t
    assert.is_nil(item)
    assert.same("network", err.kind)
    assert.matches("did not answer", err.message)
    assert.is_true(elapsed >= 0.9 and elapsed <= 2, elapsed)
    assert.same(0, mock:stats().requests)
  end)
end)

local warnings_of = helper.warnings_of

describe("a connection Redis dropped", function()
  local mock, redis
  local n = 0

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis({ args = { "--enable-debug-command", "local" } })
  end)
  teardown(function()
    redis:stop()
    mock:stop()
  end)
  before_each(function()
    mock:reset()
    redis:cli({ "FLUSHALL" })
  end)

  -- A client of its own store (a prefix of its own: no health shared with
  -- another test); the mock sends no rate-limit headers.
  local function client(extra)
    n = n + 1
    return helper.mkp_client(mock, extra, { rate_window = 5, retries = 0,
      store = { url = redis:url(), prefix = "drop" .. n .. ":" } })
  end

  -- One call before and one after `between`: both through the store, no warning.
  local function across(between)
    local c = client()
    assert(c:mkdir("before"))
    assert.same(1, redis:logged_sends())
    between()
    local said, item, err = warnings_of(function() return c:mkdir("after") end)
    c:close()
    assert.is_truthy(item, err and err.message)
    assert.same("", said)
    return redis:logged_sends()
  end

  for _, case in ipairs(helper.REDIS_DROPS) do
    it(case.name, function()
      assert.same(case.logged, across(function() case.drop(redis) end))
    end)
  end

  it("a timeout is no dropped connection: the store is away at once, not tried twice #waits", function()
    local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, rate_window = 5, retries = 0,
      store = { url = redis:url(), prefix = "slow:", timeout = 1 } }))
    assert(c:mkdir("warm"))
    local stall = io.popen(("redis-cli -p %d DEBUG SLEEP 3 2>&1"):format(redis.port))
    core.sleep(0.2)
    local t = core.now()
    local said, item = warnings_of(function() return c:mkdir("stalled") end)
    local elapsed = core.now() - t
    stall:read("*a")
    stall:close()
    c:close()
    assert.is_truthy(item)
    assert.matches("is unavailable", said)
    -- one store timeout (1 s), not two
    assert.is_true(elapsed >= 0.9 and elapsed < 1.9, elapsed)
  end)
end)

describe("a store that is gone", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  it('"local", a server that names no limit: the fallback sends at once, it does not wait out a window', function()
    local redis = helper.start_redis()
    local ok, err = pcall(function()
      local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, rate_window = 10, retries = 0,
        store = { url = redis:url() } }))
      assert(c:mkdir("through the store"))
      redis:kill()
      local t = core.now()
      local said, item, e = warnings_of(function()
        local first, ferr = c:mkdir("alone 1")
        if not first then return nil, ferr end
        return c:mkdir("alone 2")
      end)
      local elapsed = core.now() - t
      c:close()
      assert.is_truthy(item, e and e.message)
      assert.matches("is unavailable", said)
      -- a window is 10 s here; the mock counts nothing
      assert.is_true(elapsed < 3, elapsed)
      assert.same(3, #mock:requests())
    end)
    redis:stop()
    assert(ok, err)
  end)

  it('"wait" with no call timeout: at most max(2 s, 20 x store.timeout), then network, retryable, nothing sent #waits',
    function()
      for _, timeout in ipairs({ 0.1, 0.2 }) do
        local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, retries = 0,
          store = { url = "redis://127.0.0.1:" .. helper.closed_port(), on_unavailable = "wait", timeout = timeout } }))
        local limit = math.max(2, 20 * timeout) -- as docs/fleet.md says
        local t = core.now()
        local said, item, err = warnings_of(function() return c:mkdir("w") end)
        local elapsed = core.now() - t
        c:close()
        assert.is_nil(item)
        -- tried each second until the next try would be past the limit
        assert.is_true(elapsed >= limit - 1.1 and elapsed <= limit + 1.5, elapsed)
        assert.same("network", err.kind)
        assert.is_true(err.retryable)
        assert.is_false(err.request_sent)
        assert.matches("did not answer within %d", err.message)
        assert.matches(("calls wait for it, %g s at most"):format(limit), said, 1, true)
      end
      assert.same(0, #mock:requests())
    end)
end)

describe("a Redis Cluster", function()
  local mock, a, b
  local CLUSTER = { "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf" }
  local MESSAGE = "Redis Cluster is not supported: point store.url at a single primary"

  setup(function()
    mock = helper.start_mock()
    a = helper.start_redis({ args = CLUSTER })
  end)
  teardown(function()
    a:stop()
    if b then b:stop() end
    mock:stop()
  end)
  before_each(function() mock:reset() end)

  local function client(mode, prefix)
    return assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, rate_window = 5, retries = 0,
      store = { url = a:url(), on_unavailable = mode, prefix = prefix } }))
  end

  -- "local": the calls go on alone; the warning says it plainly, once.
  -- "wait": invalid_argument at once, nothing sent.
  local function refused(answer, prefix)
    local c = client("local", prefix .. "l:")
    local said = warnings_of(function()
      for i = 1, 3 do assert(c:mkdir("alone" .. i)) end
    end)
    c:close()
    local _, warned = said:gsub("is unavailable %(" .. MESSAGE:gsub("%p", "%%%0"), "")
    assert.same(1, warned, said)
    assert.matches(answer, said)
    c = client("wait", prefix .. "w:")
    local t = core.now()
    local _, item, err = warnings_of(function() return c:mkdir("w") end)
    local elapsed = core.now() - t
    c:close()
    assert.is_nil(item)
    assert.same("invalid_argument", err.kind)
    assert.is_false(err.retryable)
    assert.matches(MESSAGE, err.message, 1, true)
    assert.is_true(elapsed < 1, elapsed)
    assert.same(3, #mock:requests())
  end

  it("a node that serves no slot (CLUSTERDOWN): a clear error, said once", function()
    refused("CLUSTERDOWN", "down:")
  end)

  it("a node that redirects (MOVED): the same #waits", function()
    b = helper.start_redis({ args = CLUSTER })
    b:cli({ "CLUSTER", "ADDSLOTSRANGE", 0, 16383 })
    a:cli({ "CLUSTER", "MEET", "127.0.0.1", b.port })
    -- until the nodes have met: a redirects every key to b
    local deadline = core.time() + 30
    while not a:cli({ "SET", "k", "v" }):find("^MOVED") and core.time() < deadline do core.sleep(0.2) end
    assert.matches("^MOVED", a:cli({ "SET", "k", "v" }))
    refused("MOVED", "moved:")
  end)
end)
