-- MijnKlantportaal Files API as the reference describes it: POST /v1/files
-- with multipart/form-data (field `file`) or JSON {"directory": NAME}.
local cjson = require "cjson"
local http = require "mock.http"

local M = {}

local ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

local function new_id(prefix)
  local t = {}
  for i = 1, 11 do
    local k = math.random(#ALNUM)
    t[i] = ALNUM:sub(k, k)
  end
  return prefix .. table.concat(t)
end

local function json_error(status, message, extra_headers)
  return status, extra_headers or {}, cjson.encode({ message = message })
end

local function item_json(item)
  return cjson.encode({
    id = item.id, type = item.type, name = item.name,
    size = item.size or cjson.null, mime = item.mime or cjson.null,
    fileShareId = cjson.null, createdAt = item.createdAt,
  })
end

local function create(state, kind, name, size, mime, parent)
  local item = {
    id = new_id(kind == "file" and "fsf_" or "fsd_"), type = kind, name = name,
    size = size, mime = mime, parent = parent,
    createdAt = os.date("!%Y-%m-%dT%H:%M:%S+00:00"),
  }
  state.items[item.id] = item
  if kind == "file" then state.used = state.used + size end
  return 201, {}, item_json(item)
end

local function rate_limited(state, key)
  local limit = state.config.rate_limit
  if not limit then return false end
  local now = os.time()
  local w = state.windows[key] or { start = now, count = 0 }
  if now - w.start >= 60 then w.start, w.count = now, 0 end
  w.count = w.count + 1
  state.windows[key] = w
  return w.count > limit, limit - w.count, w.start + 60
end

local function upload(state, conn, req, parent)
  local quota = state.config.quota
  if quota and (req.headers.expect or ""):lower() == "100-continue"
      and state.used + req.length > quota then
    -- refused before the body: the client sees it instead of 100 Continue
    return 426, {}, cjson.encode({ message = "The file exceeds the available storage space for this license." }), true
  end
  if not http.read_body(conn, req, state.keep) then return nil end
  local parts, why = http.parse_multipart(req)
  if not parts then return json_error(422, "Malformed multipart body: " .. why) end
  local file, has_directory
  for _, p in ipairs(parts) do
    if p.name == "file" and p.filename then file = p end
    if p.name == "directory" then has_directory = true end
  end
  req.parts = parts
  if file and has_directory then return json_error(422, "You can not provide both a file and a directory.") end
  if not file or file.filename == "" then return json_error(422, "The file field is required.") end
  if quota and state.used + file.size > quota then
    return json_error(426, "The file exceeds the available storage space for this license.")
  end
  return create(state, "file", file.filename, file.size, file.content_type or "application/octet-stream", parent)
end

local function mkdir(state, conn, req, parent)
  if not http.read_body(conn, req, state.keep) then return nil end
  local ok, doc = pcall(cjson.decode, req.body)
  if not ok or type(doc) ~= "table" then return json_error(422, "The directory field is required.") end
  if doc.file ~= nil and doc.directory ~= nil then
    return json_error(422, "You can not provide both a file and a directory.")
  end
  if type(doc.directory) ~= "string" or doc.directory == "" then
    return json_error(422, "The directory field is required.")
  end
  return create(state, "directory", doc.directory, nil, nil, parent)
end

-- Returns status, headers, body[, close]; nil when the connection broke.
function M.handle(state, conn, req)
  if req.path ~= "/v1/files" then
    http.read_body(conn, req, state.keep)
    return json_error(404, "Not found.")
  end
  if req.method ~= "POST" then return json_error(405, "Method not allowed.") end
  local key = (req.headers.authorization or ""):match("^Bearer (.+)$")
  if not key or not state.config.keys[key] then
    if not http.read_body(conn, req, state.keep) then return nil end
    return json_error(401, "Unauthenticated.")
  end
  local over, remaining, reset = rate_limited(state, key)
  local limit_headers = state.config.rate_limit and {
    { "X-RateLimit-Limit", tostring(state.config.rate_limit) },
    { "X-RateLimit-Remaining", tostring(math.max(0, remaining)) },
  } or {}
  if over then
    http.read_body(conn, req, state.keep)
    limit_headers[#limit_headers + 1] = { "Retry-After", tostring(reset - os.time()) }
    limit_headers[#limit_headers + 1] = { "X-RateLimit-Reset", tostring(reset) }
    return 429, limit_headers, cjson.encode({ code = 429, message = "Too many requests." })
  end
  local parent = req.query.directory
  if parent then
    local dir = state.items[parent]
    if not dir or dir.type ~= "directory" then
      http.read_body(conn, req, state.keep)
      return json_error(404, "The directory could not be found.")
    end
  end
  local ctype = (req.headers["content-type"] or ""):lower()
  local status, headers, body, close
  if ctype:find("^multipart/form%-data") then
    status, headers, body, close = upload(state, conn, req, parent)
  elseif ctype:find("^application/json") then
    status, headers, body, close = mkdir(state, conn, req, parent)
  else
    http.read_body(conn, req, state.keep)
    status, headers, body = json_error(422, "Provide either a file (multipart/form-data) or a directory (application/json).")
  end
  if status then
    for _, h in ipairs(limit_headers) do headers[#headers + 1] = h end
  end
  return status, headers, body, close
end

function M.reset(state)
  state.items, state.used, state.windows = {}, 0, {}
end

return M
