-- Clients for the commands, configured from their options: a
-- MijnKlantportaal client, or a files.ro share (its token from
-- FILESRO_TOKEN or the first argument, extra headers from --header).
local core = require "fileapi.core"
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local options = require "fileapi.http.options"
local login = require "fileapi.cli.mijnklantportaal_login"
local verbose = require "fileapi.cli.verbose"

local M = {}

-- The flags' transport options (fileapi.cli declares them from the list).
-- With -v every event is a line, waits included: on_wait's line would say
-- the same again.
local function client_options(opts, out)
  local copts = {
    on_wait = not opts.quiet and function(seconds, reason) out:waiting(seconds, reason) end or nil }
  -- (the flag counts: 0 when absent)
  if (opts.verbose or 0) > 0 then copts.on_event, copts.on_wait = verbose.printer(out), nil end
  for _, o in ipairs(options.CLI) do copts[o.name] = opts[o.name] end
  return copts
end

-- An API key from MKP_API_KEY; else the tokens `fileapi login` stored;
-- with neither, an error that says how to get one.
local function open_client(opts, out, what)
  local copts = client_options(opts, out)
  local client, err
  local key = os.getenv("MKP_API_KEY")
  if key and key ~= "" then
    client, err = files.new(copts)
  else
    client, err = login.stored_client(copts, out)
    if not client and not err then
      err = core.error({ kind = "invalid_argument", retryable = false, attempts = 0, message = "no API key and "
        .. "no stored sign-in: set MKP_API_KEY, or sign in with fileapi login --client-id ID --redirect-uri "
        .. "http://127.0.0.1:PORT/callback (the App Secret from MKP_CLIENT_SECRET)" })
    end
  end
  if not client then return nil, out:fail(what, err) end
  return client
end

-- --header 'Name: value' (repeatable) for a share's requests.
local function parse_headers(list)
  local headers = {}
  for _, h in ipairs(list or {}) do
    local name, value = h:match("^([^:]+):%s*(.*)$")
    if not name then return nil, "--header wants 'Name: value', got " .. h end
    headers[name] = value
  end
  return headers
end

-- The share token: FILESRO_TOKEN when set (then not among the arguments),
-- else the first argument.
local function take_token(args)
  local token = os.getenv("FILESRO_TOKEN")
  if token and token ~= "" then return token end
  return table.remove(args, 1)
end

local function open_share(opts, out, token, what)
  local copts = client_options(opts, out)
  copts.base_url = opts.base_url or os.getenv("FILESRO_BASE_URL")
  copts.token = token
  local headers, why = parse_headers(opts.header)
  if not headers then return nil, nil, why end
  copts.headers = headers
  local share, err = shares.new(copts)
  if not share then return nil, out:fail(what, err) end
  return share
end


-- TYPE:ID arguments (file:UUID or folder:UUID), for the share and drive commands.
local function parse_items(args)
  local items = {}
  for i, a in ipairs(args) do
    local kind, id = a:match("^(%a+):(.+)$")
    if not kind then return nil, "items are TYPE:ID, as file:UUID or folder:UUID (got " .. a .. ")" end
    items[i] = { type = kind, id = id }
  end
  if #items == 0 then return nil, "at least one TYPE:ID is needed" end
  return items
end

M.options = client_options
M.parse_items = parse_items
M.open_client = open_client
M.take_token = take_token
M.open_share = open_share

return M
