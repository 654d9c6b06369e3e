-- Create a folder in a files.ro shared folder.
--   lua5.4 examples/share_mkdir.lua TOKEN NAME [PARENT_UUID]
-- FILESRO_BASE_URL overrides https://files.ro; FILESRO_COOKIE passes a
-- protected share's session cookie.
local shares = require "fileapi.shares"

local token, name, parent = arg[1], arg[2], arg[3]
if not (token and name) then
  io.stderr:write("usage: share_mkdir.lua TOKEN NAME [PARENT_UUID]\n")
  os.exit(2)
end

local cookie = os.getenv("FILESRO_COOKIE")
local share = assert(shares.new({ token = token, headers = cookie and { Cookie = cookie } or nil }))
local folder, err = share:mkdir(name, { parent_id = parent })
share:close()
if not folder then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print(("created folder %s %q in %s"):format(folder.id, folder.name, folder.relationships.parent.data.id))
