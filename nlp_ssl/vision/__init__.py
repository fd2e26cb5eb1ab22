"""What the ViT recipes share: image geometry and processor, the pretext objectives, encoder transfer.

``image``: the image settings, their checks and the processor saved with every checkpoint;
``pretraining``: RotNet and SimMIM as (model, loss, collators); ``finetuning``: the few-label
classifier built on a pretrained encoder, with proof that the encoder really was transferred.
The datasets they train on come from ``nlp_ssl.data.image_splits``.
"""
