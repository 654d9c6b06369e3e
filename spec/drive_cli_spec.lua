-- The files.ro owner's commands (drive-*), run as a user would, against the
-- mock: sign-in from a password file (the token stored 0600, never
-- printed), uploads of files and trees with a journal, zip to a path and to
-- standard output, share links, and the rest of the owner's calls.
local helper = require "helper"
local cjson = require "cjson"

local ELSEWHERE = "22222222-2222-4222-8222-222222222222"

describe("fileapi drive-* commands #children", function()
  local mock, env, xdg

  setup(function()
    mock = helper.start_mock()
    env = helper.mock_env(mock)
    xdg = helper.tmpname(".xdg")
  end)
  teardown(function()
    os.execute("rm -rf " .. helper.sh_quote(xdg))
    mock:stop()
  end)
  before_each(function() mock:reset() end)

  local function fileapi(args, extra_env, cwd) return helper.run_fileapi(args, env, extra_env, cwd) end

  it("drive-login stores the token 0600 without printing it; commands use it; drive-logout revokes it", function()
    local pw = helper.tmpname(".pw")
    local f = io.open(pw, "w")
    f:write(helper.DRIVE_PASSWORD, "\n")
    f:close()
    local stored = { XDG_CONFIG_HOME = xdg, FILESRO_API_TOKEN = "" }
    local code, out = fileapi("drive-login --email " .. helper.DRIVE_EMAIL .. " --password-file " .. pw, stored)
    assert.same(0, code, out)
    assert.is_falsy(out:find(helper.DRIVE_PASSWORD, 1, true))
    local doc = cjson.decode(io.open(xdg .. "/fileapi/drive.json"):read("*a"))
    assert.matches("^%d+|%w+$", doc.token)
    assert.is_falsy(out:find(doc.token, 1, true))
    local p = io.popen("stat -c %a " .. helper.sh_quote(xdg .. "/fileapi/drive.json"))
    assert.same("600", p:read("*l"))
    p:close()
    code, out = fileapi("drive-tree", stored)
    assert.same(0, code, out)
    assert.matches("Files:", out)
    assert.same("Bearer " .. doc.token, mock:last_request().headers.authorization)
    code, out = fileapi("drive-logout", stored)
    assert.same(0, code, out)
    assert.matches("token revoked", out)
    assert.is_nil(io.open(xdg .. "/fileapi/drive.json"))
    code, out = fileapi("drive-tree", stored)
    assert.same(5, code, out)
    assert.matches("drive%-login", out)
    -- a wrong password: exit 5, and it is nowhere in the output
    f = io.open(pw, "w")
    f:write("wrong-but-secret-99\n")
    f:close()
    code, out = fileapi("drive-login --email " .. helper.DRIVE_EMAIL .. " --password-file " .. pw, stored)
    assert.same(5, code, out)
    assert.is_falsy(out:find("wrong-but-secret-99", 1, true))
    os.remove(pw)
  end)

  it("drive-upload: files, then -r a tree with a journal that a rerun skips", function()
    local dir = helper.tmpname(".tree")
    os.execute("mkdir -p " .. dir .. "/docs/2026 " .. dir .. "/empty")
    helper.write_file(dir .. "/top.txt", 10)
    helper.write_file(dir .. "/docs/2026/report.pdf", 3000)
    local code, out = fileapi("drive-upload " .. dir .. "/top.txt --parent " .. ELSEWHERE)
    assert.same(0, code, out)
    assert.matches("^%x+%-[%x-]+ top ", out)
    local journal = dir .. ".journal"
    code, out = fileapi("drive-upload -r " .. dir .. " --journal " .. journal .. " --parent " .. ELSEWHERE)
    assert.same(0, code, out)
    assert.matches("upload %S+ docs/2026/report.pdf", out)
    assert.matches("files 2, bytes 3010", out)
    local folders = {}
    for _, r in ipairs(mock:requests()) do
      for _, part in ipairs(r.parts or {}) do if part.name == "path" then folders[#folders + 1] = part.data end end
    end
    assert.same({ "/docs/2026/report.pdf" }, folders)
    code, out = fileapi("drive-upload -r " .. dir .. " --journal " .. journal .. " --parent " .. ELSEWHERE)
    assert.same(0, code, out)
    assert.matches("files 0, bytes 0, skipped 2", out)
    os.execute("rm -rf " .. dir .. " " .. journal)
  end)

  -- What the mock stored under each name: { extension, sha256 }.
  local function stored_by_name()
    local out = {}
    for _, f in ipairs(mock:files()) do out[f.name] = { f.extension, f.sha256 } end
    return out
  end

  it("drive-upload takes files without an extension: in a tree (-r), one FILE, standard input", function()
    local q = helper.sh_quote
    local dir = helper.tmpname(".tree")
    os.execute("mkdir -p " .. q(dir .. "/src"))
    local make = helper.write_file(dir .. "/Makefile", 700)
    local main = helper.write_file(dir .. "/src/main.c", 300)
    local license = helper.write_file(dir .. "/src/LICENSE", 200)
    local code, out = fileapi("drive-upload -r " .. q(dir))
    assert.same(0, code, out)
    assert.matches("files 3, bytes 1200, skipped 0, failed 0", out)
    local s = stored_by_name()
    assert.same({ "Makefile", helper.sha256(make) }, s.Makefile)
    assert.same({ "LICENSE", helper.sha256(license) }, s.LICENSE)
    assert.same({ "c", helper.sha256(main) }, s.main)
    mock:reset()
    code, out = fileapi("drive-upload " .. q(make) .. " --extension mk")
    assert.same(0, code, out)
    code, out = fileapi("drive-upload - --name build.log < " .. q(make))
    assert.same(0, code, out)
    s = stored_by_name()
    assert.same({ "mk", helper.sha256(make) }, s.Makefile)
    assert.same({ "log", helper.sha256(make) }, s.build)
    code, out = fileapi("drive-upload -r " .. q(dir) .. " --extension mk")
    assert.same(2, code, out)
    assert.matches("go with FILEs, not %-r", out)
    os.execute("rm -rf " .. q(dir))
  end)

  it("drive.new() takes the token drive-login stored, when FILESRO_API_TOKEN is not set", function()
    local home = helper.tmpname(".xdg")
    local pw = helper.tmpname(".pw")
    local f = io.open(pw, "w")
    f:write(helper.DRIVE_PASSWORD, "\n")
    f:close()
    local stored = { XDG_CONFIG_HOME = home, FILESRO_API_TOKEN = "" }
    local script = helper.sh_quote([[
      local d, err = require("fileapi.drive").new()
      if not d then io.write(err.kind, ": ", err.message) os.exit(1) end
      io.write(assert(d:me()).email)
    ]])
    local code, out = helper.run_lua("-e " .. script, { XDG_CONFIG_HOME = home, FILESRO_API_TOKEN = "",
      FILESRO_BASE_URL = mock.base })
    assert.same(1, code, out)
    assert.matches("invalid_argument: token is required: .*fileapi drive%-login", out)
    code, out = fileapi("drive-login --email " .. helper.DRIVE_EMAIL .. " --password-file " .. pw, stored)
    assert.same(0, code, out)
    code, out = helper.run_lua("-e " .. script, { XDG_CONFIG_HOME = home, FILESRO_API_TOKEN = "",
      FILESRO_BASE_URL = mock.base })
    assert.same(0, code, out)
    assert.same(helper.DRIVE_EMAIL, out)
    local token = cjson.decode(io.open(home .. "/fileapi/drive.json"):read("*a")).token
    assert.same("Bearer " .. token, mock:last_request().headers.authorization)
    os.remove(pw)
    os.execute("rm -rf " .. helper.sh_quote(home))
  end)

  it("names its own flags in errors", function()
    local zip = helper.write_file(helper.tmpname(".zip"), 10)
    local cases = {
      { "drive-zip folder:" .. ELSEWHERE .. " -o " .. zip, 3, "pass --force to replace it" },
      { "drive-share folder:" .. ELSEWHERE .. " --permission editor --expires 0", 2,
        "--expires must be a whole number of hours >= 1 (got 0)" },
      { "drive-share folder:" .. ELSEWHERE .. " --permission editor --expires 1000000000", 2,
        "--expires must be a whole number of hours >= 1" },
      { "drive-mv file:" .. ELSEWHERE .. " --to nope", 2, "--to must be a UUID" },
      { "drive-upload " .. zip .. " --parent nope", 2, "--parent must be a UUID" },
      { "drive-tree --sort size", 2, "--sort must be" },
      { "drive-request --folder nope", 2, "--folder must be" },
    }
    for _, case in ipairs(cases) do
      local code, out = fileapi(case[1])
      assert.same(case[2], code, case[1] .. ": " .. out)
      assert.matches(case[3], out, 1, true)
      for _, lua_name in ipairs({ "overwrite", "expiration", "to_id", "parent_id", ": sort", "folder_id" }) do
        assert.is_nil(out:find(lua_name, 1, true), case[1] .. ": " .. out)
      end
    end
    os.remove(zip)
  end)

  it("drive-share with a password file and mails; drive-unshare; drive-send-share", function()
    local pw = helper.tmpname(".pw")
    local f = io.open(pw, "w")
    f:write("link-secret-123\n")
    f:close()
    local code, out = fileapi("drive-share folder:" .. ELSEWHERE .. " --permission editor --expires 48 --password-file "
      .. pw .. " --email a@example.com --email b@example.com")
    assert.same(0, code, out)
    local token = out:match("^https://files%.ro/share/(%w+) editor protected expires in 48 h\n$")
    assert.truthy(token, out)
    local sent = cjson.decode(mock:last_request().body)
    assert.same("link-secret-123", sent.password)
    assert.same({ "a@example.com", "b@example.com" }, sent.emails)
    code, out = fileapi("drive-send-share " .. token .. " --email c@example.com")
    assert.same(0, code, out)
    code, out = fileapi("drive-unshare " .. token)
    assert.same(0, code, out)
    assert.same({}, mock:drive().shares)
    code, out = fileapi("drive-share folder:" .. ELSEWHERE .. " --expires 1.5 --permission editor")
    assert.same(2, code, out)
    os.remove(pw)
  end)

  it("drive-zip -o PATH and -o -, drive-rm --force, drive-restore, drive-mv, drive-rename", function()
    local a = helper.write_file(helper.tmpname(".txt"), 100)
    local code, out = fileapi("drive-upload " .. a .. " --parent " .. ELSEWHERE .. " --json")
    assert.same(0, code, out)
    local id = cjson.decode(out).result.id
    local zip = helper.tmpname(".zip")
    code, out = fileapi("drive-zip folder:" .. ELSEWHERE .. " -o " .. zip)
    assert.same(0, code, out)
    local size = tonumber(out:match(" (%d+)\n$"))
    assert.same(size, io.open(zip):seek("end"))
    code, out = fileapi("drive-zip folder:" .. ELSEWHERE .. " -o " .. zip)
    assert.same(3, code, out) -- exists: --force to replace
    code, out = fileapi("drive-zip file:" .. id .. " -o -")
    assert.same(0, code)
    assert.same("PK\3\4", out:sub(1, 4))
    for _, cmd in ipairs({ "drive-rename file:" .. id .. " renamed", "drive-mv file:" .. id,
        "drive-rm file:" .. id, "drive-restore file:" .. id .. " --to-home", "drive-rm --force file:" .. id }) do
      code, out = fileapi(cmd)
      assert.same(0, code, cmd .. ": " .. out)
    end
    code, out = fileapi("drive-rename file:" .. id .. " again")
    assert.same(6, code, out)
    code, out = fileapi("drive-mv file:nope")
    assert.same(2, code, out)
    for _, p in ipairs({ a, zip }) do os.remove(p) end
  end)

  it("drive-team-folders lists every page; drive-request prints the request", function()
    mock:drive_seed({ team_folders = 55 })
    local code, out = fileapi("drive-team-folders")
    assert.same(0, code, out)
    local n = 0
    for _ in out:gmatch("[^\n]+ folder Team %d+\n") do n = n + 1 end
    assert.same(55, n)
    code, out = fileapi("drive-request --name Audit --email client@example.com --json")
    assert.same(0, code, out)
    assert.same("Audit", cjson.decode(out).name)
  end)

  it("help names every drive command, and today's commands still work", function()
    local code, out = fileapi("--help")
    assert.same(0, code, out)
    for _, cmd in ipairs({ "drive-login", "drive-upload", "drive-rename", "drive-mv", "drive-rm", "drive-restore",
        "drive-zip", "drive-tree", "drive-share", "drive-unshare", "drive-send-share", "drive-team-folders",
        "drive-request", "share-upload", "upload", "login" }) do
      assert.truthy(out:find(cmd, 1, true), cmd)
    end
  end)
end)
