-- files.ro share API: POST /api/v1/shares/{token}/items, with the upstream
-- order of checks (see the reference's server-behaviour page).
local cjson = require "cjson"
local http = require "mock.http"

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
  local f = { id = id or uuid(), name = name, parent_id = parent_id, created_at = date() }
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
  state.folders, state.shares = {}, {}
  M.add_share(state, { token = "editor-token", root_id = "11111111-1111-4111-8111-111111111111" })
  M.add_share(state, { token = "share_token" }) -- the README's examples
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

local function guest_limited(state)
  local limit = state.config.share_rate_limit
  if not limit then return false end
  local now = os.time()
  local w = state.share_window
  if not w or now - w.start >= 60 then w = { start = now, count = 0 } end
  w.count = w.count + 1
  state.share_window = w
  return w.count > limit, w.start + 60 - now
end

function M.handle(state, conn, req)
  if not http.read_body(conn, req, state.keep) then return nil end
  local segment = req.path:match("^/api/v1/shares/([^/]+)/items$")
  local wants_json = (req.headers.accept or ""):find("application/json", 1, true)
  local over, wait = guest_limited(state)
  if over then
    return 429, { { "Retry-After", tostring(wait) } }, cjson.encode({ message = "Too Many Attempts." })
  end
  local token = segment and http.unescape(segment)
  local share = token and state.shares[token]
  if req.method ~= "POST" or not share or share.expired then
    if not wants_json then return 404, { { "Content-Type", "text/html" } }, "<html><body>404 Not Found</body></html>" end
    return err(404, { type = "error", message = "We couldn't find the resource you requested with id " .. tostring(token) })
  end
  if share.protected and not (req.headers.cookie or ""):find(share.cookie, 1, true) then
    return err(403, { type = "error", message = "Sorry, you don't have permission" })
  end
  if share.permission ~= "editor" then return err(403, { type = "error", message = "Access Denied" }) end
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

return M
