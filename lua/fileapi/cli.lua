-- The `fileapi` command: every call of both APIs from a shell.  bin/fileapi
-- calls main(arg); it returns the exit status.  Parsing (--opt=value, --,
-- generated help) is lua-argparse's.  Ctrl-C (SIGINT) and SIGTERM set the
-- core's interrupt flag: a transfer or wait under way ends within a moment,
-- what completed is printed, then one line, and the status is 130.
local core = require "fileapi.core"
local files = require "fileapi.files"
local shares = require "fileapi.shares"
local argparse = require "argparse"
local cjson = require("cjson").new()

local M = {}

-- Exit statuses by error kind; documented in `fileapi --help` and the README.
M.EXIT = {
  ok = 0, usage = 2, invalid_argument = 2, io = 3, network = 4, timeout = 4, tls = 4,
  unauthorized = 5, forbidden = 5, not_found = 6, validation = 7, storage_full = 8,
  rate_limited = 9, server = 10, http = 10, protocol = 10, aborted = 11, callback = 11,
  interrupted = 130,
}

local EPILOG = [[
The API key comes from MKP_API_KEY.  A share's TOKEN may come from
FILESRO_TOKEN instead (so it stays out of ps): then leave it out.

exit status: 0 ok, 2 usage or invalid argument, 3 file I/O, 4 network, timeout or TLS,
5 unauthorized or forbidden, 6 not found, 7 validation, 8 storage full,
9 rate limited, 10 server or protocol error, 11 aborted, 130 interrupted]]

-- ---- output -------------------------------------------------------------------

local Out = {}
Out.__index = Out

local function new_out(opts, io_out, io_err)
  return setmetatable({ opts = opts, out = io_out, err = io_err, status = 0 }, Out)
end

function Out:json(value)
  self.out:write(cjson.encode(value), "\n")
  self.out:flush()
end

function Out:line(text)
  self.out:write(text, "\n")
  self.out:flush()
end

local function error_object(err)
  return { kind = err.kind, status = err.status, message = err.message, fields = err.fields,
    retryable = err.retryable, attempts = err.attempts }
end

-- A failure for `what` (a path, an id or a command): one line on stderr that
-- names it once, a JSON line with --json; returns the exit status.
function Out:fail(what, err)
  if core.interrupted() then return M.EXIT.interrupted end
  if self.opts.json then self:json({ path = what, error = error_object(err) }) end
  local message = (tostring(err):gsub("^fileapi: ", ""))
  if what and not message:find(what, 1, true) then message = what .. ": " .. message end
  self.err:write("fileapi: ", message, "\n")
  self.status = M.EXIT[err.kind] or 1
  return self.status
end

-- A result: a JSON line with --json, else the given text.
function Out:result(path, value, text)
  if self.opts.json then
    self:json({ path = path, result = value })
  elseif text then
    self:line(text)
  end
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

-- The first `width` characters of a UTF-8 label, padded: never a cut
-- inside a character.
function M.label(text, width)
  local out, n = {}, 0
  for ch in text:gmatch("[%z\1-\127\194-\244][\128-\191]*") do
    if n == width then break end
    out[#out + 1] = ch
    n = n + 1
  end
  return table.concat(out) .. (" "):rep(width - n)
end

-- A progress bar on stderr, redrawn at most ten times a second.
local function progress_bar(label, out)
  local started, last_draw = core.now(), 0
  local width = 30
  label = M.label(label, 20)
  return function(sent, total, final)
    local now = core.now()
    if not final and now - last_draw < 0.1 then return end
    last_draw = now
    total = total or sent
    local frac = total > 0 and math.min(sent / total, 1) or 1
    local filled = math.floor(frac * width)
    local rate = sent / math.max(now - started, 1e-6)
    local eta = rate > 0 and (total - sent) / rate or math.huge
    out:write(("\r%s [%s%s] %3d%%  %10s/s  ETA %s "):format(label, ("#"):rep(filled),
      ("-"):rep(width - filled), math.floor(frac * 100), human_bytes(rate), clock(eta)))
    if final then out:write("\n") end
    out:flush()
  end
end

local function show_bar(opts)
  return not opts.quiet and not opts.json and core.isatty(2)
end

-- ---- clients ----------------------------------------------------------------------

local function client_options(opts, out)
  return { base_url = opts.base_url, timeout = opts.timeout, connect_timeout = opts.connect_timeout,
    idle_timeout = opts.idle_timeout, retries = opts.retries,
    on_wait = not opts.quiet and function(seconds)
      out.err:write(("fileapi: waiting %.1f s (rate limit)\n"):format(seconds))
    end or nil }
end

local function open_client(opts, out, what)
  local client, err = files.new(client_options(opts, out))
  if not client then return nil, out:fail(what, err) end
  return client
end

-- --header 'Name: value' (repeatable) for a share's requests.
local function parse_headers(list)
  local headers = {}
  for _, h in ipairs(list or {}) do
    local name, value = h:match("^([^:]+):%s*(.*)$")
    if not name then return nil, "--header wants 'Name: value', got " .. h end
    headers[name] = value
  end
  return headers
end

-- The share token: FILESRO_TOKEN when set (then not among the arguments),
-- else the first argument.
local function take_token(args)
  local token = os.getenv("FILESRO_TOKEN")
  if token and token ~= "" then return token end
  return table.remove(args, 1)
end

local function open_share(opts, out, token, what)
  local copts = client_options(opts, out)
  copts.base_url = opts.base_url or os.getenv("FILESRO_BASE_URL")
  copts.token = token
  local headers, why = parse_headers(opts.header)
  if not headers then return nil, nil, why end
  copts.headers = headers
  local share, err = shares.new(copts)
  if not share then return nil, out:fail(what, err) end
  return share
end

-- ---- standard input ----------------------------------------------------------------

-- "-" as a file: standard input.  A redirected file is read in place; a
-- pipe's length is unknown and the API wants it up front, so it is spooled
-- to a temporary file first, as stderr says.
-- A pipe has no size, and the upload needs one up front: standard input is
-- spooled to a private file under $TMPDIR first.  Every write and the close
-- are checked, so a full disk fails the command (exit 3) instead of
-- uploading a truncated file; the spool is removed either way.
local function spool_stdin(out)
  local dir = os.getenv("TMPDIR")
  if not dir or dir == "" then dir = "/tmp" end
  local path, terr = core.temp_file(dir, "fileapi-stdin")
  if not path then return nil, terr end
  local function failed(what, msg)
    os.remove(path)
    return nil, core.error({ kind = "io", message = ("%s the spool in %s: %s"):format(what, dir, tostring(msg)),
      retryable = false, attempts = 0 })
  end
  local f, oerr = io.open(path, "wb")
  if not f then return failed("cannot open", oerr) end
  out.err:write("fileapi: reading standard input into a temporary file first (the upload needs its size)\n")
  while true do
    local block = io.stdin:read(1048576)
    if not block then break end
    local ok, werr = f:write(block)
    if not ok then
      f:close()
      return failed("cannot write", werr)
    end
  end
  local flushed, ferr = f:flush()
  local closed, cerr = f:close()
  if not (flushed and closed) then return failed("cannot write", ferr or cerr) end
  return path
end

local function stdin_source(opts, out)
  local st = core.stat("/dev/stdin", true)
  local name = opts.name or "stdin"
  if st and st.type == "file" then return { path = "/dev/stdin" }, name end
  local spool, err = spool_stdin(out)
  if not spool then return nil, err end
  return { path = spool }, name, spool
end

-- ---- commands ---------------------------------------------------------------------

local C = {}

local function upload_one(client, opts, out, path)
  local source, name, spool = path, opts.name, nil
  if path == "-" then
    source, name, spool = stdin_source(opts, out)
    if not source then return out:fail(path, name) end
  end
  local bar = show_bar(opts) and progress_bar(name or path:match("[^/]*$"), out.err)
  local item, err = client:upload(source, { directory = opts.dir, filename = name, mime = opts.mime,
    on_progress = bar or nil })
  if spool then os.remove(spool) end
  if bar and item then bar(item.size or 0, item.size or 0, true) elseif bar then out.err:write("\n") end
  if item then
    out:result(path, item, ("%s %s %d %s"):format(item.id, item.name, item.size or 0, item.mime or "-"))
  else
    out:fail(path, err)
  end
end

local function upload_tree(client, opts, out)
  local bar = show_bar(opts)
  local summary, err = client:upload_tree(opts.files[1], {
    directory = opts.dir, journal = opts.journal, hidden = opts.hidden or nil,
    follow_symlinks = opts.follow_symlinks or nil, stop_on_error = opts.stop_on_error or nil,
    on_item = function(ev)
      if ev.error then
        out:fail(ev.path, ev.error)
      elseif out.opts.json then
        out:json({ path = ev.path, result = { id = ev.id, type = ev.type, size = ev.size, skipped = ev.skipped,
          maybe_duplicate = ev.maybe_duplicate, loop = ev.loop } })
      elseif ev.loop then
        out:line("skipped - " .. ev.path .. " (a link back up the tree)")
      else
        out:line(("%s %s %s%s"):format(ev.skipped and "skipped" or (ev.type == "directory" and "mkdir" or "upload"),
          ev.id, ev.path, ev.maybe_duplicate and " (sent again: the last run stopped during it)" or ""))
      end
    end,
    on_progress = bar and function(path, sent, total)
      progress_bar(path, out.err)(sent, total, sent == total)
    end or nil,
  })
  if not summary then return out:fail(opts.files[1], err) end
  local line = ("directories %d, files %d, bytes %d, skipped %d, failed %d"):format(summary.directories,
    summary.files, summary.bytes, summary.skipped, summary.failed)
  if summary.loops > 0 then line = line .. (", loops skipped %d"):format(summary.loops) end
  if opts.json then out:json({ summary = summary }) else out.err:write("fileapi: ", line, "\n") end
  return out.status
end

function C.upload(opts, out)
  if opts.recursive and #opts.files ~= 1 then return nil, "upload -r takes one DIR" end
  local client, status = open_client(opts, out, "upload")
  if not client then return status end
  if opts.recursive then
    status = upload_tree(client, opts, out)
    client:close()
    return status
  end
  for _, path in ipairs(opts.files) do
    if core.interrupted() then break end
    upload_one(client, opts, out, path)
  end
  client:close()
  return out.status
end

-- One call on a client that gives one result; text(result) for the plain line.
local function single(what, call, text)
  return function(opts, out)
    local client, status = open_client(opts, out, what)
    if not client then return status end
    local result, err = call(client, opts, out)
    client:close()
    if not result then return out:fail(opts.id or what, err) end
    if opts.json then out:json(result) else out:line(text(result)) end
    return 0
  end
end

C.mkdir = single("mkdir", function(c, o) return c:mkdir(o.name, { directory = o.dir }) end,
  function(d) return d.id .. " " .. d.name end)

C.get = single("get", function(c, o) return c:get(o.id) end, function(i)
  return ("%s %s %s %s %s"):format(i.id, i.type, i.name, i.size or "-", i.mime or "-")
end)

local function link_of(doc)
  local links = type(doc.links) == "table" and doc.links or {}
  for _, k in ipairs({ "customer", "publicShare", "publicRequest" }) do
    if type(links[k]) == "table" and links[k].href then return links[k].href end
  end
  return "-"
end

C.share = single("share", function(c, o) return c:share(o.ids, { customer_id = o.customer }) end, link_of)

C["request-files"] = single("request-files", function(c, o)
  local wanted = {}
  for i, spec in ipairs(o.file) do
    local name, description = spec:match("^([^:]*):(.*)$")
    wanted[i] = { name = name or spec, description = description ~= "" and description or nil }
  end
  return c:request_files({ name = o.name, requested_files = wanted, customer_id = o.customer, directory = o.dir })
end, link_of)

local function request_text(r)
  local lines = { ("%s %s %s"):format(r.id, r.completedAt and "completed" or "open", r.name or ""),
    "link: " .. link_of(r) }
  for _, f in ipairs(type(r.requestedFiles) == "table" and r.requestedFiles or {}) do
    lines[#lines + 1] = ("  %s %s%s %s"):format(f.id or "-", f.name or "", f.required and " (required)" or "",
      f.uploadedFileId or "not uploaded")
  end
  return table.concat(lines, "\n")
end

C.request = single("request", function(c, o) return c:file_request(o.id) end, request_text)

-- A writer to standard output, for -o -.
local function stdout_writer(io_out)
  return function(chunk)
    local ok, err = io_out:write(chunk)
    if not ok then return nil, err end
    return true
  end
end

function C.download(opts, out)
  local client, status = open_client(opts, out, "download")
  if not client then return status end
  local dest, err = opts.output
  -- not a file id: download refuses it before anything is sent or written
  if not dest and not opts.id:match("^fsf_") then dest = opts.id end
  if not dest then -- the file's own name, in the current folder
    local item
    item, err = client:get(opts.id)
    if not item then
      client:close()
      return out:fail(opts.id, err)
    end
    dest = item.name:gsub("/", "_")
  end
  local to_stdout = dest == "-"
  local bar = not to_stdout and show_bar(opts) and progress_bar(dest:match("[^/]*$"), out.err)
  local res
  res, err = client:download(opts.id, to_stdout and stdout_writer(out.out) or dest, {
    overwrite = opts.force or false, on_progress = bar or nil })
  client:close()
  if bar then out.err:write("\n") end
  if not res then return out:fail(opts.id, err) end
  if not to_stdout then
    if opts.json then out:json(res) else out:line(("%s %d"):format(res.path, res.size)) end
  end
  return 0
end

-- Every item of a paginated call, a line (or a JSON object) each.
local function list(what, method, line)
  return function(opts, out)
    local client, status = open_client(opts, out, what)
    if not client then return status end
    for item, err in client[method](client) do
      if item then
        if opts.json then out:json(item) else out:line(line(item)) end
      else
        out:fail(what, err)
      end
    end
    client:close()
    return out.status
  end
end

C.shares = list("shares", "file_shares", function(s)
  return ("%s %s %d %s"):format(s.id, s.sharedWithCustomerId or "public",
    type(s.sharedContent) == "table" and #s.sharedContent or 0, link_of(s))
end)

C.requests = list("requests", "file_requests", function(r)
  return ("%s %s %s"):format(r.id, r.completedAt and "completed" or "open", r.name or "")
end)

function C.share_mkdir(opts, out)
  local args = opts.args
  local token = take_token(args)
  if not token or #args ~= 1 then return nil, "share-mkdir needs TOKEN (or FILESRO_TOKEN) and NAME" end
  local share, status, why = open_share(opts, out, token, "share-mkdir")
  if not share then return status, why end
  local folder, err = share:mkdir(args[1], { parent_id = opts.parent })
  share:close()
  if not folder then return out:fail("share-mkdir", err) end
  if opts.json then out:json(folder) else out:line(folder.id .. " " .. folder.name) end
  return 0
end

function C.share_upload(opts, out)
  local args = opts.args
  local token = take_token(args)
  if not token or #args < 1 then return nil, "share-upload needs TOKEN (or FILESRO_TOKEN) and at least one FILE" end
  local share, status, why = open_share(opts, out, token, "share-upload")
  if not share then return status, why end
  for _, path in ipairs(args) do
    if core.interrupted() then break end
    local bar = show_bar(opts) and progress_bar(path:match("[^/]*$"), out.err)
    local file, err = share:upload(path, { parent_id = opts.parent, path = opts.path, chunk_size = opts.chunk_size,
      on_progress = bar or nil })
    if bar then out.err:write("\n") end
    if file then
      out:result(path, file, ("%s %s %s"):format(file.id, file.name, file.mimetype or "-"))
    else
      out:fail(path, err)
    end
  end
  share:close()
  return out.status
end

local function parse_items(args)
  local items = {}
  for i, a in ipairs(args) do
    local kind, id = a:match("^(%a+):(.+)$")
    if not kind then return nil, "items are TYPE:ID, as file:UUID or folder:UUID (got " .. a .. ")" end
    items[i] = { type = kind, id = id }
  end
  if #items == 0 then return nil, "at least one TYPE:ID is needed" end
  return items
end

local function share_items(what, verb, call)
  return function(opts, out)
    local args = opts.args
    local token = take_token(args)
    if not token then return nil, what .. " needs TOKEN (or FILESRO_TOKEN)" end
    local items, why = parse_items(args)
    if not items then return nil, why end
    local share, status
    share, status, why = open_share(opts, out, token, what)
    if not share then return status, why end
    local ok, err = call(share, items, opts)
    share:close()
    if not ok then return out:fail(what, err) end
    if opts.json then
      out:json({ ok = true, items = items })
    else
      out:line(("%s: %d item%s"):format(verb, #items, #items == 1 and "" or "s"))
    end
    return 0
  end
end

C.share_rm = share_items("share-rm", "deleted", function(share, items, opts)
  return share:delete(items, { force = opts.force or false })
end)
C.share_mv = share_items("share-mv", "moved", function(share, items, opts)
  return share:move(items, { to_id = opts.to })
end)

-- ---- the parser -------------------------------------------------------------------

local function number(name)
  return function(v)
    local n = tonumber(v)
    if not n then return nil, name .. " needs a number" end
    return n
  end
end

local function common(cmd)
  cmd:option("--base-url", "API root (default $MKP_BASE_URL, $FILESRO_BASE_URL, or the public API)")
  cmd:option("--timeout", "seconds for a whole attempt"):convert(number("--timeout"))
  cmd:option("--connect-timeout", "seconds to connect (default 10)"):convert(number("--connect-timeout"))
  cmd:option("--idle-timeout", "abort when no byte moves for this long (default 60)"):convert(number("--idle-timeout"))
  cmd:option("--retries", "extra attempts where safe (default 2)"):convert(number("--retries"))
  cmd:flag("--json", "print a JSON object per line as each item finishes")
  cmd:flag("--quiet", "no progress bar, no waiting messages")
  return cmd
end

local function share_options(cmd)
  cmd:option("--header", "an extra request header 'Name: value' (a protected share's Cookie)"):count("*")
  return common(cmd)
end

local function build_parser()
  local p = argparse("fileapi", "Upload, download and share files on MijnKlantportaal and files.ro shares.")
    :epilog(EPILOG)
  p:flag("--version", "print the version and exit"):action(function()
    io.stdout:write(("fileapi %s (libcurl %s)\n"):format(core.version, core.curl_version))
    os.exit(0)
  end)
  p:command_target("command")
  p:require_command(false)
  local up = common(p:command("upload", "upload files (streamed from disk; - reads standard input)"))
  up:argument("files", "files to upload, or one DIR with -r"):args("+")
  up:flag("-r --recursive", "mirror the folder tree DIR: a directory per folder, an upload per file")
  up:option("--dir", "into directory ID (fsd_...)")
  up:option("--journal", "with -r: a file that records what is done, so that a rerun skips it")
  up:option("--name", "the file name to send (default: the base name)")
  up:option("--mime", "the media type to send (default: by extension)")
  up:flag("--hidden", "with -r: include hidden files and folders")
  up:flag("--follow-symlinks", "with -r: follow symbolic links")
  up:flag("--stop-on-error", "with -r: stop at the first failed item")
  local mk = common(p:command("mkdir", "create a directory"))
  mk:argument("name", "NAME")
  mk:option("--dir", "inside directory ID (fsd_...)")
  common(p:command("get", "show a file or directory")):argument("id", "ID (fsf_... or fsd_...)")
  local dl = common(p:command("download", "download a file (default: to its name, here)"))
  dl:argument("id", "file ID (fsf_...)")
  dl:option("-o --output", "where to: a PATH, or - for standard output")
  dl:flag("--force", "replace an existing file")
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
  local smk = share_options(p:command("share-mkdir", "create a folder in a files.ro share"))
  smk:argument("args", "[TOKEN] NAME"):args("+")
  smk:option("--parent", "inside folder UUID")
  local sup = share_options(p:command("share-upload", "upload files into a files.ro share"))
  sup:argument("args", "[TOKEN] FILE..."):args("+")
  sup:option("--parent", "into folder UUID")
  sup:option("--path", "into folders a/b (made as needed)")
  sup:option("--chunk-size", "bytes per request (default 64000000)"):convert(number("--chunk-size"))
  local srm = share_options(p:command("share-rm", "delete items (TYPE:ID, file or folder) from a share"))
  srm:argument("args", "[TOKEN] TYPE:ID..."):args("+")
  srm:flag("--force", "delete for good (default: to the owner's trash)")
  local smv = share_options(p:command("share-mv", "move items (TYPE:ID) in a share"))
  smv:argument("args", "[TOKEN] TYPE:ID..."):args("+")
  smv:option("--to", "into folder UUID (default: the share's root)")
  return p
end

local RUN = { upload = C.upload, mkdir = C.mkdir, get = C.get, download = C.download, share = C.share,
  shares = C.shares, ["request-files"] = C["request-files"], requests = C.requests, request = C.request,
  ["share-mkdir"] = C.share_mkdir, ["share-upload"] = C.share_upload, ["share-rm"] = C.share_rm,
  ["share-mv"] = C.share_mv }

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
  local ok, opts = parser:pparse(argv)
  if not ok then return usage_error(io_err, nil, opts) end
  if not opts.command then return usage_error(io_err, nil, "a command is needed") end
  core.catch_interrupts()
  local out = new_out(opts, io_out, io_err)
  local run_ok, status, why = pcall(RUN[opts.command], opts, out)
  if not run_ok then -- a bug, not a user's error: one line still, no traceback
    io_err:write("fileapi: internal error: ", tostring(status), "\n")
    return 1
  end
  if core.interrupted() then
    io_err:write("fileapi: interrupted\n")
    return M.EXIT.interrupted
  end
  if status == nil then return usage_error(io_err, opts.command, why) end
  return status
end

return M
