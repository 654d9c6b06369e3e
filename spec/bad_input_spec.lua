-- Bad input across files and shares: wrong types raise; bad values return
-- nil, err before anything is sent (the mock sees no connection).
local helper = require "helper"
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local drive_module = require "fileapi.drive"

describe("bad input", function()
  local mock, client, share, drive, dir_path, unreadable

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
    drive = assert(drive_module.new({ token = helper.DRIVE_TOKEN, base_url = mock.base }))
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
    { "share:upload with a number", function() share:upload(5) end },
    { "share:upload with a numeric path", function() share:upload({ path = 5 }) end },
    { "share:upload with an unknown source field", function() share:upload({ data = "x", file = "f" }) end },
    { "share:upload opts as a string", function() share:upload("x", "a/b") end },
    { "share:upload with a string chunk_size", function() share:upload("x", { chunk_size = "1" }) end },
    { "share:delete with an item that is no table", function() share:delete({ "x" }) end },
    { "share:move with an unknown item field", function() share:move({ { type = "file", ids = "x" } }) end },
    { "d:upload with a number", function() drive:upload(5) end },
    { "d:upload with a numeric path", function() drive:upload({ path = 5 }) end },
    { "d:upload with a numeric data", function() drive:upload({ data = 5, filename = "f" }) end },
    { "d:upload opts as a string", function() drive:upload("x", "a/b") end },
    { "d:upload with a numeric parent_id", function() drive:upload("x", { parent_id = 5 }) end },
    { "d:move opts as a string", function() drive:move({ { type = "file", id = "x" } }, "home") end },
    { "d:move with an item that is no table", function() drive:move({ "x" }) end },
    { "d:rename with a number", function() drive:rename(5, "x") end },
    { "d:share opts as a string", function() drive:share({ type = "file", id = "x" }, "editor") end },
    { "d:team_folders opts as a string", function() drive:team_folders(nil, "name") end },
    { "d:move with a string", function() drive:move("file:x") end },
    { "d:delete with an unknown item field", function() drive:delete({ { type = "file", uuid = "x" } }) end },
    { "d:zip with a numeric dest", function() drive:zip({ { type = "file", id = "x" } }, 5) end },
    { "d:restore opts as a string", function() drive:restore({ { type = "file", id = "x" } }, "home") end },
    { "d:upload_tree opts as a string", function() drive:upload_tree(".", "x") end },
    { "d:request_files with a string", function() drive:request_files("x") end },
    { "client:upload_tree opts as a string", function() client:upload_tree(".", "x") end },
    { "client:share with a numeric id", function() client:share({ 5 }) end },
    { "a numeric requested file name", function() client:request_files({ name = "x", requested_files = { { name = 5 } } }) end },
    { "drive.new with a numeric token", function() drive_module.new({ token = 5 }) end },
    { "drive.login with a numeric password", function() drive_module.login({ email = "a@b.cd", password = 5 }) end },
    { "files.new with a numeric store url", function() files.new({ api_key = "k", store = { url = 5 } }) end },
    { "files.new with an unknown store field", function() files.new({ api_key = "k", store = { uri = "x" } }) end },
    { "files.new with a numeric oauth field", function() files.new({ oauth = { client_id = 5 } }) end },
    { "exchange_code with an unknown option", function() files.exchange_code({ code = "x", colour = 1 }) end },
  }
  -- raised as luaL_argerror does: the message names the caller's line (here), not the library's
  for _, case in ipairs(types) do
    it(case[1] .. " raises at the caller's line", function()
      local ok, msg = pcall(case[2])
      assert.is_false(ok)
      assert.matches("bad_input_spec%.lua:%d+: bad ", tostring(msg))
    end)
  end
end)
