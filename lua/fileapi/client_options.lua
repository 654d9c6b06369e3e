-- The transport options of every client's constructor (files.new,
-- shares.new, drive.new, drive.login, files.exchange_code), checked: the
-- engine checks its own (fileapi.http.options), the store checks `store`
-- and opens it (fileapi.store), and the checked table hands the open store
-- to the engine (engine.new), which never imports the store.  The one
-- module that knows both layers.
local engine = require "fileapi.http.engine"
local store = require "fileapi.store"

local M = {}

-- Raises for wrong types and unknown names (`own`: the constructor's own
-- names) at the line that called the constructor; returns the checked
-- options, their `store` an open store or false, or nil and a message for
-- a bad value.
function M.check(opts, fname, own)
  local topts, why = engine.check_options(opts, fname, own, 1)
  if not topts then return nil, why end
  local cfg
  cfg, why = store.check(opts.store, fname)
  if cfg == nil then return nil, why end
  topts.store = cfg and store.open(cfg)
  return topts
end

return M
