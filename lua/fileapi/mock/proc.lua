-- What the mock and its command need of processes and the shell, written
-- once: Lua has no getpid, and the mock may not lean on the library's own
-- helpers (it must not depend on what it is there to test).
local M = {}

-- This process's id, from /proc (Linux).
function M.own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*l"):match("^(%d+)")
  f:close()
  return pid
end

-- s as one word for sh, always quoted.
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The first line a shell command prints, or nil.
function M.read_command(cmd)
  local p = io.popen(cmd)
  if not p then return nil end
  local line = p:read("*l")
  p:close()
  return line
end

-- The interpreter this process runs on (a path), or nil.
function M.own_exe()
  return M.read_command("readlink /proc/" .. M.own_pid() .. "/exe 2>/dev/null")
end

-- The fields of /proc/PID/stat after the process's name (state first), or
-- nil when there is no such process.  The name is in parentheses and may
-- hold anything, parentheses and spaces too: the fields start after the
-- last ") ".
local function stat_fields(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local line = f:read("*l") or ""
  f:close()
  local rest = line:match("^%d+ %(.*%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for word in rest:gmatch("%S+") do fields[#fields + 1] = word end
  return fields
end

-- When a process started (clock ticks since boot, the stat file's field
-- 22), or nil when there is none.  With its id it names the process: ids
-- come round (a busy machine wraps pid_max's 32768 in minutes), and a
-- signal for a process that is gone must not reach the one that got its id.
function M.start_time(pid)
  local fields = stat_fields(pid)
  return fields and fields[20]
end

-- Whether process pid runs (a zombie has ended); since: its start time
-- when it was known, so that another process given the same id does not
-- count.
function M.running(pid, since)
  local fields = stat_fields(pid)
  if not fields or fields[1] == nil or fields[1] == "Z" then return false end
  return since == nil or fields[20] == since
end

-- Sends signal sig (TERM, KILL) to pid if it is still the process that
-- started at `since` (nil: whichever has the id now).
function M.signal(pid, sig, since)
  if M.running(pid, since) then os.execute(("kill -%s %s 2>/dev/null"):format(sig, pid)) end
end

return M
