"""Mask relaxations for learned searches (Concrete, hard-concrete, Gaussian gates) and GradBalance, the sparsity control."""
