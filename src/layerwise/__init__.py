"""layerwise: how transferable is each layer of a network between datasets and tasks?

Gradual transfer learning (Fayek, Cavedon and Wu): train on a primary task, copy the body into a
model for a secondary task, hold the first `l_c` layers constant and fine-tune the rest, for every
`l_c`, and compare with a model trained on the secondary task alone.

Imports: a module imports the modules of layerwise it uses at its top, never inside a function;
a function may import a heavy third-party module (pandas, scipy, matplotlib) where it uses it,
so that worker processes and commands that only train do not pay for it at start-up.
"""

from .analysis import observations
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

