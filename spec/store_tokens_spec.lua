-- OAuth's shared record in a fleet's store (fileapi.store.tokens) when
-- the store fails, stalls or is tampered with: one refresh still goes out,
-- a sealed record moved under another key or version does not open.
local helper = require "helper"
local files = require "fileapi.files"
local core = require "fileapi.core"

local CLIENT_ID, SECRET = "app_test", "app-secret-7f3k"

describe("OAuth tokens in a store that fails or is tampered with", function()
  local mock, redis
  local oauth = require "fileapi.mijnklantportaal.oauth"

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis()
  end)
  teardown(function()
    redis:signal("CONT")
    redis:stop()
    mock:stop()
  end)
  before_each(function()
    mock:reset()
    mock:config({ oauth_rotate = true })
    redis:signal("CONT")
    redis:cli({ "FLUSHALL" })
  end)

  -- A client of the grant `t` whose token needs refreshing; the rate
  -- budget is off (its own fallback is another spec's): the tokens alone.
  local function oauth_client(t, store, extra)
    local opts = { base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0, rate_limit = false,
      store = store or { url = redis:url() },
      oauth = { client_id = CLIENT_ID, client_secret = SECRET, access_token = t.access_token,
        refresh_token = t.refresh_token, expires_at = t.expires_at or core.time() + 30 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return assert(files.new(opts))
  end

  local function sent_token()
    return (mock:last_request().headers.authorization or ""):match("^Bearer (.+)$")
  end

  -- The store's name for a grant's record (fileapi.store's key of its id).
  local function record_key(refresh_token, part)
    return ("fileapi:oauth:{%s}:%s"):format(core.sha256(oauth.token_id(CLIENT_ID, refresh_token)), part)
  end

  it('on_unavailable = "wait": a store that stays away holds the refresh back; the call fails when its time is up,'
    .. " and no token request was sent", function()
    local c = oauth_client(mock:oauth_grant(), { url = "redis://127.0.0.1:" .. helper.closed_port(),
      on_unavailable = "wait" }, { timeout = 1.5 })
    local t = core.now()
    local item, err = c:mkdir("w")
    local elapsed = core.now() - t
    assert.is_nil(item)
    assert.same("network", err.kind)
    assert.matches("did not answer", err.message)
    assert.is_true(elapsed >= 1.4 and elapsed <= 5, elapsed)
    assert.same(0, mock:stats().token_requests)
    c:close()
  end)

  it('on_unavailable = "local": a store that stays away past a grace of a few seconds is gone on without #waits',
    function()
    local c = oauth_client(mock:oauth_grant(), { url = "redis://127.0.0.1:" .. helper.closed_port() })
    local t = core.now()
    assert(c:mkdir("l"))
    local elapsed = core.now() - t
    assert.same(1, mock:stats().token_requests)
    assert.is_true(elapsed >= require("fileapi.store.tokens").GRACE - 0.2, elapsed)
    c:close()
  end)

  it("a refresh the record missed (Redis stopped) is put there later, over a peer's word that the grant is dead;"
    .. " the peer then takes it #waits", function()
    local t = mock:oauth_grant()
    -- stores of their own (another timeout: another connection, another health), as two machines have
    local a = oauth_client(t, { url = redis:url(), timeout = 0.1 })
    local b = oauth_client(t, { url = redis:url(), timeout = 0.15 })
    redis:signal("STOP")
    local ok, err = pcall(function() assert(a:mkdir("a")) end) -- falls back after the grace, refreshes alone
    redis:signal("CONT")
    assert(ok, err)
    core.sleep(1.1) -- a's store is tried again a second after its last failure
    -- b never heard of a's refresh: it spends the old refresh token, which the server refuses
    local _, berr = b:mkdir("b")
    assert.same("invalid_grant", berr and berr.oauth_error)
    assert(a:mkdir("a2")) -- a's tokens go to the record, over b's word
    assert(b:mkdir("b2")) -- which b takes
    assert.same(2, mock:stats().token_requests)
    assert.same(1, a:token_info().refreshes + b:token_info().refreshes)
    a:close()
    b:close()
  end)

  it("a sealed record copied over another grant's, or an alias copied to another token, does not open there",
    function()
    local ta, tb = mock:oauth_grant(), mock:oauth_grant()
    local seen = {}
    local a = oauth_client(ta, nil, { on_tokens = function(n) seen.a = n end })
    local b = oauth_client(tb, nil, { on_tokens = function(n) seen.b = n end })
    assert(a:mkdir("a"))
    assert(b:mkdir("b"))
    assert.same(seen.b.access_token, sent_token())
    -- tenant A's record over tenant B's, a few versions ahead
    assert.same("1", redis:cli({ "COPY", record_key(ta.refresh_token, "token"), record_key(tb.refresh_token, "token"),
      "REPLACE" }))
    redis:cli({ "HINCRBY", record_key(tb.refresh_token, "token"), "v", 5 })
    b:token_info() -- reads the record again
    assert(b:mkdir("b2"))
    assert.same(seen.b.access_token, sent_token())
    -- A's alias over the alias of B's newest refresh token: a client built from that token finds
    -- B's grant or none, never A's
    assert.same("1", redis:cli({ "COPY", record_key(seen.a.refresh_token, "grant"),
      record_key(seen.b.refresh_token, "grant"), "REPLACE" }))
    local c = oauth_client({ access_token = seen.b.access_token, refresh_token = seen.b.refresh_token,
      expires_at = seen.b.expires_at })
    assert(c:mkdir("c"))
    assert.same(seen.b.access_token, sent_token())
    assert.same(2, mock:stats().token_requests)
    a:close()
    b:close()
    c:close()
  end)
end)


-- Saves of one client's tokens to its shared record go one at a time: a
-- save may yield (a cosocket inside nginx), and two saves of one version
-- could leave the older tokens, their refresh token already spent, in the
-- record.  Light threads are coroutines here, resumed in turn; the record
-- is a table whose save yields once, as a round trip to Redis does.
describe("the OAuth keeper's saves, beside a refresh", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function()
    mock:reset()
    mock:config({ oauth_rotate = true })
  end)

  local function yielding_record()
    local r = { away = true, poll = 0.001, stored = nil, saves = 0 }
    function r.load() return (not r.away) and r.stored or nil end
    function r.save(doc)
      if r.away then return nil end
      r.saves = r.saves + 1
      if coroutine.isyieldable() then coroutine.yield("save") end
      if r.stored and doc.version <= r.stored.version then return false end
      r.stored = doc
      return doc.version
    end
    function r.lock() return r.held == nil and "ours" or false end
    function r.unlock() r.held = nil end
    return r
  end

  it("a success kept while the record was away is saved by nginx's timer, never beside this client's refresh",
    function()
      local t = mock:oauth_grant()
      local record = yielding_record()
      local c = assert(files.new({ base_url = mock.mkp_url, oauth_base_url = mock.oauth_url, retries = 0,
        rate_limit = false, _shared_tokens = record, oauth = { client_id = CLIENT_ID, client_secret = SECRET,
          access_token = t.access_token, refresh_token = t.refresh_token, expires_at = core.time() + 3600 } }))
      local keeper = c.engine.auth
      -- the record away: the caller's tokens wait to be saved, and nginx's timer is asked to
      local ticks = {}
      _G.ngx = { get_phase = function() return "content" end,
        timer = { at = function(_, fn) ticks[#ticks + 1] = fn return true end } }
      local ok, err = pcall(keeper.set_tokens, keeper, { access_token = t.access_token,
        refresh_token = t.refresh_token, expires_in = 0 })
      _G.ngx = nil
      assert(ok, err)
      assert.same(1, #ticks)
      record.away = false
      local tick = coroutine.create(function() ticks[1](false) end)
      local call = coroutine.create(function()
        return keeper:refresh(function() coroutine.yield("sleep") end, core.time() + 30, nil)
      end)
      local refreshed
      for _ = 1, 1000 do
        if coroutine.status(tick) == "suspended" then assert(coroutine.resume(tick)) end
        if coroutine.status(call) == "suspended" then
          local resumed, r = coroutine.resume(call)
          assert(resumed, r)
          if coroutine.status(call) == "dead" then refreshed = r end
        end
        if coroutine.status(tick) == "dead" and coroutine.status(call) == "dead" then break end
      end
      assert.is_true(refreshed)
      assert.same(1, mock:stats().token_requests)
      -- what the record holds is what the refresh brought: the refresh token the server has not spent
      local info = c:token_info()
      assert.same(1, info.refreshes)
      assert.are_not.equal(t.refresh_token, record.stored.refresh_token)
      assert.same(2, record.stored.version)
      c:close()
    end)
end)
