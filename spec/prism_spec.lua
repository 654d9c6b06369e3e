-- Keeps the mock honest: the suite's MijnKlantportaal calls, through Prism
-- in proxy mode in front of the mock, checked against the reference OpenAPI
-- document.  Every request and response must conform; the statuses the
-- reference leaves open are listed by name below.  Run by make test-prism
-- (tools/prism.sh installs Prism outside the checkout).
local helper = require "helper"
local files = require "fileapi.files"
local socket = require "socket"

-- The reference OpenAPI document travels with the checkout, so the stage
-- runs from any clone; where the project's shared reference sits beside the
-- checkout, the copy must still equal it (checked below).
local SPEC = helper.support .. "/reference/mijnklantportaal-files.openapi.yaml"
local SHARED = helper.root .. "/../shared/reference/mijnklantportaal-files.openapi.yaml"

-- Undocumented statuses the API does answer with: the reference lists no 404
-- for POST /files with an unknown ?directory=, nor 401 anywhere.
local OPEN = {
  ["404 for an unknown directory"] =
    "response Unable to match the returned status code with those defined in the document: 201,422,426",
}

describe("MijnKlantportaal through Prism #prism", function()
  local mock, prism_pid, log, base

  setup(function()
    local prism = assert(os.getenv("FILEAPI_PRISM"), "FILEAPI_PRISM names Prism's command: run make test-prism")
    local spec = SPEC
    local shared = io.open(SHARED, "rb")
    if shared then
      assert(shared:read("*a") == io.open(SPEC, "rb"):read("*a"),
        "spec/support/reference is out of date: copy the shared reference OpenAPI document again")
      shared:close()
    end
    mock = helper.start_mock()
    local port = helper.closed_port()
    log = helper.tmpname(".prism.log")
    local pid_file = helper.tmpname(".pid")
    -- made here: the background job opens its redirect only when it runs
    assert(io.open(log, "w")):close()
    assert(os.execute(("%s proxy --errors %s %s -p %d >>%s 2>&1 & echo $! >%s"):format(helper.sh_quote(prism),
      helper.sh_quote(spec), helper.sh_quote(mock.mkp_url), port, helper.sh_quote(log), helper.sh_quote(pid_file))))
    prism_pid = io.open(pid_file):read("*l")
    os.remove(pid_file)
    base = "http://127.0.0.1:" .. port
    for _ = 1, 300 do
      local text = io.open(log):read("*a")
      if text:find("Prism is listening", 1, true) then return end
      socket.sleep(0.1)
    end
    error("Prism did not start:\n" .. io.open(log):read("*a"))
  end)

  teardown(function()
    if prism_pid then os.execute("kill " .. prism_pid .. " 2>/dev/null") end
    mock:stop()
    os.remove(log)
  end)

  local function log_size()
    return #io.open(log):read("*a")
  end

  -- Prism's verdicts written since `from`.
  local function violations(from)
    socket.sleep(0.2)
    local text = io.open(log):read("*a"):sub(from + 1)
    local found = {}
    for line in text:gmatch("[^\n]+") do
      local v = line:match("Violation: (.*)$")
      if v then found[#found + 1] = v end
    end
    return found
  end

  -- name, call(client, state) -> result, err; expected kind (nil: success);
  -- the open status it may draw, if any
  local CALLS = {
    { "mkdir", function(c, s) s.dir = assert(c:mkdir("Contracts")) return s.dir end },
    { "mkdir in a directory", function(c, s) return c:mkdir("Sub", { directory = s.dir.id }) end },
    { "upload", function(c, s)
      s.file = assert(c:upload({ data = "%PDF-1.4 fake", filename = "contract.pdf" }, { directory = s.dir.id }))
      return s.file
    end },
    { "upload from a reader", function(c)
      local done = false
      return c:upload({ size = 5, filename = "r.txt", reader = function()
        if done then return nil end
        done = true
        return "12345"
      end })
    end },
    { "upload, a non-ASCII name", function(c) return c:upload({ data = "x", filename = "überweisung €.pdf" }) end },
    { "get a file", function(c, s) return c:get(s.file.id) end },
    { "get a directory", function(c, s) return c:get(s.dir.id) end },
    { "get an unknown id", function(c) return c:get("fsf_unknown00001") end, "not_found" },
    { "download link", function(c, s) return c:download_link(s.file.id) end },
    { "download link, unknown file", function(c) return c:download_link("fsf_unknown00001") end, "not_found" },
    { "download", function(c, s) return c:download(s.file.id, function() return true end) end },
    { "share with a customer", function(c, s) return c:share({ s.file.id, s.dir.id }, { customer_id = "cst_abc12345678" }) end },
    { "share by a public link", function(c, s) return c:share({ s.file.id }) end },
    { "list file shares", function(c)
      local n = 0
      for share, err in c:file_shares() do
        if not share then return nil, err end
        n = n + 1
      end
      return n
    end },
    { "request files", function(c, s)
      s.request = assert(c:request_files({ name = "Mortgage", description = "Please", customer_id = "cst_abc12345678",
        directory = s.dir.id, requested_files = { { name = "Passport", required = true, max_file_size = 10240 },
          { name = "Payslip", description = "latest" } } }))
      return s.request
    end },
    { "request files by a public link", function(c)
      return c:request_files({ name = "Public", requested_files = { { name = "Anything" } } })
    end },
    { "get a file request", function(c, s) return c:file_request(s.request.id) end },
    { "get an unknown file request", function(c) return c:file_request("frq_unknown00001") end, "not_found" },
    { "list file requests", function(c)
      local n = 0
      for r, err in c:file_requests() do
        if not r then return nil, err end
        n = n + 1
      end
      return n
    end },
    { "mkdir in an unknown directory", function(c) return c:mkdir("X", { directory = "fsd_unknown00001" }) end,
      "not_found", "404 for an unknown directory" },
  }

  it("every call conforms to the reference", function()
    local client = assert(files.new({ api_key = helper.API_KEY, base_url = base, retries = 0, timeout = 20 }))
    local state, report = {}, {}
    mock:seed({ file_shares = 20, file_requests = 17 }) -- two pages of each
    for _, call in ipairs(CALLS) do
      local from = log_size()
      local result, err = call[2](client, state)
      if call[3] then
        assert.is_nil(result, call[1])
        assert.same(call[3], err and err.kind, call[1])
      else
        assert(result, call[1] .. ": " .. tostring(err))
      end
      for _, v in ipairs(violations(from)) do
        if not (call[4] and OPEN[call[4]] == v) then report[#report + 1] = call[1] .. ": " .. v end
      end
    end
    client:close()
    assert.same({}, report)
    for name in pairs(OPEN) do print("      allowed, as the reference leaves it open: " .. name) end
  end)
end)
