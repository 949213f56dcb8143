"""Batch sizing, budgets, OOM policy, cost tables and cross-video batching (issue 6; seed 001 §0 fixes the rules).

`budget` (the seed's VRAM budget → batch size) · `oom` (the seed's OOM back-off over sub-batches) · `costs` (cost
table rows, JSON tables, on-device measurement and the probe cache) · `autoconfig` (batch and tile size per stage
and device, with reasons) · `crossvideo` (micro-batches of frames from several videos) · `chain` (all of it applied
to a run's stages: what `pipeline.run` and `runtime.multi` call) · `idempotency` (signatures in every manifest;
finished outputs are skipped).
"""
