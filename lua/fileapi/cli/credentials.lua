-- The OAuth tokens `fileapi login` stores (and the files.ro owner's token
-- of `fileapi drive-login`, drive.json): $XDG_CONFIG_HOME/fileapi/
-- credentials.json (default ~/.config), the folder 0700 and the file 0600,
-- written to a temporary file and renamed, so a reader never sees half of
-- it.  Commands refresh them under a file lock (credentials.json.lock): two
-- commands at an expiry send one refresh, and the second reads the first's
-- tokens.
local core = require "fileapi.core"
local cjson = require("cjson").new()

local M = {}

M.FIELDS = { "client_id", "client_secret", "access_token", "refresh_token", "expires_at" }

function M.folder()
  local base = os.getenv("XDG_CONFIG_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or ".") .. "/.config" end
  return base .. "/fileapi"
end

function M.path()
  return M.folder() .. "/credentials.json"
end

-- A stored JSON object: the table; false when the file holds none; nil
-- when there is no file.
local function read_doc(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local ok, doc = pcall(cjson.decode, text)
  return ok and type(doc) == "table" and doc or false
end

-- The stored tokens, or nil (and why) when there are none that make sense.
function M.load(path)
  local doc = read_doc(path or M.path())
  if doc == nil then return nil end
  if not doc then return nil, "the stored credentials cannot be read: run fileapi login" end
  for _, k in ipairs(M.FIELDS) do
    local want = k == "expires_at" and "number" or "string"
    if type(doc[k]) ~= want then return nil, "the stored credentials lack " .. k .. ": run fileapi login" end
  end
  return doc
end

-- The folder of path, made (0700) when missing, its parent too.
local function make_folder(path)
  local folder = path:match("^(.*)/[^/]*$") or "."
  local parent = folder:match("^(.*)/[^/]*$")
  if parent and parent ~= "" then core.mkdir_private(parent) end
  local ok, err = core.mkdir_private(folder)
  if not ok then return nil, err end
  return folder
end

-- Writes text atomically: a 0600 temporary file beside, then rename.
local function write_private(path, text)
  local folder, err = make_folder(path)
  if not folder then return nil, err end
  local tmp, terr = core.temp_file(folder, ".credentials")
  if not tmp then return nil, terr end
  local f = io.open(tmp, "wb")
  local written = f and f:write(text)
  local closed = f and f:close()
  local renamed, rerr = false, "cannot write " .. tmp
  if written and closed then renamed, rerr = os.rename(tmp, path) end
  if not renamed then
    os.remove(tmp)
    return nil, core.error({ kind = "io", message = tostring(rerr), retryable = false, attempts = 0 })
  end
  return true
end

function M.save(tokens, path)
  local doc = {}
  for _, k in ipairs(M.FIELDS) do doc[k] = tokens[k] end
  return write_private(path or M.path(), cjson.encode(doc) .. "\n")
end

-- The files.ro owner's token `fileapi drive-login` stores, beside the
-- OAuth tokens: drive.json, same folder, same modes.
function M.drive_path()
  return M.folder() .. "/drive.json"
end

function M.load_drive(path)
  local doc = read_doc(path or M.drive_path())
  if doc == nil then return nil end
  if not doc or type(doc.token) ~= "string" then
    return nil, "the stored files.ro token cannot be read: run fileapi drive-login"
  end
  return doc
end

function M.save_drive(doc, path)
  return write_private(path or M.drive_path(), cjson.encode({ token = doc.token, email = doc.email }) .. "\n")
end

-- Runs fn() holding the lock; returns what fn returns.
function M.locked(fn, path)
  path = path or M.path()
  local folder, ferr = make_folder(path)
  if not folder then return nil, ferr end
  local lock, err = core.lock_file(path .. ".lock", 60)
  if not lock then return nil, err end
  local ok, a, b, c = pcall(fn)
  lock:unlock()
  if not ok then error(a, 0) end
  return a, b, c
end

function M.remove(path)
  path = path or M.path()
  local existed = os.remove(path) ~= nil
  os.remove(path .. ".lock")
  return existed
end

return M
