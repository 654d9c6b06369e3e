-- The files.ro share commands, as a share link's visitor: share-mkdir,
-- share-upload, share-rm, share-mv.
local clients = require "fileapi.cli.clients"
local sources = require "fileapi.cli.sources"

local take_token, open_share = clients.take_token, clients.open_share

local M = {}

function M.share_mkdir(opts, out)
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

function M.share_upload(opts, out)
  local args = opts.args
  local token = take_token(args)
  if not token or #args < 1 then return nil, "share-upload needs TOKEN (or FILESRO_TOKEN) and at least one FILE" end
  opts.files = args
  local ok, why = sources.check(opts, args)
  if not ok then return nil, why end
  local share, status
  share, status, why = open_share(opts, out, token, "share-upload")
  if not share then return status, why end
  status = sources.each(opts, out, function(source, name, on_progress)
    return share:upload(sources.named(source, name), { parent_id = opts.parent, path = opts.path,
      extension = opts.extension, chunk_size = opts.chunk_size, on_progress = on_progress })
  end, function(file) return ("%s %s %s"):format(file.id, file.name, file.mimetype or "-") end)
  share:close()
  return status
end

local parse_items = clients.parse_items

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

M.share_rm = share_items("share-rm", "deleted", function(share, items, opts)
  return share:delete(items, { force = opts.force or false })
end)
M.share_mv = share_items("share-mv", "moved", function(share, items, opts)
  return share:move(items, { to_id = opts.to })
end)

return M
