-- The fileapi command, run as a user would, against the mock.
local helper = require "helper"
local cjson = require "cjson"

describe("fileapi command #children", function()
  local mock, env

  setup(function()
    mock = helper.start_mock()
    env = helper.mock_env(mock)
  end)
  teardown(function() mock:stop() end)
  before_each(function() mock:reset() end)

  local function fileapi(args, extra_env, cwd) return helper.run_fileapi(args, env, extra_env, cwd) end

  it("prints help for every command", function()
    for _, cmd in ipairs({ "--help", "upload --help", "mkdir --help", "share-mkdir --help" }) do
      local code, out = fileapi(cmd)
      assert.same(0, code, out)
      assert.matches("[Uu]sage: fileapi", out)
    end
    local code, out = fileapi("")
    assert.same(2, code)
    assert.matches("exit status:", out)
  end)

  it("mkdir prints ID NAME, or JSON", function()
    local code, out = fileapi("mkdir Contracts")
    assert.same(0, code, out)
    local id = out:match("^(fsd_%w+) Contracts\n$")
    assert.truthy(id, out)
    code, out = fileapi("mkdir Sub --dir " .. id .. " --json")
    assert.same(0, code, out)
    local doc = cjson.decode(out)
    assert.same("Sub", doc.name)
    assert.same("directory", doc.type)
    assert.same("/v1/files?directory=" .. id, mock:last_request().target)
  end)

  it("upload streams files, quiet when piped, with --json results", function()
    local a = helper.write_file(helper.tmpname(".txt"), 5000)
    local code, out = fileapi(helper.sh_quote(a))
    assert.same(2, code, out)
    code, out = fileapi("upload " .. helper.sh_quote(a))
    assert.same(0, code, out)
    assert.matches("^fsf_%w+ [^ ]+%.txt 5000 text/plain\n$", out)
    assert.is_nil(out:find("\r", 1, true))
    code, out = fileapi("upload " .. helper.sh_quote(a) .. " /no/such/file --json")
    os.remove(a)
    assert.same(3, code)
    -- a JSON object per line as each file finishes (side by side: the one
    -- that cannot be opened first), with its local path
    local by_path = {}
    for line in out:gmatch("[^\n]+") do
      if line:sub(1, 1) == "{" then
        local doc = cjson.decode(line)
        by_path[doc.path] = doc
      end
    end
    assert.same(5000, by_path[a].result.size)
    assert.same("io", by_path["/no/such/file"].error.kind)
  end)

  it("share-mkdir creates a folder in a share", function()
    local code, out = fileapi("share-mkdir editor-token Projects")
    assert.same(0, code, out)
    local id = out:match("^(%x+%-[%x-]+) Projects\n$")
    assert.truthy(id, out)
    code, out = fileapi("share-mkdir editor-token Inner --parent " .. id .. " --json")
    assert.same(0, code, out)
    assert.same(id, cjson.decode(out).relationships.parent.data.id)
  end)

  it("exits with a status per error kind", function()
    local cases = {
      { "mkdir X --dir fsd_missing0001", 6, "not_found" },
      { "mkdir ''", 2, "invalid_argument" },
      { "mkdir X --bogus", 2, "unknown option" },
      { "mkdir X --timeout soon", 2, "--timeout must be a number of seconds >= 0 (got soon)" },
      { "upload /no/such/file", 3, "No such file" },
      { "share-mkdir visitor-token X", 5, "Access Denied" },
      { "share-mkdir no-such-token X", 6, "not_found" },
      { "mkdir X --retries 0 --base-url http://127.0.0.1:" .. helper.closed_port() .. "/v1", 4, "network" },
    }
    for _, case in ipairs(cases) do
      local code, out = fileapi(case[1])
      assert.same(case[2], code, case[1] .. ": " .. out)
      assert.matches(case[3], out, 1, true)
    end
    local code, out = fileapi("mkdir X", { MKP_API_KEY = "wrong-key" })
    assert.same(5, code)
    assert.is_nil(out:find("wrong-key", 1, true))
    mock:config({ quota = 10 })
    local big = helper.write_file(helper.tmpname(".bin"), 100)
    code = fileapi("upload " .. helper.sh_quote(big))
    os.remove(big)
    assert.same(8, code)
  end)

  it("draws a progress bar with percentage, rate and ETA on a terminal #toolchain", function()
    local big = helper.write_file(helper.tmpname(".bin"), 64 * 1024 * 1024)
    local screen = helper.tmpname(".tty")
    local q = helper.sh_quote
    local inner = ("env MKP_API_KEY=%s MKP_BASE_URL=%s %s upload %s"):format(helper.API_KEY,
      q(mock.mkp_url), helper.FILEAPI, q(big))
    -- script(1) gives the command a pseudo-terminal and records what it shows
    local ok = os.execute(("script -qfec %s %s >/dev/null 2>&1"):format(q(inner), q(screen)))
    os.remove(big)
    local text = io.open(screen):read("*a")
    os.remove(screen)
    assert.truthy(ok == true or ok == 0, text)
    assert.truthy(text:find("\r", 1, true), "no carriage return redraws")
    assert.matches("%[#+%] 100%%%s+[%d.]+ [KMG]?i?B/s%s+ETA 0:00", text)
    assert.matches("ETA %d+:%d%d", text)
    assert.matches("fsf_%w+ [^ ]+%.bin 67108864 application/octet%-stream", text)
  end)

  it("share-upload, share-mv and share-rm; the token from FILESRO_TOKEN stays out of the arguments", function()
    local path = helper.write_file(helper.tmpname(".txt"), 3000)
    local code, out = fileapi("share-upload editor-token " .. helper.sh_quote(path) .. " --path a/b --chunk-size 1000")
    assert.same(0, code, out)
    local id = out:match("^(%x+%-[%x-]+) %S+ txt\n$")
    assert.truthy(id, out)
    assert.same(3, mock:stats().chunks)
    local tok = { FILESRO_TOKEN = "editor-token" }
    code, out = fileapi("share-mkdir Target", tok)
    assert.same(0, code, out)
    local folder = out:match("^(%S+) Target\n$")
    code, out = fileapi("share-mv file:" .. id .. " --to " .. folder, tok)
    assert.same(0, code, out)
    assert.same("moved: 1 item\n", out)
    code, out = fileapi("share-rm file:" .. id .. " --force --json", tok)
    assert.same(0, code, out)
    assert.is_true(cjson.decode(out).ok)
    code, out = fileapi("share-rm file:" .. id, tok)
    assert.same(6, code, out)
    assert.matches("wasn't found", out)
    code, out = fileapi("share-rm nonsense", tok)
    assert.same(2, code, out)
    code, out = fileapi("share-upload visitor-token " .. helper.sh_quote(path))
    assert.same(5, code, out)
    for _, cmd in ipairs({ "share-upload --help", "share-rm --help", "share-mv --help" }) do
      code, out = fileapi(cmd)
      assert.same(0, code, out)
    end
    os.remove(path)
  end)

  it("get, download (to its name, to -o PATH, to stdout), share, shares, request-files, requests, request", function()
    local src = helper.write_file(helper.tmpname(".txt"), 70000)
    local code, out = fileapi("upload " .. helper.sh_quote(src))
    assert.same(0, code, out)
    local id, name = out:match("^(fsf_%w+) (%S+) ")
    code, out = fileapi("get " .. id)
    assert.same(0, code, out)
    assert.same(("%s file %s 70000 text/plain\n"):format(id, name), out)
    local work = helper.tmpname(".cli")
    os.execute("mkdir -p " .. helper.sh_quote(work))
    code, out = fileapi("download " .. id, nil, work)
    assert.same(0, code, out)
    assert.same(helper.sha256(src), helper.sha256(work .. "/" .. name))
    code, out = fileapi("download " .. id, nil, work)
    assert.same(3, code, out) -- exists: refused without --force
    code, out = fileapi("download " .. id .. " --force -o copy.txt --json", nil, work)
    assert.same(0, code, out)
    assert.same(70000, cjson.decode(out).size)
    code, out = fileapi("download " .. id .. " -o -")
    assert.same(0, code, out)
    assert.same(io.open(src, "rb"):read("*a"), out)
    code, out = fileapi("download fsd_abc")
    assert.same(2, code, out)
    code, out = fileapi("get fsf_missing0001")
    assert.same(6, code, out)

    code, out = fileapi("share " .. id .. " --customer cst_abc12345678")
    assert.same(0, code, out)
    assert.matches("^https://", out)
    code, out = fileapi("share " .. id)
    assert.same(0, code, out)
    code, out = fileapi("shares")
    assert.same(0, code, out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.same(2, #lines)
    assert.matches("^fss_%w+ cst_abc12345678 1 https://", lines[1])
    assert.matches("^fss_%w+ public 1 https://", lines[2])

    code, out = fileapi("request-files Mortgage --file Passport --file 'Payslip:the latest' --customer cst_abc12345678")
    assert.same(0, code, out)
    assert.matches("^https://", out)
    assert.same({ { name = "Passport" }, { name = "Payslip", description = "the latest" } },
      cjson.decode(mock:last_request().body).requestedFiles)
    code, out = fileapi("requests --json")
    assert.same(0, code, out)
    local req = cjson.decode(out)
    code, out = fileapi("request " .. req.id)
    assert.same(0, code, out)
    assert.matches("open Mortgage\nlink: https://", out)
    assert.matches("Payslip", out)
    code, out = fileapi("request-files X")
    assert.same(2, code, out)
    for _, cmd in ipairs({ "get", "download", "share", "shares", "request-files", "requests", "request" }) do
      code, out = fileapi(cmd .. " --help")
      assert.same(0, code, out)
    end
    os.execute("rm -rf " .. helper.sh_quote(work))
    os.remove(src)
  end)

  -- A 1 MiB tmpfs as $TMPDIR, in a mount namespace of its own: the spool of
  -- a 3 MiB pipe cannot fit.
  it("a piped upload whose spool fills the disk: exit 3, nothing sent, no spool left #toolchain", function()
    if helper.run_sh("unshare -m true") ~= 0 then
      print("      (not run: this machine does not allow unshare -m, which the tiny tmpfs needs)")
      return
    end
    local src = helper.write_file(helper.tmpname(".dat"), 3 * 1024 * 1024)
    local dir = helper.tmpname(".tmpfs")
    assert(os.execute("mkdir -p " .. helper.sh_quote(dir)))
    -- a machine that lets unshare -m run but not mount a tmpfs (a chroot, a
    -- sandbox) cannot give this test its world: it says so and skips
    local script = ("mount -t tmpfs -o size=1m tmpfs %s 2>&1 || exit 0; echo mounted; {"
      .. " cat %s | env %s TMPDIR=%s %s upload - --name big.bin"
      .. " 2>&1; echo \"exit $?\"; echo \"left $(ls -A %s | wc -l)\"; }"):format(helper.sh_quote(dir),
      helper.sh_quote(src), helper.env_words(env), helper.sh_quote(dir), helper.FILEAPI, helper.sh_quote(dir))
    local p = io.popen("unshare -m sh -c " .. helper.sh_quote(script) .. " 2>&1")
    local out = p:read("*a")
    p:close()
    os.remove(src)
    os.execute("rmdir " .. helper.sh_quote(dir))
    if not ("\n" .. out):find("\nmounted\n", 1, true) then
      print("      (not run: unshare -m could not mount the tiny tmpfs here: "
        .. (out:match("[^\n]+") or "no output") .. ")")
      return
    end
    assert.matches("\nexit 3\n", out)
    assert.matches("left 0\n", out)
    assert.matches("fileapi: %-: io: cannot write the spool in .*No space left on device", out)
    assert.same(0, #mock:requests())
  end)

  it("behaves as people expect: stdin, --name/--mime, --opt=value, --, --version, usage, one path per error", function()
    local src = helper.write_file(helper.tmpname(".dat"), 3000)
    -- "-": a redirected file is read in place; a pipe is spooled, as stderr says
    local code, out = fileapi("upload - --name=from-stdin.txt --mime=text/csv < " .. helper.sh_quote(src))
    assert.same(0, code, out)
    assert.matches("^fsf_%w+ from%-stdin%.txt 3000 text/csv\n$", out)
    code, out = fileapi("upload - --name piped.bin --quiet < /dev/null", nil)
    assert.same(0, code, out)
    local p = io.popen(("cat %s | env %s %s upload - --name piped.dat 2>&1"):format(helper.sh_quote(src),
      helper.env_words(env), helper.FILEAPI))
    out = p:read("*a")
    p:close()
    assert.matches("temporary file", out)
    assert.matches("fsf_%w+ piped%.dat 3000", out)
    -- -- ends the options: a file named like one
    local odd = helper.tmpname(".x")
    local dash = odd:gsub("[^/]+$", "--odd")
    os.rename(src, dash)
    code, out = fileapi("upload --json -- " .. helper.sh_quote(dash))
    assert.same(0, code, out)
    assert.same(dash, cjson.decode(out).path)
    os.remove(dash)
    code, out = fileapi("--version")
    assert.same(0, code, out)
    assert.matches("^fileapi %d+%.%d+%.%d+ %(libcurl [%d.]+%)\n$", out)
    -- no arguments: usage on stderr, status 2
    p = io.popen(("env %s %s 2>/dev/null"):format(helper.env_words(env), helper.FILEAPI))
    assert.same("", p:read("*a"))
    p:close()
    -- an error names the path once
    code, out = fileapi("upload /no/such/file")
    assert.same(3, code)
    local _, n = out:gsub("/no/such/file", "")
    assert.same(1, n, out)
    -- --json when the client cannot be created
    code, out = fileapi("mkdir X --json", { MKP_API_KEY = "" })
    assert.same(2, code)
    assert.same("invalid_argument", cjson.decode(out:match("{.*}")).error.kind)
  end)

  it("says when the rate limit makes it wait", function()
    mock:config({ rate_limit = 1, rate_window = 1 })
    local code, out = fileapi("mkdir A")
    assert.same(0, code, out)
    code, out = fileapi("mkdir B --retries 3")
    assert.same(0, code, out)
    -- which wait depends on where the second process's first call lands in
    -- the window (a slow start can meet the server's 429): both are said
    local said = out:match("fileapi: waiting [%d.]+ s %(rate limit%)")
      or out:match("fileapi: waiting [%d.]+ s %(the server asked: Retry%-After%)")
    assert.truthy(said, out)
    mock:config({ rate_limit = require("cjson").null })
  end)

  it("--header passes a protected share's cookie; FILESRO_TOKEN keeps the token out of the arguments", function()
    local code, out = fileapi("share-mkdir Locked", { FILESRO_TOKEN = "protected-token" })
    assert.same(5, code, out)
    code, out = fileapi("share-mkdir Unlocked --header 'Cookie: share_session=unlock-me'",
      { FILESRO_TOKEN = "protected-token" })
    assert.same(0, code, out)
    assert.is_nil(out:find("unlock-me", 1, true))
    code, out = fileapi("share-mkdir protected-token X --header nonsense")
    assert.same(2, code, out)
  end)

  -- The bytes and the name and extension the mock stored for the upload
  -- whose answer was `out` ("<uuid> NAME EXTENSION").
  local function stored(out)
    local id = out:match("(%x+%-%x+%-%x+%-%x+%-%x+) ")
    for _, f in ipairs(mock:files()) do
      if f.id == id then return f end
    end
    error("no stored file for: " .. out)
  end

  it("share-upload takes a file without an extension, standard input, --name and --extension", function()
    local dir = helper.tmpname(".noext")
    assert(os.execute("mkdir -p " .. helper.sh_quote(dir)))
    local readme = helper.write_file(dir .. "/README", 2500)
    local q = helper.sh_quote
    -- no extension: the name is its own, as files.ro's web client sends it
    local code, out = fileapi("share-upload editor-token " .. q(readme))
    assert.same(0, code, out)
    assert.matches("^%x+%-[%x-]+ README README\n$", out)
    local f = stored(out)
    assert.same({ "README", "README", 2500, helper.sha256(readme) }, { f.name, f.extension, f.size, f.sha256 })
    -- --extension names another
    code, out = fileapi("share-upload editor-token " .. q(readme) .. " --extension txt")
    assert.same(0, code, out)
    f = stored(out)
    assert.same({ "README", "txt" }, { f.name, f.extension })
    -- standard input, redirected: "stdin", as its own extension
    code, out = fileapi("share-upload editor-token - < " .. q(readme))
    assert.same(0, code, out)
    f = stored(out)
    assert.same({ "stdin", "stdin", helper.sha256(readme) }, { f.name, f.extension, f.sha256 })
    -- a pipe, named by --name: its name and extension; FILESRO_TOKEN for the token
    local p = io.popen(("cat %s | env %s FILESRO_TOKEN=editor-token %s share-upload - --name notes.csv 2>&1")
      :format(q(readme), helper.env_words(env), helper.FILEAPI))
    out = p:read("*a")
    p:close()
    assert.matches("temporary file", out)
    f = stored(out)
    assert.same({ "notes", "csv", helper.sha256(readme) }, { f.name, f.extension, f.sha256 })
    -- --name names one file
    code, out = fileapi("share-upload editor-token " .. q(readme) .. " " .. q(readme) .. " --name x.txt")
    assert.same(2, code, out)
    assert.matches("%-%-name names one FILE", out)
    os.execute("rm -rf " .. q(dir))
  end)

  it("says why it waits: a retry after a refused connection, the server's Retry-After", function()
    local code, out = fileapi("mkdir X --retries 1 --base-url http://127.0.0.1:" .. helper.closed_port() .. "/v1")
    assert.same(4, code, out)
    assert.matches("fileapi: waiting [%d.]+ s before trying again\n", out)
    assert.is_nil(out:find("rate limit", 1, true), out)
    mock:faults({ { type = "status", status = 503, headers = { ["Retry-After"] = "1" } } })
    code, out = fileapi("mkdir Y")
    assert.same(0, code, out)
    assert.matches("fileapi: waiting 1%.0 s %(the server asked: Retry%-After%)\n", out)
  end)

  it("names its own flags in errors, and says what a number flag takes", function()
    local q = helper.sh_quote
    local path = helper.write_file(helper.tmpname(".txt"), 100)
    local cases = {
      { "share-upload editor-token " .. q(path) .. " --parent nope", 2, "--parent must be a UUID" },
      { "share-upload editor-token " .. q(path) .. " --extension .txt", 2, "--extension must be 1 to 32" },
      { "share-upload editor-token " .. q(path) .. " --path ../up", 2, "--path must not contain" },
      { "share-mv editor-token file:" .. ("1"):rep(8) .. "-1111-4111-8111-111111111111 --to nope", 2,
        "--to must be a UUID" },
      { "mkdir X --dir nope", 2, "--dir must be a directory id" },
      { "share fsf_abc12345678 --customer nope", 2, "--customer must look like" },
      { "download %s -o " .. q(path), 3, "pass --force to replace it" },
      { "mkdir X --retries -1", 2, "--retries must be a whole number >= 0 (got -1)" },
      { "mkdir X --retries=1.5", 2, "--retries must be a whole number >= 0 (got 1.5)" },
      { "mkdir X --retries 0x10", 2, "--retries must be a whole number >= 0 (got 0x10)" },
      { "mkdir X --timeout -2", 2, "--timeout must be a number of seconds >= 0 (got -2)" },
      { "mkdir X --connect-timeout 1e999", 2, "--connect-timeout must be a number of seconds >= 0 (got 1e999)" },
      { "mkdir X --idle-timeout nan", 2, "--idle-timeout must be a number of seconds >= 0 (got nan)" },
      { "share-upload editor-token " .. q(path) .. " --chunk-size 0", 2,
        "--chunk-size must be a whole number of bytes >= 1 (got 0)" },
    }
    local id = mock:add_mkp_file({ name = "a.txt", path = path }).id
    for _, case in ipairs(cases) do
      local code, out = fileapi((case[1]:gsub("%%s", id)))
      assert.same(case[2], code, case[1] .. ": " .. out)
      assert.matches(case[3], out, 1, true)
      for _, lua_name in ipairs({ "parent_id", "to_id", "customer_id", ": directory ", "overwrite", "chunk_size",
          ": extension must", ": path must", ": retries must", "unknown option" }) do
        assert.is_nil(out:find(lua_name, 1, true), case[1] .. ": " .. out)
      end
    end
    os.remove(path)
  end)

  -- What a terminal shows of a command: script(1) gives it a pseudo-terminal.
  local function on_terminal(args)
    local screen = helper.tmpname(".tty")
    local q = helper.sh_quote
    local inner = ("env %s %s %s"):format(helper.env_words(env), helper.FILEAPI, args)
    local ok = os.execute(("script -qfec %s %s >/dev/null 2>&1"):format(q(inner), q(screen)))
    local text = io.open(screen):read("*a")
    os.remove(screen)
    assert.truthy(ok == true or ok == 0, text)
    return text
  end

  -- The percentage each bar shows last, before its line ends.
  local function final_percents(text)
    local out = {}
    for line in text:gmatch("[^\n]+") do
      local last
      for pct in line:gmatch("%] +(%d+)%%") do last = tonumber(pct) end
      if last then out[#out + 1] = last end
    end
    return out
  end

  it("progress bars and a batch's line end at 100% when the transfers are done #toolchain", function()
    local q = helper.sh_quote
    local path = helper.write_file(helper.tmpname(".bin"), 6 * 1024 * 1024)
    local dest = helper.tmpname(".dl")
    local tree = helper.tmpname(".tree")
    assert(os.execute("mkdir -p " .. q(tree)))
    helper.write_file(tree .. "/a.bin", 3 * 1024 * 1024)
    helper.write_file(tree .. "/b.bin", 3 * 1024 * 1024)
    local id = mock:add_mkp_file({ name = "a.bin", path = path }).id
    local text = on_terminal("share-upload editor-token " .. q(path) .. " " .. q(path) .. " --chunk-size 4000000")
      .. on_terminal("download " .. id .. " -o " .. q(dest)) .. on_terminal("upload -r " .. q(tree))
    assert.same(helper.sha256(path), helper.sha256(dest))
    os.execute("rm -rf " .. q(tree))
    os.remove(path)
    os.remove(dest)
    -- the download's bar; the two share uploads and the tree's two files:
    -- one line each for the batch, which ends with both done
    assert.same({ 100 }, final_percents(text), text)
    local _, batches = text:gsub("files 2/2  12%.0 MiB of 12%.0 MiB  100%%", "")
    assert.same(1, batches, text)
    _, batches = text:gsub("files 2/2  6%.0 MiB of 6%.0 MiB  100%%[^\n]*\n", "")
    assert.same(1, batches, text)
    assert.matches("\27%[Kupload fsf_%w+ a%.bin\r?\n", text)
  end)

  it("a batch's line shows its last figures once, under the last item's line, however its draws fell", function()
    local core = require "fileapi.core"
    local isatty = core.isatty
    core.isatty = function() return true end -- (as on a terminal: the line is drawn)
    local screen = {}
    local term = { write = function(_, ...) for _, s in ipairs({ ... }) do screen[#screen + 1] = s end end,
      flush = function() end }
    local ok, err = pcall(function()
      local out = require("fileapi.cli.output").new({}, term, term)
      local line = out:batch(2, 2000)
      line.progress("a", 500)
      line.done("a", 1000)
      out:result("a", {}, "upload 1 a")
      core.sleep(0.15) -- the next draw is not held back: more than a tenth of a second since the last
      line.done("b", 1000)
      out:result("b", {}, "upload 2 b")
      line.finish()
    end)
    core.isatty = isatty
    assert(ok, err)
    local text = table.concat(screen)
    local _, last = text:gsub("files 2/2  2%.0 KiB of 2%.0 KiB  100%%", "")
    assert.same(1, last, text)
    assert.matches("upload 2 b\n\r[^\n]*files 2/2  2%.0 KiB of 2%.0 KiB  100%%[^\n]*\n$", text)
  end)

  it("cuts labels on UTF-8 boundaries", function()
    local label = require("fileapi.cli").label
    assert.same("Ωmega-€-überweisung ", label("Ωmega-€-überweisung", 20))
    assert.same("€€€", label("€€€€€", 3))
    assert.same("ab   ", label("ab", 5))
  end)
end)
