"""Identity of trials already stored: the config hash of every shipped service at its
defaults stays what it was when identity by value landed (and before the workload keys,
the driver settings that are off by default — ``Driver.inactive_keys`` — and the keys of
docs/workloads.md existed). A change here means every stored trial of that service stops
matching `resume` and `compare`: it must be deliberate, and said in the release notes.
"""

from __future__ import annotations

import pytest

from benchflow.config import compose_trials
from benchflow.results.identity import config_hash

# config_hash(spec, driver_version="x") of `service=NAME data_dir=/pinned` at its defaults
# (data_dir itself is not identity, but a path under it is: triton's model_repository)
PINNED = {
    "chroma": "b83efd6a13613526",
    "faiss": "baf9e6d901879c6b",
    "fileio": "3e5a420467bf0c6c",
    "llamacpp": "a5a55f91ec0a0947",
    "milvus": "3baffde0fa63aa08",
    "noop": "d5fae89929b1cc52",
    "postgres": "5ce8b2260a6ede5d",
    "pytriton": "71c93059ba1fae67",
    "qa": "bed1b0d9392275ec",
    "s3": "a93b30c9298ab313",
    "sleep": "18d4a49a10933d41",
    "triton": "c9ef8a62bdd37f57",
    "vllm": "282fe1c92c1bc1a9",
    "weaviate": "fd1874a7b08fa9be",
}


@pytest.mark.parametrize("service", sorted(PINNED))
def test_a_shipped_service_keeps_its_identity(service):
    (spec,) = compose_trials([f"service={service}", "data_dir=/pinned"], False, open_target=True)
    assert config_hash(spec, "x") == PINNED[service]
