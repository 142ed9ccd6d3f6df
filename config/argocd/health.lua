-- health.lua: Argo CD health check for nhi.dev/MachineIdentity, read from its conditions.
-- Healthy: Ready=True. Progressing: not yet observed, or Ready=False while Issuing=True (the
-- operator is issuing or retrying). Degraded: Ready=False with Issuing=False (blocked until
-- something changes: the reason says what, e.g. SecretConflict, CAExpiresTooSoon).
local hs = { status = "Progressing", message = "Waiting for the operator to issue a certificate" }

if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready, issuing
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Issuing" then issuing = c end
end
if ready == nil then
  return hs
end

local why = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
elseif ready.status == "False" and not (issuing ~= nil and issuing.status == "True") then
  hs.status = "Degraded"
  hs.message = why
else
  hs.message = why
end
return hs
