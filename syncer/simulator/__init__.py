"""A faithful fake of Mirakl's order export (OR13/OR14/OR15), for tests, benchmarks and the demo.

It imports nothing from the rest of `syncer`: it stands where Mirakl stands.
"""

from syncer.simulator.app import SimulatorConfig, SimulatorState, build_app, serve

__all__ = ["SimulatorConfig", "SimulatorState", "build_app", "serve"]
