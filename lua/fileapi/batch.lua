-- Items sent side by side, for upload_tree and the command's multi-item
-- commands: at most `parallel` at once, through a fileapi.group, started in
-- their order.  Each item is started (start: where a journal says "started")
-- and settled (settle: "done", on_item, a printed line) in the caller's own
-- code, not in the group's functions: so what is in flight is never more
-- than `parallel` items, and what records them is written one line at a
-- time as each result comes.
--
-- files.ro makes the folders an upload's `path` names, and two uploads that
-- race into a new folder make it twice.  So an item whose folder is not yet
-- known to exist makes it alone: every other item that would make one of
-- the same folders waits until that upload has ended (made: the rest of the
-- folder goes side by side; failed: the next one tries alone).
local core = require "fileapi.core"
local group = require "fileapi.group"

local ipairs = ipairs

local M = {}

-- "a/b/c" -> { "a", "a/b", "a/b/c" }: the folders a path makes.
local function prefixes(dir)
  local out, at = {}, 1
  while true do
    local slash = dir:find("/", at, true)
    if not slash then
      out[#out + 1] = dir
      return out
    end
    out[#out + 1] = dir:sub(1, slash - 1)
    at = slash + 1
  end
end

-- The folders an item into `dir` would make: {} when none (no folder, or
-- every one known), nil while an item in flight makes one of them.
local function claims(run, dir)
  if not dir or dir == "" or run.known[dir] then return {} end
  local out = {}
  for _, p in ipairs(prefixes(dir)) do
    if not run.known[p] then
      if run.claimed[p] then return nil end
      out[#out + 1] = p
    end
  end
  return out
end

-- The first item not started that may start now, and the folders it makes.
local function next_item(run, items, folder)
  local blocked = {}
  for i = run.head, #items do
    if not run.started[i] then
      local dir = folder and folder(items[i])
      if not (dir and blocked[dir]) then
        local made = claims(run, dir)
        if made then return i, made end
        blocked[dir] = true
      end
    end
  end
end

local function one_at_a_time(items, opts)
  for _, item in ipairs(items) do
    if core.interrupted() then return false end
    if opts.start then
      local ok, err = opts.start(item)
      if not ok then return nil, err end
    end
    local go, err = opts.settle(item, opts.send(item))
    if not go then return go, err end
  end
  return true
end

local function side_by_side(items, opts)
  local n = opts.parallel
  local g, gerr = group.new({ parallel = n })
  if not g then return nil, gerr end
  local run = { known = {}, claimed = {}, started = {}, head = 1, running = 0, go = true }
  local by_handle = {}
  local function start_more()
    while run.go and run.running < n and not core.interrupted() do
      local i, made = next_item(run, items, opts.folder)
      if not i then return end
      run.started[i] = true
      while run.started[run.head] do run.head = run.head + 1 end
      if opts.start then
        local ok, err = opts.start(items[i])
        if not ok then
          run.go, run.fatal = false, err
          g:cancel()
          return
        end
      end
      for _, p in ipairs(made) do run.claimed[p] = true end
      by_handle[g:spawn(function() return opts.send(items[i]) end)] = { i, made }
      run.running = run.running + 1
    end
  end
  start_more()
  for h, res, err in g:results() do
    run.running = run.running - 1
    local i, made = by_handle[h][1], by_handle[h][2]
    by_handle[h] = nil
    for _, p in ipairs(made) do
      run.claimed[p] = nil
      if res then run.known[p] = true end
    end
    if not run.fatal then -- once the record cannot be written, nothing more is
      local ok, go, serr = pcall(opts.settle, items[i], res, err)
      if not ok then
        -- a raise (a caller's on_item): nothing more starts, what is in
        -- flight ends and is settled, recorded, then the raise goes on
        run.go, run.raised = false, run.raised or { go }
      elseif go == nil then
        run.go, run.fatal = false, serr
        g:cancel()
      elseif not go then
        run.go = false -- stop_on_error: what is in flight ends as it will
      end
    end
    start_more()
  end
  if run.raised then error(run.raised[1], 0) end
  if run.fatal then return nil, run.fatal end
  return run.go and not core.interrupted()
end

-- Sends every item: opts.parallel (1: one after another, in this code,
-- without a group), opts.send(item) -> res, err (in a group's function);
-- opts.start(item) -> true | nil, err (optional: before it is sent);
-- opts.settle(item, res, err) -> true to go on, false to start nothing
-- more, nil, err when nothing more is safe (the rest is cancelled); a
-- raise in it starts nothing more, settles what is in flight, then goes on;
-- opts.folder(item) -> the folder path its upload makes, or nil.  Returns
-- true when every item went, false when stopped (settle, Ctrl-C), nil, err.
function M.run(items, opts)
  if opts.parallel == 1 then return one_at_a_time(items, opts) end
  return side_by_side(items, opts)
end

return M
