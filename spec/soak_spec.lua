-- Many requests on one client: RSS must not grow.  SOAK_COUNT sets the
-- count (2,000 by default; `make soak` runs 20,000).
local helper = require "helper"

describe("soak #soak", function()
  local mock
  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  it("keeps RSS growth under 2 MiB over many requests on one connection", function()
    local count = tonumber(os.getenv("SOAK_COUNT") or "2000")
    local script = helper.tmpname(".lua")
    local f = assert(io.open(script, "w"))
    f:write([[
      local files = require "fileapi.files"
      local count = tonumber(arg[2])
      local client = assert(files.new({ api_key = "test-key", base_url = arg[1] }))
      local function rss()
        collectgarbage(); collectgarbage()
        for line in io.lines("/proc/self/status") do
          local kb = line:match("^VmRSS:%s*(%d+) kB")
          if kb then return tonumber(kb) end
        end
      end
      local warm = math.floor(count / 10)
      local before
      for i = 1, count do
        if i % 2 == 0 then
          assert(client:mkdir("d" .. i))
        else
          assert(client:upload({ data = "payload " .. i, filename = "f" .. i .. ".txt" }))
        end
        if i == warm then before = rss() end
      end
      io.write(before, " ", rss())
    ]])
    f:close()
    local code, out = helper.run_lua(helper.sh_quote(script) .. " " .. mock.mkp_url .. " " .. count)
    os.remove(script)
    assert.same(0, code, out)
    local before, after = out:match("^(%d+) (%d+)$")
    before, after = tonumber(before), tonumber(after)
    print(("\n  soak: %d requests, RSS %.1f MiB after warm-up, %.1f MiB at the end (growth %d kB)")
      :format(count, before / 1024, after / 1024, after - before))
    assert.is_true(after - before < 2048, out)
    local stats = mock:stats()
    assert.same(count, stats.requests)
    assert.same(1, stats.connections)
  end)
end)
