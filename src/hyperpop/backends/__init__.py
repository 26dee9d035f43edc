"""Do: backends that run trainables (``local`` processes, ``ray`` actors)."""

from hyperpop.backends.base import Backend, Task, TaskResult

__all__ = ["Backend", "Task", "TaskResult"]
