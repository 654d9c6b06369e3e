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

-- Whether a process runs (a zombie has ended).
function M.running(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = (f:read("*l") or ""):match("^%d+ %b() (%a)")
  f:close()
  return state ~= nil and state ~= "Z"
end

return M
