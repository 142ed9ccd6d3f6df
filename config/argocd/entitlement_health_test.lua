-- entitlement_health_test.lua: runs entitlement-health.lua on sample Entitlements
-- (`lua5.1 config/argocd/entitlement_health_test.lua`).
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
local check = assert(loadfile(dir .. "/entitlement-health.lua"))

local function entitlement(gen, observed, status, reason)
  local conditions = {}
  if status then table.insert(conditions, { type = "Ready", status = status, reason = reason, message = "m" }) end
  return { metadata = { generation = gen }, status = { observedGeneration = observed, conditions = conditions } }
end

local cases = {
  { "no status", { metadata = { generation = 1 } }, "Progressing" },
  { "bound", entitlement(1, 1, "True", "Bound"), "Healthy" },
  { "binding", entitlement(1, 1, "False", "Binding"), "Progressing" },
  { "not yet active", entitlement(1, 1, "False", "NotYetActive"), "Suspended" },
  { "expired", entitlement(1, 1, "False", "Expired"), "Suspended" },
  { "no subjects", entitlement(1, 1, "False", "NoSubjects"), "Degraded" },
  { "invalid selector", entitlement(1, 1, "False", "InvalidSelector"), "Degraded" },
  { "stale generation", entitlement(2, 1, "True", "Bound"), "Progressing" },
}

local failed = 0
for _, c in ipairs(cases) do
  obj = c[2]
  local hs = check()
  if hs.status == c[3] then
    print("ok - entitlement-health.lua: " .. c[1] .. " -> " .. hs.status .. " (" .. hs.message .. ")")
  else
    failed = failed + 1
    print("not ok - entitlement-health.lua: " .. c[1] .. ": want " .. c[3] .. ", got " .. hs.status)
  end
end
os.exit(failed == 0 and 0 or 1)
