-- Renders the README's options and error kinds tables from their one lists
-- (fileapi.http.options, fileapi.kinds):
--   lua5.4 tools/tables.lua README.md          prints what the blocks should be
--   lua5.4 tools/tables.lua --write README.md  rewrites them in place
-- spec/tables_spec.lua fails while the README differs.
local options = require "fileapi.http.options"
local kinds = require "fileapi.kinds"

local M = {}

M.BLOCKS = {
  options = "| option | default | meaning |\n|---|---|---|\n" .. options.markdown(),
  kinds = "| kind | from | exit status | when |\n|---|---|---|---|\n" .. kinds.markdown(),
  exit = "Exit status by error kind: " .. kinds.exit_summary() .. ".",
}

-- name -> the text of each <!-- table: NAME --> ... <!-- end --> block.
function M.blocks(text)
  local out = {}
  for name, body in text:gmatch("<!%-%- table: (%w+) %-%->\n(.-)\n<!%-%- end %-%->") do out[name] = body end
  return out
end

-- The text with every <!-- table: NAME --> ... <!-- end --> block rendered.
function M.render(text)
  return (text:gsub("(<!%-%- table: (%w+) %-%->\n)(.-)(\n<!%-%- end %-%->)", function(open, name, _, close)
    assert(M.BLOCKS[name], "no table named " .. name)
    return open .. M.BLOCKS[name] .. close
  end))
end

if arg and arg[0] and arg[0]:match("tables%.lua$") then
  local write = arg[1] == "--write"
  local path = write and arg[2] or arg[1]
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  local out = M.render(text)
  if write then
    f = assert(io.open(path, "wb"))
    f:write(out)
    f:close()
  else
    io.write(out)
  end
end

return M
