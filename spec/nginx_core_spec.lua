-- The core's contract inside nginx, over cosockets: re-entrant calls,
-- concurrent light threads on one client, 100 Continue, the blocking
-- warning, and a randomized server against the cosocket response parser.
local helper = require "helper"
local conformance = require "conformance"

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

  for _, t in ipairs({ "ngx", "curl" }) do
    it("the files.ro owner's calls from a handler: chunks, share, a zip that starts over (" .. t .. ")", function()
      local zip_path = helper.tmpname(".zip")
      mock:config({ zip_drop_at = 1000 })
      local folder = "22222222-2222-4222-8222-222222222222"
      local out = call("/drive", { token = helper.DRIVE_TOKEN, base_url = mock.base, transport = t, folder = folder,
        zip_path = zip_path, missing = "44444444-4444-4444-8444-444444444444" })
      assert.is_true(out.upload.ok, out.upload.message)
      assert.same("nginx", out.upload.name)
      assert.same(3, mock:stats().chunks)
      assert.is_true(out.share.ok, out.share.message)
      assert.same(1, out.share.expire_in)
      assert.is_true(out.zip.ok, out.zip.message)
      local f = assert(io.open(zip_path, "rb"))
      assert.same(out.zip.size, f:seek("end"))
      f:close()
      assert.same(250000 + 30 + #"Elsewhere/nginx.txt" + 46 + #"Elsewhere/nginx.txt" + 22, out.zip.size)
      local zips = 0
      for _, r in ipairs(mock:requests()) do if r.path == "/api/v1/zip" then zips = zips + 1 end end
      assert.same(2, zips) -- dropped once, then whole
      assert.same("not_found", out.missing.kind)
      assert.same(200, out.missing.status)
      os.remove(zip_path)
    end)
  end

  it("what a callback raised is err.cause on both transports, with the same messages", function()
    local dir = helper.tmpname(".nodir")
    local results = {}
    for _, t in ipairs({ "curl", "ngx" }) do
      mock:reset()
      mock:faults({ { type = "file", size = 300000, path = "/conf", count = 5 } })
      results[t] = call("/causes", { base_url = mock.mkp_url, download_url = mock.base .. "/conf/d", transport = t,
        missing_dir = dir })
    end
    for _, name in ipairs({ "on_progress", "reader", "writer", "on_download" }) do
      assert.same("callback", results.ngx[name].kind, name)
      assert.is_true(results.ngx[name].cause_is_raised, name)
    end
    assert.same("ENOENT", results.ngx.sink_path.errno_name)
    assert.same(results.curl, results.ngx)
  end)

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

  -- Random responses, bounded in number and time, on both transports: every
  -- outcome is a result or an error of a known kind, never a raised error or
  -- a hang -- also when the rate limit headers make no sense (a second call
  -- on the same client then goes through the budget they fed).
  it("a randomized server never makes either transport raise or hang", function()
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
    local now = os.time()
    local counts = { "0", "-5", "2.5", "abc", "", "1", "30", "1e9", "999999999999", "0x10", " 7 " }
    local resets = { "0", "-5", "2.5", "abc", "", tostring(now - 100000), tostring(now + 1), tostring(now + 5000),
      "999999999999", "1e308", "nan", "inf", ("%.3f"):format(now + 0.5) }
    local afters = { "0", "-1", "1.5", "abc", "", "1", "99999999", "Wed, 21 Oct 2015 07:28:00 GMT",
      "Fri, 01 Jan 2100 00:00:00 GMT", os.date("!%a, %d %b %Y %H:%M:%S GMT", now + 1) }
    local function rate_headers()
      local h = {}
      if r(2) == 1 then h[#h + 1] = "X-RateLimit-Limit: " .. pick(counts) end
      if r(2) == 1 then h[#h + 1] = "X-RateLimit-Remaining: " .. pick(counts) end
      if r(2) == 1 then h[#h + 1] = "X-RateLimit-Reset: " .. pick(resets) end
      if r(3) == 1 then h[#h + 1] = "Retry-After: " .. pick(afters) end
      return h
    end
    local kinds = { network = true, timeout = true, protocol = true, http = true, server = true, not_found = true,
      unauthorized = true, forbidden = true, validation = true, storage_full = true, rate_limited = true }
    for case = 1, 30 do
      local status = pick({ "HTTP/1.1 200 OK", "HTTP/1.1 201 Created", "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", "HTTP/1.1 103 Hints",
        "HTTP/1.1 404 Not Found", "HTTP/1.0 500 Oops", "HTTP/1.1 2000 OK", "HTTP/9 200", "garbage", bytes(10), "",
        "HTTP/1.1 429 Too Many Requests", "HTTP/1.1 503 Busy", "HTTP/1.0 200 OK" })
      local headers, body = body_and_headers()
      for _, h in ipairs(rate_headers()) do table.insert(headers, r(#headers + 1), h) end
      if r(4) == 1 then headers[#headers + 1] = pick({ "Connection: close", "X-Bad", ": empty", ("H: " .. ("v"):rep(5000)) }) end
      local text = status .. "\r\n" .. table.concat(headers, "\r\n") .. (#headers > 0 and "\r\n" or "") .. "\r\n" .. body
      local steps, pos = {}, 1
      while pos <= #text do
        local n = r(1, 400)
        steps[#steps + 1] = { send = text:sub(pos, pos + n - 1) }
        if r(5) == 1 then steps[#steps + 1] = { pause = r(0, 20) / 1000 } end
        pos = pos + n
      end
      local keep, method = r(5) == 1, pick({ "GET", "POST", "HEAD" })
      for _, transport in ipairs({ "curl", "ngx" }) do
        mock:reset()
        mock:faults({ { type = "steps", path = "/conf", steps = steps, keep = keep } })
        local spec = { url = mock.base .. "/conf/r", then_url = mock.base .. "/conf/next", transport = transport,
          timeout = 1, method = method, max_retry_wait = 1, rate_window = 1 }
        local out, err
        if transport == "curl" then
          out = conformance.run(spec)
        else
          out, err = helper.post_json(nginx:url("/conformance"), spec, 15)
        end
        local where = ("case %d on %s (FILEAPI_SEED=%d): %q"):format(case, transport, seed, text:sub(1, 200))
        assert(out, where .. ": " .. tostring(err) .. "\n" .. nginx:log_tail())
        assert.is_true(out.ok or kinds[out.kind] == true, where .. ": " .. tostring(out.kind))
        assert.is_true(out.then_status ~= nil, where .. ": the second call gave nothing")
        -- one attempt each (retries 0); a budget wait is at most window + max_retry_wait
        assert.is_true(out.seconds < 1.5 and out.total_seconds < 5, where .. ": " .. out.seconds .. " s, "
          .. out.total_seconds .. " s with the second call")
      end
    end
  end)
end)
