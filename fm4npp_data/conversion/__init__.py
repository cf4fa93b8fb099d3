"""Input files to Parquet events: `convert` (the ROOT layouts and TOML layouts, atomic, resumable, parallel),
`ingest` (reading a file in chunks), `assemble` (truth labels, rejects and the event table) and `release` (the
published TPCpp-10M npz release).
"""
