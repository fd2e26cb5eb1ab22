"""Text: tokenizers, input layout, fine-tuning on labelled texts and the GLUE harness."""
