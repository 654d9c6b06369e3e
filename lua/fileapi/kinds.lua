-- The error kinds, in one list: the only place a kind is written.  Each
-- row: what it means, the HTTP statuses and libcurl results that map to it,
-- and the command line's exit status.  The engine gives an HTTP failure its
-- kind from here (for_status), whichever transport carried it; the command
-- line's exit statuses and help come from here; tools/gen.lua makes the
-- reference's kinds table and the C core's csrc/gen/kinds.h (its kinds, which
-- C names through FA_KIND() so that another does not compile, and its map
-- of libcurl's results) from it (`make gen`); spec/tables_spec.lua fails
-- while either is stale.  Adding a kind is a row here and `make gen`.
local M = {}

-- statuses: a list, "5xx", or "other" (any other non-2xx); curl: the
-- CURLE_ names that map here ("other" for the rest).
M.LIST = {
  { kind = "invalid_argument", exit = 2, curl = { "CURLE_URL_MALFORMAT", "CURLE_BAD_FUNCTION_ARGUMENT" },
    meaning = "a bad value (nothing was sent); also a source that is not a regular file (a FIFO is refused at"
      .. " once, never opened for blocking), a call on a busy or closed client" },
  { kind = "io", exit = 3, curl = { "CURLE_READ_ERROR", "CURLE_OUT_OF_MEMORY" },
    meaning = "a file that cannot be opened, read or written (`errno`, `errno_name`), a reader whose size is"
      .. " wrong, a download destination that exists (without `overwrite`), a writer that returned `nil, msg`" },
  { kind = "network", exit = 4, curl = "other", meaning = "the connection could not be made, or broke" },
  { kind = "timeout", exit = 4, curl = { "CURLE_OPERATION_TIMEDOUT" },
    meaning = "`timeout`, `connect_timeout` or `idle_timeout` ran out" },
  { kind = "tls", exit = 4, curl = { "CURLE_SSL_CONNECT_ERROR", "CURLE_PEER_FAILED_VERIFICATION",
    "CURLE_SSL_CERTPROBLEM", "CURLE_SSL_CIPHER", "CURLE_SSL_CACERT_BADFILE", "CURLE_SSL_ISSUER_ERROR",
    "CURLE_SSL_PINNEDPUBKEYNOTMATCH", "CURLE_SSL_INVALIDCERTSTATUS", "CURLE_SSL_CRL_BADFILE",
    "CURLE_SSL_ENGINE_INITFAILED", "CURLE_SSL_ENGINE_NOTFOUND", "CURLE_SSL_ENGINE_SETFAILED",
    "CURLE_SSL_SHUTDOWN_FAILED", "CURLE_USE_SSL_FAILED" },
    meaning = "the TLS handshake or the certificate check failed" },
  { kind = "unauthorized", exit = 5, statuses = { 401 }, meaning = "the key or token was refused" },
  { kind = "forbidden", exit = 5, statuses = { 403 }, meaning = "the key, token or share may not do this" },
  { kind = "not_found", exit = 6, statuses = { 404 }, meaning = "no such item, share or request" },
  { kind = "validation", exit = 7, statuses = { 422 }, meaning = "the server refused a value: `fields` says which" },
  { kind = "storage_full", exit = 8, statuses = { 426 }, meaning = "the license's storage is full" },
  { kind = "rate_limited", exit = 9, statuses = { 429 },
    meaning = "too many requests; also without sending, when the budget would wait longer than it can justify" },
  { kind = "server", exit = 10, statuses = "5xx", meaning = "the server failed" },
  { kind = "http", exit = 10, statuses = "other", meaning = "any other status that is not 2xx" },
  -- CURLE_UNSUPPORTED_PROTOCOL: URLs are http(s) by then (session.c), so
  -- this is an answer that is not HTTP at all ("Received HTTP/0.9 when not allowed")
  { kind = "protocol", exit = 10, curl = { "CURLE_UNSUPPORTED_PROTOCOL", "CURLE_WEIRD_SERVER_REPLY",
    "CURLE_PARTIAL_FILE", "CURLE_BAD_CONTENT_ENCODING", "CURLE_HTTP2", "CURLE_HTTP2_STREAM",
    "CURLE_TOO_MANY_REDIRECTS" },
    meaning = "an unreadable or unexpected response (not HTTP, not JSON, wrong shape, too large, truncated)" },
  { kind = "aborted", exit = 11, curl = { "CURLE_ABORTED_BY_CALLBACK" },
    meaning = "`on_progress` returned false, the client was closed by a callback, or Ctrl-C" },
  { kind = "callback", exit = 11,
    meaning = "`on_progress`, a reader, `rewind` or a writer raised (`cause`: what it raised)" },
}

M.BY_KIND = {}
local by_status, server, other = {}, nil, nil
for _, k in ipairs(M.LIST) do
  M.BY_KIND[k.kind] = k
  if type(k.statuses) == "table" then
    for _, s in ipairs(k.statuses) do by_status[s] = k.kind end
  elseif k.statuses == "5xx" then
    server = k.kind
  elseif k.statuses == "other" then
    other = k.kind
  end
end

-- The kind for an HTTP status, as the list says (nil for 2xx): the one map
-- of statuses, for both transports.
function M.for_status(status)
  if status >= 200 and status < 300 then return nil end
  return by_status[status] or (status >= 500 and status < 600 and server) or other
end

-- The command line's exit status for each kind, and the others it uses.
function M.exit_statuses()
  local out = { ok = 0, usage = 2, interrupted = 130 }
  for _, k in ipairs(M.LIST) do out[k.kind] = k.exit end
  return out
end

-- "0 ok, 2 usage/invalid_argument, 3 io, ...": for the help text, in
-- lines of at most `width` characters (a long one when not given).
function M.exit_summary(width)
  width = width or math.huge
  local by_exit, order = {}, {}
  for _, k in ipairs(M.LIST) do
    if not by_exit[k.exit] then
      by_exit[k.exit] = {}
      order[#order + 1] = k.exit
    end
    local list = by_exit[k.exit]
    list[#list + 1] = k.kind
  end
  table.sort(order)
  local parts = { "0 ok" }
  for _, code in ipairs(order) do
    local names = by_exit[code]
    if code == 2 then table.insert(names, 1, "usage") end
    parts[#parts + 1] = code .. " " .. table.concat(names, "/")
  end
  parts[#parts + 1] = "130 interrupted"
  -- wrapped as the help text around it is
  local lines, line = {}, ""
  for i, part in ipairs(parts) do
    local piece = part .. (i < #parts and "," or "")
    if #line + #piece + 1 > width and line ~= "" then
      lines[#lines + 1] = line
      line = piece
    else
      line = line == "" and piece or (line .. " " .. piece)
    end
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

local function where(k)
  local parts = {}
  if type(k.statuses) == "table" then
    for _, s in ipairs(k.statuses) do parts[#parts + 1] = "HTTP " .. s end
  elseif k.statuses == "5xx" then
    parts[#parts + 1] = "HTTP 5xx"
  elseif k.statuses == "other" then
    parts[#parts + 1] = "any other HTTP status"
  end
  if k.curl == "other" then
    parts[#parts + 1] = "any other libcurl failure"
  elseif type(k.curl) == "table" then
    local names = {}
    for i, c in ipairs(k.curl) do names[i] = "`" .. c:gsub("^CURLE_", "") .. "`" end
    if #names > 3 then names = { names[1], names[2], ("and %d more"):format(#names - 2) } end
    parts[#parts + 1] = "libcurl " .. table.concat(names, ", ")
  end
  return #parts > 0 and table.concat(parts, ", ") or "—"
end

-- The rows of the reference's kinds table (docs/reference.md).
function M.markdown()
  local rows = {}
  for _, k in ipairs(M.LIST) do
    rows[#rows + 1] = ("| `%s` | %s | %d | %s |"):format(k.kind, where(k), k.exit, k.meaning)
  end
  return table.concat(rows, "\n")
end

return M
