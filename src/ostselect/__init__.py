"""ostselect: pick the multimodal SFT samples worth training on with One-Step-Train utilities.

Data flows one way: pool files -> samples -> proxy -> scorer -> scores table -> selection / report.
Heavy dependencies (torch, transformers) are imported lazily by the modules that need them.
"""

__version__ = "0.1.0"
