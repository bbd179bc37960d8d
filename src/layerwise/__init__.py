"""layerwise: how transferable is each layer of a network between datasets and tasks?

Gradual transfer learning (Fayek, Cavedon and Wu): train on a primary task, copy the body into a
model for a secondary task, hold the first `l_c` layers constant and fine-tune the rest, for every
`l_c`, and compare with a model trained on the secondary task alone.
"""

from .errors import UserError
from .experiment import run_experiment
from .net import LayeredNet, count_parameters
from .nets import ARCHS
from .tasks import TASKS, Split, Task, TaskData
from .tasks.tensors import TensorTask
from .train import TrainConfig, evaluate, fit
from .transfer import transfer

__all__ = ["LayeredNet", "transfer", "count_parameters", "UserError", "ARCHS", "TASKS", "Task", "TaskData",
           "Split", "TensorTask", "TrainConfig", "fit", "evaluate", "run_experiment", "observations"]
__version__ = "0.4.0"


def __getattr__(name: str):
    """`observations` on first use: it needs pandas and scipy, which a worker process or a
    command that only trains never does (they cost a second at every start)."""
    if name == "observations":
        from .analysis import observations

        return observations
    raise AttributeError(f"module 'layerwise' has no attribute {name!r}")
