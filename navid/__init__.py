"""navid: Neighboring Autoregressive (NAR) video generation.

A 3D video tokenizer, one transformer that serves NAR, PAR-n x and raster decoding
schedules, one KV-cache sampler, and an FVD evaluator with the Kinetics-400 I3D.
"""

__version__ = "0.1.0"
