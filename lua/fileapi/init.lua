-- fileapi: MijnKlantportaal's Files, File Share and File Request APIs
-- (fileapi.files), files.ro share links as their visitor (fileapi.shares)
-- and files.ro as the account's owner (fileapi.drive); fileapi.group runs
-- many of their calls at once.
local core = require "fileapi.core"

return {
  version = core.version,
  curl_version = core.curl_version,
  files = require "fileapi.files",
  shares = require "fileapi.shares",
  drive = require "fileapi.drive",
  group = require("fileapi.group").new,
  is_error = core.is_error,
}
