-- GET /orders/{id} of a random loaded order.
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
function request()
  return wrk.format("GET", "/orders/" .. (first_id + math.random(0, orders - 1)))
end
