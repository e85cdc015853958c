"""PapReview's two-stage cytology pipeline: a plain PyTorch library that never imports Django.

Importing the package is cheap (no torch): the web side reads `inference.types` and probes
uploads with `inference.slides` without loading any model code.
"""
