"""Class-incremental learning, independent of the task: scenarios (task splits), rehearsal memory, the runner."""

from slukd.continual.memory import RehearsalMemory, herding_order
from slukd.continual.runner import ContinualRunner, Strategy, TaskOrderError
from slukd.continual.scenario import Scenario, make_scenario

__all__ = ["RehearsalMemory", "herding_order", "ContinualRunner", "Strategy", "TaskOrderError", "Scenario",
           "make_scenario"]  # fmt: skip
