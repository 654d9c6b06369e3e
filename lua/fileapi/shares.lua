-- files.ro shared folders: create folders (POST …/items), upload files
-- (POST …/uploads, chunked when large: fileapi.filesro.chunks), delete items
-- (DELETE …/items) and move them (POST …/moves), on a share token.
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"
local client_options = require "fileapi.client_options"
local chunks = require "fileapi.filesro.chunks"
local documents = require "fileapi.filesro.documents"

local type, pairs, ipairs, setmetatable, getenv, error = type, pairs, ipairs, setmetatable, os.getenv, error
local lower = string.lower

local M = {}
local Share = {}
Share.__index = Share

-- The share's URL (it holds the token) and the extra headers (cookies) are
-- kept here, keyed by the share, so that pairs(share) shows no secret.
local private = setmetatable({}, { __mode = "k" })

local NEW_OPTIONS = { "token", "headers" }

M.DEFAULT_BASE_URL = "https://files.ro"

-- Headers the client itself owns; a caller's copy could corrupt the request.
local RESERVED = { ["content-type"] = true, ["content-length"] = true, host = true,
  ["transfer-encoding"] = true, expect = true, connection = true }

local function check_token(token)
  if token == "" then return nil, "token must not be empty" end
  if #token > 512 then return nil, "token is too long" end
  if util.has_control(token) then return nil, "token must not contain control characters" end
  return true
end

-- Extra headers, as {Name = value}; values are secrets (cookies, say).
local function build_headers(headers, secrets)
  local lines = {}
  for name, value in pairs(headers or {}) do
    if type(name) ~= "string" or type(value) ~= "string" then
      error("bad option 'headers' to 'new' (string names and values expected)", 3)
    end
    if not name:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      return nil, "header name '" .. name:gsub("%c", "?") .. "' is not a valid token"
    end
    if RESERVED[lower(name)] then return nil, "header " .. name .. " is set by the client" end
    if util.has_control(value:gsub("\t", " ")) then
      return nil, "header " .. name .. " must not contain control characters"
    end
    lines[#lines + 1] = name .. ": " .. value
    secrets[#secrets + 1] = value
  end
  table.sort(lines)
  return lines
end

--- shares.new{ token, base_url, headers, <transport options> } -> share | nil, err
function M.new(opts)
  util.check_type(opts, "table", 1, "new")
  local token = util.check_field(opts, "token", "string", "new")
  util.check_field(opts, "headers", "table", "new")
  local topts, msg = client_options.check(opts, "new", NEW_OPTIONS)
  if token == nil then return util.invalid("token is required") end
  local ok, why = check_token(token)
  if not ok then return util.invalid(why) end
  if not topts then return util.invalid(msg) end
  local base
  base, why = util.check_base_url(topts.base_url or getenv("FILESRO_BASE_URL") or M.DEFAULT_BASE_URL,
    topts.allow_insecure)
  if not base then return util.invalid(why) end
  local secrets = { token, util.pct(token) }
  local headers
  headers, why = build_headers(opts.headers, secrets)
  if not headers then return util.invalid(why) end
  -- files.ro counts a visitor's requests by IP: one budget per host
  local t, err = engine.new(topts, secrets, "files.ro:" .. base)
  if not t then return nil, err end
  local share = setmetatable({ engine = t }, Share)
  private[share] = { base = base .. "/api/v1/shares/" .. util.pct(token) .. "/", headers = headers }
  return share
end

local UUID = documents.UUID
local flatten = documents.flatten

-- A POST to one of the share's calls, with the share's own headers (not a
-- method: they hold secrets).
local function new_request(self, call, headers)
  local own = private[self]
  headers[#headers + 1] = "Accept: application/json"
  for i = 1, #own.headers do headers[#headers + 1] = own.headers[i] end
  return { method = "POST", url = own.base .. call, headers = headers }
end

--- share:mkdir(name, { parent_id }) -> folder | nil, err
function Share:mkdir(name, opts)
  util.check_type(name, "string", 1, "mkdir")
  opts = util.check_type(opts, "table", 2, "mkdir", true) or {}
  util.check_keys(opts, "mkdir", { "parent_id" })
  local parent = util.check_field(opts, "parent_id", "string", "mkdir")
  local ok, why = util.check_name("name", name)
  if not ok then return util.invalid(why) end
  if parent and not parent:match(UUID) then return util.invalid("parent_id must be a UUID") end

  local json = engine.json
  local req = new_request(self, "items", { "Content-Type: application/json" })
  req.body = '{"name":' .. json.encode(name) .. (parent and ',"parent_id":' .. json.encode(parent) or "") .. "}"
  local doc, res = self.engine:send_json(req)
  if not doc then return nil, res end
  local folder = flatten(doc)
  if not folder then return self.engine:protocol_error(res, "the response is not a folder document") end
  return folder
end

--- share:upload(source, { parent_id, path, name, extension, chunk_size, on_progress })
--- -> file document (flattened like mkdir's) | nil, err
function Share:upload(source, opts)
  local plan, perr = chunks.check_upload(self.engine, source, opts)
  if not plan then return nil, perr end
  local res, err = chunks.send(self.engine, plan, plan.on_progress,
    function(headers) return new_request(self, "uploads", headers) end)
  if not res then return nil, err end
  local doc = engine.decode_json(res.body)
  local file = type(doc) == "table" and flatten(doc)
  if not file then return self.engine:protocol_error(res, "the response is not a file document") end
  return file
end

local check_items = documents.check_items

-- 204, or a 2xx whose body says {"type":"success"}, is done; upstream
-- answers an unknown id with 200 {"type":"error",…}: that is not found.
local function done_or_error(self, res, err)
  if not res then return nil, err end
  local kind, message = documents.typed_error(engine.decode_json(res.body))
  if kind then
    return self.engine:fail(util.new_error(kind, message, { status = res.status, attempts = res.attempts }))
  end
  return true
end

--- share:delete(items, { force }) -> true | nil, err
function Share:delete(items, opts)
  util.check_type(items, "table", 1, "delete")
  opts = util.check_type(opts, "table", 2, "delete", true) or {}
  util.check_keys(opts, "delete", { "force" })
  local force = util.check_field(opts, "force", "boolean", "delete") or false
  local ok, why = check_items(items, "delete")
  if not ok then return util.invalid(why) end
  local list = {}
  for i, item in ipairs(items) do list[i] = { force_delete = force, type = item.type, id = item.id } end
  local req = new_request(self, "items", { "Content-Type: application/json" })
  req.method, req.body = "DELETE", engine.json.encode({ items = list })
  return done_or_error(self, self.engine:send(req))
end

--- share:move(items, { to_id }) -> true | nil, err; no to_id: the share's root
function Share:move(items, opts)
  util.check_type(items, "table", 1, "move")
  opts = util.check_type(opts, "table", 2, "move", true) or {}
  util.check_keys(opts, "move", { "to_id" })
  local to = util.check_field(opts, "to_id", "string", "move")
  local ok, why = check_items(items, "move")
  if not ok then return util.invalid(why) end
  if to and not to:match(UUID) then return util.invalid("to_id must be a UUID") end
  local list = {}
  for i, item in ipairs(items) do list[i] = { type = item.type, id = item.id } end
  local req = new_request(self, "moves", { "Content-Type: application/json" })
  -- upstream refuses an explicit null: the root is asked for by leaving it out
  req.body = engine.json.encode({ items = list, to_id = to })
  return done_or_error(self, self.engine:send(req))
end

--- share:rate_limit() -> { limit, remaining, reset } as the server last said, or nil
function Share:rate_limit()
  return self.engine:rate_limit()
end

--- share:close()
--- Idempotent; `__gc` and (Lua 5.4) `__close` do it too.
function Share:close()
  self.engine:close()
end

Share.__close = Share.close

--- shares.mkdir(token, name, opts) -> folder | nil, err
--- A one-shot: opts carry client options too (base_url, timeouts).
function M.mkdir(token, name, opts)
  util.check_type(token, "string", 1, "mkdir")
  util.check_type(name, "string", 2, "mkdir")
  opts = util.check_type(opts, "table", 3, "mkdir", true) or {}
  util.check_keys(opts, "mkdir", engine.OPTION_NAMES, { "headers", "parent_id" })
  local copts = {}
  for k, v in pairs(opts) do copts[k] = v end
  copts.token, copts.parent_id = token, nil
  local share, err = M.new(copts)
  if not share then return nil, err end
  local folder
  folder, err = share:mkdir(name, { parent_id = opts.parent_id })
  share:close()
  return folder, err
end

return M
