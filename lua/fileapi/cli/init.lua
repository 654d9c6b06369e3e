-- The `fileapi` command: every call of both APIs from a shell.  bin/fileapi
-- calls main(arg); it returns the exit status.  Parsing (--opt=value, --,
-- generated help) is lua-argparse's.  Ctrl-C (SIGINT) and SIGTERM set the
-- core's interrupt flag: a transfer or wait under way ends within a moment,
-- what completed is printed, then one line, and the status is 130.
local core = require "fileapi.core"
local argparse = require "argparse"
local output = require "fileapi.cli.output"
local options = require "fileapi.http.options"
local group = require "fileapi.group"
local kinds = require "fileapi.kinds"
local mijnklantportaal = require "fileapi.cli.mijnklantportaal"
local filesro_visitor = require "fileapi.cli.filesro_visitor"
local login = require "fileapi.cli.mijnklantportaal_login"
local filesro_owner = require "fileapi.cli.filesro_owner"
local mock = require "fileapi.cli.mock"

local M = {}

M.EXIT = output.EXIT
M.label = output.label

local EPILOG = [[
Commands are named by who runs them: MijnKlantportaal's have no prefix,
a files.ro share link's visitor's start with share-, the files.ro
account owner's with drive-.  The API key comes from MKP_API_KEY; without
one, the tokens `fileapi login` stored are used.  A share's TOKEN may come
from FILESRO_TOKEN instead (so it stays out of ps): then leave it out.  The
owner's token comes from FILESRO_API_TOKEN, else from `fileapi drive-login`.

exit status: ]] .. kinds.exit_summary(78 - #"exit status: "):gsub("\n", "\n  ")

-- ---- the parser -------------------------------------------------------------------

-- The flags that take a number.  A value such as -1 would look like a flag
-- to the parser: main() joins it to its flag first, so that the check below
-- can say what is wrong with it.
local NUMERIC = {}

-- A flag's number: decimal only (no hex, inf or nan); `whole` for counts;
-- at least `least`; `unit` for the message.
local function number(flag, least, whole, unit)
  NUMERIC[flag] = true
  local want = ("%s must be %s%s >= %s"):format(flag, whole and "a whole number" or "a number",
    unit and (" of " .. unit) or "", least)
  return function(v)
    local n = v:match("^%s*%-?%d*%.?%d*[eE]?[-+]?%d*%s*$") and v:find("%d") and tonumber(v)
    if not n or n ~= n or n == math.huge or n == -math.huge or n < least or (whole and n ~= math.floor(n)) then
      return nil, want .. " (got " .. v .. ")"
    end
    return n
  end
end

-- The transport options marked `cli` in their list (fileapi.http.options):
-- connect_timeout is --connect-timeout, with the list's help and default;
-- a number is read as the command line reads numbers, then checked by its
-- row, and the row's words name the flag.
local function transport_flags(cmd)
  for _, o in ipairs(options.CLI) do
    local flag = "--" .. o.name:gsub("_", "-")
    local help = type(o.cli) == "string" and o.cli or o.doc
    if o.default ~= nil then help = ("%s (default %s)"):format(help, tostring(o.default)) end
    local opt = cmd:option(flag, help)
    if o.type == "number" then
      local read = number(flag, o.range and o.range[1] or 0, o.check == options.whole, o.unit)
      opt:convert(function(v)
        local n, why = read(v)
        why = why or n and options.value_error(o, n)
        if why then return nil, (why:gsub("^" .. o.name, flag)) end
        return n
      end)
    end
  end
end

local function common(cmd)
  transport_flags(cmd)
  cmd:flag("--json", "print a JSON object per line as each item finishes")
  cmd:flag("--quiet", "no progress bar, no waiting messages")
  return cmd
end

local function chunk_size() return number("--chunk-size", 1, true, "bytes") end

-- How many items of a multi-item command go at once (as rclone's
-- --transfers); one progress line for them all.
local function parallel(cmd, what)
  local read = number("--parallel", 1, true)
  cmd:option("--parallel", "how many " .. what .. " at once"):default("4"):convert(function(v)
    local n, why = read(v)
    if n and n > group.MAX_PARALLEL then
      return nil, ("--parallel must be a whole number from 1 to %d (got %s)"):format(group.MAX_PARALLEL, v)
    end
    return n, why
  end)
end

-- files.ro stores a file under a name and an extension (both required).
local function filesro_naming(cmd)
  cmd:option("--name", "the file name to send: its name and extension (default: the base name; stdin for -)")
  cmd:option("--extension", "the extension to send, without the dot (default: the name's; a name without one "
    .. "is sent with itself as the extension, as files.ro's web client does)")
end

-- How an upload's -r walks the local tree (both services' upload_tree).
local function tree_flags(cmd)
  cmd:flag("--hidden", "with -r: include hidden files and folders")
  cmd:flag("--follow-symlinks", "with -r: follow symbolic links")
  cmd:flag("--stop-on-error", "with -r: stop at the first failed item")
end

local function share_options(cmd)
  cmd:option("--header", "an extra request header 'Name: value' (a protected share's Cookie)"):count("*")
  return common(cmd)
end

-- The files.ro owner's commands.
local function drive_commands(p)
  local li = common(p:command("drive-login", "sign in to files.ro as the account's owner and store the token"))
  li:option("--email", "the account's e-mail address"):count(1)
  li:option("--password-file", "read the password from this file (default: asked at the terminal, not echoed)")
  common(p:command("drive-logout", "revoke and delete the stored files.ro token"))
  local up = common(p:command("drive-upload", "upload files into your files.ro drive (in chunks)"))
  up:argument("files", "files to upload, or one DIR with -r"):args("+")
  up:flag("-r --recursive", "mirror the folder tree DIR (folders are made by the uploads' paths)")
  up:option("--parent", "into folder UUID (default: home)")
  up:option("--path", "into folders a/b under it (made as needed)")
  filesro_naming(up)
  up:option("--chunk-size", "bytes per request (default 64000000)"):convert(chunk_size())
  up:option("--journal", "with -r: a file that records what is done, so that a rerun skips it")
  tree_flags(up)
  parallel(up, "files")
  local rn = common(p:command("drive-rename", "rename an item (TYPE:ID)"))
  rn:argument("item", "TYPE:ID (file:UUID or folder:UUID)")
  rn:argument("name", "the new NAME")
  local mv = common(p:command("drive-mv", "move items (TYPE:ID)"))
  mv:argument("items", "TYPE:ID..."):args("+")
  mv:option("--to", "into folder UUID (default: home)")
  local rm = common(p:command("drive-rm", "delete items (TYPE:ID): to the trash, or for good with --force"))
  rm:argument("items", "TYPE:ID..."):args("+")
  rm:flag("--force", "delete for good (folders go to the trash first, so their files' space is freed)")
  local rs = common(p:command("drive-restore", "restore items (TYPE:ID) from the trash"))
  rs:argument("items", "TYPE:ID..."):args("+")
  rs:flag("--to-home", "into the home folder (else where they were)")
  local zp = common(p:command("drive-zip", "download items (TYPE:ID) as one ZIP archive"))
  zp:argument("items", "TYPE:ID..."):args("+")
  zp:option("-o --output", "where to: a PATH, or - for standard output"):count(1)
  zp:flag("--force", "replace an existing file")
  local tr = common(p:command("drive-tree", "show your folder tree"))
  tr:option("--sort", "created_at or name")
  tr:option("--direction", "asc or desc")
  local sh = common(p:command("drive-share", "make a share link for an item (TYPE:ID); prints the link"))
  sh:argument("item", "TYPE:ID")
  sh:option("--permission", "editor or visitor (needed for a folder)")
  sh:option("--expires", "the link expires after HOURS (whole hours; default: never)")
    :convert(number("--expires", 1, true, "hours"))
  sh:option("--password-file", "protect the link with the password in this file")
  sh:option("--email", "mail the link to this address"):count("*")
  common(p:command("drive-unshare", "revoke share links")):argument("tokens", "TOKEN..."):args("+")
  local ss = common(p:command("drive-send-share", "mail a share link"))
  ss:argument("token", "TOKEN")
  ss:option("--email", "to this address"):count("1+")
  local tf = common(p:command("drive-team-folders", "list team folders (or a team folder's content)"))
  tf:argument("id", "a team folder's UUID (default: the top level)"):args("?")
  tf:flag("--shared-with-me", "the team folders others shared with you")
  local rq = common(p:command("drive-request", "ask someone for files; prints the request"))
  rq:option("--name", "the request's NAME (its folder's name)")
  rq:option("--email", "notify this address")
  rq:option("--notes", "a message for the uploader")
  rq:option("--folder", "uploads go under folder UUID (default: home)")
end

local function build_parser()
  local p = argparse("fileapi", "Upload, download and share files on MijnKlantportaal and files.ro shares.")
    :epilog(EPILOG)
  p:flag("--version", "print the version and exit"):action(function()
    io.stdout:write(("fileapi %s (libcurl %s)\n"):format(core.version, core.curl_version))
    os.exit(0)
  end)
  -- global: before or after the command's name (curl's -v; with --quiet,
  -- the event lines stay and the progress bar goes, as curl's -s -v)
  p:flag("-v --verbose", "print each request, wait, token refresh and store outage on stderr, one line each")
    :count("*")
  p:command_target("command")
  p:require_command(false)
  local up = common(p:command("upload", "upload files (streamed from disk; - reads standard input)"))
  up:argument("files", "files to upload, or one DIR with -r"):args("+")
  up:flag("-r --recursive", "mirror the folder tree DIR: a directory per folder, an upload per file")
  up:option("--dir", "into directory ID (fsd_...)")
  up:option("--journal", "with -r: a file that records what is done, so that a rerun skips it")
  up:option("--name", "the file name to send (default: the base name)")
  up:option("--mime", "the media type to send (default: by extension)")
  tree_flags(up)
  parallel(up, "files")
  local mk = common(p:command("mkdir", "create a directory"))
  mk:argument("name", "NAME")
  mk:option("--dir", "inside directory ID (fsd_...)")
  common(p:command("get", "show a file or directory")):argument("id", "ID (fsf_... or fsd_...)")
  local dl = common(p:command("download", "download files (default: each to its name, here)"))
  dl:argument("ids", "file IDs (fsf_...)"):args("+")
  dl:option("-o --output", "where to: a PATH, or - for standard output; with several IDs, a DIR")
  dl:flag("--force", "replace an existing file")
  parallel(dl, "files")
  local sh = common(p:command("share", "share files and directories; prints the link"))
  sh:argument("ids", "IDs (fsf_... or fsd_...)"):args("+")
  sh:option("--customer", "with customer cst_ID (default: a public link)")
  common(p:command("shares", "list file shares"))
  local rf = common(p:command("request-files", "ask for files; prints the link"))
  rf:argument("name", "NAME of the request")
  rf:option("--file", "a requested file NAME[:DESCRIPTION] (1 to 10)"):count("1-10")
  rf:option("--customer", "from customer cst_ID (default: a public link)")
  rf:option("--dir", "uploads go to directory ID (fsd_...)")
  common(p:command("requests", "list file requests"))
  common(p:command("request", "show a file request")):argument("id", "ID (frq_...)")
  local li = p:command("login", "sign in as a third-party application (OAuth) and store the tokens")
  li:option("--client-id", "the application's App ID"):count(1)
  li:option("--redirect-uri", "http://127.0.0.1:PORT/PATH, registered for the application; listened on here")
    :count(1)
  li:option("--scope", "scopes, separated by spaces (default: every files, fileshare and filerequest scope)")
  li:option("--client-secret-file", "read the App Secret from this file (default: $MKP_CLIENT_SECRET)")
  li:option("--wait", "seconds to wait for the browser (default 300)"):convert(number("--wait", 0, false, "seconds"))
  p:command("logout", "delete the stored tokens")
  local smk = share_options(p:command("share-mkdir", "create a folder in a files.ro share"))
  smk:argument("args", "[TOKEN] NAME"):args("+")
  smk:option("--parent", "inside folder UUID")
  local sup = share_options(p:command("share-upload", "upload files into a files.ro share"))
  sup:argument("args", "[TOKEN] FILE..."):args("+")
  sup:option("--parent", "into folder UUID")
  sup:option("--path", "into folders a/b (made as needed)")
  filesro_naming(sup)
  sup:option("--chunk-size", "bytes per request (default 64000000)"):convert(chunk_size())
  parallel(sup, "files")
  local srm = share_options(p:command("share-rm", "delete items (TYPE:ID, file or folder) from a share"))
  srm:argument("args", "[TOKEN] TYPE:ID..."):args("+")
  srm:flag("--force", "delete for good (default: to the owner's trash)")
  local smv = share_options(p:command("share-mv", "move items (TYPE:ID) in a share"))
  smv:argument("args", "[TOKEN] TYPE:ID..."):args("+")
  smv:option("--to", "into folder UUID (default: the share's root)")
  drive_commands(p)
  mock.define(p, number)
  return p
end

-- Each command's function, by the command's name.
local RUN = { login = login.login, logout = login.logout, mock = mock.run }
for _, name in ipairs({ "upload", "mkdir", "get", "download", "share", "shares", "request-files", "requests",
    "request" }) do
  RUN[name] = mijnklantportaal[name]
end
for name, fn in pairs({ mkdir = filesro_visitor.share_mkdir, upload = filesro_visitor.share_upload,
    rm = filesro_visitor.share_rm, mv = filesro_visitor.share_mv }) do
  RUN["share-" .. name] = fn
end
for name, fn in pairs({ login = filesro_owner.login, logout = filesro_owner.logout, upload = filesro_owner.upload,
    rename = filesro_owner.rename, mv = filesro_owner.mv, rm = filesro_owner.rm, restore = filesro_owner.restore,
    zip = filesro_owner.zip, tree = filesro_owner.tree, share = filesro_owner.share, unshare = filesro_owner.unshare,
    ["send-share"] = filesro_owner.send_share, ["team-folders"] = filesro_owner.team_folders,
    request = filesro_owner.request }) do
  RUN["drive-" .. name] = fn
end

-- "--retries -1" as "--retries=-1": the parser takes a word that starts
-- with "-" for a flag, and would say "unknown option '-1'".
local function join_negative_numbers(argv)
  local out, i, flags = {}, 1, true
  while i <= #argv do
    local a, nxt = argv[i], argv[i + 1]
    if a == "--" then flags = false end -- the rest are arguments
    if flags and NUMERIC[a] and nxt and nxt:match("^%-[%d.]") then
      out[#out + 1] = a .. "=" .. nxt
      i = i + 2
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  return out
end

-- Which flag set each Lua option a command passes, for the library's
-- messages (see output's in_flag_words); the transport options' flags
-- are every command's.
local FLAGS = {
  upload = { directory = "--dir", filename = "--name", mime = "--mime", journal = "--journal", parallel = "--parallel" },
  mkdir = { directory = "--dir" },
  download = { overwrite = "--force", parallel = "--parallel" },
  share = { customer_id = "--customer" },
  ["request-files"] = { customer_id = "--customer", directory = "--dir" },
  ["share-mkdir"] = { parent_id = "--parent" },
  ["share-upload"] = { parent_id = "--parent", path = "--path", extension = "--extension", chunk_size = "--chunk-size",
    filename = "--name", name = "--name", parallel = "--parallel" },
  ["share-mv"] = { to_id = "--to" },
  ["drive-upload"] = { parent_id = "--parent", path = "--path", extension = "--extension",
    chunk_size = "--chunk-size", filename = "--name", name = "--name", journal = "--journal", parallel = "--parallel" },
  ["drive-mv"] = { to_id = "--to" },
  ["drive-zip"] = { overwrite = "--force" },
  ["drive-tree"] = { sort = "--sort", direction = "--direction" },
  ["drive-share"] = { permission = "--permission", expiration = "--expires" },
  ["drive-request"] = { folder_id = "--folder", name = "--name", email = "--email", notes = "--notes" },
}
local TRANSPORT_FLAGS = { base_url = "--base-url", timeout = "--timeout", connect_timeout = "--connect-timeout",
  idle_timeout = "--idle-timeout", retries = "--retries" }

-- A message that starts with an option's name is about a value: only the
-- options the user set are named by their flag (the rest came from the
-- environment or the library's defaults); a hint (overwrite = true) is
-- always the flag to add.
local function flags_for(opts)
  local out = {}
  for name, flag in pairs(TRANSPORT_FLAGS) do
    if opts[name] ~= nil then out[name] = flag end
  end
  for name, flag in pairs(FLAGS[opts.command] or {}) do
    local key = flag:sub(3):gsub("-", "_")
    if opts[key] ~= nil or flag == "--force" then out[name] = flag end
  end
  return out
end

local function usage_error(io_err, command, message)
  io_err:write("fileapi: ", message, "\n", "(see: fileapi ", command and (command .. " ") or "", "--help)\n")
  return M.EXIT.usage
end

function M.main(argv, io_out, io_err)
  io_out, io_err = io_out or io.stdout, io_err or io.stderr
  local parser = build_parser()
  if #argv == 0 then
    io_err:write(parser:get_help(), "\n")
    return M.EXIT.usage
  end
  local ok, opts = parser:pparse(join_negative_numbers(argv))
  if not ok then return usage_error(io_err, nil, opts) end
  if not opts.command then return usage_error(io_err, nil, "a command is needed") end
  core.catch_interrupts()
  local out = output.new(opts, io_out, io_err)
  out.flags = flags_for(opts)
  local run_ok, status, why = pcall(RUN[opts.command], opts, out)
  if not run_ok then -- a bug, not a user's error: one line still, no traceback
    io_err:write("fileapi: internal error: ", tostring(status), "\n")
    return 1
  end
  -- (Ctrl-C is how the mock's foreground ends: its own status stands)
  if core.interrupted() and opts.command ~= "mock" then
    io_err:write("fileapi: interrupted\n")
    return M.EXIT.interrupted
  end
  if status == nil then return usage_error(io_err, opts.command, why) end
  return status
end

return M
