-- files.ro for the account's owner (Bearer token), after the service's
-- reference for the account's owner: upstream statuses and order of checks, the typed
-- 200/401/422 bodies, Laravel's 422.  One store with the share visitor's
-- routes (mock.filesro): a folder the owner shares is the visitor's share,
-- a file a visitor uploads is the owner's.  Zips are built (stored, with
-- real CRC-32s) and streamed with Content-Length and no ranges; a file
-- made by /_mock/drive_big_file is sparse, all zeros, its CRC computed by
-- the zero-run operator rather than read.
local cjson = require "cjson"
local http = require "fileapi.mock.http"
local filesro = require "fileapi.mock.filesro"
local zip = require "fileapi.mock.zip"
local accounts = require "fileapi.mock.accounts"
local socket = require "socket"

local M = {}

local uuid, date, UUID = filesro.uuid, filesro.date, filesro.UUID

M.OWNER = { id = "00000000-0000-4000-8000-000000000001", email = accounts.OWNER_EMAIL,
  password = accounts.OWNER_PASSWORD, name = "Jane Doe" }
M.TOKEN = accounts.OWNER_TOKEN
M.FOREIGN_ID = "33333333-3333-4333-8333-333333333333"

local function json(status, doc, headers)
  headers = headers or {}
  headers[#headers + 1] = { "Content-Type", "application/json" }
  return status, headers, cjson.encode(doc)
end

local function typed(status, message) return json(status, { type = "error", message = message }) end
local function success(status, message) return json(status, { type = "success", message = message }) end
local function invalid(errors)
  local first, n = nil, 0
  for _, v in pairs(errors) do
    n = n + 1
    first = first or v[1]
  end
  local message = first .. (n > 1 and (" (and %d more errors)"):format(n - 1) or "")
  return json(422, { message = message, errors = errors })
end
local function not_found_id(id)
  return typed(404, "We couldn't find the resource you requested with id " .. tostring(id or ""))
end
local NO_ENTRY = "The requested entry wasn't found."
local UNAUTHORIZED = { message = "This action is unauthorized." }

local function random_text(n)
  local chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  local out = {}
  for i = 1, n do
    local c = math.random(#chars)
    out[i] = chars:sub(c, c)
  end
  return table.concat(out)
end

function M.reset(state)
  state.drive = {
    tokens = { [M.TOKEN] = { id = 1, name = "tests" } }, next_token = 2, foreign_tokens = { [99] = true },
    mails = {}, requests = {}, login_window = nil, windows = {},
  }
  filesro.add_folder(state, "Someone else's", nil, M.FOREIGN_ID).owner = "other"
end

-- ---- documents --------------------------------------------------------------

local function count_children(state, folder_id)
  local items, trashed = 0, 0
  for _, list in ipairs({ state.folders, state.files }) do
    for _, it in pairs(list) do
      if it.parent_id == folder_id then
        if it.deleted_at then trashed = trashed + 1 else items = items + 1 end
      end
    end
  end
  return items, trashed
end

local function share_of_item(state, id)
  for _, sh in pairs(state.shares) do
    if sh.root == id or sh.item_id == id then return sh end
  end
end

local function share_data(sh)
  return { id = sh.id, type = "shares", attributes = {
    permission = sh.permission or cjson.null, protected = sh.protected, item_id = sh.item_id or sh.root,
    expire_in = sh.expire_in or 0, token = sh.token, link = "https://files.ro/share/" .. sh.token,
    type = sh.item_type or "folder", created_at = date(),
  } }
end

local function folder_data(state, f)
  local items, trashed = count_children(state, f.id)
  local rel = {}
  if f.team then
    local members = { { id = M.OWNER.id, type = "member", attributes = { permission = "owner", email = M.OWNER.email } } }
    for _, m in ipairs(f.team.members) do
      members[#members + 1] = { id = m.id, type = "member", attributes = { permission = m.permission } }
    end
    local invitations = {}
    for i, inv in ipairs(f.team.invitations) do
      invitations[i] = { type = "invitation", attributes = { email = inv.email, permission = inv.permission } }
    end
    rel.members = { data = members }
    rel.invitations = { data = invitations }
  end
  local sh = share_of_item(state, f.id)
  if sh then rel.shared = { data = share_data(sh) } end
  return { id = f.id, type = "folder", attributes = {
    name = f.name, color = cjson.null, emoji = cjson.null, filesize = cjson.null, isTeamFolder = f.team ~= nil,
    items = items, trashed_items = trashed, parent_id = f.parent_id or cjson.null,
    created_at = f.created_at, updated_at = f.created_at, deleted_at = f.deleted_at or cjson.null,
  }, relationships = rel }
end

local function file_data(f)
  return { id = f.id, type = "file", attributes = {
    name = f.name, basename = f.basename, mimetype = f.extension, filesize = ("%.1f MB"):format(f.size / 1e6),
    file_url = "https://files.ro/file/" .. f.basename, parent_id = f.parent_id or cjson.null,
    created_at = f.created_at or date(), deleted_at = f.deleted_at or cjson.null,
  } }
end

-- ---- checks -------------------------------------------------------------------

local function read_json(req)
  local ok, doc = pcall(cjson.decode, req.body or "")
  if ok and type(doc) == "table" then return doc end
  return {}
end

local function is_uuid(v) return type(v) == "string" and v:match(UUID) ~= nil end
local function is_email(v) return type(v) == "string" and v:match("^[^%s@]+@[^%s@]+%.[^%s@]+$") ~= nil end
local function present(v) return v ~= nil and v ~= cjson.null end

local function item_rules(items, errors, need_force)
  if type(items) ~= "table" or next(items) == nil then
    errors.items = { "The items field is required." }
    return
  end
  for i, it in ipairs(items) do
    local k = "items." .. (i - 1)
    if type(it) ~= "table" then
      errors[k] = { "The " .. k .. " must be an array." }
    else
      if type(it.type) ~= "string" then errors[k .. ".type"] = { "The " .. k .. ".type field is required." } end
      if not is_uuid(it.id) then errors[k .. ".id"] = { "The " .. k .. ".id must be a valid UUID." } end
      if need_force and type(it.force_delete) ~= "boolean" then
        errors[k .. ".force_delete"] = { "The " .. k .. ".force_delete field is required." }
      end
    end
  end
end

local function find(state, it)
  local list = it.type == "folder" and state.folders or state.files
  local found = type(it.id) == "string" and list[it.id:lower()]
  return found
end

local function foreign(state, rec)
  local f = rec
  while f do
    if f.owner == "other" then return true end
    f = state.folders[f.parent_id]
  end
  return false
end

-- Over a per-token fixed window (config drive_rate_limit in
-- drive_rate_window seconds, a minute by default): 429.
local function rate_limited(state, key, limit, window)
  if not limit then return false end
  window = window or 60
  local now = socket.gettime()
  local w = state.drive.windows[key]
  if not w or now - w.start >= window then w = { start = now, count = 0 } end
  w.count = w.count + 1
  state.drive.windows[key] = w
  if w.count > limit then return true, math.max(1, math.ceil(w.start + window - now)) end
  return false
end

-- ---- account ------------------------------------------------------------------

local function login(state, req)
  local over, wait = rate_limited(state, "login", state.config.login_rate_limit)
  if over then return json(429, { message = "Too Many Attempts." }, { { "Retry-After", tostring(wait) } }) end
  local doc = read_json(req)
  local errors = {}
  if not present(doc.email) then errors.email = { "The email field is required." }
  elseif not is_email(doc.email) then errors.email = { "The email must be a valid email address." } end
  if not present(doc.password) then errors.password = { "The password field is required." }
  elseif type(doc.password) ~= "string" then errors.password = { "The password must be a string." } end
  if next(errors) then return invalid(errors) end
  if doc.email ~= M.OWNER.email then return not_found_id("") end
  if doc.password ~= M.OWNER.password then return invalid({ email = { "The provided credentials are incorrect." } }) end
  local id = state.drive.next_token
  state.drive.next_token = id + 1
  local token = id .. "|" .. random_text(40)
  state.drive.tokens[token] = { id = id, name = "login" }
  return json(200, { type = "success", message = "You were successfully signed in.", data = { token = token } })
end

local function user_doc(state)
  local used = 0
  for _, f in pairs(state.files) do used = used + f.size end
  local allowed = not state.config.drive_plan_forbids
  return json(200, { data = { id = M.OWNER.id, type = "user", attributes = {
    email = M.OWNER.email, role = "user", name = M.OWNER.name, avatar = cjson.null,
    storage = { used = used, used_formatted = ("%.1f MB"):format(used / 1e6) },
    created_at = date(), updated_at = date(),
  }, relationships = { settings = { data = { type = "settings", attributes = { timezone = "Europe/Bucharest" } } } } },
  meta = { restrictions = { canUpload = allowed, canCreateFolder = allowed, canCreateTeamFolder = allowed,
    reason = allowed and cjson.null or "This user action is not allowed." } } })
end

local function create_token(state, req)
  local doc = read_json(req)
  if type(doc.name) ~= "string" or #doc.name < 3 then
    return invalid({ name = { present(doc.name) and "The name must be at least 3 characters."
      or "The name field is required." } })
  end
  local id = state.drive.next_token
  state.drive.next_token = id + 1
  local token = id .. "|" .. random_text(40)
  state.drive.tokens[token] = { id = id, name = doc.name }
  return json(201, { accessToken = { id = id, name = doc.name, abilities = { "*" }, expires_at = cjson.null,
    tokenable_id = M.OWNER.id, created_at = date(), updated_at = date() }, plainTextToken = token })
end

local function delete_token(state, id_text)
  local id = tonumber(id_text)
  if state.drive.foreign_tokens[id] then return typed(401, "You are not entitled to delete this token.") end
  for token, rec in pairs(state.drive.tokens) do
    if rec.id == id then
      state.drive.tokens[token] = nil
      return json(200, "The token was successfully deleted.")
    end
  end
  return not_found_id(id_text)
end

-- ---- items --------------------------------------------------------------------

local function upload(state, conn, req)
  if (req.headers["content-type"] or ""):find("application/json", 1, true) then
    if not http.read_body(conn, req, state.keep) then return nil end
    local doc = read_json(req)
    local errors = {}
    if present(doc.parent_id) and not is_uuid(doc.parent_id) then
      errors.parent_id = { "The parent id must be a valid UUID." }
    end
    for i, u in ipairs(type(doc.urls) == "table" and doc.urls or {}) do
      local k = "urls." .. (i - 1)
      if type(u) ~= "string" or not u:match("^https?://") then errors[k] = { "The " .. k .. " must be a valid URL." } end
    end
    if next(errors) then return invalid(errors) end
    if type(doc.urls) ~= "table" then return json(500, { message = "Server Error" }) end
    state.drive.remote = doc.urls
    return success(201, "Files were successfully added to the upload queue.")
  end
  return filesro.receive_upload(state, conn, req, { root = nil,
    before_store = function() end,
    before_create = function(parent_id, size)
      if parent_id and not state.folders[parent_id] then return json(500, { message = "Server Error" }) end
      local cap = state.config.upload_limit
      if cap and size > cap then return json(413, { message = "The file is too large." }) end
      if state.config.drive_plan_forbids then return typed(401, "This user action is not allowed.") end
    end })
end

local function rename(state, req, id)
  local doc = read_json(req)
  local errors = {}
  if type(doc.name) ~= "string" or doc.name == "" then errors.name = { "The name field is required." } end
  if type(doc.type) ~= "string" then errors.type = { "The type field is required." } end
  if next(errors) then return invalid(errors) end
  local rec = find(state, { type = doc.type == "folder" and "folder" or "file", id = id })
  if not rec then return typed(200, NO_ENTRY) end
  if foreign(state, rec) then return json(403, UNAUTHORIZED) end
  rec.name = doc.name
  return json(200, { data = doc.type == "folder" and folder_data(state, rec) or file_data(rec) })
end

local function move(state, req)
  local doc = read_json(req)
  local errors = {}
  item_rules(doc.items, errors)
  if present(doc.to_id) and not is_uuid(doc.to_id) then errors.to_id = { "The to id must be a valid UUID." } end
  if next(errors) then return invalid(errors) end
  local to = present(doc.to_id) and doc.to_id:lower() or nil
  for _, it in ipairs(doc.items) do -- not atomic: earlier items stay moved
    local rec = find(state, it)
    if not rec then return typed(200, NO_ENTRY) end
    if foreign(state, rec) then return json(403, UNAUTHORIZED) end
    rec.parent_id = to
  end
  return success(200, "Items was successfully moved.")
end

local function each_inside(state, folder_id, fn)
  for _, list in ipairs({ state.folders, state.files }) do
    for _, it in pairs(list) do
      if it.parent_id == folder_id then
        fn(it, list)
        if list == state.folders then each_inside(state, it.id, fn) end
      end
    end
  end
end

local function drop(state, rec, list)
  list[rec.id] = nil
  if list == state.files then
    if rec.deleted_at then os.remove(rec.path or "") else state.drive.orphaned = (state.drive.orphaned or 0) + 1 end
  end
  local sh = share_of_item(state, rec.id)
  if sh then state.shares[sh.token] = nil end
end

local function delete(state, req)
  local doc = read_json(req)
  local errors = {}
  item_rules(doc.items, errors, true)
  if next(errors) then return invalid(errors) end
  for _, it in ipairs(doc.items) do
    local rec = find(state, it)
    if rec then -- unknown ids are skipped
      if foreign(state, rec) then return json(403, UNAUTHORIZED) end
      local list = it.type == "folder" and state.folders or state.files
      if it.force_delete then
        -- rows go; the bytes only of files already in the trash
        if list == state.folders then each_inside(state, rec.id, function(x, l) drop(state, x, l) end) end
        drop(state, rec, list)
      else
        rec.deleted_at = date()
        if list == state.folders then each_inside(state, rec.id, function(x) x.deleted_at = x.deleted_at or date() end) end
        local sh = share_of_item(state, rec.id)
        if sh then state.shares[sh.token] = nil end
      end
    end
  end
  return success(200, "Items was successfully deleted.")
end

local function restore(state, req)
  local doc = read_json(req)
  local errors = {}
  item_rules(doc.items, errors)
  if doc.to_home ~= nil and type(doc.to_home) ~= "boolean" then
    errors.to_home = { "The to home field must be true or false." }
  end
  if next(errors) then return invalid(errors) end
  for _, it in ipairs(doc.items) do
    local rec = find(state, it)
    if not rec then return typed(200, NO_ENTRY) end
    rec.deleted_at = nil
    if it.type == "folder" then each_inside(state, rec.id, function(x) x.deleted_at = nil end) end
    if doc.to_home then rec.parent_id = nil end
  end
  return success(200, "The item was successfully restored.")
end

-- ---- zip --------------------------------------------------------------------------

local function slug(s)
  return (s:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""))
end

local function zip_entries(state, pairs_list)
  local entries, seen = {}, {}
  local function add(name, f)
    if seen[name] or not f.path then return end -- a second entry with one path is dropped
    seen[name] = true
    entries[#entries + 1] = { name = name, file = f }
  end
  local function folder(prefix, id)
    local names = {}
    for _, f in pairs(state.files) do
      if f.parent_id == id and not f.deleted_at then names[#names + 1] = f end
    end
    table.sort(names, function(a, b) return a.name < b.name end)
    for _, f in ipairs(names) do add(prefix .. f.name .. "." .. f.extension, f) end
    for _, sub in pairs(state.folders) do
      if sub.parent_id == id and not sub.deleted_at then folder(prefix .. sub.name .. "/", sub.id) end
    end
  end
  for _, p in ipairs(pairs_list) do
    local rec = find(state, p)
    if rec and not rec.deleted_at and p.type == "file" then add(rec.name .. "." .. rec.extension, rec) end
    if rec and not rec.deleted_at and p.type == "folder" then folder(rec.name .. "/", rec.id) end
  end
  return entries
end

local function zip_download(state, conn, req)
  http.read_body(conn, req, 65536)
  local raw = req.query.items
  if not raw then return json(500, { message = "Server Error" }) end
  local list = {}
  for piece in raw:gmatch("[^,]+") do
    local id, kind = piece:match("^([^|]*)|(.*)$")
    if not id then return typed(422, "Incorrect argument format.") end
    if not is_uuid(id) then return invalid({ items = { "The items must be valid UUIDs." } }) end
    list[#list + 1] = { id = id, type = kind }
  end
  for _, p in ipairs(list) do
    local rec = find(state, p)
    if rec and foreign(state, rec) then return json(403, { message = "Access Denied" }) end
  end
  local entries = zip_entries(state, list)
  local archive = zip.plan(entries)
  local name = "files.zip"
  if #list == 1 and list[1].type == "folder" and find(state, list[1]) then name = slug(find(state, list[1]).name) .. ".zip" end
  conn:send(http.response_head(200, { { "Content-Type", "application/x-zip" },
    { "Content-Disposition", "attachment; filename*=UTF-8''" .. name },
    { "Cache-Control", "public, must-revalidate" } }, archive.size, false))
  local drop_at = state.config.zip_drop_at
  if drop_at then state.config.zip_drop_at = nil end
  state.drive.zips = (state.drive.zips or 0) + 1
  local complete = zip.send(conn, archive, drop_at and math.floor(drop_at))
  return "streamed", complete
end

-- ---- navigation -------------------------------------------------------------------

local function nav_nodes(state, parent_id, sort, desc, filter)
  local list = {}
  for _, f in pairs(state.folders) do
    if f.parent_id == parent_id and not f.deleted_at and filter(f) then list[#list + 1] = f end
  end
  table.sort(list, function(a, b)
    local x, y = a[sort] or a.name, b[sort] or b.name
    if x == y then x, y = a.id, b.id end
    if desc then return x > y end
    return x < y
  end)
  local out = {}
  for i, f in ipairs(list) do
    local items, trashed = count_children(state, f.id)
    out[i] = { id = f.id, parent_id = f.parent_id or cjson.null, name = f.name, team_folder = f.team ~= nil,
      items = items, trashed_items = trashed, folders = nav_nodes(state, f.id, sort, desc, function() return true end) }
    if #out[i].folders == 0 then out[i].folders = cjson.empty_array or {} end
  end
  return out
end

local function navigation(state, req)
  local sort = req.query.sort == "name" and "name" or "created_at"
  local desc = req.query.direction ~= "ASC"
  local own = function(f) return f.owner ~= "other" and not f.shared_with_me end
  local function section(name, location, filter, open)
    local folders = nav_nodes(state, nil, sort, desc, filter)
    return { name = name, location = location, folders = #folders > 0 and folders or cjson.empty_array or {},
      isMovable = open, isOpen = open }
  end
  return json(200, {
    section("Files", "files", function(f) return own(f) and not f.team end, true),
    section("Team Folders", "team-folders", function(f) return own(f) and f.team ~= nil end, false),
    section("Shared with Me", "shared-with-me", function(f) return f.shared_with_me ~= nil end, false),
  })
end

-- ---- admin (/_mock/drive…) ---------------------------------------------------

-- A sparse file of `size` zeros as the owner's file (for zips of a GiB).
function M.big_file(state, spec)
  local id = uuid()
  local path = state.upload_dir .. "/files/" .. id
  local size = math.floor(spec.size)
  local f = assert(io.open(path, "wb"))
  if size > 0 then
    f:seek("set", size - 1)
    f:write("\0")
  end
  f:close()
  state.seq = (state.seq or 0) + 1
  state.files[id] = { id = id, name = spec.name or "big", extension = spec.extension or "bin", size = size,
    parent_id = spec.parent_id, basename = id .. ".bin", path = path, zeros = true, created_at = date(), seq = state.seq }
  return { id = id }
end

-- { team_folders = N } top-level team folders; { shared_with_me = N }
-- folders of another user shared with the owner; { folder_id, folders = N,
-- files = N } content of a folder.
function M.seed(state, spec)
  local ids = {}
  local function folder(name, parent)
    local f = filesro.add_folder(state, name, parent)
    ids[#ids + 1] = f.id
    return f
  end
  for i = 1, math.floor(spec.team_folders or 0) do
    folder(("Team %03d"):format(i)).team = { members = {}, invitations = {} }
  end
  for i = 1, math.floor(spec.shared_with_me or 0) do
    local f = folder(("Theirs %03d"):format(i))
    f.owner, f.shared_with_me = "other", { permission = "can-view" }
  end
  for i = 1, math.floor(spec.folders or 0) do folder(("Sub %03d"):format(i), spec.folder_id) end
  for i = 1, math.floor(spec.files or 0) do
    local id = uuid()
    state.seq = (state.seq or 0) + 1
    state.files[id] = { id = id, name = ("file %03d"):format(i), extension = "txt", size = 0, parent_id = spec.folder_id,
      basename = id .. ".txt", created_at = date(), seq = state.seq }
    ids[#ids + 1] = id
  end
  return { ids = ids }
end

function M.dump(state)
  local shares = {}
  for token, sh in pairs(state.shares) do
    if sh.item_id then
      shares[#shares + 1] = { token = token, item_id = sh.item_id, permission = sh.permission,
        protected = sh.protected, expire_in = sh.expire_in }
    end
  end
  local tokens = 0
  for _ in pairs(state.drive.tokens) do tokens = tokens + 1 end
  local empty = cjson.empty_array or {}
  return { mails = #state.drive.mails > 0 and state.drive.mails or empty, shares = #shares > 0 and shares or empty,
    remote = state.drive.remote or empty, orphaned = state.drive.orphaned or 0, tokens = tokens,
    zips = state.drive.zips or 0 }
end

M.handlers = {
  login = login, user = user_doc, create_token = create_token, delete_token = delete_token,
  upload = upload, rename = rename, move = move, delete = delete, restore = restore,
  zip = zip_download, navigation = navigation,
  folder_data = folder_data, file_data = file_data, share_data = share_data, share_of_item = share_of_item,
  json = json, typed = typed, success = success, invalid = invalid, not_found_id = not_found_id,
  read_json = read_json, is_uuid = is_uuid, is_email = is_email, present = present, find = find,
  foreign = foreign, rate_limited = rate_limited, add_folder = filesro.add_folder, random_text = random_text,
  uuid = uuid, date = date,
  NO_ENTRY = NO_ENTRY, UNAUTHORIZED = UNAUTHORIZED,
}

return M
