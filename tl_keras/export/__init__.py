"""Exports: serving signatures, SavedModel and TFLite writers, quantization, metadata, LiteRT parity."""
