-- What watching a client costs (`BENCH_ONLY=events`).
--   events_one.lua MODE ...       bench/upload_one.lua's run of MODE, every
--                                 client with an on_event handler that counts
--                                 what it is told (printed on stderr, so the
--                                 handler's work cannot be skipped)
--   events_one.lua interleaved BASE N ROUNDS
--                                 N mkdir calls per round on two clients of
--                                 one process, one watched and one not, in
--                                 alternating batches: prints the medians of
--                                 the rounds' wall and CPU seconds of each
local files = require "fileapi.files"
local core = require "fileapi.core"

local told = 0
local function count() told = told + 1 end

if arg[1] ~= "interleaved" then
  local new = files.new
  files.new = function(opts)
    opts.on_event = count
    return new(opts)
  end
  dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/upload_one.lua")
  io.stderr:write("events: ", told, "\n")
  return
end

local base, calls, rounds = arg[2], tonumber(arg[3]), tonumber(arg[4])
local clients = {
  plain = assert(files.new({ api_key = "bench-key", base_url = base })),
  watched = assert(files.new({ api_key = "bench-key", base_url = base, on_event = count })),
}
local BATCH = 100
local times = { plain = {}, watched = {} }
for r = 1, rounds do
  local wall, cpu = { plain = 0, watched = 0 }, { plain = 0, watched = 0 }
  for b = 1, calls / BATCH do
    -- which goes first changes from batch to batch
    local order = (b + r) % 2 == 0 and { "plain", "watched" } or { "watched", "plain" }
    for _, name in ipairs(order) do
      local c = clients[name]
      local t0, c0 = core.now(), os.clock()
      for _ = 1, BATCH do assert(c:mkdir("d")) end
      wall[name] = wall[name] + core.now() - t0
      cpu[name] = cpu[name] + os.clock() - c0
    end
  end
  for name in pairs(clients) do times[name][r] = { wall = wall[name], cpu = cpu[name] } end
end

local function median(list, key)
  local v = {}
  for i, x in ipairs(list) do v[i] = x[key] end
  table.sort(v)
  local n = #v
  return n % 2 == 1 and v[(n + 1) / 2] or (v[n / 2] + v[n / 2 + 1]) / 2
end
assert(told == calls * rounds * 1, "every call of the watched client told one request event")
print(("%.6f %.6f %.6f %.6f"):format(median(times.plain, "wall"), median(times.watched, "wall"),
  median(times.plain, "cpu"), median(times.watched, "cpu")))
