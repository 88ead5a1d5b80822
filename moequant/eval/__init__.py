"""Evaluation (method §8): perplexity protocols, KL to the fp model, lm-eval tasks, offline demo tasks."""
