-- mkp:upload_tree and `fileapi upload -r`: a local tree mirrored exactly,
-- and a run killed half-way then run again with its journal.
local helper = require "helper"
local files = require "fileapi.files"
local core = require "fileapi.core"
local cjson = require "cjson"

local q = helper.sh_quote

-- 3 levels, 120 files: empty ones, non-ASCII names, plus what is left out
-- by default (a hidden file, a hidden folder, a link).
local function make_tree(root)
  local made = {}
  local function file(rel, size)
    local path = root .. "/" .. rel
    helper.write_file(path, size)
    made[rel] = size
  end
  os.execute("mkdir -p " .. q(root))
  for a = 1, 3 do
    local da = ("level1-%d"):format(a)
    os.execute("mkdir -p " .. q(root .. "/" .. da))
    for b = 1, 3 do
      local db = da .. (b == 2 and "/é ü €" or ("/level2-" .. b))
      os.execute("mkdir -p " .. q(root .. "/" .. db .. "/level3"))
      for i = 1, 6 do file(("%s/f%d.txt"):format(db, i), (i - 1) * 37) end
      for i = 1, 6 do file(("%s/level3/ü-%d.bin"):format(db, i), i == 1 and 0 or 1000 + i) end
    end
    for i = 1, 2 do file(("%s/top-%d.txt"):format(da, i), 10) end
  end
  for i = 1, 5 do file(("root-%d.txt"):format(i), i) end
  file("Ωmega.txt", 5)
  helper.write_file(root .. "/.hidden", 3)
  os.execute("mkdir -p " .. q(root .. "/.git") .. " && echo x > " .. q(root .. "/.git/config"))
  os.execute("ln -s level1-1 " .. q(root .. "/link-to-level1"))
  return made
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local remote_paths = helper.mkp_paths

describe("upload_tree", function()
  local mock, root, made

  setup(function()
    mock = helper.start_mock()
    root = helper.tmpname(".tree")
    made = make_tree(root)
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. q(root))
  end)
  before_each(function() mock:reset() end)

  local function client(opts)
    opts = opts or {}
    opts.api_key, opts.base_url = helper.API_KEY, mock.mkp_url
    return assert(files.new(opts))
  end

  it("mirrors a tree of 3 levels and 120 files exactly, parents before children", function()
    assert.same(120, count(made))
    local c = client()
    local top = assert(c:mkdir("Mirror"))
    local events = {}
    local summary = assert(c:upload_tree(root, { directory = top.id, on_item = function(ev)
      events[#events + 1] = ev
    end }))
    c:close()
    assert.same(120, summary.files)
    assert.same(3 + 9 + 9, summary.directories)
    assert.same(0, summary.failed)
    assert.same(0, summary.skipped)
    assert.is_true(summary.complete)
    local bytes = 0
    for _, size in pairs(made) do bytes = bytes + size end
    assert.same(bytes, summary.bytes)
    local remote = remote_paths(mock, top.id)
    for rel, size in pairs(made) do
      assert.same(1, remote.file[rel], rel)
      assert.truthy(size)
    end
    assert.same(120, count(remote.file))
    assert.is_nil(remote.file[".hidden"])
    assert.is_nil(remote.directory[".git"])
    assert.is_nil(remote.directory["link-to-level1"])
    -- a stable order: names in byte order, a folder before what is in it
    local seen = {}
    for _, ev in ipairs(events) do
      local parent = ev.path:match("^(.*)/[^/]+$")
      if parent then assert.truthy(seen[parent], ev.path .. " before its folder") end
      seen[ev.path] = true
    end
    assert.same("level1-1", events[1].path)
  end)

  it("hidden files and links only when asked", function()
    local c = client()
    local summary = assert(c:upload_tree(root, { hidden = true, follow_symlinks = true }))
    c:close()
    local remote = remote_paths(mock, nil)
    assert.same(1, remote.file[".hidden"])
    assert.same(1, remote.file[".git/config"])
    assert.same(1, remote.file["link-to-level1/top-1.txt"])
    -- the 120, .hidden, .git/config, and level1-1's 38 again through the link
    assert.same(120 + 2 + 38, summary.files)
  end)

  it("a followed link back up the tree is skipped, told to on_item and counted", function()
    local top = helper.tmpname(".loop")
    assert(os.execute(("mkdir -p %s/a/b && echo x > %s/a/b/f.txt && ln -s .. %s/a/b/up"):format(
      helper.sh_quote(top), helper.sh_quote(top), helper.sh_quote(top))))
    local c = client()
    local loops = {}
    local summary = assert(c:upload_tree(top, { follow_symlinks = true, on_item = function(ev)
      if ev.loop then loops[#loops + 1] = ev end
    end }))
    c:close()
    os.execute("rm -rf " .. helper.sh_quote(top))
    assert.same(1, summary.loops)
    assert.same(1, #loops)
    assert.same("a/b/up", loops[1].path)
    assert.is_true(loops[1].skipped)
    assert.same(1, summary.files)
  end)

  it("device and inode numbers are whole, as stat(1) gives them", function()
    local p = assert(io.popen("stat -L -c '%d:%i' " .. helper.sh_quote(root)))
    local want = p:read("*l")
    p:close()
    assert.same(want, require("fileapi.core").stat(root, true).inode)
  end)

  it("a failed file is reported and the rest goes on, unless stop_on_error", function()
    -- the 21 directories are made first, then the files: the fifth file fails
    mock:faults({ { type = "status", status = 422, skip = 21 + 4, path = "/v1/files",
      body = '{"message":"The file is not allowed."}' } })
    local c = client({ retries = 0 })
    local summary = assert(c:upload_tree(root))
    assert.same(1, summary.failed)
    assert.same(119, summary.files)
    assert.same("validation", summary.errors[1].error.kind)
    mock:reset()
    mock:faults({ { type = "status", status = 422, skip = 4, path = "/v1/files" } })
    summary = assert(c:upload_tree(root, { stop_on_error = true }))
    c:close()
    assert.same(1, summary.failed)
    assert.is_false(summary.complete)
    assert.is_true(summary.files < 10)
  end)

  it("a journal makes a second run skip everything", function()
    local journal = helper.tmpname(".journal")
    local c = client()
    assert(c:upload_tree(root, { journal = journal }))
    local again = assert(c:upload_tree(root, { journal = journal }))
    c:close()
    assert.same(0, again.files)
    assert.same(0, again.directories)
    assert.same(120 + 21, again.skipped)
    assert.same(120, count(remote_paths(mock, nil).file))
    os.remove(journal)
  end)

  it("killed at a random point (SIGKILL), rerun with the journal: every file once, at most 4 in flight twice", function()
    local journal = helper.tmpname(".journal")
    local faults = {}
    for i = 1, 150 do faults[i] = { type = "delay", seconds = 0.01, path = "/v1/files" } end
    mock:faults(faults)
    math.randomseed(os.time())
    local delay = 0.3 + math.random() * 1.2
    local pidfile, log = helper.tmpname(".pid"), helper.tmpname(".log")
    local env = ("MKP_API_KEY=%s MKP_BASE_URL=%s"):format(helper.API_KEY, q(mock.mkp_url))
    assert(os.execute(("env %s sh -c 'echo $$ > %s; exec sh %s %s %s upload -r %s --journal %s --json' >%s 2>&1 &")
      :format(env, q(pidfile), q(helper.root .. "/tools/with-paths.sh"), helper.lua, q(helper.root .. "/bin/fileapi"),
        q(root), q(journal), q(log))))
    os.execute("sleep " .. delay)
    local pid = io.open(pidfile):read("*l")
    os.execute("kill -9 " .. pid .. " 2>/dev/null; sleep 0.1")
    local before = 0
    for _ in io.lines(journal) do before = before + 1 end
    local code, out = helper.run_lua(q(helper.root .. "/bin/fileapi") .. " upload -r " .. q(root) .. " --journal "
      .. q(journal) .. " --json", helper.mock_env(mock))
    assert.same(0, code, out)
    local resent = {}
    for line in out:gmatch("[^\n]+") do
      local ok, doc = pcall(cjson.decode, line)
      if ok and doc.result and doc.result.maybe_duplicate then resent[doc.path] = true end
    end
    local remote = remote_paths(mock, nil)
    local duplicates = 0
    -- only the items in flight at the kill (the command's --parallel 4) can
    -- be there twice: the API has no call to find them, and the rerun says
    -- it made them again
    local function check(rel, n)
      if n ~= 1 then
        assert.same(2, n, rel)
        assert.truthy(resent[rel], rel)
        duplicates = duplicates + 1
      end
    end
    for rel in pairs(made) do check(rel, remote.file[rel] or 0) end
    for rel, n in pairs(remote.directory) do check(rel, n) end
    assert.is_true(duplicates <= 4, duplicates)
    print(("      killed after %.2f s with %d journal lines; rerun: every other item exactly once, %d in flight made again")
      :format(delay, before, duplicates))
    os.remove(journal)
    os.remove(pidfile)
    os.remove(log)
  end)
end)

-- The journal's records: { [path] = { started = n, done = n, unsent = n } }.
local function journal_of(path)
  local out = {}
  for line in io.lines(path) do
    local rec = cjson.decode(line)
    out[rec.path] = out[rec.path] or { started = 0, done = 0, unsent = 0 }
    out[rec.path][rec.state] = out[rec.path][rec.state] + 1
  end
  return out
end

describe("upload_tree side by side (parallel = N)", function()
  local mock, root, made, folders
  local drive = require "fileapi.drive"

  setup(function()
    mock = helper.start_mock()
    root = helper.tmpname(".ptree")
    assert(os.execute("mkdir -p " .. q(root)))
    made, folders = helper.small_tree(root)
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. q(root))
  end)
  before_each(function() mock:reset() end)

  -- Every item once in the journal: started then done, nothing else.
  local function assert_journal_exact(journal)
    local recs = journal_of(journal)
    assert.same(count(made) + count(folders), count(recs))
    for rel, r in pairs(recs) do assert.same({ started = 1, done = 1, unsent = 0 }, r, rel) end
  end

  it("files: the directories once, then every file once, N at once and never more", function()
    mock:config({ latency = 0.1 })
    local journal = helper.tmpname(".journal")
    local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url }))
    local planned
    local summary = assert(c:upload_tree(root, { parallel = 4, journal = journal,
      on_plan = function(n, bytes) planned = { n, bytes } end }))
    assert.same(20, summary.files)
    assert.same(6, summary.directories)
    assert.is_true(summary.complete)
    local bytes = 0
    for _, size in pairs(made) do bytes = bytes + size end
    assert.same({ 20, bytes }, planned)
    assert.same(bytes, summary.bytes)
    assert.same(4, mock:stats().max_in_flight)
    local remote = helper.mkp_paths(mock, nil)
    for rel in pairs(made) do assert.same(1, remote.file[rel], rel) end
    for rel in pairs(folders) do assert.same(1, remote.directory[rel], rel) end
    assert.same(20, count(remote.file))
    assert_journal_exact(journal)
    -- a rerun sends nothing
    mock:reset()
    local again = assert(c:upload_tree(root, { parallel = 4, journal = journal }))
    c:close()
    assert.same(20 + 6, again.skipped)
    assert.same(0, mock:stats().requests)
    os.remove(journal)
  end)

  it("an on_item that raises: nothing more starts, what was in flight is recorded, then the raise goes on", function()
    mock:config({ latency = 0.2 })
    local journal = helper.tmpname(".journal")
    local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url }))
    local ok, err = pcall(c.upload_tree, c, root, { parallel = 4, journal = journal, on_item = function(ev)
      if ev.type == "file" then error("the caller's own bug", 0) end
    end })
    assert.is_false(ok)
    assert.same("the caller's own bug", err)
    -- nothing left running, and every file the server has is done in the journal
    assert.same(0, mock:stats().in_flight)
    local remote = helper.mkp_paths(mock, nil)
    local sent = count(remote.file)
    assert.is_true(sent >= 1 and sent <= 4, sent)
    local recs = journal_of(journal)
    for rel in pairs(remote.file) do assert.same(1, recs[rel] and recs[rel].done, rel) end
    -- the rerun sends only the rest, each once, none as a maybe-duplicate
    local dup = 0
    local again = assert(c:upload_tree(root, { parallel = 4, journal = journal, on_item = function(ev)
      if ev.maybe_duplicate then dup = dup + 1 end
    end }))
    c:close()
    assert.same(0, dup)
    assert.same(20 - sent, again.files)
    remote = helper.mkp_paths(mock, nil)
    for rel in pairs(made) do assert.same(1, remote.file[rel], rel) end
    os.remove(journal)
  end)

  it("drive: a new folder's first upload goes alone, so that none is made twice", function()
    -- the mock takes 0.05 s between looking a folder up and making it, as
    -- files.ro's queries do: two uploads into a new folder would make two
    mock:config({ latency = 0.1, path_race = 0.05 })
    local journal = helper.tmpname(".journal")
    local d = assert(drive.new({ token = helper.DRIVE_TOKEN, base_url = mock.base }))
    local summary = assert(d:upload_tree(root, { parallel = 4, journal = journal }))
    d:close()
    assert.same(20, summary.files)
    assert.is_true(summary.complete)
    local stats = mock:stats()
    assert.same(4, stats.max_in_flight)
    for rel in pairs(folders) do assert.same(1, stats.folder_paths[rel], rel) end
    -- each file once, in its folder
    local function folder_path(id)
      local parts, at = {}, id and mock:folder(id)
      while at and at.id do
        table.insert(parts, 1, at.name)
        at = at.parent_id and mock:folder(at.parent_id)
      end
      return parts[1] and table.concat(parts, "/") or nil
    end
    local by_name, path_of = {}, {}
    for rel in pairs(made) do by_name[rel:match("([^/]+)%.txt$")] = rel end
    for _, f in ipairs(mock:files()) do
      local rel = by_name[f.name]
      assert.truthy(rel, f.name)
      assert.is_nil(path_of[rel], rel .. " twice")
      path_of[rel] = true
      assert.same(rel:match("^(.*)/[^/]+$"), folder_path(f.parent_id), rel)
    end
    assert.same(20, count(path_of))
    local recs = journal_of(journal)
    assert.same(20, count(recs))
    for rel, r in pairs(recs) do assert.same({ started = 1, done = 1, unsent = 0 }, r, rel) end
    os.remove(journal)
  end)

  it("stays within a stated limit with N in flight: no 429 #waits", function()
    mock:config({ latency = 0.05, rate_limit = 8, rate_window = 1 })
    local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url, rate_window = 1 }))
    local t = core.now()
    local summary = assert(c:upload_tree(root, { parallel = 4 }))
    local elapsed = core.now() - t
    c:close()
    print(("\n      26 calls, parallel 4, at 8 per 1 s: %.2f s, %d answered 429"):format(elapsed, mock:stats().rejected))
    assert.same(20, summary.files)
    assert.same(0, mock:stats().rejected)
    assert.same(26, mock:stats().requests)
    assert.is_true(elapsed >= 26 / 8 - 1 - 0.2, elapsed) -- paced: 8 a second
  end)

  it("checks parallel: a wrong type raises, a bad number is invalid_argument", function()
    local c = assert(files.new({ api_key = helper.API_KEY, base_url = mock.mkp_url }))
    local d = assert(drive.new({ token = helper.DRIVE_TOKEN, base_url = mock.base }))
    for _, client in ipairs({ c, d }) do
      assert.has_error(function() client:upload_tree(root, { parallel = "4" }) end,
        "bad option 'parallel' to 'upload_tree' (number expected, got string)")
      for _, n in ipairs({ 0, 2.5, 1001 }) do
        local summary, err = client:upload_tree(root, { parallel = n })
        assert.is_nil(summary)
        assert.same("invalid_argument", err.kind)
      end
    end
    c:close()
    d:close()
    assert.same(0, mock:stats().requests)
  end)
end)
