"""3D spatio-temporal video tokenizer: encoder/decoder, FSQ and VQ quantizers, training, checkpoints."""

from navid.tokenizer.config import TokenizerLossConfig, TokenizerModelConfig, TokenizerTrainConfig
from navid.tokenizer.model import VideoTokenizer

__all__ = ["TokenizerLossConfig", "TokenizerModelConfig", "TokenizerTrainConfig", "VideoTokenizer"]
