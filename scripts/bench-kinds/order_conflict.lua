-- POST /orders 1 h after a random loaded order: refused by the 3-hour rule (409).
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
function request()
  local at = base_epoch + slot_seconds * math.random(0, orders - 1) + 3600
  return wrk.format("POST", "/orders", nil, order_body(at))
end
