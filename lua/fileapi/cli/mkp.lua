-- The MijnKlantportaal commands: upload (files, standard input, -r trees),
-- mkdir, get, download, share, shares, request-files, requests, request.
local core = require "fileapi.core"
local output = require "fileapi.cli.output"
local clients = require "fileapi.cli.clients"

local progress_bar, show_bar, open_client = output.progress_bar, output.show_bar, clients.open_client

local C = {}

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

return C
