-- One plain-Lua member of a fleet for spec/fleet_spec.lua: a client with
-- `store`, making FLEET_CALLS calls one after another from FLEET_START_AT
-- (a time, so that every member starts together), each printed as a JSON
-- line; then a line {"done":true}.  What fileapi warns goes to stderr,
-- which the spec reads from the same file.
--   FLEET_MODE  paced (mkdir with an API key) | oauth (mkdir with OAuth tokens)
--   FLEET_DOC   JSON: base_url, store (the store option), window, rate_limit, oauth, oauth_base_url, retries;
--               for oauth also interval (seconds between calls), lock_ms (the refresh
--               lock's lease, shortened for a spec) and on_tokens_raise (on_tokens raises,
--               naming the new refresh token and the client id in its message)
local files = require "fileapi.files"
local core = require "fileapi.core"
local cjson = require "cjson"

local doc = cjson.decode(os.getenv("FLEET_DOC"))
local calls = tonumber(os.getenv("FLEET_CALLS"))
local start_at = tonumber(os.getenv("FLEET_START_AT") or "0")

local opts = { base_url = doc.base_url, store = doc.store, rate_window = doc.window, timeout = doc.timeout or 120,
  retries = doc.retries, rate_limit = doc.rate_limit }
local oauth = os.getenv("FLEET_MODE") == "oauth"
if oauth then
  if doc.lock_ms then require("fileapi.store.tokens").LOCK_MS = doc.lock_ms end
  opts.oauth, opts.oauth_base_url = doc.oauth, doc.oauth_base_url
  opts.on_tokens = function(tokens)
    io.stderr:write("fleet-test: on_tokens ran in this process\n")
    if doc.on_tokens_raise then
      error("could not keep " .. tokens.refresh_token .. " of " .. doc.oauth.client_id .. " (disk full)")
    end
  end
else
  opts.api_key = doc.api_key
end
local client = assert(files.new(opts))

local wait = start_at - core.time()
if wait > 0 then core.sleep(wait) end
for i = 1, calls do
  local t = core.time()
  local item, err = client:mkdir("fleet" .. i)
  local out = { ok = item ~= nil, seconds = core.time() - t, at = t }
  if not item then out.kind, out.message, out.oauth_error = err.kind, err.message, err.oauth_error end
  if oauth then out.refreshes = client:token_info().refreshes end
  io.stdout:write(cjson.encode(out), "\n")
  io.stdout:flush()
  if doc.interval and i < calls then core.sleep(doc.interval) end
end
client:close()
io.stdout:write('{"done":true}\n')
