-- fileapi inside nginx: the example config and handlers, driven over HTTP,
-- against the mock.  One worker process, so "the same worker" is certain.
local helper = require "helper"
local cjson = require "cjson"
local socket = require "socket"

describe("nginx #nginx", function()
  local mock, nginx, tls_dir, trusted, untrusted, trusted_cert

  setup(function()
    mock = helper.start_mock()
    tls_dir = helper.tmpname(".tls")
    local good, bad = helper.make_cert(tls_dir, "trusted"), helper.make_cert(tls_dir, "untrusted")
    os.execute("chmod -R a+rX " .. helper.sh_quote(tls_dir))
    trusted = helper.start_mock({ tls = good })
    untrusted = helper.start_mock({ tls = bad })
    trusted_cert = good.cert
    nginx = helper.start_nginx(mock)
  end)

  teardown(function()
    if nginx then nginx:stop() end
    mock:stop()
    if trusted then trusted:stop() end
    if untrusted then untrusted:stop() end
    os.execute("rm -rf " .. helper.sh_quote(tls_dir))
  end)

  before_each(function() mock:reset() end)

  local function get(path, server)
    server = server or nginx
    local status, body, seconds = helper.http_get(server:url(path))
    assert.same(200, status, tostring(body) .. "\nnginx error.log:\n" .. server:log_tail())
    return cjson.decode(body), seconds
  end

  -- Another nginx with the example config for one test, started with
  -- opts (env, edit) and stopped also when the test fails.
  local function with_nginx(opts, fn)
    local other = helper.start_nginx(mock, opts)
    local ok, err = pcall(fn, other)
    other:stop()
    if not ok then error(err, 0) end
  end

  -- An edit of the example config: its workers' client options.
  local function client_options(text)
    return function(conf)
      local out, n = conf:gsub("client = { timeout = 30 }", function() return "client = " .. text end)
      assert(n == 1, "the example config's client options were not found")
      return out
    end
  end

  it("files.mkdir and files.upload from a content handler", function()
    local doc = get("/mkdir?name=FromNginx")
    assert.is_true(doc.ok)
    assert.matches("^fsd_", doc.result.id)
    assert.same("FromNginx", doc.result.name)
    local req = mock:last_request()
    assert.same("Bearer " .. helper.API_KEY, req.headers.authorization)
    assert.same('{"directory":"FromNginx"}', req.body)
    assert.matches("^fileapi/", req.headers["user-agent"])

    local body = "uploaded through nginx"
    local up = helper.tmpname(".out")
    assert(os.execute(("curl -s -o %s --data-binary %s %s"):format(helper.sh_quote(up),
      helper.sh_quote(body), helper.sh_quote(nginx:url("/upload?name=n.txt&dir=" .. doc.result.id)))))
    local updoc = cjson.decode(io.open(up):read("*a"))
    os.remove(up)
    assert.is_true(updoc.ok)
    assert.same(#body, updoc.result.size)
    assert.same("text/plain", updoc.result.mime)
    local part = mock:last_request().parts[1]
    assert.same(body, part.data)
    assert.same("n.txt", part.filename)
  end)

  it("returns the API's errors to the handler", function()
    local doc = get("/mkdir?name=X&dir=fsd_missing0001")
    assert.is_false(doc.ok)
    assert.same("not_found", doc.error.kind)
    assert.same(404, doc.error.status)
    local bad = get("/mkdir?name=")
    assert.same("invalid_argument", bad.error.kind)
    mock:faults({ { type = "status", status = 503, count = 5, headers = { ["Retry-After"] = "0" } } })
    local busy = get("/mkdir?name=Busy")
    assert.same("server", busy.error.kind)
    assert.same(503, busy.error.status)
    assert.same(3, busy.error.attempts)
  end)

  it("shares.mkdir from a handler, results and errors", function()
    local doc = get("/share-mkdir?name=Projects")
    assert.is_true(doc.ok)
    assert.same("Projects", doc.result.name)
    assert.same("folder", doc.result.type)
    with_nginx({ env = { FILESRO_TOKEN = "visitor-token" } }, function(visitor)
      local denied = get("/share-mkdir?name=Projects", visitor)
      assert.same("forbidden", denied.error.kind)
      assert.same("Access Denied", denied.error.message)
    end)
  end)

  -- The Files API on a certificate nginx trusts, files.ro on one it does
  -- not: only cosockets (lua_ssl_trusted_certificate) trust the first.
  it("speaks TLS over cosockets, verifying the certificate", function()
    local function by_name(m) return "https://localhost:" .. m.port end
    with_nginx({ ca_file = trusted_cert, env = { MKP_BASE_URL = by_name(trusted) .. "/v1",
      FILESRO_BASE_URL = by_name(untrusted) } }, function(tls)
      local doc = get("/mkdir?name=OverTLS", tls)
      assert.is_true(doc.ok, doc.error and doc.error.message)
      assert.same("OverTLS", doc.result.name)
      assert.same('{"directory":"OverTLS"}', trusted:last_request().body)
      local bad = get("/share-mkdir?name=X", tls)
      assert.is_false(bad.ok)
      assert.same("tls", bad.error.kind)
      assert.same(0, untrusted:stats().requests)
    end)
    -- nginx cannot check a certificate against an IP address: forcing
    -- cosockets there is refused rather than left unverified
    with_nginx({ ca_file = trusted_cert, env = { MKP_BASE_URL = trusted.mkp_url },
      edit = client_options('{ timeout = 30, transport = "ngx" }') }, function(ip)
      local doc = get("/mkdir?name=X", ip)
      assert.same("invalid_argument", doc.error.kind)
    end)
  end)

  it("the curl transport can be forced, and also works in a handler", function()
    with_nginx({ edit = client_options('{ timeout = 30, transport = "curl" }') }, function(curl)
      local doc = get("/mkdir?name=ViaCurl", curl)
      assert.is_true(doc.ok)
      assert.same("ViaCurl", doc.result.name)
    end)
  end)

  it("times out over cosockets at the configured timeout, long before a 5 s stall ends", function()
    with_nginx({ edit = client_options("{ timeout = 1 }") }, function(quick)
      mock:faults({ { type = "stall", seconds = 5 } })
      local doc, seconds = get("/mkdir?name=slow", quick)
      assert.is_false(doc.ok)
      assert.same("timeout", doc.error.kind)
      assert.same(1, doc.error.attempts)
      assert.is_true(seconds >= 0.9 and seconds < 4, seconds)
      assert.is_true(get("/mkdir?name=after", quick).ok)
    end)
  end)

  it("replaces a pooled connection the server closed", function()
    mock:faults({ { type = "status", status = 201, drop_after = true,
      body = '{"id":"fsd_closed000001","type":"directory","name":"c"}' } })
    assert.is_true(get("/mkdir?name=one").ok)
    local doc = get("/mkdir?name=two")
    assert.is_true(doc.ok, doc.error and doc.error.message)
    assert.same("two", doc.result.name)
  end)

  it("reuses pooled connections across requests", function()
    for i = 1, 10 do assert.is_true(get("/mkdir?name=pool" .. i).ok) end
    local stats = mock:stats()
    assert.same(10, stats.requests)
    -- the worker's pool may still hold a connection from an earlier spec
    assert.is_true(stats.connections <= 1, stats.connections)
  end)

  it("never blocks the worker: 20 requests answered while one waits 3 s on a stalled API", function()
    mock:faults({ { type = "stall", seconds = 3 } })
    local out = helper.tmpname(".slow")
    assert(os.execute(("curl -s -m 20 -o %s -w '%%{time_total}' %s > %s.time &"):format(helper.sh_quote(out),
      helper.sh_quote(nginx:url("/mkdir?name=slow")), helper.sh_quote(out))))
    for _ = 1, 100 do
      if mock:stats().requests >= 1 then break end
      socket.sleep(0.02)
    end
    local latencies = {}
    for i = 1, 20 do
      local doc, seconds = get("/mkdir?name=fast" .. i)
      assert.is_true(doc.ok)
      latencies[i] = seconds
    end
    local slow
    for _ = 1, 300 do
      local f = io.open(out .. ".time")
      local t = f and f:read("*a")
      if f then f:close() end
      if t and t ~= "" then slow = tonumber(t) break end
      socket.sleep(0.05)
    end
    local slow_doc = cjson.decode(io.open(out):read("*a"))
    os.remove(out)
    os.remove(out .. ".time")
    table.sort(latencies)
    print(("\n  during a 3 s stall: 20 requests, fastest %.1f ms, median %.1f ms, slowest %.1f ms; stalled one %.2f s")
      :format(latencies[1] * 1000, latencies[10] * 1000, latencies[20] * 1000, slow))
    for i = 1, 20 do assert.is_true(latencies[i] < 0.5, latencies[i]) end
    assert.is_true(slow >= 3, slow)
    assert.is_false(slow_doc.ok)
    assert.same("network", slow_doc.error.kind)
  end)

  it("forwards a 200 MiB request body as a reader source without buffering it", function()
    local size = 200 * 1024 * 1024
    local path = helper.write_file(helper.tmpname(".bin"), size)
    local out = helper.tmpname(".out")
    assert(os.execute(("curl -s -o %s -X POST -H 'Expect:' -H 'Content-Type: application/octet-stream' -T %s %s")
      :format(helper.sh_quote(out), helper.sh_quote(path), helper.sh_quote(nginx:url("/forward?name=big.bin")))))
    os.remove(path)
    local doc = cjson.decode(io.open(out):read("*a"))
    os.remove(out)
    assert.is_true(doc.ok, doc.error and doc.error.message)
    assert.same(size, doc.result.size)
    assert.same(size, mock:last_request().parts[1].size)
    local growth = (doc.hwm_after_kb - doc.rss_before_kb) / 1024
    print(("\n  forwarded 200 MiB through nginx: worker RSS %.1f MiB before, peak %.1f MiB after (+%.1f MiB)")
      :format(doc.rss_before_kb / 1024, doc.hwm_after_kb / 1024, growth))
    assert.is_true(growth < 32, growth)
  end)

  -- The browser, played with curl: a cookie jar, no redirects followed.
  it("a web app's OAuth routes: consent, callback with the state checked, then calls on the user's portal", function()
    local jar, headers = helper.tmpname(".jar"), helper.tmpname(".headers")
    local function fetch(url)
      local p = assert(io.popen(("curl -s -b %s -c %s -D %s -o - %s"):format(helper.sh_quote(jar), helper.sh_quote(jar),
        helper.sh_quote(headers), helper.sh_quote(url))))
      local body = p:read("*a")
      p:close()
      local head = io.open(headers):read("*a")
      return tonumber(head:match("^HTTP/%S+ (%d+)")), head:match("\n[Ll]ocation: ([^\r\n]+)"), body
    end
    local status, consent = fetch(nginx:url("/oauth/connect"))
    assert.same(302, status, nginx:log_tail())
    assert.matches("^" .. mock.oauth_url:gsub("%p", "%%%0") .. "/oauth/authorize%?", consent)
    local back
    status, back = fetch(consent)
    assert.same(302, status)
    assert.matches("^" .. nginx:url("/oauth/callback"):gsub("%p", "%%%0") .. "%?code=", back)
    -- the same redirect with another state is refused
    local forged = back:gsub("state=[^&]+", "state=forged")
    local _, _, refused = fetch(forged)
    assert.matches("not our sign%-in", refused)
    -- the session's state was used up by the forged attempt: sign in again
    _, consent = fetch(nginx:url("/oauth/connect"))
    status, back = fetch(consent)
    assert.same(302, status)
    local _, _, text = fetch(back)
    assert.matches("^connected", text)
    local _, _, made = fetch(nginx:url("/oauth/mkdir?name=FromTheApp"))
    local doc = cjson.decode(made)
    assert.is_true(doc.ok, made)
    assert.matches("^Bearer at_", mock:last_request().headers.authorization)
    assert.is_nil(nginx:log_tail(2000):find(helper.OAUTH_CLIENT_SECRET, 1, true))
    os.remove(jar)
    os.remove(headers)
  end)
end)
