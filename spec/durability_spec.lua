-- A finished download survives a power loss whole or not at all: the file
-- reaches the disk before it takes its name, and the folder's new entry
-- after.  Watched with strace(1) on a real download from the mock.
local helper = require "helper"

describe("download durability #toolchain", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  local function traced_download(overwrite)
    local dir = helper.tmpname(".durable")
    assert(os.execute("mkdir -p " .. helper.sh_quote(dir)))
    local dest, log = dir .. "/out.bin", helper.tmpname(".strace")
    mock:reset()
    mock:faults({ { type = "file", size = 500000, path = "/conf" } })
    local script = ([[
      local engine = require "fileapi.http.engine"
      local t = assert(engine.new(assert(engine.check_options({}, "new")), {}))
      assert(t:send({ url = %q, sink = %q, overwrite = %s }))
      t:close()
    ]]):format(mock.base .. "/conf/d", dest, tostring(overwrite))
    local cmd = ("strace -f -qq -o %s -e trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,unlinkat"
      .. " sh %s %s -e %s"):format(helper.sh_quote(log), helper.sh_quote(helper.root .. "/tools/with-paths.sh"),
      helper.lua, helper.sh_quote(script))
    assert(os.execute(cmd))
    local lines = {}
    for line in io.lines(log) do lines[#lines + 1] = line end
    os.remove(log)
    assert.same(500000, #io.open(dest):read("*a"))
    os.execute("rm -rf " .. helper.sh_quote(dir))
    return lines, dir
  end

  for _, overwrite in ipairs({ false, true }) do
    it("fsync of the file before it takes its name, then of the folder (overwrite = " .. tostring(overwrite) .. ")",
      function()
        local lines, dir = traced_download(overwrite)
        local tmp_fd, synced, named, dir_fd, dir_synced
        for i, line in ipairs(lines) do
          local fd = line:match('openat%(AT_FDCWD, "[^"]*/%.out%.bin%.part%-%w+", ([^)]*)%) = (%d+)')
          if fd then
            local flags = line:match('openat%(AT_FDCWD, "[^"]*", ([^)]*)%)')
            assert.matches("O_CLOEXEC", flags, "created with O_CLOEXEC")
            tmp_fd = line:match("= (%d+)$")
          end
          if tmp_fd and line:match("fsync%(" .. tmp_fd .. "%)") and not named then synced = i end
          if line:match('link') or line:match('rename') then
            if line:match("%.part%-") and line:match('out%.bin"') then named = i end
          end
          local dfd = line:match('openat%(AT_FDCWD, "' .. dir:gsub("%p", "%%%0") .. '", O_RDONLY[^)]*O_DIRECTORY[^)]*%) = (%d+)')
          if dfd and named then dir_fd = dfd end
          if dir_fd and line:match("fsync%(" .. dir_fd .. "%)") then dir_synced = i end
        end
        local trace = table.concat(lines, "\n")
        assert.truthy(tmp_fd, trace)
        assert.truthy(synced, "no fsync of the file:\n" .. trace)
        assert.truthy(named, trace)
        assert.is_true(synced < named, "the file was named before it was synced")
        assert.truthy(dir_synced, "no fsync of the folder after the rename:\n" .. trace)
      end)
  end
end)
