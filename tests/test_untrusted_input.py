"""Bytes and words from users never run code, and a bad one is one line naming it, with nothing
written, replaced or lost: planted CIFAR pickles (through the loader and through `energy-study
run`), other malformed dataset files, the calibration commands' files and arguments, and the
fit cache's failure paths."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_PER_BATCH, write_cifar10

from energy_lib import DatasetNotFound, RunConfig, cli
from energy_lib.training.data import load_split
from energy_lib.training.datasets import DATASETS
from energy_lib.estimators import calibrate as cal
from energy_lib.estimators import fit_cache

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    """Every file under `folder`: its bytes and modification time (a rewrite shows)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str, prog: str) -> str:
    """The single line a user mistake prints (no traceback, no usage block)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------------
# A. Data files never run code
# ------------------------------------------------------------------------------------------

class CreatesFile:
    """Unpickling this calls `open(path, "w")`: the file appearing proves code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class RunsShell:
    """Unpickling this calls `os.system("touch <path>")`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


PAYLOADS = {"open": CreatesFile, "os.system": RunsShell}


def plant(root: Path, name: str, payload, marker: Path, *, inside: bool) -> Path:
    """A CIFAR-10 folder (official format) whose file `name` is replaced by a planted pickle:
    the payload alone, or hidden as the 'data' of an otherwise well-formed batch."""
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / name
    evil = payload(marker)
    entry = {"batch_label": "x", "labels": [0] * CIFAR_PER_BATCH, "data": evil} if inside else evil
    path.write_bytes(pickle.dumps(entry, protocol=2))
    return path


def cifar_config(root: Path, **values) -> RunConfig:
    return RunConfig.from_dict({"dataset": "cifar10", "data_dir": str(root), "download": False,
                                "batch_size": 4, "device": "cpu", **values})


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_the_planted_payloads_do_run_code_under_plain_pickle(tmp_path, kind):
    """The control: the same bytes through `pickle.load` create the file, so the tests below
    would see code running."""
    path = plant(tmp_path / "data", "data_batch_1", PAYLOADS[kind], tmp_path / "ran", inside=True)
    with open(path, "rb") as handle:
        pickle.load(handle, encoding="latin1")
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["data_batch_1", "data_batch_5"])
@pytest.mark.parametrize("kind", list(PAYLOADS))
@pytest.mark.parametrize("inside", [False, True], ids=["bare", "inside-a-batch"])
def test_a_planted_cifar_file_runs_nothing_and_is_one_line(tmp_path, name, kind, inside):
    marker = tmp_path / "ran"
    root = tmp_path / "data"
    path = plant(root, name, PAYLOADS[kind], marker, inside=inside)
    before = snapshot(root)
    with pytest.raises(DatasetNotFound) as error:
        load_split(cifar_config(root), train=True)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "nothing was run" in message
    assert not marker.exists()
    assert snapshot(root) == before  # nothing written, replaced or removed
    assert len(load_split(cifar_config(root), train=False)) == CIFAR_PER_BATCH  # test split fine


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_energy_study_run_refuses_a_planted_cifar_file_before_any_notebook(tmp_path, kind):
    marker = tmp_path / "ran"
    path = plant(tmp_path / "data", "data_batch_3", PAYLOADS[kind], marker, inside=True)
    (tmp_path / "planted.toml").write_text(textwrap.dedent("""\
        [study]
        name = "planted"
        [fixed]
        dataset = "cifar10"
        data_dir = "data"
        download = false
        model = "paper_cnn"
        epochs = 1
        batch_size = 4
        device = "cpu"
        [axes]
        width = [0.5]
    """))
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "energy_lib", "run", "planted.toml", "--no-report",
                           "--no-plan"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr, "energy-study")
    assert str(path.relative_to(tmp_path)) in line and "Traceback" not in done.stderr
    assert not marker.exists()
    assert snapshot(tmp_path) == before  # no runs/, no report/, the data as they were


def _official_entry(path: Path) -> dict:
    with open(path, "rb") as handle:  # the test's own fixture: trusted
        return pickle.load(handle, encoding="latin1")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("bytes_keys", [False, True])
def test_an_honest_file_resaved_in_any_protocol_still_loads(tmp_path, protocol, bytes_keys):
    root = tmp_path / "data"
    written = write_cifar10(root)
    path = root / "cifar-10-batches-py" / "test_batch"
    entry = _official_entry(path)
    if bytes_keys:  # as a file read with encoding="bytes" and saved again
        entry = {k.encode(): v for k, v in entry.items()}
    entry[b"empty" if bytes_keys else "empty"] = b""  # protocols 0-2 spell b"" as bytes()
    path.write_bytes(pickle.dumps(entry, protocol=protocol))
    split = load_split(cifar_config(root), train=False)
    data, labels = written["test"]
    assert split.labels.tolist() == labels
    assert torch.equal(split.images, torch.from_numpy(data).reshape(-1, 3, 32, 32))


def _truncated(entry: dict) -> bytes:
    blob = pickle.dumps(entry, protocol=2)
    return blob[: len(blob) // 2]


MALFORMED = {
    "empty": lambda e: b"",
    "text": lambda e: b"airplane,automobile\n",
    "truncated": _truncated,
    "a list": lambda e: pickle.dumps([e["data"], e["labels"]]),
    "no data": lambda e: pickle.dumps({"labels": e["labels"]}),
    "float data": lambda e: pickle.dumps({**e, "data": e["data"].astype(np.float32)}),
    "label out of range": lambda e: pickle.dumps({**e, "labels": [10] * len(e["labels"])}),
    "too few labels": lambda e: pickle.dumps({**e, "labels": e["labels"][:-1]}),
    "bytes(n)": lambda e: b"c__builtin__\nbytes\n(I1000\ntR.",
    "other codec": lambda e: b"c_codecs\nencode\n(Vx\nVzlib\ntR.",
}


@pytest.mark.parametrize("damage", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_cifar_file_is_one_line_naming_it(tmp_path, damage):
    root = tmp_path / "data"
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(damage(_official_entry(path)))
    with pytest.raises(DatasetNotFound) as error:
        load_split(cifar_config(root), train=True)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "published file" in message


def test_published_checksums_are_torchvisions():
    tvd = pytest.importorskip("torchvision.datasets")
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        published = [tuple(pair) for pair in cls.train_list + cls.test_list]
        assert list(DATASETS[name].published_md5) == published


def test_a_split_from_the_published_files_says_so(tmp_path, monkeypatch):
    """With the fixture's own MD5s standing in for the published ones, the source says the
    files were checked; one file changed (re-saved, still honest) and it no longer does."""
    root = tmp_path / "data"
    write_cifar10(root)
    folder = root / "cifar-10-batches-py"
    sums = tuple((p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir()))
    monkeypatch.setitem(DATASETS, "cifar10",
                        dataclasses.replace(DATASETS["cifar10"], published_md5=sums))
    assert load_split(cifar_config(root), train=True).source.endswith("(the published files: MD5 checked)")
    path = folder / "data_batch_4"
    path.write_bytes(pickle.dumps(_official_entry(path), protocol=4))
    assert load_split(cifar_config(root), train=True).source == str(folder)
    assert "MD5" in load_split(cifar_config(root), train=False).source  # test_batch untouched


IDX_DAMAGE = {
    "truncated images": ("train-images-idx3-ubyte",
                         b"\0\0\x08\x03" + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100),
    "not idx": ("train-images-idx3-ubyte", b"<html>rate limited</html>"),
    "too short": ("train-labels-idx1-ubyte", b"\0\0"),
    "not gzip": ("train-images-idx3-ubyte.gz", b"\0\0\x08\x03 plain bytes"),
}


@pytest.mark.parametrize("name, content", list(IDX_DAMAGE.values()), ids=list(IDX_DAMAGE))
def test_a_malformed_fashion_mnist_file_is_one_line_naming_it(tmp_path, name, content):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"  # torchvision's layout: looked at first
    raw.mkdir(parents=True)
    suffix = ".gz" if name.endswith(".gz") else ""
    images = np.zeros((3, 28, 28), np.uint8)
    whole = {"train-images-idx3-ubyte": b"\0\0\x08\x03" + b"".join(
                 v.to_bytes(4, "big") for v in images.shape) + images.tobytes(),
             "train-labels-idx1-ubyte": b"\0\0\x08\x01" + (3).to_bytes(4, "big") + bytes(3)}
    for base, blob in whole.items():
        if suffix:
            import gzip
            blob = gzip.compress(blob)
        (raw / (base + suffix)).write_bytes(blob)
    (raw / name).write_bytes(content)
    config = RunConfig(dataset="fashion_mnist", data_dir=str(tmp_path / "data"), download=False)
    with pytest.raises(DatasetNotFound) as error:
        load_split(config, train=True)
    assert "\n" not in str(error.value) and str(raw / name) in str(error.value)


def test_fashion_mnist_images_and_labels_must_agree(tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(
        b"\0\0\x08\x03" + b"".join(v.to_bytes(4, "big") for v in (3, 28, 28)) + bytes(3 * 784))
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + (2).to_bytes(4, "big") + bytes(2))
    config = RunConfig(dataset="fashion_mnist", data_dir=str(tmp_path / "data"), download=False)
    with pytest.raises(DatasetNotFound, match="do not belong together"):
        load_split(config, train=True)


# ------------------------------------------------------------------------------------------
# B. calibrate and whole_model: one line, nothing written or changed
# ------------------------------------------------------------------------------------------

#: a calibration of two rows (one ReLU, forward and train step) in well under a second
FAST = ["--quick", "--no-zoo", "--per-type", "1", "--types", "ReLU", "--min-window-s", "0.001"]
CALIBRATE = "energy-study"  # `energy-study calibrate`'s one line: "energy-study: error: ..."


def calibrate_main(capsys, *argv) -> tuple[int, str]:
    code = cli.main(["calibrate", *argv])
    return code, capsys.readouterr().err


FOREIGN_FILES = {
    "binary": bytes(range(256)) * 4,
    "foreign header": b"name,score\nalice,3\n",
    "our header, then binary": cal._header().encode() + b"\xff\xfe\x00junk\n",
    "empty": b"",
    "header without its newline": cal._header().strip().encode(),
}


@pytest.mark.parametrize("content", list(FOREIGN_FILES.values()), ids=list(FOREIGN_FILES))
def test_calibrate_never_appends_to_a_file_it_did_not_write(tmp_path, capsys, content):
    out_dir = tmp_path / "c"
    out_dir.mkdir()
    (out_dir / "m.csv").write_bytes(content)
    before = snapshot(tmp_path)
    code, err = calibrate_main(capsys, *FAST, "--machine", "m", "--out-dir", str(out_dir))
    assert code == 2
    assert str(out_dir / "m.csv") in one_error_line(err, CALIBRATE)
    assert snapshot(tmp_path) == before  # the file as it was, nothing beside it


def test_calibrate_resumes_its_own_file_and_cuts_a_half_line(tmp_path, capsys):
    """The control for the refusals above: our own file is appended to and repaired."""
    out_dir = tmp_path / "c"
    code, _ = calibrate_main(capsys, *FAST, "--machine", "m", "--out-dir", str(out_dir))
    path = out_dir / "m.csv"
    text = path.read_text()
    # header + reference + (forward, train_step) x (float32, bfloat16) + reference
    assert code == 0 and text.startswith(cal._header()) and len(text.splitlines()) == 7
    path.write_text(text + "ReLU,half a li")  # a killed write
    code, _ = calibrate_main(capsys, *FAST, "--machine", "m", "--out-dir", str(out_dir))
    assert code == 0 and path.read_text() == text  # cut, nothing measured twice
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.csv"]  # no temporary file left


#: argv -> what the one line must name
BAD_ARGUMENTS = {
    "machine ../x": (["--machine", "../x"], "'../x'"),
    "machine sub/x": (["--machine", "sub/x"], "path separator"),
    "machine /abs": (["--machine", "ABSOLUTE/x"], "path separator"),  # tmp_path/x
    "negative window": (["--min-window-s", "-1"], "min_window_s=-1.0"),
    "zero window": (["--min-window-s", "0"], "min_window_s=0.0"),
    "nan window": (["--min-window-s", "nan"], "min_window_s=nan"),
    "negative seed": (["--seed", "-1"], "seed=-1"),
    "unknown option": (["--bogus"], "--bogus"),
    "not a number": (["--per-type", "many"], "--per-type"),
    "bad range": (["--batch-size", "1"], "--batch-size"),
    "no such device": (["--device", "gpu"], "device='gpu'"),
    "bad device index": (["--device", "cuda:x"], "device='cuda:x'"),
}
if not torch.cuda.is_available():
    BAD_ARGUMENTS["cuda without a GPU"] = (["--device", "cuda"], "device='cuda'")


@pytest.mark.parametrize("argv, named", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_calibrate_mistakes_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch, argv,
                                                          named):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    argv = [a.replace("ABSOLUTE", str(tmp_path)) for a in argv]
    code, err = calibrate_main(capsys, "--quick", "--machine", "m", "--out-dir", "out/c", *argv)
    assert code == 2 and named in one_error_line(err, CALIBRATE) and "usage:" not in err
    assert [p.name for p in tmp_path.rglob("*")] == ["out"]  # nothing made, in or outside out/


def test_a_folder_where_the_calibration_file_goes_is_one_line(tmp_path, capsys):
    (tmp_path / "c" / "m.csv").mkdir(parents=True)
    code, err = calibrate_main(capsys, *FAST, "--machine", "m", "--out-dir", str(tmp_path / "c"))
    assert code == 2 and "is a folder" in one_error_line(err, CALIBRATE)
    assert snapshot(tmp_path) == {}


@pytest.mark.slow
def test_energy_study_calibrate_on_a_binary_file_is_one_line_in_a_real_process(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "m.csv").write_bytes(FOREIGN_FILES["binary"])
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "energy_lib", "calibrate", *FAST, "--machine", "m",
                           "--out-dir", "c"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "m.csv" in one_error_line(done.stderr, CALIBRATE)
    assert snapshot(tmp_path) == before


WHOLE_MODEL = "python -m benchmarks.whole_model"


@pytest.mark.parametrize("argv, named", [
    (["--min-window-s", "-1", "--calibration", "junk.csv"], "--min-window-s=-1.0"),
    (["--min-window-s", "nan", "--calibration", "junk.csv"], "--min-window-s=nan"),
    (["--bogus", "--calibration", "junk.csv"], "--bogus"),
    (["--calibration", "junk.csv"], "junk.csv")])
def test_whole_model_mistakes_are_one_line(tmp_path, capsys, monkeypatch, argv, named):
    from benchmarks import whole_model  # importable from the repository root, where pytest runs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.csv").write_bytes(FOREIGN_FILES["binary"])
    before = snapshot(tmp_path)
    code = whole_model.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and named in one_error_line(err, WHOLE_MODEL) and "usage:" not in err
    assert snapshot(tmp_path) == before and not (tmp_path / "calibration").exists()


# ------------------------------------------------------------------------------------------
# C. The fit cache: no leftovers, no relative cache folder
# ------------------------------------------------------------------------------------------

@pytest.fixture
def small_fit():
    """(fit function, calls made) for a small per-layer fit that takes a fraction of a second."""
    from energy_lib.estimators import regression
    from energy_lib.estimators.layer_data import getzner2023

    table = getzner2023().groupby("layer_type").head(30)
    calls = []

    def fit():
        calls.append(1)
        return regression.fit_table(table, "small", "test machine")
    return fit, calls, table


def test_a_folder_at_the_cache_files_path_leaves_no_temporary_file(tmp_path, monkeypatch, small_fit):
    fit, calls, table = small_fit
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = [b"small table"]
    path = fit_cache.cache_dir() / f"small-{fit_cache.fit_key(data)}.npz"
    path.mkdir(parents=True)
    _, how = fit_cache.cached("small", data, fit)
    second, how_again = fit_cache.cached("small", data, fit)
    assert (how, how_again, len(calls)) == ("fitted", "fitted", 2)  # refitted, each time
    assert list(path.parent.iterdir()) == [path] and list(path.iterdir()) == []  # nothing left
    x = table[table["layer_type"] == "Linear"].head(5)
    expected = fit().models[("Linear", "forward", "float32")].predict(x)[0]
    np.testing.assert_array_equal(second.models[("Linear", "forward", "float32")].predict(x)[0], expected)


def test_the_cache_is_still_written_beside_no_leftovers(tmp_path, monkeypatch, small_fit):
    """The control: a writable cache gets exactly one file, then serves it."""
    fit, calls, _ = small_fit
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fit_cache.cached("small", [b"t"], fit)[1] == "fitted"
    assert fit_cache.cached("small", [b"t"], fit)[1] == "cache" and len(calls) == 1
    assert [p.suffix for p in fit_cache.cache_dir().iterdir()] == [".npz"]


@pytest.mark.parametrize("value", ["relative/dir", "cache", "./c", ""])
def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch, value):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert fit_cache.cache_dir() == tmp_path / "home" / ".cache" / "energy_lib" / "fits"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "abs"))
    assert fit_cache.cache_dir() == tmp_path / "abs" / "energy_lib" / "fits"
