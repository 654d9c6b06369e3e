-- The sign-ins the command line stores, and their reading: the OAuth
-- tokens of `fileapi login` (credentials.json) and the files.ro owner's
-- token of `fileapi drive-login` (drive.json), in $XDG_CONFIG_HOME/fileapi
-- (default ~/.config/fileapi).  The library reads the owner's token from
-- here when drive.new is given none (drive.default_token); writing them
-- (atomically, under a file lock) is the command's: fileapi.cli.credentials.
local cjson = require("cjson").new()

local type, ipairs, pcall, getenv = type, ipairs, pcall, os.getenv

local M = {}

M.FIELDS = { "client_id", "client_secret", "access_token", "refresh_token", "expires_at" }

function M.folder()
  local base = getenv("XDG_CONFIG_HOME")
  if not base or base == "" then base = (getenv("HOME") or ".") .. "/.config" end
  return base .. "/fileapi"
end

function M.path()
  return M.folder() .. "/credentials.json"
end

-- The files.ro owner's token, beside the OAuth tokens: drive.json.
function M.drive_path()
  return M.folder() .. "/drive.json"
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

function M.load_drive(path)
  local doc = read_doc(path or M.drive_path())
  if doc == nil then return nil end
  if not doc or type(doc.token) ~= "string" then
    return nil, "the stored files.ro token cannot be read: run fileapi drive-login"
  end
  return doc
end

return M
