-- files.ro shared folders through a real socket against the mock.
local helper = require "helper"
local shares = require "fileapi.shares"

local ROOT = "11111111-1111-4111-8111-111111111111"
local ELSEWHERE = "22222222-2222-4222-8222-222222222222"

describe("shares", function()
  local mock, share

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  before_each(function()
    mock:reset()
    share = assert(shares.new({ token = "editor-token", base_url = mock.base }))
  end)

  after_each(function() share:close() end)

  it("sends the documented request", function()
    assert(share:mkdir("New Folder"))
    local req = mock:last_request()
    assert.same("POST", req.method)
    assert.same("/api/v1/shares/editor-token/items", req.target)
    assert.same('{"name":"New Folder"}', req.body)
    assert.same("application/json", req.headers["content-type"])
    assert.same("application/json", req.headers.accept)
    assert.is_nil(req.headers.authorization)
    local names = {}
    for i, h in ipairs(req.header_list) do names[i] = h[1] end
    assert.same({ "Host", "User-Agent", "Content-Type", "Accept", "Content-Length" }, names)
  end)

  it("returns a top-level folder flattened, nulls as nil", function()
    local folder, err = share:mkdir("Projects")
    assert.is_nil(err)
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", folder.id)
    assert.same("folder", folder.type)
    assert.same("Projects", folder.name)
    assert.same(0, folder.filesize)
    assert.same(0, folder.items)
    assert.same(0, folder.trashed_items)
    assert.is_false(folder.isTeamFolder)
    assert.is_nil(folder.color)
    assert.is_nil(folder.emoji)
    assert.is_nil(folder.deleted_at)
    assert.matches("^%d%d%. %a+%. %d%d%d%d$", folder.created_at)
    assert.same(folder.created_at, folder.updated_at)
    local shared = folder.relationships.shared.data
    assert.same("shared", shared.type)
    assert.same({ permission = "editor", protected = false, item_id = ROOT, token = "editor-token",
      link = "https://files.ro/share/editor-token", type = "folder" }, shared.attributes)
    assert.same({ type = "folder", id = ROOT, attributes = { name = "Shared" } },
      folder.relationships.parent.data)
    assert.same("user", folder.relationships.user.data.type)
    assert.is_nil(folder.attributes)
  end)

  it("creates nested folders with parent_id", function()
    local a = assert(share:mkdir("A"))
    local b = assert(share:mkdir("B", { parent_id = a.id }))
    assert.same(a.id, b.relationships.parent.data.id)
    assert.same("A", b.relationships.parent.data.attributes.name)
    assert.same(('{"name":"B","parent_id":"%s"}'):format(a.id), mock:last_request().body)
    assert.same(a.id, mock:folder(b.id).parent_id)
  end)

  it("works one-shot with client options in opts", function()
    local folder = assert(shares.mkdir("editor-token", "Invoices", { base_url = mock.base, timeout = 5 }))
    assert.same("Invoices", folder.name)
    local nested = assert(shares.mkdir("editor-token", "2024", { base_url = mock.base, parent_id = folder.id }))
    assert.same(folder.id, nested.relationships.parent.data.id)
  end)

  describe("errors", function()
    local function mkdir_with(token, name, opts, copts)
      copts = copts or {}
      copts.token, copts.base_url = token, mock.base
      local s = assert(shares.new(copts))
      local folder, err = s:mkdir(name, opts)
      s:close()
      return folder, err
    end

    it("maps a view-only share to forbidden with the server's message", function()
      local _, err = mkdir_with("visitor-token", "X")
      assert.same("forbidden", err.kind)
      assert.same(403, err.status)
      assert.same("Access Denied", err.message)
    end)

    it("maps a protected share without its session to forbidden", function()
      local _, err = mkdir_with("protected-token", "X")
      assert.same("forbidden", err.kind)
      assert.same("Sorry, you don't have permission", err.message)
      local folder = assert(mkdir_with("protected-token", "X", nil,
        { headers = { Cookie = "share_session=unlock-me" } }))
      assert.same("X", folder.name)
      assert.same("share_session=unlock-me", mock:last_request().headers.cookie)
    end)

    it("maps a parent outside the shared tree to forbidden", function()
      local _, err = share:mkdir("X", { parent_id = ELSEWHERE })
      assert.same("forbidden", err.kind)
      assert.same("This action is unauthorized.", err.message)
    end)

    it("maps an account that may not create folders to unauthorized", function()
      local _, err = mkdir_with("readonly-account-token", "X")
      assert.same("unauthorized", err.kind)
      assert.same(401, err.status)
      assert.same("This user action is not allowed.", err.message)
    end)

    it("maps unknown and expired tokens to not_found, the token redacted", function()
      for _, token in ipairs({ "no-such-token", "expired-token" }) do
        local _, err = mkdir_with(token, "X")
        assert.same("not_found", err.kind)
        assert.same(404, err.status)
        assert.matches("^We couldn't find the resource you requested with id", err.message)
        assert.is_nil(err.message:find(token, 1, true))
        assert.is_nil(tostring(err):find(token, 1, true))
      end
    end)

    it("maps Laravel validation errors with their fields", function()
      mock:faults({ { type = "status", status = 422, body =
        '{"message":"The given data was invalid.","errors":{"name":["The name field is required."]}}' } })
      local _, err = share:mkdir("X")
      assert.same("validation", err.kind)
      assert.same("The given data was invalid.", err.message)
      assert.same({ name = { "The name field is required." } }, err.fields)
    end)

    it("maps 429 and 5xx as the design says", function()
      mock:config({ share_rate_limit = 0 })
      local _, err = mkdir_with("editor-token", "X", nil, { retries = 0 })
      assert.same("rate_limited", err.kind)
      assert.same("Too Many Attempts.", err.message)
      assert.is_true(err.retryable)
      mock:config({ share_rate_limit = false })
      mock:faults({ { type = "status", status = 502, content_type = "text/html", body = "<html>Bad Gateway</html>" } })
      local _, e5 = share:mkdir("X")
      assert.same("server", e5.kind)
      assert.same(502, e5.status)
      assert.same("the server answered HTTP 502", e5.message)
      assert.is_true(e5.retryable)
      assert.same(1, e5.attempts)
    end)
  end)

  describe("input", function()
    it("refuses an empty name or a parent that is not a UUID before sending", function()
      for _, case in ipairs({ { "" }, { "x", { parent_id = "folder_123" } }, { "x", { parent_id = "" } },
          { "a\nb" } }) do
        local folder, err = share:mkdir(case[1], case[2])
        assert.is_nil(folder)
        assert.same("invalid_argument", err.kind)
      end
      for _, opts in ipairs({ { token = "" }, { token = "a\rb" }, { token = "t", headers = { ["Content-Type"] = "x" } },
          { token = "t", headers = { Host = "evil" } }, { token = "t", headers = { ["X-A"] = "v\r\nX-B: 1" } },
          { token = "t", headers = { ["Bad Name"] = "v" } }, {} }) do
        opts.base_url = mock.base
        local s, err = shares.new(opts)
        assert.is_nil(s)
        assert.same("invalid_argument", err.kind)
      end
      assert.same(0, mock:stats().connections)
    end)

    it("raises for wrong types", function()
      assert.has_error(function() shares.new() end)
      assert.has_error(function() shares.new({ token = 5 }) end)
      assert.has_error(function() share:mkdir(nil) end)
      assert.has_error(function() share:mkdir("x", { parent_id = 5 }) end)
      assert.has_error(function() shares.mkdir("t", 5) end)
    end)

    for _, token in ipairs({ "a/b", "../x", "t?x=1", "t#frag", "sp ace", "100%" }) do
      it("keeps the token " .. token .. " inside its path segment", function()
        mock:add_share({ token = token })
        local s = assert(shares.new({ token = token, base_url = mock.base }))
        local folder, err = s:mkdir("Inside")
        s:close()
        assert.is_nil(err)
        assert.same("Inside", folder.name)
        local req = mock:last_request()
        assert.matches("^/api/v1/shares/[^/?#]+/items$", req.target)
        assert.same(token, folder.relationships.shared.data.attributes.token)
      end)
    end
  end)

  it("reuses one connection for 20 calls", function()
    for i = 1, 20 do assert(share:mkdir("f" .. i)) end
    local stats = mock:stats()
    assert.same(20, stats.requests)
    assert.same(1, stats.connections)
  end)
end)
