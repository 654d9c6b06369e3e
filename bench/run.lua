-- `make bench`: fileapi against curl(1) in one run, on a local nginx sink.
-- Contenders alternate run by run (a warm-up each, then RUNS each); the
-- table gives medians and ratios.  The sink and all files are removed at the
-- end, also when a run fails.
local socket = require "socket"
local http = require "socket.http"

local RUNS = tonumber(os.getenv("BENCH_RUNS") or "5")
local CALLS = tonumber(os.getenv("BENCH_CALLS") or "2000")
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local lua = os.getenv("LUA_BIN") or "lua5.4"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sh(cmd) local ok = os.execute(cmd) return ok == true or ok == 0 end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

local work = os.tmpname()
os.remove(work)
assert(sh("mkdir -p " .. q(work .. "/nginx")))
local port = free_port()
local base = "http://127.0.0.1:" .. port

-- Writes conf (a filled-in template) under prefix, starts nginx there with
-- the environment `env`, and waits until `probe` answers.
local function start_nginx(prefix, conf, probe, env)
  local f = assert(io.open(prefix .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  assert(sh(("%snginx -p %s -c %s -e %s 2>&1"):format(env or "", q(prefix), q(prefix .. "/nginx.conf"),
    q(prefix .. "/error.log"))), "nginx did not start in " .. prefix)
  for _ = 1, 50 do
    if http.request(probe) then return end
    socket.sleep(0.1)
  end
  error("nginx did not answer at " .. probe)
end

local function start_sink()
  sh("chmod 777 " .. q(work .. "/nginx"))
  start_nginx(work .. "/nginx", assert(io.open(here .. "/sink.conf")):read("*a")
    :gsub("@PREFIX@", work .. "/nginx"):gsub("@PORT@", tostring(port)), base .. "/stats")
end

local stop_client_nginx

-- Stops the server whose pid file is given, then removes its folder.
local function stop_server(pid_file, dir)
  local f = io.open(pid_file)
  if f then
    sh("kill " .. f:read("*l") .. " 2>/dev/null")
    f:close()
  end
  socket.sleep(0.2)
  sh("rm -rf " .. q(dir))
end

local function stop_sink()
  if stop_client_nginx then stop_client_nginx() end
  stop_server(work .. "/nginx/nginx.pid", work)
end

local function sink_stats()
  local body = assert(http.request(base .. "/stats"))
  return tonumber(body:match('"connections":(%d+)')), tonumber(body:match('"requests":(%d+)')),
    tonumber(body:match('"rejected":(%d+)')), tonumber(body:match('"max_in_flight":(%d+)'))
end

-- Runs a command under /usr/bin/time: wall seconds, max RSS (KiB), CPU seconds.
local function measure(cmd, before)
  if before then sh(before) end
  http.request(base .. "/reset")
  local out = work .. "/time.out"
  local t0 = socket.gettime()
  assert(sh(("/usr/bin/time -f '%%M %%U %%S' -o %s %s >/dev/null 2>%s"):format(q(out), cmd, q(work .. "/err"))),
    "run failed: " .. cmd .. "\n" .. (io.open(work .. "/err"):read("*a")))
  local wall = socket.gettime() - t0
  local rss, user, sys = assert(io.open(out)):read("*a"):match("(%d+) ([%d.]+) ([%d.]+)")
  local conns, reqs, rejected, at_once = sink_stats()
  return { wall = wall, rss = tonumber(rss), cpu = tonumber(user) + tonumber(sys), conns = conns, reqs = reqs,
    rejected = rejected, at_once = at_once }
end

local function median(list, key)
  local v = {}
  for i, r in ipairs(list) do v[i] = r[key] end
  table.sort(v)
  local n = #v
  return n % 2 == 1 and v[(n + 1) / 2] or (v[n / 2] + v[n / 2 + 1]) / 2
end

-- Warm-up, then RUNS (or `runs`) alternating runs of each contender.
local function duel(contenders, runs)
  local results = {}
  for _, c in ipairs(contenders) do
    measure(c.cmd, c.before)
    results[c.name] = {}
  end
  for _ = 1, runs or RUNS do
    for _, c in ipairs(contenders) do
      local r = measure(c.cmd, c.before)
      table.insert(results[c.name], r)
    end
  end
  return results
end

-- Started directly, as curl is: `make bench` runs this file through
-- tools/with-paths.sh, so the module paths are already in the environment.
local fileapi = ("%s %s"):format(lua, q(here .. "/upload_one.lua"))

local function make_file(path, mib)
  assert(sh(("dd if=/dev/urandom of=%s bs=1M count=%d status=none"):format(q(path), mib)))
end

local function curl_config(path, n)
  local f = assert(io.open(path, "w"))
  for i = 1, n do
    if i > 1 then f:write("next\n") end
    f:write('url = "', base, '/v1/files"\n',
      'header = "Authorization: Bearer bench-key"\n',
      'header = "Content-Type: application/json"\n',
      'header = "Accept: application/json"\n',
      'data = "{\\"directory\\":\\"d\\"}"\n',
      'output = "/dev/null"\n')
  end
  f:close()
end

local lines = {}
local function out(fmt, ...)
  local line = fmt:format(...)
  lines[#lines + 1] = line
  print(line)
end

local function upload_rows(mib)
  local path = work .. "/upload-" .. mib .. ".bin"
  make_file(path, mib)
  local r = duel({
    { name = "fileapi", cmd = fileapi .. " upload " .. base .. "/v1 " .. q(path) },
    { name = "curl", cmd = ("curl -sS -o /dev/null -H 'Authorization: Bearer bench-key' -F file=@%s %s/v1/files")
      :format(q(path), base) },
  })
  os.remove(path)
  local mb = mib * 1048576 / 1e6
  local f_rate, c_rate = mb / median(r.fileapi, "wall"), mb / median(r.curl, "wall")
  local f_rss, c_rss = median(r.fileapi, "rss") / 1024, median(r.curl, "rss") / 1024
  out("upload %5d MiB   fileapi %7.1f MB/s  curl %7.1f MB/s  ratio %.2f   peak RSS fileapi %5.1f MiB  curl %5.1f MiB  (+%.1f)",
    mib, f_rate, c_rate, f_rate / c_rate, f_rss, c_rss, f_rss - c_rss)
end

local function download_rows(mib)
  local name = "fsf_bench000002"
  make_file(work .. "/nginx/static/" .. name, mib)
  -- Written to memory (tmpfs) where there is one: a 1 GiB file on disk
  -- times the kernel's writeback of earlier runs more than the contender.
  -- Each run writes a new file: replacing the other contender's 1 GiB
  -- (rename over it, or O_TRUNC) would time the freeing of its pages.
  -- BENCH_DISK=1 writes to disk instead: what the sink's fsync costs there
  local shm
  if os.getenv("BENCH_DISK") ~= "1" and sh("test -d /dev/shm -a -w /dev/shm") then
    local t = os.tmpname()
    os.remove(t)
    shm = t:gsub("^.*/", "/dev/shm/")
  end
  local dest = (shm or (work .. "/download")) .. ".bin"
  local fresh = "rm -f " .. q(dest) .. " && sync"
  local r = duel({
    { name = "fileapi", cmd = fileapi .. " download " .. base .. " static/" .. name .. " " .. q(dest), before = fresh },
    { name = "curl", cmd = ("curl -sS -o %s %s/static/%s"):format(q(dest), base, name), before = fresh },
    { name = "mkp", cmd = fileapi .. " mkp-download " .. base .. " " .. name .. " " .. q(dest), before = fresh },
  })
  os.remove(dest)
  os.remove(work .. "/nginx/static/" .. name)
  if shm then os.remove(shm) end
  local mb = mib * 1048576 / 1e6
  local f_rate, c_rate = mb / median(r.fileapi, "wall"), mb / median(r.curl, "wall")
  local f_rss, c_rss = median(r.fileapi, "rss") / 1024, median(r.curl, "rss") / 1024
  out("download %4d MiB fileapi %7.1f MB/s  curl %7.1f MB/s  ratio %.2f   peak RSS fileapi %5.1f MiB  curl %5.1f MiB  (+%.1f)"
    .. "   CPU fileapi %.2f s  curl %.2f s", mib, f_rate, c_rate, f_rate / c_rate, f_rss, c_rss, f_rss - c_rss,
    median(r.fileapi, "cpu"), median(r.curl, "cpu"))
  local m_rate, m_rss = mb / median(r.mkp, "wall"), median(r.mkp, "rss") / 1024
  out("download %4d MiB mkp:download %7.1f MB/s (link, then file)  ratio to curl %.2f   peak RSS %5.1f MiB (+%.1f)"
    .. "   CPU %.2f s", mib, m_rate, m_rate / c_rate, m_rss, m_rss - c_rss, median(r.mkp, "cpu"))
end

-- nginx running fileapi in a content handler (the specs' test config),
-- pointed at the sink: the same upload and download over cosockets and over
-- libcurl, with the worker's own CPU time per run (/proc/self/stat).
local client_port = free_port()
local client_base = "http://127.0.0.1:" .. client_port

-- fileapi (Lua and the LuaJIT core) and the specs' handlers copied under
-- prefix/lib, where nginx's workers may read them; returns that folder.
local function client_lib(prefix)
  local lib = prefix .. "/lib"
  local root = here .. "/.."
  local lua_build = root .. "/build/luajit/fileapi/core.so"
  assert(io.open(lua_build), "build the LuaJIT core first (make LUA=luajit)")
  assert(sh(("mkdir -p %s && cp -r %s %s && cp %s %s && cp %s %s %s && chmod -R a+rX %s"):format(q(lib),
    q(root .. "/lua/fileapi"), q(lib .. "/"), q(lua_build), q(lib .. "/fileapi/"),
    q(root .. "/spec/support/test_handlers.lua"), q(root .. "/spec/support/conformance.lua") .. " "
      .. q(root .. "/spec/support/causes.lua") .. " " .. q(root .. "/spec/support/group_body.lua"), q(lib .. "/"),
    q(prefix))))
  return lib
end

local function start_client_nginx()
  local prefix = work .. "/client"
  local lib = client_lib(prefix)
  local root = here .. "/.."
  local conf = assert(io.open(root .. "/spec/support/nginx/test.conf")):read("*a")
    :gsub("@PREFIX@", prefix):gsub("@PORT@", tostring(client_port)):gsub("@LIB@", lib)
    :gsub("@CA_FILE@", "/etc/ssl/certs/ca-certificates.crt")
  start_nginx(prefix, conf, client_base .. "/ping", "MKP_API_KEY=bench-key ")
end

function stop_client_nginx()
  local f = io.open(work .. "/client/nginx.pid")
  if f then
    sh("kill " .. f:read("*l") .. " 2>/dev/null")
    f:close()
  end
end

local function in_nginx(doc)
  local cjson = require "cjson"
  local ltn12 = require "ltn12"
  local payload = cjson.encode(doc)
  local body = {}
  http.request({ url = client_base .. "/cpu", method = "POST", source = ltn12.source.string(payload),
    sink = ltn12.sink.table(body), headers = { ["Content-Length"] = #payload } })
  local res = cjson.decode(table.concat(body))
  assert(res.ok, "in-nginx run failed: " .. tostring(res.message))
  return res
end

local function in_nginx_rows(mib)
  start_client_nginx()
  local path = work .. "/client/up.bin"
  make_file(path, mib)
  sh("chmod a+r " .. q(path))
  local name = "dl-nginx.bin"
  make_file(work .. "/nginx/static/" .. name, mib)
  -- in memory where there is tmpfs, as for the download rows
  local dest = (sh("test -d /dev/shm -a -w /dev/shm") and "/dev/shm/fileapi-bench-" .. client_port or
    (work .. "/client/down")) .. ".bin"
  sh("chmod 777 " .. q(work .. "/client"))
  local jobs = {
    upload = function(t) return { base_url = base .. "/v1", transport = t, upload = { path = path } } end,
    download = function(t) return { base_url = base .. "/v1", transport = t, download = base .. "/static/" .. name,
      path = dest } end,
  }
  for _, what in ipairs({ "upload", "download" }) do
    local cpu = { ngx = {}, curl = {} }
    for _, t in ipairs({ "ngx", "curl" }) do in_nginx(jobs[what](t)) end -- warm-up
    for _ = 1, RUNS do
      for _, t in ipairs({ "ngx", "curl" }) do
        local res = in_nginx(jobs[what](t))
        table.insert(cpu[t], { cpu = res.cpu, wall = res.seconds })
      end
    end
    local c_ngx, c_curl = median(cpu.ngx, "cpu"), median(cpu.curl, "cpu")
    out("in nginx %-8s %d MiB  worker CPU cosockets %.3f s  libcurl %.3f s  ratio %.2f   wall %.2f s / %.2f s",
      what, mib, c_ngx, c_curl, c_ngx / c_curl, median(cpu.ngx, "wall"), median(cpu.curl, "wall"))
  end
  os.remove(path)
  os.remove(dest)
  stop_client_nginx()
end

-- files.ro: the same file in 16 MiB chunks against one request
local function share_rows(mib)
  local path = work .. "/share-" .. mib .. ".bin"
  make_file(path, mib)
  local cmd = fileapi .. " share-upload " .. base .. " " .. q(path) .. " "
  local r = duel({
    { name = "chunked", cmd = cmd .. 16 * 1048576 },
    { name = "single", cmd = cmd .. (mib + 1) * 1048576 },
  })
  os.remove(path)
  local mb = mib * 1048576 / 1e6
  local c_rate, s_rate = mb / median(r.chunked, "wall"), mb / median(r.single, "wall")
  out("share upload %d MiB  16 MiB chunks %7.1f MB/s (%d requests)  one request %7.1f MB/s  ratio %.2f"
    .. "   peak RSS %.1f / %.1f MiB",
    mib, c_rate, median(r.chunked, "reqs"), s_rate, c_rate / s_rate, median(r.chunked, "rss") / 1024,
    median(r.single, "rss") / 1024)
end

-- files.ro's owner: a chunked upload (64,000,000-byte chunks) and a zip
-- download, against curl sending the same requests (the chunks cut to
-- files beforehand, one form per chunk; the zip to a path).
local function drive_rows(mib)
  local path = work .. "/drive-" .. mib .. ".bin"
  make_file(path, mib)
  local chunks = work .. "/drive-chunk-"
  assert(sh(("split -b 64000000 -d -a 3 %s %s"):format(q(path), q(chunks))))
  local cfg = work .. "/drive.cfg"
  local f = assert(io.open(cfg, "w"))
  local count = math.ceil(mib * 1048576 / 64000000)
  for i = 0, count - 1 do
    if i > 0 then f:write("next\n") end
    f:write('url = "', base, '/api/v1/uploads"\n', 'header = "Authorization: Bearer 1|bench"\n',
      'header = "Accept: application/json"\n', 'form = "name=bench"\n', 'form = "extension=bin"\n',
      ('form = "is_last_chunk=%d"\n'):format(i == count - 1 and 1 or 0),
      ('form = "chunk=@%s%03d;filename=abc-bench.bin.part"\n'):format(chunks, i), 'output = "/dev/null"\n')
  end
  f:close()
  local up = duel({
    { name = "fileapi", cmd = fileapi .. " drive-upload " .. base .. " " .. q(path) },
    { name = "curl", cmd = "curl -sS -K " .. q(cfg) },
  })
  sh("rm -f " .. q(chunks) .. "*")
  local mb = mib * 1048576 / 1e6
  local f_rate, c_rate = mb / median(up.fileapi, "wall"), mb / median(up.curl, "wall")
  out("drive upload %d MiB (%d chunks)  fileapi %7.1f MB/s  curl %7.1f MB/s  ratio %.2f   peak RSS fileapi %5.1f MiB"
    .. "  curl %5.1f MiB   CPU fileapi %.2f s  curl %.2f s", mib, median(up.fileapi, "reqs"), f_rate, c_rate,
    f_rate / c_rate, median(up.fileapi, "rss") / 1024, median(up.curl, "rss") / 1024, median(up.fileapi, "cpu"),
    median(up.curl, "cpu"))
  assert(sh(("mv %s %s"):format(q(path), q(work .. "/nginx/static/drive.zip"))))
  local shm = sh("test -d /dev/shm -a -w /dev/shm") and "/dev/shm/fileapi-bench-zip-" .. port or nil
  local dest = (shm or (work .. "/drive-out")) .. ".zip"
  local fresh = "rm -f " .. q(dest)
  local zip = duel({
    { name = "fileapi", cmd = fileapi .. " drive-zip " .. base .. " " .. q(dest), before = fresh },
    { name = "curl", cmd = ("curl -sS -H 'Authorization: Bearer 1|bench' -o %s '%s/api/v1/zip?items=00000000-0000-4000-"
      .. "8000-000000000001%%7Cfolder'"):format(q(dest), base), before = fresh },
  })
  os.remove(dest)
  os.remove(work .. "/nginx/static/drive.zip")
  f_rate, c_rate = mb / median(zip.fileapi, "wall"), mb / median(zip.curl, "wall")
  out("drive zip %d MiB  fileapi %7.1f MB/s  curl %7.1f MB/s  ratio %.2f   peak RSS fileapi %5.1f MiB  curl %5.1f MiB"
    .. "   CPU fileapi %.2f s  curl %.2f s", mib, f_rate, c_rate, f_rate / c_rate, median(zip.fileapi, "rss") / 1024,
    median(zip.curl, "rss") / 1024, median(zip.fileapi, "cpu"), median(zip.curl, "cpu"))
end

local function mkdir_rows()
  local cfg = work .. "/curl.cfg"
  curl_config(cfg, CALLS)
  local r = duel({
    { name = "fileapi", cmd = fileapi .. " mkdir " .. base .. "/v1 " .. CALLS },
    { name = "curl", cmd = "curl -sS -K " .. q(cfg) },
    { name = "fresh", cmd = fileapi .. " mkdir-fresh " .. base .. "/v1 " .. CALLS },
  })
  local function row(name, label)
    local res = r[name]
    local rate = CALLS / median(res, "wall")
    out("mkdir x%d  %-22s %8.0f req/s  TCP connections %4d  CPU %6.1f us/request", CALLS, label, rate,
      median(res, "conns"), median(res, "cpu") / CALLS * 1e6)
    return rate
  end
  local f = row("fileapi", "fileapi, one client")
  local c = row("curl", "curl -K, one process")
  local fresh = row("fresh", "fileapi, fresh clients")
  out("mkdir ratio fileapi/curl %.2f; connection reuse is worth %.1fx", f / c, f / fresh)
end

-- The fleet's store: the same mkdir calls with the budget in a Redis on
-- loopback against the process's own budget, per call.
local redis_dir
local function stop_redis()
  if not redis_dir then return end
  stop_server(redis_dir .. "/redis.pid", redis_dir)
  redis_dir = nil
end

-- A Redis on a free loopback port: its port and URL (stop_redis stops it).
local function start_redis()
  redis_dir = work .. "-redis"
  local rport = free_port()
  assert(sh(("mkdir -p %s && redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes"
    .. " --pidfile %s/redis.pid --logfile %s/redis.log --dir %s"):format(q(redis_dir), rport, q(redis_dir),
    q(redis_dir), q(redis_dir))))
  socket.sleep(0.3)
  return rport, ("redis://127.0.0.1:%d/0"):format(rport)
end

local function store_rows()
  local rport, url = start_redis()
  local r = duel({
    { name = "local", cmd = fileapi .. " mkdir " .. base .. "/v1 " .. CALLS },
    { name = "store", cmd = fileapi .. " mkdir-store " .. base .. "/v1 " .. CALLS .. " " .. q(url),
      before = "redis-cli -p " .. rport .. " FLUSHALL >/dev/null" },
  })
  stop_redis()
  local function per_call(name, key) return median(r[name], key) / CALLS * 1e6 end
  out("store  mkdir x%d  local budget  wall %6.1f us/call  CPU %6.1f us/call   Redis store  wall %6.1f us/call"
    .. "  CPU %6.1f us/call   the store costs %+.1f us wall, %+.1f us CPU per call", CALLS, per_call("local", "wall"),
    per_call("local", "cpu"), per_call("store", "wall"), per_call("store", "cpu"),
    per_call("store", "wall") - per_call("local", "wall"), per_call("store", "cpu") - per_call("local", "cpu"))
end

-- Many transfers at once (bench/parallel.lua): its groups, given what they
-- share with the rest.
local parallel_groups = dofile(here .. "/parallel.lua")({
  base = base, work = work, here = here, lua = lua, fileapi = fileapi, q = q, sh = sh, runs = RUNS,
  measure = measure, duel = duel, median = median, out = out, make_file = make_file, free_port = free_port,
  start_nginx = start_nginx, client_lib = client_lib, start_redis = start_redis, stop_redis = function() stop_redis() end,
})

local ok, err = pcall(function()
  start_sink()
  out("fileapi bench: %d alternating runs after a warm-up, medians; sink: nginx on %s", RUNS, base)
  sh("mkdir -p " .. q(work .. "/nginx/static") .. " && chmod -R a+rX " .. q(work))
  local only = os.getenv("BENCH_ONLY")
  if not only or only == "upload" then
    upload_rows(tonumber(os.getenv("BENCH_BIG_MIB") or "1024"))
    upload_rows(64)
  end
  if not only or only == "download" then download_rows(tonumber(os.getenv("BENCH_BIG_MIB") or "1024")) end
  if not only or only == "nginx" then in_nginx_rows(tonumber(os.getenv("BENCH_NGINX_MIB") or "256")) end
  if not only or only == "share" then share_rows(256) end
  if not only or only == "drive" then drive_rows(256) end
  if not only or only == "mkdir" then mkdir_rows() end
  if not only or only == "store" then store_rows() end
  for _, name in ipairs(parallel_groups.ORDER) do
    if not only or only == name then parallel_groups[name]() end
  end
end)
stop_redis()
parallel_groups.stop()
stop_sink()
if not ok then
  io.stderr:write("bench failed: ", tostring(err), "\n")
  os.exit(1)
end
