-- GET /orders?page_size=1000 over the large page's orders (see load-large-page.py): the
-- largest page, 1,000 orders of 50 services each.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ORDERS_API_KEY")
local path = "/orders?page_size=1000&from=" .. os.getenv("BENCH_LARGE_FROM") .. "&to=" .. os.getenv("BENCH_LARGE_TO")
function request()
  return wrk.format("GET", path)
end
