-- OAuth's tokens shared by every worker of one nginx (token_dict): the
-- record, the grant's aliases and the refresh lock in a lua_shared_dict,
-- with the shared record's calls that OAuth's keeper works through (the
-- contract is at the top of fileapi/mijnklantportaal/oauth_keeper.lua).  A
-- fleet's store (fileapi.store.tokens) keeps the same things in Redis,
-- over this one.
--
-- Keys: fileapi:oauth:<grant> (the record, JSON), fileapi:oauth:<grant>:lock
-- (the lock: an owner, with the lease as its expiry) and
-- fileapi:oauth:alias:<token id> (the grant a refresh token belongs to).
-- The dict offers no compare-and-set: a save compares and sets under a
-- mutex entry the workers share (held for a get and a set, never across a
-- yield).
local core = require "fileapi.core"
local cjson = require("cjson").new()

local type, ipairs, pcall, tonumber, tostring, error = type, ipairs, pcall, tonumber, tostring, error

local M = {}

M.LEASE = 30 -- seconds the refresh lock lives

local function decode(text)
  local ok, doc = pcall(cjson.decode, text or "")
  return ok and type(doc) == "table" and doc or nil
end

-- How long a record and its aliases are kept: a day past the token's expiry.
local function keep(doc)
  local left = (tonumber(doc.expires_at) or 0) - core.time()
  return (left > 0 and left or 0) + 86400
end

-- fn under the dict's mutex for `key`; a mutex held past its short expiry
-- (a worker that died holding it) is gone by then.
local function exclusive(dict, key, fn)
  local mutex = key .. ":cas"
  for _ = 1, 10000 do
    if dict:add(mutex, true, 0.05) then
      local ok, a = pcall(fn)
      dict:delete(mutex)
      if not ok then error(a, 0) end
      return a
    end
  end
  return fn()
end

local owner_seq = 0
local function new_owner()
  owner_seq = owner_seq + 1
  return (core.random_token(16) or tostring(core.time())) .. ":" .. owner_seq
end

-- dict: the lua_shared_dict; own: the token id of the refresh token the
-- client was built with.
function M.record(dict, own)
  local s = { poll = 0.005, lease = M.LEASE }
  local grant

  -- The grant: the alias of our refresh token, or (the first to ask) the
  -- token itself names it.
  local function key()
    if not grant then
      local alias = "fileapi:oauth:alias:" .. own
      dict:add(alias, own, 86400)
      grant = dict:get(alias) or own
    end
    return "fileapi:oauth:" .. grant
  end

  function s.grant()
    key()
    return grant
  end

  -- The fleet's store named the grant: this nginx follows it.
  function s.join(g)
    grant = g
    dict:set("fileapi:oauth:alias:" .. own, g, 86400)
  end

  function s.forget(id)
    own, grant = id, nil
  end

  function s.load()
    return decode(dict:get(key()))
  end

  function s.save(doc, ids)
    local k = key()
    return exclusive(dict, k, function()
      local cur = decode(dict:get(k))
      if cur and (tonumber(cur.version) or 0) >= doc.version then return false end
      local ttl = keep(doc)
      dict:set(k, cjson.encode(doc), ttl)
      for _, id in ipairs(ids or {}) do dict:set("fileapi:oauth:alias:" .. id, grant, ttl) end
      return doc.version
    end)
  end

  function s.lock()
    s.lease = M.LEASE
    local owner, lock = new_owner(), key() .. ":lock"
    if dict:add(lock, owner, M.LEASE) then return { key = lock, id = owner } end
    return false
  end

  function s.renew(owner)
    if dict:get(owner.key) ~= owner.id then return false end
    dict:set(owner.key, owner.id, M.LEASE)
    return true
  end

  function s.unlock(owner)
    if dict:get(owner.key) == owner.id then dict:delete(owner.key) end
  end

  return s
end

return M
