"""nlp_ssl: self-supervised pretraining on the Hugging Face stack."""

__version__ = "0.1.0"
