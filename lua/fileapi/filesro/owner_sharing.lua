-- The owner's share links (make, change, revoke, mail), team folders (the
-- two listings as lazy iterators, make, change members, dissolve) and file
-- requests.
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"
local documents = require "fileapi.filesro.documents"
local common = require "fileapi.filesro.owner_common"
local pager = require "fileapi.pager"

local type, pairs, ipairs, select, tonumber, format = type, pairs, ipairs, select, tonumber, string.format
local request, send_doc, send_done = common.request, common.send_doc, common.send_done
local json = engine.json

local M = {}

-- A share document: its attributes at top level (their `type` is the
-- shared item's), the share's id.
local function share_of(self, doc, res)
  local data = type(doc) == "table" and doc.data
  local attrs = type(data) == "table" and data.attributes
  if type(attrs) ~= "table" or type(attrs.token) ~= "string" then
    return self.engine:protocol_error(res, "the response is not a share document")
  end
  local share = {}
  for k, v in pairs(attrs) do share[k] = v end
  share.id = data.id
  -- the token opens the share as a visitor: never shown in an error again
  self.engine:add_secret(attrs.token)
  return share
end

local function check_password(p)
  if p == nil then return true end
  if type(p) ~= "string" or p == "" or #p > 1024 or util.has_control(p) then
    return nil, "password must be 1 to 1024 bytes without control characters"
  end
  return true
end

local function check_permission(p, optional)
  if p == nil and optional then return true end
  if not common.PERMISSIONS[p] then return nil, 'permission must be "editor" or "visitor"' end
  return true
end

local SHARE_OPTIONS = { "permission", "password", "expiration", "emails" }

local function check_share_options(self, opts, fname)
  for _, k in ipairs({ "permission", "password" }) do util.check_field(opts, k, "string", fname, 4) end
  util.check_field(opts, "expiration", "number", fname, 4)
  util.check_field(opts, "emails", "table", fname, 4)
  local ok, why = check_permission(opts.permission, true)
  if ok then ok, why = check_password(opts.password) end
  if ok then ok, why = common.check_hours(opts.expiration, "expiration") end
  if ok then ok, why = common.check_emails(opts.emails, "emails", true) end
  if ok and opts.password then self.engine:add_secret(opts.password) end
  return ok, why
end

--- d:share(item, { permission, password, expiration, emails }) -> share:
---   { id, token, link, permission, protected, expire_in, item_id, type }
--- A folder needs a permission; expiration is in whole hours (none: never).
function M:share(item, opts)
  local ok, why = documents.check_item(item, "share")
  opts = common.options(opts, 2, "share", SHARE_OPTIONS)
  local oks, whys = check_share_options(self, opts, "share")
  if not ok then return util.invalid(why) end
  if not oks then return util.invalid(whys) end
  if item.type == "folder" and not opts.permission then
    return util.invalid('a folder is shared with a permission: "editor" or "visitor"')
  end
  local body = { id = item.id, type = item.type, permission = opts.permission, expiration = opts.expiration }
  if opts.password then body.isPassword, body.password = true, opts.password end
  if opts.emails then body.emails = opts.emails end
  local doc, res = send_doc(self, request(self, "POST", "/share", body))
  if not doc then return nil, res end
  return share_of(self, doc, res)
end

--- d:update_share(token, { protected, password, permission, expiration }) -> share
--- The server replaces: no expiration clears the expiry, no permission
--- blanks a file share's; no password keeps the old one.  protected is
--- required (the server's rule): say what the share is to be.
function M:update_share(token, opts)
  util.check_type(token, "string", 1, "update_share")
  opts = common.options(opts, 2, "update_share", { "protected", "password", "permission", "expiration" })
  local protected = util.check_field(opts, "protected", "boolean", "update_share")
  local ok, why = check_share_options(self, opts, "update_share")
  if not ok then return util.invalid(why) end
  ok, why = common.check_share_token(token, "token")
  if not ok then return util.invalid(why) end
  if protected == nil then return util.invalid("protected is required: true (with a password) or false") end
  self.engine:add_secret(token) -- in the path: a visitor's key, never shown
  local body = { protected = protected, password = opts.password, permission = opts.permission,
    expiration = opts.expiration }
  local doc, res = send_doc(self, request(self, "PATCH", "/share/" .. token, body))
  if not doc then return nil, res end
  return share_of(self, doc, res)
end

local function check_tokens(tokens)
  if #tokens == 0 then return nil, "tokens must list at least one share token" end
  for i, t in ipairs(tokens) do
    local ok, why = common.check_share_token(t, format("tokens #%d", i))
    if not ok then return nil, why end
  end
  return true
end

--- d:revoke_shares({ token, … }) -> true
--- The server reads only the list (unknown tokens are skipped).
function M:revoke_shares(tokens)
  util.check_type(tokens, "table", 1, "revoke_shares")
  local ok, why = check_tokens(tokens)
  if not ok then return util.invalid(why) end
  local list = {}
  for i, t in ipairs(tokens) do
    list[i] = t
    self.engine:add_secret(t)
  end
  return send_done(self, request(self, "DELETE", "/share/" .. list[1], { tokens = list }))
end

--- d:send_share(token, { emails }) -> true (the server queues the mails)
function M:send_share(token, opts)
  util.check_type(token, "string", 1, "send_share")
  opts = common.options(opts, 2, "send_share", { "emails" })
  util.check_field(opts, "emails", "table", "send_share")
  local ok, why = common.check_share_token(token, "token")
  if ok then ok, why = common.check_emails(opts.emails, "emails") end
  if not ok then return util.invalid(why) end
  self.engine:add_secret(token)
  return send_done(self, request(self, "POST", "/shares/" .. token .. "/notifications", { emails = opts.emails }))
end

-- ---- team folders -------------------------------------------------------------

local LIST_OPTIONS = { "sort", "direction" }

-- Every entry of a team listing (fileapi.pager; 50 a page, fixed by the
-- server).  Always sends page, sort and direction: without page the root
-- fails, without sort no order is stable.  Oldest first by default, so
-- entries added meanwhile come last instead of shifting the pages.
local function team_pages(self, what, id, opts)
  local ok, why = true, nil
  if id ~= nil then ok, why = common.check_uuid(id, "id") end
  local sort = opts.sort or "created_at"
  local direction = (opts.direction or "asc"):upper()
  if ok and sort ~= "created_at" and sort ~= "name" then ok, why = false, 'sort must be "created_at" or "name"' end
  if ok and direction ~= "ASC" and direction ~= "DESC" then ok, why = false, 'direction must be "asc" or "desc"' end
  if not ok then return util.invalid(why) end
  local base = format("/teams/%s/%s?sort=%s&direction=%s", what, id or "all", sort, direction)
  return pager.new(function(page)
    local doc, res = send_doc(self, request(self, "GET", base .. "&page=" .. page))
    if not doc then return nil, res end
    local meta = type(doc.meta) == "table" and doc.meta.paginate
    if type(doc.data) ~= "table" or type(meta) ~= "table" then
      return nil, select(2, self.engine:protocol_error(res, "the response is not a page of a team listing"))
    end
    local items = {}
    for _, entry in ipairs(doc.data) do items[#items + 1] = documents.flatten(entry) end
    local per = tonumber(meta.perPage) or 50
    return items, #doc.data > 0 and #doc.data >= per
      and (tonumber(meta.currentPage) or page) < (tonumber(meta.lastPage) or 0)
  end)
end

--- for item in d:team_folders(id, { sort, direction }) do … end
--- id nil: your top-level team folders; a folder's uuid: its content.
function M:team_folders(id, opts)
  util.check_type(id, "string", 1, "team_folders", true)
  opts = common.options(opts, 2, "team_folders", LIST_OPTIONS)
  return team_pages(self, "folders", id, opts)
end

--- for item in d:shared_with_me(id, { sort, direction }) do … end
function M:shared_with_me(id, opts)
  util.check_type(id, "string", 1, "shared_with_me", true)
  opts = common.options(opts, 2, "shared_with_me", LIST_OPTIONS)
  return team_pages(self, "shared-with-me", id, opts)
end

local function check_invitations(list, allow_empty)
  if type(list) ~= "table" then return nil, "invitations must be a list of { email, permission }" end
  if #list == 0 and not allow_empty then return nil, "invitations must list at least one { email, permission }" end
  local out = {}
  for i, inv in ipairs(list) do
    if type(inv) ~= "table" then return nil, format("invitations #%d must be { email, permission }", i) end
    local ok, why = common.check_email(inv.email, format("invitations #%d: email", i))
    if not ok then return nil, why end
    if not common.MEMBER_PERMISSIONS[inv.permission] then
      return nil, format('invitations #%d: permission must be "can-edit" or "can-view"', i)
    end
    out[i] = { email = inv.email, permission = inv.permission, type = "invitation" }
  end
  return out
end

local function check_members(list)
  if type(list) ~= "table" then return nil, "members must be a list of { id, permission }" end
  local out = {}
  for i, m in ipairs(list) do
    if type(m) ~= "table" or not documents.is_uuid(m.id) then return nil, format("members #%d: id must be a UUID", i) end
    if m.permission ~= "owner" and not common.MEMBER_PERMISSIONS[m.permission] then
      return nil, format('members #%d: permission must be "owner", "can-edit" or "can-view"', i)
    end
    out[i] = { id = m.id, permission = m.permission }
  end
  return out
end

-- A list as a JSON array, also when empty (cjson writes {} for an empty table).
local function json_array(list)
  if #list == 0 then return "[]" end
  return json.encode(list)
end

--- d:create_team_folder(name, { { email, permission }, … }) -> the folder
function M:create_team_folder(name, invitations)
  util.check_type(name, "string", 1, "create_team_folder")
  util.check_type(invitations, "table", 2, "create_team_folder")
  local ok, why = util.check_name("name", name)
  if not ok then return util.invalid(why) end
  local list
  list, why = check_invitations(invitations)
  if not list then return util.invalid(why) end
  local doc, res = send_doc(self, request(self, "POST", "/teams/folders", { name = name, invitations = list }))
  if not doc then return nil, res end
  return common.flat(self, doc, res, "a folder document")
end

--- d:update_team_folder(id, { invitations, members }) -> the folder
--- The server syncs to both lists: a member left out is removed, the
--- owner's own entry too.  Start from relationships.members as read.
function M:update_team_folder(id, opts)
  util.check_type(id, "string", 1, "update_team_folder")
  opts = common.options(opts, 2, "update_team_folder", { "invitations", "members" })
  local ok, why = common.check_uuid(id, "id")
  if not ok then return util.invalid(why) end
  if opts.invitations == nil or opts.members == nil then
    return util.invalid("invitations and members are both required (the server syncs to them; {} for none)")
  end
  local invitations, members
  invitations, why = check_invitations(opts.invitations, true)
  if not invitations then return util.invalid(why) end
  members, why = check_members(opts.members)
  if not members then return util.invalid(why) end
  local doc, res = send_doc(self, request(self, "PATCH", "/teams/folders/" .. id,
    '{"invitations":' .. json_array(invitations) .. ',"members":' .. json_array(members) .. "}"))
  if not doc then return nil, res end
  return common.flat(self, doc, res, "a folder document")
end

--- d:dissolve_team_folder(id) -> true (members and invitations go, the content stays)
function M:dissolve_team_folder(id)
  util.check_type(id, "string", 1, "dissolve_team_folder")
  local ok, why = common.check_uuid(id, "id")
  if not ok then return util.invalid(why) end
  return send_done(self, request(self, "DELETE", "/teams/folders/" .. id))
end

-- ---- file requests ------------------------------------------------------------

--- d:request_files{ name, email, notes, folder_id } -> the upload request, flattened
--- No folder_id: the home folder (an empty one fails the server's check).
function M:request_files(spec)
  util.check_type(spec, "table", 1, "request_files")
  util.check_keys(spec, "request_files", { "name", "email", "notes", "folder_id" })
  for _, k in ipairs({ "name", "email", "notes", "folder_id" }) do util.check_field(spec, k, "string", "request_files") end
  local ok, why = true, nil
  if spec.name then ok, why = util.check_name("name", spec.name) end
  if ok and spec.email then ok, why = common.check_email(spec.email, "email") end
  if ok and spec.notes and (#spec.notes > 10000 or not util.is_utf8(spec.notes)) then
    ok, why = false, "notes must be valid UTF-8 of at most 10000 bytes"
  end
  if ok then ok, why = common.check_uuid(spec.folder_id, "folder_id", true) end
  if not ok then return util.invalid(why) end
  local doc, res = send_doc(self, request(self, "POST", "/requests",
    { name = spec.name, email = spec.email, notes = spec.notes, folder_id = spec.folder_id }))
  if not doc then return nil, res end
  return common.flat(self, doc, res, "an upload request")
end

return M
