-- Envoy's Lua filter: which bridge a REST request takes, and OpenAI-shaped
-- errors for REST clients from the gRPC status the workers return.
--
-- stream:false chat and text completions go to the unary REST bridges (see
-- rest.proto for why). Only a plain "stream": true keeps a request on the
-- streaming bridge, which serves both modes, so a misjudged body still gets a
-- right answer. Clients cannot call the unary paths themselves.
--
-- A worker that fails a call aborts it with a gRPC code plus trailing metadata:
-- ghostllm-http-status (the HTTP status a REST client must see) and
-- ghostllm-error (the OpenAI error body, ASCII JSON). Failed calls carry no
-- message, so the metadata arrives as response headers (trailers-only). Native
-- gRPC callers are left untouched.
--
-- Before a REST request reaches the transcoder it is checked here: a path or
-- query that is not UTF-8 once percent-decoded gets 400 (the transcoder would
-- put the bytes into a proto string, which no worker can decode), and a known
-- path with the wrong method gets 405 with Allow (the methods it answers).
-- These replies are complete OpenAI error bodies, which the local reply
-- mappers pass through unchanged.

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

local function error_body(message, code)
  return '{"error":{"message":' .. json_string(message) .. ',"type":"invalid_request_error","param":null,"code":"'
    .. code .. '"}}'
end

local function reject(handle, status, message, code, extra_headers)
  local headers = {[":status"] = tostring(status), ["content-type"] = "application/json"}
  for k, v in pairs(extra_headers or {}) do
    headers[k] = v
  end
  handle:respond(headers, error_body(message, code))
end

-- Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local len
      if c >= 0xC2 and c <= 0xDF then
        len = 2
      elseif c >= 0xE0 and c <= 0xEF then
        len = 3
      elseif c >= 0xF0 and c <= 0xF4 then
        len = 4
      else
        return false
      end
      if i + len - 1 > n then
        return false
      end
      local c2 = string.byte(s, i + 1)
      if (c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F) or (c == 0xF0 and c2 < 0x90)
        or (c == 0xF4 and c2 > 0x8F) then
        return false
      end
      for j = i + 1, i + len - 1 do
        local b = string.byte(s, j)
        if b < 0x80 or b > 0xBF then
          return false
        end
      end
      i = i + len
    end
  end
  return true
end

local UNARY_PREFIX = "/_ghostllm/unary"
local UNARY_BRIDGE = {["/v1/chat/completions"] = true, ["/v1/completions"] = true}

-- The methods each REST path answers (the google.api.http rules in protos/).
local POST_ONLY = {["/v1/chat/completions"] = true, ["/v1/completions"] = true, ["/v1/embeddings"] = true}
local GET_ONLY = {["/v1/models"] = true, ["/health"] = true}
-- The admin and account paths (admin.proto, auth.proto, usage.proto; gateway.proto's /status), several methods each
-- (a Lua pattern per path; the first that matches applies).
local ROUTES = {
  {"^/admin/users$", "GET, POST"},
  {"^/admin/users/[^/]+$", "GET, PATCH, DELETE"},
  {"^/admin/teams$", "GET, POST"},
  {"^/admin/teams/[^/]+$", "PATCH, DELETE"},
  {"^/admin/keys$", "GET, POST"},
  {"^/admin/keys/[^/]+$", "PATCH, DELETE"},
  {"^/admin/providers$", "GET"},
  {"^/admin/providers/[^/]+$", "PUT"},
  {"^/admin/models$", "GET, POST"},
  {"^/admin/models/[^/]+$", "PATCH, DELETE"},
  {"^/admin/audit$", "GET"},
  {"^/admin/usage$", "GET"},
  {"^/v1/auth/login$", "POST"},
  {"^/v1/keys$", "GET"},
  {"^/v1/usage$", "GET"},
  {"^/status$", "GET"},
}

-- The Allow value for the path ("GET", "GET, POST", ...), or nil for a path we do not serve.
local function allowed_methods(bare)
  if POST_ONLY[bare] then
    return "POST"
  end
  if GET_ONLY[bare] or string.sub(bare, 1, 11) == "/v1/models/" then
    return "GET"
  end
  for _, route in ipairs(ROUTES) do
    if string.find(bare, route[1]) then
      return route[2]
    end
  end
  return nil
end

local function allows(list, method)
  for m in string.gmatch(list, "[A-Z]+") do
    if m == method then
      return true
    end
  end
  return false
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local ct = headers:get("content-type") or ""
  if string.sub(ct, 1, 16) == "application/grpc" then
    handle:streamInfo():dynamicMetadata():set("ghostllm", "grpc", "1")
    return
  end
  local path = headers:get(":path")
  if (string.find(path, "%", 1, true) or string.find(path, "[\128-\255]")) and not valid_utf8(percent_decode(path)) then
    reject(handle, 400, "The request path or query string is not valid UTF-8 (after percent-decoding).",
      "invalid_encoding")
    return
  end
  local bare = string.match(path, "^[^?#]*")
  if string.sub(bare, 1, #UNARY_PREFIX) == UNARY_PREFIX then
    reject(handle, 404, "Unknown path " .. bare .. ".", "not_found")
    return
  end
  local method = headers:get(":method")
  local allowed = allowed_methods(bare)
  if allowed and not allows(allowed, method) then
    if method == "HEAD" and allows(allowed, "GET") then
      -- HEAD is GET without the body, which Envoy leaves out of the answer.
      headers:replace(":method", "GET")
    else
      reject(handle, 405, "Method " .. method .. " is not allowed for " .. bare .. "; use " .. allowed .. ".",
        "method_not_allowed", {["allow"] = allowed})
      return
    end
  end
  if UNARY_BRIDGE[bare] and method == "POST" then
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
