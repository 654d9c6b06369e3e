-- fileapi: MijnKlantportaal's Files, File Share and File Request APIs
-- (fileapi.files), files.ro share links as their visitor (fileapi.shares)
-- and files.ro as the account's owner (fileapi.drive); fileapi.group runs
-- many of their calls at once.
local core = require "fileapi.core"

return {
  --- fileapi.version
  --- This module's version, a string such as "0.1.0".
  version = core.version,
  --- fileapi.curl_version
  --- The version of the libcurl it runs on, a string such as "7.88.1".
  curl_version = core.curl_version,
  --- fileapi.files, fileapi.shares, fileapi.drive
  --- The API modules, the same tables require "fileapi.files" (and the others) gives.
  files = require "fileapi.files",
  shares = require "fileapi.shares",
  drive = require "fileapi.drive",
  group = require("fileapi.group").new,
  --- fileapi.is_error(value) -> true when value is an error object (the err of nil, err)
  is_error = core.is_error,
}
