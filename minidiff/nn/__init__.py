"""Networks: layers shared by all of them, and the denoisers themselves."""

from minidiff.nn.layers import TimeEmbedding, timestep_embedding
from minidiff.nn.mlp import MLPConfig, MLPDenoiser

__all__ = ["MLPConfig", "MLPDenoiser", "TimeEmbedding", "timestep_embedding"]
