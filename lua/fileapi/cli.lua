-- The `fileapi` command: upload files, create directories and share folders
-- from a shell.  bin/fileapi calls main(arg); it returns the exit status.
local core = require "fileapi.core"
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local cjson = require("cjson").new()

local M = {}

-- Exit statuses by error kind; documented in `fileapi --help` and the README.
M.EXIT = {
  ok = 0, usage = 2, invalid_argument = 2, io = 3, network = 4, timeout = 4, tls = 4,
  unauthorized = 5, forbidden = 5, not_found = 6, validation = 7, storage_full = 8,
  rate_limited = 9, server = 10, http = 10, protocol = 10, aborted = 11, callback = 11,
}

local USAGE = {
  main = [[
usage: fileapi COMMAND [options] ARGS

commands:
  upload FILE... [--dir ID]             upload files to MijnKlantportaal
  mkdir NAME [--dir ID]                 create a directory on MijnKlantportaal
  share-mkdir TOKEN NAME [--parent ID]  create a folder in a files.ro share
  share-upload TOKEN FILE... [--parent UUID] [--path a/b] [--chunk-size BYTES]
                                        upload files into a files.ro share
  share-rm TOKEN TYPE:ID... [--force]   delete files or folders from a share
  share-mv TOKEN TYPE:ID... [--to UUID] move files or folders (no --to: to the root)

options for every command:
  --base-url URL        API root (default $MKP_BASE_URL, $FILESRO_BASE_URL, or the public API)
  --timeout S           seconds for a whole attempt
  --connect-timeout S   seconds to connect (default 10)
  --idle-timeout S      abort when no byte moves for S seconds (default 60)
  --retries N           extra attempts where safe (default 2)
  --json                print results as JSON
  --quiet               no progress bar
  --help                help for a command: fileapi COMMAND --help

The API key comes from MKP_API_KEY.  A share's TOKEN may come from
FILESRO_TOKEN instead (so it stays out of ps): then leave it out of the
arguments.

exit status: 0 ok, 2 usage or invalid argument, 3 file I/O, 4 network, timeout or TLS,
5 unauthorized or forbidden, 6 not found, 7 validation, 8 storage full,
9 rate limited, 10 server or protocol error, 11 aborted
]],
  upload = [[
usage: fileapi upload FILE... [--dir ID] [options]

Uploads each FILE (streamed from disk) to MijnKlantportaal, into directory ID
(fsd_...) when given.  On a terminal a progress bar shows percentage, rate and
ETA on stderr.  Prints one line per file: ID NAME SIZE MIME; with --json, a
JSON array with one result or error object per file.  Stops at nothing: every
file is tried, and the exit status is that of the last failure.
]],
  mkdir = [[
usage: fileapi mkdir NAME [--dir ID] [options]

Creates directory NAME on MijnKlantportaal, inside directory ID when given.
Prints: ID NAME; with --json, the directory object.
]],
  ["share-upload"] = [[
usage: fileapi share-upload TOKEN FILE... [--parent UUID] [--path a/b] [--chunk-size BYTES] [options]

Uploads each FILE (streamed from disk) into the files.ro share TOKEN: into
folder UUID, or into the folders a/b (created as needed).  Files larger than
--chunk-size (default 64000000 bytes) go in chunks, one at a time; a chunk
the server may have received is never sent again.  Prints one line per
file: ID NAME EXTENSION; with --json, a JSON array of results or errors.
TOKEN may come from FILESRO_TOKEN instead.
]],
  ["share-rm"] = [[
usage: fileapi share-rm TOKEN TYPE:ID... [--force] [options]

Deletes items from the files.ro share TOKEN; TYPE is file or folder, ID a
UUID.  Without --force they go to the owner's trash.  TOKEN may come from
FILESRO_TOKEN instead.
]],
  ["share-mv"] = [[
usage: fileapi share-mv TOKEN TYPE:ID... [--to UUID] [options]

Moves items of the files.ro share TOKEN into folder UUID, or to the share's
root without --to.  TOKEN may come from FILESRO_TOKEN instead.
]],
  ["share-mkdir"] = [[
usage: fileapi share-mkdir TOKEN NAME [--parent UUID] [options]

Creates folder NAME in the files.ro share TOKEN, inside folder UUID when given.
Prints: ID NAME; with --json, the folder object.
]],
}

local VALUED = { ["--dir"] = "dir", ["--parent"] = "parent", ["--base-url"] = "base_url",
  ["--path"] = "path", ["--chunk-size"] = "chunk_size", ["--to"] = "to",
  ["--timeout"] = "timeout", ["--connect-timeout"] = "connect_timeout",
  ["--idle-timeout"] = "idle_timeout", ["--retries"] = "retries" }
local FLAGS = { ["--json"] = "json", ["--quiet"] = "quiet", ["--help"] = "help", ["-h"] = "help",
  ["--force"] = "force" }
local NUMERIC = { timeout = true, connect_timeout = true, idle_timeout = true, retries = true, chunk_size = true }

local function parse(args)
  local opts, positional = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if VALUED[a] then
      local v = args[i + 1]
      if v == nil then return nil, a .. " needs a value" end
      if NUMERIC[VALUED[a]] then
        v = tonumber(v)
        if not v then return nil, a .. " needs a number" end
      end
      opts[VALUED[a]] = v
      i = i + 2
    elseif FLAGS[a] then
      opts[FLAGS[a]] = true
      i = i + 1
    elseif a:sub(1, 2) == "--" then
      return nil, "unknown option " .. a
    else
      positional[#positional + 1] = a
      i = i + 1
    end
  end
  return opts, positional
end

local function client_options(opts)
  return { base_url = opts.base_url, timeout = opts.timeout, connect_timeout = opts.connect_timeout,
    idle_timeout = opts.idle_timeout, retries = opts.retries }
end

local function human_bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local u = 1
  while n >= 1024 and u < #units do n, u = n / 1024, u + 1 end
  return u == 1 and ("%d %s"):format(n, units[u]) or ("%.1f %s"):format(n, units[u])
end

local function clock(seconds)
  if seconds ~= seconds or seconds == math.huge then return "--:--" end
  seconds = math.floor(seconds + 0.5)
  return ("%d:%02d"):format(math.floor(seconds / 60), seconds % 60)
end

-- A progress bar on stderr, redrawn at most ten times a second.
local function progress_bar(label, out)
  local started, last_draw = core.now(), 0
  local width = 30
  local function draw(sent, total, final)
    local now = core.now()
    if not final and now - last_draw < 0.1 then return end
    last_draw = now
    local frac = total > 0 and sent / total or 1
    local filled = math.floor(frac * width)
    local elapsed = math.max(now - started, 1e-6)
    local rate = sent / elapsed
    local eta = rate > 0 and (total - sent) / rate or math.huge
    out:write(("\r%-20.20s [%s%s] %3d%%  %10s/s  ETA %s "):format(label, ("#"):rep(filled),
      ("-"):rep(width - filled), math.floor(frac * 100), human_bytes(rate), clock(eta)))
    if final then out:write("\n") end
    out:flush()
  end
  return draw
end

local function error_object(err)
  return { error = { kind = err.kind, status = err.status, message = err.message, fields = err.fields,
    retryable = err.retryable, attempts = err.attempts } }
end

local function report_error(io_err, what, err)
  io_err:write(("fileapi: %s: %s\n"):format(what, (tostring(err):gsub("^fileapi: ", ""))))
  return M.EXIT[err.kind] or 1
end

local function cmd_upload(opts, args, io_out, io_err)
  if #args == 0 then return nil, "upload needs at least one FILE" end
  local client, err = files.new(client_options(opts))
  if not client then return report_error(io_err, "upload", err) end
  local show_bar = not opts.quiet and not opts.json and core.isatty(2)
  local status, results = 0, {}
  for _, path in ipairs(args) do
    local bar = show_bar and progress_bar(path:match("[^/]*$"), io_err)
    local item
    item, err = client:upload(path, { directory = opts.dir, on_progress = bar or nil })
    if bar and item then bar(item.size or 0, item.size or 0, true) elseif bar then io_err:write("\n") end
    if item then
      results[#results + 1] = item
      if not opts.json then io_out:write(("%s %s %d %s\n"):format(item.id, item.name, item.size or 0, item.mime or "-")) end
    else
      results[#results + 1] = error_object(err)
      status = report_error(io_err, path, err)
    end
  end
  client:close()
  if opts.json then io_out:write(cjson.encode(results), "\n") end
  return status
end

-- One result or error, as text or JSON; returns the exit status.
local function finish(opts, io_out, io_err, what, result, err)
  if not result then
    if opts.json then io_out:write(cjson.encode(error_object(err)), "\n") end
    return report_error(io_err, what, err)
  end
  if opts.json then
    io_out:write(cjson.encode(result), "\n")
  else
    io_out:write(("%s %s\n"):format(result.id, result.name))
  end
  return 0
end

local function cmd_mkdir(opts, args, io_out, io_err)
  if #args ~= 1 then return nil, "mkdir needs exactly one NAME" end
  local client, err = files.new(client_options(opts))
  if not client then return report_error(io_err, "mkdir", err) end
  local dir
  dir, err = client:mkdir(args[1], { directory = opts.dir })
  client:close()
  return finish(opts, io_out, io_err, "mkdir", dir, err)
end

local function cmd_share_mkdir(opts, args, io_out, io_err)
  local env_token = os.getenv("FILESRO_TOKEN")
  if env_token == "" then env_token = nil end
  if #args ~= (env_token and 1 or 2) then return nil, "share-mkdir needs TOKEN (or FILESRO_TOKEN) and NAME" end
  local copts = client_options(opts)
  copts.base_url = opts.base_url or os.getenv("FILESRO_BASE_URL")
  copts.parent_id = opts.parent
  local folder, err = shares.mkdir(env_token or args[1], args[#args], copts)
  return finish(opts, io_out, io_err, "share-mkdir", folder, err)
end

-- The share token: FILESRO_TOKEN when set (then not among the arguments),
-- else the first argument.
local function share_token(args)
  local token = os.getenv("FILESRO_TOKEN")
  if token and token ~= "" then return token, 1 end
  return args[1], 2
end

local function open_share(opts, token)
  local copts = client_options(opts)
  copts.base_url = opts.base_url or os.getenv("FILESRO_BASE_URL")
  copts.token = token
  return shares.new(copts)
end

local function cmd_share_upload(opts, args, io_out, io_err)
  local token, first = share_token(args)
  if not token or #args < first then return nil, "share-upload needs TOKEN (or FILESRO_TOKEN) and at least one FILE" end
  local share, err = open_share(opts, token)
  if not share then return report_error(io_err, "share-upload", err) end
  local show_bar = not opts.quiet and not opts.json and core.isatty(2)
  local status, results = 0, {}
  for i = first, #args do
    local path = args[i]
    local bar = show_bar and progress_bar(path:match("[^/]*$"), io_err)
    local file
    file, err = share:upload(path, { parent_id = opts.parent, path = opts.path, chunk_size = opts.chunk_size,
      on_progress = bar or nil })
    if bar then io_err:write("\n") end
    if file then
      results[#results + 1] = file
      if not opts.json then io_out:write(("%s %s %s\n"):format(file.id, file.name, file.mimetype or "-")) end
    else
      results[#results + 1] = error_object(err)
      status = report_error(io_err, path, err)
    end
  end
  share:close()
  if opts.json then io_out:write(cjson.encode(results), "\n") end
  return status
end

local function parse_items(args, first)
  local items = {}
  for i = first, #args do
    local kind, id = args[i]:match("^(%a+):(.+)$")
    if not kind then return nil, "items are TYPE:ID, as file:UUID or folder:UUID (got " .. args[i] .. ")" end
    items[#items + 1] = { type = kind, id = id }
  end
  if #items == 0 then return nil, "at least one TYPE:ID is needed" end
  return items
end

local function share_items_command(name, call)
  return function(opts, args, io_out, io_err)
    local token, first = share_token(args)
    if not token then return nil, name .. " needs TOKEN (or FILESRO_TOKEN)" end
    local items, why = parse_items(args, first)
    if not items then return nil, why end
    local share, err = open_share(opts, token)
    if not share then return report_error(io_err, name, err) end
    local ok
    ok, err = call(share, items, opts)
    share:close()
    if not ok then
      if opts.json then io_out:write(cjson.encode(error_object(err)), "\n") end
      return report_error(io_err, name, err)
    end
    if opts.json then
      io_out:write(cjson.encode({ ok = true, items = items }), "\n")
    else
      io_out:write(("%s: %d item%s\n"):format(name == "share-rm" and "deleted" or "moved", #items, #items == 1 and "" or "s"))
    end
    return 0
  end
end

local COMMANDS = { upload = cmd_upload, mkdir = cmd_mkdir, ["share-mkdir"] = cmd_share_mkdir,
  ["share-upload"] = cmd_share_upload,
  ["share-rm"] = share_items_command("share-rm", function(share, items, opts)
    return share:delete(items, { force = opts.force or false })
  end),
  ["share-mv"] = share_items_command("share-mv", function(share, items, opts)
    return share:move(items, { to_id = opts.to })
  end),
}

function M.main(argv, io_out, io_err)
  io_out, io_err = io_out or io.stdout, io_err or io.stderr
  local command = argv[1]
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  if command == nil or command == "--help" or command == "-h" or command == "help" then
    io_out:write(USAGE.main)
    return command == nil and M.EXIT.usage or 0
  end
  local run = COMMANDS[command]
  if not run then
    io_err:write("fileapi: unknown command '", command, "'\n", USAGE.main)
    return M.EXIT.usage
  end
  local opts, args = parse(rest)
  if not opts then
    io_err:write("fileapi: ", args, "\n", USAGE[command])
    return M.EXIT.usage
  end
  if opts.help then
    io_out:write(USAGE[command])
    return 0
  end
  local status, usage_error = run(opts, args, io_out, io_err)
  if status == nil then
    io_err:write("fileapi: ", usage_error, "\n", USAGE[command])
    return M.EXIT.usage
  end
  return status
end

return M
