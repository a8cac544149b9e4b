"""A local Dataverse-compatible Web API server: a test double for demos, tests and
benchmarks, not a CRM.

    server = start_emulator(port=0)          # serving from a background thread
    requests.get(f"{server.base_url}/accounts")
    server.faults.throttle(retry_after=2, count=3)
    server.stop()
"""

from worker.emulator.faults import Fault, FaultInjector, FaultKind
from worker.emulator.server import EmulatorServer, start_emulator

__all__ = ["EmulatorServer", "Fault", "FaultInjector", "FaultKind", "start_emulator"]
