"""Several worker processes on one host (`vidpipe run --gpus all|N|0,2`, issue 19): one per GPU, each with its own
stage chain, reader and writer; many videos handed out longest first, one long video split into segments at
keyframes and joined losslessly, a dead worker's item re-queued.

`devices` (which workers: `--gpus`, CPU workers with `cpu:N`), `plan` (items, expected costs, splitting through the
jobs' segment planner), `worker` (the child process), `pool` (the parent: dispatch, deaths, joins, progress).
The package sits above `jobs` (it drives the jobs' segment machinery) and below `bench` and `cli`."""

from .devices import WorkerSlot, worker_slots
from .pool import PoolResult, RecipeStages, run_pool

__all__ = ["PoolResult", "RecipeStages", "WorkerSlot", "run_pool", "worker_slots"]
