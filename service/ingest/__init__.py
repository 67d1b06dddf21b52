"""Live ingestion: the one owner of live state (DESIGN §4).

The aggregator validates and de-duplicates events, makes them durable in the
write-ahead log before acknowledging, folds them with the same transforms as
the batch build and writes the changed rows to the online store in coalesced
micro-batches.
"""
