-- MijnKlantportaal: upload a file or create a directory (POST /files,
-- multipart/form-data or JSON), read an item back, download a file through
-- its link, share items with a customer, and request files.
local core = require "fileapi.core"
local util = require "fileapi.util"
local mime = require "fileapi.mime"
local engine = require "fileapi.http.engine"
local client_options = require "fileapi.client_options"
local tree = require "fileapi.tree"
local pager = require "fileapi.pager"
local oauth = require "fileapi.mijnklantportaal.oauth"
local oauth_keeper = require "fileapi.mijnklantportaal.oauth_keeper"

local type, ipairs, select, setmetatable, getenv = type, ipairs, select, setmetatable, os.getenv

local M = {}
local Client = {}
Client.__index = Client

-- What a user could dump (pairs(client)) shows no secret: the key and the
-- tokens live in the engine's authorizer and the OAuth keeper.
local private = setmetatable({}, { __mode = "k" })

-- _shared_tokens is internal (the command line's credentials file as
-- OAuth's shared record: fileapi.cli.credentials), not a documented option.
local NEW_OPTIONS = { "api_key", "oauth", "on_tokens", "token_dict", "oauth_base_url", "_shared_tokens" }
local UPLOAD_OPTIONS = { "directory", "filename", "mime", "on_progress" }

M.DEFAULT_BASE_URL = "https://api.mijnklantportaal.nl/v1"

local function check_directory(id)
  if id == nil then return true end
  if #id > 64 or not id:match("^fsd_%w+$") then
    return nil, "directory must be a directory id such as fsd_abc12345678"
  end
  return true
end

-- The OAuth half of files.new, checked: the keeper's settings, or nil and
-- a message.
local function oauth_settings(opts, topts, secrets)
  local o = util.check_field(opts, "oauth", "table", "new", 4)
  local on_tokens = util.check_field(opts, "on_tokens", "function", "new", 4)
  local dict = util.check_field(opts, "token_dict", "string", "new", 4)
  local given = util.check_field(opts, "oauth_base_url", "string", "new", 4)
  local shared = util.check_field(opts, "_shared_tokens", "table", "new", 4)
  local ok, why = oauth.check_tokens(o, "new")
  if not ok then return nil, why end
  if dict then
    local ngx = rawget(_G, "ngx")
    if not (ngx and ngx.shared and ngx.shared[dict]) then return nil, "token_dict: no lua_shared_dict named " .. dict end
  end
  local base, berr = oauth.base_url(given, topts.allow_insecure)
  if not base then return nil, berr end
  for _, k in ipairs({ "client_id", "client_secret", "access_token", "refresh_token" }) do
    if o[k] then secrets[#secrets + 1] = o[k] end
  end
  return { oauth = o, on_tokens = on_tokens, token_dict = dict, base = base, secrets = secrets, store = topts.store,
    shared = shared }
end

-- The keeper of an OAuth client's tokens, with an engine of its own for the
-- manage host, derived from the client's (no budget of the API's: another
-- host, another limit).  Returns the keeper and that engine, or nil, err.
local function new_keeper(t, settings)
  local token_engine, err = t:derive({ rate_limit = false })
  if not token_engine then return nil, err end
  settings.token_engine = token_engine
  local keeper = oauth_keeper.new(settings)
  keeper:on_grant(function(grant) t:rekey(grant) end)
  return keeper, token_engine
end

--- files.new{ api_key | oauth, on_tokens, token_dict, oauth_base_url, base_url, <transport options> }
---   -> client | nil, err
function M.new(opts)
  opts = util.check_type(opts, "table", 1, "new", true) or {}
  local given_key = util.check_field(opts, "api_key", "string", "new")
  local topts, msg = client_options.check(opts, "new", NEW_OPTIONS)
  if given_key and opts.oauth ~= nil then return util.invalid("api_key and oauth exclude each other") end
  local key = given_key or (opts.oauth == nil and getenv("MKP_API_KEY")) or nil
  if opts.oauth == nil and (key == nil or key == "") then
    return util.invalid("api_key is required (or set MKP_API_KEY), or oauth tokens for a third-party application")
  end
  if key and key:find("[^\33-\126]") then
    return util.invalid("api_key must be printable ASCII without spaces or control characters")
  end
  if not topts then return util.invalid(msg) end
  local base, why = util.check_base_url(topts.base_url or getenv("MKP_BASE_URL") or M.DEFAULT_BASE_URL,
    topts.allow_insecure)
  if not base then return util.invalid(why) end
  local secrets, settings = { key }, nil
  if not key then
    settings, why = oauth_settings(opts, topts, secrets)
    if not settings then return util.invalid(why) end
  end
  -- the budget counts by the credential: the key, or the OAuth grant.  A
  -- grant is named by its first refresh token (oauth.token_id): a client
  -- built from a later one starts with that one's name, and moves to the
  -- grant's once its shared record has named it.
  local t, err = engine.new(topts, secrets, key or oauth.token_id(opts.oauth.client_id, opts.oauth.refresh_token))
  if not t then return nil, err end
  local keeper, token_engine
  if settings then
    keeper, token_engine = new_keeper(t, settings)
    if not keeper then
      t:close()
      return nil, token_engine
    end
  end
  t.auth = keeper or engine.static_auth("Authorization: Bearer " .. key)
  local client = setmetatable({ engine = t, base_url = base }, Client)
  private[client] = { keeper = keeper, token_engine = token_engine }
  return client
end

--- client:token_info() -> { expires_at, refreshed_at, refreshes } | nil (an API key)
function Client:token_info()
  local keeper = private[self].keeper
  return keeper and keeper:info() or nil
end

--- client:set_tokens{ access_token, refresh_token, expires_at | expires_in } -> true | nil, err
function Client:set_tokens(tokens)
  util.check_type(tokens, "table", 1, "set_tokens")
  local keeper = private[self].keeper
  if not keeper then return util.invalid("set_tokens is for a client made with oauth tokens") end
  util.check_keys(tokens, "set_tokens", { "access_token", "refresh_token", "expires_at", "expires_in" })
  for _, k in ipairs({ "access_token", "refresh_token" }) do
    if type(tokens[k]) ~= "string" or tokens[k] == "" then return util.invalid(k .. " is required") end
  end
  return keeper:set_tokens(tokens)
end

M.authorize_url = oauth.authorize_url
M.check_state = oauth.check_state
M.exchange_code = oauth.exchange_code

local function files_url(self, directory)
  local url = self.base_url .. "/files"
  if directory then url = url .. "?directory=" .. util.pct(directory) end
  return url
end

-- The API answers with a FileOrDirectory; anything else is a protocol error.
local function item_or_error(self, doc, res)
  if not doc then return nil, res end
  if type(doc.id) ~= "string" or (doc.type ~= "file" and doc.type ~= "directory") then
    return self.engine:protocol_error(res, "the response is not a file or directory")
  end
  return doc
end

local function post(self, req)
  req.method = "POST"
  req.auth = true
  req.headers[#req.headers + 1] = "Accept: application/json"
  return item_or_error(self, self.engine:send_json(req))
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
  if not body then return self.engine:fail(err) end
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
    body = engine.json.encode({ directory = name }),
  })
end

-- ---- reading back and downloading -------------------------------------------

local function check_id(id, pattern, what)
  if #id > 64 or not id:match(pattern) then return nil, what end
  return true
end

local function api_request(self, method, path, doc)
  local req = { method = method, url = self.base_url .. path, auth = true,
    headers = { "Accept: application/json" } }
  if doc then
    req.headers[#req.headers + 1] = "Content-Type: application/json"
    req.body = engine.json.encode(doc)
  end
  return req
end

--- client:get(id) -> FileOrDirectory | nil, err
function Client:get(id)
  util.check_type(id, "string", 1, "get")
  local ok, why = check_id(id, "^fs[fd]_%w+$", "id must be a file or directory id such as fsf_abc12345678")
  if not ok then return util.invalid(why) end
  return item_or_error(self, self.engine:send_json(api_request(self, "GET", "/files/" .. id)))
end

local function check_link(link, allow_insecure)
  if type(link) ~= "string" then return false end
  local scheme, host = link:match("^(https?)://%[?([^/:%]]+)")
  if not scheme or link:find("[%s%c]") then return false end
  return scheme == "https" or allow_insecure or host == "localhost" or host == "::1"
    or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

--- client:download_link(file_id) -> { link, expiresAt } | nil, err
function Client:download_link(file_id)
  util.check_type(file_id, "string", 1, "download_link")
  local ok, why = check_id(file_id, "^fsf_%w+$",
    "only files can be downloaded: file_id must look like fsf_abc12345678")
  if not ok then return util.invalid(why) end
  local doc, res = self.engine:send_json(api_request(self, "GET", "/files/" .. file_id .. "/download"))
  if not doc then return nil, res end
  if not check_link(doc.link, self.engine.opts.allow_insecure) then
    return self.engine:protocol_error(res, "the response has no usable download link")
  end
  return doc
end

-- What the storage host answers for a link that expired.
local EXPIRED = { [403] = true, [404] = true, [410] = true }

--- client:download(file_id, dest, { overwrite, on_progress }) -> { path, size, resumed } | nil, err
--- dest: a path, or a writer function(chunk) -> true | nil, message.
function Client:download(file_id, dest, opts)
  util.check_type(file_id, "string", 1, "download")
  local dt = type(dest)
  if dt ~= "string" and dt ~= "function" then util.check_type(dest, "string", 2, "download") end
  opts = util.check_type(opts, "table", 3, "download", true) or {}
  util.check_keys(opts, "download", { "overwrite", "on_progress" })
  local overwrite = util.check_field(opts, "overwrite", "boolean", "download")
  local on_progress = util.check_field(opts, "on_progress", "function", "download")
  if dest == "" then return util.invalid("dest must not be empty") end
  local renewed = false
  while true do
    local link, err = self:download_link(file_id)
    if not link then return nil, err end
    -- the link goes to another host: no Authorization, nothing of ours
    local res
    res, err = self.engine:send({ method = "GET", url = link.link, headers = {}, sink = dest,
      overwrite = overwrite, on_download = on_progress })
    if res then
      return { path = dt == "string" and dest or nil, size = res.download.size, resumed = res.download.resumed }
    end
    if renewed or not EXPIRED[err.status or 0] then return nil, err end
    renewed = true -- a fresh link, once
  end
end

-- ---- file shares and file requests --------------------------------------------

-- Every item of a Laravel simple paginator (fileapi.pager).  Follows page
-- numbers: the documented next_page_url carries a stray comma.
local function pages(self, path)
  return pager.new(function(page)
    local doc, res = self.engine:send_json(api_request(self, "GET", path .. "?page=" .. page))
    if not doc then return nil, res end
    if type(doc.data) ~= "table" then
      return nil, select(2, self.engine:protocol_error(res, "the response is not a page of results"))
    end
    return doc.data, doc.next_page_url ~= nil and #doc.data > 0
  end)
end

local function doc_with_id(self, doc, res, prefix, what)
  if not doc then return nil, res end
  if type(doc.id) ~= "string" or doc.id:sub(1, #prefix) ~= prefix then
    return self.engine:protocol_error(res, "the response is not a " .. what)
  end
  return doc
end

--- client:share(ids, { customer_id }) -> FileShare | nil, err
function Client:share(ids, opts)
  if type(ids) == "string" then ids = { ids } end
  util.check_type(ids, "table", 1, "share")
  opts = util.check_type(opts, "table", 2, "share", true) or {}
  util.check_keys(opts, "share", { "customer_id" })
  local customer = util.check_field(opts, "customer_id", "string", "share")
  if #ids == 0 then return util.invalid("ids must list at least one file or directory id") end
  local content = {}
  for i, id in ipairs(ids) do
    if type(id) ~= "string" then util.check_type(id, "string", 1, "share") end
    local ok = check_id(id, "^fs[fd]_%w+$", "")
    if not ok then return util.invalid(("ids[%d] must be a file or directory id such as fsf_abc12345678"):format(i)) end
    content[i] = id
  end
  if customer and not check_id(customer, "^cst_%w+$", "") then
    return util.invalid("customer_id must look like cst_abc12345678")
  end
  local doc, res = self.engine:send_json(api_request(self, "POST", "/file-shares",
    { content = content, customerId = customer }))
  return doc_with_id(self, doc, res, "fss_", "file share")
end

--- client:file_shares() -> iterator over every FileShare
function Client:file_shares()
  return pages(self, "/file-shares")
end

local REQUEST_FIELDS = { "name", "requested_files", "description", "customer_id", "directory" }
local REQUESTED_FILE_FIELDS = { "name", "description", "required", "max_file_size" }

local function requested_file(f, i)
  util.check_keys(f, "request_files", REQUESTED_FILE_FIELDS, 4)
  local out = {
    name = util.check_field(f, "name", "string", "request_files", 4),
    description = util.check_field(f, "description", "string", "request_files", 4),
    required = util.check_field(f, "required", "boolean", "request_files", 4),
    maxFileSize = util.check_field(f, "max_file_size", "number", "request_files", 4),
  }
  if out.name == nil then return nil, ("requested_files[%d] needs a name"):format(i) end
  local ok, why = util.check_name(("requested_files[%d].name"):format(i), out.name)
  if not ok then return nil, why end
  local size = out.maxFileSize
  if size and (size < 0 or size ~= math.floor(size) or size >= 2 ^ 53) then
    return nil, ("requested_files[%d].max_file_size must be a whole number >= 0"):format(i)
  end
  return out
end

--- client:request_files{ name, requested_files = { { name, description, required, max_file_size } },
---   description, customer_id, directory } -> FileRequest | nil, err
function Client:request_files(spec)
  util.check_type(spec, "table", 1, "request_files")
  util.check_keys(spec, "request_files", REQUEST_FIELDS)
  local name = util.check_field(spec, "name", "string", "request_files")
  local list = util.check_field(spec, "requested_files", "table", "request_files")
  local body = {
    name = name,
    description = util.check_field(spec, "description", "string", "request_files"),
    customerId = util.check_field(spec, "customer_id", "string", "request_files"),
    directoryId = util.check_field(spec, "directory", "string", "request_files"),
    requestedFiles = {},
  }
  if name == nil then return util.invalid("name is required") end
  local ok, why = util.check_name("name", name)
  if not ok then return util.invalid(why) end
  if not list or #list < 1 or #list > 10 then return util.invalid("requested_files must list 1 to 10 files") end
  for i, f in ipairs(list) do
    util.check_type(f, "table", 1, "request_files")
    local out
    out, why = requested_file(f, i)
    if not out then return util.invalid(why) end
    body.requestedFiles[i] = out
  end
  if body.customerId and not check_id(body.customerId, "^cst_%w+$", "") then
    return util.invalid("customer_id must look like cst_abc12345678")
  end
  ok, why = check_directory(body.directoryId)
  if not ok then return util.invalid(why) end
  local doc, res = self.engine:send_json(api_request(self, "POST", "/file-requests", body))
  return doc_with_id(self, doc, res, "frq_", "file request")
end

--- client:file_requests() -> iterator over every FileRequest
function Client:file_requests()
  return pages(self, "/file-requests")
end

--- client:file_request(id) -> FileRequest | nil, err
function Client:file_request(id)
  util.check_type(id, "string", 1, "file_request")
  local ok, why = check_id(id, "^frq_%w+$", "id must be a file request id such as frq_abc12345678")
  if not ok then return util.invalid(why) end
  local doc, res = self.engine:send_json(api_request(self, "GET", "/file-requests/" .. id))
  return doc_with_id(self, doc, res, "frq_", "file request")
end

--- client:upload_tree(local_dir, { directory, journal, on_item, on_progress, on_plan, hidden,
---   follow_symlinks, stop_on_error, parallel }) -> summary | nil, err
--- summary: { directories, files, bytes, skipped, failed, loops, errors = { { path, error } }, complete }
--- (loops: folders reached again through a followed link, each also told to on_item with loop = true).
--- The directories are made first, one at a time; then the files, `parallel` at once (default 1);
--- on_plan(files, bytes) is told what is left to send in between.
function Client:upload_tree(local_dir, opts)
  util.check_type(local_dir, "string", 1, "upload_tree")
  opts = util.check_type(opts, "table", 2, "upload_tree", true) or {}
  util.check_keys(opts, "upload_tree", tree.OPTIONS, { "directory" })
  util.check_field(opts, "directory", "string", "upload_tree")
  local checked, bad = tree.check(opts, "upload_tree")
  if not checked then return util.invalid(bad) end
  if local_dir == "" then return util.invalid("local_dir must not be empty") end
  local ok, why = check_directory(opts.directory)
  if not ok then return util.invalid(why) end
  local summary, err = tree.upload(self, local_dir, opts)
  if not summary then return util.fail_before(self.engine, err) end
  return summary
end

--- client:rate_limit() -> { limit, remaining, reset } as the API last said, or nil
function Client:rate_limit()
  return self.engine:rate_limit()
end

--- client:close()
--- Idempotent; `__gc` and (Lua 5.4) `__close` do it too.
function Client:close()
  self.engine:close()
  local p = private[self]
  if p and p.token_engine then p.token_engine:close() end
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

--- files.upload(source, opts) -> item | nil, err
--- client:upload on a default client made from $MKP_API_KEY and $MKP_BASE_URL.
function M.upload(source, opts)
  local client, err = default_client()
  if not client then return nil, err end
  return client:upload(source, opts)
end

--- files.mkdir(name, opts) -> dir | nil, err
--- client:mkdir on that default client (a new one when either variable changed).
function M.mkdir(name, opts)
  local client, err = default_client()
  if not client then return nil, err end
  return client:mkdir(name, opts)
end

return M
