-- Envoy's Lua filter: which bridge a REST request takes, and OpenAI-shaped
-- errors for REST clients from the gRPC status the workers return.
--
-- stream:false chat and text completions go to the unary REST bridges (see
-- chat.proto for why). Only a plain "stream": true keeps a request on the
-- streaming bridge, which serves both modes, so a misjudged body still gets a
-- right answer. Clients cannot call the unary paths themselves.
--
-- A worker that fails a call aborts it with a gRPC code plus trailing metadata:
-- ghostllm-http-status (the HTTP status a REST client must see) and
-- ghostllm-error (the OpenAI error body, ASCII JSON). Failed calls carry no
-- message, so the metadata arrives as response headers (trailers-only). Native
-- gRPC callers are left untouched.

local STATUS_FOR_GRPC = {
  ["1"] = 499, ["2"] = 500, ["3"] = 400, ["4"] = 504, ["5"] = 404, ["6"] = 409,
  ["7"] = 403, ["8"] = 429, ["9"] = 400, ["10"] = 409, ["11"] = 400, ["12"] = 404,
  ["13"] = 500, ["14"] = 503, ["15"] = 500, ["16"] = 401,
}

local TYPE_FOR_STATUS = {
  [400] = "invalid_request_error", [401] = "invalid_request_error", [403] = "permission_error",
  [404] = "invalid_request_error", [409] = "invalid_request_error", [413] = "invalid_request_error",
  [429] = "rate_limit_error", [499] = "invalid_request_error", [502] = "provider_error",
  [503] = "server_error", [504] = "timeout_error",
}

local function json_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

local function percent_decode(s)
  return (string.gsub(s, "%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local UNARY_PREFIX = "/_ghostllm/unary"
local UNARY_BRIDGE = {["/v1/chat/completions"] = true, ["/v1/completions"] = true}

function envoy_on_request(handle)
  local headers = handle:headers()
  local ct = headers:get("content-type") or ""
  if string.sub(ct, 1, 16) == "application/grpc" then
    handle:streamInfo():dynamicMetadata():set("ghostllm", "grpc", "1")
    return
  end
  local path = headers:get(":path")
  if string.sub(path, 1, #UNARY_PREFIX) == UNARY_PREFIX then
    handle:respond({[":status"] = "404"}, "")
    return
  end
  if UNARY_BRIDGE[path] and headers:get(":method") == "POST" then
    local body = handle:body()
    local text = body and body:getBytes(0, body:length()) or ""
    if not (string.find(text, '"stream"', 1, true) and string.find(text, '"stream"%s*:%s*true')) then
      -- The header map fetched before body() is out of scope once it yields.
      handle:headers():replace(":path", UNARY_PREFIX .. path)
    end
  end
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("ghostllm")
  if meta and meta["grpc"] then
    return
  end
  local headers = handle:headers()
  local grpc_status = headers:get("grpc-status")
  if grpc_status == nil or grpc_status == "0" then
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-accept-encoding")
    -- A successful call may still ask for another status (e.g. /health's 503).
    local forced = headers:get("ghostllm-http-status")
    if forced then
      headers:replace(":status", forced)
      headers:remove("ghostllm-http-status")
    end
    return
  end
  local status = tonumber(headers:get("ghostllm-http-status") or "") or STATUS_FOR_GRPC[grpc_status] or 500
  local body = headers:get("ghostllm-error")
  if body == nil then
    local message = percent_decode(headers:get("grpc-message") or "request failed")
    local etype = TYPE_FOR_STATUS[status] or "server_error"
    body = '{"error":{"message":' .. json_string(message) .. ',"type":"' .. etype .. '","param":null,"code":null}}'
  end
  for _, name in ipairs({"grpc-status", "grpc-message", "grpc-accept-encoding", "ghostllm-http-status", "ghostllm-error",
                        "content-length"}) do
    headers:remove(name)
  end
  headers:replace(":status", tostring(status))
  headers:replace("content-type", "application/json")
  handle:body(true):setBytes(body)
end
