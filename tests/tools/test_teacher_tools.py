import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from distill.data.region_store import RegionEmbeddingStore
from distill.teacher import ClassEmbeddings
from tests.conftest import REPO, SMALL, load
from tests.teacher.conftest import tiny_weights  # noqa: F401  (fixture)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tool(name, *args, extra_env=None, **kw):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env={**ENV, **(extra_env or {})},
        **kw,
    )


def test_dump_text_embeddings_from_json_txt_and_list(tmp_path, synthetic_root, tiny_weights):  # noqa: F811
    gt = synthetic_root / "annotations/instances_val.json"
    r = tool(
        "dump_text_embeddings.py",
        "--teacher",
        "distill-tiny-vit",
        "--pretrained",
        tiny_weights,
        "--vocabulary",
        gt,
        "--output",
        tmp_path / "a.npy",
    )
    assert r.returncode == 0, r.stderr
    names = [c["name"] for c in sorted(load(gt)["categories"], key=lambda c: c["id"])]
    e = ClassEmbeddings.load(tmp_path / "a.npy", expected_names=names)
    assert e.provenance["templates"] == "vild" and e.provenance["num_templates"] == 63
    assert e.provenance["teacher"]["arch"] == "distill-tiny-vit"
    (tmp_path / "names.txt").write_text("# pets\ncat\ndog\n")
    r = tool(
        "dump_text_embeddings.py",
        "--teacher",
        "distill-tiny-vit",
        "--pretrained",
        tiny_weights,
        "--vocabulary",
        tmp_path / "names.txt",
        "--templates",
        "simple",
        "--output",
        tmp_path / "b.npy",
    )
    assert r.returncode == 0 and ClassEmbeddings.load(tmp_path / "b.npy").class_names == ["cat", "dog"]
    r = tool(
        "dump_text_embeddings.py",
        "--teacher",
        "distill-tiny-vit",
        "--pretrained",
        tiny_weights,
        "--vocabulary",
        "cat, dog,cat",
        "--output",
        tmp_path / "c.npy",
    )
    assert r.returncode == 2 and "appears twice" in r.stderr
    r = tool(
        "dump_text_embeddings.py",
        "--teacher",
        "no-such-arch",
        "--vocabulary",
        "cat",
        "--output",
        tmp_path / "d.npy",
    )
    assert r.returncode == 2 and "unknown teacher architecture" in r.stderr and "Traceback" not in r.stderr
    r = tool(
        "dump_text_embeddings.py",
        "--teacher",
        "distill-tiny-vit",
        "--vocabulary",
        tmp_path / "none.json",
        "--output",
        tmp_path / "e.npy",
    )
    assert r.returncode == 2 and "vocabulary file not found" in r.stderr
    assert not (tmp_path / "d.npy").exists() and not (tmp_path / "e.npy").exists()


@pytest.fixture(scope="module")
def region_job(synthetic_root, tmp_path_factory):
    """Dataset with one corrupt image, and proposals: jittered boxes plus unusable ones."""
    d = tmp_path_factory.mktemp("regions")
    gt = load(synthetic_root / "annotations/instances_val.json")
    images = d / "images"
    images.mkdir()
    for im in gt["images"]:
        (images / im["file_name"]).write_bytes((synthetic_root / "images/val" / im["file_name"]).read_bytes())
    (images / gt["images"][4]["file_name"]).write_bytes(b"\x89PNG broken")
    rng = np.random.default_rng(0)
    props = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(20):
            j = rng.normal(0, 2, 4)
            props.append(
                {
                    "image_id": a["image_id"],
                    "bbox": [x + j[0], y + j[1], w + abs(j[2]), h + abs(j[3])],
                    "score": float(rng.random()),
                }
            )
    first = gt["images"][0]["id"]
    props += [
        {"image_id": first, "bbox": [3, 3, 0, 10], "score": 1.0},
        {"image_id": first, "bbox": [500, 500, 10, 10], "score": 1.0},
    ]
    (d / "props.json").write_text(json.dumps(props))
    return synthetic_root / "annotations/instances_val.json", images, d / "props.json"


def _dump(job, out, weights, **kw):
    gt, images, props = job
    args = [
        "--teacher",
        "distill-tiny-vit",
        "--pretrained",
        weights,
        "--dataset-json",
        gt,
        "--image-root",
        images,
        "--proposals",
        props,
        "--output",
        out,
        "--chunk-size",
        "1",
        "--no-progress",
    ]
    cmd = [sys.executable, str(REPO / "tools" / "dump_region_embeddings.py"), *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def _digest(root):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_region_dump_counts_skips_and_resumes_after_kill(region_job, tmp_path, tiny_weights):  # noqa: F811
    full = _dump(region_job, tmp_path / "full", tiny_weights)
    out, err = full.communicate(timeout=300)
    assert full.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {
        "num_images": SMALL["num_val"] - 1,
        "num_regions": summary["num_regions"],
        "skipped_boxes": 2,
        "skipped_images": 1,
    }
    assert "cannot decode image" in err
    store = RegionEmbeddingStore(tmp_path / "full", expected_dim=128)
    gt = load(region_job[0])
    boxes, emb = store[gt["images"][0]["id"]]
    assert emb.shape[0] == boxes.shape[0] > 0 and emb.shape[1] == 128

    # kill a second run part-way, then restart it: the result must equal the uninterrupted store
    killed = _dump(region_job, tmp_path / "resumed", tiny_weights)
    shards = tmp_path / "resumed" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("shard-*.safetensors"))) < 3:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = len(list(shards.glob("shard-*.safetensors")))
    assert 0 < done < SMALL["num_val"] and not (tmp_path / "resumed" / "index.json").exists()
    again = _dump(region_job, tmp_path / "resumed", tiny_weights)
    out2, err2 = again.communicate(timeout=300)
    assert again.returncode == 0, err2
    assert _digest(tmp_path / "resumed") == _digest(tmp_path / "full")


def test_region_dump_bad_inputs(region_job, tmp_path, tiny_weights):  # noqa: F811
    gt, images, props = region_job
    bad = tmp_path / "bad_props.json"
    bad.write_text(json.dumps([{"image_id": 99999999, "bbox": [0, 0, 4, 4], "score": 1}]))
    p = _dump((gt, images, bad), tmp_path / "x", tiny_weights)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "names image_id 99999999" in err and "Traceback" not in err
    p = _dump((gt, images, tmp_path / "missing.json"), tmp_path / "y", tiny_weights)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "proposals file not found" in err


def test_region_dump_of_no_readable_image_is_an_error(region_job, tmp_path, tiny_weights):  # noqa: F811
    gt, _, props = region_job
    empty = tmp_path / "no_images"
    empty.mkdir()
    p = _dump((gt, empty, props), tmp_path / "store", tiny_weights)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("image not found: wrong --image-root?")
    assert sum("skipped image" in ln for ln in err.splitlines()) <= 20
