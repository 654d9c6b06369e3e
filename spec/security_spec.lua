-- TLS verification, plain-http refusal, no redirects, proxies, and secrets
-- kept out of every error.
local helper = require "helper"
local files = require "fileapi.files"
local shares = require "fileapi.shares"

local SECRET_KEY = "sk_live_SECRET-key-123"
local SECRET_TOKEN = "tok/SECRET?share#token"

local function contains_secret(value, secrets, seen)
  seen = seen or {}
  if type(value) == "string" then
    for _, s in ipairs(secrets) do
      if value:find(s, 1, true) then return true end
    end
  elseif type(value) == "table" and not seen[value] then
    seen[value] = true
    for k, v in pairs(value) do
      if contains_secret(k, secrets, seen) or contains_secret(v, secrets, seen) then return true end
    end
  end
  return false
end

describe("security", function()
  describe("TLS", function()
    local dir, cert, mock

    setup(function()
      dir = helper.tmpname(".tls")
      local pair = helper.make_cert(dir, "server")
      cert = pair.cert
      mock = helper.start_mock({ tls = pair })
    end)

    teardown(function()
      mock:stop()
      os.execute("rm -rf " .. helper.sh_quote(dir))
    end)

    it("verifies certificates by default: a self-signed one is kind tls, not retried", function()
      local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url }))
      local d, err = c:mkdir("x")
      assert.is_nil(d)
      assert.same("tls", err.kind)
      assert.same(1, err.attempts)
      assert.is_false(err.retryable)
      assert.same(0, mock:stats().requests)
    end)

    it("succeeds with ca_file naming the certificate", function()
      local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, ca_file = cert }))
      local d = assert(c:mkdir("over-tls"))
      assert.same("over-tls", d.name)
      local s = assert(shares.new({ token = "editor-token", base_url = mock.base, ca_file = cert }))
      assert.same("F", assert(s:mkdir("F")).name)
    end)
  end)

  describe("over plain http", function()
    local mock
    setup(function() mock = helper.start_mock() end)
    teardown(function() mock:stop() end)
    before_each(function() mock:reset() end)

    it("refuses http:// to a non-loopback host without allow_insecure", function()
      for _, url in ipairs({ "http://api.mijnklantportaal.nl/v1", "http://10.0.0.1/v1", "http://127.example.com" }) do
        local c, err = files.new({ api_key = helper.API_KEY, base_url = url })
        assert.is_nil(c, url)
        assert.same("invalid_argument", err.kind)
        local s, err2 = shares.new({ token = "t", base_url = url })
        assert.is_nil(s, url)
        assert.same("invalid_argument", err2.kind)
      end
    end)

    it("follows no redirect for a POST, so the key never reaches another host", function()
      mock:faults({ { type = "status", status = 307, headers = { Location = "http://127.0.0.2:9/v1/files" } },
        { type = "status", status = 302, headers = { Location = mock.mkp_url .. "/elsewhere" } } })
      local c = assert(files.new({ api_key = SECRET_KEY, base_url = mock.mkp_url }))
      for _, status in ipairs({ 307, 302 }) do
        local d, err = c:mkdir("x")
        assert.is_nil(d)
        assert.same("http", err.kind)
        assert.same(status, err.status)
      end
      assert.same(2, mock:stats().requests)
    end)

    it("sends through a proxy, with the user agent given", function()
      local c = assert(files.new({ api_key = helper.API_KEY, base_url = "http://api.example.test/v1",
        allow_insecure = true, proxy = mock.base, user_agent = "my-app/1.0" }))
      local d = assert(c:mkdir("via-proxy"))
      assert.same("via-proxy", d.name)
      local req = mock:last_request()
      assert.same("http://api.example.test/v1/files", req.target)
      assert.same("api.example.test", req.headers.host)
      assert.same("my-app/1.0", req.headers["user-agent"])
    end)

    it("keeps the proxy's password out of errors", function()
      local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url,
        proxy = "http://user:proxy-PASSWORD@127.0.0.1:" .. helper.closed_port(), retries = 0 }))
      local _, err = c:mkdir("x")
      assert.same("network", err.kind)
      assert.is_false(contains_secret(err, { "proxy-PASSWORD" }))
      assert.is_false(tostring(err):find("proxy-PASSWORD", 1, true) ~= nil)
    end)

    it("redacts the API key from every error kind, even when a server echoes it", function()
      local statuses = { 401, 403, 404, 409, 422, 426, 429, 500, 502, 503, 504 }
      local faults = {}
      for _, st in ipairs(statuses) do
        faults[#faults + 1] = { type = "status", status = st, message = "bad key " .. SECRET_KEY,
          body = ('{"message":"bad key %s","errors":{"k":["%s"]}}'):format(SECRET_KEY, SECRET_KEY) }
      end
      faults[#faults + 1] = { type = "status", status = 201, body = '{"echo":"' .. SECRET_KEY .. '"}' }
      mock:faults(faults)
      local c = assert(files.new({ api_key = SECRET_KEY, base_url = mock.mkp_url, retries = 0 }))
      local kinds = {}
      for i = 1, #statuses + 1 do
        local _, err = c:mkdir("x" .. i)
        kinds[#kinds + 1] = err.kind
        assert.is_false(contains_secret(err, { SECRET_KEY }), err.kind)
        assert.is_nil(tostring(err):find(SECRET_KEY, 1, true))
        if err.status ~= 201 then assert.matches("bad key %[REDACTED%]", err.message) end
      end
      assert.same({ "unauthorized", "forbidden", "not_found", "http", "validation", "storage_full",
        "rate_limited", "server", "server", "server", "server", "protocol" }, kinds)
      -- transport kinds
      local refused = assert(files.new({ api_key = SECRET_KEY, retries = 0,
        base_url = "http://127.0.0.1:" .. helper.closed_port() .. "/v1" }))
      local _, nerr = refused:mkdir("x")
      assert.same("network", nerr.kind)
      assert.is_false(contains_secret(nerr, { SECRET_KEY }))
      mock:faults({ { type = "stall", seconds = 3 } })
      local slow = assert(files.new({ api_key = SECRET_KEY, base_url = mock.mkp_url, timeout = 0.3 }))
      local _, terr = slow:mkdir("x")
      assert.same("timeout", terr.kind)
      assert.is_false(contains_secret(terr, { SECRET_KEY }))
      local _, cerr = c:upload({ data = "x", filename = "f" }, { on_progress = function() error(SECRET_KEY) end })
      assert.same("callback", cerr.kind)
      assert.is_false(contains_secret(cerr, { SECRET_KEY }))
    end)

    it("redacts share tokens (raw and percent-encoded) and cookies", function()
      mock:add_share({ token = SECRET_TOKEN, permission = "visitor" })
      local encoded = SECRET_TOKEN:gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end)
      mock:faults({ { type = "status", status = 422, path = "/api/",
        body = ('{"message":"bad %s %s","errors":{"name":["%s"]}}'):format(SECRET_TOKEN, encoded, SECRET_TOKEN) } })
      local s = assert(shares.new({ token = SECRET_TOKEN, base_url = mock.base,
        headers = { Cookie = "share_session=COOKIE-SECRET" } }))
      local secrets = { SECRET_TOKEN, encoded, "COOKIE-SECRET" }
      local _, e1 = s:mkdir("x")
      assert.same("validation", e1.kind)
      assert.is_false(contains_secret(e1, secrets))
      local _, e2 = s:mkdir("x")
      assert.same("forbidden", e2.kind)
      assert.is_false(contains_secret(e2, secrets))
      local gone = assert(shares.new({ token = "gone/" .. SECRET_TOKEN, base_url = mock.base }))
      local _, e3 = gone:mkdir("x")
      assert.same("not_found", e3.kind)
      assert.is_false(contains_secret(e3, { "gone/" .. SECRET_TOKEN }))
      assert.is_nil(tostring(e3):find("SECRET", 1, true))
    end)
  end)
end)
