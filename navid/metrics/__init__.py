"""Video quality metrics: the Kinetics-400 I3D port and FVD."""
