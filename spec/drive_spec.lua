-- fileapi.drive, the account owner's calls: sign-in and tokens, and the
-- items (upload, remote upload, rename, move, delete, restore, zip, the
-- folder tree), each call's exact wire format and documented errors,
-- against the mock through a real socket.
local helper = require "helper"
local drive = require "fileapi.drive"
local cjson = require "cjson"

local MIB = 1024 * 1024
local SHARED = "11111111-1111-4111-8111-111111111111"
local ELSEWHERE = "22222222-2222-4222-8222-222222222222"
local FOREIGN = "33333333-3333-4333-8333-333333333333"
local MISSING = "44444444-4444-4444-8444-444444444444"

-- A little-endian unsigned number of n bytes at pos (1-based): LuaJIT has
-- no string.unpack.
local function le(data, pos, n)
  local v = 0
  for i = n - 1, 0, -1 do v = v * 256 + data:byte(pos + i) end
  return v
end

-- The names and sizes of a ZIP's entries, from its central directory.
local function zip_entries(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local eocd = #data - 21
  assert(le(data, eocd, 4) == 0x06054b50, "no end of central directory")
  local count, offset = le(data, eocd + 10, 2), le(data, eocd + 16, 4)
  local out, pos = {}, offset + 1
  for _ = 1, count do
    assert(le(data, pos, 4) == 0x02014b50)
    local nlen = le(data, pos + 28, 2)
    out[#out + 1] = { name = data:sub(pos + 46, pos + 45 + nlen), size = le(data, pos + 24, 4),
      csize = le(data, pos + 20, 4), crc = le(data, pos + 16, 4) }
    pos = pos + 46 + nlen
  end
  return out
end

describe("drive", function()
  local mock, d

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  local function open(opts)
    opts = opts or {}
    opts.token = opts.token or helper.DRIVE_TOKEN
    opts.base_url, opts.backoff = mock.base, 0.01
    return assert(drive.new(opts))
  end

  before_each(function()
    mock:reset()
    d = open({ timeout = 20 })
  end)
  after_each(function() d:close() end)

  local function sent_json(req) return cjson.decode(req.body) end

  local function upload_text(text, opts)
    local file = assert(d:upload({ data = text, filename = "note.txt" }, opts))
    return file
  end

  describe("new", function()
    it("takes the token from FILESRO_API_TOKEN, and refuses none", function()
      local code, out = helper.run_lua("-e " .. helper.sh_quote([[
        local drive = require "fileapi.drive"
        local d = assert(drive.new())
        local me = assert(d:me())
        io.write(me.email)
      ]]), helper.mock_env(mock))
      assert.same(0, code, out)
      assert.same("owner@example.com", out)
      -- none given, none in the environment, none stored (a fresh config folder)
      local fresh = helper.tmpname(".xdg")
      code, out = helper.run_lua("-e " .. helper.sh_quote([[
        local d, err = require("fileapi.drive").new()
        io.write(tostring(d), " ", err.kind, " ", err.message)
      ]]), { FILESRO_BASE_URL = mock.base, FILESRO_API_TOKEN = "", XDG_CONFIG_HOME = fresh })
      assert.same(0, code, out)
      assert.matches("^nil invalid_argument token is required", out)
    end)

    it("refuses a token with spaces, and keeps it out of pairs()", function()
      local bad, err = drive.new({ token = "1|a b", base_url = mock.base })
      assert.is_nil(bad)
      assert.same("invalid_argument", err.kind)
      for k, v in pairs(d) do
        assert.is_falsy(tostring(v):find(helper.DRIVE_TOKEN, 1, true), k)
      end
    end)
  end)

  describe("login", function()
    it("POST /api/v1/login with JSON, no Authorization -> the token, which works", function()
      local token = assert(drive.login({ email = helper.DRIVE_EMAIL, password = helper.DRIVE_PASSWORD,
        base_url = mock.base }))
      assert.matches("^%d+|%w+$", token)
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/login", req.path)
      assert.is_nil(req.headers.authorization)
      assert.same("application/json", req.headers.accept)
      assert.same("application/json", req.headers["content-type"])
      assert.same({ email = helper.DRIVE_EMAIL, password = helper.DRIVE_PASSWORD }, sent_json(req))
      local d2 = open({ token = token })
      assert.same("owner@example.com", assert(d2:me()).email)
      d2:close()
    end)

    it("a wrong password and an unknown address are unauthorized; the password shows nowhere", function()
      local secret = "not-the-password-9"
      local _, err = drive.login({ email = helper.DRIVE_EMAIL, password = secret, base_url = mock.base })
      assert.same("unauthorized", err.kind)
      assert.same(422, err.status)
      assert.same({ "The provided credentials are incorrect." }, err.fields.email)
      _, err = drive.login({ email = "nobody@example.com", password = secret, base_url = mock.base })
      assert.same("unauthorized", err.kind)
      assert.same(404, err.status)
      assert.is_falsy(tostring(err):find(secret, 1, true))
      assert.is_falsy(cjson.encode(err):find(secret, 1, true))
    end)

    it("checks the address's shape and the password before sending", function()
      local before = #mock:requests()
      for _, o in ipairs({ { email = "no-at-sign", password = "x" }, { email = "a@b.co" },
          { email = "a@b.co", password = "" }, { email = "a@b.co", password = "line\nbreak" } }) do
        o.base_url = mock.base
        local _, err = drive.login(o)
        assert.same("invalid_argument", err.kind)
      end
      assert.same(before, #mock:requests())
    end)

    it("429 past the limit: waits Retry-After where it may, else rate_limited", function()
      mock:config({ login_rate_limit = 1 })
      assert(drive.login({ email = helper.DRIVE_EMAIL, password = helper.DRIVE_PASSWORD, base_url = mock.base }))
      local _, err = drive.login({ email = helper.DRIVE_EMAIL, password = helper.DRIVE_PASSWORD,
        base_url = mock.base, max_retry_wait = 0.1, retries = 0 })
      assert.same("rate_limited", err.kind)
      assert.same(429, err.status)
      assert.is_true(err.retry_after > 0)
    end)
  end)

  describe("account", function()
    it("me: GET /api/v1/user with the Bearer token, flattened, meta kept", function()
      local me = assert(d:me())
      assert.same("owner@example.com", me.email)
      assert.same("user", me.type)
      assert.is_true(me.meta.restrictions.canUpload)
      local req = mock:last_request()
      assert.same("GET", req.method)
      assert.same("/api/v1/user", req.path)
      assert.same("Bearer " .. helper.DRIVE_TOKEN, req.headers.authorization)
      assert.same("application/json", req.headers.accept)
    end)

    it("an unknown token is unauthorized, and is not in the error", function()
      local d2 = open({ token = "7|unknownTokenValue0000000000000000000000" })
      local _, err = d2:me()
      d2:close()
      assert.same("unauthorized", err.kind)
      assert.same(401, err.status)
      assert.same("Unauthenticated.", err.message)
      assert.same(1, #mock:requests()) -- no re-login, no retry
    end)

    it("the docs' typed 401 (\"You are not authorized\") is a refused token: unauthorized", function()
      mock:faults({ { path = "/api/v1/user", type = "status", status = 401,
        headers = { ["Content-Type"] = "application/json" },
        body = '{"type":"error","message":"You are not authorized"}' } })
      local _, err = d:me()
      assert.same("unauthorized", err.kind)
      assert.same(401, err.status)
      assert.same("You are not authorized", err.message)
      assert.same(1, #mock:requests())
    end)

    it("create_token: POST /api/v1/user/tokens -> { id, name, token }; delete_token by id or token", function()
      local t = assert(d:create_token("nightly job"))
      assert.same("nightly job", t.name)
      assert.matches("^" .. t.id .. "|", t.token)
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/user/tokens", req.path)
      assert.same({ name = "nightly job" }, sent_json(req))
      local d2 = open({ token = t.token })
      assert(d2:me())
      assert.is_true(d:delete_token(t.token))
      req = mock:last_request()
      assert.same("DELETE", req.method)
      assert.same("/api/v1/user/tokens/" .. t.id, req.path)
      local _, err = d2:me()
      assert.same("unauthorized", err.kind)
      d2:close()
      _, err = d:delete_token(t.id)
      assert.same("not_found", err.kind)
      assert.same(404, err.status)
    end)

    it("another user's token: the typed 401 is forbidden, not a refused token", function()
      local _, err = d:delete_token(99)
      assert.same("forbidden", err.kind)
      assert.same(401, err.status)
      assert.same("You are not entitled to delete this token.", err.message)
    end)

    it("checks names and ids before sending", function()
      local before = #mock:requests()
      for _, call in ipairs({ function() return d:create_token("ab") end, function() return d:create_token("") end,
          function() return d:delete_token(0) end, function() return d:delete_token(1.5) end,
          function() return d:delete_token("abc") end }) do
        local _, err = call()
        assert.same("invalid_argument", err.kind)
      end
      assert.same(before, #mock:requests())
    end)
  end)

  describe("upload", function()
    it("a small file is one chunk: multipart name, extension, is_last_chunk=1, chunk", function()
      local file = upload_text("hello owner", { parent_id = ELSEWHERE })
      assert.same("file", file.type)
      assert.same("note", file.name)
      assert.same(ELSEWHERE, file.parent_id)
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/uploads", req.path)
      assert.same("Bearer " .. helper.DRIVE_TOKEN, req.headers.authorization)
      assert.matches("^multipart/form%-data; boundary=", req.headers["content-type"])
      local names = {}
      for _, p in ipairs(req.parts) do names[#names + 1] = p.name end
      assert.same({ "name", "extension", "parent_id", "is_last_chunk", "chunk" }, names)
      assert.same("1", req.parts[4].data)
      assert.matches("^%w+%-note%.txt%.part$", req.parts[5].filename)
      assert.same("hello owner", req.parts[5].data)
      assert.same(1, mock:stats().chunks)
    end)

    it("a 3 MiB file in 1 MiB chunks arrives identical, home by default; path makes folders", function()
      local path = helper.write_file(helper.tmpname(".bin"), 3 * MIB + 5)
      local file = assert(d:upload(path, { chunk_size = MIB, path = "reports/2026" }))
      local stored
      for _, f in ipairs(mock:files()) do if f.id == file.id then stored = f end end
      assert.same(helper.sha256(path), stored.sha256)
      assert.same(4, mock:stats().chunks)
      local folder = mock:folder(stored.parent_id)
      assert.same("2026", folder.name)
      assert.same("reports", mock:folder(folder.parent_id).name)
      assert.is_nil(mock:folder(folder.parent_id).parent_id) -- home
      for _, r in ipairs(mock:requests()) do
        for _, p in ipairs(r.parts or {}) do assert.are_not.equal("parent_id", p.name) end
      end
      os.remove(path)
    end)

    it("the server's refusals: unknown parent 500, over the limit 413, plan forbids 401 typed", function()
      local _, err = d:upload({ data = "x", filename = "a.txt" }, { parent_id = MISSING })
      assert.same("server", err.kind)
      assert.same(500, err.status)
      mock:config({ upload_limit = 10 })
      _, err = d:upload({ data = ("y"):rep(20), filename = "a.txt" })
      assert.same("http", err.kind)
      assert.same(413, err.status)
      mock:config({ upload_limit = cjson.null, drive_plan_forbids = true })
      local before = #mock:requests()
      _, err = d:upload({ data = "z", filename = "a.txt" })
      assert.same("forbidden", err.kind)
      assert.same(401, err.status)
      assert.same("This user action is not allowed.", err.message)
      assert.same(before + 1, #mock:requests()) -- no retry, no re-login
    end)

    it("upload_urls: POST /api/v1/uploads with JSON -> queued", function()
      local res = assert(d:upload_urls({ "https://example.com/a.pdf", "http://example.com/b.png" },
        { parent_id = ELSEWHERE }))
      assert.is_true(res.queued)
      assert.matches("queue", res.message)
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/uploads", req.path)
      assert.same("application/json", req.headers["content-type"])
      assert.same({ urls = { "https://example.com/a.pdf", "http://example.com/b.png" }, parent_id = ELSEWHERE },
        sent_json(req))
    end)
  end)

  describe("items", function()
    it("rename: PATCH /api/v1/items/{id} { name, type } -> the document", function()
      local file = upload_text("r")
      local renamed = assert(d:rename({ type = "file", id = file.id }, "minutes"))
      assert.same("minutes", renamed.name)
      local req = mock:last_request()
      assert.same("PATCH", req.method)
      assert.same("/api/v1/items/" .. file.id, req.path)
      assert.same({ name = "minutes", type = "file" }, sent_json(req))
    end)

    it("an unknown id answered 200 typed is not_found; another's item is forbidden", function()
      local _, err = d:rename({ type = "folder", id = MISSING }, "x")
      assert.same("not_found", err.kind)
      assert.same(200, err.status)
      assert.same("The requested entry wasn't found.", err.message)
      _, err = d:rename({ type = "folder", id = FOREIGN }, "x")
      assert.same("forbidden", err.kind)
      assert.same(403, err.status)
      _, err = d:move({ { type = "file", id = MISSING } })
      assert.same("not_found", err.kind)
      _, err = d:restore({ { type = "file", id = MISSING } })
      assert.same("not_found", err.kind)
    end)

    it("move: POST /api/v1/moves, to_id null for home", function()
      local file = upload_text("m", { parent_id = ELSEWHERE })
      assert.is_true(d:move({ { type = "file", id = file.id } }))
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/moves", req.path)
      assert.matches('"to_id":null', req.body)
      assert.same({ { type = "file", id = file.id } }, sent_json(req).items)
      assert.is_true(d:move({ { type = "file", id = file.id } }, { to_id = SHARED }))
      assert.same(SHARED, sent_json(mock:last_request()).to_id)
    end)

    it("delete: DELETE /api/v1/items with force_delete per item; unknown ids pass", function()
      local file = upload_text("d")
      assert.is_true(d:delete({ { type = "file", id = file.id }, { type = "file", id = MISSING } }))
      local req = mock:last_request()
      assert.same("DELETE", req.method)
      assert.same("/api/v1/items", req.path)
      assert.same({ items = { { force_delete = false, type = "file", id = file.id },
        { force_delete = false, type = "file", id = MISSING } } }, sent_json(req))
    end)

    it("force on a folder: trashed first, so its files' bytes go too", function()
      upload_text("in folder", { parent_id = ELSEWHERE })
      local before = #mock:requests()
      assert.is_true(d:delete({ { type = "folder", id = ELSEWHERE } }, { force = true }))
      local reqs = mock:requests()
      assert.same(before + 2, #reqs)
      assert.same({ { force_delete = false, type = "folder", id = ELSEWHERE } }, sent_json(reqs[#reqs - 1]).items)
      assert.same({ { force_delete = true, type = "folder", id = ELSEWHERE } }, sent_json(reqs[#reqs]).items)
      assert.same(0, mock:drive().orphaned)
      assert.same({}, mock:folder(ELSEWHERE))
    end)

    it("restore: POST /api/v1/trash/restore { to_home, items }; the file is back", function()
      local file = upload_text("back", { parent_id = ELSEWHERE })
      assert.is_true(d:delete({ { type = "file", id = file.id } }))
      assert.is_true(d:restore({ { type = "file", id = file.id } }, { to_home = true }))
      local req = mock:last_request()
      assert.same("/api/v1/trash/restore", req.path)
      assert.same({ to_home = true, items = { { type = "file", id = file.id } } }, sent_json(req))
      local z = helper.tmpname(".zip")
      assert(d:zip({ { type = "file", id = file.id } }, z))
      assert.same("note.txt", zip_entries(z)[1].name)
      os.remove(z)
    end)

    it("checks items before sending", function()
      local before = #mock:requests()
      local calls = {
        function() return d:move({}) end,
        function() return d:move({ { type = "dir", id = SHARED } }) end,
        function() return d:move({ { type = "file", id = "not-a-uuid" } }) end,
        function() return d:move({ { type = "file", id = SHARED } }, { to_id = "home" }) end,
        function() return d:delete({ { type = "file", id = "x" } }) end,
        function() return d:restore({}) end,
        function() return d:rename({ type = "file", id = SHARED }, "") end,
        function() return d:rename({ type = "file", id = SHARED }, "a/b\0") end,
        function() return d:zip({}, helper.tmpname(".zip")) end,
        function() return d:upload_urls({}) end,
        function() return d:upload_urls({ "ftp://example.com/x" }) end,
        function() return d:upload({ data = "x", filename = "noext" }, { extension = ".txt" }) end,
        function() return d:upload({ data = "x", filename = "a.txt" }, { parent_id = "" }) end,
        function() return d:navigation({ sort = "size" }) end,
      }
      for i, call in ipairs(calls) do
        local _, err = call()
        assert.same("invalid_argument", err and err.kind, "call #" .. i)
      end
      assert.same(before, #mock:requests())
      assert.has_error(function() d:move({ { type = "file", id = SHARED, extra = 1 } }) end)
      assert.has_error(function() d:delete({}, { forse = true }) end)
    end)
  end)

  describe("zip", function()
    it("GET /api/v1/zip?items=id|type,… streamed to a path: the entries, nothing left beside", function()
      local dir = helper.tmpname(".d")
      os.execute("mkdir -p " .. dir)
      local a = upload_text("alpha", { parent_id = ELSEWHERE })
      local b = assert(d:upload({ data = ("b"):rep(1000), filename = "b.log" }, { parent_id = ELSEWHERE,
        path = "sub" }))
      local res = assert(d:zip({ { type = "folder", id = ELSEWHERE }, { type = "file", id = a.id } }, dir .. "/out.zip"))
      assert.same(dir .. "/out.zip", res.path)
      local req = mock:last_request()
      assert.same("GET", req.method)
      assert.same("/api/v1/zip", req.path)
      assert.same(("items=%s%%7Cfolder,%s%%7Cfile"):format(ELSEWHERE, a.id), req.target:match("%?(.*)$"))
      assert.same("Bearer " .. helper.DRIVE_TOKEN, req.headers.authorization)
      local entries = zip_entries(dir .. "/out.zip")
      local names = {}
      for _, e in ipairs(entries) do names[#names + 1] = e.name end
      assert.same({ "Elsewhere/note.txt", "Elsewhere/sub/b.log", "note.txt" }, names)
      assert.same(1000, entries[2].size)
      local f = io.popen("ls -A " .. dir)
      assert.same("out.zip", f:read("*a"):gsub("%s+$", ""))
      f:close()
      assert.same(res.size, io.open(dir .. "/out.zip"):seek("end"))
      assert.is_string(b.id)
      os.execute("rm -rf " .. dir)
    end)

    it("to a writer; an existing path without overwrite is refused before sending", function()
      local a = upload_text("w")
      local parts = {}
      local res = assert(d:zip({ { type = "file", id = a.id } }, function(chunk)
        parts[#parts + 1] = chunk
        return true
      end))
      assert.is_nil(res.path)
      assert.same(res.size, #table.concat(parts))
      local path = helper.write_file(helper.tmpname(".zip"), 10)
      local before = #mock:requests()
      local _, err = d:zip({ { type = "file", id = a.id } }, path)
      assert.same("io", err.kind)
      assert.same(before, #mock:requests())
      assert(d:zip({ { type = "file", id = a.id } }, path, { overwrite = true }))
      assert.same("note.txt", zip_entries(path)[1].name)
      os.remove(path)
    end)

    it("a drop mid-archive starts over (no ranges), and the result is whole", function()
      local path = helper.write_file(helper.tmpname(".bin"), 2 * MIB)
      local file = assert(d:upload(path))
      mock:config({ zip_drop_at = 300000 })
      local out = helper.tmpname(".zip")
      local res = assert(d:zip({ { type = "file", id = file.id } }, out))
      local zips = {}
      for _, r in ipairs(mock:requests()) do if r.path == "/api/v1/zip" then zips[#zips + 1] = r end end
      assert.same(2, #zips)
      assert.is_nil(zips[2].headers.range)
      local entries = zip_entries(out)
      assert.same(2 * MIB, entries[1].size)
      assert.same(res.size, io.open(out):seek("end"))
      -- the archive's bytes are the file's, after the 30 + name header
      local f = io.open(out, "rb")
      f:seek("set", 30 + #entries[1].name)
      local copy = helper.tmpname(".bin")
      local g = io.open(copy, "wb")
      g:write(f:read(2 * MIB))
      g:close()
      f:close()
      assert.same(helper.sha256(path), helper.sha256(copy))
      for _, p in ipairs({ path, out, copy }) do os.remove(p) end
    end)

    it("another's item: 403 before any byte, no file left", function()
      local out = helper.tmpname(".zip")
      local _, err = d:zip({ { type = "folder", id = FOREIGN } }, out)
      assert.same("forbidden", err.kind)
      assert.same("Access Denied", err.message)
      assert.is_nil(io.open(out))
    end)

    it("unknown ids: a valid empty archive", function()
      local parts = {}
      assert(d:zip({ { type = "file", id = MISSING } }, function(c) parts[#parts + 1] = c return true end))
      local data = table.concat(parts)
      assert.same(22, #data)
      assert.same(0x06054b50, le(data, 1, 4))
    end)
  end)

  describe("navigation", function()
    it("GET /api/v1/browse/navigation?sort=&direction= -> the three sections as sent", function()
      local tree = assert(d:navigation({ sort = "name", direction = "asc" }))
      local req = mock:last_request()
      assert.same("/api/v1/browse/navigation", req.path)
      assert.same({ sort = "name", direction = "ASC" }, req.query)
      assert.same(3, #tree)
      assert.same("files", tree[1].location)
      local names = {}
      for _, node in ipairs(tree[1].folders) do names[#names + 1] = node.name end
      assert.same({ "Elsewhere", "Shared" }, { names[1], names[#names] })
      assert.is_true(tree[1].isOpen)
    end)
  end)

  it("a 429 with Retry-After: waited, then the call goes through; the next waits too", function()
    mock:faults({ { type = "status", status = 429, headers = { ["Retry-After"] = "1" },
      path = "/api/v1/user", body = '{"message":"Too Many Attempts."}' } })
    local t = require("fileapi.core").now()
    assert(d:me())
    assert.is_true(require("fileapi.core").now() - t >= 1)
    assert.same(2, #mock:requests())
  end)
end)
