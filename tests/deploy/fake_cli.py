"""Stand-ins for the programs docs/deploy.md tells a user to run and this machine cannot (no Docker, no registry, no
vast.ai or RunPod account), so that the doc's commands run as written (tests/deploy/test_docs.py):

- ``docker build -f FILE [--target T] -t TAG CTX``: the stage exists and hadolint passes on FILE;
  ``docker push TAG``: recorded; ``docker run [-e K[=V]] [-v SRC:DST[:ro]] [--rm] [--gpus all] IMAGE [ARGS]``: what
  the image runs (its ENTRYPOINT: `vidpipe container`, or the RunPod handler for a `:serverless` tag), in this
  machine's Python, with the image's working directory and ``/workspace`` as $FAKE_WORKSPACE;
- ``vastai``: ``search offers`` prints one offer, ``create instance`` starts the image there (its on-start command
  instead of the entrypoint in SSH mode: the real docker/onstart-vast.sh) and waits for it, ``set api-key`` is
  kept, ``stop instance ID`` is the instance stop, recorded in $FAKE_STOP_LOG;
- ``runpodctl``: ``create pod`` starts the image as a pod (RUNPOD_POD_ID set), ``stop pod ID`` records the stop and
  ends the pod (SIGTERM to its container, as RunPod's stop does);
- ``aws s3 cp FILE s3://B/K --endpoint-url URL``: an upload with the store's credentials (B2_KEY, B2_SECRET).

Invoked as ``python fake_cli.py NAME ARGS`` by shims named after each program.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker"
WAIT_S = 600.0


def _record(line: str) -> None:
    with open(os.environ["FAKE_STOP_LOG"], "a") as f:
        f.write(line + "\n")


def _workspace() -> Path:
    return Path(os.environ["FAKE_WORKSPACE"])


def _in_workspace(value: str) -> str:
    return value.replace("/workspace", str(_workspace()))


def _image_env(image: str, pairs: list[str], extra: dict[str, str]) -> dict[str, str]:
    """The container's environment: the image's ENV (on this CPU machine: the CPU variant's device), then -e."""
    ws = _workspace()
    env = dict(os.environ) | {"VIDPIPE_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        env[key] = _in_workspace(value) if sep else os.environ.get(key, "")
    # /workspace exists in the image: the seed's result and sentinel paths are the defaults there
    env.setdefault("UPLOAD_RESULT_JSON", str(ws / "realesrgan_upload_result.json"))
    env.setdefault("VIDPIPE_SENTINEL", str(ws / "VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY"))
    env.setdefault("VIDPIPE_OUTPUT_DIR", str(ws / "output"))
    if (ws / "config.yaml").is_file():  # the entrypoint's default config path, /workspace/config.yaml
        env.setdefault("VIDPIPE_CONFIG", str(ws / "config.yaml"))
    return env | extra


def _entrypoint(image: str, args: list[str]) -> list[str]:
    if image.endswith(":serverless"):
        return [sys.executable, "-m", "vidpipe.serve.runpod", *args]
    return [sys.executable, "-m", "vidpipe", "container", *args]


def _start(image: str, pairs: list[str], args: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
    ws = _workspace()
    ws.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(_entrypoint(image, args), env=_image_env(image, pairs, extra), cwd=ws)


def docker(args: list[str]) -> int:
    command, rest = args[0], args[1:]
    if command == "build":
        file = Path(rest[rest.index("-f") + 1])
        text = file.read_text()
        if "--target" in rest and not re.search(rf"^FROM .* AS {rest[rest.index('--target') + 1]}$", text, re.M):
            print(f"fake docker: no stage {rest[rest.index('--target') + 1]} in {file}", file=sys.stderr)
            return 1
        for arg in (v for k, v in itertools.pairwise(rest) if k == "--build-arg"):
            if not re.search(rf"^ARG {arg.partition('=')[0]}=", text, re.M):
                print(f"fake docker: {file} has no ARG {arg}", file=sys.stderr)
                return 1
        return subprocess.run([os.environ["FAKE_HADOLINT"], str(file)], check=False).returncode
    if command == "push":
        _record(f"docker push {rest[0]}")
        return 0
    if command == "run":
        pairs, i = [], 0
        while rest[i].startswith("-"):
            flag = rest[i]
            if flag == "-e":
                pairs.append(rest[i + 1])
            elif flag == "-v":
                src, dst = rest[i + 1].split(":")[:2]
                target = Path(_in_workspace(dst))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(Path(src).read_bytes())
            elif flag == "--gpus":
                pass
            i += 2 if flag in ("-e", "-v", "--gpus") else 1
        return _start(rest[i], pairs, rest[i + 1 :], {}).wait(WAIT_S)
    print(f"fake docker: {command} not faked", file=sys.stderr)
    return 2


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def vastai(args: list[str]) -> int:
    if args[:2] == ["search", "offers"]:
        print("ID       CUDA  N  Model     vCPUs  RAM  Disk  $/hr")
        print("4242001  13.0  1  RTX_4090  16.0   64   500   0.35")
        return 0
    if args[:2] == ["set", "api-key"]:
        return 0
    if args[:2] == ["stop", "instance"]:
        _record(f"vastai stop instance {args[2]}")
        return 0
    if args[:2] == ["create", "instance"]:
        pairs = shlex.split(_option(args, "--env") or "")
        pairs = [p for p in pairs if p != "-e"]
        extra = {"CONTAINER_ID": os.environ.get("FAKE_INSTANCE_ID", "4242")}
        onstart = _option(args, "--onstart-cmd")
        if onstart is None:  # args mode: the image's entrypoint
            return _start(_option(args, "--image") or "", pairs, [], extra).wait(WAIT_S)
        # SSH/Jupyter mode: vast.ai's init, then the on-start command (the image's copy of docker/onstart-vast.sh)
        assert onstart == "vidpipe-onstart-vast", onstart
        env = _image_env("", pairs, extra) | {"VIDPIPE_LOG": str(_workspace() / "vidpipe.log")}
        if subprocess.run(["bash", str(DOCKER_DIR / "onstart-vast.sh")], env=env, check=False).returncode:
            return 1
        pid = int((_workspace() / "vidpipe.log.pid").read_text())
        deadline = time.monotonic() + WAIT_S
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        print("Started. {'success': True, 'new_contract': 4242}")
        return 0
    print(f"fake vastai: {args} not faked", file=sys.stderr)
    return 2


def runpodctl(args: list[str]) -> int:
    if args[:2] == ["stop", "pod"]:
        _record(f"runpodctl stop pod {args[2]}")
        pid = Path(os.environ["FAKE_WORKSPACE"]) / ".pod.pid"
        if pid.is_file():
            os.kill(int(pid.read_text()), signal.SIGTERM)  # the pod stops: its container gets SIGTERM
        return 0
    if args[:2] == ["create", "pod"]:
        pairs = [v for k, v in itertools.pairwise(args) if k == "--env"]
        extra = {"RUNPOD_POD_ID": os.environ.get("FAKE_POD_ID", "pod-7")}
        proc = _start(_option(args, "--imageName") or "", pairs, [], extra)
        (_workspace() / ".pod.pid").write_text(str(proc.pid))
        return 0 if proc.wait(WAIT_S) in (0, -signal.SIGTERM) else 1
    print(f"fake runpodctl: {args} not faked", file=sys.stderr)
    return 2


def aws(args: list[str]) -> int:
    import boto3

    assert args[:2] == ["s3", "cp"], args
    src, url = args[2], args[3]
    bucket, _, key = url.removeprefix("s3://").partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=_option(args, "--endpoint-url"),
        aws_access_key_id=os.environ["B2_KEY"],
        aws_secret_access_key=os.environ["B2_SECRET"],
        region_name="us-east-1",
    )
    client.upload_file(src, bucket, key)
    print(f"upload: {src} to {url}")
    return 0


if __name__ == "__main__":
    tool = {"docker": docker, "vastai": vastai, "runpodctl": runpodctl, "aws": aws}[sys.argv[1]]
    sys.exit(tool(sys.argv[2:]))
