-- The one generator: what is made from the one list of transport options
-- (fileapi.http.options), the one list of error kinds (fileapi.kinds) and
-- the `--- ` lines above each public call, committed beside its sources:
--   csrc/gen/options.h  the request options the C core reads and sets
--   csrc/gen/kinds.h    the kinds the C core knows, its map of libcurl's results
--   README.md, docs/    their <!-- table: NAME --> and <!-- list: NAME -->
--                       ... <!-- end --> blocks: the options and kinds tables,
--                       the exit statuses, the reference's list of calls
-- `make gen` (lua5.4 tools/gen.lua) rewrites what is stale; with --check it
-- only names it.  spec/tables_spec.lua regenerates all of it in memory and
-- fails while a committed copy differs.
local here = debug.getinfo(1, "S").source:match("^@(.*)tools/gen%.lua$") or ""
local root = here == "" and "." or here:sub(1, -2)
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path

local options = require "fileapi.http.options"
local kinds = require "fileapi.kinds"

local format, concat = string.format, table.concat

local M = { root = root }

-- ---- the calls ------------------------------------------------------------

-- Each public call is documented where it is defined, by `--- ` lines above
-- it: the first says the call as a user writes it and what it returns
--   --- client:get(id) -> FileOrDirectory | nil, err
-- lines indented further, or starting with `->`, go on with that; any other
-- line says more.  The name before the call (`files.`, `client:`) says
-- whose call it is; `--- ` lines naming no public receiver are internal.
-- Nothing here depends on which file a call is in: the list is sorted.
M.CALLS = {
  { block = "calls_fileapi", receivers = { fileapi = "." } },
  { block = "calls_files", receivers = { files = ".", client = ":" } },
  { block = "calls_shares", receivers = { shares = ".", share = ":" } },
  { block = "calls_drive", receivers = { drive = ".", d = ":" } },
}

local RECEIVER = {}
for _, section in ipairs(M.CALLS) do
  for name, sep in pairs(section.receivers) do RECEIVER[name] = { section = section, sep = sep } end
end

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The checkout's files `find` names (relative paths, sorted).
local function find(args)
  local p = assert(io.popen("cd " .. sh_quote(root) .. " && find " .. args .. " 2>/dev/null | LC_ALL=C sort"))
  local out = {}
  for path in p:lines() do out[#out + 1] = path end
  p:close()
  return out
end

local function read(path)
  local f = io.open(root .. "/" .. path, "rb")
  if not f then return "" end
  local text = f:read("*a")
  f:close()
  return text
end

-- The public call a `--- ` line names: receiver, separator, name.
local function call_named(line)
  for receiver, sep, name in line:gmatch("([%a_][%w_]*)([.:])([%a_][%w_]*)") do
    local r = RECEIVER[receiver]
    if r and r.sep == sep then return receiver, sep, name end
  end
end

-- Every documented public call: { id = "client:get", receiver, name,
-- signature, notes, where = "path:line" }.  A call documented twice is an error.
function M.calls()
  local out, seen = {}, {}
  for _, path in ipairs(find("lua -name '*.lua'")) do
    local n, current = 0, nil
    for line in (read(path) .. "\n"):gmatch("(.-)\n") do
      n = n + 1
      local text = line:match("^%s*%-%-%-%s(.*)$") or line:match("^%s*%-%-%-$") and ""
      if not text then
        current = nil
      elseif current then
        if text:match("^%s%s") or text:match("^%->") then
          current.signature = current.signature .. " " .. text:match("^%s*(.-)%s*$")
        elseif text ~= "" then
          current.notes[#current.notes + 1] = text:match("^%s*(.-)%s*$")
        end
      else
        local receiver, sep, name = call_named(text)
        if receiver then
          local id = receiver .. sep .. name
          assert(not seen[id], ("%s is documented twice: %s and %s:%d"):format(id, tostring(seen[id]), path, n))
          seen[id] = path .. ":" .. n
          current = { id = id, receiver = receiver, name = name, signature = text:match("^(.-)%s*$"), notes = {},
            where = seen[id] }
          out[#out + 1] = current
        end
      end
    end
  end
  return out
end

-- The module's own functions first, then its objects' methods, each by name.
local function sorted(section, calls)
  local list = {}
  for _, c in ipairs(calls) do
    if RECEIVER[c.receiver].section == section then list[#list + 1] = c end
  end
  table.sort(list, function(a, b)
    local am, bm = section.receivers[a.receiver] == ".", section.receivers[b.receiver] == "."
    if am ~= bm then return am end
    return a.id < b.id
  end)
  return list
end

local function calls_markdown(section, calls)
  local lines = {}
  for _, c in ipairs(sorted(section, calls)) do
    lines[#lines + 1] = "- `" .. c.signature .. "`"
    if #c.notes > 0 then lines[#lines + 1] = "  " .. concat(c.notes, " ") end
  end
  return concat(lines, "\n")
end

-- ---- the blocks in README.md and docs/ --------------------------------------

M.BLOCKS = {
  options = "| option | default | meaning |\n|---|---|---|\n" .. options.markdown(),
  kinds = "| kind | from | exit status | when |\n|---|---|---|---|\n" .. kinds.markdown(),
  exit = "Exit status by error kind: " .. kinds.exit_summary() .. ".",
}
do
  local calls = M.calls()
  for _, section in ipairs(M.CALLS) do M.BLOCKS[section.block] = calls_markdown(section, calls) end
end

local MARKERS = { "table", "list" }

-- name -> the text of each <!-- table: NAME --> (or list:) ... <!-- end --> block.
function M.blocks(text)
  local out = {}
  for _, marker in ipairs(MARKERS) do
    for name, body in text:gmatch("<!%-%- " .. marker .. ": ([%w_]+) %-%->\n(.-)<!%-%- end %-%->") do
      out[name] = body:gsub("\n$", "")
    end
  end
  return out
end

-- The text with every such block rendered (an empty one too).
function M.render(text)
  for _, marker in ipairs(MARKERS) do
    text = text:gsub("(<!%-%- " .. marker .. ": ([%w_]+) %-%->\n)(.-)(<!%-%- end %-%->)",
      function(open, name, _, close)
        assert(M.BLOCKS[name], "no block named " .. name)
        return open .. M.BLOCKS[name] .. "\n" .. close
      end)
  end
  return text
end

-- ---- C headers ------------------------------------------------------------

local function banner(source, guard, about)
  return format("/* Generated by tools/gen.lua from %s: do not edit.\n * Change the list, then run `make gen`.\n *\n%s */\n"
    .. "#ifndef %s\n#define %s\n\n", source, about, guard, guard)
end

-- A double literal that reads back as the same number in C.
local function double(v)
  local s = format("%.17g", v)
  return s:find("[.e]") and s or s .. ".0"
end

-- One X(...) line per row, joined into a macro of the rows.
local function xmacro(name, rows)
  local lines = { "#define " .. name .. "(X)" }
  for _, r in ipairs(rows) do lines[#lines + 1] = "    X(" .. concat(r, ", ") .. ")" end
  return concat(lines, " \\\n") .. "\n"
end

local function option_row(o)
  local name = "options.lua: " .. o.name
  assert(o.type == "number" or o.type == "string", name .. ": the C core reads numbers and strings")
  assert(o.curlopt and (o.as == "ms" or o.as == "string") or (o.bespoke and not o.curlopt),
    name .. ": say curlopt and as (ms or string), or bespoke")
  assert(o.type == "string" or o.range, name .. ": a number the C core reads needs a range")
  local range = o.range or { 0, 0 }
  local missing = o.missing == "default" and o.default or 0
  return { o.name, o.type, double(range[1]), double(range[2]), double(missing), o.curlopt or "0", o.as or "bespoke" }
end

function M.options_h()
  local rows = {}
  for _, o in ipairs(options.REQUEST) do
    if o.honoured:find("curl", 1, true) then rows[#rows + 1] = option_row(o) end
  end
  return banner("lua/fileapi/http/options.lua", "FILEAPI_GEN_OPTIONS_H",
    " * The transport options a request table carries to the C core, a row each:\n"
    .. " *   X(name, type, lo, hi, missing, curlopt, as)\n"
    .. " * type: number (a double) or string (NULL when absent); lo..hi: the numbers\n"
    .. " * accepted; missing: the number taken when the field is absent; curlopt\n"
    .. " * and as: the libcurl option set from it and how -- ms (seconds, to\n"
    .. " * milliseconds rounded up), string (when given), or bespoke (its own code,\n"
    .. " * named in the list).\n")
    .. xmacro("FA_REQUEST_OPTIONS", rows) .. "\n#endif\n"
end

function M.kinds_h()
  local names, curl, other = {}, {}, nil
  for _, k in ipairs(kinds.LIST) do
    names[#names + 1] = { k.kind }
    if k.curl == "other" then
      assert(other == nil, "kinds.lua: one kind takes libcurl's other results")
      other = k.kind
    elseif k.curl then
      for _, code in ipairs(k.curl) do curl[#curl + 1] = { code, k.kind } end
    end
  end
  assert(other, "kinds.lua: a kind must take libcurl's other results (curl = \"other\")")
  return banner("lua/fileapi/kinds.lua", "FILEAPI_GEN_KINDS_H",
    " * FA_KINDS: every kind an error may have, X(kind); FA_CURL_KINDS: libcurl's\n"
    .. " * results by kind, X(code, kind); FA_CURL_OTHER: the kind of any other.\n")
    .. xmacro("FA_KINDS", names) .. "\n" .. xmacro("FA_CURL_KINDS", curl)
    .. "\n#define FA_CURL_OTHER " .. other .. "\n\n#endif\n"
end

-- ---- the files ------------------------------------------------------------

-- path -> what it should hold, given what it holds now
M.FILES = {
  { path = "csrc/gen/options.h", make = M.options_h },
  { path = "csrc/gen/kinds.h", make = M.kinds_h },
}
for _, path in ipairs(find("README.md docs -name '*.md'")) do M.FILES[#M.FILES + 1] = { path = path, make = M.render } end

-- { path, want } of every generated file that differs from what it should be.
function M.stale()
  local out = {}
  for _, file in ipairs(M.FILES) do
    local have = read(file.path)
    local want = file.make(have)
    if have ~= want then out[#out + 1] = { path = file.path, want = want } end
  end
  return out
end

if arg and arg[0] and arg[0]:match("gen%.lua$") then
  local check = arg[1] == "--check"
  for _, file in ipairs(M.stale()) do
    if check then
      io.stderr:write(file.path, " is stale: run `make gen`\n")
    else
      local f = assert(io.open(root .. "/" .. file.path, "wb"))
      f:write(file.want)
      f:close()
      io.write("wrote ", file.path, "\n")
    end
  end
  if check and #M.stale() > 0 then os.exit(1) end
end

return M
