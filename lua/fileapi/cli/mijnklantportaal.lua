-- The MijnKlantportaal commands: upload (files, standard input, -r trees),
-- mkdir, get, download, share, shares, request-files, requests, request.
local output = require "fileapi.cli.output"
local clients = require "fileapi.cli.clients"
local sources = require "fileapi.cli.sources"

local open_client = clients.open_client

local M = {}

-- One file (or standard input, "-"), under --name, with --mime.
local function upload_files(client, opts, out)
  return sources.each(opts, out, function(source, name, on_progress)
    return client:upload(source, { directory = opts.dir, filename = name, mime = opts.mime,
      on_progress = on_progress })
  end, function(item) return ("%s %s %d %s"):format(item.id, item.name, item.size or 0, item.mime or "-") end)
end

-- One bar per file of a tree: a file's first report starts it, the file's
-- line (on_item) ends it.
local function tree_bars(out)
  local current, update, finish
  local bars = {}
  function bars.progress(path, sent, total)
    if path ~= current then
      if finish then finish(false) end
      current = path
      update, finish = out:bar(path)
    end
    if update then update(sent, total) end
  end
  function bars.item(ev)
    if finish and ev.path == current then finish(not ev.error) end
    if ev.path == current then current, update, finish = nil, nil, nil end
  end
  return bars
end

local function upload_tree(client, opts, out)
  local bars = tree_bars(out)
  local summary, err = client:upload_tree(opts.files[1], {
    directory = opts.dir, journal = opts.journal, hidden = opts.hidden or nil,
    follow_symlinks = opts.follow_symlinks or nil, stop_on_error = opts.stop_on_error or nil,
    on_item = function(ev)
      bars.item(ev)
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
    on_progress = output.show_bar(opts) and bars.progress or nil,
  })
  if not summary then return out:fail(opts.files[1], err) end
  local line = ("directories %d, files %d, bytes %d, skipped %d, failed %d"):format(summary.directories,
    summary.files, summary.bytes, summary.skipped, summary.failed)
  if summary.loops > 0 then line = line .. (", loops skipped %d"):format(summary.loops) end
  if opts.json then out:json({ summary = summary }) else out.err:write("fileapi: ", line, "\n") end
  return out.status
end

function M.upload(opts, out)
  if opts.recursive and #opts.files ~= 1 then return nil, "upload -r takes one DIR" end
  local ok, why = sources.check(opts, opts.files)
  if not ok then return nil, why end
  local client, status = open_client(opts, out, "upload")
  if not client then return status end
  status = (opts.recursive and upload_tree or upload_files)(client, opts, out)
  client:close()
  return status
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

M.mkdir = single("mkdir", function(c, o) return c:mkdir(o.name, { directory = o.dir }) end,
  function(d) return d.id .. " " .. d.name end)

M.get = single("get", function(c, o) return c:get(o.id) end, function(i)
  return ("%s %s %s %s %s"):format(i.id, i.type, i.name, i.size or "-", i.mime or "-")
end)

local function link_of(doc)
  local links = type(doc.links) == "table" and doc.links or {}
  for _, k in ipairs({ "customer", "publicShare", "publicRequest" }) do
    if type(links[k]) == "table" and links[k].href then return links[k].href end
  end
  return "-"
end

M.share = single("share", function(c, o) return c:share(o.ids, { customer_id = o.customer }) end, link_of)

M["request-files"] = single("request-files", function(c, o)
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

M.request = single("request", function(c, o) return c:file_request(o.id) end, request_text)

-- A writer to standard output, for -o -.
local function stdout_writer(io_out)
  return function(chunk)
    local ok, err = io_out:write(chunk)
    if not ok then return nil, err end
    return true
  end
end

function M.download(opts, out)
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
  local update, finish
  if not to_stdout then update, finish = out:bar(dest:match("[^/]*$")) end
  local res
  res, err = client:download(opts.id, to_stdout and stdout_writer(out.out) or dest, {
    overwrite = opts.force or false, on_progress = update })
  client:close()
  if finish then finish(res ~= nil) end
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

M.shares = list("shares", "file_shares", function(s)
  return ("%s %s %d %s"):format(s.id, s.sharedWithCustomerId or "public",
    type(s.sharedContent) == "table" and #s.sharedContent or 0, link_of(s))
end)

M.requests = list("requests", "file_requests", function(r)
  return ("%s %s %s"):format(r.id, r.completedAt and "completed" or "open", r.name or "")
end)

return M
