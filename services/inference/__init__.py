"""The detector served over the Open Inference Protocol (KServe v2, the protocol Triton speaks):
`cartstream serve detector` answers health, metadata and infer over HTTP and gRPC, and batches
frames across requests. Workers call it through `cartstream.models.remote` (detect.endpoint)."""
