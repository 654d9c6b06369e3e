-- The command's output: one line per result (or a JSON object per line
-- with --json), one line per error naming its path once, exit statuses by
-- error kind, and the progress bar (one per transfer, or one line for a
-- batch) drawn on a terminal only.
local core = require "fileapi.core"
local cjson = require("cjson").new()
local kinds = require "fileapi.kinds"

local M = {}

-- Exit statuses by error kind, from the one list of kinds; the help text
-- and docs/cli.md say the same.
M.EXIT = kinds.exit_statuses()

local Out = {}
Out.__index = Out

local function new_out(opts, io_out, io_err)
  return setmetatable({ opts = opts, out = io_out, err = io_err, status = 0 }, Out)
end

-- While a batch's progress line is drawn, whatever else is printed wipes
-- it first and draws it again after: it stays the last line.
local function wipe(self)
  if self.batch_line then self.batch_line.wipe() end
end

local function redraw(self)
  if self.batch_line then self.batch_line.redraw() end
end

function Out:json(value)
  wipe(self)
  self.out:write(cjson.encode(value), "\n")
  self.out:flush()
  redraw(self)
end

function Out:line(text)
  wipe(self)
  self.out:write(text, "\n")
  self.out:flush()
  redraw(self)
end

local function error_object(err)
  return { kind = err.kind, status = err.status, message = err.message, fields = err.fields,
    retryable = err.retryable, attempts = err.attempts }
end

-- The library names its options as Lua does (`parent_id must be a UUID`,
-- `pass overwrite = true`); the command's user knows its flags.  flags:
-- Lua option -> the flag that set it.  A message that starts with an
-- option's name is about a value the user gave; a hint (`name = true`)
-- names the flag to add.
local function in_flag_words(message, flags)
  for name, flag in pairs(flags or {}) do
    message = message:gsub("%f[%w_]" .. name .. " = true%f[^%w_]", flag)
    message = message:gsub("%f[%w_]" .. name .. ' = "%.%.%."', flag .. " ...")
    if message:find("^" .. name .. "%f[^%w_]") then message = flag .. message:sub(#name + 1) end
  end
  return message
end

-- A failure for `what` (a path, an id or a command): one line on stderr that
-- names it once, a JSON line with --json; returns the exit status.
function Out:fail(what, err)
  if core.interrupted() then return M.EXIT.interrupted end
  if type(err.message) == "string" then err.message = in_flag_words(err.message, self.flags) end
  if self.opts.json then self:json({ path = what, error = error_object(err) }) end
  local message = (tostring(err):gsub("^fileapi: ", ""))
  if what and not message:find(what, 1, true) then message = what .. ": " .. message end
  wipe(self)
  self.err:write("fileapi: ", message, "\n")
  redraw(self)
  self.status = M.EXIT[err.kind] or 1
  return self.status
end

-- A result: a JSON line with --json, else the given text.
function Out:result(path, value, text)
  if self.opts.json then
    self:json({ path = path, result = value })
  elseif text then
    self:line(text)
  end
end

local function human_bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local u = 1
  while n >= 1024 and u < #units do n, u = n / 1024, u + 1 end
  return u == 1 and ("%d %s"):format(n, units[u]) or ("%.1f %s"):format(n, units[u])
end

local function clock(seconds)
  if seconds ~= seconds or seconds == math.huge then return "--:--" end
  seconds = math.floor(seconds + 0.5)
  return ("%d:%02d"):format(math.floor(seconds / 60), seconds % 60)
end

-- The first `width` characters of a UTF-8 label, padded: never a cut
-- inside a character.
function M.label(text, width)
  local out, n = {}, 0
  for ch in text:gmatch("[%z\1-\127\194-\244][\128-\191]*") do
    if n == width then break end
    out[#out + 1] = ch
    n = n + 1
  end
  return table.concat(out) .. (" "):rep(width - n)
end

-- Each wait the client announces, with its reason (on_wait's second
-- argument) in words.
local WAITS = {
  rate_limit = "waiting %.1f s (rate limit)",
  retry_after = "waiting %.1f s (the server asked: Retry-After)",
  backoff = "waiting %.1f s before trying again",
  store = "waiting %.1f s for the shared store",
  refresh = "waiting %.1f s for a token refresh",
}

-- A line of its own on stderr (-v's), under a batch's progress line.
function Out:note(text)
  wipe(self)
  self.err:write(text, "\n")
  self.err:flush()
  redraw(self)
end

function Out:waiting(seconds, reason)
  wipe(self)
  self.err:write("fileapi: ", (WAITS[reason] or "waiting %.1f s"):format(seconds), "\n")
  redraw(self)
end

-- A progress bar on stderr, redrawn at most ten times a second: returns
-- update(sent, total), for on_progress, and finish(done).  A report that
-- comes within a tenth of a second of the last drawing is kept, not drawn,
-- so finish draws once more and ends the line: at 100% when the transfer
-- is done, else where it stopped.
local function progress_bar(label, out)
  local started, last_draw = core.now(), 0
  local width = 30
  local seen_sent, seen_total = 0, nil
  label = M.label(label, 20)
  local function draw(sent, total, final)
    local now = core.now()
    total = total or sent
    local frac = total > 0 and math.min(sent / total, 1) or 1
    local filled = math.floor(frac * width)
    local rate = sent / math.max(now - started, 1e-6)
    local eta = rate > 0 and (total - sent) / rate or math.huge
    out:write(("\r%s [%s%s] %3d%%  %10s/s  ETA %s "):format(label, ("#"):rep(filled),
      ("-"):rep(width - filled), math.floor(frac * 100), human_bytes(rate), clock(eta)))
    if final then out:write("\n") end
    out:flush()
  end
  local function update(sent, total)
    seen_sent, seen_total = sent, total
    local now = core.now()
    if now - last_draw < 0.1 then return end
    last_draw = now
    draw(sent, total, false)
  end
  local function finish(done)
    if done and seen_total then seen_sent = seen_total end
    draw(seen_sent, seen_total, true)
  end
  return update, finish
end

local function show_bar(opts)
  return not opts.quiet and not opts.json and core.isatty(2)
end

-- The bar for one transfer when one is drawn (on a terminal, without
-- --quiet or --json): update, finish; else nothing.
function Out:bar(label)
  if not show_bar(self.opts) then return nil, nil end
  return progress_bar(label, self.err)
end

-- One progress line for a batch on stderr, redrawn at most ten times a
-- second: files done of all, bytes, rate (and the share and ETA once the
-- bytes to send are known).  progress(key, bytes) says how far one item
-- is, done(key, bytes) that it ended (bytes: its size, nil when it failed),
-- plan(files, bytes) sets the totals (bytes nil: unknown), finish() draws
-- it a last time and ends the line.
local function batch_line(out, files, bytes)
  local started, last_draw = core.now(), -1
  -- shown: drawn since it started (it is drawn again after other output);
  -- visible: on the screen now
  local moving, finished, done_bytes, shown, visible, dirty = {}, 0, 0, false, false, false
  local line = {}
  local function text()
    local sum = done_bytes
    for _, n in pairs(moving) do sum = sum + n end
    local rate = sum / math.max(core.now() - started, 1e-6)
    if not bytes then
      return ("files %d/%d  %s  %s/s"):format(finished, files, human_bytes(sum), human_bytes(rate))
    end
    local frac = bytes > 0 and math.min(sum / bytes, 1) or (finished == files and 1 or 0)
    local eta = rate > 0 and (bytes - sum) / rate or math.huge
    return ("files %d/%d  %s of %s  %3d%%  %s/s  ETA %s"):format(finished, files, human_bytes(sum),
      human_bytes(bytes), math.floor(frac * 100), human_bytes(rate), clock(math.max(eta, 0)))
  end
  local function paint()
    last_draw, shown, visible, dirty = core.now(), true, true, false
    out:write("\r", text(), "\27[K")
    out:flush()
  end
  -- Once every file is done, finish alone draws the line: its last figures
  -- show once, under the last item's own line, however the draws fell.
  local function draw(force)
    dirty = true
    if files > 0 and finished >= files then return end
    if force or core.now() - last_draw >= 0.1 then paint() end
  end
  function line.wipe()
    if visible then out:write("\r\27[K") end
    visible = false
  end
  function line.redraw()
    if shown then draw(true) end
  end
  function line.plan(n, total)
    files, bytes = n, total
    draw(true)
  end
  function line.progress(key, n)
    moving[key] = n
    draw(false)
  end
  function line.done(key, n)
    moving[key] = nil
    finished = finished + 1
    done_bytes = done_bytes + (n or 0)
    draw(false)
  end
  function line.finish()
    if shown or dirty then
      if dirty then paint() end
      out:write("\n")
      out:flush()
    end
    shown, visible = false, false
  end
  return line
end

-- The batch's line when one is drawn (on a terminal, without --quiet or
-- --json): files and bytes as batch_line takes them; nil otherwise.  Drawn
-- from the first plan(), progress() or done() on.
function Out:batch(files, bytes)
  if not show_bar(self.opts) then return nil end
  self.batch_line = batch_line(self.err, files, bytes)
  return self.batch_line
end

M.new = new_out
M.show_bar = show_bar
M.human_bytes = human_bytes

return M
