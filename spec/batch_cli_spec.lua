-- The command's multi-item commands with --parallel N, against the mock
-- with added latency: several FILEs and several download IDs at once (N
-- reached, never more, every item once), files.ro's new folders made once,
-- one progress line for the batch on a terminal, and Ctrl-C in the middle
-- of a tree: status 130 within 3 s, the journal exactly what completed, and
-- a rerun that sends only the rest.
local helper = require "helper"
local cjson = require "cjson"
local socket = require "socket"

local q = helper.sh_quote

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- The JSON lines of an output: { [path] = doc } for the results.
local function results_of(out)
  local list = {}
  for _, doc in ipairs(helper.json_lines(out)) do
    if doc.path and doc.result then list[doc.path] = doc.result end
  end
  return list
end

describe("--parallel: several items at once #children", function()
  local mock, env, dir

  setup(function()
    mock = helper.start_mock()
    dir = helper.tmpname(".batch")
    assert(os.execute("mkdir -p " .. q(dir .. "/xdg")))
    env = helper.mock_env(mock)
    env.XDG_CONFIG_HOME, env.HOME = dir .. "/xdg", dir .. "/xdg"
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. q(dir))
  end)
  before_each(function() mock:reset() end)

  local function fileapi(args, cwd) return helper.run_fileapi(args, env, nil, cwd) end

  local function some_files(n, prefix)
    local paths = {}
    for i = 1, n do paths[i] = helper.write_file(("%s/%s-%d.txt"):format(dir, prefix, i), 1000 + i) end
    return paths
  end

  local function words(list)
    local out = {}
    for i, p in ipairs(list) do out[i] = q(p) end
    return table.concat(out, " ")
  end

  it("upload FILE...: N at once and never more, each file once, a result per file", function()
    mock:config({ latency = 0.2 })
    local paths = some_files(6, "up")
    local code, out = fileapi("upload " .. words(paths) .. " --parallel 3 --json")
    assert.same(0, code, out)
    local results = results_of(out)
    assert.same(6, count(results))
    local stats = mock:stats()
    assert.same(3, stats.max_in_flight)
    assert.same(6, stats.requests)
    local names = {}
    for _, it in ipairs(mock:mkp_items()) do names[it.name] = (names[it.name] or 0) + 1 end
    for i, p in ipairs(paths) do
      assert.same(1000 + i, results[p].size, p)
      assert.same(1, names[p:match("[^/]+$")], p)
    end
  end)

  it("upload FILE... - side by side reads standard input first: a slow pipe stalls no transfer", function()
    mock:config({ latency = 0.5 })
    local paths = some_files(3, "pipe")
    -- the pipe gives its line after 5 s; a transfer left waiting that long
    -- would outlast its 3 s timeout after the server stored its file
    local code, out = helper.run_sh(("(sleep 5; echo from-the-pipe) | env %s %s upload %s - --parallel 2 --timeout 3"
      .. " --retries 0 --json"):format(helper.env_words(env), helper.FILEAPI, words(paths)))
    assert.same(0, code, out)
    local results = results_of(out)
    assert.same(4, count(results), out)
    assert.same(#"from-the-pipe\n", results["-"].size)
    assert.same(4, mock:stats().requests)
  end)

  it("--parallel takes a whole number from 1 to 1000", function()
    local paths = some_files(2, "bad")
    for _, n in ipairs({ "0", "1.5", "1001", "many" }) do
      local code, out = fileapi("upload " .. words(paths) .. " --parallel " .. n)
      assert.same(2, code, out)
      assert.matches("--parallel must be a whole number", out, 1, true)
    end
    assert.same(0, mock:stats().requests)
  end)

  it("download ID...: each to its name in the -o directory, N at once; -o must then be a directory", function()
    mock:config({ latency = 0.2 })
    local ids, want = {}, {}
    for i = 1, 4 do
      local src = helper.write_file(("%s/src-%d.bin"):format(dir, i), 20000 + i)
      ids[i] = mock:add_mkp_file({ name = ("file-%d.bin"):format(i), path = src }).id
      want[i] = helper.sha256(src)
    end
    local into = dir .. "/into"
    assert(os.execute("mkdir -p " .. q(into)))
    local code, out = fileapi("download " .. table.concat(ids, " ") .. " -o " .. q(into) .. " --parallel 4")
    assert.same(0, code, out)
    for i = 1, 4 do
      local path = ("%s/file-%d.bin"):format(into, i)
      assert.same(want[i], helper.sha256(path), path)
      assert.matches(path .. " " .. (20000 + i), out, 1, true)
    end
    -- a call for each file's document and one for its link: 8, four at a time
    assert.same(4, mock:stats().max_in_flight)
    -- without -o: here, under their names
    local here = dir .. "/here"
    assert(os.execute("mkdir -p " .. q(here)))
    code, out = fileapi("download " .. ids[1] .. " " .. ids[2], here)
    assert.same(0, code, out)
    assert.same(want[2], helper.sha256(here .. "/file-2.bin"))
    -- -o a file or - with several IDs: a usage error, nothing sent
    mock:reset()
    for _, o in ipairs({ q(here .. "/file-1.bin"), "-" }) do
      code, out = fileapi("download " .. ids[1] .. " " .. ids[2] .. " -o " .. o)
      assert.same(2, code, out)
      assert.matches("with several IDs, -o names an existing directory", out, 1, true)
    end
    assert.same(0, mock:stats().requests)
    -- one that fails does not stop the others
    code, out = fileapi("download " .. ids[3] .. " fsf_missing00000 -o " .. q(into) .. " --force --json")
    assert.same(6, code, out)
    assert.matches("fsf_missing00000", out, 1, true)
    assert.same(want[3], helper.sha256(into .. "/file-3.bin"))
  end)

  -- files.ro makes the folders a path names, and two uploads racing into a
  -- new one make it twice (the mock too, with path_race): the first upload
  -- goes alone, the three others together after it.
  for _, case in ipairs({
    { "share-upload editor-token", "Shared/new/deep" },
    { "drive-upload", "new/deep" },
  }) do
    it(case[1]:match("^%S+") .. " FILE... --path into a new folder: the folder is made once", function()
      mock:config({ latency = 0.2, path_race = 0.1 })
      local paths = some_files(4, "race")
      local code, out = fileapi(case[1] .. " " .. words(paths) .. " --path new/deep --parallel 4")
      assert.same(0, code, out)
      local stats = mock:stats()
      assert.same(1, stats.folder_paths[case[2]], cjson.encode(stats.folder_paths))
      assert.same(1, stats.folder_paths[case[2]:gsub("/deep$", "")])
      assert.same(3, stats.max_in_flight)
      assert.same(4, #mock:files())
    end)
  end

  -- What a terminal shows of a command: script(1) gives it a pseudo-terminal.
  local function on_terminal(args)
    local screen = helper.tmpname(".tty")
    local inner = ("env %s %s %s"):format(helper.env_words(env), helper.FILEAPI, args)
    local ok = os.execute(("script -qfec %s %s >/dev/null 2>&1"):format(q(inner), q(screen)))
    local text = helper.read_file(screen) or ""
    os.remove(screen)
    assert.truthy(ok == true or ok == 0, text)
    return text
  end

  it("draws one progress line for a batch, not a bar per file #toolchain", function()
    mock:config({ latency = 0.1 })
    local tree = dir .. "/shown"
    local made = helper.small_tree(tree)
    local paths = some_files(3, "shown")
    local n = count(made)
    local final = "files " .. n .. "/" .. n .. "  [%d.]+ KiB of [%d.]+ KiB  100%%  [%d.]+ [KMG]?i?B/s  ETA 0:00"
    local texts = { on_terminal("upload -r " .. q(tree) .. " --parallel 4"), on_terminal("drive-upload -r " .. q(tree)),
      on_terminal("upload " .. words(paths)) }
    for i, text in ipairs(texts) do
      assert.is_nil(text:find("[#", 1, true), text) -- no per-file bar
      assert.matches(i < 3 and final or final:gsub(n, 3), text)
      -- the results' lines are whole: the progress line is wiped before each
      assert.matches(({ "\r\27%[Kupload fsf_%w+ top%-1%.txt\r?\n", "\r\27%[Kupload %S+ top%-1%.txt\r?\n",
        "\r\27%[Kfsf_%w+ shown%-1%.txt 1001 text/plain\r?\n" })[i], text)
    end
  end)
end)

describe("Ctrl-C in the middle of a tree with --parallel #children #waits", function()
  local mock, env, dir

  setup(function()
    mock = helper.start_mock()
    dir = helper.tmpname(".ctrlc")
    assert(os.execute("mkdir -p " .. q(dir .. "/xdg")))
    env = helper.mock_env(mock)
    env.XDG_CONFIG_HOME, env.HOME = dir .. "/xdg", dir .. "/xdg"
  end)
  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. q(dir))
  end)
  before_each(function() mock:reset() end)

  -- The files the journal says are done.
  local function done_in(journal)
    local done = {}
    for line in io.lines(journal) do
      local ok, rec = pcall(cjson.decode, line)
      if ok and rec.state == "done" and rec.type == "file" then done[rec.path] = true end
    end
    return done
  end

  -- Starts `fileapi ARGS`, sends SIGINT once the journal holds `after` done
  -- files; returns the exit status, the output and the seconds from the
  -- signal to the exit.
  local function interrupt(args, journal, after)
    local pidfile, out, rc = dir .. "/pid", dir .. "/out", dir .. "/rc"
    for _, p in ipairs({ pidfile, out, rc }) do os.remove(p) end
    local inner = ("echo $$ > %s; exec env %s %s %s"):format(q(pidfile), helper.env_words(env), helper.FILEAPI, args)
    assert(os.execute(("(sh -c %s >%s 2>&1; echo $? > %s) &"):format(q(inner), q(out), q(rc))))
    local pid = helper.wait_for(function() return helper.first_line(pidfile) end, 10)
    assert(helper.wait_for(function()
      return io.open(journal) and count(done_in(journal)) >= after
    end, 30), "the run did not get going")
    local t0 = socket.gettime()
    os.execute("kill -INT " .. pid)
    while socket.gettime() - t0 < 10 and io.open("/proc/" .. pid .. "/stat") do socket.sleep(0.01) end
    local elapsed = socket.gettime() - t0
    local status = helper.wait_for(function() return helper.first_line(rc) end, 5)
    return tonumber(status), helper.read_file(out) or "", elapsed
  end

  for _, case in ipairs({
    { "upload -r", function(mock_) -- path -> how many times the mock has it
      local remote = helper.mkp_paths(mock_, nil)
      for rel, n in pairs(remote.directory) do assert.same(1, n, rel) end
      return remote.file
    end },
    { "drive-upload -r", function(mock_, made)
      local by_name, out = {}, {}
      for rel in pairs(made) do by_name[rel:match("([^/]+)%.txt$")] = rel end
      for _, f in ipairs(mock_:files()) do
        local rel = assert(by_name[f.name], f.name)
        out[rel] = (out[rel] or 0) + 1
      end
      for path, n in pairs(mock_:stats().folder_paths) do
        if path:find("^d%d") then assert.same(1, n, path) end
      end
      return out
    end },
  }) do
    it(case[1] .. ": exits 130 within 3 s, the journal holds what completed, a rerun sends the rest", function()
      mock:config({ latency = 0.3 })
      local tree = dir .. "/" .. case[1]:gsub("%W", "")
      local made = helper.small_tree(tree, 6)
      local journal = tree .. ".journal"
      local args = ("%s %s --journal %s --parallel 4 --json"):format(case[1], q(tree), q(journal))
      local rc, out, elapsed = interrupt(args, journal, 4)
      print(("\n      %s: Ctrl-C with 4 in flight, exit after %.3f s"):format(case[1], elapsed))
      assert.same(130, rc, out)
      assert.is_true(elapsed < 3, elapsed)
      assert.matches("fileapi: interrupted\n$", out)
      -- the journal's done files are exactly the files printed as done
      local done, printed = done_in(journal), {}
      for path, r in pairs(results_of(out)) do
        if r.type == "file" then printed[path] = true end
      end
      assert.same(printed, done)
      assert.is_true(count(done) < count(made), count(done))
      -- the rerun sends only the rest; what was in flight at Ctrl-C is said
      mock:config({ latency = 0.05 })
      local code
      code, out = helper.run_fileapi(args, env)
      assert.same(0, code, out)
      local resent, sent = {}, {}
      for path, r in pairs(results_of(out)) do
        if r.type == "file" and not r.skipped then sent[path] = true end
        if r.maybe_duplicate then resent[path] = true end
      end
      for rel in pairs(made) do assert.same(not done[rel] or nil, sent[rel], rel) end
      -- every file on the server once; twice only where the rerun said so
      local remote, twice = case[2](mock, made), 0
      for rel in pairs(made) do
        local n = remote[rel] or 0
        if n ~= 1 then
          assert.same(2, n, rel)
          assert.truthy(resent[rel], rel)
          twice = twice + 1
        end
      end
      assert.is_true(twice <= 4, twice)
      print(("      %d done before, %d sent by the rerun, %d in flight at Ctrl-C made twice"):format(count(done),
        count(sent), twice))
    end)
  end
end)
