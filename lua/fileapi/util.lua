-- Small helpers shared by the API modules: input checks, URL pieces,
-- error construction and redaction of secrets.
local core = require "fileapi.core"

local byte, find, format, gsub, sub = string.byte, string.find, string.format, string.gsub, string.sub
local type, pairs, ipairs, error, tostring = type, pairs, ipairs, error, tostring

local M = {}

M.NAME_MAX = 255

function M.new_error(kind, message, extra)
  local err = { kind = kind, message = message, retryable = false, attempts = 0 }
  if extra then
    for k, v in pairs(extra) do err[k] = v end
  end
  return core.error(err)
end

function M.invalid(message)
  return nil, M.new_error("invalid_argument", message)
end

-- A failure before anything was sent, as a call returns it: a message (a
-- bad value) as invalid_argument, an error (the core's: a file that cannot
-- be read) through `engine`, which finishes it as it finishes its own.
function M.fail_before(engine, why)
  if type(why) == "string" then return M.invalid(why) end
  return engine:fail(why)
end

-- A wrong Lua type is a programming error: raise as luaL_argerror does,
-- naming the line that called the public function.  `level` is error()'s
-- level: 3 (the default) when the public function calls the check itself,
-- one more for each helper in between.
function M.check_type(value, expected, argn, fname, optional, level)
  local t = type(value)
  if t == expected or (optional and value == nil) then return value end
  error(format("bad argument #%d to '%s' (%s expected, got %s)",
    argn, fname, expected, value == nil and "no value" or t), level or 3)
end

function M.check_field(tbl, key, expected, fname, level)
  local v = tbl[key]
  if v ~= nil and type(v) ~= expected then
    error(format("bad option '%s' to '%s' (%s expected, got %s)", key, fname, expected, type(v)), level or 3)
  end
  return v
end

-- Misspelled option names raise like wrong types: a silently ignored
-- `dir =` would upload to the root.  `...` are lists of the known names.
function M.check_keys(tbl, fname, ...)
  local known = {}
  local lists = { ... }
  local level = 3
  if type(lists[#lists]) == "number" then level = table.remove(lists) end
  for _, list in ipairs(lists) do
    for _, k in ipairs(list) do known[k] = true end
  end
  for k in pairs(tbl) do
    if not known[k] then
      error(format("bad option '%s' to '%s' (unknown option)", tostring(k), fname), level)
    end
  end
end

function M.has_control(s)
  return find(s, "[%z\1-\31\127]") ~= nil
end

-- Strict UTF-8: no overlongs, surrogates or code points past U+10FFFF.
function M.is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then -- luacheck: ignore 542 (ASCII: one byte)
    elseif c >= 0xC2 and c <= 0xDF then
      len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else
      return false
    end
    for j = 1, len - 1 do
      local cc = byte(s, i + j)
      if not cc then return false end
      if j == 1 then
        if cc < lo or cc > hi then return false end
      elseif cc < 0x80 or cc > 0xBF then
        return false
      end
    end
    i = i + len
  end
  return true
end

-- A name the APIs store: non-empty text of sane length.
function M.check_name(what, s)
  if s == "" then return nil, what .. " must not be empty" end
  if #s > M.NAME_MAX then return nil, format("%s is longer than %d bytes", what, M.NAME_MAX) end
  if M.has_control(s) then return nil, what .. " must not contain control characters" end
  if not M.is_utf8(s) then return nil, what .. " must be valid UTF-8" end
  return true
end

-- RFC 3986: everything but unreserved characters is encoded, so a value can
-- never leave its path segment or query parameter.
function M.pct(s)
  return (gsub(s, "[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

local function is_loopback(host)
  return host == "localhost" or host == "[::1]" or find(host, "^127%.%d+%.%d+%.%d+$") ~= nil
end

-- Returns the base URL without a trailing slash, or nil and a message.
function M.check_base_url(url, allow_insecure)
  if url == "" or find(url, "[%s%c]") then
    return nil, "base_url must be a URL without spaces or control characters"
  end
  local scheme, authority, path = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil, "base_url must look like https://host[/path]" end
  scheme = scheme:lower()
  if scheme ~= "https" and scheme ~= "http" then
    return nil, "base_url must use https:// (or http:// for a local server)"
  end
  if authority == "" or find(authority, "@", 1, true) then
    return nil, "base_url must name a host and carry no credentials"
  end
  if find(path, "[?#]") then return nil, "base_url must not have a query or fragment" end
  local host = authority:match("^(%[[^%]]+%])") or authority:match("^([^:]+)")
  if not host then return nil, "base_url has no host" end
  local port = authority:sub(#host + 1)
  if port ~= "" and not port:match("^:%d+$") then return nil, "base_url has an invalid port" end
  if scheme == "http" and not allow_insecure and not is_loopback(host:lower()) then
    return nil, "plain http:// to a non-loopback host is refused (use https:// or allow_insecure = true)"
  end
  return (gsub(scheme .. "://" .. authority .. path, "/+$", ""))
end

local to_integer = math.tointeger -- nil before Lua 5.3, where numbers are all floats

-- JSON null (a lightuserdata from cjson) becomes nil, and whole numbers
-- become integers where the language has them (cjson decodes floats).
function M.normalize(v, null)
  if to_integer and math.type(v) == "float" then return to_integer(v) or v end
  if type(v) ~= "table" then return v end
  for k, x in pairs(v) do
    if x == null then
      v[k] = nil
    else
      v[k] = M.normalize(x, null)
    end
  end
  return v
end

local function replace_plain(s, secret, mask)
  if not find(s, secret, 1, true) then return s end -- most strings: nothing to replace
  local out, i = {}, 1
  while true do
    local a, b = find(s, secret, i, true)
    if not a then break end
    out[#out + 1] = sub(s, i, a - 1)
    out[#out + 1] = mask
    i = b + 1
  end
  out[#out + 1] = sub(s, i)
  return table.concat(out)
end

-- The list of secrets a client redacts with.  The ones it was configured
-- with (a key, a client id and secret, a share token, a proxy's
-- credentials) stay for its life; the ones it meets on the way (every
-- refresh's new tokens, the tokens of the links it makes, a link's
-- password) rotate through the last MAX_ROTATING, so that a long-lived
-- client's list, and the work of every redaction, stays bounded.  What
-- was in the list when the first rotating one came is the configured part
-- (list.fixed counts it); the newest ones are always in.
M.MAX_ROTATING = 32

function M.add_secret(list, value, rotating)
  if type(value) ~= "string" or value == "" then return end
  for i = #list, 1, -1 do
    if list[i] == value then
      -- met again: among the newest once more
      if rotating and list.fixed and i > list.fixed then
        table.remove(list, i)
        list[#list + 1] = value
      end
      return
    end
  end
  if not rotating then
    local at = (list.fixed or #list) + 1
    table.insert(list, at, value)
    if list.fixed then list.fixed = at end
    return
  end
  list.fixed = list.fixed or #list
  list[#list + 1] = value
  while #list - list.fixed > M.MAX_ROTATING do table.remove(list, list.fixed + 1) end
end

-- A warning for whoever runs the process: nginx's error log inside nginx,
-- stderr elsewhere.  Its text must carry no secret (redact first).
function M.warn(text)
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and ngx.log then
    ngx.log(ngx.WARN, text)
  else
    io.stderr:write(text, "\n")
  end
end

-- Secrets never leave through an error: every string field is scrubbed.
function M.redact(value, secrets)
  if type(value) == "string" then
    for i = 1, #secrets do
      local secret = secrets[i]
      -- a secret of a few characters would be found in ordinary words and
      -- mangle every message; no real key or token is that short
      if #secret >= 4 then value = replace_plain(value, secret, "[REDACTED]") end
    end
    return value
  end
  if type(value) == "table" then
    for k, v in pairs(value) do value[k] = M.redact(v, secrets) end
  end
  return value
end

local SOURCE_FIELDS = { "path", "data", "reader", "rewind", "size", "filename" }

-- Turns the accepted source forms (a path; { path }, { data, filename },
-- { reader, size, filename, rewind }) into one multipart part description
-- named "file".  Raises for wrong types (level: as check_type's, seen from
-- here); nil, message for bad values.
function M.source_part(source, filename, fname, level)
  local part = { name = "file" }
  if type(source) == "string" then
    part.path = source
  else
    local at = (level or 3) + 1
    M.check_keys(source, fname, SOURCE_FIELDS, at)
    part.path = M.check_field(source, "path", "string", fname, at)
    part.data = M.check_field(source, "data", "string", fname, at)
    part.reader = M.check_field(source, "reader", "function", fname, at)
    part.rewind = M.check_field(source, "rewind", "function", fname, at)
    part.size = M.check_field(source, "size", "number", fname, at)
    filename = filename or M.check_field(source, "filename", "string", fname, at)
    local given = (part.path and 1 or 0) + (part.data and 1 or 0) + (part.reader and 1 or 0)
    if given ~= 1 then return nil, "source needs exactly one of path, data or reader" end
    if part.reader and (part.size == nil or part.size < 0 or part.size ~= math.floor(part.size)
        or part.size >= 2 ^ 53) then
      return nil, "a reader source needs a whole size >= 0"
    end
  end
  if part.path == "" then return nil, "path must not be empty" end
  filename = filename or (part.path and M.basename(part.path))
  if not filename then return nil, "a data or reader source needs a filename" end
  -- Quotes, CR, LF and other control bytes are fine: the multipart encoder
  -- escapes them, so any name a file system allows can be sent safely.
  if filename == "" or #filename > M.NAME_MAX then
    return nil, "filename must be 1 to " .. M.NAME_MAX .. " bytes"
  end
  part.filename = filename
  return part
end

function M.basename(path)
  return path:match("([^/]*)/*$")
end

return M
