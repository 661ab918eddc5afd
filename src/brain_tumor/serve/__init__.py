"""The HTTP service and its single page."""
