"""Class-incremental learning, independent of the task: scenarios (task splits), the runner, and the continual
methods as plugins (:mod:`.plugin`): rehearsal memory, EWC, MAS, A-GEM, DER++."""

from slukd.continual.memory import RehearsalMemory, herding_order
from slukd.continual.plugin import ContinualPlugin, TaskView, check_plugins
from slukd.continual.rehearsal import Rehearsal
from slukd.continual.runner import ContinualRunner, Strategy, TaskOrderError
from slukd.continual.scenario import Scenario, make_scenario

__all__ = ["RehearsalMemory", "herding_order", "ContinualPlugin", "TaskView", "check_plugins", "Rehearsal",
           "ContinualRunner", "Strategy", "TaskOrderError", "Scenario", "make_scenario"]  # fmt: skip
