"""The window's parts, one small module each; they draw view-models from :mod:`gui.controller` and call back."""
