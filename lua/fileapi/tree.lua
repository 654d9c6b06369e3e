-- Mirroring a local folder tree, for both services' upload_tree: on
-- MijnKlantportaal (files' client:upload_tree) a directory per local
-- directory (parents before children) and an upload per regular file; for
-- the files.ro owner (d:upload_tree, folders_by_path) an upload per file
-- whose path names its folders, which the server makes.  Names are walked
-- in byte order so that two runs walk alike.  With a journal (JSON lines,
-- each fsync'd), a rerun skips what is done: a "started" line goes down
-- before an item is made and a "done" line with its id after.  Neither API
-- has a call to look an item up by name, so an item whose creation was
-- under way when the run was killed is made again and reported with
-- maybe_duplicate = true.
local core = require "fileapi.core"
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

local function failed(ctx, rel, kind, err)
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

local function mirror_file(ctx, full, rel, parent, st)
  if ctx.done[rel] then
    ctx.summary.skipped = ctx.summary.skipped + 1
    notify(ctx, { path = rel, type = "file", id = ctx.done[rel].id, skipped = true })
    return true
  end
  local again = ctx.started[rel]
  local ok, jerr = write_journal(ctx, { path = rel, type = "file", state = "started" })
  if not ok then return nil, jerr end
  local item, err = ctx.client:upload(full, { directory = parent, on_progress = ctx.on_progress
    and function(sent, total) return ctx.on_progress(rel, sent, total) end })
  if not item then return failed(ctx, rel, "file", err) end
  ok, jerr = write_journal(ctx, { path = rel, type = "file", state = "done", id = item.id })
  if not ok then return nil, jerr end
  ctx.summary.files = ctx.summary.files + 1
  ctx.summary.bytes = ctx.summary.bytes + (item.size or st.size or 0)
  notify(ctx, { path = rel, type = "file", id = item.id, size = item.size, maybe_duplicate = again or nil })
  return true
end

-- Returns true to go on, false to stop (stop_on_error), nil, err when the
-- journal cannot be written (then nothing more is safe to do).
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
      go, werr = mirror_file(ctx, full, child, parent, st)
    end
    if not go then return go, werr end
  end
  return true
end

-- opts: directory, journal, on_item, on_progress(path, sent, total),
-- hidden, follow_symlinks, stop_on_error (checked by the caller);
-- folders_by_path: no folder is made, a file's upload gets its folder's
-- relative path as `directory` (files.ro's owner upload makes them).
function M.upload(client, root, opts)
  local st, err = core.stat(root, true)
  if not st then return nil, err end
  if st.type ~= "directory" then return nil, "not a directory: " .. root end
  local ctx = {
    client = client, journal = opts.journal, on_item = opts.on_item, on_progress = opts.on_progress,
    hidden = opts.hidden, follow_symlinks = opts.follow_symlinks, stop_on_error = opts.stop_on_error,
    folders_by_path = opts.folders_by_path,
    seen = { [st.inode] = true },
    summary = { directories = 0, files = 0, bytes = 0, skipped = 0, failed = 0, loops = 0, errors = {} },
  }
  ctx.done, ctx.started = {}, {}
  if opts.journal then ctx.done, ctx.started = read_journal(opts.journal) end
  local ok, werr = walk(ctx, (root:gsub("/+$", "")), "", opts.directory)
  if ok == nil then return nil, werr end
  ctx.summary.complete = ok and not core.interrupted()
  return ctx.summary
end

return M
