"""Weight quantization of MoE models: grid, RTN, GPTQ/AGQ, layer streaming, checkpoints."""
