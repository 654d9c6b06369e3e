-- What the upload commands send: each FILE argument, or standard input
-- for "-", under the name the file goes by (--name, else the base name;
-- "stdin" for standard input), with one progress bar per file and one line
-- (or JSON object) per result.
local core = require "fileapi.core"

local M = {}

-- A pipe has no size, and an upload needs one up front: standard input is
-- spooled to a private file under $TMPDIR first, as stderr says.  Every
-- write and the close are checked, so a full disk fails the command (exit 3)
-- instead of uploading a truncated file; the spool is removed either way.
local function spool_stdin(out)
  local dir = os.getenv("TMPDIR")
  if not dir or dir == "" then dir = "/tmp" end
  local path, terr = core.temp_file(dir, "fileapi-stdin")
  if not path then return nil, terr end
  local function failed(what, msg)
    os.remove(path)
    return nil, core.error({ kind = "io", message = ("%s the spool in %s: %s"):format(what, dir, tostring(msg)),
      retryable = false, attempts = 0 })
  end
  local f, oerr = io.open(path, "wb")
  if not f then return failed("cannot open", oerr) end
  out.err:write("fileapi: reading standard input into a temporary file first (the upload needs its size)\n")
  while true do
    local block = io.stdin:read(1048576)
    if not block then break end
    local ok, werr = f:write(block)
    if not ok then
      f:close()
      return failed("cannot write", werr)
    end
  end
  local flushed, ferr = f:flush()
  local closed, cerr = f:close()
  if not (flushed and closed) then return failed("cannot write", ferr or cerr) end
  return path
end

-- "-": a redirected file is read in place, a pipe spooled.  Returns the
-- source table, and the spool to remove afterwards (if any).
local function stdin_source(out)
  local st = core.stat("/dev/stdin", true)
  if st and st.type == "file" then return { path = "/dev/stdin" } end
  local spool, err = spool_stdin(out)
  if not spool then return nil, err end
  return { path = spool }, spool
end

-- One FILE argument: source (a path, or a table naming the file), the name
-- it is sent under (nil: the library's default, the base name), the spool.
function M.source(opts, out, path)
  if path ~= "-" then return path, opts.name end
  local source, spool = stdin_source(out)
  if not source then return nil, spool end
  return source, opts.name or "stdin", spool
end

-- A source under the given name, for the calls that take the file name
-- from the source (files.ro's: name and extension come from it).
function M.named(source, name)
  if not name then return source end
  if type(source) == "string" then return { path = source, filename = name } end
  source.filename = name
  return source
end

-- --name names one file.
function M.check(opts, files)
  if opts.name and #files > 1 then return nil, "--name names one FILE (got " .. #files .. ")" end
  return true
end

-- Uploads each FILE in opts.files: upload(source, name, on_progress) ->
-- result | nil, err; text(result) is the plain line.  Failures are
-- reported as they come (out.status keeps the last one's exit status).
function M.each(opts, out, upload, text)
  for _, path in ipairs(opts.files) do
    if core.interrupted() then break end
    local source, name, spool = M.source(opts, out, path)
    if not source then
      out:fail(path, name)
    else
      local update, finish = out:bar(name or path:match("[^/]*$"))
      local result, err = upload(source, name, update)
      if spool then os.remove(spool) end
      if finish then finish(result ~= nil) end
      if result then out:result(path, result, text(result)) else out:fail(path, err) end
    end
  end
  return out.status
end

return M
