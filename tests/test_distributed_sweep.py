"""A sweep shared between processes equals the one-process sweep: CSV byte for byte (torchrun), or every id
and flag exactly and every float within float32 rounding (accelerate launch, whose processes start with
one math thread: see `same_but_rounding`).

Launched for real (torchrun, accelerate launch: two CPU processes joined over gloo, `slow`), and
in threads of this process standing in for them (the batches each takes, the gathering on rank 0,
the cache, a process that disagrees)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spade_viz.cli import main
from spade_viz.data import load_dataset
from spade_viz.errors import InputError
from spade_viz.sweep import SweepSettings, load_cached, run_sweep, sweep_cache_key
from spade_viz.sweep.distributed import Processes, launch_place
from test_sweep import toy_rows, write_dataset

pytestmark = pytest.mark.usefixtures("isolated_cache")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def toy_file(tmp_path) -> Path:
    """Nine examples (two with choices): an odd count, so two processes get unequal shares."""
    return write_dataset(tmp_path / "toy.jsonl", toy_rows())


# ------------------------------------------------------------------------------------------------
# Launched for real
# ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(launcher: list[str], sweep_args: list[str], cache: Path) -> str:
    """`python -m <launcher> -m spade_viz sweep <sweep_args>` with two processes; its stdout."""
    env = {**os.environ, "SPADE_VIZ_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", *launcher, "-m", "spade_viz", "sweep", *sweep_args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "error" not in run.stderr.lower(), run.stderr[-3000:]
    assert run.stdout.count("sweep of 'toy'") == 1 and run.stdout.count("wrote ") == 1  # rank 0 alone prints
    return run.stdout


def same_but_rounding(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two sweeps' tables: every id, token and flag the same, every float within float32 rounding. (A process
    launched with OMP_NUM_THREADS=1 can round a reduction 1 ulp away from this one on some CPUs, seen on an
    AMD EPYC, even with one thread here too: the math library picks its kernels at start-up.)"""
    floats = list(a.select_dtypes("float").columns)
    pd.testing.assert_frame_equal(a.drop(columns=floats), b.drop(columns=floats), check_exact=True)
    pd.testing.assert_frame_equal(a[floats], b[floats], check_exact=False, rtol=1e-6, atol=1e-6)


def one_process(sweep_args: list[str], capsys) -> None:
    assert main(["sweep", *sweep_args]) == 0
    capsys.readouterr()


def same_meta_but_timings(a: Path, b: Path) -> None:
    meta_a, meta_b = (json.loads(p.with_suffix(".meta.json").read_text()) for p in (a, b))
    for meta in (meta_a, meta_b):
        assert meta.pop("timings_s")["total"] > 0
    assert meta_a == meta_b


@pytest.mark.slow
def test_torchrun_sweep_equals_one_process(tiny_folders, toy_file, tmp_path, isolated_cache, capsys):
    """torchrun, no cache, linear SPADE cross-fitted on the whole dataset: the same CSV bytes."""
    common = ["--model", str(tiny_folders["llama"]), "--dataset", str(toy_file), "--batch-size", "2",
              "--linear-spade", "crossfit", "--no-cache"]  # 5 batches: 3 in one process, 2 in the other
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one_process([*common, "--out", str(one)], capsys)
    printed = launch(["torch.distributed.run", "--standalone", "--nproc-per-node", "2"], [*common, "--out", str(two)],
                     isolated_cache)
    assert "5-fold cross-fitting" in printed and "9 examples" in printed
    assert two.read_bytes() == one.read_bytes()
    same_meta_but_timings(one, two)
    assert not list(isolated_cache.glob("sweeps/*.json"))  # --no-cache: nothing stored


@pytest.mark.slow
def test_accelerate_launch_stores_the_cache_entry_and_exit_curve_reads_its_csv(tiny_folders, toy_file, tmp_path,
                                                                               isolated_cache, capsys):
    """accelerate launch, with the cache (linear SPADE: auto, so cross-fitted): the CSV, the stored
    entry and the exit curve are those of one process."""
    import spade_viz as sv

    launched, alone_csv = tmp_path / "accelerate.csv", tmp_path / "alone.csv"
    printed = launch(["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                      "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())],
                     ["--model", str(tiny_folders["llama"]), "--dataset", str(toy_file), "--batch-size", "3",
                      "--out", str(launched)], isolated_cache)  # 3 batches: 2 in one process, 1 in the other
    assert "from the cache" not in printed
    lm = sv.load_model(str(tiny_folders["llama"]))
    toy, settings = load_dataset(toy_file), SweepSettings(batch_size=3)
    stored = load_cached(sweep_cache_key(lm, toy, settings), lm)
    alone = run_sweep(lm, toy, settings, use_cache=False)
    assert stored is not None and stored.linear_spade_source.startswith("5-fold")
    same_but_rounding(stored.frame(), alone.frame())
    alone.to_csv(alone_csv)
    same_but_rounding(pd.read_csv(launched), pd.read_csv(alone_csv))

    curves = []
    for csv in (launched, alone_csv):
        assert main(["exit-curve", "--sweep", str(csv), "--json"]) == 0
        curves.append(json.loads(capsys.readouterr().out))
    assert curves[0] == curves[1] and curves[0]["curve"]


# ------------------------------------------------------------------------------------------------
# Threads standing in for processes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InThreads(Processes):
    """Processes played by threads of this one: each collective through a shared list and a barrier."""

    hub: tuple = ()  # (threading.Barrier, one slot per rank)

    def all_gather(self, obj) -> list:
        barrier, slots = self.hub
        slots[self.rank] = obj
        barrier.wait()
        gathered = list(slots)
        barrier.wait()  # nobody overwrites a slot before everyone has read them all
        return gathered

    def gather(self, obj) -> list | None:
        gathered = self.all_gather(obj)
        return gathered if self.rank == 0 else None


def shared(lm, dataset, size: int, settings_of, **kwargs) -> list:
    """run_sweep in `size` threads playing processes; each one's result, or the exception it raised."""
    hub = (threading.Barrier(size, timeout=120), [None] * size)

    def one(rank):
        try:
            return run_sweep(lm, dataset, settings_of(rank), processes=InThreads(rank, size, hub=hub), **kwargs)
        except InputError as err:
            return err

    with ThreadPoolExecutor(size) as pool:
        return list(pool.map(one, range(size)))


def assert_identical(a, b) -> None:
    assert a.example_ids == b.example_ids and a.decoders == b.decoders and a.vocab == b.vocab
    np.testing.assert_array_equal(a.final_ids, b.final_ids)
    for field in ("top1", "top1_vocab", "entropy", "entropy_vocab"):
        for name in a.decoders:
            np.testing.assert_array_equal(getattr(a, field)[name], getattr(b, field)[name], err_msg=f"{field} {name}")


@pytest.mark.parametrize("size, batch_size", [(2, 2), (3, 4), (4, 5)])  # 5, 3 and 2 batches: uneven, one idle
def test_processes_share_batches_and_rank_0_returns_the_one_process_sweep(tiny_lm, toy_file, size, batch_size):
    toy = load_dataset(toy_file)
    settings = SweepSettings(batch_size=batch_size, linear_spade="crossfit", folds=3)
    alone = run_sweep(tiny_lm, toy, settings, use_cache=False)
    results = shared(tiny_lm, toy, size, lambda rank: settings, use_cache=False)
    assert results[1:] == [None] * (size - 1)
    assert_identical(results[0], alone)
    assert results[0].linear_spade_source == alone.linear_spade_source


def test_rank_0_stores_the_cache_and_a_hit_runs_no_batch(tiny_lm, toy_file, monkeypatch):
    toy, settings = load_dataset(toy_file), SweepSettings(batch_size=2)
    first = shared(tiny_lm, toy, 2, lambda rank: settings)
    assert not first[0].from_cache and first[1] is None
    from spade_viz.sweep import passes

    monkeypatch.setattr(passes, "batch_answer_rows", lambda *a, **k: pytest.fail("a cache hit ran a batch"))
    again = shared(tiny_lm, toy, 2, lambda rank: settings)
    assert again[0].from_cache and again[1] is None
    assert_identical(again[0], first[0])


def test_processes_that_disagree_all_stop_with_one_reason(tiny_lm, toy_file):
    toy = load_dataset(toy_file)
    results = shared(tiny_lm, toy, 2, lambda rank: SweepSettings(folds=2 + rank), use_cache=False)
    assert all(isinstance(r, InputError) and "process 1" in str(r) for r in results), results


# ------------------------------------------------------------------------------------------------
# Where a process stands, as launchers say it
# ------------------------------------------------------------------------------------------------


def test_launch_place_reads_torchrun_and_mpi_and_refuses_half_a_launch():
    master = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert launch_place({}) is None
    assert launch_place({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None  # one process: alone
    assert launch_place({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", **master}) == (3, 4, 1)
    assert launch_place({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
                         "OMPI_COMM_WORLD_LOCAL_RANK": "1", **master}) == (1, 2, 1)  # accelerate's --cpu via mpirun
    with pytest.raises(InputError, match="MASTER_ADDR, MASTER_PORT are not set"):
        launch_place({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(InputError, match="not a whole number"):
        launch_place({"WORLD_SIZE": "two", **master})
    with pytest.raises(InputError, match="RANK is 2 but WORLD_SIZE is 2"):
        launch_place({"WORLD_SIZE": "2", "RANK": "2", **master})
