-- Upload files to MijnKlantportaal, optionally into a directory.
--   MKP_API_KEY=... lua5.4 examples/upload.lua FILE... [--dir fsd_...]
local files = require "fileapi.files"

local paths, directory = {}, nil
local i = 1
while arg[i] do
  if arg[i] == "--dir" then
    directory = arg[i + 1]
    i = i + 1
  else
    paths[#paths + 1] = arg[i]
  end
  i = i + 1
end
if #paths == 0 then
  io.stderr:write("usage: upload.lua FILE... [--dir fsd_ID]\n")
  os.exit(2)
end

local client = assert(files.new())
local status = 0
for _, path in ipairs(paths) do
  local item, err = client:upload(path, { directory = directory })
  if item then
    print(("uploaded %s as %s (%d bytes, %s)"):format(path, item.id, item.size, item.mime))
  else
    io.stderr:write(("%s: %s\n"):format(path, tostring(err)))
    status = 1
  end
end
client:close()
os.exit(status)
