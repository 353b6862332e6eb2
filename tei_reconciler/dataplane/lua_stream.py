"""Multiplexer streams that Envoy routes itself: `tei_multiplexer.v1` streams in Lua.

A multiplexer stream is a `tei.v1` stream whose every message is in a wrapper, `{1: Target,
2: <the tei.v1 request>}`, and the Python router routes it by the target of its **first**
message (`router/multiplexer.py`). When that target names something Envoy can route to (the
same targets as for unary calls: `translate.mux_context`), Envoy unwraps the stream itself,
message by message as they arrive, with flow control and without buffering the stream. Three
filters work together on the route every uncompressed multiplexer stream enters by:

1. `align_script`, run by a Lua filter of its own (`ALIGN_FILTER`), passes the stream's
   bytes on in whole gRPC frames until the first message has gone by, holding back a
   partial next message for one chunk. (The field extraction filter drops the bytes that
   follow the first message in the chunk that completes it when they are not a whole
   message.)
2. Envoy's gRPC field extraction filter (`envoy.filters.http.grpc_field_extraction`) holds
   the call's headers until the first message is complete and puts its target's fields into
   the stream's dynamic metadata; it leaves the message as it was.
3. `stream_script`, a script of the multiplexer's Lua filter (`lua_mux.FILTER`), reads the target at
   header time; when the route's context names a cluster for it, it names that cluster in
   the internal header (the call then takes the `mux:<Method>` route, as a unary call Envoy
   unwraps does) and replaces each message with its inner request as the bytes go by,
   walking the wrapper with the unary script's code (`lua_mux.WIRE`).

Every other stream (no or an unknown or a not-Ready target, a model whose Ready instances
hold different API keys, a compressed stream) reaches the Python router untouched, which
answers it exactly as it does without Envoy. An unwrapped stream goes to its instance like a
plain `tei.v1` stream (the route's deadline, routing keys stripped, drain, flow control; the
instance's API key as `authorization` where it has one, as the unary script sets it), and
Envoy's gRPC stats count it under the multiplexer's method. Where the router would refuse a
message (no inner request, a malformed wrapper or inner request, an inner request above an
instance's 4 MiB, a message above `max_message_mb`), the script sends the instance a message
it cannot decode and nothing more, so the instance ends the call, and the `UNWRAPPED` script
of the route the stream leaves by replaces the instance's status with the router's code and
words (the answers to the messages before it arrive first, as through the router). The
aligning script answers a stream without a message as the router does ("Empty stream"), and
gives a first message above `max_message_mb` grpcio's words in place of the extraction
filter's. What still differs: an inner request whose bytes are well-formed protobuf fields
that protobuf's parser refuses (a string that is no UTF-8) is refused by the instance in its
own words; `max_message_mb` does not bound the answers; a stream the client cancels is not
counted (Envoy counts calls that end with a status).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tei_reconciler.dataplane.lua_mux import CLUSTER_HEADER, WIRE

ALIGN_FILTER = "tei.filters.http.multiplexer_frames"  # the aligning Lua filter's name
ALIGN_SCRIPT = "align"  # its one script
STREAM_SCRIPT = "stream"  # the unwrapping script, in the multiplexer's Lua filter
UNWRAPPED_SCRIPT = "unwrapped"  # the script of the routes unwrapped streams leave by
EXTRACTION_FILTER = "envoy.filters.http.grpc_field_extraction"
FRAME_PREFIX = 5  # a gRPC frame's bytes before its message: flag and length
#: grpcio's refusal (RESOURCE_EXHAUSTED) of a message above the Python router's
#: `max_message_mb`: its size and the limit, in bytes.
LARGER_THAN_MAX = "SERVER: Received message larger than max (%d vs. %d)"
OWN_METADATA = "tei.multiplexer.stream"  # the stream scripts' dynamic metadata namespace
#: The Target's fields the extraction filter reports, by the route context's table for them.
TARGET_FIELDS = {
    "instances": "target.instance_name",
    "models": "target.model_id",
    "indexes": "target.instance_index",
}


class StreamMethod(msgspec.Struct, frozen=True, kw_only=True):
    """A streaming multiplexer method, the tei.v1 method it wraps, and the Python router's
    refusals of a message Envoy unwraps (`%d`: the message's place in the stream)."""

    path: str  # "/tei_multiplexer.v1.TeiMultiplexer/EmbedStream"
    target: str  # "/tei.v1.Embed/EmbedStream"
    missing: str  # "Missing embed request (stream message %d)"
    malformed: str  # an inner request that does not decode: "Malformed message: ..."


class Refusals(msgspec.Struct, frozen=True, kw_only=True):
    """The Python router's refusals that do not depend on the method."""

    malformed: str  # a wrapper that does not decode, `%s` its reason
    too_large: str  # an inner request above `max_inner_bytes`, `%d` its size
    max_inner_bytes: int


#: Collects a stream's bytes and hands them out frame by frame without copying them twice.
_FRAMER = """
local function framer()
  local buf, pos, parts, have, need = "", 1, {}, 0, nil
  local f = {}
  local function flatten()
    if #parts > 0 then
      buf = buf:sub(pos) .. table.concat(parts)
      pos, parts = 1, {}
    end
  end
  function f.push(s)
    parts[#parts + 1] = s
    have = have + #s
  end
  -- The next complete frame as (s, a, b): its bytes are s[a..b], prefix included; nil until
  -- one is complete.
  function f.take()
    if need == nil then
      if have < 5 then return nil end
      if #buf - pos + 1 < 5 then flatten() end
      local b1, b2, b3, b4 = buf:byte(pos + 1, pos + 4)
      need = ((b1 * 256 + b2) * 256 + b3) * 256 + b4 + 5
    end
    if have < need then return nil end
    if #buf - pos + 1 < need then flatten() end
    local s, a = buf, pos
    pos, have, need = pos + need, have - need, nil
    return s, a, pos - 1
  end
  -- The size of the frame being collected (prefix included), once its prefix is in.
  function f.declared() return need or 0 end
  -- Every byte not handed out yet.
  function f.rest()
    flatten()
    local s = buf:sub(pos)
    buf, pos, have, need = "", 1, 0, nil
    return s
  end
  return f
end
"""

_ALIGN = """
function envoy_on_request(handle)
  local limit = 0
  for key, value in pairs(handle:filterContext()) do
    if key == "limit" then limit = value end
  end
  local f, held, chunks = framer(), nil, 0
  for chunk in handle:bodyChunks() do
    chunks = chunks + 1
    local size = chunk:length()
    if held ~= nil then  -- the first message went by: the rest passes as it comes
      if size > 0 then held = held .. chunk:getBytes(0, size) end
      chunk:setBytes(held)
      return
    end
    if size > 0 then f.push(chunk:getBytes(0, size)) end
    local out = {}
    while true do
      local s, a, b = f.take()
      if s == nil then break end
      out[#out + 1] = s:sub(a, b)
    end
    if #out > 0 then
      held = f.rest()
      chunk:setBytes(table.concat(out))
      if held == "" then return end
    elseif f.declared() > limit then  -- the extraction filter refuses it: let it
      handle:streamInfo():dynamicMetadata():set(OWN, "larger", f.declared() - 5)
      chunk:setBytes(f.rest())
      return
    else
      chunk:setBytes("")
    end
  end
  if chunks == 0 then  -- headers that end the stream: the extraction filter would wait on
    handle:respond({[":status"] = "200", ["content-type"] = "application/grpc",
      ["grpc-status"] = "3", ["grpc-message"] = EMPTY_STREAM}, "")
  end
end
"""

_STREAM = """
local INTERNAL = "{HEADER}"
local MAX_INNER = {MAX_INNER}
local STREAMS = {{ {STREAMS} }}
local MALFORMED = {MALFORMED}
local TOO_LARGE = {TOO_LARGE}
local LARGER = {LARGER}
local EXTRACTED = "{EXTRACTED}"
local FIELDS = {{ {FIELDS} }}
local OWN = "{OWN}"  -- this script's dynamic metadata
local UNDECODABLE = frame(string.char(0))  -- field number 0: no protobuf parser takes it

-- The cluster of the first message's target, when the route's context has one for it, the
-- largest message the route takes, and the `authorization` the cluster's instances need.
local function route_of(handle)
  local fields = handle:streamInfo():dynamicMetadata():get(EXTRACTED)
  if fields == nil then return nil end
  local extracted, kind, value = {}, nil, nil
  for path, values in pairs(fields) do extracted[path] = values end
  for name, path in pairs(FIELDS) do
    local values = extracted[path]
    if values ~= nil and #values > 0 then
      if kind ~= nil or #values ~= 1 then return nil end
      kind, value = name, values[1]
    end
  end
  if kind == nil then return nil end
  local choices, keys, limit = nil, nil, nil
  for key, entries in pairs(handle:filterContext()) do  -- iterable, not indexable
    if key == kind then choices = entries
    elseif key == "authorization" then keys = entries
    elseif key == "limit" then limit = entries end
  end
  local cluster = choices and choices[value]
  if cluster == nil then return nil end
  return cluster, limit, keys and keys[cluster]
end

-- The frame s[a..b] as a frame of its inner request (repeated fields merge, as protobuf's);
-- or nil and the Python router's refusal (code, message) of the stream's message `n`.
local function unwrapped(method, s, a, b, n)
  if s:byte(a) ~= 0 then return s:sub(a, b) end  -- compressed: the instance refuses it
  local inner = {}
  local ok, why = walk(s, a + 5, b, function(field, wire, x, y)
    if field == 2 and wire == 2 then inner[#inner + 1] = s:sub(x, y) end
  end)
  if not ok then return nil, 3, string.format(MALFORMED, why) end
  if #inner == 0 then return nil, 3, string.format(method.missing, n) end
  local request = table.concat(inner)
  if #request > MAX_INNER then return nil, 8, string.format(TOO_LARGE, #request) end
  if not walk(request, 1, #request, ignore) then return nil, 3, method.malformed end
  return frame(request)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get(INTERNAL) ~= nil then headers:remove(INTERNAL) end
  local method = STREAMS[headers:get(":path") or ""]
  if method == nil then return end
  local ok, cluster, limit, authorization = pcall(route_of, handle)
  if not ok or cluster == nil then return end
  route_to(handle, headers, INTERNAL, cluster, authorization)
  handle:streamInfo():dynamicMetadata():set(OWN, "unwrapped", true)
  local f, n, refused = framer(), 0, false
  -- Ends the call with the Python router's answer (code, message): the instance gets bytes it
  -- cannot decode and nothing more, and the answer's status says why (`UNWRAPPED`).
  local function refuse(out, code, message)
    local metadata = handle:streamInfo():dynamicMetadata()  -- each wrapper lives until
    metadata:set(OWN, "code", code)  -- the script yields
    metadata:set(OWN, "message", message)
    out[#out + 1] = UNDECODABLE
    refused = true
    f.rest()
  end
  for chunk in handle:bodyChunks() do
    local size = chunk:length()
    if refused then
      if size > 0 then chunk:setBytes("") end
    elseif size > 0 then
      f.push(chunk:getBytes(0, size))
      local out = {}
      while true do
        local s, a, b = f.take()
        if s == nil then break end
        n = n + 1
        local framed, code, message = unwrapped(method, s, a, b, n)
        if framed == nil then
          refuse(out, code, message)
          break
        end
        out[#out + 1] = framed
      end
      if not refused and f.declared() > limit then  -- above the router's max_message_mb
        refuse(out, 8, string.format(LARGER, f.declared() - 5, limit - 5))
      end
      chunk:setBytes(table.concat(out))
    end
  end
end

"""

#: The script of the routes unwrapped streams leave by (`UNWRAPPED_SCRIPT`, in the
#: multiplexer's Lua filter): a call that arrives carrying the internal header loses it (and
#: so reaches the Python router), and an unwrapped stream's answer says why Envoy refused
#: one of its messages.
UNWRAPPED = (
    f"""
local OWN = "{OWN_METADATA}"

function envoy_on_request(handle)
  handle:headers():remove("{CLUSTER_HEADER}")
end

"""
    + """-- A refused message ends the call with the Python router's answer, in place of the
-- instance's (its error for the undecodable message, or whatever status it ended with).
local function answer(handle, map)
  if map == nil then return end
  local code, message = nil, nil
  for key, value in pairs(handle:streamInfo():dynamicMetadata():get(OWN) or {}) do
    if key == "code" then code = value end
    if key == "message" then message = value end
  end
  if code == nil then return end
  map:replace("grpc-status", string.format("%d", code))
  map:replace("grpc-message", (message:gsub("[^ -$&-~]", function(c)
    return string.format("%%%02X", c:byte())
  end)))
end

function envoy_on_response(handle)
  local own = handle:streamInfo():dynamicMetadata():get(OWN)
  if own == nil then return end  -- the Python router's stream
  local headers = handle:headers()
  if headers:get("grpc-status") ~= nil then return answer(handle, headers) end  -- trailers only
  for _ in handle:bodyChunks() do end
  answer(handle, handle:trailers())
end
"""
)

#: The extraction filter's answers to a stream that ends before its first message, and to
#: a first message above its buffer limit.
_NO_MESSAGE = "did not receive enough data to form a message."
_OVER_LIMIT = "Rejected because internal buffer limits are exceeded."


def align_script(empty_stream: str) -> str:
    """The aligning filter's script (`ALIGN_SCRIPT`); its route context holds `limit`, the
    largest first message the extraction filter takes. A stream that ends before its first
    message gets `empty_stream` (INVALID_ARGUMENT, the Python router's words): from the
    extraction filter, whose words it replaces, or, for headers that end the stream (which
    that filter would hold for ever), from the script itself."""
    return (
        f"local EMPTY_STREAM = {_lua(empty_stream)}\n"
        + f"local LARGER = {_lua(LARGER_THAN_MAX)}\n"
        + f'local OWN = "{OWN_METADATA}"\n'
        + _FRAMER
        + _ALIGN
        + f"""
function envoy_on_response(handle)
  local headers = handle:headers()
  local status, message = headers:get("grpc-status"), headers:get("grpc-message")
  if status == "3" and message == "{_NO_MESSAGE}" then
    headers:replace("grpc-message", EMPTY_STREAM)
  elseif status == "9" and message == "{_OVER_LIMIT}" then
    local larger, limit = nil, 0
    for key, value in pairs(handle:streamInfo():dynamicMetadata():get(OWN) or {{}}) do
      if key == "larger" then larger = value end
    end
    for key, value in pairs(handle:filterContext()) do
      if key == "limit" then limit = value end
    end
    if larger ~= nil then
      headers:replace("grpc-status", "8")
      headers:replace("grpc-message", string.format(LARGER, larger, limit - 5))
    end
  end
end
"""
    )


def _lua(text: str) -> str:
    """`text` as a Lua string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stream_script(methods: Sequence[StreamMethod], refusals: Refusals) -> str:
    """The unwrapping script (`STREAM_SCRIPT`) for `methods`; its route context holds the
    targets' clusters (`translate.mux_context`) and `limit`, the largest message it unwraps."""
    streams = ", ".join(
        f'["{m.path}"] = {{missing = {_lua(m.missing)}, malformed = {_lua(m.malformed)}}}'
        for m in methods
    )
    fields = ", ".join(f'{kind} = "{path}"' for kind, path in TARGET_FIELDS.items())
    return (
        WIRE
        + _FRAMER
        + _STREAM.replace("{HEADER}", CLUSTER_HEADER)
        .replace("{MAX_INNER}", str(refusals.max_inner_bytes))
        .replace("{MALFORMED}", _lua(refusals.malformed))
        .replace("{TOO_LARGE}", _lua(refusals.too_large))
        .replace("{LARGER}", _lua(LARGER_THAN_MAX))
        .replace("{EXTRACTED}", EXTRACTION_FILTER)
        .replace("{OWN}", OWN_METADATA)
        .replace("{{ {STREAMS} }}", "{" + streams + "}")
        .replace("{{ {FIELDS} }}", "{" + fields + "}")
    )
