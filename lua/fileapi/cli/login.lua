-- `fileapi login` and `fileapi logout`: OAuth for a third-party
-- application from a shell.  login listens on the loopback address of the
-- redirect URI only, prints the consent URL (and opens it where a browser
-- opener exists), waits for the redirect (state checked, 5 minutes at
-- most), shows the browser a "you may close this tab" page, exchanges the
-- code and stores the tokens (fileapi.cli.credentials).  logout deletes them:
-- the API documents no revoke call.
local core = require "fileapi.core"
local files = require "fileapi.files"
local credentials = require "fileapi.cli.credentials"

local C = {}

local DEFAULT_SCOPE = "files.read files.write fileshare.read fileshare.write filerequest.read filerequest.write"

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function query(text)
  local out = {}
  for k, v in (text or ""):gmatch("([^&=]+)=([^&]*)") do out[unescape(k)] = unescape(v) end
  return out
end

-- The client secret: MKP_CLIENT_SECRET, or the first line of a file; never
-- an argument (it would show in ps).
local function client_secret(opts)
  if opts.client_secret_file then
    local f, err = io.open(opts.client_secret_file, "rb")
    if not f then return nil, "--client-secret-file: " .. tostring(err) end
    local line = (f:read("*l") or ""):gsub("%s+$", "")
    f:close()
    if line == "" then return nil, "--client-secret-file is empty" end
    return line
  end
  local secret = os.getenv("MKP_CLIENT_SECRET")
  if not secret or secret == "" then return nil, "the client secret comes from MKP_CLIENT_SECRET or --client-secret-file" end
  return secret
end

local function respond(conn, status, text)
  local body = "<!doctype html><html><head><meta charset=\"utf-8\"><title>fileapi</title></head><body><p>"
    .. text .. "</p></body></html>"
  conn:send(("HTTP/1.1 %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
    :format(status, #body, body))
  conn:close()
end

-- Waits for the browser's redirect to `path` on the listening socket; returns
-- the query's fields, or nil and why.
local function await_redirect(server, path, seconds)
  local socket = require "socket"
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline and not core.interrupted() do
    server:settimeout(math.min(1, deadline - socket.gettime()))
    local conn = server:accept()
    if conn then
      conn:settimeout(5)
      local line = conn:receive("*l") or ""
      repeat local h = conn:receive("*l") until not h or h == ""
      local target = line:match("^GET (%S+) HTTP/1%.[01]$")
      local got_path, q = (target or ""):match("^([^?]*)%??(.*)$")
      if got_path == path then
        local fields = query(q)
        if fields.error then
          respond(conn, "200 OK", "The sign-in was not approved. You may close this tab.")
        else
          respond(conn, "200 OK", "Signed in to fileapi. You may close this tab.")
        end
        return fields
      end
      respond(conn, "404 Not Found", "Not here.")
    end
  end
  if core.interrupted() then return nil, "interrupted" end
  return nil, ("no redirect came back within %d seconds"):format(seconds)
end

local function open_browser(url)
  if os.execute("command -v xdg-open >/dev/null 2>&1") then
    os.execute("xdg-open '" .. url:gsub("'", "'\\''") .. "' >/dev/null 2>&1 &")
  end
end

function C.login(opts, out)
  local secret, why = client_secret(opts)
  if not secret then return nil, why end
  local host, port, path = (opts.redirect_uri or ""):match("^http://([%w.%[%]:]+):(%d+)(/[^?#]*)$")
  if not (host == "127.0.0.1" or host == "localhost" or host == "[::1]") then
    return nil, "--redirect-uri must be http://127.0.0.1:PORT/PATH (a loopback address this command listens on)"
  end
  local url, state = files.authorize_url({ client_id = opts.client_id, redirect_uri = opts.redirect_uri,
    scope = opts.scope or DEFAULT_SCOPE })
  if not url then return out:fail("login", state) end
  local socket = require "socket"
  local server, berr = socket.bind(host == "[::1]" and "::1" or (host == "localhost" and "127.0.0.1" or host),
    tonumber(port))
  if not server then return out:fail("login", core.error({ kind = "network", message = "cannot listen on "
    .. host .. ":" .. port .. ": " .. tostring(berr), retryable = false, attempts = 0 })) end
  out.out:write("Open this page to sign in and approve fileapi:\n", url, "\n")
  out.out:flush()
  open_browser(url)
  local fields, werr = await_redirect(server, path, opts.wait or 300)
  server:close()
  local function refused(message)
    return out:fail("login", core.error({ kind = "unauthorized", message = message, retryable = false, attempts = 0 }))
  end
  if not fields then return refused(werr) end
  if fields.state and not files.check_state(state, fields.state) or (not fields.state and not fields.error) then
    return refused("the redirect's state does not match this sign-in: ignored")
  end
  if fields.error then
    return refused(("the sign-in was refused: %s%s"):format(fields.error,
      fields.error_description and (" (" .. fields.error_description .. ")") or ""))
  end
  local tokens, err = files.exchange_code({ client_id = opts.client_id, client_secret = secret,
    redirect_uri = opts.redirect_uri, code = fields.code or "" })
  if not tokens then return out:fail("login", err) end
  tokens.client_id, tokens.client_secret = opts.client_id, secret
  local ok, serr = credentials.locked(function() return credentials.save(tokens) end)
  if not ok then return out:fail(credentials.path(), serr) end
  out.err:write("fileapi: signed in; tokens stored in ", credentials.path(), "\n")
  return 0
end

function C.logout(_, out)
  if credentials.remove() then
    out.err:write("fileapi: signed out; removed ", credentials.path(), "\n")
  else
    out.err:write("fileapi: not signed in (no ", credentials.path(), ")\n")
  end
  return 0
end

-- A MijnKlantportaal client on the stored tokens, refreshed first (under the
-- lock) when they expire within a minute; later refreshes are written back
-- under the same lock.  nil when there are none.
function C.stored_client(copts)
  local path = credentials.path()
  local creds, why = credentials.load(path)
  if not creds then return nil, why end
  local held = false
  local function write_back(tokens)
    local now = credentials.load(path) or creds
    for k, v in pairs(tokens) do now[k] = v end
    credentials.save(now, path)
  end
  local function on_tokens(tokens) -- the lock is not re-entrant: take it unless held
    if held then return write_back(tokens) end
    credentials.locked(function() write_back(tokens) end, path)
  end
  return credentials.locked(function()
    held = true
    creds = credentials.load(path) or creds -- another command may have refreshed them
    copts.oauth = { client_id = creds.client_id, client_secret = creds.client_secret,
      access_token = creds.access_token, refresh_token = creds.refresh_token, expires_at = creds.expires_at }
    copts.on_tokens = on_tokens
    local client, err = files.new(copts)
    if not client then return nil, err end
    local header, herr = client.transport.auth:header(core.sleep, copts.timeout)
    held = false
    if not header then
      client:close()
      return nil, herr
    end
    return client
  end, path)
end

return C
