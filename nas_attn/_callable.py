"""`na.search(...)`, `na.train(...)`, `na.export(...)`: the three public functions share their
names with the subpackages `nas_attn.search`, `nas_attn.train` and the module `nas_attn.export`
(importing one binds the module to that name on the package). So those modules are callable:
calling one runs the `nas_attn.api` function of its name, and every import form
(`from nas_attn.train import TrainConfig`, `import nas_attn.train as T`) keeps working."""
from __future__ import annotations

import importlib
import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        api = importlib.import_module("nas_attn.api")
        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Make `nas_attn.<name>` callable as `nas_attn.api.<name>` (see the module docstring)."""
    sys.modules[module_name].__class__ = _CallableModule
