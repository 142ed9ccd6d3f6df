-- health_test.lua: runs health.lua on sample MachineIdentities (`lua5.1 config/argocd/health_test.lua`).
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
local check = assert(loadfile(dir .. "/health.lua"))

local function identity(gen, observed, ready, issuing)
  local conditions = {}
  if ready then table.insert(conditions, { type = "Ready", status = ready[1], reason = ready[2], message = ready[3] }) end
  if issuing then table.insert(conditions, { type = "Issuing", status = issuing[1], reason = issuing[2], message = issuing[3] }) end
  return { metadata = { generation = gen }, status = { observedGeneration = observed, conditions = conditions } }
end

local valid = { "True", "CertificateValid", "certificate 01 valid" }
local current = { "False", "UpToDate", "the certificate is current" }
local conflict = { "False", "SecretConflict", "Secret x is not managed by nhi-operator" }
local retrying = { "False", "IssuanceFailed", "the apiserver refused the write" }
local retryingIssuing = { "True", "IssuanceFailed", "the apiserver refused the write" }

local cases = {
  { "no status", { metadata = { generation = 1 } }, "Progressing" },
  { "ready", identity(1, 1, valid, current), "Healthy" },
  { "blocked", identity(1, 1, conflict, conflict), "Degraded" },
  { "first issuance retrying", identity(1, 1, retrying, retryingIssuing), "Progressing" },
  { "ready without an Issuing condition", identity(1, 1, valid, nil), "Healthy" },
  { "unknown", identity(1, 1, { "Unknown", "Pending", "waiting" }, nil), "Progressing" },
  { "stale generation", identity(2, 1, valid, current), "Progressing" },
  { "no observed generation", identity(1, nil, valid, current), "Progressing" },
}

local failed = 0
for _, c in ipairs(cases) do
  obj = c[2]
  local hs = check()
  if hs.status == c[3] then
    print("ok - health.lua: " .. c[1] .. " -> " .. hs.status .. " (" .. hs.message .. ")")
  else
    failed = failed + 1
    print("not ok - health.lua: " .. c[1] .. ": want " .. c[3] .. ", got " .. hs.status)
  end
end
os.exit(failed == 0 and 0 or 1)
