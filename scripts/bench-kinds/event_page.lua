-- GET /events?limit=100: the feed's oldest page.
dofile(os.getenv("BENCH_KINDS") .. "/common.lua")
function request()
  return wrk.format("GET", "/events?limit=100")
end
