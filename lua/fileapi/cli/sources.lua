-- What the upload commands send: each FILE argument, or standard input
-- for "-", under the name the file goes by (--name, else the base name;
-- "stdin" for standard input), --parallel at once, with a progress bar for
-- one file or one progress line for several, and one line (or JSON object)
-- per result as each comes.
local core = require "fileapi.core"
local batch = require "fileapi.batch"

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
-- result | nil, err, in a function of a group, opts.parallel at once;
-- text(result) is the plain line.  With --path (opts.path), the folders
-- it names are made by the first upload alone.  Failures are reported as
-- they come (out.status keeps the last one's exit status).
function M.each(opts, out, upload, text)
  local files = opts.files
  local parallel = #files > 1 and opts.parallel or 1
  local items, total = {}, 0
  local line
  -- standard input, spooled when read from a pipe: it joins the total then
  local function read_stdin(it)
    local source, spool = stdin_source(out)
    if not source then
      it.err = spool
      return
    end
    it.source, it.name, it.spool = source, opts.name or "stdin", spool
    it.size = core.file_size(source.path) or 0
    total = total + it.size
    if line then line.plan(#files, total) end
  end
  -- a spool is removed once its upload settled, and whatever happens
  local function remove_spools()
    for _, it in ipairs(items) do
      if it.spool then os.remove(it.spool) end
    end
  end
  for _, path in ipairs(files) do
    if core.interrupted() then
      remove_spools()
      return out.status
    end
    if path == "-" then
      items[#items + 1] = { path = path, stdin = true, size = 0 }
      -- side by side, it is read before any transfer starts: reading it
      -- while others are in flight would stall them (nothing drives them)
      if parallel > 1 then read_stdin(items[#items]) end
    else
      local size = core.file_size(path) or 0
      items[#items + 1] = { path = path, source = path, name = opts.name, size = size }
      total = total + size
    end
  end
  line = #files > 1 and out:batch(#files, total) or nil
  batch.run(items, {
    parallel = parallel,
    folder = opts.path and function() return opts.path end or nil,
    -- one after another, standard input is read when its turn comes, not
    -- before the files ahead of it
    start = function(it)
      if it.stdin and not it.source and not it.err then read_stdin(it) end
      return true
    end,
    send = function(it)
      if it.err then return nil, it.err end
      if line then
        return upload(it.source, it.name, function(sent) line.progress(it, sent) end)
      end
      it.update, it.finish = out:bar(it.name or it.path:match("[^/]*$"))
      return upload(it.source, it.name, it.update)
    end,
    settle = function(it, result, err)
      if it.spool then os.remove(it.spool) end
      if it.finish then it.finish(result ~= nil) end
      if line then line.done(it, result and it.size or nil) end
      if result then out:result(it.path, result, text(result)) else out:fail(it.path, err) end
      return true
    end,
  })
  remove_spools()
  if line then line.finish() end
  return out.status
end

-- A tree's options for its one progress line (upload -r, drive-upload -r):
-- on_plan, on_progress and item(ev) (for on_item), and finish(); nothing
-- drawn off a terminal.  The line starts once the folders are made.
function M.tree_line(out)
  local line = out:batch(0, nil)
  local t = { finish = function() if line then line.finish() end end, item = function() end }
  if not line then return t end
  t.on_plan = function(files, bytes) line.plan(files, bytes) end
  t.on_progress = function(path, sent) line.progress(path, sent) end
  function t.item(ev)
    if ev.type == "file" and not ev.skipped then line.done(ev.path, not ev.error and (ev.size or 0) or nil) end
  end
  return t
end

return M
