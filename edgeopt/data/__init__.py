"""Model inputs and the data that feeds them: specs and flags, datasets and their readers, the one
shape resolver, sample inputs where there is no data, and streams."""

from edgeopt.data.dataset import Dataset, FilledInput, content_sha256
from edgeopt.data.images import ImagePreprocessing
from edgeopt.data.readers import LABELS_KEY, load_dataset
from edgeopt.data.resolve import (
    ResolvedInputs,
    apply_user_shapes,
    fill_plan,
    metadata_dict,
    resolve_inputs,
)
from edgeopt.data.samples import RANDOM_SOURCE, InputPlan, random_inputs
from edgeopt.data.sources import ArraySource
from edgeopt.data.specs import (
    Dim,
    Fill,
    InputSpec,
    declared_dim,
    format_shape,
    is_batch_axis,
    is_symbolic,
    parse_dims,
    parse_fills,
    parse_input_dtypes,
    parse_input_shapes,
    parse_state_pairs,
)
from edgeopt.data.streams import check_state_pairs, run_stream

__all__ = [
    "ArraySource", "Dataset", "FilledInput", "content_sha256", "ImagePreprocessing", "LABELS_KEY", "load_dataset",
    "ResolvedInputs", "apply_user_shapes", "fill_plan", "metadata_dict", "resolve_inputs", "RANDOM_SOURCE",
    "InputPlan", "random_inputs", "Dim", "Fill", "InputSpec", "declared_dim", "format_shape", "is_batch_axis",
    "is_symbolic", "parse_dims", "parse_fills", "parse_input_dtypes", "parse_input_shapes", "parse_state_pairs",
    "check_state_pairs", "run_stream",
]
