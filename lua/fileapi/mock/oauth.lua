-- The mock's manage host: MijnKlantportaal's OAuth endpoints on a port of
-- their own (the real ones are on another host than the API), as
-- the service's OAuth reference describes them and, where it is
-- silent, as RFC 6749 has them.
--   GET /oauth/authorize  a consent page that decides at once: a 302 to
--                         redirect_uri with code and state, or with
--                         error=access_denied when told to decline
--   POST /oauth/tokens    JSON: authorization_code or refresh_token grants
-- Codes are single-use and short-lived; access tokens expire after
-- config.oauth_token_ttl seconds (and the API then answers 401); a refresh
-- answers access_token and expires_in only, unless config.oauth_rotate
-- (then a new refresh_token too, and the old one dies).  The stats count
-- refusals of a refresh token and refresh tokens sent again.
local cjson = require "cjson"
local http = require "fileapi.mock.http"
local socket = require "socket"
local accounts = require "fileapi.mock.accounts"

local M = {}

local CLIENT_ID, CLIENT_SECRET = accounts.CLIENT_ID, accounts.CLIENT_SECRET
M.CLIENT_ID, M.CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET

local function token(prefix)
  local t = {}
  for i = 1, 24 do t[i] = string.char(96 + math.random(26)) end
  return prefix .. table.concat(t)
end

local function now() return socket.gettime() end

function M.reset(state)
  -- spent: how often each refresh token came to a refresh the endpoint acted
  -- on (a 200 or a refusal; a fault played before is not acted on)
  state.oauth = { codes = {}, access = {}, refresh = {}, token_requests = 0, refreshes = 0, spent = {},
    refused = 0, reused = 0 }
end

-- Whether an API request's bearer token is a live access token.
function M.valid_access(state, value)
  local expires = state.oauth.access[value]
  return expires ~= nil and expires > now()
end

local function json(status, doc, headers)
  headers = headers or {}
  headers[#headers + 1] = { "Content-Type", "application/json" }
  headers[#headers + 1] = { "Cache-Control", "no-store" }
  return status, headers, cjson.encode(doc)
end

local function oauth_error(status, code, description)
  return json(status, { error = code, error_description = description })
end

local function with_query(uri, params)
  local parts = {}
  for _, kv in ipairs(params) do
    if kv[2] ~= nil then parts[#parts + 1] = kv[1] .. "=" .. kv[2]:gsub("[^%w%-%._~]", function(c)
      return ("%%%02X"):format(c:byte())
    end) end
  end
  return uri .. (uri:find("?", 1, true) and "&" or "?") .. table.concat(parts, "&")
end

local function authorize(state, req)
  local q = req.query
  -- a wrong client or redirect: an error page, no redirect (RFC 6749 4.1.2.1)
  if q.client_id ~= CLIENT_ID or not (q.redirect_uri or ""):match("^https?://") then
    return 400, { { "Content-Type", "text/html" } }, "<html><body>Unknown application.</body></html>"
  end
  state.oauth.last_authorize = q
  if q.response_type ~= "code" or not q.state or q.state == "" or not q.scope or q.scope == "" then
    return 302, { { "Location", with_query(q.redirect_uri, { { "error", "invalid_request" },
      { "error_description", "response_type, state and scope are required" }, { "state", q.state } }) } }, ""
  end
  if state.config.oauth_decline then
    return 302, { { "Location", with_query(q.redirect_uri, { { "error", "access_denied" },
      { "error_description", "The user declined." }, { "state", q.state } }) } }, ""
  end
  local code = token("code_")
  state.oauth.codes[code] = { redirect_uri = q.redirect_uri, expires = now() + (state.config.oauth_code_ttl or 60) }
  return 302, { { "Location", with_query(q.redirect_uri, { { "code", code }, { "state", q.state } }) } }, ""
end

local function issue(state, with_refresh)
  local access = token("at_")
  local ttl = state.config.oauth_token_ttl or 3600
  state.oauth.access[access] = now() + ttl
  local doc = { access_token = access, expires_in = ttl }
  if with_refresh then
    doc.refresh_token = token("rt_")
    state.oauth.refresh[doc.refresh_token] = true
  end
  return doc
end

local function tokens(state, req)
  state.oauth.token_requests = state.oauth.token_requests + 1
  local ok, doc = pcall(cjson.decode, req.body or "")
  if not ok or type(doc) ~= "table" then return oauth_error(400, "invalid_request", "The body must be JSON.") end
  if doc.client_id ~= CLIENT_ID or doc.client_secret ~= CLIENT_SECRET then
    return oauth_error(401, "invalid_client", "Client authentication failed.")
  end
  if doc.grant_type == "authorization_code" then
    local c = state.oauth.codes[doc.code or ""]
    state.oauth.codes[doc.code or ""] = nil -- single use, whatever happens
    if not c or c.expires < now() or c.redirect_uri ~= doc.redirect_uri then
      return oauth_error(400, "invalid_grant", "The authorization code is invalid or expired.")
    end
    return json(200, issue(state, true))
  elseif doc.grant_type == "refresh_token" then
    local rt = tostring(doc.refresh_token)
    state.oauth.spent[rt] = (state.oauth.spent[rt] or 0) + 1
    if state.oauth.spent[rt] > 1 then state.oauth.reused = state.oauth.reused + 1 end
    if not state.oauth.refresh[doc.refresh_token or ""] then
      state.oauth.refused = state.oauth.refused + 1
      return oauth_error(400, "invalid_grant", "The refresh token is invalid.")
    end
    state.oauth.refreshes = state.oauth.refreshes + 1
    local rotate = state.config.oauth_rotate
    local out = issue(state, rotate)
    if rotate then state.oauth.refresh[doc.refresh_token] = nil end
    return json(200, out)
  end
  return oauth_error(400, "unsupported_grant_type", "The grant type is not supported.")
end

-- Tokens for a test: a live pair without the browser dance.
function M.grant(state)
  return issue(state, true)
end

-- Every access token given so far lapses now (refresh tokens live on).
function M.expire(state)
  for access in pairs(state.oauth.access) do state.oauth.access[access] = now() - 1 end
end

function M.handle(state, conn, req)
  if req.method == "GET" and req.path == "/oauth/authorize" then
    http.read_body(conn, req, 0)
    return authorize(state, req)
  end
  if req.method == "POST" and req.path == "/oauth/tokens" then
    if not http.read_body(conn, req, 65536) then return nil end
    return tokens(state, req)
  end
  http.read_body(conn, req, 0)
  return json(404, { message = "Not found." })
end

return M
