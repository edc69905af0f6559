"""Operator tools over the pipeline: the demo, eval scoring, benches, reports, the review export,
the chaos suite, and the worker harness they share."""
