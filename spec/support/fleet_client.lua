-- One plain-Lua member of a fleet for spec/fleet_spec.lua: a client with
-- `store`, making FLEET_CALLS calls one after another from FLEET_START_AT
-- (a time, so that every member starts together), each printed as a JSON
-- line; then a line {"done":true}.  What fileapi warns goes to stderr,
-- which the spec reads from the same file.
--   FLEET_MODE  paced (mkdir with an API key) | oauth (mkdir with OAuth tokens)
--   FLEET_DOC   JSON: base_url, store (the store option), window, oauth, oauth_base_url, retries
local files = require "fileapi.files"
local core = require "fileapi.core"
local cjson = require "cjson"

local doc = cjson.decode(os.getenv("FLEET_DOC"))
local calls = tonumber(os.getenv("FLEET_CALLS"))
local start_at = tonumber(os.getenv("FLEET_START_AT") or "0")

local opts = { base_url = doc.base_url, store = doc.store, rate_window = doc.window, timeout = 120,
  retries = doc.retries }
if os.getenv("FLEET_MODE") == "oauth" then
  opts.oauth, opts.oauth_base_url = doc.oauth, doc.oauth_base_url
  opts.on_tokens = function() io.stderr:write("fleet-test: on_tokens ran in this process\n") end
else
  opts.api_key = doc.api_key
end
local client = assert(files.new(opts))

local wait = start_at - core.time()
if wait > 0 then core.sleep(wait) end
for i = 1, calls do
  local t = core.time()
  local item, err = client:mkdir("fleet" .. i)
  local out = { ok = item ~= nil, seconds = core.time() - t }
  if not item then out.kind, out.message = err.kind, err.message end
  io.stdout:write(cjson.encode(out), "\n")
  io.stdout:flush()
end
client:close()
io.stdout:write('{"done":true}\n')
