-- MijnKlantportaal beyond uploads: read back, download through a link (to
-- another host and port), share with a customer, request files.
local helper = require "helper"
local cjson = require "cjson"

local MIB = 1024 * 1024

describe("files: read back, download, share, request", function()
  local mock, client, dir

  setup(function()
    mock = helper.start_mock()
    dir = helper.tmpname(".dl")
    os.execute("mkdir -p " .. helper.sh_quote(dir))
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. helper.sh_quote(dir))
  end)

  local function new_client(opts) return helper.mkp_client(mock, opts, { backoff = 0.01 }) end

  before_each(function()
    mock:reset()
    client = new_client({ timeout = 60 })
  end)
  after_each(function() client:close() end)

  local function storage_requests()
    local out = {}
    for _, r in ipairs(mock:requests()) do if r.storage then out[#out + 1] = r end end
    return out
  end

  -- nothing but the finished file in the folder: no temporary left over
  local function listing()
    local p = io.popen("ls -A " .. helper.sh_quote(dir))
    local names = {}
    for name in p:lines() do names[#names + 1] = name end
    p:close()
    table.sort(names)
    return names
  end

  local function clean()
    os.execute("rm -f " .. helper.sh_quote(dir) .. "/* " .. helper.sh_quote(dir) .. "/.??*")
  end

  describe("get", function()
    it("reads back a file and a directory; 404 is not_found; bad ids send nothing", function()
      local d = assert(client:mkdir("Back"))
      local f = assert(client:upload({ data = "hello", filename = "h.txt" }, { directory = d.id }))
      assert.same(f, assert(client:get(f.id)))
      assert.same("directory", assert(client:get(d.id)).type)
      local none, err = client:get("fsf_unknown0001")
      assert.is_nil(none)
      assert.same("not_found", err.kind)
      assert.same("The file or directory could not be found", err.message)
      mock:reset()
      for _, bad in ipairs({ "", "abc", "fss_abc", "fsf_", "fsf_a/b", ("fsf_" .. ("a"):rep(70)) }) do
        assert.same("invalid_argument", select(2, client:get(bad)).kind)
      end
      assert.has_error(function() client:get(42) end)
      assert.same(0, #mock:requests())
    end)
  end)

  describe("download", function()
    for _, size in ipairs({ 0, 1, 5 * MIB }) do
      it(("a %d-byte file arrives byte-identical, the key never sent to the link's host"):format(size), function()
        local src = helper.write_file(helper.tmpname(".src"), size)
        local f = assert(client:upload(src))
        local link = assert(client:download_link(f.id))
        assert.matches("^http://127%.0%.0%.1:" .. mock.storage_port .. "/", link.link)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT", link.expiresAt)
        local dest = dir .. "/out.bin"
        local seen = {}
        local res = assert(client:download(f.id, dest, { on_progress = function(got, total)
          seen[#seen + 1] = { got, total }
        end }))
        assert.same({ path = dest, size = size, resumed = 0 }, res)
        assert.same(helper.sha256(src), helper.sha256(dest))
        if size > 0 then assert.same({ size, size }, seen[#seen]) end
        for _, r in ipairs(storage_requests()) do assert.is_nil(r.headers.authorization) end
        assert.is_true(#storage_requests() >= 1)
        assert.same({ "out.bin" }, listing())
        os.remove(src)
        clean()
      end)
    end

    it("a 1 GiB file (sparse) streams to disk in constant memory #slow", function()
      local src = helper.tmpname(".sparse")
      assert(os.execute("truncate -s 1G " .. helper.sh_quote(src) .. " && printf end >> " .. helper.sh_quote(src)))
      local f = mock:add_mkp_file({ path = src, name = "big.bin" })
      local dest = dir .. "/big.bin"
      local script = ([[
        local files = require "fileapi.files"
        local c = assert(files.new({ api_key = "test-key", base_url = %q, timeout = 300 }))
        local res = assert(c:download(%q, %q))
        local hwm
        for line in io.lines("/proc/self/status") do hwm = hwm or line:match("^VmHWM:%%s*(%%d+) kB") end
        io.write(res.size, " ", hwm)
      ]]):format(mock.mkp_url, f.id, dest)
      local code, out = helper.run_lua("-e " .. helper.sh_quote(script))
      assert.same(0, code, out)
      local size, hwm = out:match("^(%d+) (%d+)$")
      assert.same(1024 * MIB + 3, tonumber(size))
      assert.same(helper.sha256(src), helper.sha256(dest))
      print(("      1 GiB download: peak RSS %.1f MiB"):format(tonumber(hwm) / 1024))
      assert.is_true(tonumber(hwm) < 40 * 1024, hwm)
      os.remove(src)
      clean()
    end)

    it("a drop at 50% resumes with Range and If-Range; the result is identical", function()
      local src = helper.write_file(helper.tmpname(".src"), 4 * MIB)
      local f = assert(client:upload(src))
      mock:storage_faults({ { drop_at = 2 * MIB } })
      local dest = dir .. "/resumed.bin"
      local res = assert(client:download(f.id, dest))
      assert.same(1, res.resumed)
      assert.same(helper.sha256(src), helper.sha256(dest))
      local reqs = storage_requests()
      assert.same(2, #reqs)
      assert.same("bytes=" .. 2 * MIB .. "-", reqs[2].headers.range)
      assert.matches('^"fsf_', reqs[2].headers["if-range"])
      assert.same({ "resumed.bin" }, listing())
      os.remove(src)
      clean()
    end)

    it("a server that ignores Range starts the file over cleanly", function()
      local src = helper.write_file(helper.tmpname(".src"), 3 * MIB)
      local f = assert(client:upload(src))
      mock:storage_faults({ { drop_at = MIB }, { ignore_range = true } })
      local dest = dir .. "/over.bin"
      local res = assert(client:download(f.id, dest))
      assert.same(0, res.resumed)
      assert.same(3 * MIB, res.size)
      assert.same(helper.sha256(src), helper.sha256(dest))
      -- into a writer: the bytes it already had are not given again
      local got = {}
      mock:storage_faults({ { drop_at = MIB }, { ignore_range = true } })
      assert(client:download(f.id, function(chunk) got[#got + 1] = chunk return true end))
      local all = table.concat(got)
      assert.same(3 * MIB, #all)
      assert.same(io.open(src, "rb"):read("*a"), all)
      os.remove(src)
      clean()
    end)

    it("an expired link is renewed once; twice is an error and leaves nothing behind", function()
      local f = assert(client:upload({ data = "fresh", filename = "f.txt" }))
      mock:storage_faults({ { expire = true } })
      local dest = dir .. "/f.txt"
      assert(client:download(f.id, dest))
      assert.same("fresh", io.open(dest):read("*a"))
      local links = 0
      for _, r in ipairs(mock:requests()) do if r.path:find("/download$") then links = links + 1 end end
      assert.same(2, links)
      clean()
      mock:storage_faults({ { expire = true }, { expire = true } })
      local res, err = client:download(f.id, dest)
      assert.is_nil(res)
      assert.same("forbidden", err.kind)
      assert.same(403, err.status)
      assert.same({}, listing())
    end)

    it("an existing destination is refused unless overwrite; never a partial file under its name", function()
      local f = assert(client:upload({ data = "new", filename = "n.txt" }))
      local dest = dir .. "/n.txt"
      local h = io.open(dest, "w") h:write("old") h:close()
      local res, err = client:download(f.id, dest)
      assert.is_nil(res)
      assert.same("io", err.kind)
      assert.same("old", io.open(dest):read("*a"))
      assert(client:download(f.id, dest, { overwrite = true }))
      assert.same("new", io.open(dest):read("*a"))
      -- a failure mid-way: the old file stays whole, no temporary is left
      local src = helper.write_file(helper.tmpname(".src"), 2 * MIB)
      local big = assert(client:upload(src))
      local c = new_client({ retries = 0 })
      mock:storage_faults({ { drop_at = MIB } })
      res, err = c:download(big.id, dest, { overwrite = true })
      c:close()
      assert.is_nil(res)
      assert.same("protocol", err.kind)
      assert.same("new", io.open(dest):read("*a"))
      assert.same({ "n.txt" }, listing())
      os.remove(src)
      clean()
    end)

    it("a writer that fails or raises ends the download; nothing is left behind", function()
      local f = assert(client:upload({ data = ("w"):rep(100000), filename = "w.bin" }))
      local res, err = client:download(f.id, function() return nil, "disk full" end)
      assert.is_nil(res)
      assert.same("io", err.kind)
      assert.matches("disk full", err.message)
      res, err = client:download(f.id, function() error("writer broke") end)
      assert.is_nil(res)
      assert.same("callback", err.kind)
      assert.matches("writer broke", err.message)
      res, err = client:download(f.id, dir .. "/p.bin", { on_progress = function() return false end })
      assert.is_nil(res)
      assert.same("aborted", err.kind)
      assert.same({}, listing())
    end)

    it("directories cannot be downloaded; an unknown file gets the API's message", function()
      local d = assert(client:mkdir("D"))
      mock:reset()
      local _, err = client:download(d.id, dir .. "/x")
      assert.same("invalid_argument", err.kind)
      assert.same(0, #mock:requests())
      _, err = client:download("fsf_missing00001", dir .. "/x")
      assert.same("not_found", err.kind)
      assert.same("No File can be found for the given ID", err.message)
      assert.has_error(function() client:download("fsf_a", 42) end)
      assert.has_error(function() client:download("fsf_a", dir .. "/x", { force = true }) end)
      assert.same({}, listing())
    end)
  end)

  describe("file shares", function()
    it("shares with a customer or by a public link", function()
      local f = assert(client:upload({ data = "x", filename = "x.txt" }))
      local d = assert(client:mkdir("Shared"))
      local share = assert(client:share({ f.id, d.id }, { customer_id = "cst_abc12345678" }))
      assert.matches("^fss_", share.id)
      assert.same("cst_abc12345678", share.sharedWithCustomerId)
      assert.same(2, #share.sharedContent)
      assert.truthy(share.links.customer.href)
      assert.same({ content = { f.id, d.id }, customerId = "cst_abc12345678" }, cjson.decode(mock:last_request().body))
      local public = assert(client:share(f.id))
      assert.is_nil(public.sharedWithCustomerId)
      assert.truthy(public.links.publicShare.href)
      assert.same({ content = { f.id } }, cjson.decode(mock:last_request().body))
      local _, err = client:share({ "fsf_unknown00001" })
      assert.same("validation", err.kind)
    end)

    it("nothing is sent for bad ids or customer", function()
      mock:reset()
      for _, bad in ipairs({ {}, { "fss_x" }, { "fsf_ok1", "nope" } }) do
        assert.same("invalid_argument", select(2, client:share(bad)).kind)
      end
      assert.same("invalid_argument", select(2, client:share({ "fsf_abc" }, { customer_id = "abc" })).kind)
      assert.has_error(function() client:share({ "fsf_abc" }, { customer = "cst_abc" }) end)
      assert.same(0, #mock:requests())
    end)

    it("40 shares over 3 pages come back in order, exactly once each", function()
      mock:seed({ file_shares = 40 })
      local ids, seen = {}, {}
      for share, err in client:file_shares() do
        assert(share, err and tostring(err))
        assert.is_nil(seen[share.id])
        seen[share.id] = true
        ids[#ids + 1] = share.id
      end
      assert.same(40, #ids)
      local pages = {}
      for _, r in ipairs(mock:requests()) do
        if r.path == "/v1/file-shares" then pages[#pages + 1] = r.query.page end
      end
      assert.same({ "1", "2", "3" }, pages)
    end)

    it("a failure on page 2 gives false, err once, then the loop ends", function()
      mock:seed({ file_shares = 40 })
      local c = new_client({ retries = 0 })
      mock:faults({ { type = "status", status = 500, skip = 1, path = "/v1/file-shares" } })
      local got, failures = 0, {}
      for share, err in c:file_shares() do
        if share then got = got + 1 else failures[#failures + 1] = err end
      end
      c:close()
      assert.same(15, got)
      assert.same(1, #failures)
      assert.same("server", failures[1].kind)
    end)
  end)

  describe("file requests", function()
    it("maps the Lua names to the API's and reads the request back", function()
      local d = assert(client:mkdir("Inbox"))
      local req = assert(client:request_files({
        name = "Documents for the mortgage", description = "Please upload these",
        customer_id = "cst_abc12345678", directory = d.id,
        requested_files = { { name = "Passport", required = true, max_file_size = 10240 },
          { name = "Payslip", description = "The latest one" } },
      }))
      assert.matches("^frq_", req.id)
      assert.same({
        name = "Documents for the mortgage", description = "Please upload these",
        customerId = "cst_abc12345678", directoryId = d.id,
        requestedFiles = { { name = "Passport", required = true, maxFileSize = 10240 },
          { name = "Payslip", description = "The latest one" } },
      }, cjson.decode(mock:last_request().body))
      assert.matches("^fqf_", req.requestedFiles[1].id)
      assert.same(req, assert(client:file_request(req.id)))
      local n = 0
      for r in client:file_requests() do
        n = n + 1
        assert.same(req.id, r.id)
      end
      assert.same(1, n)
      local _, err = client:file_request("frq_missing00001")
      assert.same("not_found", err.kind)
      assert.same("The File Request could not be found", err.message)
    end)

    it("nothing is sent for a bad value", function()
      mock:reset()
      local one = { { name = "A" } }
      local bad = {
        { requested_files = one },
        { name = "", requested_files = one },
        { name = "X", requested_files = {} },
        { name = "X", requested_files = { {}, } },
        { name = "X", requested_files = { { name = "A", max_file_size = -1 } } },
        { name = "X", requested_files = { { name = "A", max_file_size = 1.5 } } },
        { name = "X", requested_files = one, customer_id = "x" },
        { name = "X", requested_files = one, directory = "fsf_abc" },
      }
      local eleven = {}
      for i = 1, 11 do eleven[i] = { name = "F" .. i } end
      bad[#bad + 1] = { name = "X", requested_files = eleven }
      for i, spec in ipairs(bad) do
        local r, err = client:request_files(spec)
        assert.is_nil(r, i)
        assert.same("invalid_argument", err.kind, i)
      end
      assert.has_error(function() client:request_files({ name = "X", requested_files = one, customerId = "cst_a" }) end)
      assert.has_error(function() client:request_files({ name = "X", requested_files = { { name = "A", maxFileSize = 1 } } }) end)
      assert.same("invalid_argument", select(2, client:file_request("fsf_abc")).kind)
      assert.same(0, #mock:requests())
    end)
  end)
end)
