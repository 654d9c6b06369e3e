-- files.ro shared folders: create a folder in a share
-- (POST /api/v1/shares/{token}/items, JSON).
local util = require "fileapi.util"
local transport = require "fileapi.transport"

local type, pairs, setmetatable, getenv = type, pairs, setmetatable, os.getenv
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
      error("bad option 'headers' to 'new' (string names and values expected)", 4)
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
  local topts, msg = transport.check_options(opts, "new", NEW_OPTIONS)
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
  local t, err = transport.new(topts, secrets)
  if not t then return nil, err end
  local share = setmetatable({ transport = t }, Share)
  private[share] = { url = base .. "/api/v1/shares/" .. util.pct(token) .. "/items", headers = headers }
  return share
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- data.id, data.type and the attributes at top level; relationships as sent.
local function flatten(doc)
  local data = doc.data
  if type(data) ~= "table" or type(data.id) ~= "string" or type(data.attributes) ~= "table" then
    return nil
  end
  local folder = {}
  for k, v in pairs(data.attributes) do folder[k] = v end
  folder.id, folder.type, folder.relationships = data.id, data.type, data.relationships
  return folder
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

  local json = transport.json
  local body = '{"name":' .. json.encode(name)
    .. (parent and ',"parent_id":' .. json.encode(parent) or "") .. "}"
  local headers = { "Content-Type: application/json", "Accept: application/json" }
  local own = private[self]
  for i = 1, #own.headers do headers[#headers + 1] = own.headers[i] end
  local doc, res = self.transport:send_json({ method = "POST", url = own.url, headers = headers, body = body })
  if not doc then return nil, res end
  local folder = flatten(doc)
  if not folder then return self.transport:protocol_error(res, "the response is not a folder document") end
  return folder
end

function Share:close()
  self.transport:close()
end

Share.__close = Share.close

--- shares.mkdir(token, name, opts): one-shot; opts carry client options too.
function M.mkdir(token, name, opts)
  util.check_type(token, "string", 1, "mkdir")
  util.check_type(name, "string", 2, "mkdir")
  opts = util.check_type(opts, "table", 3, "mkdir", true) or {}
  util.check_keys(opts, "mkdir", transport.OPTION_NAMES, { "headers", "parent_id" })
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
