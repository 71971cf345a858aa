"""Export for TensorFlow Serving and LiteRT.

The export functions need TensorFlow: their module, and TensorFlow, are
imported on first access to one of their names. `litert_generate` needs
only NumPy and the `ai-edge-litert` interpreter. `serve_with_c_api` and
`CApiServer` run the check in a subprocess and import no TensorFlow here.
"""

import importlib
from typing import TYPE_CHECKING

from keras_selfattn.export.serving_check import CApiServer as CApiServer
from keras_selfattn.export.serving_check import (
    serve_with_c_api as serve_with_c_api,
)

# TensorFlow-only names and the modules that define them.
_LAZY = {
    "export_causal_lm": "causal_lm",
    "export_causal_lm_litert": "litert",
    "export_classifier": "saved_model",
    "export_litert": "litert",
    "export_model": "saved_model",
    "export_text_generator": "saved_model",
    "litert_generate": "litert_generation",
    "published_versions": "saved_model",
}

if TYPE_CHECKING:
    # The lazy names, imported for static tools (the API docs, type
    # checkers); at run time `__getattr__` imports them on first use.
    from keras_selfattn.export.causal_lm import (
        export_causal_lm as export_causal_lm,
    )
    from keras_selfattn.export.litert import (
        export_causal_lm_litert as export_causal_lm_litert,
    )
    from keras_selfattn.export.litert import export_litert as export_litert
    from keras_selfattn.export.litert_generation import (
        litert_generate as litert_generate,
    )
    from keras_selfattn.export.saved_model import (
        export_classifier as export_classifier,
    )
    from keras_selfattn.export.saved_model import export_model as export_model
    from keras_selfattn.export.saved_model import (
        export_text_generator as export_text_generator,
    )
    from keras_selfattn.export.saved_model import (
        published_versions as published_versions,
    )


__all__ = [
    "CApiServer",
    "export_causal_lm",
    "export_causal_lm_litert",
    "export_classifier",
    "export_litert",
    "export_model",
    "export_text_generator",
    "litert_generate",
    "published_versions",
    "serve_with_c_api",
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
