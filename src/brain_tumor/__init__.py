"""brain-tumor: classify brain-tumour MRI slices with a fine-tuned ResNet-50, and prove how well it does."""

__version__ = "0.1.0"
