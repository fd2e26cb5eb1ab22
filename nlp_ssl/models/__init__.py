"""Model builders: size presets or any HF config/checkpoint, always plain transformers classes; and
the table of what the project knows about each architecture (``architectures``)."""

from nlp_ssl.models.architectures import ARCHITECTURES, Architecture, architecture_of
from nlp_ssl.models.builders import ModelConfig, build_model, check_block_size, max_positions, preset_config, special_token_fields

__all__ = [
    "ARCHITECTURES", "Architecture", "ModelConfig", "architecture_of", "build_model", "check_block_size", "max_positions",
    "preset_config", "special_token_fields",
]
