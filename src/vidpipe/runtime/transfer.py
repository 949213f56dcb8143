"""Frames between host and device for `runtime.pipeline.run`: uploads of decoded batches (4:2:0 planes converted
to RGB on the device), downloads of output batches (RGB → planes on the device, copied into reused host buffers,
pinned on CUDA), in pieces that bound the host memory they take whatever a stage's batch is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import DeviceOutOfMemoryError
from ..frames import FrameBatch
from ..media.buffers import HostBuffers
from ..media.reader import VideoReader
from ..media.threads import Consumer
from ..media.writer import VideoWriter
from ..media.yuv import PlanarBatch, fit, planes_to_rgb_frames, rgb_to_planes

#: host memory for the download pool (pinned on CUDA) of planar output frames, whatever the batch: a batch of
#: more frames than the pool's share per buffer goes to the encoder in pieces (`Transfer.pieces`). 4096×1728
#: 4:2:0 (BasicVSR++ ×4 of 1024×432, windows of 64 frames) is 10.6 MB a frame: 6 frames a piece
DOWNLOAD_POOL_BYTES = 512 << 20


class Transfer:
    """Frames between host and device. With a planar reader/writer the 4:2:0 planes cross PCIe and the colour
    conversion runs on the device; downloads go into reused (pinned on CUDA) buffers asynchronously, and the
    writer thread waits on each batch's event, so the device never waits on Python per frame."""

    def __init__(
        self,
        device: torch.device,
        reader: VideoReader,
        writer: VideoWriter | None,
        queue: int,
        check: Callable[[], None],
    ) -> None:
        self.device, self.reader = device, reader
        self.out_fmt = writer.planar_format() if writer is not None else None
        self.colour = writer.colour if writer is not None else reader.colour
        self.crop = (0, 0)
        if writer is not None:
            self.crop = writer.spec.crop_to or (writer.spec.width, writer.spec.height)
        self._pool = None
        #: frames per download (`pieces`): the pool's buffers hold at most this many each
        self.piece = 0
        if self.out_fmt is not None:
            # batches queued for the encoder + one being encoded + one being filled
            fmt = self.out_fmt
            self._pool = HostBuffers(fmt.elements, fmt.dtype, queue + 3, pin=device.type == "cuda", check=check)
            frame = fmt.elements * fmt.dtype.itemsize
            self.piece = max(1, DOWNLOAD_POOL_BYTES // ((queue + 3) * frame))

    def watch(self, sink: Consumer[Any, Any]) -> None:
        """Waiting for a download buffer also watches the encoder that returns them: if it died holding some,
        its error surfaces here instead of a wait that never ends."""
        if self._pool is not None:
            outer = self._pool.check

            def check() -> None:
                outer()
                sink.check()

            self._pool.check = check

    def _event(self) -> torch.cuda.Event | None:
        if self.device.type != "cuda":
            return None
        event = torch.cuda.Event(blocking=True)  # waiters sleep instead of spinning a core the encoder could use
        event.record(torch.cuda.current_stream(self.device))
        return event

    def upload(self, batch: FrameBatch | PlanarBatch) -> FrameBatch:
        if not isinstance(batch, PlanarBatch):
            return batch.with_data(batch.data.to(self.device, non_blocking=True))
        planes = batch.data.to(self.device, non_blocking=True)  # the same memory when the device is the CPU
        fmt = batch.fmt
        rgb = torch.empty(len(batch), 3, fmt.height, fmt.width, dtype=self.reader.dtype, device=self.device)
        rgb = rgb.contiguous(memory_format=torch.channels_last)
        with _conversion_oom("YUV → RGB", self.device):
            planes_to_rgb_frames(planes, fmt, batch.colour, rgb)  # beside the model's memory
        batch.done(self._event())  # the host buffer is reused once the work queued so far has read it
        return FrameBatch(data=rgb, pts=batch.pts, time_base=batch.time_base, colour=batch.colour, index=batch.index)

    def pieces(self, out: FrameBatch) -> Iterator[FrameBatch | PlanarBatch]:
        """`out` downloaded in pieces of at most `piece` frames (all of it at once without a pool): a windowed
        stage's batch of 64 ×4 frames is gigabytes on the host, and the pool keeps `queue + 3` buffers."""
        step = self.piece or len(out)
        for a in range(0, len(out), step):
            yield self.download(out if step >= len(out) else out.slice(a, a + step))

    def download(self, out: FrameBatch) -> FrameBatch | PlanarBatch:
        fmt, pool = self.out_fmt, self._pool
        if fmt is None or pool is None:
            return out.with_data(out.data.cpu())
        planes = torch.empty(len(out), fmt.elements, dtype=fmt.dtype, device=self.device)
        with _conversion_oom("RGB → YUV", self.device):
            for i in range(len(out)):
                frame = fit(out.data[i : i + 1, :3], self.crop, (fmt.width, fmt.height))
                planes[i : i + 1] = rgb_to_planes(frame, fmt, self.colour)
        host = pool.get(len(out))
        dst = host[: len(out)]
        dst.copy_(planes, non_blocking=True)
        return PlanarBatch(
            data=dst,
            fmt=fmt,
            pts=out.pts,
            time_base=out.time_base,
            colour=out.colour,
            index=out.index,
            release=lambda event, host=host: pool.put(host, event),  # type: ignore[misc]
            ready=self._event(),
        )

    def describe(self) -> dict[str, str]:
        where = f"on {self.device}"
        return {
            "decode": f"{self.reader.planar.pix_fmt} planes → RGB {where}" if self.reader.planar else "swscale",
            "encode": f"RGB → {self.out_fmt.pix_fmt} planes {where}" if self.out_fmt else "swscale",
        }


@contextmanager
def _conversion_oom(what: str, device: torch.device) -> Iterator[None]:
    """Colour conversion runs outside the stages' OOM policy (it needs one frame of temporaries): running out of
    memory there is the classified error, never a raw traceback."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        raise DeviceOutOfMemoryError(
            f"out of GPU memory on {device} converting colour ({what}, one frame at a time); free memory on the "
            "device or run with colour_on_device off"
        ) from e
