-- `fileapi mock`: both services on loopback (fileapi.mock), for trying
-- fileapi and for testing one's own code against.  It prints the variables
-- the library and the command read as `export NAME=value` lines, first, and
-- FILEAPI_MOCK_PID last, then serves until Ctrl-C or SIGTERM (status 0,
-- its ports closed).  With --daemon it starts itself detached (its output
-- read back from a file), prints the same lines and returns at once, so
-- that `eval "$(fileapi mock --daemon)"` works: `kill "$FILEAPI_MOCK_PID"`
-- stops it.
local core = require "fileapi.core"
local mock = require "fileapi.mock"
local proc = require "fileapi.mock.proc"
local output = require "fileapi.cli.output"

local M = {}

local EXIT = output.EXIT
local READY_SECONDS = 60 -- for a detached copy to listen, on a loaded machine
-- what the detached copy runs: this command's main, given the paths and the arguments
local DETACHED = "package.path = %q package.cpath = %q os.exit(require('fileapi.cli').main({ %s }))"

-- "N/SECONDS": N whole >= 1, SECONDS > 0.
local function rate(v)
  local n, s = v:match("^%s*(%d+)%s*/%s*(%d*%.?%d+)%s*$")
  n, s = tonumber(n), tonumber(s)
  if not n or n < 1 or not s or s <= 0 then
    return nil, "--rate-limit must be N/SECONDS: N requests in any SECONDS, as 60/60 (got " .. v .. ")"
  end
  return { limit = n, window = s }
end

-- The command and its flags, on the parser; `number` is the command
-- line's reader of numeric flags.
function M.define(parser, number)
  local cmd = parser:command("mock", "serve both services on loopback, for trying fileapi and testing your code; "
    .. "prints the variables to export")
  cmd:option("--port", "the API port (default 0: a free one); the OAuth host then on PORT+1, download links "
    .. "on PORT+2"):convert(number("--port", 0, true))
  cmd:option("--latency", "delay every API answer by MS milliseconds"):convert(number("--latency", 0, false,
    "milliseconds"))
  cmd:option("--rate-limit", "N/SECONDS: every service's rate limit, with its headers and 429s"):convert(rate)
  cmd:flag("--daemon", "start in the background: print the variables and FILEAPI_MOCK_PID, and return")
  cmd:option("--log", "where the mock's messages go (default: standard error; with --daemon, nowhere)")
  return cmd
end

local own_pid, quote = proc.own_pid, proc.quote

local function start_options(opts)
  if opts.port and opts.port > 65533 then
    return nil, "--port must be 0 (free ports) or a port up to 65533 (the OAuth host takes PORT+1, links PORT+2)"
  end
  return { port = opts.port, latency = opts.latency and opts.latency / 1000,
    rate_limit = opts.rate_limit and opts.rate_limit.limit, rate_window = opts.rate_limit and opts.rate_limit.window,
    log = opts.log or true }
end

-- In the foreground: serves until interrupted, or until the mock's process ends.
local function serve(opts, out)
  local start, why = start_options(opts)
  if not start then return nil, why end
  local server, err = mock.start(start)
  if not server then
    out.err:write("fileapi mock: ", err, "\n")
    return EXIT.network
  end
  out.out:write(server:exports(), "export FILEAPI_MOCK_PID=", own_pid(), "\n")
  out.out:flush()
  out.err:write(("fileapi mock: MijnKlantportaal on %s, files.ro on %s, OAuth on %s; until Ctrl-C or SIGTERM\n")
    :format(server.mkp_url, server.base, server.oauth_url))
  while not core.interrupted() and proc.running(server.pid, server.since) do core.sleep(0.2) end
  local ended_by_itself = not core.interrupted()
  server:stop()
  if ended_by_itself then
    out.err:write("fileapi mock: the mock's process ended\n")
    return EXIT.network
  end
  return 0
end

local function read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local text = f:read("*a")
  f:close()
  return text
end

-- This command again without --daemon, in a new session with no terminal,
-- on this Lua with this process's module paths.
local function detached_command(opts, ready, log)
  local argv = { "mock" }
  if opts.port then argv[#argv + 1] = "--port=" .. ("%d"):format(opts.port) end
  if opts.latency then argv[#argv + 1] = "--latency=" .. ("%.17g"):format(opts.latency) end
  if opts.rate_limit then
    argv[#argv + 1] = ("--rate-limit=%d/%.17g"):format(opts.rate_limit.limit, opts.rate_limit.window)
  end
  for i, a in ipairs(argv) do argv[i] = ("%q"):format(a) end
  -- this module's own tree first: where the command was found, whatever loader found it
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local root = src:match("^(/.*)/fileapi/cli/mock%.lua$")
  local path = root and (root .. "/?.lua;" .. root .. "/?/init.lua;" .. package.path) or package.path
  local code = DETACHED:format(path, package.cpath, table.concat(argv, ", "))
  local lua = proc.own_exe()
  local setsid = os.execute("command -v setsid >/dev/null 2>&1")
  return ("%s%s -e %s </dev/null >%s 2>>%s & echo $!"):format((setsid == true or setsid == 0) and "setsid " or "",
    quote(lua or "lua5.4"), quote(code), quote(ready), quote(log))
end

-- --daemon: a detached copy serves; this one prints what it printed.
local function daemon(opts, out)
  local ready = os.tmpname()
  local log = opts.log or os.tmpname()
  local p = io.popen(detached_command(opts, ready, log))
  local pid = p and p:read("*l")
  if p then p:close() end
  local since = pid and proc.start_time(pid)
  local deadline = core.now() + READY_SECONDS
  local text = read_file(ready)
  while not text:find("\nexport FILEAPI_MOCK_PID=%d+\n") and pid and proc.running(pid, since) and core.now() < deadline
    and not core.interrupted() do
    core.sleep(0.05)
    text = read_file(ready)
  end
  os.remove(ready)
  local said = read_file(log)
  if not opts.log then os.remove(log) end
  if not text:find("\nexport FILEAPI_MOCK_PID=%d+\n") then
    if pid then proc.signal(pid, "TERM", since) end
    out.err:write(said ~= "" and said or "fileapi mock: the mock did not start\n")
    return EXIT.network
  end
  out.out:write(text)
  out.out:flush()
  return 0
end

function M.run(opts, out)
  if opts.daemon then
    local _, why = start_options(opts)
    if why then return nil, why end
    return daemon(opts, out)
  end
  return serve(opts, out)
end

return M
