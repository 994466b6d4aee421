-- POST /orders that creates: each thread takes slots 3 h apart of its own, in a region of this
-- run's own (BENCH_SLOT_REGION, counted in half millions of slots from the year 2100; wrk runs
-- two threads).
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
local region_start = 4102444800 -- 2100-01-01T00:00:00Z
function request()
  counter = counter + 1
  local slot = (tonumber(os.getenv("BENCH_SLOT_REGION")) * 2 + thread_number) * 250000 + counter
  return wrk.format("POST", "/orders", nil, order_body(region_start + 10800 * slot))
end
