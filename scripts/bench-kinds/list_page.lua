-- GET /orders?from=...&page_size=100 from a random loaded order's time.
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
function request()
  local from = utc(base_epoch + slot_seconds * math.random(0, orders - 1))
  return wrk.format("GET", "/orders?page_size=100&from=" .. from)
end
