-- The core's contract inside nginx, over cosockets: re-entrant calls,
-- concurrent light threads on one client, 100 Continue, the blocking
-- warning, and a randomized server against the cosocket response parser.
local helper = require "helper"

describe("core inside nginx #nginx", function()
  local mock, nginx

  setup(function()
    mock = helper.start_mock()
    nginx = helper.start_test_nginx(mock)
  end)
  teardown(function()
    if nginx then nginx:stop() end
    mock:stop()
  end)
  before_each(function() mock:reset() end)

  local function call(path, doc, timeout)
    local out, err = helper.post_json(nginx:url(path), doc, timeout)
    assert(out, tostring(err) .. "\n" .. nginx:log_tail())
    return out
  end

  for _, t in ipairs({ "ngx", "curl" }) do
    it("a nested call from on_progress is refused as busy (" .. t .. ")", function()
      local out = call("/reentrant", { case = "mkdir", base_url = mock.mkp_url, transport = t })
      assert.is_true(out.outer.ok)
      assert.is_false(out.nested.ok)
      assert.same("invalid_argument", out.nested.kind)
      assert.matches("busy", out.nested.message)
    end)

    it("close() from on_progress aborts the call and closes the client (" .. t .. ")", function()
      local out = call("/reentrant", { case = "close", base_url = mock.mkp_url, transport = t })
      assert.same("aborted", out.outer.kind)
      assert.same("invalid_argument", out.nested.kind)
      assert.matches("closed", out.nested.message)
    end)

    it("a nested call from a reader is refused (" .. t .. ")", function()
      local out = call("/reentrant", { case = "reader", base_url = mock.mkp_url, transport = t })
      assert.is_true(out.outer.ok)
      assert.same("invalid_argument", out.nested.kind)
      assert.same(1, #mock:requests())
    end)
  end

  it("10 light threads share one client: 10 calls held 1 s each take about 1 s", function()
    local faults = {}
    for i = 1, 10 do faults[i] = { type = "delay", seconds = 1, path = "/v1/files" } end
    mock:faults(faults)
    local out = call("/concurrent", { n = 10 })
    for i = 1, 10 do assert.is_true(out.results[i].ok, out.results[i].message) end
    assert.is_true(out.seconds >= 1 and out.seconds < 1.5, out.seconds)
  end)

  it("a refusal before 100 Continue arrives before the body is sent (ngx)", function()
    mock:config({ quota = 1000 })
    local path = helper.write_file(helper.tmpname(".bin"), 8 * 1024 * 1024)
    os.execute("chmod a+r " .. helper.sh_quote(path))
    local out = call("/cpu", { base_url = mock.mkp_url, transport = "ngx", upload = { path = path } })
    os.remove(path)
    assert.same("storage_full", out.kind)
    local rec = mock:last_request()
    assert.same("100-continue", rec.headers.expect)
    assert.is_false(rec.body_read)
  end)

  it("transport auto with ca_file warns once per worker that it blocks", function()
    for _ = 1, 2 do
      local out = call("/blocking", { base_url = mock.mkp_url, ca_file = "/etc/ssl/certs/ca-certificates.crt" })
      assert.is_true(out[1].ok and out[2].ok)
    end
    local _, count = nginx:log_tail(1000):gsub("needs libcurl, which blocks this worker", "")
    assert.same(1, count)
  end)

  -- Random responses, bounded in number and time: every outcome is a result
  -- or an error of a known kind, never a raised error or a hang.
  it("a randomized server never makes the cosocket parser raise or hang", function()
    local seed = tonumber(os.getenv("FILEAPI_SEED")) or os.time()
    math.randomseed(seed)
    local r = math.random
    local function pick(list) return list[r(#list)] end
    local function bytes(n)
      local t = {}
      for i = 1, n do t[i] = string.char(r(0, 255)) end
      return table.concat(t)
    end
    local function body_and_headers()
      local body = pick({ "", "ok", ("z"):rep(r(1, 3000)), bytes(r(1, 200)) })
      local kind = r(6)
      if kind == 1 then return { "Content-Length: " .. #body }, body end
      if kind == 2 then return { "Content-Length: " .. (#body + r(1, 50)) }, body end
      if kind == 3 then return { "Content-Length: " .. pick({ "-1", "abc", "1e3", "", "5, 6" }) }, body end
      if kind == 4 then
        local size = pick({ ("%x"):format(#body), "zz", "-3", ("%x"):format(#body + 3), "" })
        return { "Transfer-Encoding: chunked" },
          size .. "\r\n" .. body .. pick({ "\r\n0\r\n\r\n", "\r\n", "", "\r\n0\r\nT: 1\r\n\r\n", "xx" })
      end
      if kind == 5 then return { "Transfer-Encoding: gzip" }, body end
      return {}, body
    end
    local kinds = { network = true, timeout = true, protocol = true, http = true, server = true, not_found = true,
      unauthorized = true, forbidden = true, validation = true, storage_full = true, rate_limited = true }
    for case = 1, 60 do
      local status = pick({ "HTTP/1.1 200 OK", "HTTP/1.1 201 Created", "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", "HTTP/1.1 103 Hints",
        "HTTP/1.1 404 Not Found", "HTTP/1.0 500 Oops", "HTTP/1.1 2000 OK", "HTTP/9 200", "garbage", bytes(10), "" })
      local headers, body = body_and_headers()
      if r(4) == 1 then headers[#headers + 1] = pick({ "Connection: close", "X-Bad", ": empty", ("H: " .. ("v"):rep(5000)) }) end
      local text = status .. "\r\n" .. table.concat(headers, "\r\n") .. (#headers > 0 and "\r\n" or "") .. "\r\n" .. body
      local steps, pos = {}, 1
      while pos <= #text do
        local n = r(1, 400)
        steps[#steps + 1] = { send = text:sub(pos, pos + n - 1) }
        if r(5) == 1 then steps[#steps + 1] = { pause = r(0, 20) / 1000 } end
        pos = pos + n
      end
      mock:reset()
      mock:faults({ { type = "steps", path = "/conf", steps = steps, keep = r(5) == 1 } })
      local out, err = helper.post_json(nginx:url("/conformance"),
        { url = mock.base .. "/conf/r", transport = "ngx", timeout = 1, method = pick({ "GET", "POST", "HEAD" }) }, 10)
      local where = ("case %d (FILEAPI_SEED=%d): %q"):format(case, seed, text:sub(1, 200))
      assert(out, where .. ": " .. tostring(err) .. "\n" .. nginx:log_tail())
      assert.is_true(out.ok or kinds[out.kind] == true, where .. ": " .. tostring(out.kind))
      assert.is_true(out.seconds < 1.5, where .. ": " .. out.seconds)
    end
  end)
end)
