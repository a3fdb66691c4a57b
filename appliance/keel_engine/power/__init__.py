"""Power management: IPMI fencing (pyghmi) and restart of HA VMs on host failure.

Modules:
  agents    fence agent specs (connection details, options) and their validation
  ipmi      one BMC operation in a short-lived worker under a hard deadline
  fencing   fence a host through its agents in order, with retries and events
  policy    pure decisions on a host failure (wait / skip / fence / restart)
  failover  carries out the policy against the database and libvirt
  manager   PowerManagement: what the engine worker calls (failures, fence jobs)
"""
