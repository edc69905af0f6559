"""`cartstream chaos`: the pipeline under faults, verified against a fault-free run."""
