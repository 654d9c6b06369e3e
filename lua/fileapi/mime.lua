-- Content types by file extension, for uploads that do not name one.
local M = {}

local BY_EXTENSION = {
  pdf = "application/pdf", txt = "text/plain", csv = "text/csv", html = "text/html",
  htm = "text/html", xml = "application/xml", json = "application/json",
  md = "text/markdown", rtf = "application/rtf",
  jpg = "image/jpeg", jpeg = "image/jpeg", png = "image/png", gif = "image/gif",
  webp = "image/webp", svg = "image/svg+xml", bmp = "image/bmp", tif = "image/tiff",
  tiff = "image/tiff", heic = "image/heic", ico = "image/vnd.microsoft.icon",
  mp3 = "audio/mpeg", wav = "audio/wav", ogg = "audio/ogg", m4a = "audio/mp4",
  mp4 = "video/mp4", mov = "video/quicktime", webm = "video/webm", avi = "video/x-msvideo",
  zip = "application/zip", gz = "application/gzip", tar = "application/x-tar",
  ["7z"] = "application/x-7z-compressed", rar = "application/vnd.rar",
  doc = "application/msword", xls = "application/vnd.ms-excel",
  ppt = "application/vnd.ms-powerpoint",
  docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  pptx = "application/vnd.openxmlformats-officedocument.presentationml.presentation",
  odt = "application/vnd.oasis.opendocument.text",
  ods = "application/vnd.oasis.opendocument.spreadsheet",
  eml = "message/rfc822", ics = "text/calendar", vcf = "text/vcard",
}

M.DEFAULT = "application/octet-stream"

function M.for_name(name)
  local ext = name:match("%.([^./]+)$")
  return ext and BY_EXTENSION[ext:lower()] or M.DEFAULT
end

-- type/subtype with optional parameters, nothing that could end a header.
function M.valid(value)
  return #value <= 255 and value:match("^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+") ~= nil
    and not value:find("[%c\128-\255]")
end

return M
