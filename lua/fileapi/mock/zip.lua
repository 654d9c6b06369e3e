-- ZIP archives for the mock's owner zip call, as upstream's zipstream
-- makes them with size prediction: entries stored (no compression), sizes
-- and CRC-32s in the local headers, so the whole length is known before
-- the first byte (Content-Length).  No Zip64: the mock's files stay under
-- 4 GiB.  CRCs are cached per file; a sparse all-zeros file (zeros = true)
-- gets its CRC from the zero-run operator instead of a read.
local M = {}

local TABLE = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do c = (c & 1) ~= 0 and (0xEDB88320 ~ (c >> 1)) or (c >> 1) end
  TABLE[i] = c
end

local function update(crc, s)
  local byte = string.byte
  for i = 1, #s do crc = TABLE[(crc ~ byte(s, i)) & 0xFF] ~ (crc >> 8) end
  return crc
end

local function crc_of_file(path)
  local f = assert(io.open(path, "rb"))
  local crc = 0xFFFFFFFF
  while true do
    local block = f:read(65536)
    if not block then break end
    crc = update(crc, block)
  end
  f:close()
  return crc ~ 0xFFFFFFFF
end

-- GF(2) 32x32 matrices as 32 columns: the register after n zero bytes is
-- Z^n applied to the start value (zlib's crc32_combine, for zeros alone).
local function apply(m, v)
  local out, i = 0, 0
  while v ~= 0 do
    if v & 1 ~= 0 then out = out ~ m[i] end
    v, i = v >> 1, i + 1
  end
  return out
end

local function square(m)
  local out = {}
  for i = 0, 31 do out[i] = apply(m, m[i]) end
  return out
end

local function crc_of_zeros(n)
  local z = {}
  for i = 0, 31 do z[i] = update(1 << i, "\0") end -- one zero byte, from each bit
  local reg = 0xFFFFFFFF
  while n > 0 do
    if n & 1 ~= 0 then reg = apply(z, reg) end
    n = n >> 1
    if n > 0 then z = square(z) end
  end
  return reg ~ 0xFFFFFFFF
end
M.crc_of_zeros = crc_of_zeros

local function crc(file)
  if not file.crc then file.crc = file.zeros and crc_of_zeros(file.size) or crc_of_file(file.path) end
  return file.crc
end

local DOS_TIME, DOS_DATE = 0, (2024 - 1980) << 9 | 1 << 5 | 1

-- entries: { name, file = { path, size, zeros } } -> the archive's layout.
function M.plan(entries)
  local parts, offset, central = {}, 0, {}
  for _, e in ipairs(entries) do
    local c, size = crc(e.file), e.file.size
    local head = string.pack("<I4I2I2I2I2I2I4I4I4I2I2", 0x04034b50, 10, 0x0800, 0, DOS_TIME, DOS_DATE,
      c, size, size, #e.name, 0) .. e.name
    parts[#parts + 1] = { data = head }
    parts[#parts + 1] = { path = e.file.path, size = size }
    central[#central + 1] = string.pack("<I4I2I2I2I2I2I2I4I4I4I2I2I2I2I2I4I4", 0x02014b50, 20, 10, 0x0800, 0,
      DOS_TIME, DOS_DATE, c, size, size, #e.name, 0, 0, 0, 0, 0, offset) .. e.name
    offset = offset + #head + size
  end
  local cd = table.concat(central)
  local tail = cd .. string.pack("<I4I2I2I2I2I4I4I2", 0x06054b50, 0, 0, #entries, #entries, #cd, offset, 0)
  parts[#parts + 1] = { data = tail }
  return { parts = parts, size = offset + #tail }
end

-- Sends the archive; drop_at: close after that many bytes.  True when whole.
function M.send(conn, archive, drop_at)
  local left = drop_at or math.maxinteger
  for _, p in ipairs(archive.parts) do
    if p.data then
      local piece = p.data:sub(1, left)
      if not conn:send(piece) then return false end
      left = left - #piece
    else
      local f = assert(io.open(p.path, "rb"))
      local count = p.size
      while count > 0 and left > 0 do
        local block = f:read(math.min(262144, count, left))
        if not block then break end
        if not conn:send(block) then
          f:close()
          return false
        end
        count, left = count - #block, left - #block
      end
      f:close()
    end
    if left <= 0 then return false end
  end
  return true
end

return M
