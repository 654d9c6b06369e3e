-- files.ro for the account's owner (a Bearer token): signing in and
-- personal tokens here; the items (upload, rename, move, delete, restore,
-- zip, the folder tree) in fileapi.filesro.owner_items; share links, team
-- folders and file requests in fileapi.filesro.owner_sharing.  The calls
-- and their answers: the service's reference for the account's owner.
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"
local client_options = require "fileapi.client_options"
local credentials = require "fileapi.credentials"
local common = require "fileapi.filesro.owner_common"
local documents = require "fileapi.filesro.documents"
local owner_items = require "fileapi.filesro.owner_items"
local owner_sharing = require "fileapi.filesro.owner_sharing"

local type, pairs, ipairs, setmetatable, getenv, tostring, tonumber =
  type, pairs, ipairs, setmetatable, os.getenv, tostring, tonumber
local floor = math.floor

local M = {}
local Drive = {}
Drive.__index = Drive

M.DEFAULT_BASE_URL = "https://files.ro"

local function check_token(token)
  if token == nil or token == "" then
    return nil, "token is required: pass token, set FILESRO_API_TOKEN or sign in once with `fileapi drive-login`"
      .. " (drive.login{ email, password } gives one)"
  end
  if #token > 512 or token:find("[^\33-\126]") then
    return nil, "token must be printable ASCII without spaces or control characters"
  end
  return true
end

local function base_url(topts)
  return util.check_base_url(topts.base_url or getenv("FILESRO_BASE_URL") or M.DEFAULT_BASE_URL,
    topts.allow_insecure)
end

--- drive.default_token() -> the token drive.new uses when given none | nil, why
--- $FILESRO_API_TOKEN; else, outside nginx, the one `fileapi drive-login`
--- stored (fileapi.credentials: one reader, one file, the command's too).  Inside
--- nginx a server never takes up a person's sign-in by accident.
function M.default_token()
  local env = getenv("FILESRO_API_TOKEN")
  if env and env ~= "" then return env end
  if rawget(_G, "ngx") then return nil end
  local stored, why = credentials.load_drive()
  if stored then return stored.token end
  return nil, why
end

--- drive.new{ token, base_url, <transport options> } -> drive | nil, err
function M.new(opts)
  opts = util.check_type(opts, "table", 1, "new", true) or {}
  local token = util.check_field(opts, "token", "string", "new")
  local topts, msg = client_options.check(opts, "new", { "token" })
  if token == nil then
    local why
    token, why = M.default_token()
    if why then return util.invalid(why) end
  end
  local ok, why = check_token(token)
  if not ok then return util.invalid(why) end
  if not topts then return util.invalid(msg) end
  local base
  base, why = base_url(topts)
  if not base then return util.invalid(why) end
  -- upstream counts an owner's requests per user (1000 a minute): the
  -- budget is keyed by the token
  local t, err = engine.new(topts, { token, util.pct(token) }, "files.ro-owner:" .. token)
  if not t then return nil, err end
  t.auth = engine.static_auth("Authorization: Bearer " .. token)
  -- a limit's typed 401 is no refused token (documents.refine_401)
  t.refine_error = documents.refine_401
  return setmetatable({ engine = t, api = base .. "/api/v1" }, Drive)
end

-- The token in a login answer: the docs' {"data":{"token":…}}, or a bare
-- string (upstream's controller returns the plain text token).
local function token_of(res)
  local doc = engine.decode_json(res.body)
  if type(doc) == "table" and type(doc.data) == "table" and type(doc.data.token) == "string" then
    return doc.data.token
  end
  if type(doc) == "string" then return doc end
  local text = res.body:match("^%s*(%d+|%S+)%s*$")
  return text
end

local INCORRECT = "The provided credentials are incorrect."

-- A refused sign-in is unauthorized whatever its status: upstream answers
-- an unknown address with 404 and a wrong password with 422.
local function login_error(err)
  local fields = err.fields and err.fields.email
  if err.status == 404 or (err.status == 422 and type(fields) == "table" and fields[1] == INCORRECT) then
    err.kind = "unauthorized"
    if err.status == 404 then err.message = "no files.ro account has this e-mail address" end
  end
  return nil, err
end

--- drive.login{ email, password, base_url, <transport options> } -> token | nil, err
function M.login(opts)
  util.check_type(opts, "table", 1, "login")
  local email = util.check_field(opts, "email", "string", "login")
  local password = util.check_field(opts, "password", "string", "login")
  local topts, msg = client_options.check(opts, "login", { "email", "password" })
  local ok, why = common.check_email(email, "email")
  if not ok then return util.invalid(why) end
  if password == nil or password == "" then return util.invalid("password is required") end
  if util.has_control(password) or #password > 1024 then
    return util.invalid("password must be at most 1024 bytes without control characters")
  end
  if not topts then return util.invalid(msg) end
  local base
  base, why = base_url(topts)
  if not base then return util.invalid(why) end
  topts.rate_limit = false -- one request; upstream allows 5 a minute per address
  local t, err = engine.new(topts, { password, util.pct(password) })
  if not t then return nil, err end
  local res
  res, err = t:send({ method = "POST", url = base .. "/api/v1/login",
    headers = { "Accept: application/json", "Content-Type: application/json" },
    body = engine.json.encode({ email = email, password = password }) })
  t:close()
  if not res then return login_error(err) end
  local token = token_of(res)
  if not token or not check_token(token) then
    return t:protocol_error(res, "the login answer holds no token")
  end
  return token
end

--- d:me() -> the user document, flattened (meta: restrictions)
function Drive:me()
  local doc, res = common.send_doc(self, common.request(self, "GET", "/user"))
  if not doc then return nil, res end
  return common.flat(self, doc, res, "a user document")
end

--- d:create_token(name) -> { id, name, token } (the token is shown only now)
function Drive:create_token(name)
  util.check_type(name, "string", 1, "create_token")
  local ok, why = util.check_name("name", name)
  if not ok then return util.invalid(why) end
  if #name < 3 then return util.invalid("name must be at least 3 characters") end
  local doc, res = common.send_doc(self, common.request(self, "POST", "/user/tokens", { name = name }))
  if not doc then return nil, res end
  local at, plain = doc.accessToken, doc.plainTextToken
  if type(at) ~= "table" or type(plain) ~= "string" or not check_token(plain) then
    return self.engine:protocol_error(res, "the response is not a new access token")
  end
  local id = tonumber(at.id) or tonumber(plain:match("^(%d+)|"))
  return { id = id, name = at.name, abilities = at.abilities, token = plain }
end

-- A token id: the number, or the plain token, whose part before | it is.
local function token_id(id)
  if type(id) == "string" then id = tonumber(id:match("^(%d+)|") or id:match("^%d+$")) end
  if type(id) ~= "number" or id ~= floor(id) or id < 1 or id >= 2 ^ 53 then return nil end
  return ("%d"):format(id)
end

--- d:delete_token(id) -> true | nil, err; id: the number (or the token itself)
function Drive:delete_token(id)
  local t = type(id)
  if t ~= "number" and t ~= "string" then util.check_type(id, "number", 1, "delete_token") end
  local text = token_id(id)
  if not text then return util.invalid("id must be a token id (a whole number >= 1)") end
  return common.send_done(self, common.request(self, "DELETE", "/user/tokens/" .. text))
end

--- d:rate_limit() -> what the server last said of the limit, or nil
function Drive:rate_limit()
  return self.engine:rate_limit()
end

--- d:close()
--- Idempotent; `__gc` and (Lua 5.4) `__close` do it too.
function Drive:close()
  self.engine:close()
end

Drive.__close = Drive.close

Drive.__tostring = function(self)
  return "fileapi.drive (" .. tostring(self.api) .. ")"
end

-- the items' and the sharing calls are methods too
for _, calls in ipairs({ owner_items, owner_sharing }) do
  for k, fn in pairs(calls) do Drive[k] = fn end
end

return M
