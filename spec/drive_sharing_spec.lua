-- fileapi.drive's share links, team folders and file requests: wire
-- formats, documented errors, the listings over several pages, and the
-- owner-to-visitor round trip on one mock store.
local helper = require "helper"
local drive = require "fileapi.drive"
local shares = require "fileapi.shares"
local cjson = require "cjson"

local ELSEWHERE = "22222222-2222-4222-8222-222222222222"
local FOREIGN = "33333333-3333-4333-8333-333333333333"
local MISSING = "44444444-4444-4444-8444-444444444444"
local OWNER_ID = "00000000-0000-4000-8000-000000000001"

describe("drive sharing", function()
  local mock, d

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  before_each(function()
    mock:reset()
    d = assert(drive.new({ token = helper.DRIVE_TOKEN, base_url = mock.base, backoff = 0.01, timeout = 20 }))
  end)
  after_each(function() d:close() end)

  local function sent(req) return cjson.decode(req.body) end
  local FOLDER = { type = "folder", id = ELSEWHERE }

  describe("share links", function()
    it("share: POST /api/v1/share with every documented field -> the share", function()
      local s = assert(d:share(FOLDER, { permission = "editor", password = "s3cret-pass", expiration = 48,
        emails = { "customer@example.com" } }))
      assert.matches("^%w+$", s.token)
      assert.same("https://files.ro/share/" .. s.token, s.link)
      assert.same("editor", s.permission)
      assert.is_true(s.protected)
      assert.same(48, s.expire_in)
      assert.same(ELSEWHERE, s.item_id)
      assert.same("folder", s.type)
      assert.is_string(s.id)
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/share", req.path)
      assert.same({ id = ELSEWHERE, type = "folder", permission = "editor", isPassword = true,
        password = "s3cret-pass", expiration = 48, emails = { "customer@example.com" } }, sent(req))
      assert.same({ { to = "customer@example.com", token = s.token } }, mock:drive().mails)
    end)

    it("one link per item: the typed 422; the password is in no error", function()
      assert(d:share(FOLDER, { permission = "visitor", password = "hidden-pw-77" }))
      local _, err = d:share(FOLDER, { permission = "visitor", password = "hidden-pw-77" })
      assert.same("validation", err.kind)
      assert.same(422, err.status)
      assert.same("The item is currently shared.", err.message)
      assert.is_falsy(cjson.encode(err):find("hidden-pw-77", 1, true))
      _, err = d:share({ type = "file", id = MISSING })
      assert.same("not_found", err.kind)
      assert.same(200, err.status)
    end)

    it("checks before sending: a folder needs a permission, hours are whole, addresses have a shape", function()
      local before = #mock:requests()
      for i, o in ipairs({ {}, { permission = "owner" }, { permission = "editor", expiration = 1.5 },
          { permission = "editor", expiration = 0 }, { permission = "editor", emails = { "nobody" } },
          { permission = "editor", emails = {} }, { permission = "editor", password = "" } }) do
        local _, err = d:share(FOLDER, o)
        assert.same("invalid_argument", err.kind, "case " .. i)
      end
      local _, err = d:share({ type = "folder", id = "x" }, { permission = "editor" })
      assert.same("invalid_argument", err.kind)
      assert.same(before, #mock:requests())
    end)

    it("update_share: PATCH /api/v1/share/{token}; replaces; protected is required", function()
      local s = assert(d:share(FOLDER, { permission = "editor", expiration = 2 }))
      local u = assert(d:update_share(s.token, { protected = false, permission = "visitor" }))
      assert.same("visitor", u.permission)
      assert.same(0, u.expire_in) -- left out: cleared
      local req = mock:last_request()
      assert.same("PATCH", req.method)
      assert.same("/api/v1/share/" .. s.token, req.path)
      assert.same({ protected = false, permission = "visitor" }, sent(req))
      local before = #mock:requests()
      local _, err = d:update_share(s.token, { permission = "visitor" })
      assert.same("invalid_argument", err.kind)
      _, err = d:update_share("not a token", { protected = false })
      assert.same("invalid_argument", err.kind)
      assert.same(before, #mock:requests())
      _, err = d:update_share("Zz0000000000000A", { protected = false, permission = "editor" })
      assert.same("not_found", err.kind)
      assert.same(404, err.status)
      _, err = d:update_share(s.token, { protected = false })
      assert.same("validation", err.kind)
      assert.same("The permission field for folder is required.", err.message)
    end)

    it("revoke_shares: DELETE /api/v1/share/{first} with every token in the body", function()
      local a = assert(d:share(FOLDER, { permission = "editor" }))
      local f = assert(d:upload({ data = "x", filename = "x.txt" }))
      local b = assert(d:share({ type = "file", id = f.id }))
      assert.is_true(d:revoke_shares({ a.token, b.token }))
      local req = mock:last_request()
      assert.same("DELETE", req.method)
      assert.same("/api/v1/share/" .. a.token, req.path)
      assert.same({ tokens = { a.token, b.token } }, sent(req))
      assert.same({}, mock:drive().shares)
    end)

    it("a long-lived client redacts with a bounded list: 80 links made later, the newest token is still scrubbed",
      function()
      local first = d.engine:secret_count()
      local s
      for _ = 1, 80 do
        s = assert(d:share(FOLDER, { permission = "editor", password = "pw-of-this-link" }))
        assert.is_true(d:revoke_shares({ s.token }))
      end
      s = assert(d:share(FOLDER, { permission = "editor" }))
      local held = d.engine:secret_count()
      assert.is_true(held <= first + require("fileapi.util").MAX_ROTATING, held)
      mock:faults({ { type = "status", status = 403, path = "/api/v1/share/",
        body = '{"type":"error","message":"no link ' .. s.token .. '"}' } })
      local _, err = d:revoke_shares({ s.token })
      assert.same("no link [REDACTED]", err.message)
    end)

    it("send_share: POST /api/v1/shares/{token}/notifications { emails }", function()
      local s = assert(d:share(FOLDER, { permission = "editor" }))
      assert.is_true(d:send_share(s.token, { emails = { "a@example.com", "b@example.org" } }))
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/shares/" .. s.token .. "/notifications", req.path)
      assert.same({ emails = { "a@example.com", "b@example.org" } }, sent(req))
      assert.same(2, #mock:drive().mails)
      local _, err = d:send_share(s.token, { emails = { "bad address" } })
      assert.same("invalid_argument", err.kind)
    end)
  end)

  describe("the owner-to-visitor round trip", function()
    it("share a folder as editor, upload into it as the visitor, see it as the owner, revoke", function()
      local link = assert(d:share(FOLDER, { permission = "editor", expiration = 48 }))
      local visitor = assert(shares.new({ token = link.token, base_url = mock.base }))
      local up = assert(visitor:upload({ data = "from the customer", filename = "invoice.pdf" }))
      assert.same(ELSEWHERE, up.parent_id)
      local parts = {}
      assert(d:zip({ FOLDER }, function(c) parts[#parts + 1] = c return true end))
      local archive = table.concat(parts)
      assert.truthy(archive:find("Elsewhere/invoice.pdf", 1, true))
      assert.truthy(archive:find("from the customer", 1, true))
      assert.is_true(d:revoke_shares({ link.token }))
      local _, err = visitor:upload({ data = "too late", filename = "late.pdf" })
      assert.same("not_found", err.kind)
      _, err = visitor:mkdir("nope")
      assert.same("not_found", err.kind)
      visitor:close()
    end)

    it("a visitor link cannot upload", function()
      local link = assert(d:share(FOLDER, { permission = "visitor" }))
      local visitor = assert(shares.new({ token = link.token, base_url = mock.base }))
      local _, err = visitor:upload({ data = "x", filename = "x.txt" })
      assert.same("forbidden", err.kind)
      visitor:close()
    end)
  end)

  describe("team folders", function()
    it("team_folders(): every one of 120 over 3 pages, page, sort and direction always sent", function()
      local ids = mock:drive_seed({ team_folders = 120 })
      local seen = {}
      for item, err in d:team_folders() do
        assert.is_table(item, err and err.message)
        seen[#seen + 1] = item.id
      end
      assert.same(ids, seen) -- oldest first
      local pages = {}
      for _, r in ipairs(mock:requests()) do
        if r.path == "/api/v1/teams/folders/all" then
          pages[#pages + 1] = r.query.page
          assert.same("created_at", r.query.sort)
          assert.same("ASC", r.query.direction)
        end
      end
      assert.same({ "1", "2", "3" }, pages)
    end)

    it("shared_with_me() and a folder's content: folders first, then files", function()
      mock:drive_seed({ shared_with_me = 51 })
      local n = 0
      for item in d:shared_with_me() do
        n = n + 1
        assert.same("folder", item.type)
      end
      assert.same(51, n)
      local team = mock:drive_seed({ team_folders = 1 })[1]
      mock:drive_seed({ folder_id = team, folders = 2, files = 60 })
      local kinds = {}
      for item in d:team_folders(team, { sort = "name", direction = "desc" }) do kinds[#kinds + 1] = item.type end
      assert.same(62, #kinds)
      assert.same({ "folder", "folder", "file" }, { kinds[1], kinds[2], kinds[3] })
      assert.same("/api/v1/teams/folders/" .. team, mock:last_request().path)
      assert.same("DESC", mock:last_request().query.direction)
    end)

    it("a failed page ends the loop with false, err once", function()
      mock:drive_seed({ team_folders = 60 })
      mock:faults({ { type = "status", status = 403, skip = 1, path = "/api/v1/teams/folders/all",
        body = '{"type":"error","message":"Access Denied"}' } })
      local n, failure, after = 0, nil, 0
      for item, err in d:team_folders() do
        if item then n = n + 1 elseif failure then after = after + 1 else failure = err end
      end
      assert.same(50, n)
      assert.same("forbidden", failure.kind)
      assert.same(0, after)
      local _, err = d:team_folders(MISSING)()
      assert.same(false, _)
      assert.same("not_found", err.kind)
    end)

    it("create_team_folder: POST /api/v1/teams/folders, invitations typed", function()
      local f = assert(d:create_team_folder("Customers", { { email = "c@example.com", permission = "can-edit" } }))
      assert.same("folder", f.type)
      assert.is_true(f.isTeamFolder)
      local req = mock:last_request()
      assert.same("POST", req.method)
      assert.same("/api/v1/teams/folders", req.path)
      assert.same({ name = "Customers", invitations = { { email = "c@example.com", permission = "can-edit",
        type = "invitation" } } }, sent(req))
      mock:config({ drive_members_limit = 0 })
      local _, err = d:create_team_folder("More", { { email = "d@example.com", permission = "can-view" } })
      assert.same("forbidden", err.kind)
      assert.same(401, err.status)
      assert.same("You exceed your members limit.", err.message)
      local before = #mock:requests()
      for _, inv in ipairs({ {}, { { email = "x", permission = "can-edit" } },
          { { email = "a@b.co", permission = "admin" } } }) do
        _, err = d:create_team_folder("Bad", inv)
        assert.same("invalid_argument", err.kind)
      end
      assert.same(before, #mock:requests())
    end)

    it("update_team_folder: PATCH with both lists (empty as []), 201; dissolve", function()
      local f = assert(d:create_team_folder("Crew", { { email = "c@example.com", permission = "can-edit" } }))
      local member = "55555555-5555-4555-8555-555555555555"
      local u = assert(d:update_team_folder(f.id, { invitations = {},
        members = { { id = OWNER_ID, permission = "owner" }, { id = member, permission = "can-view" } } }))
      assert.same("folder", u.type)
      local req = mock:last_request()
      assert.same("PATCH", req.method)
      assert.same("/api/v1/teams/folders/" .. f.id, req.path)
      assert.matches('"invitations":%[%]', req.body)
      assert.same({ { id = OWNER_ID, permission = "owner" }, { id = member, permission = "can-view" } },
        sent(req).members)
      local _, err = d:update_team_folder(f.id, { members = {} })
      assert.same("invalid_argument", err.kind)
      assert.is_true(d:dissolve_team_folder(f.id))
      assert.same("DELETE", mock:last_request().method)
      _, err = d:dissolve_team_folder(f.id)
      assert.same("not_found", err.kind)
      assert.same("You're trying to access non-team folder.", err.message)
      _, err = d:dissolve_team_folder(MISSING)
      assert.same("not_found", err.kind)
      assert.same(404, err.status)
      _, err = d:update_team_folder(FOREIGN, { invitations = {}, members = {} })
      assert.same("not_found", err.kind)
    end)
  end)

  describe("file requests", function()
    it("request_files: POST /api/v1/requests, no folder_id for home", function()
      local r = assert(d:request_files({ name = "Documents for the audit", email = "client@example.com",
        notes = "PDF please" }))
      assert.same("upload-request", r.type)
      assert.same("client@example.com", r.email)
      local req = mock:last_request()
      assert.same("/api/v1/requests", req.path)
      assert.same({ name = "Documents for the audit", email = "client@example.com", notes = "PDF please" }, sent(req))
      r = assert(d:request_files({ name = "Into a folder", folder_id = ELSEWHERE }))
      assert.same(ELSEWHERE, r.folder_id)
      local _, err = d:request_files({ folder_id = MISSING })
      assert.same("not_found", err.kind)
      _, err = d:request_files({ folder_id = FOREIGN })
      assert.same("forbidden", err.kind)
      local before = #mock:requests()
      for _, spec in ipairs({ { email = "nope" }, { folder_id = "" }, { name = "" } }) do
        _, err = d:request_files(spec)
        assert.same("invalid_argument", err.kind)
      end
      assert.same(before, #mock:requests())
    end)
  end)
end)
