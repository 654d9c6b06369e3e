-- Whether the code runs where nginx's cosockets (and ngx.sleep) may be
-- used: inside nginx, in a phase that can yield.  Asked by the engine's
-- choice of transport (fileapi.http.cosocket) and by the store's choice of
-- Redis client (fileapi.store.redis); a module of its own so that neither
-- layer imports the other for it.
local type = type

local M = {}

local ngx = rawget(_G, "ngx")

-- Phases where cosockets and ngx.sleep may be used.
M.YIELDING = { rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true }

function M.cosockets_usable()
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
    and M.YIELDING[ngx.get_phase()] == true
end

return M
