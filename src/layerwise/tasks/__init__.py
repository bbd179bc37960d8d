"""The registry of tasks: name -> Task class. Adding a task is one module and one line here."""

from .base import Split, Task, TaskData, make_task  # noqa: F401
from .iemocap import Iemocap
from .images import Cifar10, Cifar100, Svhn
from .suite import Digits, PrintedDigits, PrintedLetters
from .timit import Timit

TASKS = {
    cls.name: cls
    for cls in [Digits, PrintedDigits, PrintedLetters, Cifar10, Cifar100, Svhn, Timit, Iemocap]
}
