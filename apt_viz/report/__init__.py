"""Reports of a run, built from per-image records: stats.json records, summaries, tables, CSV, index.html."""
