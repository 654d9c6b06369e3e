-- The C multipart body on its own: length, streaming reads, pull mode (the
-- caller runs readers, as the nginx transport does), rewinding.
local core = require "fileapi.core"
local helper = require "helper"

local function read_all(body, n)
  local out = {}
  while true do
    local chunk, err = body:read(n)
    if chunk == nil then assert(err == nil, tostring(err)) break end
    out[#out + 1] = chunk
  end
  return table.concat(out)
end

-- pull hands over the reader function itself, whatever part it belongs to
local function pull_all(body, _, n)
  local out = {}
  while true do
    local chunk, part = body:pull(n)
    if chunk == false then
      body:feed(part())
    elseif chunk == nil then
      if part then return nil, part end
      break
    else
      out[#out + 1] = chunk
    end
  end
  return table.concat(out)
end

local function chunks_of(list)
  local i = 0
  return function() i = i + 1 return list[i] end
end

describe("multipart", function()
  it("has exactly the length it announces, for every chunk size", function()
    local path = helper.write_file(helper.tmpname(".bin"), 100000)
    for _, n in ipairs({ 1, 7, 4096, 65536, 1048576 }) do
      local body = assert(core.multipart({
        { name = "a", data = "alpha" },
        { name = "file", filename = "f.bin", content_type = "application/octet-stream", path = path },
        { name = "r", filename = "r.txt", reader = chunks_of({ "ab", "", "cde" }), size = 5 },
      }, "B"))
      local text = read_all(body, n)
      assert.same(body:length(), #text)
      local head = "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nalpha\r\n--B\r\n"
      assert.same(head, text:sub(1, #head))
      assert.matches("\r\n\r\nabcde\r\n%-%-B%-%-\r\n$", text)
      body:close()
    end
    os.remove(path)
  end)

  it("gives a random boundary by default, announced in content_type", function()
    local a = assert(core.multipart({ { name = "x", data = "1" } }))
    local b = assert(core.multipart({ { name = "x", data = "1" } }))
    assert.matches("^fileapi%-%x+$", a:boundary())
    assert.are_not.equal(a:boundary(), b:boundary())
    assert.same("multipart/form-data; boundary=" .. a:boundary(), a:content_type())
  end)

  it("pull mode hands reader calls to the caller and checks sizes the same way", function()
    local function parts(fn) return { { name = "r", filename = "r", reader = fn, size = 6 } } end
    local body = assert(core.multipart(parts(chunks_of({ "abc", "", "def" })), "B"))
    local text = pull_all(body, nil, 4)
    assert.same(body:length(), #text)
    assert.matches("\r\n\r\nabcdef\r\n%-%-B%-%-\r\n$", text)

    local _, err = pull_all(assert(core.multipart(parts(chunks_of({ "abc" })), "B")), nil, 4)
    assert.same("io", err.kind)
    assert.matches("ended after 3 of 6", err.message)
    _, err = pull_all(assert(core.multipart(parts(chunks_of({ "abcdef", "g" })), "B")), nil, 4)
    assert.same("io", err.kind)
    assert.matches("more bytes than its declared size", err.message)
    _, err = pull_all(assert(core.multipart(parts(function() return 42 end)), "B"), nil, 4)
    assert.same("callback", err.kind)
  end)

  -- pull used to answer with the part's index, which the cosocket transport
  -- looked up in a list of readers: a path part first shifted it.
  it("pull mode hands over each part's own reader, whatever parts come before", function()
    local path = helper.write_file(helper.tmpname(".bin"), 10, "p")
    local body = assert(core.multipart({
      { name = "a", path = path },
      { name = "b", reader = chunks_of({ "first" }), size = 5 },
      { name = "c", data = "data" },
      { name = "d", reader = chunks_of({ "second" }), size = 6 },
    }, "B"))
    local text = assert(pull_all(body, nil, 3))
    os.remove(path)
    assert.same(body:length(), #text)
    assert.matches('name="b"\r\n\r\nfirst\r\n', text)
    assert.matches('name="d"\r\n\r\nsecond\r\n', text)
    assert.same(10 + 5 + 4 + 6, body:payload_length())
  end)

  it("rewinds files and data, and readers only with rewind", function()
    local path = helper.write_file(helper.tmpname(".bin"), 5000)
    local body = assert(core.multipart({ { name = "f", filename = "f", path = path } }))
    local first = read_all(body, 999)
    assert.is_true(body:rewind())
    assert.same(first, read_all(body, 1000))
    os.remove(path)

    local once = assert(core.multipart({ { name = "r", filename = "r", reader = chunks_of({ "xy" }), size = 2 } }))
    read_all(once, 10)
    local ok, err = once:rewind()
    assert.is_nil(ok)
    assert.same("io", err.kind)

    local src = { "xy" }
    local reader = chunks_of(src)
    local again = assert(core.multipart({ { name = "r", filename = "r", size = 2,
      reader = function() return reader() end,
      rewind = function() reader = chunks_of(src) return true end } }))
    local a = read_all(again, 10)
    assert.is_true(again:rewind())
    assert.same(a, read_all(again, 10))
  end)

  it("reports a file that cannot be used, and raises for wrong types", function()
    local body, err = core.multipart({ { name = "f", filename = "f", path = "/no/such" } })
    assert.is_nil(body)
    assert.same("io", err.kind)
    assert.has_error(function() core.multipart({ { name = "f", data = 5 } }) end)
    assert.has_error(function() core.multipart({}) end)
    assert.has_error(function() core.multipart({ { data = "x" } }) end)
    assert.has_error(function() core.multipart({ { name = "x", data = "x" } }, "bad boundary!") end)
    local closed = assert(core.multipart({ { name = "x", data = "x" } }))
    closed:close()
    closed:close()
    local _, cerr = closed:read()
    assert.same("invalid_argument", cerr.kind)
  end)

  it("refuses slices whose bounds overflow, before anything is read", function()
    local path = helper.write_file(helper.tmpname(".bin"), 1000)
    for _, v in ipairs({ 2 ^ 62, 2 ^ 63, 2 ^ 64, 1e300, -1, 0.5, 0 / 0 }) do
      for _, source in ipairs({ { data = "0123456789" }, { path = path } }) do
        local part = { name = "f", filename = "f", offset = v, length = v }
        for k, x in pairs(source) do part[k] = x end
        local ok, err = pcall(core.multipart, { part })
        assert.is_false(ok, tostring(v))
        assert.matches("whole numbers from 0 to 2%^53", err)
      end
    end
    -- a length of -1 is no "to the end": only a missing length is (the fuzzer found it)
    for _, source in ipairs({ { data = "0123456789" }, { path = path } }) do
      local part = { name = "f", filename = "f", offset = 0, length = -1 }
      for k, x in pairs(source) do part[k] = x end
      local ok, err = pcall(core.multipart, { part })
      assert.is_false(ok)
      assert.matches("whole numbers from 0 to 2%^53", err)
    end
    -- in range, but together past the end: refused too (offset + length is not added)
    local ok, err = pcall(core.multipart, { { name = "f", data = "0123456789", offset = 2 ^ 53, length = 2 ^ 53 } })
    assert.is_false(ok)
    assert.matches("outside the data", err)
    local body, ferr = core.multipart({ { name = "f", filename = "f", path = path, offset = 2 ^ 52, length = 2 ^ 52 } })
    assert.is_nil(body)
    assert.matches("shorter than the part", ferr.message)
    assert.has_error(function() core.multipart({ { name = "r", reader = function() end, size = 2 ^ 63 } }) end)
    local fine = assert(core.multipart({ { name = "f", data = "0123456789", offset = 3, length = 4 } }, "B"))
    assert.matches("\r\n\r\n3456\r\n%-%-B%-%-\r\n$", read_all(fine, 7))
    assert.has_error(function() fine:payload_at(2 ^ 63) end)
    os.remove(path)
  end)

  it("a reader that closes its own body ends the read with an error, never a crash", function()
    for _, mode in ipairs({ "read", "pull" }) do
      local body
      body = assert(core.multipart({ { name = "r", filename = "r", size = 6, reader = function()
        body:close()
        return "abc"
      end } }))
      local out, err
      if mode == "read" then out, err = body:read(1000) else out, err = pull_all(body, nil, 1000) end
      assert.is_nil(out, mode)
      assert.same("invalid_argument", err.kind, mode)
      local again, cerr = body:read()
      assert.is_nil(again)
      assert.matches("closed", cerr.message)
    end
  end)

  it("a reader that reads its own body is refused", function()
    local body, nested
    body = assert(core.multipart({ { name = "r", filename = "r", size = 3, reader = function()
      if nested then return nil end
      nested = { body:read(2) }
      return "abc"
    end } }))
    local first = assert(body:read(1000))
    assert.matches("abc", first)
    assert.is_nil(nested[1])
    assert.matches("in use", nested[2].message)
  end)

  it("a reader or rewind that raises: err.cause is the raised value itself", function()
    local raised = setmetatable({ code = 42 }, { __tostring = function() return "boom 42" end })
    local body = assert(core.multipart({ { name = "r", filename = "r", size = 3, reader = function() error(raised) end } }))
    local _, err = body:read()
    assert.same("callback", err.kind)
    assert.matches("reader raised: boom 42", err.message)
    assert.equal(raised, err.cause)
  end)

  it("an unreadable file carries errno", function()
    local _, err = core.multipart({ { name = "f", filename = "f", path = "/no/such/file" } })
    assert.same("ENOENT", err.errno_name)
    assert.is_number(err.errno)
    local size, serr = core.file_size("/no/such/file")
    assert.is_nil(size)
    assert.same("ENOENT", serr.errno_name)
  end)

  it("parses Retry-After as seconds or an HTTP date", function()
    assert.same(120, core.retry_after("120"))
    assert.same(7, core.retry_after("  7 "))
    assert.same(10, core.retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480))
    assert.same(0, core.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490))
    assert.is_nil(core.retry_after("soon"))
    assert.is_nil(core.retry_after(""))
    assert.is_nil(core.retry_after("1\r\n2"))
  end)
end)
