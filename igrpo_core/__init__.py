"""iGRPO Workbench: GRPO and iGRPO (arXiv 2602.09000) training, evaluation and run records.

Importing the package is cheap: submodules load torch/transformers only when used.
"""
__version__ = "0.1.0"
