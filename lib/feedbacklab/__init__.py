"""Feedback Workbook: reproduce five papers on learning from human feedback.

The library holds all logic; notebooks hold narrative, parameters, calls and plots.
Modules, one concept each: ``world`` (ShapesWorld), ``feedback`` (simulated
annotators and consolidation), ``metrics``, ``datasets``, ``models``, ``rewards``,
``finetune``, ``inpaint`` (RichHF's inpainting of predicted implausible regions),
``evaluation``, ``viz``, ``runner`` and ``notebook`` (helpers a notebook calls).
"""
__version__ = "0.1.0"
