-- busted output: the usual terminal report, then one plain closing line
-- "N passed, N failed" (errors count as failed) for CI to read.
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.utfTerminal")(options)
  local function summary()
    local failed = handler.failuresCount + handler.errorsCount
    local line = ("%d passed, %d failed"):format(handler.successesCount, failed)
    if handler.pendingsCount > 0 then line = line .. (", %d skipped"):format(handler.pendingsCount) end
    io.write("\n", line, "\n")
    io.flush()
    return nil, true
  end
  busted.subscribe({ "suite", "end" }, summary, { priority = 99 })
  return handler
end
