-- The transport options, in one list: the only place an option is written.
-- Every client's constructor takes them (files.new, shares.new and the
-- rest) and the engine checks them and fills in defaults from here; the
-- ones marked `request` travel in the request table that both transports
-- take (fileapi.http.request); the ones marked `cli` are the command line's
-- flags.  tools/gen.lua makes the reference's options table and the C core's
-- csrc/gen/options.h from it (`make gen`), and spec/tables_spec.lua fails
-- while either is stale.  Adding an option is a row here, `make gen`, and
-- the cosocket transport's code for it when it travels to nginx too.
--
-- A row: name; type ("number" | "string" | "boolean" | "function" | "rate" |
-- "table"); default; where it is honoured (curl, ngx: the transports that
-- read it from the request; "engine" for the engine's own); doc, its
-- meaning (`shown`: the default as the reference shows it).  Then, as needed:
--   range    numbers accepted (default: 0 to any finite number), by the
--            engine and by the C core alike
--   check    function(value, opts, row) -> a message when the value is
--            wrong (opts: all options, defaults filled in)
--   cli      a flag of the command line (--connect-timeout), with the doc
--            or this shorter help
--   unit     what a number counts ("seconds"), for the flag's messages
-- and for `request` rows, what the C core does with them:
--   curlopt, as  the libcurl option it sets, and how: "ms" (seconds, to
--            milliseconds rounded up) or "string" (when given)
--   bespoke  no libcurl option: where its own code is
--   missing  "default" when an absent field means the default, not none
local type, ipairs, tostring, floor, huge, find = type, ipairs, tostring, math.floor, math.huge, string.find

local M = {}

local function whole(v, _, o)
  if v ~= floor(v) then return o.name .. " must be a whole number" end
end
M.whole = whole

local function known_transport(v, opts)
  if v ~= "auto" and v ~= "curl" and v ~= "ngx" then return 'transport must be "auto", "curl" or "ngx"' end
  if v == "ngx" and (opts.ca_file or opts.proxy) then
    return "ca_file and proxy need the curl transport (in nginx, use lua_ssl_trusted_certificate)"
  end
end

local function rate(v)
  if type(v) == "string" and v ~= "auto" then return 'rate_limit must be "auto", a number or false' end
  if type(v) == "number" and (v < 1 or v ~= floor(v) or v == huge) then
    return "rate_limit must be a whole number of requests >= 1"
  end
end

local function positive(v, _, o)
  if v == 0 then return o.name .. " must be more than 0 seconds" end
end

local function shared_dict(v)
  local ngx = rawget(_G, "ngx")
  if not (ngx and ngx.shared and ngx.shared[v]) then return "rate_limit_dict: no lua_shared_dict named " .. v end
end

M.LIST = {
  { name = "timeout", type = "number", unit = "seconds", default = nil, request = true, honoured = "curl ngx",
    range = { 0, 1e9 }, curlopt = "CURLOPT_TIMEOUT_MS", as = "ms", cli = true,
    shown = "none", doc = "seconds for a whole attempt" },
  { name = "connect_timeout", type = "number", unit = "seconds", default = 10, request = true, honoured = "curl ngx",
    range = { 0, 1e9 }, curlopt = "CURLOPT_CONNECTTIMEOUT_MS", as = "ms", cli = "seconds to connect",
    doc = "seconds to establish the connection" },
  { name = "idle_timeout", type = "number", unit = "seconds", default = 60, request = true, honoured = "curl ngx",
    range = { 0, 1e9 }, cli = "abort when no byte moves for this long",
    -- libcurl's low-speed check averages over whole seconds and fires late
    bespoke = "transfer.c: idle_expired, on every progress tick",
    doc = "abort when no byte moves for this long (whole seconds, rounded up)" },
  { name = "retries", type = "number", default = 2, honoured = "engine", check = whole,
    cli = "extra attempts where safe", doc = "extra attempts, only where safe (see Retries)" },
  { name = "retry_unsafe", type = "boolean", default = false, honoured = "engine",
    doc = "also retry 500/502/504 and timeouts after the request was sent" },
  { name = "max_retry_wait", type = "number", default = 60, honoured = "engine",
    doc = "cap, in seconds, on one wait between attempts (Retry-After included)" },
  { name = "backoff", type = "number", default = 0.5, honoured = "engine",
    doc = "first backoff in seconds; doubles per attempt, with jitter" },
  { name = "max_response", type = "number", default = 1024 * 1024, request = true, honoured = "curl ngx",
    range = { 1, 1e12 }, missing = "default", bespoke = "transfer.c: buffer_body",
    shown = "1 MiB", doc = "larger API responses fail with kind `protocol`" },
  { name = "ca_file", type = "string", request = true, honoured = "curl", shown = "libcurl's",
    curlopt = "CURLOPT_CAINFO", as = "string",
    doc = "CA bundle to verify the server with (libcurl only; in nginx, `lua_ssl_trusted_certificate`)" },
  { name = "proxy", type = "string", request = true, honoured = "curl", shown = "none",
    curlopt = "CURLOPT_PROXY", as = "string",
    doc = "proxy URL (libcurl only); credentials in it are treated as secrets" },
  { name = "user_agent", type = "string", request = true, honoured = "curl ngx", shown = "`fileapi/VERSION libcurl/VERSION`",
    curlopt = "CURLOPT_USERAGENT", as = "string", doc = "User-Agent header" },
  { name = "allow_insecure", type = "boolean", default = false, honoured = "engine",
    doc = "allow plain `http://` to a non-loopback host" },
  { name = "transport", type = "string", default = "auto", honoured = "engine", shown = '`"auto"`',
    check = known_transport,
    doc = '`"curl"`, `"ngx"` (nginx cosockets), or `"auto"`: cosockets where the nginx phase allows them' },
  { name = "rate_limit", type = "rate", default = "auto", honoured = "engine", shown = '`"auto"`', check = rate,
    doc = "pace requests within the service's rate limit (see Rate limits); a number N also keeps any "
      .. "`rate_window` at ≤ N requests; `false`: off" },
  { name = "rate_window", type = "number", default = 60, honoured = "engine", check = positive,
    doc = "seconds of the rolling window the limit counts over (the APIs': a minute)" },
  { name = "rate_limit_dict", type = "string", honoured = "engine", shown = "none", check = shared_dict,
    doc = "inside nginx: a `lua_shared_dict` name; every worker's clients for the same key share one budget" },
  -- checked and opened by the store itself (fileapi.store: store.check), through fileapi.client_options
  { name = "store", type = "table", honoured = "engine", shown = "none",
    doc = "a fleet's shared Redis: `{ url = \"redis://host:port/db\", prefix, timeout, on_unavailable }` "
      .. "(see [fleet.md](fleet.md))" },
  { name = "on_wait", type = "function", honoured = "engine", shown = "none",
    doc = "`function(seconds, reason)` told before each wait; `reason`: `\"rate_limit\"` (pacing), "
      .. "`\"retry_after\"` (the server's `Retry-After`), `\"backoff\"` (before another attempt), "
      .. "`\"store\"` (the fleet's store, `on_unavailable = \"wait\"`) or `\"refresh\"` (an OAuth refresh "
      .. "under way elsewhere; `seconds`: the longest it may last)" },
  { name = "on_event", type = "function", honoured = "engine", shown = "none",
    doc = "`function(ev)` told of each attempt (`request`), wait, OAuth refresh and store outage, as data "
      .. "without secrets; never raises into a call (see [events.md](events.md))" },
  { name = "base_url", type = "string", honoured = "engine", shown = "per API",
    cli = "API root (default $MKP_BASE_URL, $FILESRO_BASE_URL, or the public API)",
    doc = "the API's root (each API module names its default below)" },
}

-- Per type: what a value must be (else a raise: a programming error) and
-- the check of its value (else nil and a message).
local function in_range(o, v)
  local range = o.range or { 0, huge }
  if v ~= v or v < range[1] or v > range[2] or v == huge then
    if not o.range then return o.name .. " must be a finite number >= 0" end
    return ("%s must be a number from %.14g to %.14g"):format(o.name, range[1], range[2])
  end
end

M.TYPES = {
  number = { expected = "number", check = in_range },
  string = { expected = "string", check = function(o, v)
    if find(v, "[%z\1-\31\127]") then return o.name .. " must not contain control characters" end
  end },
  boolean = { expected = "boolean" },
  ["function"] = { expected = "function" },
  table = { expected = "table" },
  rate = { expected = '"auto", a number or false', is = function(v)
    return v == false or type(v) == "string" or type(v) == "number"
  end },
}

M.BY_NAME = {}
M.NAMES = {}
M.REQUEST = {} -- the rows both transports take in the request table
M.CLI = {}     -- the command line's flags
for i, o in ipairs(M.LIST) do
  M.BY_NAME[o.name] = o
  M.NAMES[i] = o.name
  if o.request then M.REQUEST[#M.REQUEST + 1] = o end
  if o.cli then M.CLI[#M.CLI + 1] = o end
end

-- The first option of a wrong Lua type, and what it should be; nil when
-- all are right.
function M.wrong_type(opts)
  for _, o in ipairs(M.LIST) do
    local v, t = opts[o.name], M.TYPES[o.type]
    if v ~= nil and not (t.is and t.is(v) or type(v) == t.expected) then return o.name, t.expected end
  end
end

-- What is wrong with row o's value v (of the right type), or nil; opts:
-- all the options, defaults filled in, for checks that look at others.
function M.value_error(o, v, opts)
  local t = M.TYPES[o.type]
  return (t.check and t.check(o, v)) or (o.check and o.check(v, opts or {}, o)) or nil
end

-- The options with defaults filled in, or nil and what is wrong with a
-- value (types already right: see wrong_type).
function M.normalise(opts)
  local out = {}
  for _, o in ipairs(M.LIST) do
    local v = opts[o.name]
    if v == nil then v = o.default end
    out[o.name] = v
  end
  for _, o in ipairs(M.LIST) do
    local why = out[o.name] ~= nil and M.value_error(o, out[o.name], out)
    if why then return nil, why end
  end
  return out
end

-- The rows of the reference's options table (docs/reference.md), in the list's order.
function M.markdown()
  local rows = {}
  for _, o in ipairs(M.LIST) do
    rows[#rows + 1] = ("| `%s` | %s | %s |"):format(o.name, o.shown or tostring(o.default), o.doc)
  end
  return table.concat(rows, "\n")
end

return M
