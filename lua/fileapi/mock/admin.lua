-- The mock's admin paths under /_mock/ (docs/internals/mock.md lists them):
-- what was sent, counters, settings, faults, fixtures, reset and shutdown.
-- Each answers JSON and closes the connection; a body that is not the JSON
-- a path takes is answered 400 with a message, never a hang.
local cjson = require "cjson"
local http = require "fileapi.mock.http"
local faults = require "fileapi.mock.faults"
local mkp = require "fileapi.mock.mkp"
local filesro = require "fileapi.mock.filesro"
local oauth = require "fileapi.mock.oauth"
local drive = require "fileapi.mock.drive"

local M = {}

M.FAULT_TYPES = { "status", "refuse", "stall", "drop", "drop_upload", "delay", "stall_before_body",
  "stall_response", "trickle", "oversized", "raw", "steps", "file" }
local KNOWN = {}
for _, t in ipairs(M.FAULT_TYPES) do KNOWN[t] = true end

local function list_or_empty(list)
  if #list == 0 then return cjson.empty_array or {} end
  return list
end

-- The fields a fault counts or times with.
local NUMBERS = { "seconds", "retry_after", "after", "count", "skip", "size", "interval", "drop_at" }

-- Why a fault list cannot be queued, or nil.
local function bad_faults(list)
  if type(list) ~= "table" or (next(list) ~= nil and #list == 0) then
    return "a JSON list of faults, as [{\"type\":\"status\",\"status\":503}]"
  end
  for i, f in ipairs(list) do
    if type(f) ~= "table" or not KNOWN[f.type] then
      return ("fault %d: type must be one of %s"):format(i, table.concat(M.FAULT_TYPES, ", "))
    end
    if f.type == "status" and type(f.status) ~= "number" then return ("fault %d: a status needs status"):format(i) end
    -- a wrong type here would raise in the request it meets, long after
    for _, k in ipairs(NUMBERS) do
      local v = f[k]
      if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0 or v == math.huge) then
        return ("fault %d: %s must be a number >= 0"):format(i, k)
      end
    end
    if f.path ~= nil and type(f.path) ~= "string" then return ("fault %d: path must be a string"):format(i) end
  end
end

local function stats(state)
  return { connections = state.connections, requests = state.api_requests, chunks = state.chunks,
    rejected = state.rejected or 0, rejected_at = state.rejected_at or {},
    in_flight = state.flight.now, max_in_flight = state.flight.max,
    token_requests = state.oauth.token_requests, refreshes = state.oauth.refreshes,
    refresh_refused = state.oauth.refused, refresh_reused = state.oauth.reused,
    folder_paths = filesro.folder_paths(state), pid = state.pid }
end

local function configure(state, body)
  for k, v in pairs(body) do
    if k == "keys" then
      state.config.keys = {}
      for _, key in ipairs(v) do state.config.keys[key] = true end
    elseif v == cjson.null then
      state.config[k] = nil
    else
      state.config[k] = v
    end
  end
end

local function items(state)
  local out = {}
  for _, it in pairs(state.items) do
    out[#out + 1] = { id = it.id, type = it.type, name = it.name, parent = it.parent, size = it.size }
  end
  return list_or_empty(out)
end

local function share_files(state)
  local out = {}
  for _, f in pairs(state.files) do out[#out + 1] = f end
  return list_or_empty(out)
end

-- Each path's answer, given the state, the decoded body and the server's
-- controls (reset, stop); nil, message for a 400.
local PATHS = {
  ["/_mock/requests"] = function(state) return list_or_empty(state.requests) end,
  ["/_mock/stats"] = stats,
  ["/_mock/reset"] = function(_, _, ctl) ctl.reset() end,
  ["/_mock/config"] = function(state, body)
    if type(body) ~= "table" then return nil, "a JSON object of settings" end
    configure(state, body)
  end,
  ["/_mock/faults"] = function(state, body)
    local why = bad_faults(body)
    if why then return nil, why end
    faults.queue(state, body)
  end,
  ["/_mock/shares"] = function(state, body) return { root_id = filesro.add_share(state, body) } end,
  ["/_mock/folders"] = function(state, body)
    local f = state.folders[body.id]
    return f and { id = f.id, name = f.name, parent_id = f.parent_id } or {}
  end,
  ["/_mock/storage_faults"] = function(state, body)
    for _, f in ipairs(body) do state.storage_faults[#state.storage_faults + 1] = f end
  end,
  ["/_mock/mkp_file"] = function(state, body) return mkp.add_file(state, body) end,
  ["/_mock/seed"] = function(state, body) return mkp.seed(state, body) end,
  ["/_mock/mkp_items"] = items,
  ["/_mock/files"] = share_files,
  ["/_mock/drive_big_file"] = function(state, body) return drive.big_file(state, body) end,
  ["/_mock/drive_seed"] = function(state, body) return drive.seed(state, body) end,
  ["/_mock/drive"] = function(state) return drive.dump(state) end,
  ["/_mock/oauth_grant"] = function(state) return oauth.grant(state) end,
  ["/_mock/oauth_expire"] = function(state) oauth.expire(state) end,
  ["/_mock/oauth_authorize"] = function(state) return state.oauth.last_authorize or {} end,
  ["/_mock/shutdown"] = function(_, _, ctl) ctl.stop() end,
}

local function answer(conn, status, doc)
  http.respond(conn, status, { { "Content-Type", "application/json" } }, cjson.encode(doc), true)
end

function M.handle(state, conn, req, ctl)
  http.read_body(conn, req, 16 * 1024 * 1024)
  local fn = PATHS[req.path]
  if not fn then return answer(conn, 404, { message = "no such admin path: " .. req.path }) end
  local ok, body = true, {}
  if req.body ~= "" then ok, body = pcall(cjson.decode, req.body) end
  if not ok then return answer(conn, 400, { message = "the body is not JSON: " .. tostring(body) }) end
  local out, why = fn(state, body, ctl)
  if why then return answer(conn, 400, { message = why }) end
  answer(conn, 200, out == nil and { ok = true } or out)
end

return M
