"""The base layer every other room builds on: settings, ids and headers, topic naming, telemetry
and metrics. It imports nothing from `schemas`, `models`, `streams` or `services`."""
