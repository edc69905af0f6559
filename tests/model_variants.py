"""Real detector files for registry, gate and switch tests: the bundled model copied, or with
its weights perturbed, each with a card naming its own content version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from cartstream.models.inference import BUNDLED_MODEL
from cartstream.models.registry import content_version


def copy_bundled(folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "detector.onnx"
    shutil.copyfile(BUNDLED_MODEL, path)
    shutil.copyfile(BUNDLED_MODEL.with_suffix(".card.json"), path.with_suffix(".card.json"))
    return path


def variant(folder: Path, noise: float) -> Path:
    """The bundled model with its weights perturbed (`noise` x each tensor's spread; 0: the same
    weights, different bytes)."""
    model = onnx.load(str(BUNDLED_MODEL))
    rng = np.random.default_rng(7)
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.size > 16:
            values = values + rng.normal(0, noise * float(values.std()), values.shape)
            tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))
    model.metadata_props.add(key="variant", value=str(noise))
    folder.mkdir(parents=True)
    path = folder / "detector.onnx"
    onnx.save(model, str(path))
    card = json.loads(BUNDLED_MODEL.with_suffix(".card.json").read_text())
    card["version"] = content_version(path)
    path.with_suffix(".card.json").write_text(json.dumps(card))
    return path
