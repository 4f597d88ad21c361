-- Argo CD health check for the aigw.dev kinds (GatewayEndpoint, Provider, Model,
-- DedicatedEndpoint: one status contract for every kind the operator reconciles).
-- Lua 5.1 as in Argo CD's gopher-lua: no goto, no integer ops.
--
-- In this order:
-- Progressing: no status yet.
-- Suspended:   paused by the annotation aigw.dev/paused (Synced=False ReconcilePaused, or
--              DeletionPaused for a deletion that waits): the operator leaves it alone on
--              purpose, whatever its generation, until the annotation is removed.
-- Progressing: a deletion in progress.
-- Degraded:    a deletion the upstream blocks (DeletionBlocked: a reference someone must remove).
-- Progressing: status.observedGeneration is not metadata.generation. Checked before any failure
--              reason: a spec that was just fixed is not Degraded by the refusal of the old one.
-- Degraded:    Ready or Synced False with a reason that needs a human (the spec, the key, the
--              upstream object or the hardware must change before the operator can progress).
--              With managementPolicy: ObserveOnly, UpstreamDrift (the object differs from the
--              spec and the operator will not correct it) and UpstreamNotFound (nothing to
--              observe) are such reasons: Git and the world disagree and only a human can
--              settle which is right. HardwareUnavailable is one too: nothing is created or
--              billed, the operator retries with backoff and turns Healthy if the hardware
--              comes back, but only a human can choose other hardware, and Argo CD
--              re-evaluates health on changes, not on a clock, so a time bound here would never
--              fire reliably.
-- Suspended:   a DedicatedEndpoint stopped on purpose (Stopped) or left stopped (AutoStopped).
-- Healthy:     Ready=True.
-- Progressing: anything else, such as Ready=False with a reason the operator retries by itself
--              (Starting, Scaling, CreatePending, UpstreamUnavailable, RateLimited, and
--              CredentialsMissing: it recovers within seconds once the Secret appears).
local hs = {}

local degraded = {
  InvalidSpec = true,
  AccessDenied = true,
  UpstreamDeleted = true,
  AlreadyManaged = true,
  AlreadyExists = true,
  CredentialsNotPermitted = true,
  RegionMismatch = true,
  RecreateRequired = true,
  HardwareUnavailable = true,
  Error = true,
  ConnectionDetailsConflict = true,
  UpstreamDrift = true,
  UpstreamNotFound = true,
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
local metadata = obj.metadata or {}
local generation = metadata.generation

if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready = condition(status.conditions, "Ready")
local synced = condition(status.conditions, "Synced")

if synced ~= nil and synced.status == "False" and (synced.reason == "ReconcilePaused" or synced.reason == "DeletionPaused") then
  hs.status = "Suspended"
  hs.message = describe(synced)
  return hs
end

if metadata.deletionTimestamp ~= nil then
  if ready ~= nil and ready.status == "False" and ready.reason == "DeletionBlocked" then
    hs.status = "Degraded"
    hs.message = describe(ready)
    return hs
  end
  hs.status = "Progressing"
  hs.message = "Deleting the upstream object"
  return hs
end

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if ready ~= nil and ready.status == "False" and degraded[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
if synced ~= nil and synced.status == "False" and degraded[synced.reason] then
  hs.status = "Degraded"
  hs.message = describe(synced)
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

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
