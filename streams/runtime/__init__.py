"""What runs the stages on a Kafka cluster through Faust. For now it holds the Faust
compatibility layer (`faust_compat`); the runners, app and worker join it in the layout pass."""
