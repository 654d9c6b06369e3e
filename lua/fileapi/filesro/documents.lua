-- What files.ro's documents and answers look like, for the share link's
-- visitor (fileapi.shares) and the account's owner (fileapi.drive) alike:
-- ids, items, the flattened documents, and the errors it sends as a 2xx.
local util = require "fileapi.util"

local type, pairs, ipairs, error, format = type, pairs, ipairs, error, string.format

local M = {}

M.UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

function M.is_uuid(s)
  return type(s) == "string" and s:match(M.UUID) ~= nil
end

-- data.id, data.type and the attributes at top level; relationships (and
-- the document's meta) as sent.  nil when the document is not one.
function M.flatten(doc)
  local data = type(doc) == "table" and doc.data
  if type(data) ~= "table" or type(data.id) ~= "string" or type(data.attributes) ~= "table" then
    return nil
  end
  local out = {}
  for k, v in pairs(data.attributes) do out[k] = v end
  out.id, out.type, out.relationships = data.id, data.type, data.relationships
  if type(doc.meta) == "table" then out.meta = doc.meta end
  return out
end

-- Items are { type = "file"|"folder", id = uuid }; nil, message when not.
-- Wrong Lua types raise at the line that called the public function
-- (level: as util.check_type's).
function M.check_items(items, fname, level)
  level = level or 3
  if #items == 0 then return nil, "items must list at least one { type =, id = }" end
  for i, item in ipairs(items) do
    if type(item) ~= "table" then error(format("bad item #%d to '%s' (table expected)", i, fname), level) end
    util.check_keys(item, fname, { "type", "id" }, level + 1)
    if item.type ~= "file" and item.type ~= "folder" then
      return nil, format("item #%d: type must be \"file\" or \"folder\"", i)
    end
    if not M.is_uuid(item.id) then return nil, format("item #%d: id must be a UUID", i) end
  end
  return true
end

-- One item, as the owner's single-item calls take it.
function M.check_item(item, fname)
  if type(item) ~= "table" then
    error(format("bad argument #1 to '%s' (table expected, got %s)", fname, type(item)), 3)
  end
  local ok, why = M.check_items({ item }, fname, 4)
  return ok, why
end

-- A 401 is a refused token, as its status says, also when typed: the
-- documented one is {"type":"error","message":"You are not authorized"}.
-- Only a limit's typed 401 (a plan or quota that forbids it, the members
-- limit, another user's token: the owner's reference) says the token may not
-- do this: forbidden, so that nobody signs in again over it.
local LIMIT_401 = {
  ["This user action is not allowed."] = true,
  ["You exceed your members limit."] = true,
  ["You are not entitled to delete this token."] = true,
}

function M.refine_401(err, doc)
  if err.status == 401 and type(doc) == "table" and doc.type == "error" and LIMIT_401[doc.message] then
    err.kind = "forbidden"
  end
end

-- The typed 2xx: upstream hands a finished error response to abort(),
-- which drops its status, so "not found" arrives as 200 {"type":"error"}.
-- Returns the kind and message of such a body, or nil for a real success.
local TYPED_KINDS = {
  ["The requested entry wasn't found."] = "not_found",
  ["You're trying to access non-team folder."] = "not_found",
}

function M.typed_error(doc)
  if type(doc) ~= "table" or doc.type ~= "error" then return nil end
  local message = type(doc.message) == "string" and doc.message ~= "" and doc.message
    or "the server answered with an error"
  return TYPED_KINDS[message] or "http", message
end

return M
