-- The owner's items: upload (chunked, by fileapi.filesro.chunks: the same
-- rule as a share's), remote uploads, rename, move, delete, restore, zip
-- (streamed to a sink), the folder tree; and a local tree's upload.
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"
local documents = require "fileapi.filesro.documents"
local chunks = require "fileapi.filesro.chunks"
local tree = require "fileapi.tree"
local common = require "fileapi.filesro.owner_common"

local type, pairs, ipairs, concat = type, pairs, ipairs, table.concat
local request, send_done = common.request, common.send_done

local M = {}

--- d:upload(source, { parent_id, path, name, extension, chunk_size, on_progress })
---   -> the file document, flattened | nil, err
function M:upload(source, opts)
  local plan, perr = chunks.check_upload(self.engine, source, opts)
  if not plan then return nil, perr end
  -- files.ro publishes only the chunked form for the owner: always chunks
  local res, err = chunks.send(self.engine, plan, plan.on_progress, function(headers)
    local req = request(self, "POST", "/uploads")
    for i = 1, #headers do req.headers[#req.headers + 1] = headers[i] end
    return req
  end, true)
  if not res then return nil, err end
  local doc = engine.decode_json(res.body)
  local _, terr = common.typed(self, doc, res)
  if terr then return nil, terr end
  return common.flat(self, doc, res, "a file document")
end

local function check_url(u, i)
  if type(u) ~= "string" or #u > 2048 or u:find("[%s%c]") or not u:match("^[hH][tT][tT][pP][sS]?://[^/?#]+") then
    return nil, ("urls #%d must be an http(s) URL"):format(i)
  end
  return true
end

--- d:upload_urls({ url, … }, { parent_id }) -> { queued = bool, message }
--- files.ro fetches them itself; a URL it cannot fetch is only logged there.
function M:upload_urls(urls, opts)
  util.check_type(urls, "table", 1, "upload_urls")
  opts = common.options(opts, 2, "upload_urls", { "parent_id" })
  local parent = util.check_field(opts, "parent_id", "string", "upload_urls")
  if #urls == 0 then return util.invalid("urls must list at least one URL") end
  for i, u in ipairs(urls) do
    local ok, why = check_url(u, i)
    if not ok then return util.invalid(why) end
  end
  local ok, why = common.check_uuid(parent, "parent_id", true)
  if not ok then return util.invalid(why) end
  local list = {}
  for i, u in ipairs(urls) do list[i] = u end
  local done, res = send_done(self, request(self, "POST", "/uploads", { urls = list, parent_id = parent }))
  if not done then return nil, res end
  local message = common.message_of(res) or ""
  return { queued = message:lower():find("queue", 1, true) ~= nil, message = message }
end

--- d:rename(item, new_name) -> the renamed item's document, flattened
function M:rename(item, new_name)
  local ok, why = documents.check_item(item, "rename")
  util.check_type(new_name, "string", 2, "rename")
  if not ok then return util.invalid(why) end
  ok, why = util.check_name("new_name", new_name)
  if not ok then return util.invalid(why) end
  local doc, res = common.send_doc(self, request(self, "PATCH", "/items/" .. item.id,
    { name = new_name, type = item.type }))
  if not doc then return nil, res end
  return common.flat(self, doc, res, "an item document")
end

local function item_list(items, extra)
  local list = {}
  for i, item in ipairs(items) do
    list[i] = { type = item.type, id = item.id }
    for k, v in pairs(extra or {}) do list[i][k] = v end
  end
  return list
end

local function checked_items(items, fname)
  util.check_type(items, "table", 1, fname, false, 4)
  local ok, why = documents.check_items(items, fname, 4)
  return ok, why
end

--- d:move(items, { to_id }) -> true; no to_id: the home folder
--- Not atomic on the server: items before a failing one stay moved.
function M:move(items, opts)
  local ok, why = checked_items(items, "move")
  opts = common.options(opts, 2, "move", { "to_id" })
  local to = util.check_field(opts, "to_id", "string", "move")
  if not ok then return util.invalid(why) end
  ok, why = common.check_uuid(to, "to_id", true)
  if not ok then return util.invalid(why) end
  -- the owner's call takes an explicit null for home
  return send_done(self, request(self, "POST", "/moves", { to_id = to or engine.json.null, items = item_list(items) }))
end

--- d:delete(items, { force }) -> true; without force, to the trash
--- Unknown ids are skipped by the server (still true).
function M:delete(items, opts)
  local ok, why = checked_items(items, "delete")
  opts = common.options(opts, 2, "delete", { "force" })
  local force = util.check_field(opts, "force", "boolean", "delete") or false
  if not ok then return util.invalid(why) end
  -- Force-deleting a live folder frees the bytes only of files already
  -- in the trash: folders go to the trash first, then for good.
  local folders = {}
  for _, item in ipairs(items) do
    if item.type == "folder" then folders[#folders + 1] = item end
  end
  if force and #folders > 0 then
    local done, err = send_done(self, request(self, "DELETE", "/items",
      { items = item_list(folders, { force_delete = false }) }))
    if not done then return nil, err end
  end
  return send_done(self, request(self, "DELETE", "/items", { items = item_list(items, { force_delete = force }) }))
end

--- d:restore(items, { to_home }) -> true
function M:restore(items, opts)
  local ok, why = checked_items(items, "restore")
  opts = common.options(opts, 2, "restore", { "to_home" })
  local home = util.check_field(opts, "to_home", "boolean", "restore") or false
  if not ok then return util.invalid(why) end
  return send_done(self, request(self, "POST", "/trash/restore", { to_home = home, items = item_list(items) }))
end

--- d:zip(items, dest, { overwrite, on_progress }) -> { path, size }
--- dest: a path (a hidden temporary file beside it, renamed when complete)
--- or a writer function(chunk) -> true | nil, message.  The server serves
--- no ranges: a broken download starts over (a writer is told nothing
--- twice: it fails instead).
function M:zip(items, dest, opts)
  local ok, why = checked_items(items, "zip")
  local dt = type(dest)
  if dt ~= "string" and dt ~= "function" then util.check_type(dest, "string", 2, "zip") end
  opts = common.options(opts, 3, "zip", { "overwrite", "on_progress" })
  local overwrite = util.check_field(opts, "overwrite", "boolean", "zip")
  local on_progress = util.check_field(opts, "on_progress", "function", "zip")
  if not ok then return util.invalid(why) end
  if dest == "" then return util.invalid("dest must not be empty") end
  local pairs_text = {}
  for i, item in ipairs(items) do pairs_text[i] = item.id .. "%7C" .. item.type end
  local req = request(self, "GET", "/zip?items=" .. concat(pairs_text, ","))
  req.sink, req.overwrite, req.on_download = dest, overwrite, on_progress
  local res, err = self.engine:send(req)
  if not res then return nil, err end
  return { path = dt == "string" and dest or nil, size = res.download.size }
end

local SORTS = { created_at = true, name = true }

--- d:navigation{ sort, direction } -> the folder tree as the API sends it
function M:navigation(opts)
  opts = common.options(opts, 1, "navigation", { "sort", "direction" })
  local sort = util.check_field(opts, "sort", "string", "navigation")
  local direction = util.check_field(opts, "direction", "string", "navigation")
  if sort and not SORTS[sort] then return util.invalid('sort must be "created_at" or "name"') end
  direction = direction and direction:upper()
  if direction and direction ~= "ASC" and direction ~= "DESC" then
    return util.invalid('direction must be "asc" or "desc"')
  end
  local query = {}
  if sort then query[#query + 1] = "sort=" .. sort end
  if direction then query[#query + 1] = "direction=" .. direction end
  local path = "/browse/navigation" .. (#query > 0 and "?" .. concat(query, "&") or "")
  local res, err = self.engine:send(request(self, "GET", path))
  if not res then return nil, err end
  local doc = engine.decode_json(res.body)
  if type(doc) ~= "table" then return self.engine:protocol_error(res, "the response is not a folder tree") end
  local _, terr = common.typed(self, doc, res)
  if terr then return nil, terr end
  return doc
end

local TREE_OPTIONS = { "parent_id", "chunk_size" }
for _, k in ipairs(tree.OPTIONS) do TREE_OPTIONS[#TREE_OPTIONS + 1] = k end

--- d:upload_tree(local_dir, { parent_id, journal, on_item, on_progress, on_plan, hidden,
---   follow_symlinks, stop_on_error, chunk_size, parallel }) -> summary
--- files.ro publishes no owner call to make a folder: each file's upload
--- names its folders (path), which the server finds or makes.  Empty
--- folders are therefore not made.  The files go `parallel` at once
--- (default 1), the first upload into a new folder alone, so that none is
--- made twice; on_plan(files, bytes) is told first what is left to send.
function M:upload_tree(local_dir, opts)
  util.check_type(local_dir, "string", 1, "upload_tree")
  opts = common.options(opts, 2, "upload_tree", TREE_OPTIONS)
  local parent = util.check_field(opts, "parent_id", "string", "upload_tree")
  util.check_field(opts, "chunk_size", "number", "upload_tree")
  local checked, bad = tree.check(opts, "upload_tree")
  if not checked then return util.invalid(bad) end
  local ok, why = common.check_uuid(parent, "parent_id", true)
  if not ok then return util.invalid(why) end
  local summary, err = tree.upload({
    upload = function(_, full, o)
      return self:upload(full, { parent_id = parent, path = o.directory, chunk_size = opts.chunk_size,
        on_progress = o.on_progress })
    end,
  }, local_dir, { journal = opts.journal, on_item = opts.on_item, on_progress = opts.on_progress,
    on_plan = opts.on_plan, hidden = opts.hidden, follow_symlinks = opts.follow_symlinks,
    stop_on_error = opts.stop_on_error, parallel = opts.parallel, folders_by_path = true })
  if not summary then return util.fail_before(self.engine, err) end
  return summary
end

return M
