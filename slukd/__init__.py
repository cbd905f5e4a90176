"""slukd: one knowledge-distillation core for class-incremental SLU and efficient audio captioning.

Library code only logs through ``logging.getLogger(__name__)``; recipes and the CLI call
:func:`slukd.utils.logging.setup_logging` once.
"""

from slukd.version import __version__

__all__ = ["__version__"]
