-- `make bench`'s groups for many transfers at once (fileapi.group,
-- upload_tree's parallel, --parallel), each runnable alone with
-- BENCH_ONLY=<name>:
--   batch     64 uploads of 4 KiB, each answer 40 ms late: parallel = 8
--             against the same client one at a time, and against
--             curl -Z --parallel-max 8 on the same files
--   tree      500 files of 10 KiB in 3 levels of folders, 20 ms a call:
--             `fileapi upload -r --parallel 8` against --parallel 1
--   limit     90 uploads under a server's limit of 30 per rolling 3 s: one
--             process, one nginx with 4 workers on one rate_limit_dict,
--             3 processes on one Redis store (429s and the ideal time)
--   bigbatch  8 uploads of 128 MiB at once against curl -Z on the same files
-- Called by run.lua with what it shares (b: the sink's base URL, measure,
-- duel, median, out, ...); returns the groups by name and ORDER.
return function(b)
  local q, sh, out, median = b.q, b.sh, b.out, b.median
  local G = { ORDER = { "batch", "tree", "limit", "bigbatch" } }
  local cleanups = {}

  -- The sink's files call, each answer `delay` ms late, `limit` per
  -- `window` seconds (0: none).
  local function slow(delay, limit, window)
    return ("%s/x/%d/%d/%d/v1"):format(b.base, delay, limit or 0, window or 0)
  end

  -- n files of `size` bytes (random bytes from one source), listed one a
  -- line in the returned list file.
  local function files(name, n, size)
    local dir = b.work .. "/" .. name
    assert(sh("mkdir -p " .. q(dir)))
    local list = dir .. ".list"
    local f = assert(io.open(list, "w"))
    local block = assert(io.open("/dev/urandom", "rb")):read(size)
    for i = 1, n do
      local path = ("%s/f%04d.bin"):format(dir, i)
      local w = assert(io.open(path, "wb"))
      w:write(block)
      w:close()
      f:write(path, "\n")
    end
    f:close()
    return list, dir
  end

  -- curl's config for one multipart upload of each listed file to `url`
  -- (curl -Z -K runs them side by side).
  local function curl_uploads(list, url)
    local cfg = list .. ".curl"
    local f = assert(io.open(cfg, "w"))
    local first = true
    for path in io.lines(list) do
      if not first then f:write("next\n") end
      first = false
      f:write('url = "', url, '/files"\n', 'header = "Authorization: Bearer bench-key"\n',
        'form = "file=@', path, '"\n', 'output = "/dev/null"\n')
    end
    f:close()
    return cfg
  end

  local function batch_cmd(url, parallel, list, extra)
    return ("%s batch %s %d %s %s"):format(b.fileapi, q(url), parallel, q(list), extra or "")
  end

  function G.batch()
    local n, parallel = 64, 8
    local url = slow(40)
    local list = files("batch", n, 4096)
    local r = b.duel({
      { name = "one", cmd = batch_cmd(url, 1, list) },
      { name = "group", cmd = batch_cmd(url, parallel, list) },
      { name = "curl", cmd = ("curl -sS -Z --parallel-max %d -K %s"):format(parallel, q(curl_uploads(list, url))) },
    })
    local one, group, curl = median(r.one, "wall"), median(r.group, "wall"), median(r.curl, "wall")
    out("batch %d x 4 KiB, 40 ms an answer  one at a time %.2f s  parallel = %d %.2f s (%.2fx)  curl -Z"
      .. " --parallel-max %d %.2f s   files/s fileapi %.0f  curl %.0f  ratio %.2f   at once %d / %d", n, one,
      parallel, group, group / one, parallel, curl, n / group, n / curl, curl / group, median(r.group, "at_once"),
      median(r.curl, "at_once"))
  end

  -- 500 files in 3 levels of folders: 20 at the top, 4 folders of 20, each
  -- with 5 subfolders of 20 (24 folders to make).
  local function tree()
    local root = b.work .. "/tree"
    local block = assert(io.open("/dev/urandom", "rb")):read(10240)
    local count = 0
    local function fill(dir)
      assert(sh("mkdir -p " .. q(dir)))
      for i = 1, 20 do
        local w = assert(io.open(("%s/f%02d.bin"):format(dir, i), "wb"))
        w:write(block)
        w:close()
        count = count + 1
      end
    end
    fill(root)
    for a = 1, 4 do
      fill(("%s/a%d"):format(root, a))
      for c = 1, 5 do fill(("%s/a%d/b%d"):format(root, a, c)) end
    end
    assert(count == 500)
    return root
  end

  function G.tree()
    local root = tree()
    local cli = ("env MKP_API_KEY=bench-key MKP_BASE_URL=%s %s %s upload -r %s --quiet --parallel "):format(
      q(slow(20)), b.lua, q(b.here .. "/../bin/fileapi"), q(root))
    local r = b.duel({ { name = "one", cmd = cli .. 1 }, { name = "eight", cmd = cli .. 8 } })
    local one, eight = median(r.one, "wall"), median(r.eight, "wall")
    out("tree 500 x 10 KiB in 24 folders, 20 ms a call  upload -r --parallel 1 %.2f s  --parallel 8 %.2f s"
      .. "  %.1fx faster   requests %d, at once %d", one, eight, one / eight, median(r.eight, "reqs"),
      median(r.eight, "at_once"))
  end

  -- nginx with 4 workers running fileapi, each on its own share of a
  -- batch: /start?n=&parallel=&base=&window= hands each worker n/4 uploads
  -- of 1 KiB (its timer picks them up within 10 ms and runs them in a group
  -- on a client whose budget is the rate_limit_dict they all share); /wait
  -- answers once all four are done: "PID OK FAILED" a worker.  /flush
  -- empties the budget's dict.
  local NGINX = [[
worker_processes 4;
daemon on;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path @PREFIX@/body;
    proxy_temp_path @PREFIX@/proxy;
    fastcgi_temp_path @PREFIX@/fastcgi;
    uwsgi_temp_path @PREFIX@/uwsgi;
    scgi_temp_path @PREFIX@/scgi;
    lua_package_path "@LIB@/?.lua;@LIB@/?/init.lua;;";
    lua_package_cpath "@LIB@/?.so;;";
    lua_shared_dict fileapi_rate 1m;
    lua_shared_dict jobs 1m;
    init_worker_by_lua_block {
        local jobs, id, seen, busy = ngx.shared.jobs, ngx.worker.id(), 0, false
        local function run(premature)
            local gen = jobs:get("gen") or 0
            if premature or busy or gen == seen then return end
            seen, busy = gen, true
            local fileapi = require "fileapi"
            local client = assert(fileapi.files.new({ api_key = "bench-key", base_url = jobs:get("base"),
                timeout = 600, rate_limit_dict = "fileapi_rate", rate_window = jobs:get("window") }))
            local g = assert(fileapi.group({ parallel = jobs:get("parallel") }))
            local data = string.rep("x", 1024)
            for i = 1, jobs:get("n" .. id) do
                g:spawn(function() return client:upload({ data = data, filename = "b" .. i .. ".bin" }) end)
            end
            local ok, failed = 0, 0
            for _, res in g:results() do
                if res then ok = ok + 1 else failed = failed + 1 end
            end
            client:close()
            jobs:set("result" .. id, ngx.worker.pid() .. " " .. ok .. " " .. failed)
            jobs:incr("done", 1, 0)
            busy = false
        end
        ngx.timer.every(0.01, run)
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /start {
            content_by_lua_block {
                local jobs, args = ngx.shared.jobs, ngx.req.get_uri_args()
                local n = tonumber(args.n)
                for id = 0, 3 do jobs:set("n" .. id, math.floor(n / 4) + (id < n % 4 and 1 or 0)) end
                jobs:set("base", args.base)
                jobs:set("window", tonumber(args.window))
                jobs:set("parallel", tonumber(args.parallel))
                jobs:set("done", 0)
                jobs:incr("gen", 1, 0)
                ngx.say("started")
            }
        }
        location = /wait {
            content_by_lua_block {
                local jobs = ngx.shared.jobs
                while (jobs:get("done") or 0) < 4 do ngx.sleep(0.005) end
                for id = 0, 3 do ngx.say(jobs:get("result" .. id)) end
            }
        }
        location = /flush { content_by_lua_block { ngx.shared.fileapi_rate:flush_all() ngx.say("ok") } }
        location = /ping { content_by_lua_block { ngx.say("pong") } }
    }
}
]]

  local function start_batch_nginx()
    local prefix = b.work .. "/batch-nginx"
    local lib = b.client_lib(prefix)
    local port = b.free_port()
    local conf = NGINX:gsub("@PREFIX@", prefix):gsub("@PORT@", tostring(port)):gsub("@LIB@", lib)
    sh("chmod 777 " .. q(prefix))
    b.start_nginx(prefix, conf, ("http://127.0.0.1:%d/ping"):format(port), "env -u LUA_PATH -u LUA_CPATH ")
    local function stop()
      local f = io.open(prefix .. "/nginx.pid")
      if f then
        sh("kill " .. f:read("*l") .. " 2>/dev/null")
        f:close()
      end
    end
    cleanups[#cleanups + 1] = stop
    return "http://127.0.0.1:" .. port, stop
  end

  function G.limit()
    local n, limit, window, delay = 90, 30, 3, 20
    local ideal = (n / limit - 1) * window
    local url = slow(delay, limit, window)
    local list = files("limit", n, 1024)
    local thirds = b.work .. "/limit-third.list"
    assert(sh(("head -n %d %s > %s"):format(n / 3, q(list), q(thirds))))
    local client_base, stop_nginx = start_batch_nginx()
    local _, redis_url = b.start_redis()
    local workers_out = b.work .. "/workers.out"
    local trigger = ("curl -sS '%s/start?n=%d&parallel=6&window=%d&base=%s' && curl -sS -o %s %s/wait"):format(
      client_base, n, window, url, q(workers_out), client_base)
    local fleet = {}
    for i = 1, 3 do fleet[i] = batch_cmd(url, 8, thirds, window .. " " .. q(redis_url)) .. " &" end
    local r = b.duel({
      { name = "process", cmd = batch_cmd(url, 8, list, tostring(window)) },
      { name = "nginx", cmd = "sh -c " .. q(trigger),
        before = "curl -sS " .. client_base .. "/flush >/dev/null" },
      { name = "fleet", cmd = "sh -c " .. q(table.concat(fleet, " ") .. " wait"),
        before = ("redis-cli -u %s FLUSHALL >/dev/null"):format(q(redis_url)) },
    }, math.min(b.runs, 3))
    stop_nginx()
    b.stop_redis()
    -- the workers of the last nginx run, and what they uploaded
    local workers, uploaded = {}, 0
    for line in io.lines(workers_out) do
      local pid, ok = line:match("^(%d+) (%d+)")
      workers[pid or "?"] = true
      uploaded = uploaded + (tonumber(ok) or 0)
    end
    local nworkers = 0
    for _ in pairs(workers) do nworkers = nworkers + 1 end
    local labels = { process = "one process, parallel = 8", nginx = "nginx, 4 workers x parallel 6, one dict",
      fleet = "3 processes x parallel 8, one Redis" }
    for _, name in ipairs({ "process", "nginx", "fleet" }) do
      local wall = median(r[name], "wall")
      local rejected = 0
      for _, run in ipairs(r[name]) do rejected = rejected + run.rejected end
      out("limit %d uploads at %d per %d s, %d ms an answer  %-40s %.2f s  ideal %d s  %.2fx   429s %d in %d runs",
        n, limit, window, delay, labels[name], wall, ideal, wall / ideal, rejected, #r[name])
    end
    out("limit (the last nginx run: %d workers uploaded %d)", nworkers, uploaded)
  end

  function G.bigbatch()
    local n, mib = 8, tonumber(os.getenv("BENCH_BATCH_MIB") or "128")
    local dir = b.work .. "/big"
    assert(sh("mkdir -p " .. q(dir)))
    local list = dir .. ".list"
    local f = assert(io.open(list, "w"))
    for i = 1, n do
      local path = ("%s/f%d.bin"):format(dir, i)
      b.make_file(path, mib)
      f:write(path, "\n")
    end
    f:close()
    local url = b.base .. "/v1"
    local r = b.duel({
      { name = "fileapi", cmd = batch_cmd(url, n, list) },
      { name = "curl", cmd = ("curl -sS -Z --parallel-max %d -K %s"):format(n, q(curl_uploads(list, url))) },
    })
    assert(sh("rm -rf " .. q(dir)))
    local mb = n * mib * 1048576 / 1e6
    local f_rate, c_rate = mb / median(r.fileapi, "wall"), mb / median(r.curl, "wall")
    local f_rss, c_rss = median(r.fileapi, "rss") / 1024, median(r.curl, "rss") / 1024
    local f_cpu, c_cpu = median(r.fileapi, "cpu"), median(r.curl, "cpu")
    out("bigbatch %d x %d MiB at once  fileapi %7.1f MB/s  curl -Z %7.1f MB/s  ratio %.2f   peak RSS fileapi %5.1f MiB"
      .. "  curl %5.1f MiB  (%+.1f)   CPU fileapi %.2f s  curl %.2f s  ratio %.2f", n, mib, f_rate, c_rate,
      f_rate / c_rate, f_rss, c_rss, f_rss - c_rss, f_cpu, c_cpu, f_cpu / c_cpu)
  end

  -- Whatever a failed group left running.
  function G.stop()
    for _, stop in ipairs(cleanups) do pcall(stop) end
    cleanups = {}
  end
  return G
end
