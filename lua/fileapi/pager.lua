-- A lazy iterator over every item of a paged listing, for the services'
-- listings alike (MijnKlantportaal's file shares and file requests, files.ro's
-- team folders): a page is fetched only when the previous one is used up.
--   fetch(page) -> items, more | nil, err
-- page counts from 1; items: the page's list; more: whether another page may
-- follow.  A failed page gives false, err once, then the loop ends.
local M = {}

function M.new(fetch)
  local page, items, i, more, done = 0, {}, 0, true, false
  return function()
    while not done do
      if i < #items then
        i = i + 1
        return items[i]
      end
      if not more then break end
      page = page + 1
      local list, next_or_err = fetch(page)
      if not list then
        done = true
        return false, next_or_err
      end
      items, i, more = list, 0, next_or_err
    end
    done = true
    return nil
  end
end

return M
