-- PUT /orders/{id} with If-Match: * of a random loaded order, moved within the first half hour
-- of its slot, so it stays 3 h from its neighbours.
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
-- Given headers replace wrk's own, so these are those and If-Match.
local headers = { ["If-Match"] = "*" }
for name, value in pairs(wrk.headers) do
  headers[name] = value
end
function request()
  local index = math.random(0, orders - 1)
  local at = base_epoch + slot_seconds * index + 60 * math.random(0, 30)
  return wrk.format("PUT", "/orders/" .. (first_id + index), headers, order_body(at))
end
