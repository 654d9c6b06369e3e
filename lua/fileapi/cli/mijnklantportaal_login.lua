-- `fileapi login` and `fileapi logout`: OAuth for a third-party
-- application from a shell.  login listens on the loopback address of the
-- redirect URI only, prints the consent URL (and opens it where a browser
-- opener exists) and serves that address until the redirect with this
-- sign-in's state comes back (5 minutes at most, --wait).  Anything else
-- (another path, no state or a wrong one, a malformed request) is answered
-- 4xx and the listener goes on: a stray or forged request cannot end the
-- sign-in.  A slow client holds only its own connection, for a few
-- seconds.  The browser is told "signed in" once the code was exchanged and
-- the tokens stored (fileapi.cli.credentials), else what failed.  logout
-- deletes them under the lock: the API documents no revoke call.
local core = require "fileapi.core"
local util = require "fileapi.util"
local files = require "fileapi.files"
local credentials = require "fileapi.cli.credentials"
local socket = require "socket" -- luasocket: the loopback listener

local M = {}

local DEFAULT_SCOPE = "files.read files.write fileshare.read fileshare.write filerequest.read filerequest.write"
M.REQUEST_SECONDS = 5   -- a connection's whole request must arrive within this
M.MAX_REQUEST = 16384   -- bytes of request line and headers
M.MAX_CONNECTIONS = 32  -- open at once; more are closed at once

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function query(text)
  local out = {}
  for k, v in (text or ""):gmatch("([^&=]+)=([^&]*)") do out[unescape(k)] = unescape(v) end
  return out
end

-- The server's words made safe for a terminal: no control characters (C0,
-- DEL, C1: no escape sequence gets through), valid UTF-8, and not endless.
function M.plain(s)
  s = tostring(s):gsub("[%z\1-\31\127]", ""):gsub("\194[\128-\159]", "")
  if not util.is_utf8(s) then s = s:gsub("[\128-\255]", "?") end
  if #s > 300 then s = s:sub(1, 300):gsub("[\192-\255][\128-\191]*$", "") .. "..." end
  return s
end

local function html(s)
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
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
    .. html(text) .. "</p></body></html>"
  conn:settimeout(2)
  conn:send(("HTTP/1.1 %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n"
    .. "Cache-Control: no-store\r\n\r\n%s"):format(status, #body, body))
  conn:close()
end

local function refusal(message)
  return core.error({ kind = "unauthorized", message = message, retryable = false, attempts = 0 })
end

-- One complete request: answers it; returns the sign-in's end (true, or
-- nil and err) when it was the redirect of this sign-in, else nothing.
-- finish(code) exchanges and stores: true, or nil, err and what the
-- browser is told.
local function answer(conn, head, sign_in, out)
  local target = head:match("^GET (%S+) HTTP/1%.[01]\r?\n")
  if not target then return respond(conn, "400 Bad Request", "This is not a sign-in redirect.") end
  local got_path, q = target:match("^([^?#]*)%??([^#]*)")
  if got_path ~= sign_in.path then return respond(conn, "404 Not Found", "Not here.") end
  local fields = query(q)
  if not files.check_state(sign_in.state, fields.state) then
    out.err:write("fileapi: login: a request without this sign-in's state was refused; still waiting\n")
    return respond(conn, "400 Bad Request", "This page is not the end of the sign-in under way "
      .. "(its state is missing or wrong). Start again from the link fileapi printed.")
  end
  if fields.error then
    local code = M.plain(fields.error)
    local desc = fields.error_description and M.plain(fields.error_description)
    respond(conn, "200 OK", ("The sign-in was not approved (%s). You may close this tab."):format(code))
    return nil, refusal(("the sign-in was refused: %s%s"):format(code, desc and (" (" .. desc .. ")") or ""))
  end
  if not fields.code or fields.code == "" then
    return respond(conn, "400 Bad Request", "This redirect carries neither a code nor an error.")
  end
  local ok, err, page = sign_in.finish(fields.code)
  if ok then
    respond(conn, "200 OK", "Signed in to fileapi. You may close this tab.")
    return true
  end
  respond(conn, "502 Bad Gateway", page)
  return nil, err
end

-- Takes a new connection, unless too many are open.
local function accept(server, conns)
  local conn = server:accept()
  if not conn then return end
  local n = 0
  for _ in pairs(conns) do n = n + 1 end
  if n >= M.MAX_CONNECTIONS then return conn:close() end
  conn:settimeout(0)
  conns[conn] = { buf = "", deadline = core.now() + M.REQUEST_SECONDS }
end

-- Reads what a connection has sent; its request (line and headers) when
-- complete; "drop" when it closed or sent too much.
local function feed(conn, st)
  local data, err, partial = conn:receive(4096)
  data = data or partial or ""
  st.buf = st.buf .. data
  local stop = st.buf:find("\r?\n\r?\n")
  if stop then return st.buf:sub(1, stop + 3) end
  if #st.buf > M.MAX_REQUEST then
    respond(conn, "431 Request Header Fields Too Large", "Too large.")
    return "drop"
  end
  if err and err ~= "timeout" then -- closed, reset
    conn:close()
    return "drop"
  end
end

-- Serves the listening socket until this sign-in's redirect came and was
-- answered, the deadline passed or Ctrl-C.  Connections are served side by
-- side (select): one that sends its request slowly holds up no other, and
-- is closed after REQUEST_SECONDS.
local function serve(server, sign_in, seconds, out)
  local deadline, conns = core.now() + seconds, {}
  server:settimeout(0)
  local function close_all()
    for c in pairs(conns) do c:close() end
  end
  while not core.interrupted() do
    local now = core.now()
    if now >= deadline then break end
    local watch, wait = { server }, math.min(0.5, deadline - now)
    for c, st in pairs(conns) do
      if now >= st.deadline then
        respond(c, "408 Request Timeout", "Too slow.")
        conns[c] = nil
      else
        watch[#watch + 1] = c
        wait = math.min(wait, st.deadline - now)
      end
    end
    local readable = socket.select(watch, nil, math.max(wait, 0.01))
    for _, s in ipairs(readable) do
      if s == server then
        accept(server, conns)
      elseif conns[s] then
        local head = feed(s, conns[s])
        if head then conns[s] = nil end
        if head and head ~= "drop" then
          local done, err = answer(s, head, sign_in, out)
          if done or err then
            close_all()
            return done, err
          end
        end
      end
    end
  end
  close_all()
  if core.interrupted() then return nil, refusal("interrupted") end
  return nil, refusal(("no redirect came back within %g seconds"):format(seconds))
end

local function open_browser(url)
  if os.execute("command -v xdg-open >/dev/null 2>&1") then
    os.execute("xdg-open '" .. url:gsub("'", "'\\''") .. "' >/dev/null 2>&1 &")
  end
end

-- Exchanges the code and stores the tokens as a new sign-in (under the
-- lock); true, or nil, err and what the browser is told.
local function finisher(opts, secret)
  return function(code)
    local tokens, err = files.exchange_code({ client_id = opts.client_id, client_secret = secret,
      redirect_uri = opts.redirect_uri, code = code })
    if not tokens then
      return nil, err, ("The sign-in failed: fileapi could not get the tokens (%s). See the terminal."):format(err.kind)
    end
    tokens.client_id, tokens.client_secret = opts.client_id, secret
    tokens.login = core.random_token(16)
    local ok, serr = credentials.locked(function() return credentials.save(tokens) end)
    if not ok then
      return nil, serr, "The sign-in worked, but fileapi could not store the tokens. See the terminal."
    end
    return true
  end
end

local function listen(host, port)
  local server, berr = socket.bind(host == "[::1]" and "::1" or (host == "localhost" and "127.0.0.1" or host),
    tonumber(port))
  if server then return server end
  return nil, core.error({ kind = "network", message = "cannot listen on " .. host .. ":" .. port .. ": "
    .. tostring(berr), retryable = false, attempts = 0 })
end

function M.login(opts, out)
  local secret, why = client_secret(opts)
  if not secret then return nil, why end
  local host, port, path = (opts.redirect_uri or ""):match("^http://([%w.%[%]:]+):(%d+)(/[^?#]*)$")
  if not (host == "127.0.0.1" or host == "localhost" or host == "[::1]") then
    return nil, "--redirect-uri must be http://127.0.0.1:PORT/PATH (a loopback address this command listens on)"
  end
  local url, state = files.authorize_url({ client_id = opts.client_id, redirect_uri = opts.redirect_uri,
    scope = opts.scope or DEFAULT_SCOPE })
  if not url then return out:fail("login", state) end
  local server, lerr = listen(host, port)
  if not server then return out:fail("login", lerr) end
  out.out:write("Open this page to sign in and approve fileapi:\n", url, "\n")
  out.out:flush()
  open_browser(url)
  local ok, err = serve(server, { path = path, state = state, finish = finisher(opts, secret) }, opts.wait or 300, out)
  server:close()
  if not ok then return out:fail(err.kind == "io" and credentials.path() or "login", err) end
  out.err:write("fileapi: signed in; tokens stored in ", credentials.path(), "\n")
  return 0
end

function M.logout(_, out)
  local path = credentials.path()
  local removed, err = false, nil
  local f = io.open(path)
  if f then -- else no folder is made just to say so
    f:close()
    removed, err = credentials.locked(function() return credentials.remove(path) end, path)
  end
  if removed == nil and err then return out:fail(path, err) end
  if removed then
    out.err:write("fileapi: signed out; removed ", path, "\n")
  else
    out.err:write("fileapi: not signed in (no ", path, ")\n")
  end
  return 0
end

-- A MijnKlantportaal client on the stored tokens, the credentials file its
-- shared record: every refresh takes the file's lock and reads it first,
-- and writes the new tokens back durably (a failed write is printed).
-- nil and why when there are none.
function M.stored_client(copts, out)
  local path = credentials.path()
  local creds, why = credentials.load(path)
  if not creds then
    return nil, why and core.error({ kind = "io", message = path .. ": " .. why, retryable = false, attempts = 0 })
  end
  if creds.dead then
    return nil, refusal(("the stored sign-in was refused by the token endpoint (%s): sign in again with "
      .. "fileapi login"):format(M.plain(creds.oauth_error or "invalid_grant")))
  end
  copts.oauth = { client_id = creds.client_id, client_secret = creds.client_secret,
    access_token = creds.access_token, refresh_token = creds.refresh_token, expires_at = creds.expires_at }
  copts._shared_tokens = credentials.record(path, creds.login, function(what, err)
    out.err:write("fileapi: warning: ", what, ": ", (tostring(err):gsub("^fileapi: ", "")), "\n")
  end)
  return files.new(copts)
end

return M
