-- A 200 MiB upload from disk in a child process: memory must stay flat.
local helper = require "helper"

describe("large upload", function()
  local mock, path

  setup(function()
    mock = helper.start_mock()
    path = helper.write_file(helper.tmpname(".bin"), 200 * 1024 * 1024)
  end)

  teardown(function()
    os.remove(path)
    mock:stop()
  end)

  it("streams 200 MiB with peak RSS under 40 MiB", function()
    local script = helper.tmpname(".lua")
    local f = assert(io.open(script, "w"))
    f:write([[
      local files = require "fileapi.files"
      local client = assert(files.new({ api_key = "test-key", base_url = arg[1] }))
      local calls = 0
      local item = assert(client:upload(arg[2], { on_progress = function() calls = calls + 1 end }))
      local hwm
      for line in io.lines("/proc/self/status") do
        hwm = hwm or line:match("^VmHWM:%s*(%d+) kB")
      end
      io.write(item.size, " ", hwm, " ", calls)
    ]])
    f:close()
    local code, out = helper.run_lua(helper.sh_quote(script) .. " " .. mock.mkp_url .. " " .. path)
    os.remove(script)
    assert.same(0, code, out)
    local size, hwm_kb = out:match("^(%d+) (%d+) %d+$")
    assert.same(200 * 1024 * 1024, tonumber(size), out)
    print(("\n  200 MiB upload: peak RSS %.1f MiB"):format(tonumber(hwm_kb) / 1024))
    assert.is_true(tonumber(hwm_kb) < 40 * 1024, "peak RSS " .. hwm_kb .. " kB")
    local req = mock:last_request()
    assert.same(200 * 1024 * 1024, req.parts[1].size)
  end)
end)
