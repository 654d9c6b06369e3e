-- OAuth's tokens shared by a fleet: the record and the refresh lock that
-- one nginx keeps in a lua_shared_dict (fileapi.mijnklantportaal.token_dict),
-- kept in the store for every machine, so that one refresh goes out per
-- expiry fleet-wide.  It offers the shared record's calls that OAuth's
-- keeper works through (the contract is written at the top of
-- fileapi/mijnklantportaal/oauth_keeper.lua).
--
-- Keys (Store:key hashes what they are about; no token is in a name):
--   oauth:{grant}:token  a hash: `v`, the record's version (a save only
--                        replaces an older one, so a slow machine cannot put
--                        back a token that was already replaced), and `b`,
--                        the tokens sealed with AES-256-GCM under a key drawn
--                        (HKDF) from the application's client secret, which
--                        never goes to the store, with the key's name and the
--                        version as associated data: a record copied under
--                        another grant's name, or put back at another
--                        version, does not open.
--   oauth:{grant}:lock   the refresh lock, SET NX PX with a random owner: a
--                        lease of LOCK_MS, renewed and released only by its
--                        owner.
--   oauth:{token}:grant  an alias: the grant a refresh token belongs to
--                        (sealed the same way, bound to its own name).
-- The grant is named by the first refresh token the store saw for it; the
-- aliases of its latest refresh tokens (the keeper's CHAIN of them) are
-- written with each save, so a process built from tokens an earlier refresh
-- handed to on_tokens finds the same record (and budget) with one look-up.
--
-- When the store fails, "wait" never takes the lock without it: lock and
-- renew answer "cannot tell" until it answers (the keeper waits within its
-- deadline).  "local" does the same for GRACE seconds, so that a stall or a
-- dropped connection is ridden out, and then falls back to `fallback` (the
-- nginx's token_dict record), or to the process alone.
local core = require "fileapi.core"
local redis = require "fileapi.store.redis"
local cjson = require("cjson").new()

local type, tonumber, ipairs, pcall, format = type, tonumber, ipairs, pcall, string.format

local M = {}

M.LOCK_MS = 30000 -- the refresh lock's lease
M.GRACE = 3 -- seconds "local" waits for a failed store before going on without it

-- KEYS: the record, then aliases; ARGV: the version, the sealed tokens, the
-- time to keep them (ms), then each alias's sealed grant.
M.SAVE = redis.script([[
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if tonumber(ARGV[1]) <= v then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ARGV[3]) end
return tonumber(ARGV[1])
]])

M.RENEW = redis.script([[
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
]])

M.UNLOCK = redis.script([[
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
]])

-- A record is kept a day past its token's expiry at most (a week for one
-- without): enough for any machine to come back to it.
local function keep_ms(doc)
  local left = (tonumber(doc.expires_at) or 0) - core.time()
  if left < 0 then left = 0 end
  return format("%d", math.floor((left + 86400) * 1000))
end

-- What a sealed value is bound to: where it lives, and which version.
local function bound(key, version)
  return key .. "\0" .. version
end

-- cfg: own (fileapi.mijnklantportaal.oauth's token id of the refresh token
-- the client was built with), seal_key (secret material from the client secret),
-- fallback (the token_dict record, or nil), mode ("local" | "wait").
function M.record(store, cfg)
  local seal_key, fallback = cfg.seal_key, cfg.fallback
  local own, grant, rec, lock_key = cfg.own, nil, nil, nil
  local strict = cfg.mode == "wait"
  local away_since -- since when the store has not answered
  local s = { poll = 0.02, remote = true, lease = M.LOCK_MS / 1000, patience = strict and math.huge or M.GRACE }

  -- "local" goes on without the store once it stayed away for GRACE
  local function given_up()
    return not strict and away_since ~= nil and core.time() - away_since >= M.GRACE
  end
  local function answered()
    away_since = nil
    s.patience = strict and math.huge or M.GRACE
  end
  -- (a success is not worth waiting for a store "local" has gone on without)
  local function unanswered()
    away_since = away_since or core.time()
    if given_up() then s.patience = 0 end
    return nil, store:unavailable_error()
  end

  local function use_grant(g)
    grant, rec, lock_key = g, store:key("oauth", g, "token"), store:key("oauth", g, "lock")
    if fallback and fallback.join then fallback.join(g) end
  end

  -- The grant this client's refresh token belongs to: its alias, or (none
  -- yet, or one that does not open) the token itself starts the grant.
  local function resolve()
    if grant then return true end
    local akey = store:key("oauth", own, "grant")
    local r = store:call("GET", akey)
    if r == nil then return false end
    answered()
    use_grant(type(r) == "string" and core.unseal(seal_key, r, bound(akey, "grant")) or own)
    return true
  end

  function s.grant()
    resolve()
    return grant or (fallback and fallback.grant and fallback.grant())
  end

  function s.forget(id)
    own, grant = id, nil
    if fallback and fallback.forget then fallback.forget(id) end
  end

  function s.load()
    local r = resolve() and store:call("HMGET", rec, "v", "b") or nil
    if r == nil then
      unanswered()
      return fallback and fallback.load()
    end
    answered()
    local v = tonumber(r[1])
    if type(r) ~= "table" or not r[2] or not v then return nil end
    local plain = core.unseal(seal_key, r[2], bound(rec, format("%d", v)))
    if not plain then return nil end -- another application's, tampered with, or moved here
    local ok, doc = pcall(cjson.decode, plain)
    if not (ok and type(doc) == "table") then return nil end
    doc.version = v
    return doc
  end

  function s.save(doc, ids)
    if fallback then fallback.save(doc, ids) end
    if not resolve() then return unanswered() end
    local version = format("%d", doc.version)
    local sealed = core.seal(seal_key, cjson.encode(doc), bound(rec, version))
    if not sealed then return nil, "the tokens could not be sealed" end
    local keys, args = { rec }, { version, sealed, keep_ms(doc) }
    for _, id in ipairs(ids or {}) do
      local akey = store:key("oauth", id, "grant")
      local alias = core.seal(seal_key, grant, bound(akey, "grant"))
      if alias then
        keys[#keys + 1], args[#args + 1] = akey, alias
      end
    end
    local r = store:eval(M.SAVE, keys, args)
    if r == nil then return unanswered() end
    answered()
    return r ~= 0 and tonumber(r) or false
  end

  function s.lock()
    s.lease = M.LOCK_MS / 1000
    if resolve() then
      local id = core.random_token(24)
      local r = id and store:call("SET", lock_key, id, "NX", "PX", format("%d", M.LOCK_MS))
      if r ~= nil then
        answered()
        return r and { key = lock_key, id = id } or false
      end
    end
    local _, err = unanswered()
    if not given_up() then return nil, err end
    -- the store stayed away: this nginx's dict, or this process alone
    if not fallback then return { alone = true } end
    local held = fallback.lock()
    return held and { fallback = held } or false
  end

  function s.renew(owner)
    if owner.fallback then return fallback.renew(owner.fallback) end
    if owner.alone then return true end
    local r = store:eval(M.RENEW, { owner.key }, { owner.id, format("%d", M.LOCK_MS) })
    if r ~= nil then
      answered()
      return r == 1
    end
    local _, err = unanswered()
    if given_up() then return true end
    return nil, err
  end

  function s.unlock(owner)
    if owner.fallback then
      fallback.unlock(owner.fallback)
    elseif owner.key then
      store:eval(M.UNLOCK, { owner.key }, { owner.id })
    end
  end

  return s
end

return M
