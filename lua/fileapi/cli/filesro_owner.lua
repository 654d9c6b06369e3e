-- The files.ro owner's commands (drive-*): sign-in, upload (files and -r
-- trees), rename, mv, rm, restore, zip, tree, share, unshare, send-share,
-- team folders, request.  The token comes from FILESRO_API_TOKEN, else the
-- one `fileapi drive-login` stored.
local core = require "fileapi.core"
local drive = require "fileapi.drive"
local clients = require "fileapi.cli.clients"
local credentials = require "fileapi.cli.credentials"
local sources = require "fileapi.cli.sources"

local M = {}

local function read_password_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot read --password-file: " .. tostring(err) end
  local text = f:read("*a") or ""
  f:close()
  return (text:gsub("\r?\n$", ""))
end

local function fail_local(out, what, kind, message)
  return out:fail(what, core.error({ kind = kind, message = message, retryable = false, attempts = 0 }))
end

-- The owner's client: FILESRO_API_TOKEN, else the stored token (the
-- library's own default).
local function open_drive(opts, out, what)
  local copts = clients.options(opts, out)
  copts.base_url = opts.base_url or os.getenv("FILESRO_BASE_URL")
  local token, why = drive.default_token()
  if not token then
    return nil, fail_local(out, what, "unauthorized",
      why or "no files.ro token: set FILESRO_API_TOKEN or run fileapi drive-login")
  end
  copts.token = token
  local d, err = drive.new(copts)
  if not d then return nil, out:fail(what, err) end
  return d
end

function M.login(opts, out)
  local password, why
  if opts.password_file then
    password, why = read_password_file(opts.password_file)
  else
    password, why = core.read_secret("files.ro password for " .. opts.email .. ": ")
  end
  if not password then return nil, why end
  local copts = clients.options(opts, out)
  copts.base_url = opts.base_url or os.getenv("FILESRO_BASE_URL")
  copts.email, copts.password = opts.email, password
  local token, err = drive.login(copts)
  if not token then return out:fail("drive-login", err) end
  local ok, serr = credentials.locked(function()
    return credentials.save_drive({ token = token, email = opts.email })
  end, credentials.drive_path())
  if not ok then return out:fail(credentials.drive_path(), serr) end
  out.err:write("fileapi: signed in to files.ro; token stored in ", credentials.drive_path(), "\n")
  return 0
end

-- Signs out here, and revokes the token at files.ro where it can.
function M.logout(opts, out)
  local stored = credentials.load_drive()
  if not stored then
    out.err:write("fileapi: not signed in to files.ro (no ", credentials.drive_path(), ")\n")
    return 0
  end
  local copts = clients.options(opts, out)
  copts.base_url = opts.base_url or os.getenv("FILESRO_BASE_URL")
  copts.token = stored.token
  local d = drive.new(copts)
  local revoked = d and d:delete_token(stored.token)
  if d then d:close() end
  os.remove(credentials.drive_path())
  os.remove(credentials.drive_path() .. ".lock")
  out.err:write("fileapi: signed out of files.ro", revoked and " (token revoked)" or "", "; removed ",
    credentials.drive_path(), "\n")
  return 0
end

local parse_items = clients.parse_items

-- A command on the drive: call(d, opts, out) -> result | nil, err;
-- text(result) for the plain line.
local function command(what, call, text)
  return function(opts, out)
    local d, status = open_drive(opts, out, what)
    if not d then return status end
    local ok, result, err = pcall(call, d, opts, out)
    d:close()
    if not ok then error(result, 0) end
    if result == nil and type(err) == "string" then return nil, err end -- a usage error
    if not result then return out:fail(what, err) end
    if result ~= true then -- true: the call printed what it had
      if opts.json then out:json(result) else out:line(text(result)) end
    end
    return out.status
  end
end

local function upload_files(d, opts, out)
  sources.each(opts, out, function(source, name, on_progress)
    return d:upload(sources.named(source, name), { parent_id = opts.parent, path = opts.path,
      extension = opts.extension, chunk_size = opts.chunk_size, on_progress = on_progress })
  end, function(file) return ("%s %s %s"):format(file.id, file.name, file.filesize or "-") end)
  return true
end

local function upload_tree(d, opts, out)
  local line = sources.tree_line(out)
  local summary, err = d:upload_tree(opts.files[1], { parent_id = opts.parent, journal = opts.journal,
    chunk_size = opts.chunk_size, hidden = opts.hidden or nil, follow_symlinks = opts.follow_symlinks or nil,
    stop_on_error = opts.stop_on_error or nil, parallel = opts.parallel, on_plan = line.on_plan,
    on_progress = line.on_progress,
    on_item = function(ev)
      line.item(ev)
      if ev.error then
        out:fail(ev.path, ev.error)
      elseif opts.json then
        out:json({ path = ev.path, result = { id = ev.id, type = ev.type, skipped = ev.skipped,
          maybe_duplicate = ev.maybe_duplicate } })
      else
        out:line(("%s %s %s%s"):format(ev.skipped and "skipped" or "upload", ev.id, ev.path,
          ev.maybe_duplicate and " (sent again: the last run stopped during it)" or ""))
      end
    end })
  line.finish()
  if not summary then return nil, err end
  local text = ("files %d, bytes %d, skipped %d, failed %d"):format(summary.files, summary.bytes, summary.skipped,
    summary.failed)
  if opts.json then out:json({ summary = summary }) else out.err:write("fileapi: ", text, "\n") end
  return true
end

M.upload = command("drive-upload", function(d, opts, out)
  if opts.recursive then
    if #opts.files ~= 1 then return nil, "drive-upload -r takes one DIR" end
    if opts.name or opts.extension then
      return nil, "--name and --extension go with FILEs, not -r (a file without an extension goes as its own)"
    end
    return upload_tree(d, opts, out)
  end
  if opts.journal then return nil, "--journal goes with -r" end
  local ok, why = sources.check(opts, opts.files)
  if not ok then return nil, why end
  return upload_files(d, opts, out)
end)

M.rename = command("drive-rename", function(d, opts)
  local items, why = parse_items({ opts.item })
  if not items then return nil, why end
  return d:rename(items[1], opts.name)
end, function(doc) return ("%s %s %s"):format(doc.id, doc.type, doc.name or "") end)

local function on_items(what, verb, call)
  return command(what, function(d, opts, out)
    local items, why = parse_items(opts.items)
    if not items then return nil, why end
    local ok, err = call(d, items, opts)
    if not ok then return nil, err end
    if opts.json then
      out:json({ ok = true, items = items })
    else
      out:line(("%s: %d item%s"):format(verb, #items, #items == 1 and "" or "s"))
    end
    return true
  end)
end

M.mv = on_items("drive-mv", "moved", function(d, items, o) return d:move(items, { to_id = o.to }) end)
M.rm = on_items("drive-rm", "deleted", function(d, items, o) return d:delete(items, { force = o.force or false }) end)
M.restore = on_items("drive-restore", "restored", function(d, items, o)
  return d:restore(items, { to_home = o.to_home or false })
end)

M.zip = command("drive-zip", function(d, opts, out)
  local items, why = parse_items(opts.items)
  if not items then return nil, why end
  local dest = opts.output
  local to_stdout = dest == "-"
  local update, finish
  if not to_stdout then update, finish = out:bar(dest:match("[^/]*$")) end
  local res, err = d:zip(items, to_stdout and function(chunk)
    local ok, werr = out.out:write(chunk)
    if not ok then return nil, werr end
    return true
  end or dest, { overwrite = opts.force or false, on_progress = update })
  if finish then finish(res ~= nil) end
  if not res then return nil, err end
  if to_stdout then return true end
  return res
end, function(res) return ("%s %d"):format(res.path, res.size) end)

-- The folder tree, indented two spaces a level.
local function tree_lines(nodes, depth, lines)
  for _, n in ipairs(nodes or {}) do
    lines[#lines + 1] = ("%s%s %s%s"):format(("  "):rep(depth), n.id or "-", n.name or "",
      n.team_folder and " (team)" or "")
    tree_lines(n.folders, depth + 1, lines)
  end
  return lines
end

M.tree = command("drive-tree", function(d, opts)
  return d:navigation({ sort = opts.sort, direction = opts.direction })
end, function(sections)
  local lines = {}
  for _, s in ipairs(sections) do
    lines[#lines + 1] = (s.name or s.location or "?") .. ":"
    tree_lines(s.folders, 1, lines)
  end
  return table.concat(lines, "\n")
end)

local function share_text(s)
  return ("%s %s%s%s"):format(s.link or "-", s.permission or "-", s.protected and " protected" or "",
    (s.expire_in or 0) > 0 and (" expires in %d h"):format(s.expire_in) or "")
end

M.share = command("drive-share", function(d, opts)
  local items, why = parse_items({ opts.item })
  if not items then return nil, why end
  local password
  if opts.password_file then
    password, why = read_password_file(opts.password_file)
    if not password then return nil, why end
  end
  local emails = #opts.email > 0 and opts.email or nil
  return d:share(items[1], { permission = opts.permission, expiration = opts.expires, password = password,
    emails = emails })
end, share_text)

M.unshare = command("drive-unshare", function(d, opts)
  local ok, err = d:revoke_shares(opts.tokens)
  if not ok then return nil, err end
  return { revoked = #opts.tokens } -- a count: the tokens are secrets
end, function(r) return ("revoked: %d link%s"):format(r.revoked, r.revoked == 1 and "" or "s") end)

M.send_share = command("drive-send-share", function(d, opts)
  local ok, err = d:send_share(opts.token, { emails = opts.email })
  if not ok then return nil, err end
  return { sent_to = opts.email }
end, function(r) return "mailed to " .. table.concat(r.sent_to, ", ") end)

M.team_folders = command("drive-team-folders", function(d, opts, out)
  local iter, ierr
  if opts.shared_with_me then iter, ierr = d:shared_with_me(opts.id) else iter, ierr = d:team_folders(opts.id) end
  if not iter then return nil, ierr end
  for item, err in iter do
    if item then
      if opts.json then out:json(item) else out:line(("%s %s %s"):format(item.id, item.type, item.name or "")) end
    elseif err then
      out:fail("drive-team-folders", err)
    end
  end
  return true
end)

M.request = command("drive-request", function(d, opts)
  return d:request_files({ name = opts.name, email = opts.email, notes = opts.notes, folder_id = opts.folder })
end, function(r) return ("%s %s"):format(r.id, r.name or "") end)

return M
