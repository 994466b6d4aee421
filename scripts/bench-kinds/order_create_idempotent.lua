-- POST /orders that creates, as order_create, but sent with an Idempotency-Key of its own (so
-- each is kept for replay): what safe retries cost a create.
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
local region_start = 4102444800 -- 2100-01-01T00:00:00Z
local headers = {}
for name, value in pairs(wrk.headers) do
  headers[name] = value
end
function request()
  counter = counter + 1
  local slot = (tonumber(os.getenv("BENCH_SLOT_REGION")) * 2 + thread_number) * 250000 + counter
  headers["Idempotency-Key"] = string.format("bench-%d-%d-%d", os.time(), thread_number, counter)
  return wrk.format("POST", "/orders", headers, order_body(region_start + 10800 * slot))
end
