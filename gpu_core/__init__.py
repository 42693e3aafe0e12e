"""Backend and contracts shared by every layer (device, settings, schema, stores, registry)."""
