"""Backbone export in timm's own format, so that timm alone loads it (no ssl_syre needed).

`python -m ssl_syre.export CHECKPOINT [--out DIR] [--push-to-hub USER/NAME]` exports from any
ssl_syre checkpoint (and pushes it to the Hugging Face Hub, ssl_syre.export.hub; the command line is
export/__main__.py);
`load_model(PATH)` loads a run directory, checkpoint or export with its config, for eval/*.py.

An export directory holds config.json (architecture, model arguments, preprocessing, and an
`ssl_syre` section with method, SyRe settings, data, evaluation protocol and kNN results) and
model.safetensors: no pickle anywhere. Backbones with the small-image stem, which timm cannot
express, record `small_image_stem: true` in their model arguments, so that timm alone refuses
them loudly (an unexpected keyword argument) instead of loading the weights into a model
with the wrong stem; `load_backbone` rebuilds them.

Writing lives in `write`, reading back in `load`, loading for evaluation in `for_eval`; this
module re-exports their names.
"""

from ssl_syre.export.for_eval import (  # noqa: F401 (re-exported)
    CHECKPOINT_SUFFIXES,
    OVERRIDABLE_KEYS,
    OVERRIDABLE_PREFIXES,
    PATH_KINDS,
    LoadedModel,
    check_overrides,
    load_model,
    merged_config,
)
from ssl_syre.export.load import (  # noqa: F401 (re-exported)
    EXPORT_KEY,
    broken_export,
    check_weights,
    load_backbone,
    model_from_checkpoint,
    read_export_config,
    state_dict_mismatch,
)
from ssl_syre.export.write import export_backbone, export_checkpoint  # noqa: F401 (re-exported)
