-- The transport conformance table: one list of server behaviours, each
-- played by the mock through a real socket and met by both transports --
-- libcurl in this process and cosockets inside nginx -- with the same
-- expectations, and the two results compared with each other.
local helper = require "helper"
local conformance = require "conformance"
local kinds = require "fileapi.kinds"

local function raw(text, keep) return { type = "steps", steps = { { send = text } }, keep = keep } end

local MIB = 1024 * 1024

-- name, faults to queue, request (spec for conformance.run), check(out)
local CASES = {
  { "content-length", { raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true) }, {},
    function(out) assert.same("hello", out.body) end },
  { "chunked, with extensions and trailers",
    { raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n"
      .. "0\r\nX-Trailer: t\r\n\r\n", true) }, {},
    function(out)
      assert.same("hello world", out.body)
      assert.is_nil(out.headers["x-trailer"])
    end },
  { "close-delimited", { raw("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end") }, {},
    function(out) assert.same("until the end", out.body) end },
  { "HEAD: no body, whatever Content-Length says",
    { raw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true) }, { method = "HEAD", timeout = 3 },
    function(out)
      assert.same(200, out.status)
      assert.same("", out.body)
      assert.same("100", out.headers["content-length"])
      assert.is_true(out.seconds < 1, out.seconds)
    end },
  { "204: no body", { raw("HTTP/1.1 204 No Content\r\n\r\n", true) }, { method = "DELETE", timeout = 3 },
    function(out)
      assert.same(204, out.status)
      assert.is_true(out.seconds < 1, out.seconds)
    end },
  { "304: no body", { raw("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", true) }, { timeout = 3 },
    function(out)
      -- not a 2xx: an error of kind http, without waiting for a body
      assert.same("http", out.kind)
      assert.same(304, out.status)
      assert.is_true(out.seconds < 1, out.seconds)
    end },
  { "100 Continue, then the final answer",
    { raw("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true) }, {},
    function(out) assert.same("ok", out.body) end },
  { "1xx informational (103) before the final answer",
    { raw("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", true) },
    { method = "POST", body = "{}" },
    function(out)
      assert.same(201, out.status)
      assert.same("ok", out.body)
      assert.is_nil(out.headers.link)
    end },
  { "Connection: close, then a fresh connection for the next request",
    { raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
      raw("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", true) }, { then_url = true },
    function(out)
      assert.same("ok", out.body)
      assert.same(200, out.then_status)
      assert.same("next", out.then_body)
    end },
  -- RFC 9112 9.3: an HTTP/1.0 answer keeps its connection only when it says keep-alive
  { "HTTP/1.0 without keep-alive: the next request takes a fresh connection",
    { raw("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
      raw("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", true) }, { then_url = true },
    function(out, _, reqs)
      assert.same("ok", out.body)
      assert.same("next", out.then_body)
      assert.are_not.equal(reqs[1].conn, reqs[2].conn)
    end },
  { "HTTP/1.0 with Connection: keep-alive: the connection is reused",
    { raw("HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", true),
      raw("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", true) }, { then_url = true },
    function(out, _, reqs)
      assert.same("next", out.then_body)
      assert.same(reqs[1].conn, reqs[2].conn)
    end },
  { "a 64 KiB header", { raw("HTTP/1.1 200 OK\r\nX-Big: " .. ("a"):rep(65536) .. "\r\nContent-Length: 2\r\n\r\nok", true) }, {},
    function(out) assert.same(65536, #out.headers["x-big"]) end },
  { "headers past 128 KiB", { raw("HTTP/1.1 200 OK\r\nX-A: " .. ("a"):rep(70000) .. "\r\nX-B: "
      .. ("b"):rep(70000) .. "\r\nContent-Length: 2\r\n\r\nok") }, {},
    function(out) assert.same("protocol", out.kind) end },
  { "a header line split across packets",
    { { type = "steps", keep = true, steps = { { send = "HTTP/1.1 200 OK\r\nX-Spl" }, { pause = 0.1 },
      { send = "it: yes\r\nContent-Le" }, { pause = 0.1 }, { send = "ngth: 2\r\n\r\nok" } } } }, {},
    function(out)
      assert.same("yes", out.headers["x-split"])
      assert.same("ok", out.body)
    end },
  { "a body larger than max_response", { raw("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" .. ("x"):rep(5000)) },
    { max_response = 1000 },
    function(out)
      assert.same("protocol", out.kind)
      assert.matches("larger than 1000 bytes", out.message)
    end },
  { "a chunked body larger than max_response",
    { raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" .. ("x"):rep(5000) .. "\r\n0\r\n\r\n") },
    { max_response = 1000 },
    function(out) assert.same("protocol", out.kind) end },
  { "a body cut short", { raw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf") }, {},
    function(out)
      assert.same("protocol", out.kind)
      -- on_event: the answer's status, the failure's kind, the bytes that came
      local ev = out.events[1]
      assert.same({ 200, "protocol", 4, 1 }, { ev.status, ev.kind, ev.bytes_received, #out.events })
    end },
  { "an error body is buffered, not sunk",
    { raw('HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n{"message":"no file."}', true) },
    { sink = "writer" },
    function(out)
      assert.same("not_found", out.kind)
      assert.same("no file.", out.message)
      assert.same(0, out.writer_bytes)
    end },
  { "a streamed body to a path", { { type = "file", size = 3 * MIB + 5 } }, { sink = "path" },
    function(out, path)
      assert.same(3 * MIB + 5, out.download.size)
      assert.same(helper.sha256_of_pattern(3 * MIB + 5), helper.sha256(path))
    end },
  { "a streamed body to a writer", { { type = "file", size = 3 * MIB + 5 } }, { sink = "writer" },
    function(out)
      assert.same(3 * MIB + 5, out.writer_bytes)
      assert.is_true(out.writer_ok)
    end },
  { "a drop mid-body, resumed with Range", { { type = "file", size = 2 * MIB, ranges = true, drop_at = MIB },
      { type = "file", size = 2 * MIB, ranges = true } }, { sink = "path", retries = 2 },
    function(out, path, reqs)
      assert.same(2 * MIB, out.download.size)
      assert.same(1, out.download.resumed)
      assert.same(helper.sha256_of_pattern(2 * MIB), helper.sha256(path))
      assert.same("bytes=1048576-", reqs[2].headers.range)
      assert.same('"v1"', reqs[2].headers["if-range"])
    end },
  { "a drop mid-body, resumed into a writer", { { type = "file", size = 2 * MIB, ranges = true, drop_at = 777777 },
      { type = "file", size = 2 * MIB, ranges = true } }, { sink = "writer", retries = 2 },
    function(out)
      assert.same(2 * MIB, out.writer_bytes)
      assert.is_true(out.writer_ok)
    end },
  { "a drop mid-body without range support starts over", { { type = "file", size = 2 * MIB, drop_at = MIB },
      { type = "file", size = 2 * MIB } }, { sink = "path", retries = 2 },
    function(out, path, reqs)
      assert.same(2 * MIB, out.download.size)
      assert.same(helper.sha256_of_pattern(2 * MIB), helper.sha256(path))
      assert.is_nil(reqs[2].headers.range)
    end },
  { "a changed file (If-Range fails) starts the path over", { { type = "file", size = MIB, ranges = true, drop_at = 1000 },
      { type = "file", size = MIB, ranges = true, etag = '"v2"' } }, { sink = "path", retries = 2 },
    function(out, path)
      assert.same(MIB, out.download.size)
      assert.same(helper.sha256_of_pattern(MIB), helper.sha256(path))
    end },
  { "a changed file cannot be taken back from a writer", { { type = "file", size = MIB, ranges = true, drop_at = 1000 },
      { type = "file", size = MIB, ranges = true, etag = '"v2"' } }, { sink = "writer", retries = 2 },
    function(out)
      assert.is_false(out.ok)
      assert.same("protocol", out.kind)
      assert.same(1000, out.writer_bytes)
    end },
}

-- Every HTTP status the kinds list names (and a 5xx, and another) fails
-- with the kind its row says, on both transports: a kind added there is
-- met here without another line.
local EXAMPLES = { ["5xx"] = { 502 }, other = { 418 } }
for _, k in ipairs(kinds.LIST) do
  local statuses = type(k.statuses) == "table" and k.statuses or EXAMPLES[k.statuses] or {}
  for _, status in ipairs(statuses) do
    CASES[#CASES + 1] = { ("HTTP %d: kind %s, from the kinds list"):format(status, k.kind),
      { raw(("HTTP/1.1 %d Status\r\nContent-Length: 2\r\n\r\n{}"):format(status), true) }, {},
      function(out)
        assert.same(k.kind, out.kind)
        assert.same(status, out.status)
      end }
  end
end

-- each wait is told with its reason, to on_wait and as a wait event
-- between the attempts' request events
CASES[#CASES + 1] = { "waits are told with their reason: the server's Retry-After, then a backoff",
  { { type = "status", status = 503, headers = { ["Retry-After"] = "1" } }, { type = "status", status = 502 },
    raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true) }, { retries = 2 },
  function(out)
    assert.same("ok", out.body)
    assert.same({ "retry_after", "backoff" }, out.waits)
    local seen = {}
    for i, ev in ipairs(out.events) do
      seen[i] = ev.type == "wait" and ("%s %g"):format(ev.reason, ev.seconds) or ("%d %d"):format(ev.attempt, ev.status)
    end
    assert.same("1 503", seen[1])
    assert.same("retry_after 1", seen[2])
    assert.same("2 502", seen[3])
    assert.matches("^backoff 0%.", seen[4])
    assert.same("3 200", seen[5])
    assert.is_true(out.events[5].reused)
  end }

-- on_event's request event of every attempt: its method and URL, what came
-- back, the bytes each way as the server saw them, the time it took, and
-- whether the connection was one an earlier request had opened
CASES[#CASES + 1] = { "request events: method, URL, status, bytes both ways, seconds, and reuse of a kept-alive connection",
  { raw("HTTP/1.1 201 Created\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
    raw("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", true),
    raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nend\r\n0\r\n\r\n", true) },
  { method = "POST", body = "abcdefg", then_url = true, then_again = true },
  function(out, _, reqs)
    assert.same(200, out.again_status)
    local evs = out.events
    assert.same(3, #evs)
    for _, ev in ipairs(evs) do
      assert.same("request", ev.type)
      assert.same(1, ev.attempt)
      assert.is_nil(ev.kind)
      assert.is_true(type(ev.seconds) == "number" and ev.seconds >= 0 and ev.seconds < 5, ev.seconds)
    end
    assert.same({ "POST", 201, 7, 5 }, { evs[1].method, evs[1].status, evs[1].bytes_sent, evs[1].bytes_received })
    assert.matches("^http://127%.0%.0%.1:%d+/conf/item$", evs[1].url)
    assert.same(reqs[1].body_length, evs[1].bytes_sent)
    -- after Connection: close, a new connection; then that one again
    assert.same({ "GET", 200, 0, 4, false }, { evs[2].method, evs[2].status, evs[2].bytes_sent, evs[2].bytes_received,
      evs[2].reused })
    assert.matches("/conf/next$", evs[2].url)
    assert.same({ 3, true }, { evs[3].bytes_received, evs[3].reused })
    assert.are_not.equal(reqs[1].conn, reqs[2].conn)
    assert.same(reqs[2].conn, reqs[3].conn)
  end }

-- The 256 MiB bodies run in one stage only (see tools/suite.sh).
local BIG = {
  { "a streamed 256 MiB body to a path", { { type = "file", size = 256 * MIB } }, { sink = "path", timeout = 120 },
    function(out, path)
      assert.same(256 * MIB, out.download.size)
      assert.same(helper.sha256_of_pattern(256 * MIB), helper.sha256(path))
    end },
  { "a streamed 256 MiB body to a writer", { { type = "file", size = 256 * MIB } }, { sink = "writer", timeout = 120 },
    function(out)
      assert.same(256 * MIB, out.writer_bytes)
      assert.is_true(out.writer_ok)
    end },
}

-- What both transports must agree on; of on_event's events, what each
-- attempt came to and each wait's reason.
local function essence(out)
  local events = {}
  for i, ev in ipairs(out.events or {}) do
    events[i] = { type = ev.type, method = ev.method, status = ev.status, kind = ev.kind, attempt = ev.attempt,
      reason = ev.reason }
  end
  return { ok = out.ok, status = out.status, kind = out.kind, body = out.body,
    size = out.download and out.download.size, writer_bytes = out.writer_bytes, then_status = out.then_status,
    waits = out.waits, events = events }
end

describe("transport conformance #nginx", function()
  local mock, nginx, dir

  setup(function()
    mock = helper.start_mock()
    nginx = helper.start_test_nginx(mock)
    dir = helper.tmpname(".conformance")
    os.execute("mkdir -p " .. helper.sh_quote(dir) .. " && chmod 777 " .. helper.sh_quote(dir))
  end)
  teardown(function()
    if nginx then nginx:stop() end
    mock:stop()
    os.execute("rm -rf " .. helper.sh_quote(dir))
  end)

  local function run(case, transport)
    local _, faults, spec = case[1], case[2], case[3]
    mock:reset()
    for _, f in ipairs(faults) do f.path = "/conf" end
    mock:faults(faults)
    local req = {}
    for k, v in pairs(spec) do req[k] = v end
    req.url = mock.base .. "/conf/item"
    if spec.then_url then req.then_url = mock.base .. "/conf/next" end
    req.transport = transport
    req.path = dir .. "/" .. transport .. ".bin"
    os.remove(req.path)
    local out
    if transport == "curl" then
      out = conformance.run(req)
    else
      local err
      out, err = helper.post_json(nginx:url("/conformance"), req, 180)
      assert(out, tostring(err) .. "\n" .. nginx:log_tail())
    end
    return out, req.path, mock:requests()
  end

  local function define(list, tag)
    for _, case in ipairs(list) do
      it(case[1] .. (tag or ""), function()
        local results = {}
        for _, transport in ipairs({ "curl", "ngx" }) do
          local out, path, reqs = run(case, transport)
          local ok, err = pcall(case[4], out, path, reqs)
          os.remove(path)
          assert(ok, transport .. ": " .. tostring(err) .. "\n" .. require("cjson").encode(out))
          results[transport] = essence(out)
        end
        assert.same(results.curl, results.ngx)
      end)
    end
  end

  define(CASES)
  define(BIG, " #slow")
end)
