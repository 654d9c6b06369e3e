-- Every example runs, in a child process, against the mock.
local helper = require "helper"

describe("examples #children", function()
  local mock, env

  setup(function()
    mock = helper.start_mock()
    env = helper.mock_env(mock)
  end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  local function example(args) return helper.run_lua(helper.root .. "/examples/" .. args, env) end

  it("mkdir.lua creates a directory, and a child in it", function()
    local code, out = example("mkdir.lua Contracts")
    assert.same(0, code, out)
    local id = out:match("^created (fsd_%w+) Contracts\n$")
    assert.truthy(id, out)
    code, out = example("mkdir.lua Sub " .. id)
    assert.same(0, code, out)
    assert.same("/v1/files?directory=" .. id, mock:last_request().target)
  end)

  it("upload.lua uploads files into a directory and reports failures", function()
    local a = helper.write_file(helper.tmpname(".txt"), 1000)
    local code, out = example("upload.lua " .. a .. " --dir fsd_missing0001")
    assert.same(1, code)
    assert.matches("not_found %(HTTP 404%)", out)
    local _, dirout = example("mkdir.lua Docs")
    local dir = dirout:match("(fsd_%w+)")
    code, out = example(("upload.lua %s %s --dir %s"):format(a, a, dir))
    os.remove(a)
    assert.same(0, code, out)
    local n = 0
    for line in out:gmatch("[^\n]+") do
      assert.matches("^uploaded .* as fsf_%w+ %(1000 bytes, text/plain%)$", line)
      n = n + 1
    end
    assert.same(2, n)
  end)

  it("share_mkdir.lua creates folders in a share", function()
    local code, out = example("share_mkdir.lua editor-token Projects")
    assert.same(0, code, out)
    assert.matches('^created folder %x+%-[%x-]+ "Projects" in 11111111%-1111%-4111%-8111%-111111111111\n$', out)
    code, out = example("share_mkdir.lua visitor-token Projects")
    assert.same(1, code)
    assert.matches("forbidden %(HTTP 403%): Access Denied", out)
    assert.is_nil(out:find("visitor-token", 1, true))
  end)

  it("demo.lua runs end to end", function()
    local code, out = example("demo.lua")
    assert.same(0, code, out)
    assert.matches("upload: contract_v2.pdf, fsf_%w+, 50331648 bytes", out)
    assert.matches("get: fsf_%w+ is a file of 50331648 bytes", out)
    assert.matches("download: 50331648 bytes .* identical: true", out)
    assert.matches("share: fss_%w+ with customer cst_abc12345678", out)
    assert.matches("share upload: contract_v2 into Projects/2026 in 3 chunks", out)
    assert.matches("rate limit: 3 requests per 2 s, waiting", out)
    assert.matches("pacing: 4 directories made, 0 refused", out)
    assert.matches("oauth: state checked true, code exchanged, token refreshed 1 time%(s%)", out)
    assert.matches("storage_full %(HTTP 426%)", out)
    local steps = select(2, out:gsub("\n==> ", "")) + 1
    assert.is_true(steps <= 14, steps)
  end)
end)
