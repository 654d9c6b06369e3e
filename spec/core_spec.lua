-- The core's contract beyond uploads: callbacks that use their own client,
-- paths that are not files, methods, retries by method, error text, and
-- what a client shows of itself.
local helper = require "helper"
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local core = require "fileapi.core"
local engine = require "fileapi.http.engine"

describe("core", function()
  local mock, client

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  local function new_client(opts) return helper.mkp_client(mock, opts, { backoff = 0.01 }) end

  before_each(function()
    mock:reset()
    client = new_client({ timeout = 10 })
  end)
  after_each(function() client:close() end)

  local big = { data = ("x"):rep(300000), filename = "big.bin" }

  describe("a callback that uses its own client", function()
    it("a nested call from on_progress is refused as busy; the outer call goes on", function()
      local nested
      local item = assert(client:upload(big, { on_progress = function()
        if not nested then nested = { client:mkdir("nested") } end
      end }))
      assert.same(300000, item.size)
      assert.is_nil(nested[1])
      assert.same("invalid_argument", nested[2].kind)
      assert.matches("busy", nested[2].message)
      assert.same(1, #mock:requests())
      assert.truthy(assert(client:mkdir("after")).id)
    end)

    it("close() from on_progress ends the call as aborted and closes the client after it", function()
      local item, err = client:upload(big, { on_progress = function() client:close() end })
      assert.is_nil(item)
      assert.same("aborted", err.kind)
      assert.matches("closed by a callback", err.message)
      local again, cerr = client:mkdir("x")
      assert.is_nil(again)
      assert.same("invalid_argument", cerr.kind)
      assert.matches("closed", cerr.message)
    end)

    it("a nested call from a reader is refused, not retried into the wrong kind", function()
      local nested, done = nil, false
      local item = assert(client:upload({ size = 3, filename = "r.txt", reader = function()
        if done then return nil end
        done = true
        nested = { client:mkdir("from reader") }
        return "abc"
      end }))
      assert.same(3, item.size)
      assert.same("invalid_argument", nested[2].kind)
      assert.same(1, #mock:requests())
    end)

    it("close() from a reader aborts the upload", function()
      local item, err = client:upload({ size = 6, filename = "r.txt", reader = function()
        client:close()
        return "abc"
      end })
      assert.is_nil(item)
      assert.same("aborted", err.kind)
    end)

    it("the module shortcuts refuse a nested shortcut call", function()
      local env = helper.mock_env(mock)
      local code, out = helper.run_lua("-e " .. helper.sh_quote([[
        local files = require "fileapi.files"
        local nested
        local item = assert(files.upload({ data = string.rep("x", 300000), filename = "a.bin" },
          { on_progress = function() if not nested then nested = select(2, files.mkdir("x")) end end }))
        io.write(item.size, " ", nested.kind)
      ]]), env)
      assert.same(0, code, out)
      assert.same("300000 invalid_argument", out)
    end)

    it("another client may be used from a callback", function()
      local other = new_client()
      local made
      assert(client:upload(big, { on_progress = function()
        if not made then made = assert(other:mkdir("from callback")) end
      end }))
      other:close()
      assert.matches("^fsd_", made.id)
    end)
  end)

  it("a FIFO is refused at once as not a regular file", function()
    local fifo = helper.tmpname(".fifo")
    assert(os.execute("mkfifo " .. helper.sh_quote(fifo)))
    local t = core.now()
    local item, err = client:upload(fifo)
    os.remove(fifo)
    assert.is_nil(item)
    assert.same("invalid_argument", err.kind)
    assert.matches("not a regular file", err.message)
    assert.is_true(core.now() - t < 1)
    assert.same(0, #mock:requests())
  end)

  describe("methods", function()
    local function send(req, opts)
      local t = assert(engine.new(assert(engine.check_options(opts or { retries = 0 }, "new")), {}))
      req.url = mock.base .. "/conf/x"
      local res, err = t:send(req)
      t:close()
      return res, err
    end
    local function ok(status)
      return { type = "steps", path = "/conf", keep = true,
        steps = { { send = ("HTTP/1.1 %d OK\r\nContent-Length: 2\r\n\r\nok"):format(status) } } }
    end

    for _, m in ipairs({ "GET", "DELETE", "PUT", "PATCH", "POST", "OPTIONS" }) do
      it(m .. " goes out as " .. m .. (m == "GET" and "" or ", with Content-Length where it has a body"), function()
        mock:faults({ ok(200) })
        local body = (m == "GET" or m == "OPTIONS") and nil or '{"a":1}'
        local res = assert(send({ method = m, body = body, headers = { "Content-Type: application/json" } }))
        assert.same("ok", res.body)
        local rec = mock:last_request()
        assert.same(m, rec.method)
        if body then
          assert.same(body, rec.body)
          assert.same(tostring(#body), rec.headers["content-length"])
        end
      end)
    end

    it("PUT and POST without a body send Content-Length: 0", function()
      for _, m in ipairs({ "PUT", "POST" }) do
        mock:faults({ ok(200) })
        assert(send({ method = m }))
        assert.same("0", mock:last_request().headers["content-length"])
      end
    end)

    it("HEAD asks for no body and waits for none", function()
      mock:faults({ { type = "steps", path = "/conf", keep = true,
        steps = { { send = "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" } } } })
      local t = core.now()
      local res = assert(send({ method = "HEAD" }))
      assert.same("", res.body)
      assert.is_true(core.now() - t < 1)
      assert.same("HEAD", mock:last_request().method)
    end)

    it("a wrong request field raises, naming it, for both transports", function()
      local request = require "fileapi.http.request"
      assert.has_error(function() request.check({ url = "http://x/", methd = "GET" }) end,
        "request: 'methd' is not a request field")
      assert.has_error(function() request.check({ url = "http://x/", method = "BREW" }) end)
      assert.has_error(function() request.check({ url = "http://x/", method = "HEAD", body = "x" }) end)
      assert.has_error(function() send({ method = "BREW" }) end)
    end)
  end)

  describe("retries by method", function()
    local function send(method, faults, opts)
      local t = assert(engine.new(assert(engine.check_options(opts or { timeout = 1, backoff = 0.01 }, "new")), {}))
      for _, f in ipairs(faults) do f.path = "/conf" end
      mock:faults(faults)
      local res, err = t:send({ method = method, url = mock.base .. "/conf/x" })
      t:close()
      return res, err
    end
    local good = { type = "steps", keep = true, steps = { { send = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" } } }

    it("GET, PUT and DELETE are sent again after a timeout once sent", function()
      for _, m in ipairs({ "GET", "PUT", "DELETE" }) do
        mock:reset()
        local res = assert(send(m, { { type = "stall", seconds = 2 }, good }))
        assert.same(2, res.attempts)
      end
    end)

    it("POST and PATCH are not, and say the retry was unsafe", function()
      for _, m in ipairs({ "POST", "PATCH" }) do
        mock:reset()
        local res, err = send(m, { { type = "stall", seconds = 2 }, good })
        assert.is_nil(res)
        assert.same("timeout", err.kind)
        assert.same(1, err.attempts)
        assert.is_true(err.retryable)
      end
    end)

    it("a GET that answered 502 is sent again; a POST is not", function()
      local bad = { type = "status", status = 502, body = "<html>bad gateway</html>" }
      assert.same(2, assert(send("GET", { bad, good })).attempts)
      mock:reset()
      local _, err = send("POST", { { type = "status", status = 502 }, good })
      assert.same("server", err.kind)
      assert.same(1, err.attempts)
    end)
  end)

  describe("what a client shows", function()
    it("no secret in any table pairs() can reach", function()
      local seen = {}
      local function walk(v, depth)
        if depth > 6 or type(v) ~= "table" or seen[v] then return end
        seen[v] = true
        for k, x in pairs(v) do
          for _, s in ipairs({ k, x }) do
            if type(s) == "string" then
              assert.is_nil(s:find(helper.API_KEY, 1, true), "found the key under " .. tostring(k))
              assert.is_nil(s:find("share-secret-token", 1, true), "found the token under " .. tostring(k))
              assert.is_nil(s:find("cookie-secret", 1, true), "found the cookie under " .. tostring(k))
            end
            walk(s, depth + 1)
          end
        end
      end
      walk(client, 0)
      local share = assert(shares.new({ token = "share-secret-token", base_url = mock.base,
        headers = { Cookie = "cookie-secret" } }))
      walk(share, 0)
      share:close()
    end)

    it("misspelled option names raise, naming the option", function()
      assert.has_error(function() files.new({ api_key = "k", timout = 1 }) end,
        "bad option 'timout' to 'new' (unknown option)")
      assert.has_error(function() client:upload({ data = "x", filename = "x" }, { dir = "fsd_abc" }) end,
        "bad option 'dir' to 'upload' (unknown option)")
      assert.has_error(function() client:upload({ data = "x", filenme = "x" }) end,
        "bad option 'filenme' to 'upload' (unknown option)")
      assert.has_error(function() client:mkdir("x", { parent = "fsd_abc" }) end)
      assert.has_error(function() shares.new({ token = "t", cookie = "x" }) end)
      assert.has_error(function() shares.mkdir("t", "x", { parnt_id = "x" }) end)
      assert.same(0, #mock:requests())
    end)
  end)

  describe("errors", function()
    it("tostring of a 422 names what the API said per field, bounded", function()
      mock:faults({ { type = "status", status = 422, body = require("cjson").encode({
        message = "The given data was invalid.",
        errors = { name = { "The name field is required." }, directory = { ("long "):rep(200) } } }) } })
      local _, err = client:mkdir("x")
      local line = tostring(err)
      assert.matches("^fileapi: validation %(HTTP 422%): The given data was invalid%. %(directory: long", line)
      assert.matches("%.%.%.$", line)
      assert.is_true(#line < 600, #line)
      mock:faults({ { type = "status", status = 422, body = require("cjson").encode({
        message = "The given data was invalid.", errors = { name = { "The name field is required." } } }) } })
      _, err = client:mkdir("x")
      assert.same("fileapi: validation (HTTP 422): The given data was invalid. (name: The name field is required.)",
        tostring(err))
    end)

    it("errors concatenate as their line", function()
      local _, err = client:mkdir("")
      assert.same("x: fileapi: invalid_argument: name must not be empty", "x: " .. err)
      assert.same(tostring(err) .. "!", err .. "!")
    end)

    it("a raised non-string from a callback is shown with tostring", function()
      local obj = setmetatable({}, { __tostring = function() return "custom failure" end })
      local _, err = client:upload(big, { on_progress = function() error(obj) end })
      assert.same("callback", err.kind)
      assert.matches("custom failure", err.message)
      _, err = client:upload({ size = 1, filename = "r", reader = function() error({ code = 7 }) end })
      assert.same("callback", err.kind)
      assert.matches("reader raised: table", err.message)
      local bad = setmetatable({}, { __tostring = function() error("no text") end })
      _, err = client:upload(big, { on_progress = function() error(bad) end })
      assert.same("callback", err.kind)
      assert.matches("cannot be shown", err.message)
    end)

    it("what a callback raised is err.cause, as it was raised", function()
      mock:faults({ { type = "file", size = 300000, path = "/conf", count = 5 } })
      local out = require("causes").run({ base_url = mock.mkp_url, download_url = mock.base .. "/conf/d",
        transport = "curl", missing_dir = "/no/such/dir" })
      for _, name in ipairs({ "on_progress", "reader", "writer", "on_download" }) do
        assert.same("callback", out[name].kind, name)
        assert.is_true(out[name].cause_is_raised, name)
        assert.matches("raised: boom 42", out[name].message, name)
      end
      assert.same("io", out.sink_path.kind)
      assert.same("ENOENT", out.sink_path.errno_name)
      assert.is_true(out.sink_path.has_errno)
    end)

    it("a raised string is kept as the cause, with secrets scrubbed", function()
      local _, err = client:upload(big, { on_progress = function() error("key " .. helper.API_KEY .. "!", 0) end })
      assert.same("callback", err.kind)
      assert.same("key [REDACTED]!", err.cause)
    end)
  end)

  describe("the session under a callback that closes it", function()
    it("a rewind that closes the session before the transfer starts: aborted, closed, no crash", function()
      local s = assert(core.session())
      local n = 0
      local body = assert(core.multipart({ { name = "file", filename = "f", size = 3,
        reader = function()
          n = n + 1
          return n == 1 and "abc" or nil
        end,
        rewind = function()
          s:close()
          n = 0
          return true
        end } }))
      assert(body:read(1000)) -- touched: the next send must rewind it
      local res, err = s:perform({ method = "POST", url = mock.mkp_url .. "/files", multipart = body,
        headers = { "Authorization: Bearer " .. helper.API_KEY, "Content-Type: " .. body:content_type() } })
      assert.is_nil(res)
      assert.same("aborted", err.kind)
      assert.is_false(s:is_open())
      assert.same(0, #mock:requests())
    end)
  end)
end)
