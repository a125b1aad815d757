"""The three stages of the studio: prepare the photos, train the face LoRA, generate portraits.

Each stage is a short list of named steps over :mod:`easyphoto.face` and :mod:`easyphoto.diffusion`.
No stage imports another: :mod:`easyphoto.workflows` composes them.
"""
