"""The PixArt-Sigma models in MindSpore: transformer, T5 encoder, VAE, and the attention they share."""
