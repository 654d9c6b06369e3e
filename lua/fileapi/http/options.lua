-- The transport options, in one list: every client's constructor takes
-- them (files.new, shares.new and the rest), the engine checks them and
-- fills in defaults from here, the ones marked `request` travel in the
-- request table that both transports take (fileapi.http.request), and the
-- README's options table is rendered from it.  spec/tables_spec.lua holds
-- every other place against this list: the request contract, the C core's
-- reading of the request table, the cosocket transport and the README.
--
-- name, type ("number" | "string" | "boolean" | "function" | "rate" | "table"),
-- default, where it is honoured (curl, ngx: the transports that read it
-- from the request; "engine" for the engine's own), and what it means.
local M = {}

M.LIST = {
  { name = "timeout", type = "number", default = nil, request = true, honoured = "curl ngx",
    shown = "none", doc = "seconds for a whole attempt" },
  { name = "connect_timeout", type = "number", default = 10, request = true, honoured = "curl ngx",
    doc = "seconds to establish the connection" },
  { name = "idle_timeout", type = "number", default = 60, request = true, honoured = "curl ngx",
    doc = "abort when no byte moves for this long (whole seconds, rounded up)" },
  { name = "retries", type = "number", default = 2, honoured = "engine",
    doc = "extra attempts, only where safe (see Retries)" },
  { name = "retry_unsafe", type = "boolean", default = false, honoured = "engine",
    doc = "also retry 500/502/504 and timeouts after the request was sent" },
  { name = "max_retry_wait", type = "number", default = 60, honoured = "engine",
    doc = "cap, in seconds, on one wait between attempts (Retry-After included)" },
  { name = "backoff", type = "number", default = 0.5, honoured = "engine",
    doc = "first backoff in seconds; doubles per attempt, with jitter" },
  { name = "max_response", type = "number", default = 1024 * 1024, request = true, honoured = "curl ngx",
    shown = "1 MiB", doc = "larger API responses fail with kind `protocol`" },
  { name = "ca_file", type = "string", request = true, honoured = "curl", shown = "libcurl's",
    doc = "CA bundle to verify the server with (libcurl only; in nginx, `lua_ssl_trusted_certificate`)" },
  { name = "proxy", type = "string", request = true, honoured = "curl", shown = "none",
    doc = "proxy URL (libcurl only); credentials in it are treated as secrets" },
  { name = "user_agent", type = "string", request = true, honoured = "curl ngx", shown = "`fileapi/VERSION libcurl/VERSION`",
    doc = "User-Agent header" },
  { name = "allow_insecure", type = "boolean", default = false, honoured = "engine",
    doc = "allow plain `http://` to a non-loopback host" },
  { name = "transport", type = "string", default = "auto", honoured = "engine", shown = '`"auto"`',
    doc = '`"curl"`, `"ngx"` (nginx cosockets), or `"auto"`: cosockets where the nginx phase allows them' },
  { name = "rate_limit", type = "rate", default = "auto", honoured = "engine", shown = '`"auto"`',
    doc = "pace requests within the service's rate limit (see Rate limits); a number N also keeps any "
      .. "`rate_window` at ≤ N requests; `false`: off" },
  { name = "rate_window", type = "number", default = 60, honoured = "engine",
    doc = "seconds of the rolling window the limit counts over (the APIs': a minute)" },
  { name = "rate_limit_dict", type = "string", honoured = "engine", shown = "none",
    doc = "inside nginx: a `lua_shared_dict` name; every worker's clients for the same key share one budget" },
  { name = "store", type = "table", honoured = "engine", shown = "none",
    doc = "a fleet's shared Redis: `{ url = \"redis://host:port/db\", prefix, timeout, on_unavailable }` "
      .. "(see Beyond one machine)" },
  { name = "on_wait", type = "function", honoured = "engine", shown = "none",
    doc = "`function(seconds, reason)` told before each wait; `reason`: `\"rate_limit\"` (pacing), "
      .. "`\"retry_after\"` (the server's `Retry-After`) or `\"backoff\"` (before another attempt)" },
  { name = "base_url", type = "string", honoured = "engine", shown = "per API",
    doc = "the API's root (each API module names its default below)" },
}

M.BY_NAME = {}
M.NAMES = {}
for i, o in ipairs(M.LIST) do
  M.BY_NAME[o.name] = o
  M.NAMES[i] = o.name
end

-- The rows of the README's options table, in the list's order.
function M.markdown()
  local rows = {}
  for _, o in ipairs(M.LIST) do
    local shown = o.shown
    if shown == nil then shown = (o.default == 1024 * 1024) and "1 MiB" or tostring(o.default) end
    rows[#rows + 1] = ("| `%s` | %s | %s |"):format(o.name, shown, o.doc)
  end
  return table.concat(rows, "\n")
end

return M
