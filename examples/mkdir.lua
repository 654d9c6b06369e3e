-- Create a directory on MijnKlantportaal.
--   MKP_API_KEY=... lua5.4 examples/mkdir.lua NAME [fsd_PARENT]
local files = require "fileapi.files"

local name, parent = arg[1], arg[2]
if not name then
  io.stderr:write("usage: mkdir.lua NAME [fsd_PARENT]\n")
  os.exit(2)
end

local dir, err = files.mkdir(name, { directory = parent })
if not dir then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print(("created %s %s"):format(dir.id, dir.name))
