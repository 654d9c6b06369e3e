-- `fileapi -v` (--verbose): every event of the command's clients (the
-- library's on_event) as one line on stderr, in curl's spirit: `>` for an
-- HTTP attempt, `*` for what happened around it.
--   > POST http://127.0.0.1:8080/v1/files 201 1.2 KiB up 312 B down 0.043 s reused
--   * waiting 0.8 s: rate limit
--   * token refreshed (peer) in 0.12 s
--   * store down: connection refused
-- The events carry no secret (a share token in a URL is already replaced,
-- a signed link's query cut), so the lines carry none either.
local output = require "fileapi.cli.output"

local format = string.format
local human_bytes = output.human_bytes

local M = {}

local WAITS = {
  rate_limit = "rate limit",
  retry_after = "the server asked (Retry-After)",
  backoff = "before trying again",
  store = "the shared store",
}

local function request_line(ev)
  local outcome = ev.status and tostring(ev.status) or ""
  if ev.kind then outcome = (outcome ~= "" and outcome .. " " or "") .. ev.kind end
  return format("> %s %s %s %s up %s down %.3f s%s%s", ev.method, ev.url, outcome, human_bytes(ev.bytes_sent),
    human_bytes(ev.bytes_received), ev.seconds, ev.reused and " reused" or "",
    ev.attempt > 1 and format(" (attempt %d)", ev.attempt) or "")
end

local function wait_line(ev)
  if ev.reason == "refresh" then
    return format("* waiting for a token refresh under way elsewhere (at most %.1f s)", ev.seconds)
  end
  return format("* waiting %.1f s: %s", ev.seconds, WAITS[ev.reason] or ev.reason)
end

local function refresh_line(ev)
  if ev.ok then return format("* token refreshed (%s) in %.2f s", ev.by, ev.seconds) end
  return format("* token refresh failed (%s) after %.2f s", ev.by, ev.seconds)
end

local function store_line(ev)
  if ev.state == "up" then return "* store up: answering again" end
  return "* store down: " .. tostring(ev.reason)
end

local LINES = { request = request_line, wait = wait_line, refresh = refresh_line, store = store_line }

-- The line for one event (nil for a type this command does not know).
function M.line(ev)
  local fn = LINES[ev.type]
  return fn and fn(ev)
end

-- An on_event handler that writes each event's line on the command's
-- stderr (out: fileapi.cli.output's), a batch's progress line kept last.
function M.printer(out)
  return function(ev)
    local text = M.line(ev)
    if text then out:note(text) end
  end
end

return M
