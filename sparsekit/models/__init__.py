"""Model zoo: registered factories plus user models ("pkg.mod:factory", "path/file.py:factory").

Every factory has the signature ``factory(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module``.
Adding a model = one new file in this package with ``@MODELS.register("name")`` + one import line below.
"""

from sparsekit.models import conv as _conv  # noqa: F401,E402

# registration imports (one line per model file)
from sparsekit.models import lenet as _lenet  # noqa: F401,E402
from sparsekit.models import resnet as _resnet  # noqa: F401,E402
from sparsekit.models import vgg as _vgg  # noqa: F401,E402
from sparsekit.models.registry import MODELS, ModelSpec, build_model, default_policy

__all__ = ["MODELS", "ModelSpec", "build_model", "default_policy"]
