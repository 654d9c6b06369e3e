-- MijnKlantportaal Files API through a real socket against the mock.
local helper = require "helper"
local files = require "fileapi.files"
local core = require "fileapi.core"

local KEY = helper.API_KEY

describe("files", function()
  local mock, client

  setup(function()
    mock = helper.start_mock()
  end)

  teardown(function()
    mock:stop()
  end)

  before_each(function()
    mock:reset()
    client = assert(files.new({ api_key = KEY, base_url = mock.mkp_url }))
  end)

  after_each(function()
    client:close()
  end)

  local function header_names(req)
    local names = {}
    for i, h in ipairs(req.header_list) do names[i] = h[1] end
    return names
  end

  describe("mkdir", function()
    it("sends the documented JSON request and returns the directory", function()
      local dir, err = client:mkdir("Contracts")
      assert.is_nil(err)
      assert.matches("^fsd_%w+$", dir.id)
      assert.same("directory", dir.type)
      assert.same("Contracts", dir.name)
      assert.is_nil(dir.size)
      assert.is_nil(dir.mime)
      assert.is_nil(dir.fileShareId)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", dir.createdAt)

      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/v1/files", req.target)
      assert.same('{"directory":"Contracts"}', req.body)
      assert.same("Bearer " .. KEY, req.headers.authorization)
      assert.same("application/json", req.headers["content-type"])
      assert.same("application/json", req.headers.accept)
      assert.same("25", req.headers["content-length"])
      assert.same(("fileapi/%s libcurl/%s"):format(core.version, core.curl_version), req.headers["user-agent"])
      assert.same({ "Host", "User-Agent", "Content-Type", "Authorization", "Accept", "Content-Length" },
        header_names(req))
    end)

    it("places a directory inside a parent given by id", function()
      local parent = assert(client:mkdir("Parent"))
      local child = assert(client:mkdir("Child", { directory = parent.id }))
      assert.matches("^fsd_", child.id)
      assert.same("/v1/files?directory=" .. parent.id, mock:last_request().target)
    end)

    it("encodes names as JSON, non-ASCII and quotes included", function()
      local name = 'Offerte "2024" \\ ÄÖÜ €'
      local dir = assert(client:mkdir(name))
      assert.same(name, dir.name)
      assert.same('{"directory":"Offerte \\"2024\\" \\\\ ÄÖÜ €"}', mock:last_request().body)
    end)

    it("maps an unknown parent directory to not_found", function()
      local dir, err = client:mkdir("X", { directory = "fsd_doesnotexist" })
      assert.is_nil(dir)
      assert.same("not_found", err.kind)
      assert.same(404, err.status)
      assert.same("The directory could not be found.", err.message)
      assert.is_false(err.retryable)
      assert.same(1, err.attempts)
    end)
  end)

  describe("upload", function()
    local path

    before_each(function()
      path = helper.tmpname(".pdf")
      local f = assert(io.open(path, "wb"))
      f:write("%PDF-1.4 fake\r\n--not-a-boundary\r\n")
      f:close()
    end)

    after_each(function() os.remove(path) end)

    it("sends the exact multipart body and returns the file", function()
      local item, err = client:upload(path, { filename = "contract_v2.pdf" })
      assert.is_nil(err)
      assert.matches("^fsf_%w+$", item.id)
      assert.same("file", item.type)
      assert.same("contract_v2.pdf", item.name)
      assert.same(33, item.size)
      assert.same("application/pdf", item.mime)

      local req = mock:last_request()
      local boundary = req.headers["content-type"]:match("^multipart/form%-data; boundary=(fileapi%-%x+)$")
      assert.truthy(boundary)
      local expected = "--" .. boundary .. "\r\n"
        .. 'Content-Disposition: form-data; name="file"; filename="contract_v2.pdf"\r\n'
        .. "Content-Type: application/pdf\r\n\r\n"
        .. "%PDF-1.4 fake\r\n--not-a-boundary\r\n"
        .. "\r\n--" .. boundary .. "--\r\n"
      assert.same(expected, req.body)
      assert.same(tostring(#expected), req.headers["content-length"])
      assert.same("Bearer " .. KEY, req.headers.authorization)
      assert.same("application/json", req.headers.accept)
      assert.is_nil(req.headers["transfer-encoding"])
    end)

    it("defaults the filename to the base name and the type by extension", function()
      local item = assert(client:upload({ path = path }))
      assert.same(path:match("[^/]+$"), item.name)
      assert.same("application/pdf", item.mime)
      local csv = assert(client:upload({ data = "a,b\n", filename = "t.CSV" }))
      assert.same("text/csv", csv.mime)
      local other = assert(client:upload({ data = "x", filename = "noext" }))
      assert.same("application/octet-stream", other.mime)
      local given = assert(client:upload({ data = "x", filename = "a.bin" }, { mime = "image/png" }))
      assert.same("image/png", given.mime)
    end)

    it("uploads into a directory with the id percent-encoded in the query", function()
      local dir = assert(client:mkdir("Contracts"))
      local item = assert(client:upload(path, { directory = dir.id }))
      assert.matches("^fsf_", item.id)
      local req = mock:last_request()
      assert.same("/v1/files?directory=" .. dir.id, req.target)
      assert.same(dir.id, req.query.directory)
    end)

    it("uploads a Lua string and a sized reader", function()
      local item = assert(client:upload({ data = "hello world", filename = "hello.txt" }))
      assert.same(11, item.size)
      assert.same("text/plain", item.mime)
      local chunks = { "abc", "", "defgh", "ij" }
      local i = 0
      local reader = function() i = i + 1; return chunks[i] end
      item = assert(client:upload({ reader = reader, size = 10, filename = "r.txt" }))
      assert.same(10, item.size)
      assert.same("abcdefghij", mock:last_request().parts[1].data)
    end)

    for _, case in ipairs({
      { 'quote"in"name.txt', 'quote%22in%22name.txt' },
      { "cr\rlf\nname.txt", "cr%0Dlf%0Aname.txt" },
      { "back\\slash.txt", "back%5Cslash.txt" },
      { "inject\r\nContent-Type: text/html\r\n\r\nx.txt", "inject%0D%0AContent-Type: text/html%0D%0A%0D%0Ax.txt" },
    }) do
      it("escapes the filename " .. ("%q"):format(case[1]):gsub("\\\n", "\\n"), function()
        local item = assert(client:upload({ data = "data", filename = case[1] }))
        assert.same(case[2], item.name)
        local req = mock:last_request()
        assert.same(1, #req.parts)
        assert.same("file", req.parts[1].name)
        assert.same(case[2], req.parts[1].filename)
        assert.same("data", req.parts[1].data)
        local head = req.body:match("^[^\n]*\n([^\n]*)\r\n")
        assert.same('Content-Disposition: form-data; name="file"; filename="' .. case[2] .. '"', head)
      end)
    end

    it("sends UTF-8 filenames as bytes and as RFC 8187 filename*", function()
      local name = "überweisung_€.pdf"
      local item = assert(client:upload({ data = "x", filename = name }))
      assert.same(name, item.name)
      local part = mock:last_request().parts[1]
      assert.same(name, part.filename)
      assert.same("UTF-8''%C3%BCberweisung_%E2%82%AC.pdf", part.filename_ext)
    end)

    it("reports progress monotonically, ending at the total", function()
      local big = helper.write_file(helper.tmpname(".bin"), 5 * 1024 * 1024 + 7)
      local seen = {}
      local item = assert(client:upload(big, { on_progress = function(sent, total)
        seen[#seen + 1] = { sent, total }
      end }))
      os.remove(big)
      assert.same(5 * 1024 * 1024 + 7, item.size)
      assert.is_true(#seen >= 2)
      local total = seen[1][2]
      -- the caller's bytes, not the multipart encoding's
      assert.same(5 * 1024 * 1024 + 7, total)
      assert.same(total, seen[#seen][1])
      for i = 2, #seen do
        assert.is_true(seen[i][1] > seen[i - 1][1])
        assert.same(total, seen[i][2])
      end
      assert.same(total, seen[#seen][1])
    end)

    it("aborts when on_progress returns false, and the client still works", function()
      local big = helper.write_file(helper.tmpname(".bin"), 4 * 1024 * 1024)
      local item, err = client:upload(big, { on_progress = function(sent) return sent < 1024 * 1024 end })
      os.remove(big)
      assert.is_nil(item)
      assert.same("aborted", err.kind)
      assert.is_false(err.retryable)
      assert.truthy(assert(client:mkdir("after-abort")).id)
    end)

    it("returns a raising on_progress as kind callback, and the client still works", function()
      local item, err = client:upload(path, { on_progress = function() error("boom in progress") end })
      assert.is_nil(item)
      assert.same("callback", err.kind)
      assert.matches("boom in progress", err.message)
      assert.truthy(assert(client:upload(path)).id)
    end)

    it("returns a raising reader as kind callback", function()
      local item, err = client:upload({ reader = function() error("reader broke") end, size = 5, filename = "r" })
      assert.is_nil(item)
      assert.same("callback", err.kind)
      assert.matches("reader broke", err.message)
      assert.truthy(assert(client:mkdir("after-reader")).id)
    end)

    it("refuses a reader whose size lies, either way", function()
      local function reader_of(s)
        local done = false
        return function() if done then return nil end done = true return s end
      end
      local _, short = client:upload({ reader = reader_of("abc"), size = 10, filename = "r" })
      assert.same("io", short.kind)
      assert.matches("ended after 3 of 10", short.message)
      local _, long = client:upload({ reader = reader_of("abcdefghijkl"), size = 10, filename = "r" })
      assert.same("io", long.kind)
      assert.matches("more bytes than its declared size", long.message)
    end)

    it("maps the storage quota to storage_full, before the body when 100-continue is used", function()
      mock:config({ quota = 1024 * 1024 })
      local big = helper.write_file(helper.tmpname(".bin"), 3 * 1024 * 1024)
      local sent_max = 0
      local item, err = client:upload(big, { on_progress = function(s) sent_max = s end })
      os.remove(big)
      assert.is_nil(item)
      assert.same("storage_full", err.kind)
      assert.same(426, err.status)
      assert.same("The file exceeds the available storage space for this license.", err.message)
      assert.is_true(sent_max < 1024 * 1024)
      -- a small file after the refusal: body read, quota checked on the real size
      mock:config({ quota = 10 })
      local _, err2 = client:upload({ data = ("x"):rep(11), filename = "small.txt" })
      assert.same("storage_full", err2.kind)
      assert.truthy(assert(client:upload({ data = "ok", filename = "ok.txt" })).id)
    end)
  end)

  describe("errors from the API", function()
    it("maps a wrong key to unauthorized", function()
      local other = assert(files.new({ api_key = "wrong-key", base_url = mock.mkp_url }))
      local dir, err = other:mkdir("X")
      other:close()
      assert.is_nil(dir)
      assert.same("unauthorized", err.kind)
      assert.same(401, err.status)
      assert.same("Unauthenticated.", err.message)
      assert.is_nil(tostring(err):find("wrong-key", 1, true))
    end)

    it("maps 422 with the API's message to validation", function()
      mock:faults({ { type = "status", status = 422, message = "The directory field is required." } })
      local _, err = client:mkdir("X")
      assert.same("validation", err.kind)
      assert.same(422, err.status)
      assert.same("The directory field is required.", err.message)
      assert.same("fileapi: validation (HTTP 422): The directory field is required.", tostring(err))
    end)

    it("maps 429 with the API's body to rate_limited", function()
      mock:config({ rate_limit = 2 })
      -- without pacing (rate_limit = false), to see the 429 itself
      local limited = assert(files.new({ api_key = KEY, base_url = mock.mkp_url, retries = 0, rate_limit = false }))
      assert(limited:mkdir("one"))
      assert(limited:mkdir("two"))
      local _, err = limited:mkdir("three")
      limited:close()
      assert.same("rate_limited", err.kind)
      assert.same(429, err.status)
      assert.same("Too many requests.", err.message)
      assert.is_true(err.retryable)
    end)

    it("maps other statuses to forbidden, server and http", function()
      mock:faults({
        { type = "status", status = 403, message = "Missing scope files.write" },
        { type = "status", status = 500, message = "Server Error" },
        { type = "status", status = 409, message = "Conflict" },
      })
      local kinds = {}
      for i = 1, 3 do
        local _, err = client:mkdir("X" .. i)
        kinds[i] = err.kind .. " " .. err.status .. " " .. err.message
      end
      assert.same({ "forbidden 403 Missing scope files.write", "server 500 Server Error", "http 409 Conflict" }, kinds)
    end)

    it("maps a 201 that is not JSON or not an item to protocol", function()
      mock:faults({
        { type = "status", status = 201, body = "{not json" },
        { type = "status", status = 201, body = '{"hello":"world"}' },
      })
      local _, e1 = client:mkdir("X")
      local _, e2 = client:mkdir("Y")
      assert.same("protocol", e1.kind)
      assert.same("protocol", e2.kind)
      assert.same(201, e2.status)
    end)
  end)

  describe("input checks", function()
    it("refuses bad values with invalid_argument and opens no connection", function()
      local cases = {
        function() return files.new({ api_key = "", base_url = mock.mkp_url }) end,
        function() return files.new({ api_key = "with space", base_url = mock.mkp_url }) end,
        function() return files.new({ api_key = "ctl\nkey", base_url = mock.mkp_url }) end,
        function() return client:mkdir("") end,
        function() return client:mkdir("a\0b") end,
        function() return client:mkdir("bad\255utf8") end,
        function() return client:mkdir(("n"):rep(256)) end,
        function() return client:mkdir("x", { directory = "fsf_file" }) end,
        function() return client:mkdir("x", { directory = "fsd_../x" }) end,
        function() return client:upload({ data = "x" }) end,
        function() return client:upload({ data = "x", filename = "" }) end,
        function() return client:upload({ reader = function() end, filename = "r" }) end,
        function() return client:upload({ data = "x", path = "/etc/hostname", filename = "f" }) end,
        function() return client:upload({ data = "x", filename = "f" }, { mime = "text/plain\r\nX: y" }) end,
        function() return client:upload("/") end,
      }
      for i, case in ipairs(cases) do
        local ok, err = case()
        assert.is_nil(ok, "case " .. i)
        assert.same("invalid_argument", err.kind, "case " .. i)
        assert.same(0, err.attempts, "case " .. i)
      end
      local _, missing = client:upload("/no/such/file.pdf")
      assert.same("io", missing.kind)
      assert.matches("No such file", missing.message)
      assert.same(0, mock:stats().connections)
    end)

    it("raises for wrong argument types", function()
      assert.has_error(function() client:mkdir(42) end)
      assert.has_error(function() client:mkdir("x", "y") end)
      assert.has_error(function() client:upload(nil) end)
      assert.has_error(function() client:upload({ data = 5, filename = "x" }) end)
      assert.has_error(function() client:upload("x", { on_progress = "no" }) end)
      assert.has_error(function() files.new({ api_key = 5 }) end)
      assert.has_error(function() files.new({ timeout = "5" }) end)
    end)

    it("refuses plain http to a non-loopback host unless allowed", function()
      local c, err = files.new({ api_key = KEY, base_url = "http://api.example.com/v1" })
      assert.is_nil(c)
      assert.same("invalid_argument", err.kind)
      assert.matches("http://", err.message)
      assert.truthy(files.new({ api_key = KEY, base_url = "http://api.example.com/v1", allow_insecure = true }))
      assert.is_nil((files.new({ api_key = KEY, base_url = "ftp://x/v1" })))
      assert.is_nil((files.new({ api_key = KEY, base_url = "https://user:pw@x/v1" })))
    end)
  end)

  describe("connections", function()
    it("makes 50 calls on one client over one TCP connection", function()
      for i = 1, 25 do
        assert(client:mkdir("dir" .. i))
        assert(client:upload({ data = "file " .. i, filename = "f" .. i .. ".txt" }))
      end
      local stats = mock:stats()
      assert.same(50, stats.requests)
      assert.same(1, stats.connections)
    end)

    it("closes idempotently, and a closed client says so", function()
      client:close()
      client:close()
      local dir, err = client:mkdir("x")
      assert.is_nil(dir)
      assert.same("invalid_argument", err.kind)
    end)
  end)

  describe("module-level shortcuts", function()
    it("use a default client configured from the environment", function()
      local script = helper.tmpname(".lua")
      local f = assert(io.open(script, "w"))
      f:write([[
        local files = require "fileapi.files"
        local dir = assert(files.mkdir("EnvDir"))
        local item = assert(files.upload({ data = "x", filename = "e.txt" }, { directory = dir.id }))
        io.write(dir.id, " ", item.id)
      ]])
      f:close()
      local code, out = helper.run_lua(script, { MKP_API_KEY = KEY, MKP_BASE_URL = mock.mkp_url })
      os.remove(script)
      assert.same(0, code, out)
      assert.matches("^fsd_%w+ fsf_%w+$", out)
      local code2, out2 = helper.run_lua("-e " .. helper.sh_quote(
        'local _, e = require("fileapi.files").mkdir("x"); io.write(e.kind)'), { MKP_API_KEY = "" })
      assert.same(0, code2, out2)
      assert.same("invalid_argument", out2)
    end)
  end)
end)
