std = "max"
max_line_length = 130
files["spec"] = { std = "+busted" }
exclude_files = { "build", "tree" }
files["examples/nginx"] = { std = "max+ngx_lua" }
files["spec/support/test_handlers.lua"] = { std = "max+ngx_lua" }
