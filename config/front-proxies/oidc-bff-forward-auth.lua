-- Forward-auth for HAProxy in front of oidc-bff: HAProxy has no native
-- sub-request, so this action asks the gateway with HAProxy's own HTTP
-- client (core.httpclient, HAProxy 2.5+; Debian 12's haproxy 2.6 is built
-- with Lua 5.3) and leaves the answer in transaction variables for
-- `http-request` rules (see haproxy.cfg next to this file):
--
--   txn.oidc_bff_status         the gateway's status (503 if it did not answer)
--   txn.oidc_bff_authorization  on 200 with a session: "Bearer …"
--   txn.oidc_bff_user, txn.oidc_bff_email   on 200: identity headers
--   txn.oidc_bff_login          on 401 to a navigation: the login URL
--
-- Usage: global `lua-load /path/oidc-bff-forward-auth.lua`, then
--   http-request lua.oidc_bff_verify http://127.0.0.1:8080/auth/verify

-- Request headers not passed to the gateway: framing, and the original
-- request's names, which only this script sets.
local skip = {
  ["content-length"] = true, ["transfer-encoding"] = true,
  ["connection"] = true, ["host"] = true,
  ["x-forwarded-uri"] = true, ["x-forwarded-method"] = true,
  ["x-original-uri"] = true, ["x-original-method"] = true,
}

-- The first value of a header in HAProxy's header tables (0-indexed lists).
local function first(headers, name)
  local v = headers and headers[name]
  if type(v) == "table" then
    return v[0] or v[1]
  end
  return v
end

local function set_if(txn, var, value)
  if value ~= nil and value ~= "" then
    txn:set_var(var, value)
  end
end

core.register_action("oidc_bff_verify", { "http-req" }, function(txn, url)
  local headers = {}
  for name, values in pairs(txn.http:req_get_headers()) do
    if not skip[name] then
      local list = {}
      for _, v in pairs(values) do
        list[#list + 1] = v
      end
      headers[name] = list
    end
  end
  headers["x-forwarded-method"] = { txn.sf:method() }
  headers["x-forwarded-uri"] = { txn.sf:pathq() }
  local ok, res = pcall(function()
    return core.httpclient():get({ url = url, headers = headers })
  end)
  if not ok or res == nil or res.status == nil or res.status == 0 then
    txn:set_var("txn.oidc_bff_status", 503)
    return
  end
  txn:set_var("txn.oidc_bff_status", res.status)
  if res.status == 200 then
    set_if(txn, "txn.oidc_bff_authorization", first(res.headers, "authorization"))
    set_if(txn, "txn.oidc_bff_user", first(res.headers, "x-auth-request-user"))
    set_if(txn, "txn.oidc_bff_email", first(res.headers, "x-auth-request-email"))
  elseif res.status == 401 then
    set_if(txn, "txn.oidc_bff_login", first(res.headers, "x-auth-login-url"))
  end
end, 1)
