"""Batch layer: Dask jobs from the Parquet lake to offline features, models, registry and online store."""
