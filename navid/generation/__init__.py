"""Generation: decoding schedules (NAR / PAR-n x / raster), the transformer, the KV-cache sampler."""
