"""Grad-CAM explanations and their localisation scores against tumour boxes."""
