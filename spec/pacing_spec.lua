-- The rate budget: a batch waits instead of drawing 429s.  The mock allows
-- 30 requests in any 3 s (a rolling window, as the API's 60 a minute);
-- 300 calls then take 27 s at best.
local helper = require "helper"
local files = require "fileapi.files"
local core = require "fileapi.core"

local LIMIT, WINDOW, CALLS = 30, 3, 300
local IDEAL = (CALLS / LIMIT - 1) * WINDOW

describe("rate budget #waits", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function()
    mock:reset()
    mock:config({ rate_limit = LIMIT, rate_window = WINDOW })
  end)

  local function new_client(opts) return helper.mkp_client(mock, opts) end

  it("300 calls from one client: no 429, within 10% of the ideal 27 s #slow", function()
    local c = new_client({ rate_window = WINDOW, retries = 0 })
    local waits = 0
    local t = core.now()
    for i = 1, CALLS do assert(c:mkdir("d" .. i)) end
    local elapsed = core.now() - t
    c:close()
    print(("      %d calls, %d per %d s: %.2f s (ideal %d s), %d rejected"):format(CALLS, LIMIT, WINDOW, elapsed,
      IDEAL, mock:stats().rejected))
    assert.same(0, mock:stats().rejected)
    assert.same(CALLS, mock:stats().requests)
    assert.is_true(elapsed >= IDEAL - 0.5 and elapsed <= IDEAL * 1.1, elapsed)
    assert.same(0, waits)
  end)

  it("waits are told to on_wait, with their reason, and rate_limit() gives what the server said", function()
    local waits, reasons = {}, {}
    local c = new_client({ rate_window = 1, on_wait = function(s, reason)
      waits[#waits + 1] = s
      reasons[reason] = (reasons[reason] or 0) + 1
    end })
    mock:config({ rate_limit = 5, rate_window = 1 })
    for i = 1, 12 do assert(c:mkdir("w" .. i)) end
    assert.same(0, mock:stats().rejected)
    assert.is_true(#waits >= 2)
    for _, w in ipairs(waits) do assert.is_true(w > 0 and w <= 1.1, w) end
    assert.same({ rate_limit = #waits }, reasons)
    local said = c:rate_limit()
    assert.same(5, said.limit)
    assert.is_true(said.remaining >= 0 and said.remaining < 5)
    c:close()
  end)

  it("a request that reached the server late holds its slot from its answer, not from its start", function()
    -- the first request is counted 0.6 s after its slot was taken (a slow
    -- network, a loaded machine): the fourth must not go when that slot's
    -- start leaves the window, or the server still counts it
    mock:config({ rate_limit = 3, rate_window = 2 })
    mock:faults({ { type = "delay", seconds = 0.6, path = "/v1/files" } })
    local c = new_client({ rate_window = 2, retries = 0 })
    for i = 1, 4 do
      local _, err = c:mkdir("late" .. i)
      assert.is_nil(err and tostring(err))
    end
    c:close()
    assert.same(0, mock:stats().rejected)
  end)

  it("a slot is free only a margin after it leaves the window: the server counts a send a little late", function()
    -- three sends 35 ms apart, each counted 35 ms late (less than a slow
    -- attempt's settling); then three at once: they must go one margin
    -- after each slot leaves the window, not all when the first does
    mock:config({ rate_limit = 3, rate_window = 2 })
    mock:faults({ { type = "delay", seconds = 0.035, path = "/v1/files" },
      { type = "delay", seconds = 0.035, path = "/v1/files" }, { type = "delay", seconds = 0.035, path = "/v1/files" } })
    local c = new_client({ rate_window = 2, retries = 0 })
    for i = 1, 3 do assert(c:mkdir("late" .. i)) end
    local g = require("fileapi").group({ parallel = 3 })
    for i = 1, 3 do g:spawn(function() return c:mkdir("then" .. i) end) end
    for _, r in ipairs(g:wait()) do assert.is_nil(r[2] and tostring(r[2])) end
    c:close()
    assert.same(0, mock:stats().rejected)
  end)

  it("a number keeps any window at N requests, below the server's limit", function()
    mock:config({ rate_limit = 100, rate_window = 1 })
    local c = new_client({ rate_limit = 4, rate_window = 1 })
    local t = core.now()
    for i = 1, 9 do assert(c:mkdir("n" .. i)) end
    local elapsed = core.now() - t
    c:close()
    assert.is_true(elapsed >= 2 and elapsed < 3, elapsed) -- 4 now, 4 after 1 s, 1 after 2 s
  end)

  it("another client on the same key: the server's Remaining 0 waits for its reset", function()
    mock:config({ rate_limit = 3, rate_window = 2 })
    local other = new_client({ rate_limit = false })
    for i = 1, 3 do assert(other:mkdir("o" .. i)) end
    other:close()
    local c = new_client({ rate_window = 2, retries = 3 })
    local t = core.now()
    for i = 1, 2 do assert(c:mkdir("c" .. i)) end
    c:close()
    -- the first call met the other's full window: 429 with Retry-After,
    -- then the budget held the second until the window freed
    assert.is_true(core.now() - t >= 1, core.now() - t)
  end)

  it("rate_limit = false sends at once and meets the 429", function()
    mock:config({ rate_limit = 2, rate_window = 60 })
    local c = new_client({ rate_limit = false, retries = 0 })
    assert(c:mkdir("a"))
    assert(c:mkdir("b"))
    local _, err = c:mkdir("c")
    c:close()
    assert.same("rate_limited", err.kind)
  end)

  it("a server that names its reset on every answer decides the wait: 40 calls at 10 per 2 s #slow", function()
    mock:config({ rate_limit = 10, rate_window = 2, rate_reset_always = true })
    local c = new_client({ retries = 0 }) -- the client's own window stays 60 s
    local t = core.now()
    for i = 1, 40 do assert(c:mkdir("s" .. i)) end
    local elapsed = core.now() - t
    c:close()
    local ideal = (40 / 10 - 1) * 2
    print(("      40 calls, 10 per 2 s, Reset on every answer: %.2f s (ideal %d s), %d rejected"):format(elapsed,
      ideal, mock:stats().rejected))
    assert.same(0, mock:stats().rejected)
    assert.is_true(elapsed >= ideal - 0.2 and elapsed <= ideal * 1.2, elapsed)
  end)

  describe("rate limit headers that make no sense", function()
    local ITEM = '{"id":"fsd_rl0000000001","type":"directory","name":"x","createdAt":"2026-01-01T00:00:00+00:00"}'
    local function answers(n, headers)
      mock:faults({ { type = "status", status = 201, path = "/v1/files", count = n, headers = headers, body = ITEM } })
    end

    for _, limit in ipairs({ "0", "-5", "2.5", "abc", "1e9", "" }) do
      it("X-RateLimit-Limit: '" .. limit .. "' is ignored, said once, and every later call works", function()
        answers(6, { ["X-RateLimit-Limit"] = limit, ["X-RateLimit-Remaining"] = "0" })
        local c = new_client({ retries = 0 })
        local t = core.now()
        for i = 1, 8 do assert(c:mkdir("l" .. i)) end
        assert.is_true(core.now() - t < 2, core.now() - t)
        if limit ~= "" then assert.same({ "X-RateLimit-Limit: " .. limit }, c:rate_limit().ignored) end
        c:close()
      end)
    end

    for _, remaining in ipairs({ "-1", "0.5", "many" }) do
      it("X-RateLimit-Remaining: '" .. remaining .. "' is ignored", function()
        answers(4, { ["X-RateLimit-Limit"] = "5", ["X-RateLimit-Remaining"] = remaining,
          ["X-RateLimit-Reset"] = tostring(os.time() + 3000) })
        local c = new_client({ retries = 0 })
        for i = 1, 5 do assert(c:mkdir("r" .. i)) end
        assert.same({ "X-RateLimit-Remaining: " .. remaining }, c:rate_limit().ignored)
        c:close()
      end)
    end

    it("Remaining 0 with a reset centuries away: rate_limited at once, nothing sent", function()
      answers(1, { ["X-RateLimit-Limit"] = "10", ["X-RateLimit-Remaining"] = "0",
        ["X-RateLimit-Reset"] = "999999999999" })
      local c = new_client({ retries = 2 })
      assert(c:mkdir("first"))
      local t = core.now()
      local dir, err = c:mkdir("second")
      assert.is_nil(dir)
      assert.is_true(core.now() - t < 0.5, core.now() - t)
      assert.same("rate_limited", err.kind)
      assert.is_true(err.retryable)
      assert.is_true(err.retry_after > 1e9, err.retry_after)
      assert.same(1, mock:stats().requests)
      c:close()
    end)

    it("Remaining 0 with a reset long past: no wait", function()
      answers(1, { ["X-RateLimit-Limit"] = "10", ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Reset"] = "5" })
      local c = new_client({})
      assert(c:mkdir("first"))
      local t = core.now()
      assert(c:mkdir("second"))
      assert.is_true(core.now() - t < 0.5, core.now() - t)
      c:close()
    end)

    it("a huge Retry-After blocks the client no longer than max_retry_wait", function()
      mock:faults({ { type = "status", status = 429, path = "/v1/files", headers = { ["Retry-After"] = "99999999" },
        body = '{"code":429,"message":"Too many requests."}' } })
      local c = new_client({ retries = 0, max_retry_wait = 0.3 })
      local _, err = c:mkdir("first")
      assert.same("rate_limited", err.kind)
      assert.same(1e8 - 1, err.retry_after)
      local t = core.now()
      assert(c:mkdir("second"))
      local waited = core.now() - t
      assert.is_true(waited >= 0.2 and waited < 0.8, waited)
      c:close()
    end)
  end)

  it("bad values are refused", function()
    for _, v in ipairs({ "fast", 0, 1.5, -3 }) do
      local c, err = files.new({ api_key = "k", rate_limit = v })
      assert.is_nil(c)
      assert.same("invalid_argument", err.kind)
    end
    assert.has_error(function() files.new({ api_key = "k", rate_limit = true }) end)
    local c, err = files.new({ api_key = "k", rate_limit_dict = "nothing" })
    assert.is_nil(c)
    assert.matches("lua_shared_dict", err.message)
  end)
end)

describe("rate budget shared by nginx workers #nginx #waits", function()
  local mock, nginx

  setup(function()
    mock = helper.start_mock()
    nginx = helper.start_test_nginx(mock, { workers = 4 })
  end)
  teardown(function()
    if nginx then nginx:stop() end
    mock:stop()
  end)

  it("300 calls over 4 workers sharing rate_limit_dict: no 429, within 10% of 27 s #slow", function()
    mock:config({ rate_limit = LIMIT, rate_window = WINDOW })
    local out = helper.tmpname(".paced")
    local url = helper.sh_quote(nginx:url("/paced?window=" .. WINDOW))
    local t = core.now()
    -- Until a first answer names the limit, what goes at once is not paced
    -- (docs/parallel.md): on a loaded machine 40 requests can all leave
    -- before it comes.  One call first, then the rest 40 at once.
    -- (a curl that fails leaves a line saying how: the assertion shows it)
    local one = ("curl -s --max-time 120 %s || echo '{\"curl_exit\":'$?'}'"):format(url)
    assert(os.execute(("{ %s; } >> %s"):format(one, helper.sh_quote(out))))
    assert(os.execute(("seq %d | xargs -P 40 -I{} sh -c %s >> %s"):format(CALLS - 1, helper.sh_quote(one),
      helper.sh_quote(out))))
    local elapsed = core.now() - t
    local workers, ok, bad = {}, 0, {}
    for line in io.lines(out) do
      for doc in line:gmatch("{.-}") do
        local d = require("cjson").decode(doc)
        if d.ok then ok = ok + 1 elseif #bad < 5 then bad[#bad + 1] = doc end
        if d.worker then workers[d.worker] = true end
      end
    end
    os.remove(out)
    if ok ~= CALLS then print(table.concat(bad, "\n"), nginx:log_tail(20)) end
    local n = 0
    for _ in pairs(workers) do n = n + 1 end
    print(("      nginx, %d workers used: %d calls in %.2f s (ideal %d s), %d rejected"):format(n, CALLS, elapsed,
      IDEAL, mock:stats().rejected))
    assert.same(CALLS, ok)
    assert.same(0, mock:stats().rejected)
    assert.is_true(n >= 2, n)
    assert.is_true(elapsed >= IDEAL - 0.5 and elapsed <= IDEAL * 1.1, elapsed)
    -- no wait was a sleep(0), which Debian's nginx warns of at every call
    assert.is_nil((helper.read_file(nginx.prefix .. "/error.log") or ""):find("ngx.sleep(0)", 1, true))
  end)
end)
