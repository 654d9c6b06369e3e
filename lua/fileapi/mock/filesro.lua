-- files.ro share API: create folder (POST …/items), upload (POST …/uploads,
-- single and chunked), delete (DELETE …/items) and move (POST …/moves), with
-- the upstream order of checks (as the service's reference for share
-- items, and its server behaviour, describe them).  Chunks are appended to a temporary file
-- keyed by the part's file name, exactly as upstream does, so a chunk sent
-- twice shows up as a corrupted file.
local cjson = require "cjson"
local http = require "fileapi.mock.http"
local accounts = require "fileapi.mock.accounts"
local socket = require "socket"
local loop = require "fileapi.mock.loop"

local M = {}

local function uuid()
  local hex = "0123456789abcdef"
  return (("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"):gsub("[xy]", function(c)
    local v = c == "x" and math.random(16) or math.random(9, 12)
    return hex:sub(v, v)
  end))
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function date()
  return os.date("!%d. %b. %Y")
end

local function add_folder(state, name, parent_id, id)
  state.seq = (state.seq or 0) + 1
  local f = { id = id or uuid(), name = name, parent_id = parent_id, created_at = date(), seq = state.seq }
  state.folders[f.id] = f
  return f
end

-- A share's fixture: token, permission, protected, cookie, expired, can_create.
function M.add_share(state, spec)
  local root = add_folder(state, spec.root_name or "Shared", nil, spec.root_id)
  state.shares[spec.token] = {
    id = uuid(), token = spec.token, permission = spec.permission or "editor",
    protected = spec.protected or false, cookie = spec.cookie, expired = spec.expired or false,
    can_create = spec.can_create ~= false, root = root.id, expire_in = spec.expire_in or cjson.null,
  }
  return root.id
end

function M.reset(state)
  if state.upload_dir then os.execute("rm -rf '" .. state.upload_dir .. "'") end
  state.upload_dir = os.tmpname()
  os.remove(state.upload_dir)
  os.execute("mkdir -p '" .. state.upload_dir .. "/chunks' '" .. state.upload_dir .. "/files'")
  state.folders, state.shares, state.files, state.chunks = {}, {}, {}, 0
  M.add_share(state, { token = accounts.EDITOR_SHARE, root_id = "11111111-1111-4111-8111-111111111111" })
  M.add_share(state, { token = "share_token" }) -- the docs' examples
  M.add_share(state, { token = "visitor-token", permission = "visitor" })
  M.add_share(state, { token = "protected-token", protected = true, cookie = "share_session=unlock-me" })
  M.add_share(state, { token = "expired-token", expired = true })
  M.add_share(state, { token = "readonly-account-token", can_create = false })
  add_folder(state, "Elsewhere", nil, "22222222-2222-4222-8222-222222222222")
end

local function inside(state, folder_id, root_id)
  local f = state.folders[folder_id]
  while f do
    if f.id == root_id then return true end
    f = state.folders[f.parent_id]
  end
  return false
end

local function folder_doc(state, share, folder)
  local parent = state.folders[folder.parent_id]
  return cjson.encode({ data = {
    id = folder.id, type = "folder",
    attributes = {
      name = folder.name, color = cjson.null, emoji = cjson.null, filesize = 0,
      isTeamFolder = false, items = 0, trashed_items = 0,
      created_at = folder.created_at, updated_at = folder.created_at, deleted_at = cjson.null,
    },
    relationships = {
      shared = { data = { id = share.id, type = "shared", attributes = {
        permission = share.permission, protected = share.protected, item_id = share.root,
        expire_in = share.expire_in, token = share.token,
        link = "https://files.ro/share/" .. share.token, type = "folder",
      } } },
      parent = { data = { type = "folder", id = parent.id, attributes = { name = parent.name } } },
      user = { data = { type = "user", id = "00000000-0000-4000-8000-000000000001", attributes = {
        name = "Jane Doe", avatar = "https://files.ro/storage/avatars/jane.png", color = "#00BC7E",
      } } },
    },
  } })
end

local function err(status, body)
  return status, {}, cjson.encode(body)
end

local function validate(doc)
  local errors, any = {}, false
  if doc.name == nil or doc.name == "" then
    errors.name, any = { "The name field is required." }, true
  elseif type(doc.name) ~= "string" then
    errors.name, any = { "The name must be a string." }, true
  end
  if doc.parent_id ~= nil and doc.parent_id ~= cjson.null
      and (type(doc.parent_id) ~= "string" or not doc.parent_id:match(UUID)) then
    errors.parent_id, any = { "The parent id must be a valid UUID." }, true
  end
  return any and errors or nil
end

-- share_rate_limit visitors' requests in a fixed window of
-- share_rate_window seconds (upstream's: a minute); over it, 429.
local function guest_limited(state)
  local limit = state.config.share_rate_limit
  if not limit then return false end
  local window = state.config.share_rate_window or 60
  local now = socket.gettime()
  local w = state.share_window
  if not w or now - w.start >= window then w = { start = now, count = 0 } end
  w.count = w.count + 1
  state.share_window = w
  return w.count > limit, math.max(1, math.ceil(w.start + window - now))
end

local ROUTES = { ["POST items"] = "mkdir", ["POST uploads"] = "upload", ["DELETE items"] = "delete",
  ["POST moves"] = "move" }

local handlers = {}

-- The share's own checks, in upstream order; nil when they pass.
local function share_checks(state, req)
  local segment, call = req.path:match("^/api/v1/shares/([^/]+)/(%a+)$")
  local wants_json = (req.headers.accept or ""):find("application/json", 1, true)
  local over, wait = guest_limited(state)
  if over then
    return nil, 429, { { "Retry-After", tostring(wait) } }, cjson.encode({ message = "Too Many Attempts." })
  end
  local token = segment and http.unescape(segment)
  local share = token and state.shares[token]
  local route = ROUTES[req.method .. " " .. tostring(call)]
  if share and share.expires_at and os.time() >= share.expires_at then share.expired = true end
  if not route or not share or share.expired then
    if not wants_json then return nil, 404, { { "Content-Type", "text/html" } }, "<html><body>404 Not Found</body></html>" end
    return nil, err(404, { type = "error", message = "We couldn't find the resource you requested with id " .. tostring(token) })
  end
  if share.protected and not (req.headers.cookie or ""):find(share.cookie, 1, true) then
    return nil, err(403, { type = "error", message = "Sorry, you don't have permission" })
  end
  if share.permission ~= "editor" then return nil, err(403, { type = "error", message = "Access Denied" }) end
  return share, route
end

function M.handle(state, conn, req)
  local share, route, headers, body = share_checks(state, req)
  if not share then
    -- refused before the body: read it still when small, so the
    -- connection can carry on (a big one is left and the connection closed)
    if req.length <= 1024 * 1024 then http.read_body(conn, req, state.keep) end
    return route, headers, body
  end
  if route == "upload" then return handlers.upload(state, conn, req, share) end
  if not http.read_body(conn, req, state.keep) then return nil end
  return handlers[route](state, req, share)
end

function handlers.mkdir(state, req, share)
  local ok, doc = pcall(cjson.decode, req.body)
  if not ok or type(doc) ~= "table" then doc = {} end
  local errors = validate(doc)
  if errors then return err(422, { message = "The given data was invalid.", errors = errors }) end
  local parent_id = (doc.parent_id ~= nil and doc.parent_id ~= cjson.null) and doc.parent_id:lower() or share.root
  if not inside(state, parent_id, share.root) then
    return err(403, { message = "This action is unauthorized." })
  end
  if not share.can_create then return err(401, { type = "error", message = "This user action is not allowed." }) end
  local folder = add_folder(state, doc.name, parent_id)
  return 201, { { "Content-Type", "application/json" } }, folder_doc(state, share, folder)
end

-- ---- uploads ----------------------------------------------------------------

function M.file_doc(share, file, parent)
  return cjson.encode({ data = { id = file.id, type = "file", attributes = {
    filesize = ("%.1f MB"):format(file.size / 1e6), name = file.name, basename = file.basename,
    mimetype = file.extension, file_url = "https://files.ro/file/" .. file.basename, thumbnail = cjson.null,
    parent_id = file.parent_id, created_at = date(), updated_at = date(), deleted_at = cjson.null,
  }, relationships = {
    shared = share and { data = { id = share.id, type = "shared" } } or nil,
    parent = parent and { data = { type = "folder", id = parent.id, attributes = { name = parent.name } } } or nil,
    creator = { data = { type = "user", id = "00000000-0000-4000-8000-000000000001" } },
    exif = { data = cjson.null },
  } } })
end

local function sha256(path)
  local p = io.popen("sha256sum '" .. path .. "'")
  local line = p:read("*l") or ""
  p:close()
  return line:match("^(%x+)")
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local size = f:seek("end")
  f:close()
  return size
end

-- "/a/b/f.txt" -> a, b; "/a/b/" -> a, b; "a/b/f.txt" -> b (upstream drops
-- the first and the last segment)
local function path_folders(path)
  local parts = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = seg end
  if path:sub(-1) == "/" then parts[#parts] = nil end
  local out = {}
  for i = 2, #parts - 1 do if parts[i] ~= "" then out[#out + 1] = parts[i] end end
  return out
end

-- Found by name, else made.  config.path_race (seconds) puts that much
-- time between the look-up and the making, as upstream's queries do: two
-- uploads into one new folder then make it twice, as upstream's can.
function M.folder_named(state, parent_id, name)
  for _, f in pairs(state.folders) do
    if f.parent_id == parent_id and f.name == name and not f.deleted_at then return f end
  end
  if state.config.path_race then loop.sleep(state.config.path_race) end
  return add_folder(state, name, parent_id)
end

-- How many live folders each path names ("Shared/a/b" -> 1): a folder made
-- twice counts 2.
function M.folder_paths(state)
  local out = {}
  for _, f in pairs(state.folders) do
    if not f.deleted_at then
      local parts, at = { f.name }, state.folders[f.parent_id]
      while at do
        table.insert(parts, 1, at.name)
        at = state.folders[at.parent_id]
      end
      local path = table.concat(parts, "/")
      out[path] = (out[path] or 0) + 1
    end
  end
  return out
end

local function validate_upload(fields, file, chunked)
  local errors, any = {}, false
  local function bad(k, msg) errors[k], any = { msg }, true end
  if not fields.name or fields.name == "" then bad("name", "The name field is required.") end
  if not fields.extension or fields.extension == "" then bad("extension", "The extension field is required.") end
  if fields.parent_id and not fields.parent_id:match(UUID) then bad("parent_id", "The parent id must be a valid UUID.") end
  if chunked and fields.is_last_chunk ~= "0" and fields.is_last_chunk ~= "1" then
    bad("is_last_chunk", "The is last chunk field must be true or false.")
  end
  if not file then bad(chunked and "chunk" or "file", "The file field is required.") end
  return any and errors or nil
end

-- Receives an upload (single or a chunk) for a visitor or the owner.
-- ctx: root (the default parent; nil: the owner's home), share (for the
-- document; nil for the owner), before_store(parent_id) -> an error
-- response or nil (checked before a chunk is kept), before_create(parent_id,
-- size) -> the same, checked on the last chunk.
function M.receive_upload(state, conn, req, ctx)
  local limit = state.config.max_body
  if limit and req.length > limit then
    return 413, { { "Content-Type", "text/html" } }, "<html><body>413 Request Entity Too Large</body></html>", true
  end
  local incoming = state.upload_dir .. "/incoming-" .. tostring(req):match("0x(%x+)")
  local out = assert(io.open(incoming, "wb"))
  local fields, file = http.read_multipart_stream(conn, req, function(_, bytes) out:write(bytes) end)
  out:close()
  if not fields then
    os.remove(incoming)
    return err(400, { message = "bad multipart body: " .. tostring(file) })
  end
  local chunked = file and file.name == "chunk"
  local errors = validate_upload(fields, file, chunked)
  local blacklist = state.config.blacklist or {}
  for _, t in ipairs(blacklist) do
    if file and file.content_type == t then
      errors = errors or {}
      errors[file.name] = { "Type of this mime type is not allowed." }
    end
  end
  if errors then
    os.remove(incoming)
    return err(422, { message = "The given data was invalid.", errors = errors })
  end
  local parent_id = fields.parent_id and fields.parent_id:lower() or ctx.root
  local status, headers, body = ctx.before_store(parent_id)
  if status then
    os.remove(incoming)
    return status, headers, body
  end
  local stored = incoming
  if chunked then
    -- appended blindly, keyed by the part's file name: no offsets
    state.chunks = state.chunks + 1
    local key = (file.filename or ""):match("([^/]*)$")
    stored = state.upload_dir .. "/chunks/" .. key
    local dst = assert(io.open(stored, "ab"))
    local src = assert(io.open(incoming, "rb"))
    while true do
      local block = src:read(1048576)
      if not block then break end
      dst:write(block)
    end
    src:close()
    dst:close()
    os.remove(incoming)
    if fields.is_last_chunk == "0" then return 200, {}, "" end
  end
  local size = file_size(stored)
  status, headers, body = ctx.before_create(parent_id, size)
  if status then
    os.remove(stored)
    return status, headers, body
  end
  for _, name in ipairs(fields.path and path_folders(fields.path) or {}) do
    parent_id = M.folder_named(state, parent_id, name).id
  end
  local id = uuid()
  local rec = { id = id, name = fields.name, extension = fields.extension, size = size, parent_id = parent_id,
    basename = id .. "." .. fields.extension, sha256 = sha256(stored), content_type = file.content_type,
    path = state.upload_dir .. "/files/" .. id, created_at = date(), seq = (state.seq or 0) + 1 }
  state.seq = rec.seq
  os.rename(stored, rec.path)
  state.files[id] = rec
  return 201, { { "Content-Type", "application/json" } }, M.file_doc(ctx.share, rec, state.folders[parent_id])
end

function handlers.upload(state, conn, req, share)
  return M.receive_upload(state, conn, req, { root = share.root, share = share,
    before_store = function(parent_id)
      if not inside(state, parent_id, share.root) then return err(403, { message = "This action is unauthorized." }) end
      if not share.can_create then return err(401, { type = "error", message = "This user action is not allowed." }) end
    end,
    before_create = function(_, size)
      local cap = state.config.upload_limit
      if cap and size > cap then return err(413, { message = "The file is too large." }) end
    end })
end

-- ---- delete and move ----------------------------------------------------------

local function find_item(state, item, share)
  local list = item.type == "folder" and state.folders or state.files
  local found = type(item.id) == "string" and list[item.id:lower()]
  if found and found.deleted_at then found = nil end
  if found and inside(state, found.parent_id or found.id, share.root) and found.id ~= share.root then return found end
end

local function check_items(items, need_force)
  if type(items) ~= "table" or #items == 0 then return { items = { "The items field is required." } } end
  for i, item in ipairs(items) do
    if type(item) ~= "table" or (item.type ~= "file" and item.type ~= "folder") or type(item.id) ~= "string"
        or (need_force and type(item.force_delete) ~= "boolean") then
      return { ["items." .. (i - 1)] = { "Each item needs type, id" .. (need_force and " and force_delete." or ".") } }
    end
  end
end

local NOT_FOUND = cjson.encode({ type = "error", message = "The requested entry wasn't found." })

function handlers.delete(state, req, share)
  local ok, doc = pcall(cjson.decode, req.body)
  if not ok or type(doc) ~= "table" then doc = {} end
  local errors = check_items(doc.items, true)
  if errors then return err(422, { message = "The given data was invalid.", errors = errors }) end
  for _, item in ipairs(doc.items) do
    if not find_item(state, item, share) then return 200, {}, NOT_FOUND end
  end
  for _, item in ipairs(doc.items) do
    local found = find_item(state, item, share)
    if item.type == "folder" then state.folders[found.id] = nil else state.files[found.id] = nil end
  end
  return 204, {}, ""
end

function handlers.move(state, req, share)
  local ok, doc = pcall(cjson.decode, req.body)
  if not ok or type(doc) ~= "table" then doc = {} end
  local errors = check_items(doc.items, false)
  if errors then return err(422, { message = "The given data was invalid.", errors = errors }) end
  if doc.to_id == cjson.null then return err(403, { message = "This action is unauthorized." }) end
  local to = doc.to_id and tostring(doc.to_id):lower() or share.root
  if not inside(state, to, share.root) then return err(403, { message = "This action is unauthorized." }) end
  for _, item in ipairs(doc.items) do
    if not find_item(state, item, share) then return 200, {}, NOT_FOUND end
  end
  for _, item in ipairs(doc.items) do find_item(state, item, share).parent_id = to end
  return 200, {}, cjson.encode({ type = "success", message = "Items was successfully moved." })
end

-- for the owner's routes (mock.drive): one store for both views
M.uuid, M.add_folder, M.inside, M.date, M.UUID = uuid, add_folder, inside, date, UUID

return M
