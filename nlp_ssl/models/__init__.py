"""Model builders: size presets or any HF config/checkpoint, always plain transformers classes."""

from nlp_ssl.models.builders import ModelConfig, build_model, check_block_size, max_positions, preset_config, special_token_fields

__all__ = ["ModelConfig", "build_model", "check_block_size", "max_positions", "preset_config", "special_token_fields"]
