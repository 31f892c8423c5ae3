"""Pure retrieval logic (no Ray): BM25 tokenizing and indexing, rank fusion, query preparation."""
