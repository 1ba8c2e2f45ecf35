"""Shared fixtures of the test suite (kept small on purpose).

* ``datasets_dir``: the real datasets in ``../shared/datasets`` beside the repository root;
  a test that asks for it is skipped, with the path in the message, where the folder is absent.
* ``rng``: a seeded ``numpy.random.Generator``, fresh for every test.
* ``one_torch_thread``: one PyTorch intra-op thread for the test (small tensors; the suite runs
  beside others under ``pytest -n``); torch test modules use it with ``pytest.mark.usefixtures``.
* Tests marked ``@pytest.mark.cuda`` are skipped, with a reason, where PyTorch sees no CUDA device.
* The conformance suite's sample counts are printed at the end of the session.
* Hypothesis profiles for the property-based (fuzz) tests, both derandomised so a run is
  reproducible: ``softmaxkit`` (loaded here; a small budget, seconds in all) and ``fuzz`` (the
  large budget of ``make fuzz``, chosen with ``--hypothesis-profile fuzz``). Tests that cost more
  per example take a fraction of the budget (``tests/_fuzz.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = REPO_ROOT.parent / "shared" / "datasets"

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test extra brings it; without it only the fuzz tests cannot run
    pass
else:
    _FUZZ_SETTINGS = dict(
        derandomize=True,  # the examples follow from each test's name: the same in every run, on every machine
        deadline=None,  # timing belongs to the benchmarks; the suite runs beside others under pytest -n
        database=None,  # nothing written into the work tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.register_profile("softmaxkit", max_examples=20, **_FUZZ_SETTINGS)
    settings.register_profile("fuzz", max_examples=600, **_FUZZ_SETTINGS)
    settings.load_profile("softmaxkit")  # --hypothesis-profile, read later by hypothesis' plugin, wins


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The folder of real datasets (``../shared/datasets`` from the repository root)."""
    if not DATASETS_DIR.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS_DIR} (they live beside the repository, not in it)")
    return DATASETS_DIR


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261128)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: these tensors are small, and the suite runs beside others (pytest -n)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if cuda_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device; PyTorch sees none on this machine")
        for item in cuda_items:
            item.add_marker(skip)


# The conformance suite (tests/test_conformance.py) records how many of PyTorch's own samples each
# test fed through (``record_property("conformance_samples", ...)``); the totals are printed at the
# end of the session, from the controller also under pytest-xdist (user properties travel with the reports).
_CONFORMANCE: list = []
_VARIANTS: list = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        _CONFORMANCE.extend(value for key, value in report.user_properties if key == "conformance_samples")
        _VARIANTS.extend(value for key, value in report.user_properties if key == "conformance_variants")


def pytest_terminal_summary(terminalreporter):
    if not _CONFORMANCE:
        return
    totals: dict = {}
    for _source, _count, outcomes in _CONFORMANCE:
        for outcome, n in outcomes.items():
            totals[outcome] = totals.get(outcome, 0) + n
    total = sum(count for _, count, _ in _CONFORMANCE)
    detail = ", ".join(f"{n} {outcome}" for outcome, n in sorted(totals.items(), key=lambda item: -item[1]))
    terminalreporter.write_line(
        f"conformance: {total} PyTorch OpInfo/ModuleInfo samples checked ({detail}); "
        f"{sum(_VARIANTS)} deliberate differences re-checked as agreeing variants (|weight|, target detached)"
    )
    for source, count, outcomes in sorted(_CONFORMANCE):
        terminalreporter.write_line(f"  {source}: {count} ({', '.join(f'{n} {k}' for k, n in outcomes.items())})")
