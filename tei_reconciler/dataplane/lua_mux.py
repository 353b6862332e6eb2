"""Multiplexer unary calls that Envoy routes itself: `tei_multiplexer.v1` in Lua.

A unary multiplexer call is a `tei.v1` call in a wrapper, `{1: Target, 2: <the tei.v1
request>}` (`router/wire.py`), and the instance answers it with the plain `tei.v1` response.
So when the target names something Envoy can route to (a Ready instance by name or by index,
or a model, the same targets the `x-tei-instance` / `x-tei-model` routes serve), Envoy can
unwrap the call itself and spare it the hop through the Python router. This script, run by a
second Lua filter on the unary multiplexer routes, does that:

- it buffers the call's one gRPC message (uncompressed), walks the wrapper's fields as
  `wire.split_wrapper` does and decodes the target;
- when the target is in the route's context (`translate.mux_context`: Ready instances, and
  models whose Ready instances share one API key or have none) and the inner request is a
  well-formed message no larger than an instance accepts (4 MiB), it replaces the body with
  the inner request and names the target's cluster in an internal header; the route table
  then sends the call to that cluster, with the path rewritten to the `tei.v1` method (the
  `mux:<Method>` routes);
- when that cluster's instances need an API key, it sets `authorization` to the key the
  context holds for the cluster, in place of the client's (which was for the reconciler), as
  the plain routes to the instance do; to a cluster without a key the client's
  `authorization` goes on as it came, as on those routes and through the Python router;
- everything else (no or an unknown target, a not-Ready instance, a malformed wrapper, a
  missing or oversized inner request, a compressed message) reaches the Python router
  untouched, which answers it exactly as it does without Envoy.

The path stays the multiplexer's until the router filter rewrites it, so Envoy's gRPC stats
count the call under `tei_multiplexer.v1.TeiMultiplexer/<Method>`, as the Python router does.
A client cannot pick a cluster with the internal header: the script removes any the call
carries before it looks at anything, and the routes that read it run the `strip` script
(removal only), so such a call ends up at the Python router. Multiplexer streams are
unwrapped by the scripts of `lua_stream.py`, which walk each message with the same helpers
(`WIRE`).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

CLUSTER_HEADER = "x-tei-internal-cluster"
FILTER = "tei.filters.http.multiplexer"  # the Lua filter's name in the listener's chain
MUX_SCRIPT = "mux"  # the names of its two scripts
STRIP_SCRIPT = "strip"


class UnaryMethod(msgspec.Struct, frozen=True):
    """A unary multiplexer method and the tei.v1 method it wraps."""

    path: str  # "/tei_multiplexer.v1.TeiMultiplexer/Embed"
    target: str  # "/tei.v1.Embed/Embed"
    inner: bool  # the wrapper must carry an inner request (every method but Info)


#: The Lua helpers both multiplexer scripts share: protobuf wire-format walking (the stream
#: script, `lua_stream.py`, unwraps each message with the same code as the unary one).
WIRE = """
local function varint(s, pos, last)
  local value, scale = 0, 1
  while pos <= last do
    local b = s:byte(pos)
    pos = pos + 1
    if b < 128 then return value + b * scale, pos end
    value = value + (b - 128) * scale
    scale = scale * 128
    if scale > 2 ^ 63 then return nil end
  end
  return nil
end

-- Calls visit(field, wire_type, a, b) for each field of the message s[first..last]: for a
-- length-delimited field its payload is s[a..b], for a varint `a` is the value. False, and
-- why (in `wire.split_wrapper`'s words), for bytes that are no well-formed message (what
-- protobuf's parser would refuse).
local function walk(s, first, last, visit)
  local pos = first
  while pos <= last do
    local key, value, n
    key, pos = varint(s, pos, last)
    if key == nil then return false, "truncated or overlong varint" end
    local field, wire = math.floor(key / 8), key % 8
    if wire == 2 then
      n, pos = varint(s, pos, last)
      if n == nil then return false, "truncated or overlong varint" end
      if pos + n - 1 > last then return false, "length-delimited field runs past the end" end
      visit(field, wire, pos, pos + n - 1)
      pos = pos + n
    elseif wire == 0 then
      value, pos = varint(s, pos, last)
      if value == nil then return false, "truncated or overlong varint" end
      visit(field, wire, value)
    elseif wire == 1 then pos = pos + 8
    elseif wire == 5 then pos = pos + 4
    else return false, "unsupported wire type " .. wire end
    if field == 0 then return false, "field number 0" end
  end
  if pos ~= last + 1 then return false, "fixed-width field runs past the end" end
  return true
end

local function ignore() end

-- Sends the call to `cluster` by the internal header `name` (the `mux:<Method>` routes read
-- it), with the instance's key where it has one, never the client's (every copy of it).
local function route_to(handle, headers, name, cluster, authorization)
  headers:replace(name, cluster)
  if authorization ~= nil then
    headers:remove("authorization")
    headers:add("authorization", authorization)
  end
  handle:clearRouteCache()
end

-- A gRPC frame (uncompressed) around a message.
local function frame(message)
  local n = #message
  return string.char(0, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. message
end
"""

_SCRIPT = """
local INTERNAL = "{HEADER}"
local LIMIT = {LIMIT}
local NEEDS_INNER = {{ {PATHS} }}


-- The Target oneof (the last field set wins): ("instances", name), ("models", model id) or
-- ("indexes", index as a string).
local function target_of(s, first, last)
  local kind, value, odd = nil, nil, false
  local ok = walk(s, first, last, function(field, wire, a, b)
    if field == 1 and wire == 2 then kind, value = "instances", s:sub(a, b)
    elseif field == 2 and wire == 2 then kind, value = "models", s:sub(a, b)
    elseif field == 3 and wire == 0 then
      if a >= 4294967296 then odd = true end
      kind, value = "indexes", string.format("%d", a)
    end
  end)
  if ok and not odd then return kind, value end
  return nil
end

local function unwrap(handle, path, body)
  local needs_inner = NEEDS_INNER[path]
  if needs_inner == nil or body == nil then return nil end
  local size = body:length()
  if size < 5 then return nil end
  local raw = body:getBytes(0, size)
  local flag, b1, b2, b3, b4 = raw:byte(1, 5)
  if flag ~= 0 or ((b1 * 256 + b2) * 256 + b3) * 256 + b4 ~= size - 5 then return nil end
  local targets, inners, ta, tb, ia, ib = 0, 0, 0, 0, 0, 0
  local ok = walk(raw, 6, size, function(field, wire, a, b)
    if wire ~= 2 then return end
    if field == 1 then targets, ta, tb = targets + 1, a, b
    elseif field == 2 then inners, ia, ib = inners + 1, a, b end
  end)
  if not ok or targets ~= 1 or inners > 1 or (needs_inner and inners == 0) then return nil end
  local kind, value = target_of(raw, ta, tb)
  if kind == nil then return nil end
  local choices, keys = nil, nil
  for key, entries in pairs(handle:filterContext()) do  -- iterable, not indexable
    if key == kind then choices = entries
    elseif key == "authorization" then keys = entries end
  end
  local cluster = choices and choices[value]
  if cluster == nil then return nil end
  local inner = ""
  if inners == 1 then inner = raw:sub(ia, ib) end
  local n = #inner
  if n > LIMIT or not walk(inner, 1, n, ignore) then return nil end
  return cluster, frame(inner), keys and keys[cluster]
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get(INTERNAL) ~= nil then headers:remove(INTERNAL) end
  local path = headers:get(":path") or ""
  if NEEDS_INNER[path] == nil then return end
  local body = handle:body()  -- waits for the whole message
  local ok, cluster, frame, authorization = pcall(unwrap, handle, path, body)
  if ok and cluster ~= nil then
    body:setBytes(frame)
    route_to(handle, handle:headers(), INTERNAL, cluster, authorization)
  end
end
"""


def script(methods: Sequence[UnaryMethod], max_inner_bytes: int) -> str:
    """The script of the multiplexer's unary routes (`mux` in the filter's source codes)."""
    paths = ", ".join(f'["{m.path}"] = {"true" if m.inner else "false"}' for m in methods)
    return WIRE + _SCRIPT.replace("{HEADER}", CLUSTER_HEADER).replace(
        "{LIMIT}", str(max_inner_bytes)
    ).replace("{{ {PATHS} }}", "{" + paths + "}")


#: The script of the routes that read the internal header: a call that arrives carrying it
#: loses it, and so reaches the Python router.
STRIP = f"""
function envoy_on_request(handle)
  handle:headers():remove("{CLUSTER_HEADER}")
end
"""
