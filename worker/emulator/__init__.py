"""A local Dataverse-compatible (or, with the ``odata`` profile, generic OData v4) Web API
server: a test double for demos, tests and benchmarks, not a CRM.

    server = start_emulator(port=0)          # serving from a background thread
    requests.get(f"{server.base_url}/accounts")
    server.faults.throttle(retry_after=2, count=3)
    server.stop()
    start_emulator(port=0, profile="odata", webhooks=[Webhook("http://127.0.0.1:9400/hook")])
"""

from worker.emulator.faults import Fault, FaultInjector, FaultKind
from worker.emulator.limits import ServiceLimits
from worker.emulator.profiles import DATAVERSE, ODATA, Profile
from worker.emulator.server import EmulatorServer, start_emulator
from worker.emulator.webhooks import Webhook

__all__ = ["DATAVERSE", "ODATA", "EmulatorServer", "Fault", "FaultInjector", "FaultKind",
           "Profile", "ServiceLimits", "Webhook", "start_emulator"]
