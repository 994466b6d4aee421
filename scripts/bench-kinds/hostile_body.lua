-- POST of a 60 KiB body built to make a duplicate-key walk slow (a 30,000-character key
-- holding 15,000 zeros) to a path that no route has, with no API key.
local zeros = {}
for i = 1, 15000 do
  zeros[i] = "0"
end
wrk.method = "POST"
wrk.path = "/nowhere"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"' .. string.rep("k", 30000) .. '": [' .. table.concat(zeros, ",") .. ']}'
