-- The MijnKlantportaal commands: upload (files, standard input, -r trees),
-- mkdir, get, download (one file or several), share, shares, request-files,
-- requests, request.
local core = require "fileapi.core"
local batch = require "fileapi.batch"
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

local function upload_tree(client, opts, out)
  local line = sources.tree_line(out)
  local summary, err = client:upload_tree(opts.files[1], {
    directory = opts.dir, journal = opts.journal, hidden = opts.hidden or nil,
    follow_symlinks = opts.follow_symlinks or nil, stop_on_error = opts.stop_on_error or nil,
    parallel = opts.parallel, on_plan = line.on_plan, on_progress = line.on_progress,
    on_item = function(ev)
      line.item(ev)
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
  })
  line.finish()
  if not summary then return out:fail(opts.files[1], err) end
  local text = ("directories %d, files %d, bytes %d, skipped %d, failed %d"):format(summary.directories,
    summary.files, summary.bytes, summary.skipped, summary.failed)
  if summary.loops > 0 then text = text .. (", loops skipped %d"):format(summary.loops) end
  if opts.json then out:json({ summary = summary }) else out.err:write("fileapi: ", text, "\n") end
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

-- Where a file goes: `dest`, or (nil) its own name in `dir` (nil: here).
-- A string that is not a file id goes as it is: download refuses it before
-- anything is sent or written.
local function destination(client, id, dest, dir)
  if dest then return dest end
  if not id:match("^fsf_") then return id end
  local item, err = client:get(id)
  if not item then return nil, err end
  local name = item.name:gsub("/", "_")
  return dir and (dir .. "/" .. name) or name
end

local function download_one(client, opts, out)
  local id = opts.ids[1]
  local dest, err = destination(client, id, opts.output)
  if not dest then return out:fail(id, err) end
  local to_stdout = dest == "-"
  local update, finish
  if not to_stdout then update, finish = out:bar(dest:match("[^/]*$")) end
  local res
  res, err = client:download(id, to_stdout and stdout_writer(out.out) or dest, {
    overwrite = opts.force or false, on_progress = update })
  if finish then finish(res ~= nil) end
  if not res then return out:fail(id, err) end
  if not to_stdout then
    if opts.json then out:json(res) else out:line(("%s %d"):format(res.path, res.size)) end
  end
  return 0
end

-- Several ids, --parallel at once, each under its own name in the -o
-- directory (default: here), one progress line for them all.  Two ids that
-- would land on one path: the second fails, nothing replaced.
local function download_many(client, opts, out)
  local dir, line, taken = opts.output, out:batch(#opts.ids, nil), {}
  batch.run(opts.ids, {
    parallel = opts.parallel,
    send = function(id)
      local dest, err = destination(client, id, nil, dir)
      if not dest then return nil, err end
      if taken[dest] then
        return nil, core.error({ kind = "invalid_argument", retryable = false, attempts = 0,
          message = dest .. " is where another ID of this command goes: download one of them alone, with -o" })
      end
      taken[dest] = true
      return client:download(id, dest, { overwrite = opts.force or false,
        on_progress = line and function(received) line.progress(id, received) end })
    end,
    settle = function(id, res, err)
      if line then line.done(id, res and res.size or nil) end
      if not res then
        out:fail(id, err)
      elseif opts.json then
        out:json(res)
      else
        out:line(("%s %d"):format(res.path, res.size))
      end
      return true
    end,
  })
  if line then line.finish() end
  return out.status
end

-- One id: to -o PATH, - (standard output) or its own name here.  Several:
-- -o names an existing directory (default: here).
function M.download(opts, out)
  local several = #opts.ids > 1
  if several and opts.output then
    local st = core.stat(opts.output, true)
    if not st or st.type ~= "directory" then
      return nil, "with several IDs, -o names an existing directory (got " .. opts.output .. ")"
    end
  end
  local client, status = open_client(opts, out, "download")
  if not client then return status end
  local ok
  ok, status = pcall(several and download_many or download_one, client, opts, out)
  client:close()
  if not ok then error(status, 0) end
  return status
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
