"""The per-call auth check inside Envoy: the rules of `auth/providers.py`, in Lua.

Envoy's TLS handshake has already verified the client certificate against `ca_cert` (and
refused a client without one). This script, run by Envoy's Lua filter for every call, then
applies what the Python router's interceptor applies, with the same outcomes:

- a service in `exempt_services` passes (the handshake still applies);
- mTLS: the certificate passes when no allowlist is set, when its subject CN equals an
  `allowed_subjects` entry, or when one of its SANs (`DNS:`, `IP:`, `URI:`, `email:`,
  normalized as `certs.normalize_san` does) equals an `allowed_sans` entry; otherwise the
  caller is known but not allowed: PERMISSION_DENIED "client certificate 'NAME' is not allowed";
- tokens: `authorization: Bearer <token>` passes when the SHA-256 of the token is one of the
  digests; a malformed header or an unknown token is UNAUTHENTICATED;
- one provider allowing is enough; otherwise PERMISSION_DENIED beats UNAUTHENTICATED, and a
  call without any credentials is UNAUTHENTICATED "authentication required";
- `authorization` sent twice is UNAUTHENTICATED before anything else is looked at.

The allowlists and digests are data, delivered with the routes as the filter's context
(`translate.auth_context`), so a tokens file change never touches the listener. Only token
digests leave the reconciler, never a token. Envoy's Lua API has no accessor for IP and
email SANs, so the listener's header mutation filter copies them into two internal request
headers (after removing any a client sent), which this script reads and removes.
"""

from __future__ import annotations

IP_SANS_HEADER = "x-tei-internal-peer-ip-sans"
EMAIL_SANS_HEADER = "x-tei-internal-peer-email-sans"

#: Runs when a route carries no auth context (there is none before the first route update):
#: fail closed.
FAIL_CLOSED = """
function envoy_on_request(handle)
  handle:respond({[":status"] = "200", ["content-type"] = "application/grpc",
    ["grpc-status"] = "14", ["grpc-message"] = "authentication is not configured yet"}, nil)
end
"""

_SHA256 = """
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit, tohex = bit.rshift, bit.lshift, bit.ror, bit.tobit, bit.tohex
local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

local function sha256hex(msg)
  local bits = #msg * 8
  msg = msg .. "\\128" .. string.rep("\\0", (55 - #msg) % 64) .. "\\0\\0\\0\\0"
    .. string.char(band(rshift(bits, 24), 255), band(rshift(bits, 16), 255),
                   band(rshift(bits, 8), 255), band(bits, 255))
  local H = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
  local w = {}
  for chunk = 1, #msg, 64 do
    for i = 0, 15 do
      local a, b, c, d = msg:byte(chunk + i * 4, chunk + i * 4 + 3)
      w[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
    end
    for i = 16, 63 do
      local x, y = w[i - 15], w[i - 2]
      local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
      local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
      w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
    end
    local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
    for i = 0, 63 do
      local s1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = tobit(h + s1 + ch + K[i + 1] + w[i])
      local s0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
      local maj = bxor(band(a, b), band(a, c), band(b, c))
      h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + s0 + maj)
    end
    H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
    H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
  end
  local out = {}
  for i = 1, 8 do out[i] = tohex(H[i], 8) end
  return table.concat(out)
end
"""

_RULES = """
local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function percent_encode(s)  -- grpc-message is percent-encoded printable ASCII
  return (s:gsub("[^ -$&-~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function py_repr(s)  -- Python's repr() of a str, as the Python router's message has it
  s = s:gsub("\\\\", "\\\\\\\\")
  if s:find("'", 1, true) and not s:find('"', 1, true) then return '"' .. s .. '"' end
  return "'" .. s:gsub("'", "\\\\'") .. "'"
end

local function refuse(handle, code, message)
  handle:respond({[":status"] = "200", ["content-type"] = "application/grpc",
    ["grpc-status"] = code, ["grpc-message"] = percent_encode(message)}, nil)
end

local function split(list)
  local out = {}
  if list then for item in list:gmatch("[^,]+") do out[#out + 1] = item end end
  return out
end

local function certificate(handle, ip_sans, email_sans)
  -- CN and SANs in the `DNS:`/`IP:`/`URI:`/`email:` form of auth/certs.py, normalized.
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl == nil or not ssl:peerCertificatePresented() then return nil, nil end
  local cn = nil
  local parsed = ssl:parsedSubjectPeerCertificate()
  if parsed ~= nil and parsed:commonName() ~= "" then cn = parsed:commonName() end
  local sans = {}
  for _, v in ipairs(ssl:dnsSansPeerCertificate()) do
    sans[#sans + 1] = "DNS:" .. v:lower():gsub("%.+$", "")
  end
  for _, v in ipairs(split(ip_sans)) do sans[#sans + 1] = "IP:" .. v:lower() end
  for _, v in ipairs(ssl:uriSanPeerCertificate()) do sans[#sans + 1] = "URI:" .. v end
  for _, v in ipairs(split(email_sans)) do sans[#sans + 1] = "email:" .. v:lower() end
  return cn, sans
end

local function allowed(subjects, allowed_sans, cn, sans)
  if next(subjects) == nil and next(allowed_sans) == nil then return true end
  if cn ~= nil and subjects[cn] then return true end
  for _, san in ipairs(sans) do if allowed_sans[san] then return true end end
  return false
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local ip_sans = headers:get("{IP_SANS}")
  local email_sans = headers:get("{EMAIL_SANS}")
  headers:remove("{IP_SANS}")
  headers:remove("{EMAIL_SANS}")
  local ctx = {}  -- the context object is iterable, not indexable: copy its six keys
  for key, value in pairs(handle:filterContext()) do ctx[key] = value end
  -- Sets arrive as tables of true; an empty one may arrive as nothing at all.
  local exempt, subjects, allowed_sans, digests =
    ctx.exempt or {}, ctx.subjects or {}, ctx.sans or {}, ctx.digests or {}
  local service = (headers:get(":path") or ""):match("^/([^/]+)/")
  if service ~= nil and exempt[service] then return end
  if headers:getNumValues("authorization") > 1 then  -- which one counts would be an accident
    return refuse(handle, "16", "authorization may appear only once in a request")
  end
  local denied, invalid = nil, nil
  if ctx.mtls then
    local ok, cn, sans = pcall(certificate, handle, ip_sans, email_sans)
    if ok and sans ~= nil then
      if allowed(subjects, allowed_sans, cn, sans) then return end
      local name = cn or sans[1] or "<no subject>"
      denied = "client certificate " .. py_repr(name) .. " is not allowed"
    end
  end
  if ctx.token then
    local authorization = headers:get("authorization")
    if authorization ~= nil then
      local text = trim(authorization)
      local space = text:find(" ", 1, true)
      local scheme, token = text, ""
      if space then scheme, token = text:sub(1, space - 1), trim(text:sub(space + 1)) end
      if scheme:lower() ~= "bearer" or token == "" then
        invalid = "Authorization must be 'Bearer <token>'"
      elseif digests[sha256hex(token)] then
        return
      else
        invalid = "invalid bearer token"
      end
    end
  end
  if denied then return refuse(handle, "7", denied) end
  refuse(handle, "16", invalid or "authentication required")
end
"""

#: The script the listener's Lua filter runs for every route with an auth context.
AUTH_SCRIPT = _SHA256 + _RULES.replace("{IP_SANS}", IP_SANS_HEADER).replace(
    "{EMAIL_SANS}", EMAIL_SANS_HEADER
)
