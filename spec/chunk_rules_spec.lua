-- The chunk rules of files.ro's uploads, for a share's visitor and the
-- account's owner alike (one implementation: fileapi.filesro.chunks): a chunk
-- whose body broke off is sent again; a chunk sent whole and not answered
-- is never sent again, and the upload stops with retryable = false; a
-- chunk refused with 429 goes again after Retry-After.
local helper = require "helper"
local shares = require "fileapi.shares"
local drive = require "fileapi.drive"
local core = require "fileapi.core"

local MIB = 1024 * 1024

describe("chunk rules", function()
  local mock

  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  local UPLOADERS = {
    { name = "share:upload", path = "/api/v1/shares/editor-token/uploads", open = function(opts)
      opts.token, opts.base_url, opts.backoff = "editor-token", mock.base, 0.01
      return assert(shares.new(opts))
    end },
    { name = "drive:upload", path = "/api/v1/uploads", open = function(opts)
      opts.token, opts.base_url, opts.backoff = helper.DRIVE_TOKEN, mock.base, 0.01
      return assert(drive.new(opts))
    end },
  }

  local function uploads(path)
    local n = 0
    for _, r in ipairs(mock:requests()) do if r.path == path then n = n + 1 end end
    return n
  end

  local function stored(id)
    for _, f in ipairs(mock:files()) do if f.id == id then return f end end
  end

  for _, u in ipairs(UPLOADERS) do
    describe(u.name, function()
      -- chunks larger than the loopback socket buffers, so that the drop
      -- comes while the client still has body to send
      it("a drop during a chunk's body: sent again, and the file is still identical", function()
        local path = helper.write_file(helper.tmpname(".bin"), 48 * MIB)
        mock:faults({ { type = "drop_upload", after = 300000, skip = 1, path = u.path } })
        local c = u.open({ timeout = 30 })
        local file = assert(c:upload(path, { chunk_size = 16 * MIB }))
        c:close()
        assert.same(helper.sha256(path), stored(file.id).sha256)
        assert.same(4, uploads(u.path)) -- chunk 2 twice: the first copy never reached the handler
        assert.same(3, mock:stats().chunks)
        os.remove(path)
      end)

      it("no answer after a fully sent chunk: stops, never sends it again", function()
        local path = helper.write_file(helper.tmpname(".bin"), 3 * MIB)
        -- reads the whole chunk, then closes without a word
        mock:faults({ { type = "raw", raw = "", skip = 1, path = u.path } })
        local c = u.open({})
        local file, err = c:upload(path, { chunk_size = MIB })
        c:close()
        assert.is_nil(file)
        assert.same("network", err.kind)
        assert.is_false(err.retryable)
        assert.matches("partial upload", err.message)
        assert.same(2, uploads(u.path))
        mock:reset()
        mock:faults({ { type = "raw", raw = "", skip = 1, path = u.path } })
        c = u.open({ retry_unsafe = true })
        assert.is_nil(c:upload(path, { chunk_size = MIB }))
        c:close()
        assert.same(2, uploads(u.path)) -- not even retry_unsafe resends a chunk
        os.remove(path)
      end)

      it("429 on a chunk: waits Retry-After, then goes on", function()
        local path = helper.write_file(helper.tmpname(".bin"), 3 * MIB)
        mock:faults({ { type = "status", status = 429, headers = { ["Retry-After"] = "1" }, skip = 1,
          path = u.path, body = '{"message":"Too Many Attempts."}' } })
        local c = u.open({})
        local t = core.now()
        local file = assert(c:upload(path, { chunk_size = MIB }))
        c:close()
        assert.is_true(core.now() - t >= 1)
        assert.same(helper.sha256(path), stored(file.id).sha256)
        assert.same(4, uploads(u.path)) -- 3 chunks, the refused one twice
        os.remove(path)
      end)
    end)
  end
end)
