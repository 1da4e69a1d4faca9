"""The .darb artifact: round trip, numpy-only loading, corrupt files rejected clearly."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from darbgen.format import FORMAT_VERSION, Artifact, ArtifactError

from conftest import random_layer


@pytest.fixture
def artifact(rng):
    a = random_layer(rng, 12, 40, [2, 4, 8, 16], name="fc1")
    b = random_layer(rng, 5, 12, [4], keep=2, weight_bits=6, name="fc2")
    return Artifact([a, b], {"source": "test", "method": "darb", "parameters": {"ratio": 4}})


def same_layer(x, y):
    for f in ("name", "rows", "cols", "weight_bits", "method", "params", "shape"):
        assert getattr(x, f) == getattr(y, f), f
    for f in ("block_sizes", "keep", "offsets", "values", "scale"):
        assert np.array_equal(getattr(x, f), getattr(y, f)), f


def test_round_trip(artifact, tmp_path):
    path = tmp_path / "a.darb"
    artifact.save(path)
    loaded = Artifact.load(path)
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.provenance == artifact.provenance
    for x, y in zip(artifact.layers, loaded.layers):
        same_layer(x, y)
    assert [tmp.name for tmp in tmp_path.iterdir()] == ["a.darb"]   # no temporary left


def test_round_trip_keeps_bias_shape_and_layer_scale(tmp_path):
    from darbgen.format import SparseLayer
    layer = SparseLayer.from_float("conv", np.arange(1, 25, dtype=float).reshape(2, 12),
                                   np.ones((2, 12), bool), [1, 1], [1, 1], per_row_scale=False,
                                   bias=np.array([0.5, -1.0]), shape=(2, 3, 2, 2))
    Artifact([layer]).save(tmp_path / "c.darb")
    loaded = Artifact.load(tmp_path / "c.darb").layer("conv")
    assert loaded.shape == (2, 3, 2, 2) and loaded.scale.shape == ()
    assert loaded.bias.tolist() == [0.5, -1.0]


def test_loading_never_imports_torch(artifact, tmp_path):
    artifact.save(tmp_path / "a.darb")
    code = ("import sys; from darbgen.format import Artifact; "
            f"a = Artifact.load({str(tmp_path / 'a.darb')!r}); "
            "from darbgen.sim.golden import spmv_ref; import darbgen.pruning.masks, darbgen.host; "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(a.layers[0].nnz)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == artifact.layers[0].nnz


def test_unknown_layer_lists_names(artifact):
    with pytest.raises(ArtifactError, match=r"^no layer 'fc9'; the artifact has 'fc1', 'fc2'$"):
        artifact.layer("fc9")


def test_duplicate_names_rejected(artifact):
    with pytest.raises(ArtifactError, match=r"^layer names must be unique, 'fc1' repeats$"):
        Artifact([artifact.layers[0], artifact.layers[0]])


# -- corrupt files ------------------------------------------------------------------

def rewrite(src, dst, manifest=None, members=None, drop=()):
    """Copy an artifact, replacing the manifest or members, or dropping members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            if item in drop:
                continue
            data = zin.read(item)
            if item == "manifest.json" and manifest is not None:
                data = json.dumps(manifest(json.loads(data))).encode()
            if members and item in members:
                data = members[item]
            zout.writestr(item, data)


def npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture
def saved(artifact, tmp_path):
    path = tmp_path / "good.darb"
    artifact.save(path)
    return path


def edit(d, **kv):
    d.update(kv)
    return d


def edit_layer(i, **kv):
    def f(m):
        m["layers"][i].update(kv)
        return m
    return f


@pytest.mark.parametrize("change, message", [
    (dict(manifest=lambda m: edit(m, format_version=99)),
     r"format version 99 is not supported \(this darbgen reads version 1\)$"),
    (dict(manifest=lambda m: edit(m, format="zip")),
     r"not a darbgen artifact \(manifest format is not 'darbgen-artifact'\)$"),
    (dict(drop=("manifest.json",)), r"not a darbgen artifact \(no manifest.json\)$"),
    (dict(members={"manifest.json": b"{not json"}), r"manifest.json is not valid JSON"),
    (dict(manifest=edit_layer(1, rows=4)),
     r"layer 'fc2': field 'scale' must be a scalar or have shape \(4,\), not \(5,\)$"),
    (dict(manifest=edit_layer(0, rows="12")), r"layer 'fc1': field 'rows' must be an integer, not a string$"),
    (dict(manifest=edit_layer(0, weight_bits=4)), r"layer 'fc1': row \d+: value -?\d+ does not "
                                                  r"fit in 4 bits$"),
    (dict(drop=("layers/1/offsets.npy",)),
     r"layer 'fc2': field 'offsets': array 'layers/1/offsets.npy' is missing from the archive$"),
    (dict(members={"layers/0/values.npy": b"\x93NUMPY garbage"}),
     r"layer 'fc1': field 'values': unreadable array"),
    (dict(members={"layers/0/offsets.npy": npy(np.zeros(3, np.uint8))}),
     r"layer 'fc1': field 'offsets' has 3 entries, the layout needs \d+$"),
    (dict(members={"layers/1/block_sizes.npy": npy(np.array([4, 4, 3, 4, 4], np.uint32))}),
     r"layer 'fc2': row 2: block size must be a power of 2, not 3$"),
    (dict(members={"layers/0/scale.npy": npy(np.array(["a"] * 12))}),
     r"layer 'fc1': field 'scale' must hold numbers, not <U1$"),
])
def test_corrupt_manifest_or_arrays(saved, tmp_path, change, message):
    bad = tmp_path / "bad.darb"
    rewrite(saved, bad, **change)
    with pytest.raises(ArtifactError, match=r"^" + str(bad).replace(".", r"\.") + ": " + message):
        Artifact.load(bad)


def test_offset_corruption_names_row_and_block(artifact, saved, tmp_path):
    layer = artifact.layers[1]                     # b=4, k=2 on 12 columns
    offsets = layer.offsets.astype(np.uint8).copy()
    offsets[0], offsets[1] = offsets[1], offsets[0]   # swap: not ascending any more
    bad = tmp_path / "bad.darb"
    rewrite(saved, bad, members={"layers/1/offsets.npy": npy(offsets)})
    with pytest.raises(ArtifactError, match=r"layer 'fc2': row 0, block 0: offsets must be "
                                            r"distinct and ascending"):
        Artifact.load(bad)


@pytest.mark.parametrize("cut", [0, 10, 100, 0.5, -10])
def test_truncated_file(saved, tmp_path, cut):
    data = saved.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    bad = tmp_path / "cut.darb"
    bad.write_bytes(data[:n])
    with pytest.raises(ArtifactError, match=r"cut\.darb: not a readable darbgen artifact "
                                            r"\(corrupt or truncated zip"):
        Artifact.load(bad)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ArtifactError, match=r"nope\.darb: no such file$"):
        Artifact.load(tmp_path / "nope.darb")
    with pytest.raises(ArtifactError, match=r": is a directory, not an artifact$"):
        Artifact.load(tmp_path)


@given(st.data())
def test_random_byte_flips_never_pass_silently_or_crash(data):
    """Any single corrupted byte either raises ArtifactError or leaves the content intact
    (bytes outside the compressed payloads, e.g. timestamps, may change harmlessly)."""
    rng = np.random.default_rng(7)
    good = Artifact([random_layer(rng, 6, 20, [2, 4, 8], name="l")], {"s": 1})
    path = _tmp_file(good)
    raw = bytearray(path.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    try:
        loaded = Artifact.load(path)
    except ArtifactError:
        return
    same_layer(good.layers[0], loaded.layers[0])


def _tmp_file(artifact):
    import tempfile
    from pathlib import Path
    path = Path(tempfile.mkdtemp()) / "f.darb"
    artifact.save(path)
    return path


def test_round_trip_keeps_compaction(tmp_path):
    from darbgen.format import SparseLayer
    layer = SparseLayer.encode("c", np.arange(8).reshape(2, 4), np.ones((2, 4), bool), [1, 1],
                               [1, 1], 1.0, shape=(2, 2, 2, 2), input_columns=[0, 3, 5, 6])
    Artifact([layer]).save(tmp_path / "c.darb")
    loaded = Artifact.load(tmp_path / "c.darb").layer("c")
    assert loaded.input_columns.tolist() == [0, 3, 5, 6]
    assert np.array_equal(loaded.to_dense(expanded=True), layer.to_dense(expanded=True))
