-- The README's runnable examples (Lua blocks after a "runnable" comment) run
-- as written, in a child process, against the mock.
local helper = require "helper"

local function runnable_blocks()
  local text = assert(io.open(helper.root .. "/README.md")):read("*a")
  local blocks = {}
  for block in text:gmatch("<!%-%- runnable[^\n]*%-%->\n```lua\n(.-)\n```") do blocks[#blocks + 1] = block end
  return blocks
end

describe("README examples #children", function()
  local mock, dir

  setup(function()
    mock = helper.start_mock()
    dir = helper.tmpname(".readme")
    os.execute("mkdir -p " .. helper.sh_quote(dir))
    helper.write_file(dir .. "/contract.pdf", 4096)
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. helper.sh_quote(dir))
  end)

  local blocks = runnable_blocks()

  it("has runnable examples", function()
    assert.is_true(#blocks >= 2)
  end)

  for i, block in ipairs(blocks) do
    it("example " .. i .. " runs", function()
      local path = dir .. "/example" .. i .. ".lua"
      local f = assert(io.open(path, "w"))
      f:write(block)
      f:close()
      local code, out = helper.run_lua(helper.sh_quote(path), helper.mock_env(mock), dir)
      assert.same(0, code, out)
    end)
  end
end)
