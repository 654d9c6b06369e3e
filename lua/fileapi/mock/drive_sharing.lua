-- The owner's share links, team folders and file requests for the mock,
-- and the router of every owner route (mock.drive holds the account and
-- item calls).  A share made here is a visitor's share in mock.filesro's
-- table: the same store.
local cjson = require "cjson"
local drive = require "fileapi.mock.drive"
local filesro = require "fileapi.mock.filesro"
local http = require "fileapi.mock.http"

local H = drive.handlers
local json, typed, success, invalid = H.json, H.typed, H.success, H.invalid
local read_json, is_uuid, is_email, present, find = H.read_json, H.is_uuid, H.is_email, H.present, H.find

local M = {}

-- ---- share links --------------------------------------------------------------

local function share_rules(doc, errors, update)
  if update then
    if type(doc.protected) ~= "boolean" then errors.protected = { "The protected field is required." } end
    if doc.protected == true and not present(doc.password) then
      errors.password = { "The password field is required when protected is true." }
    end
  else
    if not is_uuid(doc.id) then errors.id = { "The id must be a valid UUID." } end
    if type(doc.type) ~= "string" then errors.type = { "The type field is required." } end
    if doc.isPassword ~= nil and type(doc.isPassword) ~= "boolean" then
      errors.isPassword = { "The is password field must be true or false." }
    end
    if doc.isPassword == true and not present(doc.password) then
      errors.password = { "The password field is required when is password is true." }
    end
  end
  if present(doc.expiration) and math.type(doc.expiration) ~= "integer"
      and not (type(doc.expiration) == "number" and doc.expiration == math.floor(doc.expiration)) then
    errors.expiration = { "The expiration must be an integer." }
  end
  if present(doc.permission) and type(doc.permission) ~= "string" then
    errors.permission = { "The permission must be a string." }
  end
  for i, e in ipairs(type(doc.emails) == "table" and doc.emails or {}) do
    if not is_email(e) then errors["emails." .. (i - 1)] = { "The emails." .. (i - 1) .. " must be a valid email address." } end
  end
end

local function set_expiry(sh, hours)
  if present(hours) and hours > 0 then
    sh.expire_in, sh.expires_at = math.floor(hours), os.time() + math.floor(hours) * 3600
  else
    sh.expire_in, sh.expires_at = 0, nil
  end
end

local function share_create(state, req)
  local doc = read_json(req)
  local errors = {}
  share_rules(doc, errors)
  if next(errors) then return invalid(errors) end
  local kind = doc.type == "folder" and "folder" or "file"
  local rec = find(state, { type = kind, id = doc.id })
  if not rec or rec.deleted_at then return typed(200, H.NO_ENTRY) end
  if H.share_of_item(state, rec.id) then return typed(422, "The item is currently shared.") end
  if kind == "folder" and not present(doc.permission) then return typed(422, "The permission field for folder is required.") end
  if H.foreign(state, rec) then return json(403, H.UNAUTHORIZED) end
  local token = H.random_text(16)
  local sh = { id = H.uuid(), token = token, permission = present(doc.permission) and doc.permission or nil,
    protected = doc.isPassword == true, password = doc.password, cookie = "share_session=" .. H.random_text(24),
    expired = false, can_create = not state.config.drive_plan_forbids, item_type = kind,
    root = kind == "folder" and rec.id or nil, item_id = rec.id }
  set_expiry(sh, doc.expiration)
  state.shares[token] = sh
  for _, e in ipairs(type(doc.emails) == "table" and doc.emails or {}) do
    state.drive.mails[#state.drive.mails + 1] = { to = e, token = token }
  end
  return json(201, { data = H.share_data(sh) })
end

local function share_update(state, req, token)
  local sh = state.shares[token]
  if not sh or not sh.item_id then return H.not_found_id(token) end
  local doc = read_json(req)
  local errors = {}
  share_rules(doc, errors, true)
  if next(errors) then return invalid(errors) end
  if sh.item_type == "folder" and not present(doc.permission) then
    return typed(422, "The permission field for folder is required.")
  end
  -- replaces: what is left out is cleared (the password is kept)
  sh.protected = doc.protected
  if present(doc.password) then sh.password = doc.password end
  sh.permission = present(doc.permission) and doc.permission or nil
  set_expiry(sh, doc.expiration)
  return json(200, { data = H.share_data(sh) })
end

local function share_revoke(state, req)
  local doc = read_json(req)
  if type(doc.tokens) ~= "table" or next(doc.tokens) == nil then
    return invalid({ tokens = { "The tokens field is required." } })
  end
  for _, t in ipairs(doc.tokens) do -- the path's token is never read
    local sh = type(t) == "string" and state.shares[t]
    if sh and sh.item_id then state.shares[t] = nil end
  end
  return success(200, "The share links was revoked successfully.")
end

local function share_mail(state, req, token)
  local doc = read_json(req)
  local errors = {}
  if type(doc.emails) ~= "table" or next(doc.emails) == nil then errors.emails = { "The emails field is required." } end
  for i, e in ipairs(type(doc.emails) == "table" and doc.emails or {}) do
    if not is_email(e) then errors["emails." .. (i - 1)] = { "The emails." .. (i - 1) .. " must be a valid email address." } end
  end
  if next(errors) then return invalid(errors) end
  for _, e in ipairs(doc.emails) do state.drive.mails[#state.drive.mails + 1] = { to = e, token = token } end
  return success(200, "The share link was shared via email successfully.")
end

-- ---- team folders -------------------------------------------------------------

local PER_PAGE = 50

local function top_of(state, f)
  while f and f.parent_id and state.folders[f.parent_id] do f = state.folders[f.parent_id] end
  return f
end

local function sorted(list, req)
  local key = req.query.sort == "name" and "name" or "created_at"
  local desc = req.query.direction == "DESC"
  table.sort(list, function(a, b)
    local x, y = a.rec[key] or "", b.rec[key] or ""
    if x == y then x, y = a.rec.seq or 0, b.rec.seq or 0 end
    if desc then return x > y end
    return x < y
  end)
  return list
end

local function team_entries(state, which, id, req)
  local folders, files = {}, {}
  for _, f in pairs(state.folders) do
    local wanted
    if id == nil then
      wanted = f.parent_id == nil and (which == "folders" and f.team ~= nil and not f.shared_with_me
        or which == "shared-with-me" and f.shared_with_me ~= nil)
    else
      wanted = f.parent_id == id
    end
    if wanted then folders[#folders + 1] = { rec = f, data = H.folder_data(state, f) } end
  end
  if id then
    for _, f in pairs(state.files) do
      if f.parent_id == id then files[#files + 1] = { rec = f, data = H.file_data(f) } end
    end
  end
  local out = sorted(folders, req)
  for _, e in ipairs(sorted(files, req)) do out[#out + 1] = e end -- folders first
  return out
end

local function team_list(state, req, which, id_text)
  local id = is_uuid(id_text) and id_text:lower() or nil
  local top
  if id then
    local f = state.folders[id]
    top = f and top_of(state, f)
    if not top or not top.team and not top.shared_with_me then return H.not_found_id(id_text) end
    if top.shared_with_me and top.shared_with_me.member == false then return typed(403, "Access Denied") end
  end
  local page = tonumber(req.query.page)
  if not page and not id then return json(500, { message = "Server Error" }) end
  local all = team_entries(state, which, id, req)
  local total = #all
  for _, f in pairs(state.files) do if f.deleted_at and f.parent_id == id then total = total + 1 end end
  local last = math.max(1, math.ceil(#all / PER_PAGE))
  local data = {}
  local first, stop = 1, #all
  if page then first, stop = (page - 1) * PER_PAGE + 1, math.min(#all, page * PER_PAGE) end
  for i = first, stop do data[#data + 1] = { data = all[i].data } end
  local url = "http://files.ro" .. req.target
  local current = page or 0
  return json(200, { data = #data > 0 and data or cjson.empty_array or {},
    links = { first = url .. "&page=1", last = url .. "&page=" .. last,
      next = current < last and (url .. "&page=" .. (current + 1)) or cjson.null,
      prev = current > 1 and (url .. "&page=" .. (current - 1)) or (page and cjson.null or url .. "&page=-1") },
    meta = { paginate = { currentPage = current, from = 1, lastPage = last, path = url, perPage = PER_PAGE,
      to = PER_PAGE, total = total },
      teamFolder = top and H.folder_data(state, top) or cjson.null,
      root = id and H.folder_data(state, state.folders[id]) or cjson.null } })
end

local function invitation_rules(list, errors, required)
  if required and (type(list) ~= "table" or next(list) == nil) then
    errors.invitations = { "The invitations field is required." }
    return
  end
  if type(list) ~= "table" then
    errors.invitations = { "The invitations must be an array." }
    return
  end
  for i, inv in ipairs(list) do
    local k = "invitations." .. (i - 1)
    if type(inv) ~= "table" or not is_email(inv.email) then
      errors[k .. ".email"] = { "The " .. k .. ".email must be a valid email address." }
    elseif type(inv.permission) ~= "string" then errors[k .. ".permission"] = { "The " .. k .. ".permission field is required." }
    elseif type(inv.type) ~= "string" then errors[k .. ".type"] = { "The " .. k .. ".type field is required." } end
  end
end

local function over_members(state, n)
  local limit = state.config.drive_members_limit
  return limit and n > limit
end

local function team_create(state, req)
  local doc = read_json(req)
  local errors = {}
  if type(doc.name) ~= "string" or doc.name == "" then errors.name = { "The name field is required." } end
  invitation_rules(doc.invitations, errors, true)
  if next(errors) then return invalid(errors) end
  if state.config.drive_plan_forbids then return typed(401, "This user action is not allowed.") end
  if over_members(state, #doc.invitations) then return typed(401, "You exceed your members limit.") end
  local f = filesro.add_folder(state, doc.name)
  f.team = { members = {}, invitations = {} }
  for i, inv in ipairs(doc.invitations) do f.team.invitations[i] = { email = inv.email, permission = inv.permission } end
  return json(201, { data = H.folder_data(state, f) })
end

local function team_update(state, req, id)
  local f = is_uuid(id) and state.folders[id:lower()]
  if not f or not f.team then return H.not_found_id(id) end
  local doc = read_json(req)
  local errors = {}
  invitation_rules(doc.invitations, errors, false)
  if type(doc.members) ~= "table" then errors.members = { "The members field must be present." } end
  for i, m in ipairs(type(doc.members) == "table" and doc.members or {}) do
    local k = "members." .. (i - 1) .. ".id"
    if type(m) ~= "table" or not is_uuid(m.id) then errors[k] = { "The " .. k .. " must be a valid UUID." } end
  end
  if next(errors) then return invalid(errors) end
  if H.foreign(state, f) then return json(403, H.UNAUTHORIZED) end
  if over_members(state, #doc.invitations + #doc.members) then return typed(401, "You exceed your members limit.") end
  -- synced to the lists: who is left out goes, the owner's own entry too
  f.team.members, f.team.invitations = {}, {}
  f.team.owner_dropped = true
  for _, m in ipairs(doc.members) do
    if m.id == drive.OWNER.id then f.team.owner_dropped = false
    else f.team.members[#f.team.members + 1] = { id = m.id, permission = m.permission } end
  end
  for i, inv in ipairs(doc.invitations) do f.team.invitations[i] = { email = inv.email, permission = inv.permission } end
  return json(201, { data = H.folder_data(state, f) })
end

local function team_dissolve(state, id)
  local f = is_uuid(id) and state.folders[id:lower()]
  if not f then return H.not_found_id(id) end
  if not f.team then return typed(200, "You're trying to access non-team folder.") end
  if H.foreign(state, f) then return json(403, H.UNAUTHORIZED) end
  f.team = nil
  return success(200, "The team was dissolved.")
end

-- ---- file requests ------------------------------------------------------------

local function request_create(state, req)
  local doc = read_json(req)
  local errors = {}
  -- "" arrives as null and fails the uuid rule (Laravel's ConvertEmptyStringsToNull)
  if doc.folder_id ~= nil and not is_uuid(doc.folder_id) then errors.folder_id = { "The folder id must be a valid UUID." } end
  if present(doc.email) and not is_email(doc.email) then errors.email = { "The email must be a valid email address." } end
  for _, k in ipairs({ "name", "notes" }) do
    if present(doc[k]) and type(doc[k]) ~= "string" then errors[k] = { "The " .. k .. " must be a string." } end
  end
  if next(errors) then return invalid(errors) end
  local folder = doc.folder_id and state.folders[doc.folder_id:lower()]
  if doc.folder_id and not folder then return H.not_found_id(doc.folder_id) end
  if folder and H.foreign(state, folder) then return json(403, H.UNAUTHORIZED) end
  local r = { id = H.uuid(), folder_id = folder and folder.id, email = doc.email, notes = doc.notes, name = doc.name }
  state.drive.requests[r.id] = r
  if doc.email then state.drive.mails[#state.drive.mails + 1] = { to = doc.email, request = r.id } end
  return json(201, { data = { id = r.id, type = "upload-request", attributes = {
    folder_id = r.folder_id or cjson.null, status = cjson.null, email = r.email or cjson.null,
    notes = r.notes or cjson.null, name = r.name or cjson.null, created_at = H.date(),
  }, relationships = {
    folder = folder and { data = H.folder_data(state, folder) } or nil,
    user = { data = { id = drive.OWNER.id, type = "user", attributes = { name = drive.OWNER.name } } },
  } } })
end

-- ---- routing ----------------------------------------------------------------

local ROUTES = {
  { "POST", "^/user/tokens$", function(s, r) return H.create_token(s, r) end },
  { "DELETE", "^/user/tokens/([^/]+)$", function(s, _, id) return H.delete_token(s, id) end },
  { "GET", "^/user$", function(s) return H.user(s) end },
  { "PATCH", "^/items/([^/]+)$", function(s, r, id) return H.rename(s, r, id) end },
  { "POST", "^/moves$", function(s, r) return H.move(s, r) end },
  { "DELETE", "^/items$", function(s, r) return H.delete(s, r) end },
  { "POST", "^/trash/restore$", function(s, r) return H.restore(s, r) end },
  { "GET", "^/browse/navigation$", function(s, r) return H.navigation(s, r) end },
  { "POST", "^/share$", share_create },
  { "PATCH", "^/share/([^/]+)$", share_update },
  { "DELETE", "^/share/([^/]+)$", function(s, r) return share_revoke(s, r) end },
  { "POST", "^/shares/([^/]+)/notifications$", share_mail },
  { "GET", "^/teams/folders/([^/]+)$", function(s, r, id) return team_list(s, r, "folders", id) end },
  { "GET", "^/teams/shared%-with%-me/([^/]+)$", function(s, r, id) return team_list(s, r, "shared-with-me", id) end },
  { "POST", "^/teams/folders$", team_create },
  { "PATCH", "^/teams/folders/([^/]+)$", team_update },
  { "DELETE", "^/teams/folders/([^/]+)$", function(s, _, id) return team_dissolve(s, id) end },
  { "POST", "^/requests$", request_create },
}

local function auth_failure(req)
  if not (req.headers.accept or ""):find("application/json", 1, true) then
    return 302, { { "Location", "/" }, { "Content-Type", "text/html" } }, "<html><body>Redirecting to /</body></html>"
  end
  return json(401, { message = "Unauthenticated." })
end

local function authorized(state, req)
  local token = (req.headers.authorization or ""):match("^Bearer (.+)$")
  return token and state.drive.tokens[token] and token
end

-- Every /api/v1/ request but the visitor's share calls (mock.filesro).
function M.handle(state, conn, req)
  local path = req.path:match("^/api/v1(/.*)$") or ""
  local visitor = path:match("^/shares/[^/]+/(%a+)$")
  if visitor and visitor ~= "notifications" then return filesro.handle(state, conn, req) end
  if req.method == "POST" and path == "/login" then
    if not http.read_body(conn, req, state.keep) then return nil end
    return H.login(state, req)
  end
  local token = authorized(state, req)
  if not token then
    if req.length <= 1024 * 1024 then http.read_body(conn, req, state.keep) end
    return auth_failure(req)
  end
  local over, wait = H.rate_limited(state, token, state.config.drive_rate_limit, state.config.drive_rate_window)
  if over then
    if req.length <= 1024 * 1024 then http.read_body(conn, req, state.keep) end
    return json(429, { message = "Too Many Attempts." }, { { "Retry-After", tostring(wait) } })
  end
  if req.method == "POST" and path == "/uploads" then return H.upload(state, conn, req) end
  if req.method == "GET" and path == "/zip" then return H.zip(state, conn, req) end
  if not http.read_body(conn, req, state.keep) then return nil end
  for _, r in ipairs(ROUTES) do
    local captured = r[1] == req.method and { path:match(r[2]) }
    if captured and #captured > 0 then return r[3](state, req, table.unpack(captured)) end
  end
  return H.not_found_id(path)
end

return M
