-- The owner's big transfers in a child process, memory flat: a 200 MiB
-- chunked upload byte-identical, and a 1 GiB zip (a sparse file on the
-- mock) streamed to a path through the core's sink.  #slow: stage 1 only.
local helper = require "helper"

local MIB = 1024 * 1024
local LIMIT_KB = 16 * 1024

local function peak_rss_script(body)
  return "-e " .. helper.sh_quote([[
    local drive = require "fileapi.drive"
    local d = assert(drive.new())
    ]] .. body .. [[
    local hwm
    for line in io.lines("/proc/self/status") do hwm = hwm or line:match("^VmHWM:%s*(%d+) kB") end
    io.write(" ", hwm)
  ]])
end

describe("drive, large #slow", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  it("a 200 MiB upload in 64 MB chunks: byte-identical, peak RSS <= 16 MiB", function()
    local path = helper.write_file(helper.tmpname(".bin"), 200 * MIB)
    local code, out = helper.run_lua(peak_rss_script(([[
      local last = 0
      local file = assert(d:upload(%q, { on_progress = function(sent) last = sent end }))
      io.write(file.id, " ", last)
    ]]):format(path)), helper.mock_env(mock))
    assert.same(0, code, out)
    local id, last, hwm = out:match("^(%S+) (%d+) (%d+)$")
    assert.same(200 * MIB, tonumber(last), out)
    local stored
    for _, f in ipairs(mock:files()) do if f.id == id then stored = f end end
    assert.same(helper.sha256(path), stored.sha256)
    assert.same(4, mock:stats().chunks) -- 200 MiB in 64,000,000-byte chunks
    print(("\n      200 MiB owner upload: peak RSS %.1f MiB"):format(tonumber(hwm) / 1024))
    assert.is_true(tonumber(hwm) <= LIMIT_KB, "peak RSS " .. hwm .. " kB")
    os.remove(path)
  end)

  it("a 1 GiB zip to a path: hidden temporary name, renamed when whole, peak RSS <= 16 MiB", function()
    local id = mock:drive_big_file({ size = 1024 * MIB, name = "disk" })
    local dir = helper.tmpname(".d")
    os.execute("mkdir -p " .. dir)
    local dest = dir .. "/all.zip"
    -- halfway, the destination must not exist yet: only a hidden file beside it
    local code, out = helper.run_lua(peak_rss_script(([[
      local seen_hidden, early, hidden = false, false, ""
      local res = assert(d:zip({ { type = "file", id = %q } }, %q, { on_progress = function(got)
        if got > 512 * 1024 * 1024 and not seen_hidden then
          seen_hidden = true
          early = io.open(%q) ~= nil
          local p = io.popen("ls -A %s")
          hidden = p:read("*a")
          p:close()
        end
      end }))
      io.write(res.size, " ", tostring(early), " ", (hidden:gsub("%%s+", "")))
    ]]):format(id, dest, dest, dir)), helper.mock_env(mock))
    assert.same(0, code, out)
    local size, early, hidden, hwm = out:match("^(%d+) (%a+) (%S+) (%d+)$")
    assert.same("false", early, out)
    assert.matches("^%.", hidden)
    local f = assert(io.open(dest, "rb"))
    assert.same(tonumber(size), f:seek("end"))
    f:seek("set", 0)
    assert.same("PK\3\4", f:read(4))
    f:close()
    assert.same(1024 * MIB + 30 + 8 + 46 + 8 + 22, tonumber(size)) -- "disk.bin" stored, no Zip64
    print(("      1 GiB zip download: peak RSS %.1f MiB"):format(tonumber(hwm) / 1024))
    assert.is_true(tonumber(hwm) <= LIMIT_KB, "peak RSS " .. hwm .. " kB")
    os.execute("rm -rf " .. dir)
  end)
end)
