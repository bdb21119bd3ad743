"""Decoders of intermediate layers: logit lens (in analysis), SPADE, and their statistics."""
