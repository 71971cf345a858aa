"""Export for TensorFlow Serving."""

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
from keras_selfattn.export.serving_check import CApiServer as CApiServer
from keras_selfattn.export.serving_check import (
    serve_with_c_api as serve_with_c_api,
)

__all__ = [
    "CApiServer",
    "export_classifier",
    "export_model",
    "export_text_generator",
    "published_versions",
    "serve_with_c_api",
]
