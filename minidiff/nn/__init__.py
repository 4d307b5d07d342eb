"""Networks: layers shared by all of them, and the denoisers themselves."""

from minidiff.nn.attention import CrossAttention, SelfAttention, TokenAttention, record_attention_maps
from minidiff.nn.dit import DiT, DiTConfig
from minidiff.nn.layers import TimeEmbedding, multiply_adds, timestep_embedding
from minidiff.nn.mlp import MLPConfig, MLPDenoiser
from minidiff.nn.unet import UNet, UNetConfig
from minidiff.nn.vae import VAE, VAEConfig

__all__ = [
    "CrossAttention",
    "DiT",
    "DiTConfig",
    "MLPConfig",
    "MLPDenoiser",
    "SelfAttention",
    "TimeEmbedding",
    "TokenAttention",
    "UNet",
    "UNetConfig",
    "VAE",
    "VAEConfig",
    "multiply_adds",
    "record_attention_maps",
    "timestep_embedding",
]
