-- MijnKlantportaal as the reference describes it: POST /v1/files with
-- multipart/form-data (field `file`, stored so it can be downloaded again)
-- or JSON {"directory": NAME}; GET /v1/files/{id} and …/download (a link to
-- the storage host, mock/storage.lua); GET/POST /v1/file-shares and
-- /v1/file-requests (Laravel simple pages of 15), GET /v1/file-requests/{id}.
local cjson = require "cjson"
local http = require "fileapi.mock.http"
local storage = require "fileapi.mock.storage"
local oauth = require "fileapi.mock.oauth"
local socket = require "socket"

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

local function item_doc(item)
  return {
    id = item.id, type = item.type, name = item.name,
    size = item.size or cjson.null, mime = item.mime or cjson.null,
    fileShareId = item.fileShareId or cjson.null, createdAt = item.createdAt,
  }
end

local function item_json(item)
  return cjson.encode(item_doc(item))
end

local function now_atom()
  return os.date("!%Y-%m-%dT%H:%M:%S+00:00")
end

local function create(state, kind, name, size, mime, parent, path)
  local item = {
    id = new_id(kind == "file" and "fsf_" or "fsd_"), type = kind, name = name,
    size = size, mime = mime, parent = parent, path = path,
    createdAt = now_atom(),
  }
  state.items[item.id] = item
  if kind == "file" then state.used = state.used + size end
  return 201, {}, item_json(item)
end

-- A rolling window per key, as the API's: rate_limit requests in any
-- rate_window seconds (60 by default; specs use a few).  Returns whether
-- this request is over, what remains, and when the oldest counted request
-- leaves the window (a UNIX time, and seconds from now).
local function rate_limited(state, key)
  local limit = state.config.rate_limit
  if not limit then return false end
  local window = state.config.rate_window or 60
  local now = socket.gettime()
  local log = state.windows[key] or {}
  local keep = {}
  for _, t in ipairs(log) do if t > now - window then keep[#keep + 1] = t end end
  local over = #keep >= limit
  if not over then keep[#keep + 1] = now end
  state.windows[key] = keep
  local frees = keep[1] and keep[1] + window or now
  if over then
    state.rejected = (state.rejected or 0) + 1
    state.rejected_at = state.rejected_at or {}
    table.insert(state.rejected_at, now)
  end
  return over, limit - #keep, frees, frees - now
end

local function upload(state, conn, req, parent)
  local quota = state.config.quota
  if quota and (req.headers.expect or ""):lower() == "100-continue"
      and state.used + req.length > quota then
    -- refused before the body: the client sees it instead of 100 Continue
    return 426, {}, cjson.encode({ message = "The file exceeds the available storage space for this license." }), true
  end
  local dir = state.upload_dir .. "/mkp"
  os.execute("mkdir -p '" .. dir .. "'")
  local stored = dir .. "/" .. new_id("up_")
  local out = assert(io.open(stored, "wb"))
  local fields, file = http.read_multipart_stream(conn, req, function(_, bytes) out:write(bytes) end, state.keep)
  out:close()
  if not fields then
    os.remove(stored)
    if not req.body_read then return nil end
    return json_error(422, "Malformed multipart body: " .. tostring(file))
  end
  if file and fields.directory then
    os.remove(stored)
    return json_error(422, "You can not provide both a file and a directory.")
  end
  if not file or file.name ~= "file" or file.filename == "" then
    os.remove(stored)
    return json_error(422, "The file field is required.")
  end
  if quota and state.used + file.size > quota then
    os.remove(stored)
    return json_error(426, "The file exceeds the available storage space for this license.")
  end
  return create(state, "file", file.filename, file.size, file.content_type or "application/octet-stream", parent, stored)
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

local function files_post(state, conn, req)
  local parent = req.query.directory
  if parent then
    local dir = state.items[parent]
    if not dir or dir.type ~= "directory" then
      http.read_body(conn, req, state.keep)
      return json_error(404, "The directory could not be found.")
    end
  end
  local ctype = (req.headers["content-type"] or ""):lower()
  if ctype:find("^multipart/form%-data") then return upload(state, conn, req, parent) end
  if ctype:find("^application/json") then return mkdir(state, conn, req, parent) end
  http.read_body(conn, req, state.keep)
  return json_error(422, "Provide either a file (multipart/form-data) or a directory (application/json).")
end

local function json(status, doc)
  return status, {}, cjson.encode(doc)
end

local function files_get(state, id)
  local item = state.items[id]
  if not item then return json_error(404, "The file or directory could not be found") end
  return json(200, item_doc(item))
end

local function files_download(state, id)
  local item = state.items[id]
  if not item or item.type ~= "file" then return json_error(404, "No File can be found for the given ID") end
  local link, expires = storage.link(state, state.storage_base, id)
  return json(200, { link = link, expiresAt = os.date("!%Y-%m-%dT%H:%M:%S+00:00", expires) })
end

-- Laravel's simple paginator, 15 a page; the documented next_page_url has
-- a stray comma after the number, and so has this one's.
local function page_of(list, req, path)
  local page = math.tointeger(tonumber(req.query.page or "1")) or 1
  if page < 1 then page = 1 end
  local per, data = 15, {}
  for i = (page - 1) * per + 1, math.min(#list, page * per) do data[#data + 1] = list[i] end
  local url = "https://api.mijnklantportaal.nl/v1" .. path
  local from = #data > 0 and (page - 1) * per + 1 or cjson.null
  return json(200, {
    current_page = page, data = #data > 0 and data or cjson.empty_array, first_page_url = url .. "?page=1",
    from = from, next_page_url = #list > page * per and (url .. "?page=" .. (page + 1) .. ",") or cjson.null,
    path = url, per_page = per, prev_page_url = page > 1 and (url .. "?page=" .. (page - 1)) or cjson.null,
    to = #data > 0 and (page - 1) * per + #data or cjson.null,
  })
end

local function link(href) return { href = href, type = "text/html" } end

local function file_share(state, content, customer)
  local share = { id = new_id("fss_"), sharedWithCustomerId = customer or cjson.null, sharedContent = {},
    createdAt = now_atom() }
  for i, id in ipairs(content) do
    local item = state.items[id]
    item.fileShareId = share.id
    share.sharedContent[i] = item_doc(item)
  end
  share.links = customer and { customer = link("https://portal.example/customer/files/" .. share.id) }
    or { publicShare = link("https://portal.example/share/" .. share.id) }
  state.file_shares[#state.file_shares + 1] = share
  return share
end

local function read_json(conn, req, state)
  if not http.read_body(conn, req, state.keep) then return nil, "closed" end
  local ok, doc = pcall(cjson.decode, req.body)
  if not ok or type(doc) ~= "table" then return {} end
  return doc
end

local function invalid(errors)
  local first
  for _, v in pairs(errors) do first = first or v[1] end
  return 422, {}, cjson.encode({ message = first, errors = errors })
end

local function shares_post(state, conn, req)
  local doc = read_json(conn, req, state)
  if type(doc.content) ~= "table" or #doc.content == 0 then
    return invalid({ content = { "The content field is required." } })
  end
  for _, id in ipairs(doc.content) do
    if type(id) ~= "string" or not state.items[id] then
      return invalid({ content = { "The selected content is invalid." } })
    end
  end
  local customer = doc.customerId
  if customer ~= nil and not state.customers[customer] then
    return invalid({ customerId = { "The selected customer id is invalid." } })
  end
  return json(201, file_share(state, doc.content, customer))
end

local function file_request(state, doc)
  local req = { id = new_id("frq_"), name = doc.name, description = doc.description or cjson.null,
    directoryId = doc.directoryId or cjson.null, customerId = doc.customerId or cjson.null,
    requestedFiles = {}, completedAt = cjson.null, createdAt = now_atom() }
  for i, f in ipairs(doc.requestedFiles) do
    req.requestedFiles[i] = { id = new_id("fqf_"), name = f.name, description = f.description or cjson.null,
      required = f.required == true, maxFileSize = f.maxFileSize or 0, uploadedFileId = cjson.null }
  end
  req.links = doc.customerId and { customer = link("https://portal.example/customer/requests/" .. req.id) }
    or { publicRequest = link("https://portal.example/request/" .. req.id) }
  state.file_requests[#state.file_requests + 1] = req
  state.file_requests_by_id[req.id] = req
  return req
end

local function check_request(state, doc)
  if type(doc.name) ~= "string" or doc.name == "" then return { name = { "The name field is required." } } end
  local files = doc.requestedFiles
  if type(files) ~= "table" or #files == 0 then
    return { requestedFiles = { "The requested files field is required." } }
  end
  if #files > 10 then return { requestedFiles = { "The requested files may not have more than 10 items." } } end
  for i, f in ipairs(files) do
    if type(f) ~= "table" or type(f.name) ~= "string" or f.name == "" then
      return { ["requestedFiles." .. (i - 1) .. ".name"] = { "The name field is required." } }
    end
    if f.maxFileSize ~= nil and (math.type(f.maxFileSize) ~= "integer" and f.maxFileSize ~= math.floor(f.maxFileSize)
        or f.maxFileSize < 0) then
      return { ["requestedFiles." .. (i - 1) .. ".maxFileSize"] = { "The max file size must be an integer." } }
    end
  end
  if doc.customerId ~= nil and not state.customers[doc.customerId] then
    return { customerId = { "The selected customer id is invalid." } }
  end
  if doc.directoryId ~= nil and not (state.items[doc.directoryId] and state.items[doc.directoryId].type == "directory") then
    return { directoryId = { "The selected directory id is invalid." } }
  end
end

local function requests_post(state, conn, req)
  local doc = read_json(conn, req, state)
  local errors = check_request(state, doc)
  if errors then return invalid(errors) end
  return json(201, file_request(state, doc))
end

local ROUTES = {
  { "POST", "^/v1/files$", files_post, raw = true },
  { "GET", "^/v1/files/([%w_]+)$", files_get },
  { "GET", "^/v1/files/([%w_]+)/download$", files_download },
  { "GET", "^/v1/file%-shares$", function(state, req) return page_of(state.file_shares, req, "/file-shares") end },
  { "POST", "^/v1/file%-shares$", shares_post, raw = true },
  { "GET", "^/v1/file%-requests$", function(state, req) return page_of(state.file_requests, req, "/file-requests") end },
  { "POST", "^/v1/file%-requests$", requests_post, raw = true },
  { "GET", "^/v1/file%-requests/([%w_]+)$", function(state, id)
    local r = state.file_requests_by_id[id]
    if not r then return json_error(404, "The File Request could not be found") end
    return json(200, r)
  end },
}

local function route(req)
  local known = false
  for _, r in ipairs(ROUTES) do
    local capture = req.path:match(r[2])
    if capture then
      known = true
      if r[1] == req.method then return r, capture end
    end
  end
  return nil, known
end

-- Returns status, headers, body[, close]; nil when the connection broke.
function M.handle(state, conn, req)
  local r, capture = route(req)
  if not r then
    http.read_body(conn, req, state.keep)
    if capture then return json_error(405, "Method not allowed.") end
    return json_error(404, "Not found.")
  end
  local key = (req.headers.authorization or ""):match("^Bearer (.+)$")
  if not key or not (state.config.keys[key] or oauth.valid_access(state, key)) then
    if not http.read_body(conn, req, state.keep) then return nil end
    return json_error(401, "Unauthenticated.")
  end
  local over, remaining, reset, wait = rate_limited(state, key)
  local limit_headers = state.config.rate_limit and {
    { "X-RateLimit-Limit", tostring(math.floor(state.config.rate_limit)) },
    { "X-RateLimit-Remaining", tostring(math.max(0, math.floor(remaining))) },
  } or {}
  -- rate_reset_always: a server that says on every answer when its next
  -- slot frees (the API itself names a reset only with a 429)
  if state.config.rate_limit and state.config.rate_reset_always and not over then
    limit_headers[#limit_headers + 1] = { "X-RateLimit-Reset", ("%.3f"):format(reset) }
  end
  if over then
    http.read_body(conn, req, state.keep)
    limit_headers[#limit_headers + 1] = { "Retry-After", tostring(math.ceil(wait)) }
    limit_headers[#limit_headers + 1] = { "X-RateLimit-Reset", tostring(math.ceil(reset)) }
    return 429, limit_headers, cjson.encode({ code = 429, message = "Too many requests." })
  end
  local status, headers, body, close
  if r.raw then
    status, headers, body, close = r[3](state, conn, req)
  else
    if not http.read_body(conn, req, state.keep) then return nil end
    if r[2]:find("%(") then
      status, headers, body, close = r[3](state, capture)
    else
      status, headers, body, close = r[3](state, req)
    end
  end
  if status then
    for _, h in ipairs(limit_headers) do headers[#headers + 1] = h end
  end
  return status, headers, body, close
end

-- Fixtures: a file whose bytes are a local file (a sparse 1 GiB, say).
function M.add_file(state, spec)
  local f = io.open(spec.path, "rb")
  local size = f and f:seek("end") or 0
  if f then f:close() end
  local _, _, body = create(state, "file", spec.name or "fixture.bin", size, spec.mime or "application/octet-stream",
    nil, spec.path)
  return cjson.decode(body)
end

-- Fixtures: n file shares (of one new file) and n file requests.
function M.seed(state, spec)
  local _, _, body = create(state, "file", "seed.txt", 1, "text/plain", nil, nil)
  local id = cjson.decode(body).id
  for i = 1, spec.file_shares or 0 do
    file_share(state, { id }, i % 2 == 0 and "cst_abc12345678" or nil)
  end
  for i = 1, spec.file_requests or 0 do
    file_request(state, { name = "Request " .. i, requestedFiles = { { name = "Passport" } } })
  end
  return { file = id }
end

function M.reset(state)
  state.items, state.used, state.windows = {}, 0, {}
  state.file_shares, state.file_requests, state.file_requests_by_id, state.links = {}, {}, {}, {}
  state.customers = { cst_abc12345678 = true, cst_klant000001 = true }
end

return M
