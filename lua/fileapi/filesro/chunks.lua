-- Uploading to files.ro (a share's POST …/uploads, and the owner's POST
-- /uploads through fileapi.drive: one implementation): one request up to
-- chunk_size bytes, else the same file in order as chunks.  The server
-- appends each chunk to a temporary file named after the chunk part's file
-- name, with no offset: a chunk it may have received must never go again,
-- or the stored file is corrupt.  So every upload gets its own random part
-- name, one chunk is in flight at a time, and a chunk is sent again only
-- when the server cannot have appended it (the request's never_resend:
-- fileapi.http.engine).  Both callers' arguments are checked here too, by
-- the same rules (check_upload).
local core = require "fileapi.core"
local util = require "fileapi.util"
local mime = require "fileapi.mime"
local documents = require "fileapi.filesro.documents"

local type, ipairs, format, min, floor = type, ipairs, string.format, math.min, math.floor

local M = {}

M.DEFAULT_CHUNK_SIZE = 64000000

-- A relative folder path such as "a/b", as the server reads it: the
-- folders between the first and the last "/" of "/a/b/<file name>".
local function check_path(path)
  if path == "" then return nil, "path must not be empty" end
  if util.has_control(path) then return nil, "path must not contain control characters" end
  if not util.is_utf8(path) then return nil, "path must be valid UTF-8" end
  for segment in (path .. "/"):gmatch("([^/]*)/") do
    if segment == "" then return nil, "path must be relative, without empty segments (like a/b)" end
    if segment == "." or segment == ".." then return nil, "path must not contain . or .. segments" end
    if #segment > util.NAME_MAX then return nil, "a path segment is longer than 255 bytes" end
  end
  return true
end

local function valid_extension(ext)
  return ext ~= "" and #ext <= 32 and not ext:find("[^%w_-]")
end

-- "report.final.pdf" -> "report.final", "pdf"; ".profile", "README" and
-- "notes.2024 draft" have none (the last is no extension the server keeps).
local function split_name(filename)
  local base, ext = filename:match("^(.+)%.([^./]+)$")
  if not base or not valid_extension(ext) then return filename, nil end
  return base, ext
end

-- The server needs an extension for every file (it stores the bytes as
-- <uuid>.<extension>, and names a download <name>.<extension> unless the
-- name holds the extension already).  A name without one is sent as its
-- own extension, as files.ro's web client does (the last dot-separated
-- part of the name, here the whole name): README goes as README, README,
-- and comes back as README.  A name that cannot be an extension (spaces,
-- other characters, over 32 bytes) goes as "bin".
local function default_extension(filename)
  local last = filename:match("([^.]*)$")
  if valid_extension(last) then return last end
  return "bin"
end

-- Checks the options and settles name, extension and size; nil, message
-- for a bad value.  Nothing is sent before this has passed.
local function plan_upload(part, opts)
  local plan = { part = part }
  local base, ext = split_name(part.filename)
  plan.name = opts.name or base
  plan.extension = opts.extension or ext or default_extension(part.filename)
  local ok, why = util.check_name("name", plan.name)
  if not ok then return nil, why end
  if not valid_extension(plan.extension) then
    return nil, "extension must be 1 to 32 letters, digits, - or _ (without the dot)"
  end
  if opts.parent_id and not documents.is_uuid(opts.parent_id) then return nil, "parent_id must be a UUID" end
  plan.parent_id = opts.parent_id
  if opts.path then
    ok, why = check_path(opts.path)
    if not ok then return nil, why end
    plan.path = "/" .. opts.path .. "/" .. part.filename
  end
  local chunk = opts.chunk_size or M.DEFAULT_CHUNK_SIZE
  if chunk < 1 or chunk ~= floor(chunk) or chunk >= 2 ^ 53 then
    return nil, "chunk_size must be a whole number of bytes >= 1"
  end
  plan.chunk_size = chunk
  if part.path then
    local size, err = core.file_size(part.path)
    if not size then return nil, err end
    plan.size = size
  elseif part.data then
    plan.size = #part.data
  else
    plan.size = part.size
  end
  plan.content_type = mime.for_name(part.filename)
  return plan
end

M.UPLOAD_OPTIONS = { "parent_id", "path", "name", "extension", "chunk_size", "on_progress" }

-- The arguments of share:upload and d:upload (one set: both go by these
-- rules), checked before anything is sent.  A wrong Lua type raises at the
-- line that called upload; a bad value is nil and an error, made by
-- `engine` (the file's size unreadable, say: kind io) or invalid_argument.
-- Returns the plan, whose on_progress is the caller's.
function M.check_upload(engine, source, opts)
  local st = type(source)
  if st ~= "string" and st ~= "table" then util.check_type(source, "string", 1, "upload", false, 4) end
  opts = util.check_type(opts, "table", 2, "upload", true, 4) or {}
  util.check_keys(opts, "upload", M.UPLOAD_OPTIONS, 4)
  for _, k in ipairs({ "parent_id", "path", "name", "extension" }) do
    util.check_field(opts, k, "string", "upload", 4)
  end
  util.check_field(opts, "chunk_size", "number", "upload", 4)
  local on_progress = util.check_field(opts, "on_progress", "function", "upload", 4)
  local part, why = util.source_part(source, nil, "upload", 4)
  if not part then return util.invalid(why) end
  local plan
  plan, why = plan_upload(part, opts)
  if not plan then return util.fail_before(engine, why) end
  plan.on_progress = on_progress
  return plan
end

-- The form fields every request of the upload carries.
local function fields(plan, extra)
  local list = { { name = "name", data = plan.name }, { name = "extension", data = plan.extension } }
  if plan.parent_id then list[#list + 1] = { name = "parent_id", data = plan.parent_id } end
  if plan.path then list[#list + 1] = { name = "path", data = plan.path } end
  for i = 1, #extra do list[#list + 1] = extra[i] end
  return list
end

-- A reader source cut into chunks: each chunk's reader hands out exactly its
-- share of the caller's bytes, keeping what a read gave beyond it.
local function slicer(part)
  local state = { leftover = nil }
  local function skip(n)
    while n > 0 do
      local piece = part.reader()
      if type(piece) ~= "string" or piece == "" then return false end
      if #piece > n then
        state.leftover = piece:sub(n + 1)
        return true
      end
      n = n - #piece
    end
    return true
  end
  return function(offset, length)
    local left = length
    local function read()
      if left == 0 then return nil end
      local piece = state.leftover
      state.leftover = nil
      if not piece then piece = part.reader() end
      if type(piece) ~= "string" then return piece end
      if #piece > left then
        state.leftover = piece:sub(left + 1)
        piece = piece:sub(1, left)
      end
      left = left - #piece
      return piece
    end
    -- sending this chunk again: the caller's rewind, then up to its start
    local function rewind()
      if not part.rewind or not part.rewind() then return false end
      state.leftover, left = nil, length
      return skip(offset)
    end
    return read, rewind
  end
end

local function content_part(plan, name, filename, offset, length, slice)
  local p = { name = name, filename = filename, content_type = plan.content_type }
  local src = plan.part
  if src.path then
    p.path, p.offset, p.length = src.path, offset, length
  elseif src.data then
    p.data, p.offset, p.length = src.data, offset, length
  else
    p.reader, p.rewind = slice(offset, length)
    p.size = length
  end
  return p
end

-- The request's progress counts the form fields' bytes too (they come
-- first): the caller is told only about the file's.
local function progress_from(on_progress, offset, total, fields_length)
  if not on_progress then return nil end
  return function(sent)
    if sent < fields_length then return end
    return on_progress(offset + sent - fields_length, total)
  end
end

local function post(t, plan, parts, offset, length, on_progress)
  local body, err = core.multipart(parts)
  if not body then return nil, err end
  local req = t.new_request({ "Content-Type: " .. body:content_type() })
  req.multipart, req.never_resend = body, true
  req.on_progress = progress_from(on_progress, offset, plan.size, body:payload_length() - length)
  local res
  res, err = t.engine:send(req)
  body:close()
  return res, err
end

-- After a chunk went out whole and got no answer, the server may have
-- appended it: the upload cannot go on, and sending it again would corrupt.
local function chunk_failure(t, err, index, count)
  if not err.status and err.body_sent and (err.kind == "network" or err.kind == "timeout") then
    err.retryable = false
    err.message = format("%s; chunk %d of %d was sent and not answered, so it was not sent again: "
      .. "the share may hold a partial upload", err.message, index, count)
  end
  return t.engine:fail(err)
end

-- Returns the response to the request that finished the upload.
-- new_request(headers) gives a POST to the uploads call.  always_chunked:
-- even a small file goes as one chunk (is_last_chunk=1), for the owner's
-- call, whose single-request form files.ro does not publish.
function M.send(engine, plan, on_progress, new_request, always_chunked)
  local t = { engine = engine, new_request = new_request }
  if plan.size <= plan.chunk_size and not always_chunked then
    local part = content_part(plan, "file", plan.part.filename, 0, plan.size, plan.part.reader and slicer(plan.part))
    return post(t, plan, fields(plan, { part }), 0, plan.size, on_progress)
  end
  local token = core.random_token(16)
  if not token then return nil, util.new_error("io", "no random bytes for a unique chunk name") end
  -- upstream keeps the chunk under this name's base name: no slashes
  local partname = token .. "-" .. plan.part.filename:gsub("[^%w._-]", "_") .. ".part"
  local slice = plan.part.reader and slicer(plan.part)
  local count = math.max(1, math.ceil(plan.size / plan.chunk_size))
  local offset, index = 0, 0
  while true do
    index = index + 1
    local length = min(plan.chunk_size, plan.size - offset)
    local last = offset + length == plan.size
    local parts = fields(plan, { { name = "is_last_chunk", data = last and "1" or "0" },
      content_part(plan, "chunk", partname, offset, length, slice) })
    local res, err = post(t, plan, parts, offset, length, on_progress)
    if not res then return chunk_failure(t, err, index, count) end
    if last then return res end
    if res.status ~= 200 or res.body:find("%S") then
      return engine:protocol_error(res, format("chunk %d of %d: expected 200 with an empty body, got %d",
        index, count, res.status))
    end
    offset = offset + length
  end
end

return M
