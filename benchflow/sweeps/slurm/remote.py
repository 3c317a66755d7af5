"""What each Slurm job of a sweep runs on its node: :class:`_Remote`, a small handle
to one pickle of the launcher and Hydra's state, written once per sweep on the
login node and loaded by every job (again when Slurm requeues it).

Job files that submitit pickled before this class moved here name it
``benchflow.sweeps.slurm.launcher._Remote``; that module still imports it, so
those unpickle too. Keep its name.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn


class _Remote:
    """What each Slurm job runs: the launcher and Hydra's state, pickled once per sweep.

    submitit pickles the callable with every job; the launcher carries the whole
    Hydra context (~tens of ms to pickle), so jobs get this small handle to one
    shared pickle instead, and load it on the node.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def write(cls, launcher, sweep_dir: Path) -> _Remote:
        import cloudpickle

        path = sweep_dir / ".submitit" / "launcher.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        remote, launcher.remote = getattr(launcher, "remote", None), None
        try:
            path.write_bytes(cloudpickle.dumps((launcher, Singleton.get_state())))
        finally:
            launcher.remote = remote
        return cls(str(path))

    def __call__(self, overrides, job_dir_key: str, num: int, job_id: str) -> JobReturn:
        import pickle

        launcher, state = pickle.loads(Path(self.path).read_bytes())
        return launcher(overrides, job_dir_key, num, job_id, state)

    def checkpoint(self, *args):
        """Requeued after a time limit or preemption: rerun the job (resume skips what is done)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)
