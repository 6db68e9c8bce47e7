"""The provider simulator: a real HTTP server speaking the OpenAI wire format."""

from workers.devstack.simulator.server import SimulatorConfig, SimulatorServer, SimulatorStats

__all__ = ["SimulatorConfig", "SimulatorServer", "SimulatorStats"]
