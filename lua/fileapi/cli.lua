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
  get ID                                show a file or directory
  download ID [-o PATH|-] [--force]     download a file (default: its name, here)
  share ID... [--customer cst_ID]       share items; prints the link
  shares                                list file shares
  request-files NAME --file NAME[:DESCRIPTION]... [--customer cst_ID] [--dir ID]
                                        ask for files; prints the link
  requests                              list file requests
  request ID                            show a file request
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
  get = [[
usage: fileapi get ID [options]

Shows file or directory ID (fsf_... or fsd_...): ID TYPE NAME SIZE MIME;
with --json, the object.
]],
  download = [[
usage: fileapi download ID [-o PATH] [--force] [options]

Downloads file ID (fsf_...) through its download link, to PATH (default: the
file's name in the current folder; - writes to standard output).  The file
appears under its name only when complete; an existing file is replaced
only with --force.  A broken transfer goes on where it stopped.  On a
terminal a progress bar shows on stderr.  Prints: PATH SIZE.
]],
  share = [[
usage: fileapi share ID... [--customer cst_ID] [options]

Shares files and directories with customer cst_ID, or by a public link
without --customer.  Prints the link; with --json, the file share.
]],
  shares = [[
usage: fileapi shares [options]

Lists every file share, one per line: ID CUSTOMER|public ITEMS LINK; with
--json, one JSON object per line.
]],
  ["request-files"] = [[
usage: fileapi request-files NAME --file NAME[:DESCRIPTION]... [--customer cst_ID] [--dir ID] [options]

Asks for files (1 to 10 --file options) from customer cst_ID, or by a public
link without --customer; uploads go to directory ID when given.  Prints the
link; with --json, the file request.
]],
  requests = [[
usage: fileapi requests [options]

Lists every file request, one per line: ID open|completed NAME; with --json,
one JSON object per line.
]],
  request = [[
usage: fileapi request ID [options]

Shows file request ID (frq_...): its name, state and requested files; with
--json, the object.
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
  ["-o"] = "output", ["--output"] = "output", ["--customer"] = "customer", ["--file"] = "file",
  ["--timeout"] = "timeout", ["--connect-timeout"] = "connect_timeout",
  ["--idle-timeout"] = "idle_timeout", ["--retries"] = "retries" }
local FLAGS = { ["--json"] = "json", ["--quiet"] = "quiet", ["--help"] = "help", ["-h"] = "help",
  ["--force"] = "force" }
-- options that may be given more than once
local REPEATED = { file = true }
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
      if REPEATED[VALUED[a]] then
        opts[VALUED[a]] = opts[VALUED[a]] or {}
        table.insert(opts[VALUED[a]], v)
      else
        opts[VALUED[a]] = v
      end
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

local function open_client(opts, what, io_err)
  local client, err = files.new(client_options(opts))
  if not client then return nil, report_error(io_err, what, err) end
  return client
end

local function json_line(io_out, value)
  io_out:write(cjson.encode(value), "\n")
end

local function cmd_get(opts, args, io_out, io_err)
  if #args ~= 1 then return nil, "get needs exactly one ID" end
  local client, status = open_client(opts, "get", io_err)
  if not client then return status end
  local item, err = client:get(args[1])
  client:close()
  if not item then
    if opts.json then json_line(io_out, error_object(err)) end
    return report_error(io_err, args[1], err)
  end
  if opts.json then
    json_line(io_out, item)
  else
    io_out:write(("%s %s %s %s %s\n"):format(item.id, item.type, item.name, item.size or "-", item.mime or "-"))
  end
  return 0
end

-- A writer to standard output, for -o -.
local function stdout_writer(io_out)
  return function(chunk)
    local ok, err = io_out:write(chunk)
    if not ok then return nil, err end
    return true
  end
end

local function cmd_download(opts, args, io_out, io_err)
  if #args ~= 1 then return nil, "download needs exactly one ID" end
  local client, status = open_client(opts, "download", io_err)
  if not client then return status end
  local dest, err = opts.output
  -- not a file id: download refuses it before anything is sent or written
  if not dest and not args[1]:match("^fsf_") then dest = args[1] end
  if not dest then -- the file's own name, in the current folder
    local item
    item, err = client:get(args[1])
    if not item then
      client:close()
      return report_error(io_err, args[1], err)
    end
    dest = item.name:gsub("/", "_")
  end
  local to_stdout = dest == "-"
  local bar = not to_stdout and not opts.quiet and not opts.json and core.isatty(2)
    and progress_bar(dest:match("[^/]*$"), io_err)
  local res
  res, err = client:download(args[1], to_stdout and stdout_writer(io_out) or dest, {
    overwrite = opts.force or false,
    on_progress = bar and function(got, total) bar(got, total or got) end or nil,
  })
  client:close()
  if bar then io_err:write("\n") end
  if not res then
    if opts.json and not to_stdout then json_line(io_out, error_object(err)) end
    return report_error(io_err, args[1], err)
  end
  if to_stdout then return 0 end
  if opts.json then json_line(io_out, res) else io_out:write(("%s %d\n"):format(res.path, res.size)) end
  return 0
end

local function link_of(doc)
  local links = type(doc.links) == "table" and doc.links or {}
  for _, k in ipairs({ "customer", "publicShare", "publicRequest" }) do
    if type(links[k]) == "table" and links[k].href then return links[k].href end
  end
  return "-"
end

local function cmd_share(opts, args, io_out, io_err)
  if #args < 1 then return nil, "share needs at least one ID" end
  local client, status = open_client(opts, "share", io_err)
  if not client then return status end
  local share, err = client:share(args, { customer_id = opts.customer })
  client:close()
  if not share then
    if opts.json then json_line(io_out, error_object(err)) end
    return report_error(io_err, "share", err)
  end
  if opts.json then json_line(io_out, share) else io_out:write(link_of(share), "\n") end
  return 0
end

-- Lists every item of a paginated call, a line (or a JSON object) each.
local function list_command(name, method, line)
  return function(opts, args, io_out, io_err)
    if #args ~= 0 then return nil, name .. " takes no arguments" end
    local client, status = open_client(opts, name, io_err)
    if not client then return status end
    status = 0
    for item, err in client[method](client) do
      if item then
        if opts.json then json_line(io_out, item) else io_out:write(line(item), "\n") end
      else
        if opts.json then json_line(io_out, error_object(err)) end
        status = report_error(io_err, name, err)
      end
    end
    client:close()
    return status
  end
end

local function share_line(s)
  return ("%s %s %d %s"):format(s.id, s.sharedWithCustomerId or "public",
    type(s.sharedContent) == "table" and #s.sharedContent or 0, link_of(s))
end

local function request_line(r)
  return ("%s %s %s"):format(r.id, r.completedAt and "completed" or "open", r.name or "")
end

local function cmd_request_files(opts, args, io_out, io_err)
  if #args ~= 1 then return nil, "request-files needs exactly one NAME" end
  if not opts.file then return nil, "request-files needs at least one --file NAME[:DESCRIPTION]" end
  local wanted = {}
  for i, spec in ipairs(opts.file) do
    local name, description = spec:match("^([^:]*):(.*)$")
    wanted[i] = { name = name or spec, description = description ~= "" and description or nil }
  end
  local client, status = open_client(opts, "request-files", io_err)
  if not client then return status end
  local req, err = client:request_files({ name = args[1], requested_files = wanted,
    customer_id = opts.customer, directory = opts.dir })
  client:close()
  if not req then
    if opts.json then json_line(io_out, error_object(err)) end
    return report_error(io_err, "request-files", err)
  end
  if opts.json then json_line(io_out, req) else io_out:write(link_of(req), "\n") end
  return 0
end

local function cmd_request(opts, args, io_out, io_err)
  if #args ~= 1 then return nil, "request needs exactly one ID" end
  local client, status = open_client(opts, "request", io_err)
  if not client then return status end
  local req, err = client:file_request(args[1])
  client:close()
  if not req then
    if opts.json then json_line(io_out, error_object(err)) end
    return report_error(io_err, args[1], err)
  end
  if opts.json then
    json_line(io_out, req)
    return 0
  end
  io_out:write(request_line(req), "\n", "link: ", link_of(req), "\n")
  for _, f in ipairs(type(req.requestedFiles) == "table" and req.requestedFiles or {}) do
    io_out:write(("  %s %s%s %s\n"):format(f.id or "-", f.name or "", f.required and " (required)" or "",
      f.uploadedFileId or "not uploaded"))
  end
  return 0
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
  get = cmd_get, download = cmd_download, share = cmd_share, request = cmd_request,
  shares = list_command("shares", "file_shares", share_line),
  requests = list_command("requests", "file_requests", request_line),
  ["request-files"] = cmd_request_files,
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
