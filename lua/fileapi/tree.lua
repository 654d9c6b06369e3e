-- Mirroring a local folder tree, for both services' upload_tree: on
-- MijnKlantportaal (files' client:upload_tree) a directory per local
-- directory (parents before children) and an upload per regular file; for
-- the files.ro owner (d:upload_tree, folders_by_path) an upload per file
-- whose path names its folders, which the server makes.  Names are walked
-- in byte order so that two runs walk alike.  The folders come first, made
-- one at a time as the walk meets them; then the files, `parallel` at once
-- (fileapi.batch: on files.ro, the first upload into a new folder alone).
-- With a journal (JSON lines, each fsync'd), a rerun skips what is done: a
-- "started" line goes down before an item is sent and a "done" line with
-- its id after, both here in the caller's code as each result comes (an
-- "unsent" line when its request never went out whole).  Neither API has a
-- call to look an item up by name, so an item whose creation was under way
-- when the run was killed -- at most `parallel` of them -- is made again and
-- reported with maybe_duplicate = true.
local core = require "fileapi.core"
local batch = require "fileapi.batch"
local util = require "fileapi.util"
local group = require "fileapi.group"
local cjson = require("cjson").new()

local M = {}

local function read_journal(path)
  local done, started = {}, {}
  local f = io.open(path, "rb")
  if not f then return done, started end
  for line in f:lines() do
    local ok, rec = pcall(cjson.decode, line) -- a torn last line is left out
    if ok and type(rec) == "table" and type(rec.path) == "string" then
      if rec.state == "done" and type(rec.id) == "string" then
        done[rec.path] = rec
      elseif rec.state == "started" then
        started[rec.path] = true
      elseif rec.state == "unsent" then -- it never reached the server whole
        started[rec.path] = nil
      end
    end
  end
  f:close()
  return done, started
end

local function write_journal(ctx, rec)
  if not ctx.journal then return true end
  return core.append_line(ctx.journal, cjson.encode(rec) .. "\n")
end

local function notify(ctx, event)
  if ctx.on_item then ctx.on_item(event) end
end

-- A failed item: told and counted; true to go on.  One whose request never
-- went out whole cannot have been made: the journal says so, and a rerun
-- makes it without calling it a maybe-duplicate.  nil, err when the journal
-- cannot be written.
local function failed(ctx, rel, kind, err)
  if type(err) == "table" and (err.request_sent == false or err.body_sent == false) then
    local ok, jerr = write_journal(ctx, { path = rel, type = kind, state = "unsent" })
    if not ok then return nil, jerr end
  end
  ctx.summary.failed = ctx.summary.failed + 1
  ctx.summary.errors[#ctx.summary.errors + 1] = { path = rel, error = err }
  notify(ctx, { path = rel, type = kind, error = err })
  return not ctx.stop_on_error
end

local function sorted_entries(dir)
  local entries, err = core.list_dir(dir)
  if not entries then return nil, err end
  table.sort(entries, function(a, b) return a.name < b.name end)
  return entries
end

-- What a walk does with one entry: its type once links are resolved, or
-- nil when it is left out.
local function resolve(ctx, full, e)
  if e.name:sub(1, 1) == "." and not ctx.hidden then return nil end
  if e.type ~= "link" then return e.type, e end
  if not ctx.follow_symlinks then return nil end
  local st = core.stat(full, true)
  if not st then return nil end
  return st.type, st
end

local walk

-- A directory: made now (MijnKlantportaal), before any file is sent, so
-- that no two calls ever make it; then walked.
local function mirror_directory(ctx, full, rel, parent, st)
  if ctx.seen[st.inode] then -- a link back up the tree: a loop, skipped but said
    ctx.summary.loops = ctx.summary.loops + 1
    notify(ctx, { path = rel, type = "directory", skipped = true, loop = true })
    return true
  end
  ctx.seen[st.inode] = true
  if ctx.folders_by_path then -- each upload names its folders: nothing to make
    local go, err = walk(ctx, full, rel, rel)
    ctx.seen[st.inode] = nil
    return go, err
  end
  local done = ctx.done[rel]
  local id
  if done then
    id = done.id
    ctx.summary.skipped = ctx.summary.skipped + 1
    notify(ctx, { path = rel, type = "directory", id = id, skipped = true })
  else
    local again = ctx.started[rel]
    local sok, serr = write_journal(ctx, { path = rel, type = "directory", state = "started" })
    if not sok then
      ctx.seen[st.inode] = nil
      return nil, serr
    end
    local dir, merr = ctx.client:mkdir(rel:match("[^/]+$"), { directory = parent })
    if not dir then
      ctx.seen[st.inode] = nil
      return failed(ctx, rel, "directory", merr)
    end
    id = dir.id
    local ok, jerr = write_journal(ctx, { path = rel, type = "directory", state = "done", id = id })
    if not ok then
      ctx.seen[st.inode] = nil
      return nil, jerr
    end
    ctx.summary.directories = ctx.summary.directories + 1
    notify(ctx, { path = rel, type = "directory", id = id, maybe_duplicate = again or nil })
  end
  local go, err = walk(ctx, full, rel, id)
  ctx.seen[st.inode] = nil -- only the folders above count as a loop
  return go, err
end

-- A file: skipped when the journal has it done, else listed to be sent
-- once the walk is over.
local function list_file(ctx, full, rel, parent, st)
  if ctx.done[rel] then
    ctx.summary.skipped = ctx.summary.skipped + 1
    notify(ctx, { path = rel, type = "file", id = ctx.done[rel].id, skipped = true })
    return true
  end
  ctx.files[#ctx.files + 1] = { full = full, rel = rel, parent = parent, size = st.size or 0 }
  return true
end

-- Returns true to go on, false to stop (stop_on_error, Ctrl-C), nil, err
-- when the journal cannot be written (then nothing more is safe to do).
function walk(ctx, dir, rel, parent)
  local entries, err = sorted_entries(dir)
  if not entries then
    if rel == "" then return nil, err end
    return failed(ctx, rel, "directory", err)
  end
  for _, e in ipairs(entries) do
    if core.interrupted() then return false end
    local full, child = dir .. "/" .. e.name, rel == "" and e.name or (rel .. "/" .. e.name)
    local kind, st = resolve(ctx, full, e)
    local go, werr = true, nil
    if kind == "directory" then
      go, werr = mirror_directory(ctx, full, child, parent, st)
    elseif kind == "file" then
      go, werr = list_file(ctx, full, child, parent, st)
    end
    if not go then return go, werr end
  end
  return true
end

local function start_file(ctx, f)
  return write_journal(ctx, { path = f.rel, type = "file", state = "started" })
end

local function send_file(ctx, f)
  local on_progress = ctx.on_progress
  return ctx.client:upload(f.full, { directory = f.parent, on_progress = on_progress
    and function(sent, total) return on_progress(f.rel, sent, total) end })
end

local function settle_file(ctx, f, item, err)
  if not item then return failed(ctx, f.rel, "file", err) end
  local ok, jerr = write_journal(ctx, { path = f.rel, type = "file", state = "done", id = item.id })
  if not ok then return nil, jerr end
  ctx.summary.files = ctx.summary.files + 1
  ctx.summary.bytes = ctx.summary.bytes + (item.size or f.size)
  notify(ctx, { path = f.rel, type = "file", id = item.id, size = item.size or f.size,
    maybe_duplicate = ctx.started[f.rel] })
  return true
end

-- The listed files, `parallel` at once; on files.ro a file's folder is the
-- path its upload makes.
local function send_files(ctx)
  if ctx.on_plan then
    local bytes = 0
    for _, f in ipairs(ctx.files) do bytes = bytes + f.size end
    ctx.on_plan(#ctx.files, bytes)
  end
  return batch.run(ctx.files, {
    parallel = ctx.parallel,
    folder = ctx.folders_by_path and function(f) return f.parent end or nil,
    start = function(f) return start_file(ctx, f) end,
    send = function(f) return send_file(ctx, f) end,
    settle = function(f, item, err) return settle_file(ctx, f, item, err) end,
  })
end

M.OPTIONS = { "journal", "on_item", "on_progress", "on_plan", "hidden", "follow_symlinks", "stop_on_error",
  "parallel" }

-- The options both services' upload_tree take (M.OPTIONS): a wrong type
-- raises at the caller's caller; a bad value is nil and a message.
function M.check(opts, fname)
  util.check_field(opts, "journal", "string", fname, 4)
  for _, k in ipairs({ "on_item", "on_progress", "on_plan" }) do util.check_field(opts, k, "function", fname, 4) end
  for _, k in ipairs({ "hidden", "follow_symlinks", "stop_on_error" }) do
    util.check_field(opts, k, "boolean", fname, 4)
  end
  local n = util.check_field(opts, "parallel", "number", fname, 4)
  local bad = n ~= nil and group.bad_parallel(n)
  if bad then return nil, bad end
  return true
end

-- opts: directory, journal, on_item, on_progress(path, sent, total),
-- on_plan(files, bytes), hidden, follow_symlinks, stop_on_error, parallel
-- (checked by the caller); folders_by_path: no folder is made, a file's
-- upload gets its folder's relative path as `directory` (files.ro's owner
-- upload makes them).
function M.upload(client, root, opts)
  local st, err = core.stat(root, true)
  if not st then return nil, err end
  if st.type ~= "directory" then return nil, "not a directory: " .. root end
  local ctx = {
    client = client, journal = opts.journal, on_item = opts.on_item, on_progress = opts.on_progress,
    on_plan = opts.on_plan, hidden = opts.hidden, follow_symlinks = opts.follow_symlinks,
    stop_on_error = opts.stop_on_error, folders_by_path = opts.folders_by_path, parallel = opts.parallel or 1,
    seen = { [st.inode] = true }, files = {},
    summary = { directories = 0, files = 0, bytes = 0, skipped = 0, failed = 0, loops = 0, errors = {} },
  }
  ctx.done, ctx.started = {}, {}
  if opts.journal then ctx.done, ctx.started = read_journal(opts.journal) end
  local ok, werr = walk(ctx, (root:gsub("/+$", "")), "", opts.directory)
  if ok and not core.interrupted() then ok, werr = send_files(ctx) end
  if ok == nil then return nil, werr end
  ctx.summary.complete = ok and not core.interrupted()
  return ctx.summary
end

return M
