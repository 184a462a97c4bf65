"""Bad input, as an adversarial user gives it: every case exits 2
with exactly one line on stderr naming the key or file, no traceback, nothing created under
results_dir, in bounded time.

Most cases run in-process through `run_search.main` (a subprocess costs 4-9 s of torch
import on a loaded machine); `test_subprocess_*` run the nastiest ones as a real process.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import run_search

REPO = Path(__file__).resolve().parents[1]
HYBRID = yaml.safe_load((REPO / "spaces" / "hybrid.yaml").read_text())
TIME_LIMIT_S = 30  # per in-process case; each takes well under a second when the data is small


# ----------------------------------------------------------------- files the cases point at
def spec_file(tmp: Path, text: str | bytes | dict, name: str = "bad") -> str:
    path = tmp / f"{name}.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    return str(path)


def hybrid_with(section: str, key: str, value) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(HYBRID))
    spec.setdefault(section, {})[key] = value
    return spec


def stage_with(i: int, **rule) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(HYBRID))
    spec["stages"][i].update(rule)
    return spec


ALIAS_BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                       + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
                       + ["description: *i", "stages: []"])


def good_arrays(n_per_class: int = 3, size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), n_per_class)
    return {"x_train": rng.integers(0, 256, (len(y), size, size, 3), dtype=np.uint8), "y_train": y,
            "x_test": rng.integers(0, 256, (10, size, size, 3), dtype=np.uint8), "y_test": np.arange(10)}


def npz(tmp: Path, name: str = "data", **changes) -> str:
    arrays = good_arrays() | changes
    path = tmp / f"{name}.npz"
    np.savez(path, **arrays)
    return str(path)


def raw_npz(tmp: Path, content: bytes, name: str = "data") -> str:
    path = tmp / f"{name}.npz"
    path.write_bytes(content)
    return str(path)


def bit_flipped(tmp: Path) -> str:
    path = Path(npz(tmp, "good"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside x_train's bytes: the zip's CRC no longer matches
    return raw_npz(tmp, bytes(data), "flipped")


def header_bomb(tmp: Path) -> str:
    """An npz whose x_train header claims 10^12 images but holds none."""
    import io
    import zipfile
    path = tmp / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in good_arrays().items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array)
            content = buffer.getvalue()
            if name == "x_train":
                header = {"descr": "|u1", "fortran_order": False, "shape": (10 ** 12, 32, 32, 3)}
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                content = buffer.getvalue()
            archive.writestr(f"{name}.npy", content)
    return str(path)


def batches(tmp: Path, train: object = None, test: object = None) -> str:
    """A cifar-10-batches-py folder; `train` replaces data_batch_1's dict when given."""
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    good = {b"data": rng.integers(0, 256, (30, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(30)]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(good if train is None else train, protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(good if test is None else test, protocol=2))
    return str(folder)


def list_bomb() -> list:
    """A list of 2^40 items in a few hundred bytes of pickle (shared references)."""
    item: list = [0]
    for _ in range(40):
        item = [item, item]
    return item


# ----------------------------------------------------------------- the table
# (id, extra arguments given tmp_path, text the single stderr line must contain)
SETTINGS_CASES = [
    # our words, never OmegaConf's; suggestions through case and aliases
    ("objectives-not-a-list", lambda t: ["search.objectives=accuracy"],
     "search.objectives='accuracy': expected a list in brackets"),
    ("n-trials-a-word", lambda t: ["search.n_trials=three"], "search.n_trials='three': expected a whole number"),
    ("flag-a-word", lambda t: ["search.enqueue_references=maybe"], "expected true or false"),
    ("sampler-upper-case", lambda t: ["search.sampler=TPE"], "(did you mean 'tpe'?)"),
    ("dtype-alias", lambda t: ["profile.dtype=fp16"], "(did you mean 'float16'?)"),
    ("preset-upper-case", lambda t: ["proxy.preset=Smoke", "proxy.epochs=1"], "(did you mean 'smoke'?)"),
    ("key-given-twice", lambda t: ["proxy.epochs=2", "proxy.epochs=3"], "proxy.epochs: given twice"),
    ("space-given-twice", lambda t: ["space=hybrid", "space=paper"], "space: given twice"),
    ("sweep-second-value-bad", lambda t: ["space=paper,paperr"], "no space named 'paperr'"),
    ("profile-device-cuda-without-colon", lambda t: ["profile.device=cuda1"], "choose auto, cpu, cuda or cuda:N"),
    # path escapes
    ("study-name-escape", lambda t: ["search.study_name=../../escape_study"], "search.study_name="),
    ("study-name-slash", lambda t: ["search.study_name=a/b"], "search.study_name="),
    ("study-name-control", lambda t: ["search.study_name=a\x01b"], "search.study_name="),
    ("study-name-306-chars", lambda t: ["search.study_name=" + "x" * 306], "search.study_name="),
    ("study-name-dotdot", lambda t: ["search.study_name=.."], "search.study_name="),
    # settings that used to pass, then crash or hang
    ("max-macs-0", lambda t: ["budget.max_macs=0"], "budget.max_macs="),
    ("max-latency-negative", lambda t: ["budget.max_latency_ms=-1"], "budget.max_latency_ms="),
    ("max-params-inf", lambda t: ["budget.max_params=inf"], "budget.max_params="),
    ("storage-garbage", lambda t: ["search.storage=garbage"], "search.storage="),
    ("storage-unknown-dialect", lambda t: ["search.storage=nosuchdb://x/y"], "unknown database kind"),
    ("storage-sqlite-missing-folder", lambda t: [f"search.storage=sqlite:///{t}/nope/s.db"], "does not exist"),
    ("results-dir-proc", lambda t: ["results_dir=/proc/x"], "results_dir="),
    ("results-dir-is-a-file", lambda t: [f"results_dir={REPO / 'run_search.py'}"], "is a file"),
    ("profile-device-bogus", lambda t: ["profile.device=bogus"], "profile.device="),
    ("profile-min-iters-0", lambda t: ["profile.min_iters=0"], "profile.min_iters="),
    ("profile-cache-proc", lambda t: ["profile.cache=/proc/x"], "profile.cache="),
    ("ray-num-cpus-negative", lambda t: ["ray.num_cpus=-2"], "ray.num_cpus="),
    ("mapping-without-space", lambda t: ["profile.resources={deploy_gpu:1}"], "space after each colon"),
    ("ray-max-concurrent-negative", lambda t: ["ray.max_concurrent=-1"], "ray.max_concurrent="),
    ("ray-address-refused", lambda t: ["executor=ray", "ray.address=127.0.0.1:1"], "ray.address="),
    ("proxy-epochs-0", lambda t: ["proxy.epochs=0"], "proxy.epochs="),
    ("proxy-preset-bogus", lambda t: ["proxy.preset=bogus"], "proxy.preset="),
    ("proxy-device-tpu", lambda t: ["proxy.device=tpu"], "proxy.device="),
    ("proxy-lr-nan", lambda t: ["proxy.lr=nan"], "proxy.lr="),
    ("search-seed-negative", lambda t: ["search.seed=-1"], "search.seed="),
    # our own
    ("proxy-preset-typo-hint", lambda t: ["proxy.preset=smok"], "did you mean 'smoke'"),
    ("profile-min-time-0", lambda t: ["profile.min_time_s=0"], "profile.min_time_s="),
    ("ray-trial-gpus-negative", lambda t: ["ray.trial_gpus=-1"], "ray.trial_gpus="),
    ("ray-trial-cpus-0", lambda t: ["ray.trial_cpus=0"], "ray.trial_cpus="),
    ("proxy-train-size-0", lambda t: ["proxy.train_size=0"], "proxy.train_size="),
    ("proxy-batch-size-0", lambda t: ["proxy.batch_size=0"], "proxy.batch_size="),
    ("proxy-val-size-0", lambda t: ["proxy.val_size=0"], "proxy.val_size="),
    ("proxy-score-unknown", lambda t: ["proxy.score=loss"], "proxy.score='loss': choose one of accuracy"),
    ("search-seed-too-big", lambda t: [f"search.seed={2 ** 40}"], "search.seed="),
    ("n-trials-0", lambda t: ["search.n_trials=0"], "search.n_trials="),
    ("profile-cache-is-a-folder", lambda t: [f"profile.cache={t}"], "profile.cache="),
    ("profile-cache-missing-folder", lambda t: [f"profile.cache={t}/no/such/cache.sqlite"], "profile.cache="),
    ("unknown-key-hint", lambda t: ["proxy.epoch=3"], "did you mean 'proxy.epochs'"),
    ("huge-unknown-key-bounded", lambda t: ["k" * 100_000 + "=1"], "unknown key"),
    ("no-equals-sign", lambda t: ["dry_run"], "expected key=value"),
    ("wrong-type", lambda t: ["search.n_trials=many"], "search.n_trials"),
    ("sweep-one-study-name", lambda t: ["space=hybrid,paper", "search.study_name=same"], "search.study_name="),
    ("sweep-empty-value", lambda t: ["space=hybrid,"], "space="),
    ("sweep-repeated-value", lambda t: ["space=paper,paper"], "space="),
    ("config-missing-file", lambda t: [f"config={t}/nope.yaml"], "config="),
    ("config-not-a-mapping", lambda t: [f"config={spec_file(t, '- 1', 'cfg')}"], "config="),
    ("config-unknown-key", lambda t: [f"config={spec_file(t, 'search: {n_trialz: 3}', 'cfg')}"], "n_trialz"),
    ("config-alias-bomb", lambda t: [f"config={spec_file(t, ALIAS_BOMB, 'cfg')}"], "config="),
    ("data-name-unknown", lambda t: ["data.name=mnist"], "data.name"),
    ("results-dir-too-long", lambda t: [f"results_dir={t}/{'r' * 300}"], "too long"),
    ("results-dir-dangling-link", lambda t: [f"results_dir={_dangling(t)}/sub"], "dangling"),
    ("storage-sqlite-too-long", lambda t: [f"search.storage=sqlite:///{t}/{'s' * 300}/x.db"], "search.storage="),
    ("space-name-too-long", lambda t: ["space=" + "x" * 5000], "File name too long"),
    ("space-path-too-long", lambda t: [f"space={t}/{'x' * 5000}.yaml"], "File name too long"),
    ("space-is-a-folder", lambda t: [f"space={t}/"], "not a regular file"),
    ("space-is-dev-zero", lambda t: ["space=/dev/zero"], "/dev/zero: not a regular file"),
    ("space-is-a-fifo", lambda t: [os.mkfifo(t / "fifo.yaml"), f"space={t}/fifo.yaml"][1:], "fifo.yaml: not a regular file"),
    ("value-with-alias", lambda t: ["search.objectives=[&a accuracy, *a]"], "search.objectives"),
]

SPEC_CASES = [
    # spec denial of service
    ("alias-bomb", lambda t: ALIAS_BOMB, "are not allowed"),
    ("depth-1000000", lambda t: stage_with(1, depth=1_000_000), "stages[1].depth: 1000000 is above the limit of 16"),
    ("depth-200", lambda t: stage_with(2, depth=200), "stages[2].depth: 200 is above"),
    ("expansion-inf", lambda t: hybrid_with("network", "expansion", float("inf")), "network.expansion"),
    ("mlp-ratio-1e300", lambda t: hybrid_with("network", "mlp_ratio", 1e300), "network.mlp_ratio"),
    ("width-1e30-float", lambda t: stage_with(3, width=1e30), "stages[3].width"),
    ("width-1e30-int", lambda t: stage_with(3, width=10 ** 30), "stages[3].width"),
    ("nested-20000", lambda t: "stages: " + "[" * 20_000 + "]" * 20_000, "nested deeper"),
    ("duplicate-key", lambda t: "description: a\ndescription: b\n", "duplicate key description"),
    # our own
    ("params-estimate", lambda t: {**stage_with(3, width=8192, depth=16), "network": {"expansion": 16}},
     "parameters, above the limit"),
    ("anchor-without-alias", lambda t: "description: &d text\n", "anchors"),
    ("huge-spec-file", lambda t: "description: '" + "x" * (1 << 21) + "'\n", "larger than the limit"),
    ("huge-string-value-bounded", lambda t: hybrid_with("target", "dtype", "f" * 100_000), "target.dtype"),
    ("target-img-size-huge", lambda t: hybrid_with("target", "img_size", 100_000), "target.img_size"),
    ("drop-path-above-1", lambda t: hybrid_with("network", "drop_path_rate", 2.0), "network.drop_path_rate"),
    ("layout-stage-too-long", lambda t: {"layouts": ["CC-" + "C" * 100 + "-CCTT-CTTT"]}, "longer than 16"),
    ("not-utf8", lambda t: b"description: caf\xe9", "UTF-8"),
]

DATA_CASES = [
    # data
    ("npz-truncated", lambda t: raw_npz(t, Path(npz(t, "good")).read_bytes()[:300]), "data.npz"),
    ("npz-bit-flipped", bit_flipped, "flipped.npz"),
    ("npz-garbage", lambda t: raw_npz(t, os.urandom(4096)), "data.npz"),
    ("npz-empty", lambda t: raw_npz(t, b""), "data.npz"),
    ("npz-object-array", lambda t: _object_npz(t), "y_train"),
    ("npz-header-bomb", header_bomb, "x_train"),
    ("labels-shorter", lambda t: npz(t, y_train=np.repeat(np.arange(10), 3)[:-1]), "y_train"),
    ("labels-float", lambda t: npz(t, y_train=np.repeat(np.arange(10), 3).astype(np.float32)), "y_train"),
    ("images-2x2", lambda t: npz(t, x_train=np.zeros((30, 2, 2, 3), np.uint8)), "x_train"),
    ("labels-out-of-range", lambda t: npz(t, y_train=np.repeat(np.arange(10), 3) * 5), "y_train"),
    ("batch-misshapen", lambda t: batches(t, train={b"data": np.zeros((30, 100), np.uint8), b"labels": [0] * 30}),
     "data_batch_1: data"),
    ("batch-memory-bomb", lambda t: batches(t, train={b"data": np.zeros((30, 3072), np.uint8), b"labels": list_bomb()}),
     "data_batch_1: labels"),
    # our own
    ("npz-missing-array", lambda t: _npz_without(t, "y_test"), "missing arrays"),
    ("images-float", lambda t: npz(t, x_train=np.zeros((30, 8, 8, 3), np.float32)), "x_train"),
    ("images-shape-as-in-the-file", lambda t: npz(t, x_train=np.zeros((30, 8, 9, 3), np.float32)),
     "expected uint8 images N x H x W x C with 1 or 3 channels, got float32 (30, 8, 9, 3)"),
    ("one-image-per-class", lambda t: npz(t, x_train=good_arrays()["x_train"][:10],
                                          y_train=np.arange(10)), "y_train: class"),
    ("test-labels-negative", lambda t: npz(t, y_test=-np.arange(10)), "y_test"),
    ("batch-not-a-dict", lambda t: batches(t, train=[1, 2, 3]), "data_batch_1"),
    ("batch-runs-code", lambda t: _evil_batches(t), "data_batch_1"),
    ("data-root-missing", lambda t: str(t / "nothing.npz"), "not found"),
    ("data-root-too-long", lambda t: str(t / ("d" * 300 + ".npz")), "not found"),
]


def image_folder(tmp: Path, train: dict[str, int], test: dict[str, int] | None = None,
                 broken: str | None = None) -> Path:
    """`tmp/images/train/<class>/<i>.png` (and `test/` when given) of small real PNGs;
    `broken`: a class whose last image is cut to half its bytes."""
    from PIL import Image

    root = tmp / "images"
    rng = np.random.default_rng(0)
    for split, classes in {"train": train, "test": test or {}}.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    if broken is not None:
        png = root / "train" / broken / f"{train[broken] - 1}.png"
        png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return root


IMAGE_FOLDER_CASES = [
    ("corrupt-png", lambda t: image_folder(t, {"cat": 3, "dog": 3}, broken="dog"),
     "train/dog/2.png: not a readable image ("),
    ("not-an-image", lambda t: [image_folder(t, {"cat": 3, "dog": 3}),
                                (t / "images" / "train" / "cat" / "9.jpg").write_bytes(b"not a jpeg")][0],
     "train/cat/9.jpg: not a readable image ("),
    ("one-class", lambda t: image_folder(t, {"cat": 5}), "one class sub-folder ('cat'); a search needs at least 2"),
    ("one-image-in-a-class", lambda t: image_folder(t, {"cat": 3, "dog": 1}), "train/dog: 1 images, need at least 2"),
    ("test-split-lacks-a-class", lambda t: image_folder(t, {"cat": 3, "dog": 3}, test={"cat": 2}),
     "test/dog: 0 images, need at least 2"),
]


def _dangling(tmp: Path) -> Path:
    link = tmp / "gone"
    link.symlink_to(tmp / "nowhere")
    return link


def _object_npz(tmp: Path) -> str:
    arrays = good_arrays() | {"y_train": np.array([{"label": i} for i in range(30)], dtype=object)}
    path = tmp / "data.npz"
    np.savez(path, **arrays)  # savez pickles the object array; the loader must refuse it
    return str(path)


def _npz_without(tmp: Path, name: str) -> str:
    path = tmp / "data.npz"
    np.savez(path, **{k: v for k, v in good_arrays().items() if k != name})
    return str(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ascan-pwned",))


def _evil_batches(tmp: Path) -> str:
    return batches(tmp, train={b"data": _Evil(), b"labels": [0]})


# ----------------------------------------------------------------- the checks
@pytest.fixture(autouse=True)
def never_search(monkeypatch):
    """A case that slips through validation must fail fast here, not run a search."""
    from search.app.campaign import Campaign

    def refuse(self):
        raise AssertionError("bad input reached Campaign.run")
    monkeypatch.setattr(Campaign, "run", refuse)


def assert_one_line_exit_2(tmp_path: Path, args: list[str], expected: str, capsys) -> str:
    results = tmp_path / "results"
    before = sorted(tmp_path.rglob("*"))
    started = time.monotonic()
    given = {arg.split("=", 1)[0] for arg in args}  # a key may be given once: the case's value replaces ours
    defaults = {"space": "paper", "proxy.preset": "smoke", "executor": "inline", "results_dir": str(results)}
    code = run_search.main([f"{k}={v}" for k, v in defaults.items() if k not in given] + args)
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and len(err) <= 520, err  # bounded, whatever the input
    assert not any(word in err for word in ("ListConfig", "AnyNode", "converted to", "full_key")), err
    assert not results.exists() and sorted(tmp_path.rglob("*")) == before
    assert elapsed < TIME_LIMIT_S
    return err


@pytest.mark.parametrize("args,expected", [c[1:] for c in SETTINGS_CASES], ids=[c[0] for c in SETTINGS_CASES])
def test_bad_setting(tmp_path, capsys, args, expected):
    assert_one_line_exit_2(tmp_path, args(tmp_path), expected, capsys)


@pytest.mark.parametrize("spec,expected", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_bad_spec(tmp_path, capsys, spec, expected):
    path = spec_file(tmp_path, spec(tmp_path))
    err = assert_one_line_exit_2(tmp_path, [f"space={path}"], f"{path}: ", capsys)
    assert expected in err, err


@pytest.mark.parametrize("make,expected", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data(tmp_path, capsys, make, expected, monkeypatch):
    monkeypatch.delenv("ASCAN_DATA", raising=False)
    root = make(tmp_path)
    assert_one_line_exit_2(tmp_path, [f"data.root={root}"], expected, capsys)
    assert not Path("/tmp/ascan-pwned").exists()


@pytest.mark.parametrize("make,expected", [c[1:] for c in IMAGE_FOLDER_CASES], ids=[c[0] for c in IMAGE_FOLDER_CASES])
def test_bad_image_folder(tmp_path, capsys, make, expected):
    """Every image is decoded when the folder is opened: a broken one is named with its path,
    never a PIL traceback mid-search; a folder that cannot make a meaningful search is refused."""
    root = make(tmp_path)
    assert_one_line_exit_2(tmp_path, ["data.name=imagefolder", f"data.root={root}"], expected, capsys)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_space_in_ascan_spaces_that_is_not_a_regular_file_is_named(tmp_path, capsys, monkeypatch, kind):
    """A FIFO (reading would block) or a link to /dev/zero (reading would never end) in a
    folder of $ASCAN_SPACES: named with its own path as not a regular file, never "no space
    named 'fifo' (did you mean 'fifo'?)"."""
    folder = tmp_path / "spaces"
    folder.mkdir()
    bad = folder / f"{kind}.yaml"
    os.mkfifo(bad) if kind == "fifo" else bad.symlink_to("/dev/zero")
    monkeypatch.setenv("ASCAN_SPACES", str(folder))
    err = assert_one_line_exit_2(tmp_path, [f"space={kind}"], f"{bad}: not a regular file", capsys)
    assert "did you mean" not in err


def test_cuda_device_refused_when_absent(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_exit_2(tmp_path, ["profile.device=cuda"], "CUDA is not available", capsys)
    assert_one_line_exit_2(tmp_path, ["proxy.device=cuda:0"], "CUDA is not available", capsys)


# ----------------------------------------------------------------- as real processes
# Each process imports torch: 4-15 s on a loaded 2-core machine, so these are slow.
SUBPROCESS_CASES = [
    ("study-name-escape", lambda t: ["search.study_name=../../escape_study"], "search.study_name="),
    ("alias-bomb", lambda t: [f"space={spec_file(t, ALIAS_BOMB)}"], "are not allowed"),
    ("npz-garbage", lambda t: [f"data.root={raw_npz(t, os.urandom(4096))}"], "data.npz"),
    ("corrupt-png", lambda t: ["data.name=imagefolder",
                               f"data.root={image_folder(t, {'cat': 3, 'dog': 3}, broken='cat')}"],
     "train/cat/2.png: not a readable image"),
    ("nested-20000", lambda t: [f"space={spec_file(t, 'stages: ' + '[' * 20_000)}"], "nested deeper"),
    ("depth-1000000", lambda t: [f"space={spec_file(t, stage_with(1, depth=1_000_000))}"], "above the limit"),
    ("storage-garbage", lambda t: ["search.storage=garbage"], "search.storage="),
    ("proxy-score-typo", lambda t: ["proxy.score=tse_em"], "proxy.score='tse_em': choose one of"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,args,expected", SUBPROCESS_CASES)
def test_subprocess(tmp_path, name, args, expected):
    results = tmp_path / "results"
    args = args(tmp_path)  # writes the case's own files first
    before = sorted(tmp_path.rglob("*"))
    space = [] if any(a.startswith("space=") for a in args) else ["space=paper"]
    run = subprocess.run([sys.executable, "run_search.py", *space, "proxy.preset=smoke", "executor=inline",
                          f"results_dir={results}", *args],
                         capture_output=True, text=True, cwd=REPO, timeout=50,
                         env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and expected in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not results.exists() and sorted(tmp_path.rglob("*")) == before
    assert not (REPO.parent / "escape_study").exists() and not (tmp_path.parent / "escape_study").exists()


def test_read_only_results_dir(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mount.returncode:
        pytest.skip("cannot mount a read-only file system here (needs root)")
    try:
        code = run_search.main(["space=paper", f"results_dir={folder}/results"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Read-only file system" in err and "results_dir=" in err, err
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# ----------------------------------------------------------------- the same checks elsewhere
def test_python_api_checks_like_the_command_line_and_dry_run_creates_nothing(tmp_path, capsys):
    from search import run
    from search.app.settings import SettingsError

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(SettingsError, match="results_dir=.*is a file"):
        run("paper", results_dir=str(a_file), executor="inline")
    with pytest.raises(SettingsError, match="did you mean 'float16'"):
        run("paper", results_dir=str(tmp_path / "r"), overrides={"profile.dtype": "fp16"})
    before = sorted(tmp_path.rglob("*"))
    assert run("paper", results_dir=str(tmp_path / "r"), executor="inline", overrides={"dry_run": True}) is None
    assert "candidates" in capsys.readouterr().out  # the space's description, printed
    assert sorted(tmp_path.rglob("*")) == before  # no driver.lock, no cache, no study


def test_findings_names_the_missing_study_folder_not_a_flag(tmp_path, capsys):
    from search.report.findings import main

    missing = tmp_path / "no" / "such" / "study"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "--out" not in err, err
