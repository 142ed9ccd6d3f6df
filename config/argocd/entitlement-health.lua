-- entitlement-health.lua: Argo CD health check for nhi.dev/Entitlement, read from its conditions.
-- Healthy: Ready=True (every subject holds a certificate carrying the grants). Progressing: not
-- yet observed, or subjects being re-issued (Binding). Suspended: a time-bound grant outside its
-- window (NotYetActive, Expired). Degraded: anything else (NoSubjects, InvalidSpec, ...).
local hs = { status = "Progressing", message = "Waiting for the operator to bind the grants" }

if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
end
if ready == nil then
  return hs
end

local why = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Bound"
elseif ready.reason == "Binding" then
  hs.message = why
elseif ready.reason == "NotYetActive" or ready.reason == "Expired" then
  hs.status = "Suspended"
  hs.message = why
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = why
else
  hs.message = why
end
return hs
