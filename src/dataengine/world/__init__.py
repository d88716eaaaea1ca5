"""The synthetic visual world of the embedded default: seeded scenes drawn with PIL, each with an exact
annotation in the record shape real pools map into (`render`), and the run's inputs built from them
(`build`: pool, SEED-format benchmark, starter set, the tiny model's tokenizer corpus)."""
