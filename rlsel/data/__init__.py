"""Tasks as `datasets.DatasetDict`s with deterministic splits; see `tasks.py`."""

from rlsel.data.tasks import GLUE_TASKS, OFFLINE_TASKS, TaskData, load_task, task_names

__all__ = ["GLUE_TASKS", "OFFLINE_TASKS", "TaskData", "load_task", "task_names"]
