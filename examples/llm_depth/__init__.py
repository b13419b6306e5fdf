"""Depth pruning of a small Llama-architecture language model trained on the Python standard library's source.

Run ``python -m examples.llm_depth.run --budget cpu`` (train, prune, fine-tune, time; resumable), then
``python -m examples.llm_depth.report`` (``docs/llm_depth.md`` and its plot from the records).
"""
