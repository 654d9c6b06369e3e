-- Each fault the mock can play: the error's kind, status, attempts, how long
-- it took, and that the same client works on the next call.
local helper = require "helper"
local core = require "fileapi.core"

-- libcurl's timers may fire a hair before our clock says the time is up
-- (a 1 s timeout measured 0.9996 s): lower bounds allow that much
local EARLY = 0.05

describe("faults #waits", function()
  local mock, client

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  local function new_client(opts) return helper.mkp_client(mock, opts, { backoff = 0.05 }) end

  before_each(function()
    mock:reset()
    client = new_client({ timeout = 5 })
  end)
  after_each(function() client:close() end)

  local function timed(fn)
    local t = core.now()
    local a, b = fn()
    return a, b, core.now() - t
  end

  local function works_after(c)
    local dir, err = (c or client):mkdir("after")
    assert.is_nil(err)
    assert.matches("^fsd_", dir.id)
  end

  it("connection refused: network, retried (nothing was sent), attempts = retries + 1", function()
    local c = new_client({ base_url = "http://127.0.0.1:" .. helper.closed_port() .. "/v1", retries = 3 })
    local dir, err, elapsed = timed(function() return c:mkdir("x") end)
    assert.is_nil(dir)
    assert.same("network", err.kind)
    assert.same(4, err.attempts)
    assert.is_true(err.retryable)
    assert.is_nil(err.status)
    assert.is_true(elapsed >= 0.05 + 0.1 + 0.2 - 0.2 and elapsed < 2, elapsed)
  end)

  it("connect_timeout: a listener whose backlog is full, timeout retried (nothing was sent)", function()
    local socket = require "socket"
    local listener = socket.tcp()
    assert(listener:bind("127.0.0.1", 0))
    assert(listener:listen(0))
    local _, port = listener:getsockname()
    local fillers = {}
    for i = 1, 4 do
      fillers[i] = socket.tcp()
      fillers[i]:settimeout(0)
      fillers[i]:connect("127.0.0.1", port)
    end
    local c = new_client({ base_url = "http://127.0.0.1:" .. port .. "/v1", connect_timeout = 0.5, retries = 1 })
    local _, err, elapsed = timed(function() return c:mkdir("x") end)
    for _, f in ipairs(fillers) do f:close() end
    listener:close()
    assert.same("timeout", err.kind)
    assert.same(2, err.attempts)
    assert.is_true(err.retryable)
    assert.is_false(err.request_sent)
    assert.is_true(elapsed >= 1 - EARLY and elapsed < 2, elapsed)
  end)

  it("accept then never answer: timeout within 1 s of its setting, not retried", function()
    local c = new_client({ timeout = 1 })
    mock:faults({ { type = "stall", seconds = 10 } })
    local _, err, elapsed = timed(function() return c:mkdir("x") end)
    assert.same("timeout", err.kind)
    assert.same(1, err.attempts)
    assert.is_true(err.retryable)
    assert.is_true(elapsed >= 1 - EARLY and elapsed < 2, elapsed)
    works_after(c)
  end)

  it("idle_timeout fires when no byte moves", function()
    local c = new_client({ idle_timeout = 1 })
    mock:faults({ { type = "stall", seconds = 10 } })
    local _, err, elapsed = timed(function() return c:mkdir("x") end)
    assert.same("timeout", err.kind)
    assert.is_true(elapsed >= 1 - EARLY and elapsed < 3, elapsed)
    works_after(c)
  end)

  it("stall mid-response: timeout", function()
    local c = new_client({ timeout = 1 })
    mock:faults({ { type = "stall_response", seconds = 10 } })
    local _, err, elapsed = timed(function() return c:mkdir("x") end)
    assert.same("timeout", err.kind)
    assert.same(1, err.attempts)
    assert.is_true(elapsed >= 1 - EARLY and elapsed < 2, elapsed)
    works_after(c)
  end)

  it("a server trickling bytes: idle_timeout does not fire, timeout does", function()
    local c = new_client({ timeout = 2, idle_timeout = 1 })
    mock:faults({ { type = "trickle", interval = 0.2 } })
    local _, err, elapsed = timed(function() return c:mkdir("x") end)
    assert.same("timeout", err.kind)
    assert.is_true(elapsed >= 2 - EARLY and elapsed < 3, elapsed)
    works_after(c)
  end)

  it("close mid-upload: the body did not go out whole, so it is rewound and sent again", function()
    local path = helper.write_file(helper.tmpname(".bin"), 4 * 1024 * 1024)
    mock:faults({ { type = "drop_upload", after = 100000 } })
    local item = assert(client:upload(path))
    assert.same(4 * 1024 * 1024, item.size)
    assert.same(2, #mock:requests())
    local c = new_client({ timeout = 5, retries = 0 })
    mock:faults({ { type = "drop_upload", after = 100000 } })
    local none, err = c:upload(path)
    assert.is_nil(none)
    assert.same("network", err.kind)
    assert.same(1, err.attempts)
    assert.is_true(err.retryable)
    assert.is_false(err.body_sent)
    assert.is_nil(err.status)
    works_after(c)
    c:close()
    os.remove(path)
  end)

  it("429 with Retry-After in seconds: waits, then succeeds", function()
    mock:faults({ { type = "status", status = 429, headers = { ["Retry-After"] = "1" },
      body = '{"code":429,"message":"Too many requests."}' } })
    local dir, err, elapsed = timed(function() return client:mkdir("x") end)
    assert.is_nil(err)
    assert.matches("^fsd_", dir.id)
    assert.is_true(elapsed >= 1 - EARLY and elapsed < 2, elapsed)
    assert.same(2, mock:stats().requests)
  end)

  it("503 with Retry-After as an HTTP date: waits until then", function()
    local when = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
    mock:faults({ { type = "status", status = 503, headers = { ["Retry-After"] = when } } })
    local dir, err, elapsed = timed(function() return client:mkdir("x") end)
    assert.is_nil(err)
    assert.truthy(dir.id)
    assert.is_true(elapsed >= 0.9 and elapsed < 3, elapsed)
  end)

  it("429 every time: rate_limited after retries + 1 attempts, Retry-After capped", function()
    local c = new_client({ retries = 2, max_retry_wait = 0.2 })
    mock:faults({ { type = "status", status = 429, count = 3, headers = { ["Retry-After"] = "30" },
      body = '{"code":429,"message":"Too many requests."}' } })
    local _, err, elapsed = timed(function() return c:mkdir("x") end)
    assert.same("rate_limited", err.kind)
    assert.same(429, err.status)
    assert.same(3, err.attempts)
    assert.same(30, err.retry_after)
    assert.same("Too many requests.", err.message)
    assert.is_true(elapsed >= 0.4 and elapsed < 1.5, elapsed)
    works_after(c)
  end)

  for _, status in ipairs({ 500, 502, 504 }) do
    it(status .. ": server, retryable but not retried; retried with retry_unsafe", function()
      local body = status == 502 and "<html><body><h1>502 Bad Gateway</h1></body></html>" or nil
      mock:faults({ { type = "status", status = status, body = body,
        content_type = body and "text/html" or nil } })
      local _, err = client:mkdir("x")
      assert.same("server", err.kind)
      assert.same(status, err.status)
      assert.same(1, err.attempts)
      assert.is_true(err.retryable)
      if body then assert.same("the server answered HTTP 502", err.message) end
      works_after()
      local unsafe = new_client({ retry_unsafe = true })
      mock:faults({ { type = "status", status = status, count = 2, body = body } })
      assert.truthy(assert(unsafe:mkdir("second")).id)
      local _, err3 = (function()
        mock:faults({ { type = "status", status = status, count = 3, body = body } })
        return unsafe:mkdir("third")
      end)()
      assert.same(3, err3.attempts)
      unsafe:close()
    end)
  end

  it("a timeout after the request was sent is retried only with retry_unsafe", function()
    local c = new_client({ timeout = 0.5, retry_unsafe = true })
    mock:faults({ { type = "stall", seconds = 5 } })
    local dir, err = c:mkdir("x")
    assert.is_nil(err)
    assert.truthy(dir.id)
    assert.same(2, mock:stats().requests)
  end)

  it("201 with invalid JSON or the wrong shape: protocol, not retried", function()
    mock:faults({ { type = "status", status = 201, body = "{not json" },
      { type = "status", status = 201, body = "[1,2,3]" } })
    local _, e1 = client:mkdir("x")
    local _, e2 = client:mkdir("x")
    for _, e in ipairs({ e1, e2 }) do
      assert.same("protocol", e.kind)
      assert.same(201, e.status)
      assert.same(1, e.attempts)
      assert.is_false(e.retryable)
    end
    works_after()
  end)

  it("a truncated body: protocol", function()
    mock:faults({ { type = "raw",
      raw = 'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"id":"fsd_' } })
    local _, err = client:mkdir("x")
    assert.same("protocol", err.kind)
    assert.same(201, err.status)
    assert.same(1, err.attempts)
    works_after()
  end)

  it("an oversized response: protocol, memory bounded by max_response", function()
    mock:faults({ { type = "oversized", size = 3 * 1024 * 1024 } })
    local _, err = client:mkdir("x")
    assert.same("protocol", err.kind)
    assert.matches("larger than 1048576 bytes", err.message)
    local small = new_client({ max_response = 100 })
    local _, err2 = small:mkdir(("long name "):rep(20))
    assert.same("protocol", err2.kind)
    works_after()
  end)

  it("a reader without rewind is not sent twice; one with rewind is", function()
    mock:faults({ { type = "status", status = 503 } })
    local function reader_for(s)
      local done = false
      return function() if done then return nil end done = true return s end,
        function() done = false return true end
    end
    local read = reader_for("hello")
    local _, err = client:upload({ reader = read, size = 5, filename = "r.txt" })
    assert.same("server", err.kind)
    assert.same(503, err.status)
    assert.same(1, err.attempts)
    mock:faults({ { type = "status", status = 503 } })
    local rewind
    read, rewind = reader_for("hello")
    local item = assert(client:upload({ reader = read, rewind = rewind, size = 5, filename = "r.txt" }))
    assert.same(5, item.size)
    assert.same("hello", mock:last_request().parts[1].data)
  end)

  it("a request is never sent twice when a kept-alive connection closes without an answer", function()
    assert(client:mkdir("first"))
    mock:faults({ { type = "stall", seconds = 0.5 } })
    local dir, err = client:mkdir("second")
    assert.is_nil(dir)
    assert.same("network", err.kind)
    assert.same(1, err.attempts)
    assert.is_true(err.retryable)
    assert.matches("not sending it again", err.message)
    local names = {}
    for _, r in ipairs(mock:requests()) do names[#names + 1] = r.body end
    assert.same({ '{"directory":"first"}', '{"directory":"second"}' }, names)
    local path = helper.write_file(helper.tmpname(".bin"), 64 * 1024)
    mock:faults({ { type = "stall", seconds = 0.5 } })
    local item, uerr = client:upload(path)
    os.remove(path)
    assert.is_nil(item)
    assert.same("network", uerr.kind)
    assert.same(3, mock:stats().requests)
    works_after()
  end)

  it("a kept-alive connection the server closed is replaced transparently", function()
    mock:faults({ { type = "status", status = 201, drop_after = true,
      body = '{"id":"fsd_closed000001","type":"directory","name":"c"}' } })
    assert(client:mkdir("one"))
    local path = helper.write_file(helper.tmpname(".bin"), 2 * 1024 * 1024)
    assert.truthy(assert(client:upload(path)).id)
    os.remove(path)
    assert.same(2, mock:stats().connections)
  end)
end)
