-- GET /free-slots for one day from a random loaded order's time.
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
function request()
  local from = base_epoch + slot_seconds * math.random(0, orders - 1)
  return wrk.format("GET", "/free-slots?from=" .. utc(from) .. "&to=" .. utc(from + 86400))
end
