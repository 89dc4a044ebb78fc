"""Backbone loading, pooling, LoRA and SKR checkpoints."""
