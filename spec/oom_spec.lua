-- Out of memory in the middle of a transfer: spec/c/harness runs the core
-- in a Lua state whose allocator fails the Nth allocation, for every N an
-- upload and a download make, alone and at once on a multi, under
-- ASan/UBSan (make test-oom).  Each run must end with a result, nil, err,
-- or a memory error raised after libcurl returned; no transfer on a multi
-- goes unreported; and the sessions and the multi must work after.
local helper = require "helper"

describe("allocation failures during a transfer #oom", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  it("every failed allocation ends in a result, nil, err or a memory error, and the client works after", function()
    local dir = helper.tmpname(".list")
    assert(os.execute(("mkdir -p %s && cd %s && touch $(seq -f f%%02g 40)"):format(helper.sh_quote(dir),
      helper.sh_quote(dir))))
    local p = assert(io.popen(("build/harness/harness spec/c/oom.lua %s %s %s 2>&1; echo \"exit $?\"")
      :format(helper.sh_quote(mock.base), helper.API_KEY, helper.sh_quote(dir))))
    local out = p:read("*a")
    p:close()
    os.execute("rm -rf " .. helper.sh_quote(dir))
    io.write((out:gsub("\nexit %d+\n$", "\n"):gsub("([^\n]+)", "      %1")))
    assert.matches("\nok\nexit 0\n$", out)
    assert.matches("upload: %d+ allocations", out)
    assert.matches("download: %d+ allocations", out)
    assert.matches("multi: %d+ allocations", out)
    assert.matches("list_dir: %d+ allocations", out)
  end)
end)
