-- The nginx example as people copy it (examples/nginx): where its requests
-- go is the server's choice, every byte of a body reaches the API, and the
-- shell nginx was started from does not decide which Lua modules it loads.
local helper = require "helper"
local cjson = require "cjson"
local socket = require "socket"

local q = helper.sh_quote

-- One request with curl: opts.method, opts.headers (a list), opts.upload
-- (a file sent as the body), opts.chunked, opts.jar (a cookie jar).
-- Returns the status, the response's body and its head.
local function curl(url, opts)
  opts = opts or {}
  local head, body = helper.tmpname(".head"), helper.tmpname(".body")
  local args = { "curl -s -m 60 -o", q(body), "-D", q(head) }
  if opts.method then args[#args + 1] = "-X " .. opts.method end
  for _, h in ipairs(opts.headers or {}) do args[#args + 1] = "-H " .. q(h) end
  if opts.upload then args[#args + 1] = "-T " .. q(opts.upload) end
  if opts.chunked then args[#args + 1] = "-H 'Transfer-Encoding: chunked'" end
  if opts.jar then args[#args + 1] = ("-b %s -c %s"):format(q(opts.jar), q(opts.jar)) end
  args[#args + 1] = q(url)
  os.execute(table.concat(args, " "))
  local head_text, body_text = helper.read_file(head) or "", helper.read_file(body) or ""
  os.remove(head)
  os.remove(body)
  local status -- the last head's (after a 100 Continue)
  for code in head_text:gmatch("HTTP/%S+ (%d+)") do status = tonumber(code) end
  return status, body_text, head_text
end

local function json_of(status, body, server)
  local ok, doc = pcall(cjson.decode, body)
  assert(ok and type(doc) == "table", ("HTTP %s: %s\nnginx error.log:\n%s"):format(tostring(status), body,
    server:log_tail()))
  return doc
end

local function query_value(url, name)
  local v = url:match("[?&]" .. name .. "=([^&]*)")
  return v and (v:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

describe("the nginx example sends credentials only where its configuration says #nginx", function()
  local mock, decoy, decoy_port

  setup(function()
    mock = helper.start_mock()
    -- a listener on loopback that never answers: a request sent there
    -- waits in its backlog, where decoy_heard() finds it
    decoy = assert(socket.bind("127.0.0.1", 0))
    decoy:settimeout(0)
    decoy_port = select(2, decoy:getsockname())
  end)

  teardown(function()
    mock:stop()
    if decoy then decoy:close() end
  end)

  -- What reached the decoy since the last look: one line per connection
  -- (whether it carried an Authorization header, never the header itself).
  local function decoy_heard()
    local heard = {}
    while true do
      local c = decoy:accept()
      if not c then break end
      c:settimeout(1)
      local data, _, partial = c:receive(65536)
      data = data or partial or ""
      heard[#heard + 1] = ("a connection (%d bytes, %s)"):format(#data,
        data:lower():find("\nauthorization:", 1, true) and "WITH an Authorization header" or "no Authorization header")
      c:close()
    end
    return table.concat(heard, "; ")
  end

  local function assert_decoy_silent(route)
    local heard = decoy_heard()
    assert(heard == "", route .. " sent a request to the address the caller named: " .. heard)
  end

  -- Every name a handler might take an address, a transport, a proxy, a
  -- token or a redirect from, pointing at the decoy (over http and https).
  local function hostile_queries()
    local plain, tls = "http://127.0.0.1:" .. decoy_port, "https://localhost:" .. decoy_port
    local list = {}
    for _, v in ipairs({ { plain, "curl" }, { tls, "ngx" }, { plain, "ngx" } }) do
      local at, transport = v[1], v[2]
      list[#list + 1] = table.concat({ "base=" .. at .. "/v1", "base_url=" .. at .. "/v1", "url=" .. at,
        "mkp_base_url=" .. at .. "/v1", "filesro_base_url=" .. at, "oauth_base_url=" .. at,
        "proxy=" .. plain, "redirect_uri=" .. at .. "/oauth/callback", "host=127.0.0.1:" .. decoy_port,
        "token=visitor-token", "transport=" .. transport, "timeout=1" }, "&")
    end
    return list
  end

  local function hostile_headers()
    local at = "127.0.0.1:" .. decoy_port
    return { "Host: " .. at, "X-Forwarded-Host: " .. at, "X-Forwarded-Proto: http", "Forwarded: host=" .. at }
  end

  -- The API routes, each request also naming the decoy.
  local function api_routes(nginx, i, hostile, body)
    local headers = hostile_headers()
    local status, text = curl(nginx:url("/mkdir?name=Kept" .. i .. "&" .. hostile), { headers = headers })
    local doc = json_of(status, text, nginx)
    assert_decoy_silent("/mkdir")
    assert.is_true(doc.ok, text)
    local req = mock:last_request()
    assert.same("/v1/files", req.path)
    assert.same("Bearer " .. helper.API_KEY, req.headers.authorization)

    for _, route in ipairs({ "/upload", "/forward" }) do
      status, text = curl(nginx:url(route .. "?name=kept.txt&" .. hostile),
        { method = "POST", upload = body, headers = headers })
      doc = json_of(status, text, nginx)
      assert_decoy_silent(route)
      assert.is_true(doc.ok, text)
      assert.same("kept where it belongs", mock:last_request().parts[1].data)
    end

    -- the share's token is the configured editor's, not the query's visitor
    status, text = curl(nginx:url("/share-mkdir?name=Kept" .. i .. "&" .. hostile), { headers = headers })
    doc = json_of(status, text, nginx)
    assert_decoy_silent("/share-mkdir")
    assert.is_true(doc.ok, text)
    assert.matches("/shares/editor%-token/items$", mock:last_request().path)
  end

  -- The OAuth routes, signing in from scratch: the consent URL is the
  -- configured manage host's and sends the code back to the configured
  -- address, not to the request's Host.
  local function oauth_routes(nginx, i, hostile, jar)
    local headers = hostile_headers()
    local status, _, head = curl(nginx:url("/oauth/connect?" .. hostile), { headers = headers, jar = jar })
    assert_decoy_silent("/oauth/connect")
    assert.same(302, status, nginx:log_tail())
    local consent = head:match("\n[Ll]ocation: ([^\r\n]+)")
    assert.matches("^" .. mock.oauth_url:gsub("%p", "%%%0") .. "/oauth/authorize%?", consent)
    assert.same(nginx:url("/oauth/callback"), query_value(consent, "redirect_uri"))
    status, _, head = curl(consent)
    assert.same(302, status)
    local back = head:match("\n[Ll]ocation: ([^\r\n]+)")
    assert.matches("^" .. nginx:url("/oauth/callback"):gsub("%p", "%%%0") .. "%?code=", back)
    local text = select(2, curl(back .. "&" .. hostile, { headers = headers, jar = jar }))
    assert_decoy_silent("/oauth/callback")
    assert.matches("^connected", text)

    status, text = curl(nginx:url("/oauth/mkdir?name=App" .. i .. "&" .. hostile), { headers = headers })
    local doc = json_of(status, text, nginx)
    assert_decoy_silent("/oauth/mkdir")
    assert.is_true(doc.ok, text)
    assert.matches("^Bearer at_", mock:last_request().headers.authorization)
  end

  it("every route, whatever the query and headers name, talks only to the configured services", function()
    local body = helper.tmpname(".body")
    local f = assert(io.open(body, "wb"))
    f:write("kept where it belongs")
    f:close()
    -- a fresh nginx for each: the OAuth routes sign in from scratch
    for i, hostile in ipairs(hostile_queries()) do
      mock:reset()
      local jar = helper.tmpname(".jar")
      local nginx = helper.start_nginx(mock)
      local ok, err = pcall(function()
        api_routes(nginx, i, hostile, body)
        oauth_routes(nginx, i, hostile, jar)
      end)
      nginx:stop()
      os.remove(jar)
      if not ok then
        os.remove(body)
        error(err, 0)
      end
    end
    os.remove(body)
  end)
end)

describe("the nginx example's /upload sends every byte of the body #nginx", function()
  local mock, nginx, api

  setup(function()
    mock = helper.start_mock()
    nginx = helper.start_nginx(mock)
    api = assert(require("fileapi.files").new({ api_key = helper.API_KEY, base_url = mock.mkp_url }))
  end)

  teardown(function()
    if nginx then nginx:stop() end
    mock:stop()
  end)

  before_each(function() mock:reset() end)

  local function random_file(size)
    local path = helper.tmpname(".bin")
    assert(os.execute(("head -c %d /dev/urandom > %s"):format(size, q(path))))
    return path
  end

  -- The SHA-256 of the bytes the mock stored for a file, downloaded back.
  local function stored_sum(id)
    local dest = helper.tmpname(".stored")
    assert(api:download(id, dest))
    local sum = helper.sha256(dest)
    os.remove(dest)
    return sum
  end

  -- Uploads `size` random bytes through the example; checks the answer and
  -- the stored bytes and says where the handler took the body from.
  local function upload_and_compare(size, opts)
    local path = random_file(size)
    local status, text = curl(nginx:url("/upload?name=body.bin"), {
      method = "POST", upload = path, chunked = opts and opts.chunked })
    local sent = helper.sha256(path)
    os.remove(path)
    local doc = json_of(status, text, nginx)
    assert.same(200, status, text)
    assert.is_true(doc.ok, text)
    assert.same(size, doc.result.size)
    assert.same(sent, stored_sum(doc.result.id))
    return doc
  end

  it("a small body, kept in memory by nginx", function()
    assert.same("memory", upload_and_compare(1000).body)
  end)

  it("a 50 KB body, written to a temporary file by nginx (over client_body_buffer_size)", function()
    assert.same("file", upload_and_compare(50 * 1024 + 7).body)
  end)

  it("a 50 KB body sent chunked (no Content-Length)", function()
    assert.same("file", upload_and_compare(50 * 1024 + 7, { chunked = true }).body)
  end)

  it("a temporary file body is sent again after a 503", function()
    mock:faults({ { type = "status", status = 503, path = "/v1/files", headers = { ["Retry-After"] = "0" } } })
    assert.same("file", upload_and_compare(200 * 1024).body)
    local uploads = 0
    for _, r in ipairs(mock:requests()) do
      if r.path == "/v1/files" then uploads = uploads + 1 end
    end
    assert.same(2, uploads)
  end)

  it("a 20 MiB body, streamed from the request socket", function()
    assert.same("socket", upload_and_compare(20 * 1024 * 1024).body)
  end)

  -- Declares `size` bytes, sends `sent`, then closes its side: the answer
  -- (possibly none) as text.
  local function truncated(size, sent, route)
    local c = assert(socket.connect("127.0.0.1", nginx.port))
    c:settimeout(60)
    assert(c:send(("POST %s?name=cut.bin HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"):format(route or "/upload", size)))
    local chunk = ("z"):rep(65536)
    local left = sent
    while left > 0 do
      local n = math.min(left, #chunk)
      assert(c:send(chunk, 1, n))
      left = left - n
    end
    c:shutdown("send")
    local answer, _, partial = c:receive("*a")
    c:close()
    return answer or partial or ""
  end

  local function stored_files()
    local n = 0
    for _, item in ipairs(mock:mkp_items()) do
      if item.type == "file" then n = n + 1 end
    end
    return n
  end

  it("a body that ends early is an error, and nothing is stored", function()
    -- read by nginx first: nginx ends the request (its 400, or nothing)
    local answer = truncated(100 * 1024, 40 * 1024)
    assert.is_nil(answer:match("^HTTP/1%.1 2"), answer)
    assert.is_nil(answer:find('"ok":true', 1, true), answer)
    -- streamed (and /forward, always streamed): the handler answers 400
    for _, route in ipairs({ "/upload", "/forward" }) do
      answer = truncated(12 * 1024 * 1024, 9 * 1024 * 1024, route)
      assert.matches("^HTTP/1%.1 400", answer)
      local doc = cjson.decode(answer:match("\r\n\r\n.-({.*})")) -- the body is sent chunked
      assert.is_false(doc.ok)
      assert.same("request_body", doc.error.kind)
      assert.matches("ended after 9437184 of 12582912 bytes", doc.error.message)
    end
    assert.same(0, stored_files())
    assert.is_true(upload_and_compare(1000).ok) -- and the worker goes on
  end)
end)

describe("the nginx example ignores the shell's LUA_PATH and LUA_CPATH #nginx", function()
  local mock, dir

  setup(function()
    mock = helper.start_mock()
    dir = helper.tmpname(".lua54")
    assert(os.execute("mkdir -p " .. q(dir)))
  end)

  teardown(function()
    mock:stop()
    os.execute("rm -rf " .. q(dir))
  end)

  it("serves requests when nginx starts from a shell set up for Lua 5.4", function()
    -- a tree with modules the workers must not load: a cjson that fails,
    -- beside Lua 5.4's real one
    local f = assert(io.open(dir .. "/cjson.lua", "w"))
    f:write('error("the cjson of LUA_PATH was loaded")\n')
    f:close()
    f = assert(io.open(dir .. "/cjson.so", "w"))
    f:write("not a library\n")
    f:close()
    os.execute("chmod -R a+rX " .. q(dir))
    local p = assert(io.popen("lua5.4 -e 'print((package.searchpath(\"cjson\", package.cpath)))' 2>/dev/null"))
    local real = (p:read("*l") or ""):match("^(.*)/cjson%.so$")
    p:close()
    local cpath = dir .. "/?.so;" .. (real and (real .. "/?.so;") or "") .. ";"
    local nginx = helper.start_nginx(mock, { env = { LUA_PATH = dir .. "/?.lua;;", LUA_CPATH = cpath } })
    local ok, err = pcall(function()
      for i = 1, 3 do
        local status, body = helper.http_get(nginx:url("/mkdir?name=Lua" .. i))
        assert.same(200, status, tostring(body) .. "\nnginx error.log:\n" .. nginx:log_tail())
        assert.is_true(cjson.decode(body).ok, body)
      end
      local log = nginx:log_tail(1000)
      assert.is_nil(log:find("LUA_PATH was loaded", 1, true), log)
      assert.is_nil(log:find("exited on signal", 1, true), log)
    end)
    nginx:stop()
    if not ok then error(err, 0) end
  end)
end)
