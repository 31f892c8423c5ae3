"""LightMem's ingestion pipeline without Ray: compression, topic segmentation, buffers, tokens.

`compression` loads torch and llmlingua; the other modules are pure (numpy at most).
"""
