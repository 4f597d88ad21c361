-- Argo CD health check for aigw.dev resources (GatewayEndpoint; the same status contract as
-- every kind the operator reconciles). Lua 5.1 as in Argo CD's gopher-lua: no goto, no integer ops.
--
-- Healthy:     Ready=True and status.observedGeneration == metadata.generation.
-- Progressing: no status yet, a stale observedGeneration, a deletion in progress, or Ready=False
--              with a reason the operator retries by itself (Creating, UpstreamUnavailable, ...).
-- Degraded:    Ready or Synced False with a reason that needs a human: the spec, the key or the
--              upstream object must change before the operator can make progress.
-- Suspended:   a DedicatedEndpoint that is stopped (spec.state Stopped, or an idle stop left alone).
local hs = {}

local terminal = {
  InvalidSpec = true,
  AccessDenied = true,
  CredentialsMissing = true,
  UpstreamDeleted = true,
  DeletionBlocked = true,
  AlreadyManaged = true,
  RegionMismatch = true,
  RecreateRequired = true,
  Error = true,
}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or "Unknown"
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation

if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready = condition(status.conditions, "Ready")
local synced = condition(status.conditions, "Synced")

-- A terminal failure is reported whatever the generation: it names the spec it refused.
if ready ~= nil and ready.status == "False" and terminal[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
if synced ~= nil and synced.status == "False" and terminal[synced.reason] then
  hs.status = "Degraded"
  hs.message = describe(synced)
  return hs
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting the upstream object"
  return hs
end

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

-- A DedicatedEndpoint stopped on purpose, or left stopped after an idle stop, costs nothing.
if ready.status == "False" and (ready.reason == "Stopped" or ready.reason == "AutoStopped") then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready)
return hs
