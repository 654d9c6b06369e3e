-- Ctrl-C: the command stops within half a second during an upload, a stall
-- or a long Retry-After wait, prints one line, exits 130 -- piped, and in a
-- pseudo-terminal (where Ctrl-C is what the terminal sends).
local helper = require "helper"
local socket = require "socket"

local q = helper.sh_quote

describe("Ctrl-C in the command #toolchain #waits", function()
  local mock, big

  setup(function()
    mock = helper.start_mock()
    big = helper.tmpname(".sparse")
    assert(os.execute("truncate -s 4G " .. q(big)))
  end)
  teardown(function()
    mock:stop()
    os.remove(big)
  end)
  before_each(function() mock:reset() end)

  -- Starts `fileapi ARGS` (in a pty with script(1) when tty), sends SIGINT
  -- after `after` seconds; returns status, output, seconds from signal to exit.
  local function interrupt(args, after, tty)
    local pidfile, out, status = helper.tmpname(".pid"), helper.tmpname(".out"), helper.tmpname(".rc")
    local inner = ("echo $$ > %s; exec env MKP_API_KEY=%s MKP_BASE_URL=%s %s %s"):format(q(pidfile),
      helper.API_KEY, q(mock.mkp_url), helper.FILEAPI, args)
    local cmd
    if tty then
      cmd = ("script -qfec %s %s >/dev/null 2>&1; echo done > %s"):format(q(inner), q(out), q(status))
    else
      cmd = ("sh -c %s >%s 2>&1; echo $? > %s"):format(q(inner), q(out), q(status))
    end
    assert(os.execute("(" .. cmd .. ") &"))
    socket.sleep(after)
    local pid = helper.wait_for(function() return helper.first_line(pidfile) end, 2.5)
    local t0 = socket.gettime()
    os.execute("kill -INT " .. pid)
    local rc
    while socket.gettime() - t0 < 10 do
      if not io.open("/proc/" .. pid .. "/stat") then break end
      socket.sleep(0.01)
    end
    local elapsed = socket.gettime() - t0
    rc = helper.wait_for(function() return helper.first_line(status) end, 5)
    local text = io.open(out):read("*a")
    for _, p in ipairs({ pidfile, out, status }) do os.remove(p) end
    return tonumber(rc) or rc, text, elapsed
  end

  local cases = {
    { "during an upload", function() end, function() return "upload " .. q(big) end },
    { "during a stall", function() mock:faults({ { type = "stall", seconds = 30 } }) end,
      function() return "mkdir Stalled" end },
    { "during a 20 s Retry-After wait", function()
      mock:faults({ { type = "status", status = 429, headers = { ["Retry-After"] = "20" } } })
    end, function() return "mkdir Later" end },
  }

  for _, tty in ipairs({ false, true }) do
    for _, case in ipairs(cases) do
      it(case[1] .. (tty and ", in a terminal" or ", piped"), function()
        case[2]()
        local rc, text, elapsed = interrupt(case[3](), 1, tty)
        print(("      %s%s: exit after %.3f s"):format(case[1], tty and " (pty)" or "", elapsed))
        assert.is_true(elapsed < 0.5, elapsed)
        if not tty then assert.same(130, rc, text) end
        assert.matches("fileapi: interrupted", text)
        assert.is_nil(text:lower():find("traceback", 1, true), text)
        local _, n = text:gsub("fileapi: interrupted", "")
        assert.same(1, n, text)
      end)
    end
  end

  it("a result that completed is printed before exiting", function()
    local small = helper.write_file(helper.tmpname(".txt"), 100)
    local rc, text = interrupt("upload " .. q(small) .. " " .. q(big), 1, false)
    os.remove(small)
    assert.same(130, rc)
    assert.matches("^fsf_%w+ %S+%.txt 100 text/plain\nfileapi: interrupted\n$", text)
  end)
end)
