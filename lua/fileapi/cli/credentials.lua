-- Writing the OAuth tokens `fileapi login` stores (and the files.ro owner's
-- token of `fileapi drive-login`, drive.json); where they are and their
-- reading are the library's (fileapi.credentials: drive.new reads the
-- owner's token there too), and this module hands those on.  The folder is
-- 0700 and the file 0600, written to a temporary file, synced, renamed and
-- the folder synced, so a reader never sees half of it and a crash never
-- loses a rotated refresh token.  Writers hold a file lock
-- (credentials.json.lock): every refresh of a command goes through it and
-- reads the file first (record below), so two commands at an expiry send
-- one refresh and the second takes the first's tokens; login and logout
-- take it too.
local core = require "fileapi.core"
local stored = require "fileapi.credentials"
local cjson = require("cjson").new()

local M = {}

-- The library's reading and locations, for the command's modules.
M.FIELDS, M.folder, M.path, M.drive_path = stored.FIELDS, stored.folder, stored.path, stored.drive_path
M.load, M.load_drive = stored.load, stored.load_drive

-- What else the file keeps: which sign-in it is (`login`, made by `fileapi
-- login`), and the keeper's record (fileapi.mijnklantportaal.oauth_keeper):
-- its version, when it was refreshed, and a refusal of the token endpoint
-- that ended it.
M.RECORD_FIELDS = { "login", "version", "refreshed_at", "dead", "oauth_error" }

-- The folder of path, made (0700) when missing, its parent too.
local function make_folder(path)
  local folder = path:match("^(.*)/[^/]*$") or "."
  local parent = folder:match("^(.*)/[^/]*$")
  if parent and parent ~= "" then core.mkdir_private(parent) end
  local ok, err = core.mkdir_private(folder)
  if not ok then return nil, err end
  return folder
end

local function io_error(message)
  return nil, core.error({ kind = "io", message = message, retryable = false, attempts = 0 })
end

-- Writes text durably and atomically: a 0600 temporary file beside, synced,
-- renamed over path, then the folder synced.  Every step's failure is
-- returned (nil, err): a full disk must not pass for stored tokens.
local function write_private(path, text)
  local folder, err = make_folder(path)
  if not folder then return nil, err end
  local tmp, terr = core.temp_file(folder, ".credentials")
  if not tmp then return nil, terr end
  local f, oerr = io.open(tmp, "wb")
  local ok, werr = false, oerr
  if f then
    ok, werr = f:write(text)
    if ok then ok, werr = f:flush() end
    local closed, cerr = f:close()
    if ok and not closed then ok, werr = false, cerr end
  end
  if ok then ok, werr = core.fsync(tmp) end
  if ok then ok, werr = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    return io_error(("cannot write %s: %s"):format(path, tostring(type(werr) == "table" and werr.message or werr)))
  end
  local synced, serr = core.fsync(folder)
  if not synced then return io_error(("cannot sync %s: %s"):format(folder, tostring(serr.message))) end
  return true
end

function M.save(tokens, path)
  local doc = {}
  for _, k in ipairs(M.FIELDS) do doc[k] = tokens[k] end
  for _, k in ipairs(M.RECORD_FIELDS) do doc[k] = tokens[k] end
  return write_private(path or M.path(), cjson.encode(doc) .. "\n")
end

-- The files.ro owner's token, beside the OAuth tokens (same folder, same
-- modes).
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

-- Deletes the stored tokens (the caller holds the lock); true when there
-- were some.  The lock file stays: removing it under a waiter's feet would
-- let two processes hold "the" lock at once.
function M.remove(path)
  path = path or M.path()
  local existed = os.remove(path) ~= nil
  if existed then core.fsync(path:match("^(.*)/[^/]*$") or ".") end
  return existed
end

-- The fields of the file that are the sign-in's, not the keeper's record.
local OWN = { client_id = true, client_secret = true, login = true }

-- The credentials file as the shared record of OAuth's keeper
-- (fileapi.mijnklantportaal.oauth_keeper: load, save, lock, unlock): every refresh of a command takes the lock and
-- reads the file, so a token another command wrote is taken instead of
-- sending a refresh token that rotation may have killed.  The keeper's
-- record doc (tokens, version, ...) is kept whole beside the sign-in's
-- fields.  `login` names the sign-in the command started from: after a
-- logout or another login the file is no longer this record (nothing is
-- read from it or written to it).  on_error(what, err) hears of a write
-- that failed, and of a lock that cannot be taken (then the refresh goes on
-- without it).
local STORE_FAILED = "the refreshed tokens could not be stored; the next command may need fileapi login"

function M.record(path, login, on_error)
  local s, held = { poll = 0.02 }, nil
  local function mine()
    local doc = M.load(path)
    if doc and (doc.login or "") == (login or "") then return doc end
    return nil
  end
  function s.load()
    local doc = mine()
    if not doc then return nil end
    local out = {}
    for k, v in pairs(doc) do
      if not OWN[k] then out[k] = v end
    end
    out.version = tonumber(out.version) or 0
    return out
  end
  -- Replaces an older record only: true when written, false when the file
  -- holds a newer one or another sign-in, nil and err when the write failed.
  local function write(doc)
    local now = mine()
    if not now or (tonumber(now.version) or 0) >= (doc.version or 0) then return false end
    local out = { client_id = now.client_id, client_secret = now.client_secret, login = now.login }
    for k, v in pairs(doc) do
      if not OWN[k] then out[k] = v end
    end
    local ok, err = write_private(path, cjson.encode(out) .. "\n")
    if not ok then
      on_error(STORE_FAILED, err)
      return nil, err
    end
    return true
  end
  function s.save(doc)
    if held then return write(doc) end
    local ran = false
    local a, b = M.locked(function()
      ran = true
      return write(doc)
    end, path)
    if not ran then on_error(STORE_FAILED, b) end
    return a, b
  end
  function s.lock()
    if held then return false end
    local lock, err = core.lock_file(path .. ".lock", 0)
    if lock then
      held = lock
      return true
    end
    if err.errno_name == "ETIMEDOUT" then return false end -- another command refreshes
    on_error("cannot take the lock, so this refresh goes without it", err)
    held = true -- nothing to release: refresh without the lock rather than not at all
    return true
  end
  function s.unlock()
    if type(held) == "userdata" then held:unlock() end
    held = nil
  end
  return s
end

return M
