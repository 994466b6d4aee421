-- What every kind's wrk script shares: the API key, a random sequence of each thread's own,
-- the loaded orders (order FIRST + i is at BASE + 4h * i), and time formatting.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ORDERS_API_KEY")
wrk.headers["Content-Type"] = "application/json"

first_id = tonumber(os.getenv("BENCH_FIRST_ID"))
orders = tonumber(os.getenv("BENCH_ORDERS"))
service_id = os.getenv("BENCH_SERVICE_ID")
base_epoch = 1924992000 -- 2031-01-01T00:00:00Z
slot_seconds = 4 * 3600

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  math.randomseed(thread_number * 7919 + os.time())
  counter = 0
end

function utc(epoch)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", epoch)
end

function order_body(epoch)
  return string.format('{"datetime":"%s","totalfee":99.50,"services":[{"id":"%s"}]}', utc(epoch), service_id)
end
