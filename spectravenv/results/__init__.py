"""What a run produced: VLMEvalKit's score files read (scores), one row per pair (rows), the
results.json document (document), and comparisons of two runs (compare)."""
