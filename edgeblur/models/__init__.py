"""Model families by name; see base.py for the protocol."""

from __future__ import annotations

from edgeblur.models.base import Model, ModelSettings
from edgeblur.models.centerface import CenterFace
from edgeblur.models.yolov5_face import YoloV5Face
from edgeblur.models.yolov8 import YoloV8

FAMILIES = ("centerface", "yolov8", "yolov5_face")


def build_model(family: str, settings: ModelSettings, input_name: str | None = None) -> Model:
    """The family's pre/post-processing; ``input_name`` overrides the usual tensor name."""
    model: Model
    if family == "centerface":
        model = CenterFace(settings)
    elif family == "yolov8":
        model = YoloV8(settings)
    elif family == "yolov5_face":
        model = YoloV5Face(settings)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if input_name:
        model.input_name = input_name
    return model


__all__ = ["FAMILIES", "Model", "ModelSettings", "build_model"]
