-- The keeper a MijnKlantportaal OAuth client holds its tokens in (the
-- token endpoint's calls: fileapi.mijnklantportaal.oauth).
--
-- The keeper refreshes before a call when the access token expires within a
-- minute, and once after a 401.  One refresh goes out per expiry: light
-- threads of a client wait for the one under way; beyond one client the
-- tokens and a refresh lock live in a shared record: token_dict's
-- (fileapi.mijnklantportaal.token_dict: the workers of an nginx), the store's
-- (fileapi.store.tokens: a fleet, over token_dict's while the store is
-- away), or one a caller hands over (cfg.shared: the command line's
-- credentials file).  The keeper works through these calls of a record;
-- none raises, any light thread may make them:
--
--   load() -> doc | nil         { access_token, refresh_token, expires_at,
--                               refreshed_at, version, dead, oauth_error };
--                               nil: none, unreadable, or out of reach
--   save(doc, ids) -> version | false | nil, err
--                               compare and set: doc is stored only if
--                               doc.version is above the record's; the
--                               version stored (true: doc's); false: refused,
--                               the record moved on; nil: out of reach.  ids
--                               (may be ignored): token ids (M.token_id) of
--                               the grant's refresh tokens, by which a client
--                               built from any of them finds the record
--   lock() -> owner | false | nil, err
--                               the refresh lock: any value naming this hold;
--                               false: another holds it; nil: cannot tell now
--                               (the keeper tries again until its deadline)
--   renew(owner) -> true | false | nil, err     (optional)
--                               whether owner still holds the lock (its lease
--                               then starts again); nil: cannot tell now
--   unlock(owner)               releases the lock if owner still holds it
--   grant() -> id | nil         (optional) the grant's stable id, once known
--   forget(id)                  (optional) look the grant up again, by the
--                               refresh token with that token id
-- and fields: poll (seconds between tries), remote (read at most once a
-- second while the token is fresh), lease (seconds a lock lives unless
-- renewed; nil: until unlock), patience (seconds a success is worth waiting
-- for a record out of reach, read each time; default: the lease).
--
-- The lock holder renews (so checks) its lease right before the token
-- request and bounds the request by it (no wait for a Retry-After outlives
-- it), and renews it again before publishing, so no one else can be sending
-- the same refresh token.  A save the record refuses reads it again and
-- takes what is newer; a success replaces a record that says the grant is
-- dead, never the other way round; a refresh token the server refuses
-- (invalid_grant, any 400 or 401) is first looked for in the record, where
-- a peer that spent it first left its successor; else the keeper fails fast
-- with that error until set_tokens.
--
-- Each refresh this client needed ends with a `refresh` event (by "self"
-- when its own token request brought the token, else "peer"); a wait for
-- a refresh under way elsewhere is announced once, with the longest it may
-- last (the engine handed in as cfg.events: on_wait and on_event).
--
-- The record and the rate budget are keyed by the grant, which stays the
-- same across refresh-token rotation: the first refresh token a record met
-- names it, and each later one is an alias of it (written with each save),
-- so a client built from tokens on_tokens saved (a worker made later, a
-- machine restarted) joins the same record and budget.
local core = require "fileapi.core"
local util = require "fileapi.util"
local oauth = require "fileapi.mijnklantportaal.oauth"
local token_dict = require "fileapi.mijnklantportaal.token_dict"

local type, ipairs, tostring, tonumber, pcall, error = type, ipairs, tostring, tonumber, pcall, error
local rawget, setmetatable = rawget, setmetatable
local floor = math.floor

local M = {}

local function now() return core.time() end

local Keeper = {}
Keeper.__index = Keeper

-- The secrets live here, keyed by the keeper, never in its fields.
local private = setmetatable({}, { __mode = "k" })

M.REFRESH_AHEAD = 60 -- seconds: refresh when the token expires sooner
M.CHAIN = 4 -- the refresh tokens of a grant a save names as its aliases

-- What a refresh keeps clear of its lease's end.
function M.lease_margin(lease) return math.min(2, lease / 5) end

-- cfg: oauth (the five fields), on_tokens, token_dict, store (an open one,
-- handed in: fileapi.client_options), shared (a record as above, in place
-- of token_dict and store: files.new's internal _shared_tokens, the
-- command line's credentials file), base (checked), token_engine (an
-- engine for the manage host), secrets (the list the engines redact with:
-- new tokens rotate through it), events (the client's engine: what it
-- waits for and its refreshes are told there).
function M.new(cfg)
  local o = cfg.oauth
  local k = setmetatable({ refreshes = 0, version = 0 }, Keeper)
  local own = oauth.token_id(o.client_id, o.refresh_token)
  local p = { client_id = o.client_id, client_secret = o.client_secret, access_token = o.access_token,
    refresh_token = o.refresh_token, expires_at = o.expires_at or 0, on_tokens = cfg.on_tokens,
    base = cfg.base, engine = cfg.token_engine, secrets = cfg.secrets, chain = { own }, shared = cfg.shared,
    events = cfg.events }
  private[k] = p
  if not p.shared and cfg.token_dict then
    p.shared = token_dict.record(rawget(_G, "ngx").shared[cfg.token_dict], own)
  end
  if not cfg.shared and cfg.store then
    -- the fleet's record, over this nginx's (or nothing) while the store is away
    p.shared = cfg.store:token_record(own, "fileapi-oauth\0" .. o.client_id .. "\0" .. o.client_secret, p.shared)
  end
  k.refreshable = true
  return k
end

-- fn(grant id) is told when the grant's id is learnt (the budget follows).
function Keeper:on_grant(fn) private[self].on_grant = fn end

local function remember(p, s) util.add_secret(p.secrets, s, true) end

-- A wait of this refresh, announced once per refresh (seconds: the longest
-- it may last; it ends as soon as what it waits for is there).
local function announce_wait(p, seconds, reason)
  if p.announced or not p.events then return end
  p.announced = true
  p.events:waiting(seconds > 0 and seconds or 0, reason)
end

-- A refresh token of the grant joins the chain a save names as aliases.
local function add_chain(p, refresh_token)
  local id = oauth.token_id(p.client_id, refresh_token)
  for _, known in ipairs(p.chain) do
    if known == id then return end
  end
  p.chain[#p.chain + 1] = id
  if #p.chain > M.CHAIN then table.remove(p.chain, 1) end
end

-- The grant as the shared record names it.  When that changes (a client
-- built from a saved token found its grant's record), versions start over
-- with that record's, and the budget follows.
local function follow_grant(k)
  local p = private[k]
  local g = p.shared.grant and p.shared.grant()
  if not g or g == p.grant then return end
  p.grant, k.version = g, 0
  if p.on_grant then p.on_grant(g) end
end

-- The record's tokens (or its word that the grant is dead) become ours.
local function take(k, doc)
  local p = private[k]
  k.version = tonumber(doc.version) or k.version
  if doc.dead then
    p.dead = util.new_error("unauthorized", doc.dead, { oauth_error = doc.oauth_error })
    return
  end
  p.dead = nil
  p.access_token, p.refresh_token, p.expires_at = doc.access_token, doc.refresh_token, doc.expires_at
  k.refreshed_at = doc.refreshed_at
  remember(p, doc.access_token)
  remember(p, doc.refresh_token)
  if type(doc.refresh_token) == "string" then add_chain(p, doc.refresh_token) end
end

local publish

-- Takes what the shared record holds when it is newer than ours (first
-- putting there a success it missed while out of reach).
local function adopt(k)
  local p = private[k]
  if not p.shared then return end
  -- (not beside a refresh or a save of this client's: the refresh saves
  -- newer tokens, and two saves of one version must not race)
  if p.pending and not k.busy and not p.publishing then publish(k, nil, p.pending) end
  local doc = p.shared.load()
  follow_grant(k)
  if doc and (tonumber(doc.version) or 0) > k.version then take(k, doc) end
end

local function fresh(p, stale)
  return p.access_token ~= stale and (p.expires_at or 0) - now() > M.REFRESH_AHEAD
end

-- One save of our tokens (or of `dead`, the refusal) as the next version.
local function save_next(k, dead)
  local p = private[k]
  follow_grant(k)
  local doc = { access_token = p.access_token, refresh_token = p.refresh_token, expires_at = p.expires_at,
    refreshed_at = k.refreshed_at, version = k.version + 1 }
  if dead then doc.dead, doc.oauth_error = dead.message, dead.oauth_error end
  local v = p.shared.save(doc, p.chain)
  if v == true then v = doc.version end
  return v
end

-- Inside nginx a success kept while the record was out of reach is put
-- there by a timer too, not only at this worker's next call: a worker that
-- gets no more requests would leave the peers whose refresh the server
-- refused (it had spent the token first) taking the grant for dead.  A
-- plain process has no loop to run it in: its next call does it.  The
-- timer never saves while a refresh or another save of this client is
-- under way (two saves of one version: the older tokens could win); at
-- the worker's exit it tries once more.
M.FLUSH_FIRST, M.FLUSH_MOST = 0.25, 5 -- seconds between tries: doubling, at most

local function flush_later(k, delay)
  local p = private[k]
  local ngx = rawget(_G, "ngx")
  if p.flushing or not (type(ngx) == "table" and ngx.timer and ngx.get_phase and ngx.get_phase() ~= "init") then
    return
  end
  delay = delay or M.FLUSH_FIRST
  local function tick(premature)
    local pending = p.pending
    local held = k.busy or p.publishing
    if pending and not held and not pcall(publish, k, nil, pending) then p.pending = p.pending or pending end
    p.flushing = nil -- (held meanwhile: a save failing here schedules no tick of its own)
    if p.pending and not premature then flush_later(k, held and delay or math.min(delay * 2, M.FLUSH_MOST)) end
  end
  local ok, timer = pcall(ngx.timer.at, delay, tick)
  p.flushing = ok and timer and true or nil
end

-- One save of our tokens to the record and what follows from its answer
-- (publish's work, below).
local function publish_once(k, dead, force)
  local p = private[k]
  local v = save_next(k, dead)
  if v == false and not dead then
    local cur = p.shared.load()
    if cur and (force == "always" or (force == "dead" and cur.dead)) then
      k.version = math.max(k.version, tonumber(cur.version) or 0)
      v = save_next(k, nil)
    end
  end
  if v == nil then
    if not dead then
      p.pending = force or true
      flush_later(k)
    end
    return nil
  end
  if v == false then
    adopt(k)
    return false
  end
  k.version = math.max(k.version, v)
  return true
end

-- Puts our tokens (dead: the refusal instead) in the shared record.  True
-- when it holds them; false when it had moved on (what it holds, newer, was
-- taken); nil when it was out of reach (a success is kept, to be put there
-- at the next chance).  force: "dead" (a success replaces a record that
-- says the grant is dead: the server has just answered us) or "always"
-- (set_tokens: the caller's new tokens).  While it runs (a save may yield
-- to other light threads) p.publishing says so: a refresh waits for it.
publish = function(k, dead, force)
  local p = private[k]
  p.pending = nil
  if not p.shared then return true end
  local outer = not p.publishing
  p.publishing = true
  local ok, r = pcall(publish_once, k, dead, force)
  if outer then p.publishing = nil end
  if not ok then error(r, 0) end
  return r
end

local function interrupted() return util.new_error("aborted", "interrupted", { interrupted = true }) end
local function waited_too_long()
  return util.new_error("timeout", "waited too long for the token refresh under way elsewhere")
end

-- A success reaches the record, within `until` while it is out of reach.
local function publish_within(k, sleep, until_)
  local p = private[k]
  local poll = p.shared.poll or 0.005
  while publish(k, nil, "dead") == nil and now() + poll < until_ do
    announce_wait(p, until_ - now(), "store")
    if sleep(poll) == false then return end
  end
end

-- on_tokens after a refresh.  Its failure is the application's to hear
-- of (one warning, its words scrubbed of the client's secrets), never the
-- call's.
local function tell_tokens(k, tokens)
  local p = private[k]
  if not p.on_tokens then return end
  local ok, why = pcall(p.on_tokens, { access_token = p.access_token, refresh_token = p.refresh_token,
    expires_in = tokens.expires_in, expires_at = p.expires_at })
  if ok then return end
  local shown, text = pcall(tostring, why)
  text = util.redact(shown and type(text) == "string" and text or "an error that cannot be shown", p.secrets)
  util.warn("fileapi: on_tokens raised: " .. text:gsub("%c", " "):sub(1, 300)
    .. " (the refreshed tokens are in use, but on_tokens did not keep them)")
end

-- The token endpoint refused the refresh token we sent (invalid_grant).  A
-- peer that spent it first left the grant's newer tokens in the record:
-- they are taken.  Else the grant is dead, and the record says so (unless a
-- peer's success lands first: a refusal never replaces a newer success).
local function refused(k, err, spent)
  local p = private[k]
  if p.shared then
    if p.shared.forget then p.shared.forget(oauth.token_id(p.client_id, spent)) end
    adopt(k)
    if not p.dead and p.refresh_token == spent then publish(k, err) end -- refused: takes what is there
    if p.dead then return nil, p.dead end
    if p.refresh_token ~= spent then
      p.by = "peer" -- it had spent the token first: its successor is ours
      return true
    end
  end
  p.dead = err
  return nil, err
end

-- The one refresh: the HTTP call, ended by `by`; then the tokens everywhere
-- they live (the record within the call's deadline).  owner: the lock held.
local function do_refresh(k, sleep, by, deadline, owner)
  local p = private[k]
  local spent = p.refresh_token
  p.by = "self"
  local tokens, err = oauth.post_tokens(p.engine, p.base, { grant_type = "refresh_token", client_id = p.client_id,
    client_secret = p.client_secret, refresh_token = spent }, false, by)
  if not tokens then
    if err.kind == "unauthorized" then return refused(k, err, spent) end
    return nil, err
  end
  p.access_token, p.expires_at = tokens.access_token, tokens.expires_at
  -- a new refresh token replaces the old; without one, the old stays
  if tokens.refresh_token then
    p.refresh_token = tokens.refresh_token
    add_chain(p, tokens.refresh_token)
  end
  remember(p, tokens.access_token)
  remember(p, tokens.refresh_token)
  k.refreshes = k.refreshes + 1
  k.refreshed_at = now()
  local s = p.shared
  if s then
    -- the lease renewed (and so checked) for the time publishing takes; one
    -- lost meanwhile changes nothing there: a save only replaces an older
    -- record, or one that says the grant is dead
    if owner and s.renew then s.renew(owner) end
    publish_within(k, sleep, math.min(deadline, now() + (s.patience or s.lease or 30)))
  end
  tell_tokens(k, tokens)
  return true
end

-- Waits for the shared lock, or for the token a peer is fetching: "held"
-- and the lock's owner (any value a record names its hold with, true
-- included); "fresh" when a fresh token arrived; or nil, err.
local function acquire(k, sleep, deadline, stale)
  local p = private[k]
  local s = p.shared
  while true do
    local owner, err = s.lock()
    if owner then return "held", owner end
    if now() >= deadline then return nil, owner == nil and err or waited_too_long() end
    announce_wait(p, deadline - now(), "refresh")
    if sleep(s.poll or 0.005) == false then return nil, interrupted() end
    adopt(k)
    if p.dead then return nil, p.dead end
    if fresh(p, stale) then return "fresh" end
  end
end

-- The lock is a lease: renewing it, which checks it is still ours, comes
-- right before the token request, and the request must end before the
-- lease does.  The time it must end by; false when the lease was lost (a
-- peer may hold the lock now); or nil, err.
local function lease(k, owner, sleep, deadline)
  local s = private[k].shared
  while s.renew do
    local held, err = s.renew(owner)
    if held then break end
    if held == false then return false end
    if now() >= deadline then return nil, err or waited_too_long() end
    announce_wait(private[k], deadline - now(), "refresh")
    if sleep(s.poll or 0.005) == false then return nil, interrupted() end
  end
  if not s.lease then return deadline end
  return math.min(deadline, now() + s.lease - M.lease_margin(s.lease))
end

-- Holding the lock: the refresh, unless a peer's token came first.  As
-- do_refresh; or nil, nil, true when the lease was lost before the request.
local function refresh_held(k, owner, sleep, deadline, stale)
  local p = private[k]
  adopt(k) -- a peer may have finished just before we took the lock
  if p.dead then return nil, p.dead end
  if fresh(p, stale) then return true end
  local by, err = lease(k, owner, sleep, deadline)
  if by == false then return nil, nil, true end
  if not by then return nil, err end
  return do_refresh(k, sleep, by, deadline, owner)
end

local function refresh_shared(k, sleep, deadline, stale)
  local s = private[k].shared
  while true do
    local got, owner = acquire(k, sleep, deadline, stale)
    if got ~= "held" then return got == "fresh" or nil, owner end
    local ok, r, e, lost = pcall(refresh_held, k, owner, sleep, deadline, stale)
    s.unlock(owner)
    if not ok then error(r, 0) end
    if not lost then return r, e end
  end
end

local function refresh_alone(k, sleep, deadline) return do_refresh(k, sleep, deadline, deadline) end

-- Makes sure a token other than `stale` (nil: any) is fresh, refreshing
-- when it is not: once per client, per machine with a shared record.
function Keeper:refresh(sleep, deadline, stale)
  local p = private[self]
  if self.busy and p.events then -- another light thread of this client is at it
    p.events:waiting(math.max(deadline - now(), 0), "refresh")
  end
  -- (and for a save of this client's tokens under way: its version is ours)
  while self.busy or p.publishing do
    if now() >= deadline then return nil, waited_too_long() end
    sleep(0.005)
  end
  adopt(self)
  if p.dead then return nil, p.dead end
  if fresh(p, stale) then return true end
  self.busy, p.by, p.announced = true, nil, nil
  local started = core.now()
  local ok, a, b = pcall(p.shared and refresh_shared or refresh_alone, self, sleep, deadline, stale)
  self.busy = nil
  if not ok then error(a, 0) end
  -- who brought the token: this client's own request, or a peer
  if p.events then
    p.events:emit({ type = "refresh", ok = a == true, seconds = core.now() - started, by = p.by or "peer" })
  end
  return a, b
end

-- Before a client's first request: the shared record is read, which names
-- the grant (and so the budget) before a slot is taken.
function Keeper:prepare()
  if self.adopted_at then return end
  adopt(self)
  self.adopted_at = now()
end

-- The Authorization header for the next attempt, refreshed first when the
-- token expires within REFRESH_AHEAD seconds.
function Keeper:header(sleep, timeout)
  local p = private[self]
  -- a record across the network (the fleet's store) is read again at most
  -- once a second while this token is fresh; a refresh always reads it
  if not (p.shared and p.shared.remote and fresh(p, nil) and now() - (self.adopted_at or 0) < 1) then
    adopt(self)
    self.adopted_at = now()
  end
  if p.dead then return nil, p.dead end
  if not fresh(p, nil) then
    local ok, err = self:refresh(sleep, now() + (timeout or 30), nil)
    if not ok then return nil, err end
  end
  return "Authorization: Bearer " .. p.access_token
end

-- After a 401 with `used` (the header sent): a token other than that one.
function Keeper:after_401(used, sleep, timeout)
  local p = private[self]
  local stale = used and used:match("^Authorization: Bearer (.+)$")
  if p.access_token == stale then p.expires_at = 0 end -- known bad, whatever its time said
  return self:refresh(sleep, now() + (timeout or 30), stale)
end

-- keeper:set_tokens{ access_token, refresh_token, expires_at | expires_in }: new tokens after a refusal
function Keeper:set_tokens(tokens)
  local p = private[self]
  p.access_token, p.refresh_token = tokens.access_token, tokens.refresh_token
  p.expires_at = tokens.expires_at or floor(now() + (tokens.expires_in or 0))
  p.dead = nil
  remember(p, p.access_token)
  remember(p, p.refresh_token)
  add_chain(p, p.refresh_token)
  publish(self, nil, "always")
  return true
end

-- keeper:info() -> { expires_at, refreshed_at, refreshes } for client:token_info(): never a token
function Keeper:info()
  adopt(self)
  return { expires_at = private[self].expires_at, refreshed_at = self.refreshed_at, refreshes = self.refreshes }
end

return M
