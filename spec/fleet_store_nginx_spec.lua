-- The fleet's store inside nginx: lua-resty-redis on cosockets, its
-- pooled connections, the "local" and "wait" fallbacks and a Redis
-- Cluster's answer, each through a worker of the test nginx.  Tagged
-- #fleet: the test run gives these the fleet's stage (spec/fleet_spec.lua
-- has the fleets themselves).
local helper = require "helper"
local core = require "fileapi.core"
local cjson = require "cjson"

local function count(text, pattern)
  local _, n = text:gsub(pattern, "")
  return n
end

describe("the store inside nginx (lua-resty-redis on cosockets) #nginx #fleet", function()
  local mock, redis, nginx
  local n = 0
  local MESSAGE = "Redis Cluster is not supported: point store.url at a single primary"

  setup(function()
    mock = helper.start_mock()
    redis = helper.start_redis()
    nginx = helper.start_test_nginx(mock)
  end)
  teardown(function()
    if nginx then nginx:stop() end
    redis:stop()
    mock:stop()
  end)
  before_each(function()
    mock:reset()
    redis:cli({ "FLUSHALL" })
  end)

  -- A query for a client of its own (a prefix of its own: its own store and
  -- health in the worker); the mock sends no rate-limit headers.
  local function query(url, window, extra)
    n = n + 1
    return ("/fleet?retries=0&window=%d&prefix=ngx%d:&store=%s%s"):format(window or 5, n, url, extra or "")
  end

  local function call(path)
    local status, body = helper.http_get(nginx:url(path), 60)
    assert.same(200, status, body)
    return cjson.decode(body)
  end

  -- The worker's warnings about a store at url, so far.
  local function warnings(url, about)
    local where = url:match("^redis://(.*)$"):gsub("%p", "%%%0")
    return count(nginx:log_tail(100000), "the store %(redis " .. where .. "%) is unavailable %(" .. (about or ""))
  end

  -- One call before and one after `between`: both through the store, no warning.
  local function across(between)
    local path = query(redis:url())
    assert.is_true(call(path).ok)
    assert.same(1, redis:logged_sends())
    local before = warnings(redis:url())
    between()
    local after = call(path)
    assert.is_true(after.ok, cjson.encode(after))
    assert.same(before, warnings(redis:url()), nginx:log_tail(20))
    return redis:logged_sends()
  end

  for _, case in ipairs(helper.REDIS_DROPS) do
    it(case.name, function()
      assert.same(case.logged, across(function() case.drop(redis) end))
    end)
  end

  it("a pooled connection the network forgot (a firewall, a NAT): the next call opens a new one, no warning", function()
    local relay = helper.start_forgetful_relay(redis.port)
    local ok, err = pcall(function()
      local path = query(relay:url())
      assert.is_true(call(path).ok)
      relay:forget()
      local out = call(path)
      assert.is_true(out.ok, cjson.encode(out))
      assert.same(0, warnings(relay:url()), nginx:log_tail(20))
      assert.same(2, redis:logged_sends())
    end)
    relay:stop()
    assert(ok, err)
  end)

  it('"local", a server that names no limit: the fallback sends at once, it does not wait out a window', function()
    local gone = helper.start_redis()
    local ok, err = pcall(function()
      local path = query(gone:url(), 10)
      assert.is_true(call(path).ok)
      gone:kill()
      local t = core.now()
      for _ = 1, 2 do assert.is_true(call(path).ok) end
      local elapsed = core.now() - t
      assert.is_true(elapsed < 3, elapsed)
      assert.same(1, warnings(gone:url()))
      assert.same(3, #mock:requests())
    end)
    gone:stop()
    assert(ok, err)
  end)

  it('"wait" on a dead Redis: 2 s at most (the call\'s timeout is 120 s), then network, retryable, nothing sent',
    function()
      local t = core.now()
      local out = call(query("redis://127.0.0.1:" .. helper.closed_port(), 5, "&on_unavailable=wait"))
      local elapsed = core.now() - t
      assert.is_false(out.ok)
      assert.same("network", out.kind)
      assert.is_true(out.retryable)
      assert.is_false(out.request_sent)
      assert.matches("did not answer within", out.message)
      assert.is_true(elapsed >= 0.9 and elapsed <= 3.5, elapsed)
      assert.same(0, #mock:requests())
    end)

  it("a Redis Cluster node (CLUSTERDOWN): said once, plainly; \"wait\" fails at once with invalid_argument", function()
    local node = helper.start_redis({ args = { "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf" } })
    local ok, err = pcall(function()
      local path = query(node:url())
      for _ = 1, 3 do assert.is_true(call(path).ok) end
      assert.same(1, warnings(node:url(), MESSAGE:gsub("%p", "%%%0")), nginx:log_tail(20))
      local out = call(query(node:url(), 5, "&on_unavailable=wait"))
      assert.is_false(out.ok)
      assert.same("invalid_argument", out.kind)
      assert.matches(MESSAGE, out.message, 1, true)
      assert.matches("CLUSTERDOWN", out.message)
      assert.is_true(out.seconds < 1, out.seconds)
    end)
    node:stop()
    assert(ok, err)
  end)
end)
