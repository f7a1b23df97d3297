-- Argo CD health check for dbquota.io/DatabaseQuota.
--
-- Install it under argocd-cm's resource.customizations.health.dbquota.io_DatabaseQuota
-- (see the chart README). Argo CD runs it with the object as `obj` and reads back
-- {status, message}:
--
--   Progressing  no status yet, status.observedGeneration behind metadata.generation,
--                or no Ready condition (or Ready Unknown): the operator has not caught up
--   Degraded     Ready False, whatever the reason: billing data missing or older than the
--                quota's maxStaleness (BillingUnavailable), a price catalog in another
--                currency than spec.currency (CurrencyMismatch) or a spec the operator
--                cannot read (InvalidSpec); the message is the condition's
--   Healthy      otherwise, with spend against budget; a used-up budget (BudgetExceeded
--                True) is the quota working, so it stays Healthy and says "over budget"
--
-- Plain Lua 5.1 (Argo CD runs gopher-lua): only string.format, tostring and ipairs.
local hs = {}

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

local function money(value)
  return string.format("%.2f", tonumber(value) or 0)
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the dbquota operator to write the quota's status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the dbquota operator to observe generation " .. tostring(generation)
    .. " (status is for generation " .. tostring(observed) .. ")"
  return hs
end

local ready = condition(status.conditions, "Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if ready.status == "False" then
  hs.status = "Degraded"
  if ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "Ready is False: " .. tostring(ready.reason)
  end
  return hs
end

local spec = obj.spec or {}
local spend = status.spend or {}
local currency = spec.currency or "USD"
local used = (tonumber(spend.observed) or 0) + (tonumber(spend.reserved) or 0)
local summary = money(used) .. " of " .. money(spec.monthlyBudget) .. " " .. currency
  .. "/month used (observed " .. money(spend.observed) .. " + reserved "
  .. money(spend.reserved) .. ")"
local exceeded = condition(status.conditions, "BudgetExceeded")
hs.status = "Healthy"
if exceeded ~= nil and exceeded.status == "True" then
  hs.message = "over budget: " .. summary
else
  hs.message = summary
end
return hs
