"""selfplay: an AI-feedback self-improvement engine for language models.

Importing the package is cheap: torch, transformers and vLLM are imported only where they are used.
"""

__version__ = "0.1.0"
