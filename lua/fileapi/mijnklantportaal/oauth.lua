-- MijnKlantportaal OAuth for third-party applications, after the
-- service's OAuth reference: the consent URL and its state, and the
-- token endpoint (POST /oauth/tokens on the manage host) for the code
-- exchange and for the refreshes of the keeper a client holds its tokens
-- in (fileapi.mijnklantportaal.oauth_keeper); the names of refresh tokens
-- and the checks of the oauth table files.new takes.
local core = require "fileapi.core"
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"
local client_options = require "fileapi.client_options"
local cjson = require("cjson").new()

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local rawget = rawget
local floor, byte = math.floor, string.byte

local M = {}

M.DEFAULT_BASE_URL = "https://manage.mijnklantportaal.nl"
M.TOKEN_FIELDS = { "client_id", "client_secret", "access_token", "refresh_token", "expires_at" }

local function now() return core.time() end

-- The manage host's root: oauth_base_url, $MKP_OAUTH_BASE_URL, or the default.
function M.base_url(given, allow_insecure)
  return util.check_base_url(given or os.getenv("MKP_OAUTH_BASE_URL") or M.DEFAULT_BASE_URL, allow_insecure)
end

local function printable(what, s)
  if type(s) ~= "string" or s == "" or s:find("[^\33-\126]") then
    return nil, what .. " must be printable ASCII without spaces"
  end
  return true
end

-- ---- step 1: the consent URL ----------------------------------------------

local AUTHORIZE_OPTIONS = { "client_id", "redirect_uri", "scope", "prompt", "state", "oauth_base_url" }

--- files.authorize_url{ client_id, redirect_uri, scope, prompt, state, oauth_base_url } -> url, state | nil, err
function M.authorize_url(opts)
  util.check_type(opts, "table", 1, "authorize_url")
  util.check_keys(opts, "authorize_url", AUTHORIZE_OPTIONS)
  local client_id = util.check_field(opts, "client_id", "string", "authorize_url")
  local redirect = util.check_field(opts, "redirect_uri", "string", "authorize_url")
  local prompt = util.check_field(opts, "prompt", "string", "authorize_url")
  local state = util.check_field(opts, "state", "string", "authorize_url")
  local base_given = util.check_field(opts, "oauth_base_url", "string", "authorize_url")
  local scope = opts.scope
  if type(scope) ~= "table" and type(scope) ~= "string" then util.check_type(scope, "table", 1, "authorize_url") end
  local ok, why = printable("client_id", client_id)
  if not ok then return util.invalid(why) end
  if not (redirect and redirect:match("^https?://[^%s]+$")) then
    return util.invalid("redirect_uri must be an http(s) URL registered for the application")
  end
  local scopes = type(scope) == "string" and { scope } or scope
  local names = {}
  for _, s in ipairs(scopes) do
    for name in tostring(s):gmatch("%S+") do
      if not name:match("^[%w_]+%.[%w_]+$") then return util.invalid("scope names look like files.read, not " .. name) end
      names[#names + 1] = name
    end
  end
  if #names == 0 then return util.invalid("scope must name at least one scope, such as files.read") end
  if prompt ~= nil and prompt ~= "consent" and prompt ~= "login" then
    return util.invalid('prompt must be "consent" or "login"')
  end
  if state == nil then
    -- 26 of 36 characters: 134 bits nobody can guess
    state = core.random_token(26)
    if not state then return nil, util.new_error("io", "no random bytes for the state (/dev/urandom)") end
  elseif state == "" then
    return util.invalid("state must not be empty")
  end
  local base, berr = M.base_url(base_given, true)
  if not base then return util.invalid(berr) end
  local query = {
    "client_id=" .. util.pct(client_id), "redirect_uri=" .. util.pct(redirect), "state=" .. util.pct(state),
    "scope=" .. util.pct(table.concat(names, " ")), "response_type=code",
  }
  if prompt then query[#query + 1] = "prompt=" .. prompt end
  return base .. "/oauth/authorize?" .. table.concat(query, "&"), state
end

--- files.check_state(expected, got) -> boolean, in time that does not depend on where they differ
function M.check_state(expected, got)
  if type(expected) ~= "string" or type(got) ~= "string" or expected == "" then return false end
  local diff = #expected == #got and 0 or 1
  for i = 1, #expected do
    local a, b = byte(expected, i), byte(got, i) or 0
    if a ~= b then diff = 1 end
  end
  return diff == 0
end

-- ---- steps 2 and 3: POST /oauth/tokens --------------------------------------

-- A token endpoint that refuses: RFC 6749 5.2's {error, error_description}
-- when it sent one; any 400 or 401 is the grant's (or the client's) fault.
local function token_error(err)
  if not (err.status == 400 or err.status == 401) then return err end
  local code = err.oauth_error or (err.status == 401 and "invalid_client" or "invalid_grant")
  err.kind, err.oauth_error, err.retryable = "unauthorized", code, false
  if err.message == engine.status_message(err.status) then -- no words of the server's own
    err.message = "the token endpoint refused the request (" .. code .. ")"
  end
  return err
end

-- The documented answer: access_token, expires_in, and refresh_token on a
-- code exchange (a refresh may carry one too: then it replaces the old).
local function token_doc(doc, res, t, need_refresh)
  if type(doc) ~= "table" then return nil, res end
  local ttl = tonumber(doc.expires_in)
  if type(doc.access_token) ~= "string" or doc.access_token == "" or not ttl or ttl < 0
      or (need_refresh and type(doc.refresh_token) ~= "string") then
    return t:protocol_error(res, "the token endpoint's answer has no access_token and expires_in")
  end
  return { access_token = doc.access_token, refresh_token = type(doc.refresh_token) == "string"
    and doc.refresh_token or nil, expires_in = ttl, expires_at = floor(now() + ttl) }
end

-- deadline: when the request (and any wait between its attempts) must be
-- over: a refresh under a lock ends within the lock's lease.  The keeper's
-- refreshes come this way too.
local function post_tokens(t, base, body, need_refresh, deadline)
  local doc, res = t:send_json({ method = "POST", url = base .. "/oauth/tokens", body = cjson.encode(body),
    headers = { "Content-Type: application/json", "Accept: application/json" }, deadline = deadline })
  if not doc then return nil, token_error(res) end
  return token_doc(doc, res, t, need_refresh)
end
M.post_tokens = post_tokens

local EXCHANGE_FIELDS = { "client_id", "client_secret", "redirect_uri", "code", "oauth_base_url" }

--- files.exchange_code{ client_id, client_secret, redirect_uri, code, oauth_base_url, <transport options> }
---   -> { access_token, refresh_token, expires_in, expires_at } | nil, err
function M.exchange_code(opts)
  util.check_type(opts, "table", 1, "exchange_code")
  local fields = {}
  for _, k in ipairs(EXCHANGE_FIELDS) do fields[k] = util.check_field(opts, k, "string", "exchange_code") end
  local topts, msg = client_options.check(M.without(opts, EXCHANGE_FIELDS), "exchange_code", EXCHANGE_FIELDS)
  if not topts then return util.invalid(msg) end
  for _, k in ipairs({ "client_id", "client_secret", "code" }) do
    local ok, why = printable(k, fields[k])
    if not ok then return util.invalid(why) end
  end
  if not (fields.redirect_uri and fields.redirect_uri:match("^https?://%S+$")) then
    return util.invalid("redirect_uri must be the one the consent URL named")
  end
  local base, why = M.base_url(fields.oauth_base_url, topts.allow_insecure)
  if not base then return util.invalid(why) end
  topts.rate_limit = false
  -- the client id is a secret too: a server's error may name it
  local secrets = { fields.client_id, fields.client_secret, fields.code }
  local t, err = engine.new(topts, secrets)
  if not t then return nil, err end
  local tokens
  tokens, err = post_tokens(t, base, { grant_type = "authorization_code", client_id = fields.client_id,
    client_secret = fields.client_secret, redirect_uri = fields.redirect_uri, code = fields.code }, true)
  t:close()
  if not tokens then return nil, err end
  return tokens
end

-- A copy of opts without the named keys.
function M.without(opts, names)
  local skip, out = {}, {}
  for _, k in ipairs(names) do skip[k] = true end
  for k, v in pairs(opts) do
    if not skip[k] then out[k] = v end
  end
  return out
end

-- What names a refresh token (and so its grant) in a shared record and in
-- the rate budget: a hash, never the token.  (Without libcrypto and outside
-- nginx nothing is shared, and the process's own budget keys by the text.)
function M.token_id(client_id, refresh_token)
  local s = client_id .. "\0" .. refresh_token
  if core.sha256 then return core.sha256(s) end
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and ngx.md5 then return ngx.md5(s) end
  return s
end

-- The oauth table's fields, checked: a wrong type raises (at the line that
-- called files.new, two calls up), a bad value is nil, message.
function M.check_tokens(o, fname)
  util.check_keys(o, fname, M.TOKEN_FIELDS, 5)
  for _, key in ipairs({ "client_id", "client_secret", "access_token", "refresh_token" }) do
    util.check_field(o, key, "string", fname, 5)
  end
  util.check_field(o, "expires_at", "number", fname, 5)
  for _, key in ipairs({ "client_id", "client_secret", "refresh_token" }) do
    local ok, why = printable("oauth." .. key, o[key])
    if not ok then return nil, why .. " (required)" end
  end
  if o.access_token ~= nil then
    local ok, why = printable("oauth.access_token", o.access_token)
    if not ok then return nil, why end
  end
  return true
end

return M
