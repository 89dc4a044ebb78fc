"""Knowledge re-expression: LoRA + task head on the self-labels, with Ray Train and DeepSpeed."""
