-- fileapi: upload files and create folders on the MijnKlantportaal Files
-- API and in files.ro shared folders.
local core = require "fileapi.core"

return {
  version = core.version,
  curl_version = core.curl_version,
  files = require "fileapi.files",
  shares = require "fileapi.shares",
  is_error = core.is_error,
}
