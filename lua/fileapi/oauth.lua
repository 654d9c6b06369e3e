-- MijnKlantportaal OAuth for third-party applications
-- (reference/mijnklantportaal-oauth.md): the consent URL and its state, the
-- code exchange and refreshes at POST /oauth/tokens on the manage host, and
-- the keeper a client holds its tokens in.
--
-- The keeper refreshes before a call when the access token expires within a
-- minute, and once after a 401.  One refresh goes out per expiry: light
-- threads of a client wait for the one under way; with token_dict, the
-- workers of an nginx share the tokens and a lock in that lua_shared_dict
-- (the others wait for the new token and never send the old refresh token);
-- with `store`, every machine of a fleet shares them the same way
-- (fileapi.store.tokens, at the seam of shared_tokens below).
-- A refresh the token endpoint refuses (invalid_grant, any 400 or 401)
-- leaves the keeper failing fast with that error until set_tokens.
local core = require "fileapi.core"
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"
local cjson = require("cjson").new()

local type, pairs, ipairs, tostring, tonumber, pcall = type, pairs, ipairs, tostring, tonumber, pcall
local floor, byte = math.floor, string.byte

local M = {}

M.DEFAULT_BASE_URL = "https://manage.mijnklantportaal.nl"
M.REFRESH_AHEAD = 60 -- seconds: refresh when the token expires sooner
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

local function post_tokens(t, base, body, need_refresh)
  local doc, res = t:send_json({ method = "POST", url = base .. "/oauth/tokens", body = cjson.encode(body),
    headers = { "Content-Type: application/json", "Accept: application/json" } })
  if not doc then return nil, token_error(res) end
  return token_doc(doc, res, t, need_refresh)
end

local EXCHANGE_FIELDS = { "client_id", "client_secret", "redirect_uri", "code", "oauth_base_url" }

--- files.exchange_code{ client_id, client_secret, redirect_uri, code, oauth_base_url, <transport options> }
---   -> { access_token, refresh_token, expires_in, expires_at } | nil, err
function M.exchange_code(opts)
  util.check_type(opts, "table", 1, "exchange_code")
  local fields = {}
  for _, k in ipairs(EXCHANGE_FIELDS) do fields[k] = util.check_field(opts, k, "string", "exchange_code") end
  local topts, msg = engine.check_options(M.without(opts, EXCHANGE_FIELDS), "exchange_code", EXCHANGE_FIELDS)
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
  -- the client id is a secret too (DESIGN): a server's error may name it
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

-- ---- where the tokens live ----------------------------------------------------

-- Tokens shared by every worker of an nginx: a record and a lock in a
-- lua_shared_dict.  A fleet's store offers the same four calls.
local function shared_tokens(dict, key)
  local s = {}
  function s.load()
    local text = dict:get(key)
    local ok, doc = pcall(cjson.decode, text or "")
    return ok and type(doc) == "table" and doc or nil
  end
  function s.save(doc) dict:set(key, cjson.encode(doc)) end
  function s.lock() return dict:add(key .. ":lock", true, 30) end
  function s.unlock() dict:delete(key .. ":lock") end
  return s
end

-- ---- the keeper -------------------------------------------------------------------

local Keeper = {}
Keeper.__index = Keeper

-- The secrets live here, keyed by the keeper, never in its fields.
local private = setmetatable({}, { __mode = "k" })

-- cfg: oauth (the five fields), on_tokens, token_dict, base (checked),
-- token_transport (an engine transport for the manage host), secrets (the
-- list the engines redact with: new tokens are added to it).
function M.keeper(cfg)
  local o = cfg.oauth
  local k = setmetatable({ refreshes = 0, version = 0 }, Keeper)
  private[k] = { client_id = o.client_id, client_secret = o.client_secret, access_token = o.access_token,
    refresh_token = o.refresh_token, expires_at = o.expires_at or 0, on_tokens = cfg.on_tokens,
    base = cfg.base, t = cfg.token_transport, secrets = cfg.secrets }
  local subject = o.client_id .. "\0" .. o.refresh_token
  if cfg.token_dict then
    local ngx = rawget(_G, "ngx")
    private[k].shared = shared_tokens(ngx.shared[cfg.token_dict], "fileapi:oauth:" .. ngx.md5(subject))
  end
  if cfg.store then
    -- the fleet's record, over this nginx's (or nothing) while the store is away
    private[k].shared = require("fileapi.store.tokens").record(require("fileapi.store").open(cfg.store), subject,
      "fileapi-oauth\0" .. o.client_id .. "\0" .. o.client_secret, private[k].shared)
  end
  k.refreshable = true
  return k
end

-- Each refresh's tokens join the rotating secrets (util.add_secret): the
-- newest are redacted, and the list stays bounded.
local function remember_secret(p, s)
  util.add_secret(p.secrets, s, true)
end

-- Takes what the shared record holds when it is newer than ours.
local function adopt(k)
  local p = private[k]
  if not p.shared then return end
  local doc = p.shared.load()
  if not doc or (doc.version or 0) <= k.version then return end
  k.version = doc.version
  if doc.dead then
    p.dead = util.new_error("unauthorized", doc.dead, { oauth_error = doc.oauth_error })
    return
  end
  p.dead = nil
  p.access_token, p.refresh_token, p.expires_at = doc.access_token, doc.refresh_token, doc.expires_at
  k.refreshed_at = doc.refreshed_at
  remember_secret(p, doc.access_token)
  remember_secret(p, doc.refresh_token)
end

local function fresh(p, stale)
  return p.access_token ~= stale and (p.expires_at or 0) - now() > M.REFRESH_AHEAD
end

local function publish(k, extra)
  local p = private[k]
  if not p.shared then return end
  local doc = { access_token = p.access_token, refresh_token = p.refresh_token, expires_at = p.expires_at,
    refreshed_at = k.refreshed_at, version = k.version + 1 }
  for key, v in pairs(extra or {}) do doc[key] = v end
  p.shared.save(doc)
  k.version = doc.version
end

-- The one refresh: the HTTP call, then the tokens everywhere they live.
local function do_refresh(k)
  local p = private[k]
  local tokens, err = post_tokens(p.t, p.base, { grant_type = "refresh_token", client_id = p.client_id,
    client_secret = p.client_secret, refresh_token = p.refresh_token }, false)
  if not tokens then
    if err.kind == "unauthorized" then
      p.dead = err
      publish(k, { dead = err.message, oauth_error = err.oauth_error })
    end
    return nil, err
  end
  p.access_token, p.expires_at = tokens.access_token, tokens.expires_at
  -- a new refresh token replaces the old; without one, the old stays
  if tokens.refresh_token then p.refresh_token = tokens.refresh_token end
  remember_secret(p, tokens.access_token)
  remember_secret(p, tokens.refresh_token)
  k.refreshes = k.refreshes + 1
  k.refreshed_at = now()
  publish(k)
  if p.on_tokens then
    pcall(p.on_tokens, { access_token = p.access_token, refresh_token = p.refresh_token,
      expires_in = tokens.expires_in, expires_at = p.expires_at })
  end
  return true
end

local function waited_too_long(deadline)
  if now() < deadline then return nil end
  return util.new_error("timeout", "waited too long for the token refresh under way elsewhere")
end

-- Makes sure a token other than `stale` (nil: any) is fresh, refreshing
-- when it is not: once per client, per machine with a shared record.
function Keeper:refresh(sleep, deadline, stale)
  local p = private[self]
  while self.busy do -- another light thread of this client is at it
    local late = waited_too_long(deadline)
    if late then return nil, late end
    sleep(0.005)
  end
  adopt(self)
  if p.dead then return nil, p.dead end
  if fresh(p, stale) then return true end
  self.busy = true
  local ok, a, b = pcall(function()
    if not p.shared then return do_refresh(self) end
    while not p.shared.lock() do -- another worker is at it: wait for its token
      sleep(p.shared.poll or 0.005)
      adopt(self)
      if p.dead then return nil, p.dead end
      if fresh(p, stale) then return true end
      local late = waited_too_long(deadline)
      if late then return nil, late end
    end
    adopt(self) -- it may have finished just before we took the lock
    local r, e
    if p.dead then
      r, e = nil, p.dead
    elseif fresh(p, stale) then
      r = true
    else
      r, e = do_refresh(self)
    end
    p.shared.unlock()
    return r, e
  end)
  self.busy = nil
  if not ok then error(a, 0) end
  return a, b
end

-- The Authorization header for the next attempt, refreshed first when the
-- token expires within REFRESH_AHEAD seconds.
function Keeper:header(sleep, timeout)
  local p = private[self]
  -- a record across the network (the fleet's store) is read again at most
  -- once a second while this token is fresh; a refresh always reads it
  if not (p.shared and p.shared.remote and fresh(p, nil) and now() - (self.adopted_at or 0) < 1) then
    adopt(self)
    self.adopted_at = now()
  end
  if p.dead then return nil, p.dead end
  if not fresh(p, nil) then
    local ok, err = self:refresh(sleep, now() + (timeout or 30), nil)
    if not ok then return nil, err end
  end
  return "Authorization: Bearer " .. p.access_token
end

-- After a 401 with `used` (the header sent): a token other than that one.
function Keeper:after_401(used, sleep, timeout)
  local p = private[self]
  local stale = used and used:match("^Authorization: Bearer (.+)$")
  if p.access_token == stale then p.expires_at = 0 end -- known bad, whatever its time said
  return self:refresh(sleep, now() + (timeout or 30), stale)
end

--- client:set_tokens{ access_token, refresh_token, expires_at | expires_in }: new tokens after a refusal
function Keeper:set_tokens(tokens)
  local p = private[self]
  p.access_token, p.refresh_token = tokens.access_token, tokens.refresh_token
  p.expires_at = tokens.expires_at or floor(now() + (tokens.expires_in or 0))
  p.dead = nil
  remember_secret(p, p.access_token)
  remember_secret(p, p.refresh_token)
  publish(self)
  return true
end

--- client:token_info() -> { expires_at, refreshed_at, refreshes }: never a token
function Keeper:info()
  adopt(self)
  return { expires_at = private[self].expires_at, refreshed_at = self.refreshed_at, refreshes = self.refreshes }
end

-- The oauth table's fields, checked: a wrong type raises, a bad value is
-- nil, message.
function M.check_tokens(o, fname)
  util.check_keys(o, fname, M.TOKEN_FIELDS, 5)
  for _, key in ipairs({ "client_id", "client_secret", "access_token", "refresh_token" }) do
    util.check_field(o, key, "string", fname)
  end
  util.check_field(o, "expires_at", "number", fname)
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
