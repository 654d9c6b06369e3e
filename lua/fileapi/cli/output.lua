-- The command's output: one line per result (or a JSON object per line
-- with --json), one line per error naming its path once, exit statuses by
-- error kind, and the progress bar drawn on a terminal only.
local core = require "fileapi.core"
local cjson = require("cjson").new()
local kinds = require "fileapi.kinds"

local M = {}

-- Exit statuses by error kind, from the one list of kinds; the help text
-- and the README say the same.
M.EXIT = kinds.exit_statuses()

local Out = {}
Out.__index = Out

local function new_out(opts, io_out, io_err)
  return setmetatable({ opts = opts, out = io_out, err = io_err, status = 0 }, Out)
end

function Out:json(value)
  self.out:write(cjson.encode(value), "\n")
  self.out:flush()
end

function Out:line(text)
  self.out:write(text, "\n")
  self.out:flush()
end

local function error_object(err)
  return { kind = err.kind, status = err.status, message = err.message, fields = err.fields,
    retryable = err.retryable, attempts = err.attempts }
end

-- A failure for `what` (a path, an id or a command): one line on stderr that
-- names it once, a JSON line with --json; returns the exit status.
function Out:fail(what, err)
  if core.interrupted() then return M.EXIT.interrupted end
  if self.opts.json then self:json({ path = what, error = error_object(err) }) end
  local message = (tostring(err):gsub("^fileapi: ", ""))
  if what and not message:find(what, 1, true) then message = what .. ": " .. message end
  self.err:write("fileapi: ", message, "\n")
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

-- A progress bar on stderr, redrawn at most ten times a second.
local function progress_bar(label, out)
  local started, last_draw = core.now(), 0
  local width = 30
  label = M.label(label, 20)
  return function(sent, total, final)
    local now = core.now()
    if not final and now - last_draw < 0.1 then return end
    last_draw = now
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
end

local function show_bar(opts)
  return not opts.quiet and not opts.json and core.isatty(2)
end

M.new = new_out
M.progress_bar = progress_bar
M.show_bar = show_bar

return M
