"""`twelve features inspect | verify | show | convert-legacy`, through click's test runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from twelve.features.cli import features
from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureStore, FeatureStoreReader

MakeRecord = Callable[..., RegionFeatures]
WriteStore = Callable[..., FeatureStoreReader]


@pytest.fixture
def store_path(tmp_path: Path, make_record: MakeRecord, write_store: WriteStore) -> Path:
    path = tmp_path / "store"
    records = [make_record(f"img{i}", num_boxes=4 + i) for i in range(5)]
    write_store(
        path,
        records,
        dtype="float16",
        extractor="tiny-rcnn",
        config_sha256="12" * 32,
        extra={"object_classes": json.dumps([f"thing{i}" for i in range(10)])},
    )
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(features, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def test_inspect_text(store_path: Path) -> None:
    code, output = _run("inspect", str(store_path))
    assert code == 0, output
    assert "tiny-rcnn" in output
    assert "sha256 " + "12" * 32 in output
    assert "32-d float16" in output
    assert "min 4  median 6  mean 6.0  max 8" in output
    assert "sample" in output
    assert "features float16[4, 32]" in output


def test_inspect_json(store_path: Path) -> None:
    code, output = _run("inspect", str(store_path), "--json")
    assert code == 0, output
    summary = json.loads(output)
    assert summary["count"] == 5
    assert summary["kind"] == "twelve"
    assert summary["feature_dim"] == 32
    assert summary["dtype"] == "float16"
    assert summary["schema_version"] == 1
    assert summary["header"]["extractor"] == "tiny-rcnn"
    assert summary["boxes_per_image"]["max"] == 8
    assert summary["sample"]["image_id"] == "img0"


def test_inspect_reports_errors_without_a_traceback(tmp_path: Path, original_lmdb: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, output = _run("inspect", str(tmp_path / "empty"))
    assert code == 1
    assert "Error:" in output
    code, output = _run("inspect", str(original_lmdb))
    assert code == 1
    assert "trust_pickle" in output
    code, output = _run("inspect", str(original_lmdb), "--trust-pickle", "--json")
    assert code == 0, output
    assert json.loads(output)["count"] == 6
    assert json.loads(output)["kind"] == "original"


def test_verify_ok(store_path: Path) -> None:
    code, output = _run("verify", str(store_path), "--no-progress")
    assert code == 0, output
    assert "ok: 5 records verified" in output


def test_verify_reports_corrupt_records_by_id(store_path: Path) -> None:
    env = lmdb.open(str(store_path), max_dbs=2)
    records = env.open_db(b"records")
    with env.begin(write=True, db=records) as txn:
        value = txn.get(b"img2")
        txn.put(b"img2", value[:-1] + bytes([value[-1] ^ 0xFF]))  # a changed value
        txn.put(b"img3", b"not a record")
    env.close()
    code, output = _run("verify", str(store_path), "--no-progress")
    assert code == 1
    assert "corrupt: img2: crc32 mismatch" in output
    assert "corrupt: img3: " in output
    assert "2 of 5 records failed" in output


def test_verify_checks_values_against_the_header(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    good = make_record("good")
    bad = make_record("nan")
    features = bad.features.copy()
    features[0, 0] = np.nan
    write_store(tmp_path / "s", [good, bad.model_copy(update={"features": features})])
    code, output = _run("verify", str(tmp_path / "s"), "--no-progress")
    assert code == 1
    assert "corrupt: nan: features contain NaN" in output


def test_show_draws_boxes(store_path: Path, tmp_path: Path) -> None:
    image = tmp_path / "img1.jpg"
    Image.new("RGB", (320, 240), (90, 120, 150)).save(image)
    out = tmp_path / "drawn" / "img1.png"
    code, output = _run("show", str(store_path), "img1", "--image", str(image), "--out", str(out))
    assert code == 0, output
    assert "5 of 5 boxes" in output
    drawn = Image.open(out)
    assert drawn.size == (320, 240)
    assert drawn.format == "PNG"
    assert np.asarray(drawn).std() > 0  # something was drawn on the flat image


def test_show_scales_to_a_resized_image_and_takes_a_names_file(
    store_path: Path, tmp_path: Path
) -> None:
    image = tmp_path / "small.png"
    Image.new("RGB", (160, 120)).save(image)
    names = tmp_path / "objects_vocab.txt"
    names.write_text("".join(f"object{i},synonym\n" for i in range(20)))
    out = tmp_path / "o.png"
    code, output = _run(
        "show", str(store_path), "img0", "--image", str(image), "--out", str(out),
        "--names", str(names), "--top", "2",
    )  # fmt: skip
    assert code == 0, output
    assert "boxes are scaled" in output
    assert "2 of 4 boxes" in output
    assert Image.open(out).size == (160, 120)


def test_show_missing_id(store_path: Path, tmp_path: Path) -> None:
    image = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(image)
    code, output = _run(
        "show", str(store_path), "nope", "--image", str(image), "--out", str(tmp_path / "o.png")
    )
    assert code == 1
    assert "'nope' is not in feature store" in output
    assert not (tmp_path / "o.png").exists()


def test_convert_legacy(original_lmdb: Path, tmp_path: Path) -> None:
    destination = tmp_path / "converted"
    code, output = _run("convert-legacy", str(original_lmdb), str(destination))
    assert code == 2
    assert "--trust-pickle" in output
    assert not destination.exists()
    code, output = _run(
        "convert-legacy", str(original_lmdb), str(destination), "--trust-pickle",
        "--dtype", "float16", "--no-progress",
    )  # fmt: skip
    assert code == 0, output
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["images"] == 6
    assert summary["converted_now"] == 6
    store = FeatureStore.open(destination)
    assert store.header.dtype == "float16"
    assert len(store) == 6
    code, output = _run(
        "convert-legacy", str(original_lmdb), str(destination), "--trust-pickle", "--dtype",
        "float16", "--no-progress",
    )  # fmt: skip
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1])["skipped_already_present"] == 6


def test_verify_and_show_read_original_files_on_opt_in(original_lmdb: Path, tmp_path: Path) -> None:
    code, output = _run("verify", str(original_lmdb), "--no-progress")
    assert code == 1
    assert "trust_pickle" in output
    code, output = _run("verify", str(original_lmdb), "--no-progress", "--trust-pickle")
    assert code == 0, output
    assert "ok: 6 records verified" in output
    image = tmp_path / "i.png"
    Image.new("RGB", (640, 480)).save(image)
    out = tmp_path / "o.png"
    code, output = _run(
        "show", str(original_lmdb), "12", "--image", str(image), "--out", str(out),
        "--trust-pickle",
    )  # fmt: skip
    assert code == 0, output
    assert out.exists()
