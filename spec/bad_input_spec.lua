-- Bad input across files and shares: wrong types raise; bad values return
-- nil, err before anything is sent (the mock sees no connection).
local helper = require "helper"
local files = require "fileapi.files"
local shares = require "fileapi.shares"

describe("bad input", function()
  local mock, client, share, dir_path, unreadable

  setup(function()
    mock = helper.start_mock()
    dir_path = helper.tmpname(".d")
    os.execute("mkdir -p " .. helper.sh_quote(dir_path))
    unreadable = helper.write_file(helper.tmpname(".file"), 10)
  end)

  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. helper.sh_quote(dir_path) .. " " .. helper.sh_quote(unreadable))
  end)

  before_each(function()
    mock:reset()
    client = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url }))
    share = assert(shares.new({ token = "editor-token", base_url = mock.base }))
  end)

  local huge = ("x"):rep(1024 * 1024)
  local function lying_reader(n)
    local sent = false
    return function() if sent then return nil end sent = true return ("z"):rep(n) end
  end

  -- { description, function returning (result, err), expected kind }
  local values = {
    { "files.new without a key", function() return files.new({ base_url = mock.mkp_url, api_key = "" }) end },
    { "a key with a newline", function() return files.new({ api_key = "k\r\nX-Evil: 1" }) end },
    { "a key with a space", function() return files.new({ api_key = "a b" }) end },
    { "a key with a NUL", function() return files.new({ api_key = "a\0b" }) end },
    { "a key of non-ASCII", function() return files.new({ api_key = "clé" }) end },
    { "a base URL without scheme", function() return files.new({ api_key = "k", base_url = "api.example.com/v1" }) end },
    { "a base URL with ftp", function() return files.new({ api_key = "k", base_url = "ftp://h/v1" }) end },
    { "a base URL with spaces", function() return files.new({ api_key = "k", base_url = "https://h /v1" }) end },
    { "a base URL with a query", function() return files.new({ api_key = "k", base_url = "https://h/v1?x=1" }) end },
    { "a base URL with credentials", function() return files.new({ api_key = "k", base_url = "https://u:p@h/v1" }) end },
    { "a base URL with a bad port", function() return files.new({ api_key = "k", base_url = "https://h:port/v1" }) end },
    { "an empty base URL", function() return files.new({ api_key = "k", base_url = "" }) end },
    { "a negative timeout", function() return files.new({ api_key = "k", timeout = -1 }) end },
    { "NaN connect_timeout", function() return files.new({ api_key = "k", connect_timeout = 0 / 0 }) end },
    -- refused at new(), as on every transport, not by libcurl's alone at the first call
    { "a timeout past its range", function() return files.new({ api_key = "k", timeout = 2e9 }) end },
    { "an idle_timeout past its range", function() return files.new({ api_key = "k", idle_timeout = 1e10 }) end },
    { "fractional retries", function() return files.new({ api_key = "k", retries = 1.5 }) end },
    { "an empty directory name", function() return client:mkdir("") end },
    { "a huge directory name", function() return client:mkdir(huge) end },
    { "a name with CR LF", function() return client:mkdir("a\r\nb") end },
    { "a name of invalid UTF-8", function() return client:mkdir("\192\128") end },
    { "a directory id of the wrong form", function() return client:mkdir("x", { directory = "abc" }) end },
    { "a directory id with a slash", function() return client:mkdir("x", { directory = "fsd_a/b" }) end },
    { "a file id as directory", function() return client:upload({ data = "x", filename = "f" }, { directory = "fsf_abc" }) end },
    { "a directory as the file", function() return client:upload(dir_path) end },
    { "an empty path", function() return client:upload("") end },
    { "data without filename", function() return client:upload({ data = "x" }) end },
    { "an empty filename", function() return client:upload({ data = "x", filename = "" }) end },
    { "a huge filename", function() return client:upload({ data = "x", filename = ("f"):rep(300) }) end },
    { "a reader without size", function() return client:upload({ reader = function() end, filename = "r" }) end },
    { "a reader with a negative size", function()
      return client:upload({ reader = function() end, size = -1, filename = "r" }) end },
    { "a reader with a fractional size", function()
      return client:upload({ reader = function() end, size = 1.5, filename = "r" }) end },
    { "both data and path", function() return client:upload({ data = "x", path = "/etc/hostname" }) end },
    { "a source with nothing", function() return client:upload({ filename = "f" }) end },
    { "a mime with CR LF", function() return client:upload({ data = "x", filename = "f" }, { mime = "a/b\r\nX: y" }) end },
    { "a mime without subtype", function() return client:upload({ data = "x", filename = "f" }, { mime = "text" }) end },
    { "a share without token", function() return shares.new({ base_url = mock.base }) end },
    { "an empty token", function() return shares.new({ token = "", base_url = mock.base }) end },
    { "a token with a newline", function() return shares.new({ token = "a\nb", base_url = mock.base }) end },
    { "a huge token", function() return shares.new({ token = huge, base_url = mock.base }) end },
    { "a header overriding Host", function() return shares.new({ token = "t", headers = { host = "x" } }) end },
    { "a header overriding Content-Length", function()
      return shares.new({ token = "t", headers = { ["Content-Length"] = "1" } }) end },
    { "a header value with CR LF", function() return shares.new({ token = "t", headers = { X = "a\r\nB: c" } }) end },
    { "a header name with a colon", function() return shares.new({ token = "t", headers = { ["X:Y"] = "a" } }) end },
    { "an empty folder name", function() return share:mkdir("") end },
    { "a parent that is not a UUID", function() return share:mkdir("x", { parent_id = "folder_123" }) end },
    { "a parent UUID with junk", function()
      return share:mkdir("x", { parent_id = "11111111-1111-4111-8111-111111111111x" }) end },
    { "one-shot with an empty name", function() return shares.mkdir("editor-token", "", { base_url = mock.base }) end },
  }

  for _, case in ipairs(values) do
    it(case[1] .. " gives invalid_argument and sends nothing", function()
      local result, err = case[2]()
      assert.is_nil(result)
      assert.same("invalid_argument", err.kind)
      assert.same(0, err.attempts)
      assert.is_false(err.retryable)
      assert.is_string(err.message)
      assert.same(0, mock:stats().connections)
    end)
  end

  local io_cases = {
    { "a missing file", function() return client:upload("/no/such/dir/file.pdf") end, "No such file" },
    { "a path through a file", function() return client:upload(unreadable .. "/child") end, "Not a directory" },
  }
  for _, case in ipairs(io_cases) do
    it(case[1] .. " gives io and sends nothing", function()
      local result, err = case[2]()
      assert.is_nil(result)
      assert.same("io", err.kind)
      assert.matches(case[3], err.message)
      assert.same(0, mock:stats().connections)
    end)
  end

  it("a reader whose size lies gives io (short and long)", function()
    local _, short = client:upload({ reader = lying_reader(3), size = 4, filename = "r" })
    local _, long = client:upload({ reader = lying_reader(5), size = 4, filename = "r" })
    assert.same("io", short.kind)
    assert.same("io", long.kind)
  end)

  local types = {
    { "files.new with a string", function() files.new("key") end },
    { "a numeric api_key", function() files.new({ api_key = 1 }) end },
    { "a string timeout", function() files.new({ api_key = "k", timeout = "1" }) end },
    { "a string allow_insecure", function() files.new({ api_key = "k", allow_insecure = "yes" }) end },
    { "mkdir with a number", function() client:mkdir(1) end },
    { "mkdir with nil", function() client:mkdir() end },
    { "mkdir opts as a string", function() client:mkdir("x", "fsd_x") end },
    { "a numeric directory", function() client:mkdir("x", { directory = 5 }) end },
    { "upload with a number", function() client:upload(5) end },
    { "upload with a boolean", function() client:upload(true) end },
    { "a numeric filename", function() client:upload({ data = "x", filename = 5 }) end },
    { "a table as data", function() client:upload({ data = {}, filename = "f" }) end },
    { "a reader that is not a function", function() client:upload({ reader = "x", size = 1, filename = "f" }) end },
    { "on_progress not a function", function() client:upload("x", { on_progress = true }) end },
    { "shares.new without a table", function() shares.new() end },
    { "a numeric token", function() shares.new({ token = 5 }) end },
    { "headers as a string", function() shares.new({ token = "t", headers = "Cookie: x" }) end },
    { "a numeric header value", function() shares.new({ token = "t", headers = { X = 1 } }) end },
    { "share:mkdir with a table", function() share:mkdir({}) end },
    { "a numeric parent_id", function() share:mkdir("x", { parent_id = 1 }) end },
    { "shares.mkdir without a name", function() shares.mkdir("t") end },
  }
  for _, case in ipairs(types) do
    it(case[1] .. " raises", function()
      assert.has_error(case[2])
    end)
  end
end)
