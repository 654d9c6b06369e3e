-- What the owner's calls share: their requests (Bearer token, JSON), the
-- reading of files.ro's answers (a typed error in a 2xx is an error), and
-- the checks every value passes before anything is sent.
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"
local documents = require "fileapi.filesro.documents"

local type, ipairs, format, floor = type, ipairs, string.format, math.floor

local M = {}

-- A request to base/api/v1<path>; doc: a JSON body (a table, or the
-- JSON text itself).
function M.request(self, method, path, doc)
  local req = { method = method, url = self.api .. path, auth = true, headers = { "Accept: application/json" } }
  if doc ~= nil then
    req.headers[#req.headers + 1] = "Content-Type: application/json"
    req.body = type(doc) == "string" and doc or engine.json.encode(doc)
  end
  return req
end

-- A typed error in a 2xx body as nil, err of its kind; nil for a success.
local function typed(self, doc, res)
  local kind, message = documents.typed_error(doc)
  if not kind then return nil end
  return self.engine:fail(util.new_error(kind, message, { status = res.status, attempts = res.attempts }))
end

M.typed = typed

-- A call answered with a document: the decoded JSON object and the response.
function M.send_doc(self, req)
  local doc, res = self.engine:send_json(req)
  if not doc then return nil, res end
  local _, err = typed(self, doc, res)
  if err then return nil, err end
  return doc, res
end

-- A call answered with a message (or nothing): true.
function M.send_done(self, req)
  local res, err = self.engine:send(req)
  if not res then return nil, err end
  local _, terr = typed(self, engine.decode_json(res.body), res)
  if terr then return nil, terr end
  return true, res
end

-- A document flattened (documents.flatten), or a protocol error naming what
-- was expected.
function M.flat(self, doc, res, what)
  local out = documents.flatten(doc)
  if not out then return self.engine:protocol_error(res, "the response is not " .. what) end
  return out
end

-- The message of a {"type":"success","message":…} answer, or nil.
function M.message_of(res)
  local doc = engine.decode_json(res.body)
  if type(doc) == "string" then return doc end
  return type(doc) == "table" and type(doc.message) == "string" and doc.message or nil
end

-- ---- checks ------------------------------------------------------------------

-- The shape of an address (Laravel's `email` rule, without its DNS part).
function M.check_email(s, what)
  if type(s) ~= "string" or #s > 254 or util.has_control(s) or not s:match("^[^%s@]+@[^%s@]+%.[^%s@.]+$") then
    return nil, what .. " must be an e-mail address"
  end
  return true
end

-- A non-empty list of addresses; nil passes when optional.
function M.check_emails(list, what, optional)
  if list == nil and optional then return true end
  if type(list) ~= "table" or #list == 0 then return nil, what .. " must list at least one e-mail address" end
  for i, e in ipairs(list) do
    local ok, why = M.check_email(e, format("%s #%d", what, i))
    if not ok then return nil, why end
  end
  return true
end

-- Hours as the API takes them: a whole number from 1 (no expiry: leave it out).
function M.check_hours(h, what)
  if h == nil then return true end
  if type(h) ~= "number" or h ~= floor(h) or h < 1 or h > 24 * 365 * 100 then
    return nil, what .. " must be a whole number of hours >= 1"
  end
  return true
end

function M.check_uuid(s, what, optional)
  if s == nil and optional then return true end
  if not documents.is_uuid(s) then return nil, what .. " must be a UUID" end
  return true
end

M.PERMISSIONS = { editor = true, visitor = true }
M.MEMBER_PERMISSIONS = { ["can-edit"] = true, ["can-view"] = true }

-- A share token: letters and digits (16 of them from files.ro).
function M.check_share_token(s, what)
  if type(s) ~= "string" or #s < 1 or #s > 64 or s:find("[^%w]") then
    return nil, what .. " must be a share token (letters and digits)"
  end
  return true
end

-- The option tables every call takes, checked for names and types.
function M.options(opts, argn, fname, known)
  opts = util.check_type(opts, "table", argn, fname, true, 4) or {}
  util.check_keys(opts, fname, known, 4)
  return opts
end

return M
