-- OAuth's tokens shared by a fleet: the record and the refresh lock that
-- fileapi.oauth keeps in a lua_shared_dict for one nginx, kept in the store
-- for every machine, so that one refresh goes out per expiry fleet-wide.
--
-- The record is a hash: `v`, its version (a save only replaces an older
-- one, so a slow machine cannot put back a token that was already
-- replaced), and `b`, the tokens sealed with AES-256-GCM under a key drawn
-- (HKDF) from the application's client secret, which never goes to the
-- store: a reader of the store learns neither token.  The key's name and
-- the version are the seal's associated data: a record copied under another
-- grant's name, or put back at another version, does not open.  The lock is
-- SET NX PX with a random owner, released only by its owner.
--
-- When the store is unavailable the record falls back to `fallback` (the
-- nginx's token_dict record, or nothing: the process keeps its own).
local core = require "fileapi.core"
local redis = require "fileapi.store.redis"
local cjson = require("cjson").new()

local type, tonumber, tostring, pcall, format = type, tonumber, tostring, pcall, string.format

local M = {}

M.LOCK_MS = 30000

M.SAVE = redis.script([[
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if tonumber(ARGV[1]) <= v then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
]])

M.UNLOCK = redis.script([[
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
]])

-- A record doc is kept a day past its token's expiry at most (a week for
-- a record without one): enough for any machine to come back to it.
local function keep_ms(doc)
  local left = (tonumber(doc.expires_at) or 0) - core.time()
  if left < 0 then left = 0 end
  return math.floor((left + 86400) * 1000)
end

-- What a sealed record is bound to: where it lives, and which version.
local function bound(key, version)
  return key .. "\0" .. format("%d", version)
end

-- store: an open fileapi.store; subject: what names the grant (client id
-- and the first refresh token); seal_key: derived from the client secret.
function M.record(store, subject, seal_key, fallback)
  local rec, lock_key = store:key("oauth", subject, "token"), store:key("oauth", subject, "lock")
  local owner = core.random_token(24) or tostring(core.time())
  local s, locked_in = { poll = 0.02, remote = true }, nil

  function s.load()
    local r = store:call("HMGET", rec, "v", "b")
    if r == nil then return fallback and fallback.load() end
    local v = type(r) == "table" and tonumber(r[1])
    if not v or not r[2] then return nil end
    local plain = core.unseal(seal_key, r[2], bound(rec, v))
    if not plain then return nil end -- another application's, tampered with, or moved here
    local ok, doc = pcall(cjson.decode, plain)
    if not (ok and type(doc) == "table") then return nil end
    doc.version = v
    return doc
  end

  function s.save(doc)
    if fallback then fallback.save(doc) end
    local sealed = core.seal(seal_key, cjson.encode(doc), bound(rec, doc.version or 0))
    if sealed then store:eval(M.SAVE, { rec }, { doc.version or 0, sealed, keep_ms(doc) }) end
  end

  function s.lock()
    local r = store:call("SET", lock_key, owner, "NX", "PX", M.LOCK_MS)
    if r ~= nil then
      locked_in = r and "store" or nil
      return r and true or false
    end
    -- the store is away: this nginx's dict, or this process alone
    locked_in = "fallback"
    return fallback == nil or fallback.lock()
  end

  function s.unlock()
    if locked_in == "store" then
      store:eval(M.UNLOCK, { lock_key }, { owner })
    elseif locked_in == "fallback" and fallback then
      fallback.unlock()
    end
    locked_in = nil
  end

  return s
end

return M
