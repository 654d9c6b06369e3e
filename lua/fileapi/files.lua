-- MijnKlantportaal Files API: upload a file or create a directory
-- (POST /files, multipart/form-data or JSON).
local core = require "fileapi.core"
local util = require "fileapi.util"
local mime = require "fileapi.mime"
local transport = require "fileapi.transport"

local type, setmetatable, getenv = type, setmetatable, os.getenv

local M = {}
local Client = {}
Client.__index = Client

-- The Authorization header is kept here, keyed by the client, so that no
-- table a user can dump (pairs(client)) shows the key.
local private = setmetatable({}, { __mode = "k" })

local NEW_OPTIONS = { "api_key" }
local UPLOAD_OPTIONS = { "directory", "filename", "mime", "on_progress" }

M.DEFAULT_BASE_URL = "https://api.mijnklantportaal.nl/v1"

local function check_directory(id)
  if id == nil then return true end
  if #id > 64 or not id:match("^fsd_%w+$") then
    return nil, "directory must be a directory id such as fsd_abc12345678"
  end
  return true
end

--- files.new{ api_key, base_url, <transport options> } -> client | nil, err
function M.new(opts)
  opts = util.check_type(opts, "table", 1, "new", true) or {}
  local key = util.check_field(opts, "api_key", "string", "new") or getenv("MKP_API_KEY")
  local topts, msg = transport.check_options(opts, "new", NEW_OPTIONS)
  if key == nil or key == "" then
    return util.invalid("api_key is required (or set MKP_API_KEY)")
  end
  if key:find("[^\33-\126]") then
    return util.invalid("api_key must be printable ASCII without spaces or control characters")
  end
  if not topts then return util.invalid(msg) end
  local base, why = util.check_base_url(topts.base_url or getenv("MKP_BASE_URL") or M.DEFAULT_BASE_URL,
    topts.allow_insecure)
  if not base then return util.invalid(why) end
  local t, err = transport.new(topts, { key })
  if not t then return nil, err end
  local client = setmetatable({ transport = t, base_url = base }, Client)
  private[client] = { auth = "Authorization: Bearer " .. key }
  return client
end

local function files_url(self, directory)
  local url = self.base_url .. "/files"
  if directory then url = url .. "?directory=" .. util.pct(directory) end
  return url
end

-- The API answers with a FileOrDirectory; anything else is a protocol error.
local function item_or_error(self, doc, res)
  if not doc then return nil, res end
  if type(doc.id) ~= "string" or (doc.type ~= "file" and doc.type ~= "directory") then
    return self.transport:protocol_error(res, "the response is not a file or directory")
  end
  return doc
end

local function post(self, req)
  req.method = "POST"
  req.headers[#req.headers + 1] = private[self].auth
  req.headers[#req.headers + 1] = "Accept: application/json"
  return item_or_error(self, self.transport:send_json(req))
end

--- client:upload(source, { directory, filename, mime, on_progress }) -> item | nil, err
function Client:upload(source, opts)
  local st = type(source)
  if st ~= "string" and st ~= "table" then util.check_type(source, "string", 1, "upload") end
  opts = util.check_type(opts, "table", 2, "upload", true) or {}
  util.check_keys(opts, "upload", UPLOAD_OPTIONS)
  local directory = util.check_field(opts, "directory", "string", "upload")
  local filename = util.check_field(opts, "filename", "string", "upload")
  local ctype = util.check_field(opts, "mime", "string", "upload")
  local on_progress = util.check_field(opts, "on_progress", "function", "upload")

  local ok, why = check_directory(directory)
  if not ok then return util.invalid(why) end
  local part
  part, why = util.source_part(source, filename, "upload")
  if not part then return util.invalid(why) end
  if ctype and not mime.valid(ctype) then return util.invalid("mime must be a type/subtype media type") end
  part.content_type = ctype or mime.for_name(part.filename)

  local body, err = core.multipart({ part })
  if not body then return self.transport:fail(err) end
  local item
  item, err = post(self, {
    url = files_url(self, directory),
    headers = { "Content-Type: " .. body:content_type() },
    multipart = body, on_progress = on_progress,
  })
  body:close()
  return item, err
end

--- client:mkdir(name, { directory }) -> dir | nil, err
function Client:mkdir(name, opts)
  util.check_type(name, "string", 1, "mkdir")
  opts = util.check_type(opts, "table", 2, "mkdir", true) or {}
  util.check_keys(opts, "mkdir", { "directory" })
  local directory = util.check_field(opts, "directory", "string", "mkdir")
  local ok, why = util.check_name("name", name)
  if not ok then return util.invalid(why) end
  ok, why = check_directory(directory)
  if not ok then return util.invalid(why) end
  return post(self, {
    url = files_url(self, directory),
    headers = { "Content-Type: application/json" },
    body = transport.json.encode({ directory = name }),
  })
end

function Client:close()
  self.transport:close()
end

Client.__close = Client.close

-- Module-level shortcuts share one client configured from the environment;
-- a changed MKP_API_KEY or MKP_BASE_URL gets a new one.
local default = { client = nil, key = nil, base = nil }

local function default_client()
  local key, base = getenv("MKP_API_KEY"), getenv("MKP_BASE_URL")
  if default.client and default.key == key and default.base == base then return default.client end
  if default.client then default.client:close() end
  local client, err = M.new()
  default.client, default.key, default.base = client, key, base
  return client, err
end

function M.upload(source, opts)
  local client, err = default_client()
  if not client then return nil, err end
  return client:upload(source, opts)
end

function M.mkdir(name, opts)
  local client, err = default_client()
  if not client then return nil, err end
  return client:mkdir(name, opts)
end

return M
