"""Property-based fuzzing of everything that reads user files: the dataset parsers, the manifest
and latency loaders, the config loader and the runner-output parsers. Whatever the bytes, they
either parse or raise the project's own error (KtedgeError), never anything else."""
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ktedge.benchmarks.android import parse_benchmark_model, parse_executor_runner
from ktedge.benchmarks.stage import check_latency
from ktedge.config import load_config
from ktedge.errors import KtedgeError
from ktedge.export.manifest import check_manifest
from ktedge.model.data.parsers import parse_utkface_name, read_celeba_attributes, read_label_csv, read_pts

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text that looks like the real formats often enough to reach deep into the parsers.
PIECES = ["version: 1", "n_points: 68", "n_points: 2", "{", "}", "1.5 2.5", "3 x", "nan inf", "-1e9 4",
          "202599", "5_o_Clock_Shadow Smiling Male", "000001.jpg -1 1 1", "000002.jpg 1", "path,age,smiling",
          "a.jpg,23,1", "b.jpg,,x", "\"c.jpg\",1e400,0", "", " ", "\t", "é", "\x00"]
texts = st.one_of(st.text(max_size=400),
                  st.lists(st.sampled_from(PIECES), max_size=30).map("\n".join),
                  st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                                                     max_size=6), max_leaves=25)


def only_our_error(fn, *args) -> None:
    try:
        fn(*args)
    except KtedgeError:
        pass


SCRATCH = tempfile.TemporaryDirectory()  # one folder, files overwritten; removed at exit


def in_file(text: str, name: str) -> Path:
    path = Path(SCRATCH.name) / name
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


@FUZZ
@given(texts)
def test_dataset_parsers_raise_only_their_own_error(text):
    only_our_error(read_pts, in_file(text, "x.pts"))
    only_our_error(read_celeba_attributes, in_file(text, "list_attr_celeba.txt"))
    only_our_error(read_label_csv, in_file(text, "labels.csv"))
    only_our_error(parse_utkface_name, text.replace("/", "_")[:200] + ".jpg")


@FUZZ
@given(json_values)
def test_manifest_and_latency_checks_raise_only_their_own_error(value):
    only_our_error(check_manifest, value, "manifest.json")
    only_our_error(check_latency, value, "latency.json")


@FUZZ
@given(st.one_of(json_values.map(json.dumps), texts))
def test_config_loader_raises_only_its_own_error(text):
    only_our_error(load_config, in_file(text, "config.yaml"))


@FUZZ
@given(texts)
def test_runner_output_parsers_raise_only_their_own_error(text):
    only_our_error(parse_benchmark_model, text)
    only_our_error(parse_executor_runner, text)


@FUZZ
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=80))
def test_pts_round_trips_any_finite_points(points):
    body = "\n".join(f"{x!r} {y!r}" for x, y in points)
    path = in_file(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n", "p.pts")
    np.testing.assert_allclose(read_pts(path), np.asarray(points, dtype=np.float32), rtol=1e-6)
