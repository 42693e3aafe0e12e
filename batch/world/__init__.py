"""Synthetic marketplace world: hidden preference model, procedural images, lake generator."""
