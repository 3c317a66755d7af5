"""``python -m benchflow [-m] [-v] KEY=VALUE…`` runs trials (a Hydra app);
``benchflow <command> …`` runs the other verbs (``benchflow --commands`` lists them).

The console carries benchflow's own records; third-party libraries' INFO records
(faiss, MLflow, ...) only with ``-v`` (``hydra.verbose=true``).
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from benchflow.config import CONFIG_NAME, EXIT_CONFIG, ConfigError, conf_dir


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from benchflow import cli

    if argv and (argv[0] in cli.COMMANDS or argv[0] == "--commands"):
        cli.main(argv)
        return
    argv = ["hydra.verbose=true" if a in ("-v", "--verbose") else a for a in argv]
    from benchflow.config.search import quote_slo_overrides

    argv = quote_slo_overrides(argv)  # search.slo=[latency_ms.p99<=50]: '<' needs quotes
    if _show_cfg_with_target(argv):
        return
    _prevalidate(argv)
    _mask_launcher_logs()
    sys.argv = [sys.argv[0], *argv]
    hydra_app()


def _verbose_override(overrides: list[str]) -> object:
    """The value of the last ``hydra.verbose=`` override (False: none given)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [o for o in overrides if o.lstrip("+").startswith("hydra.verbose=")]
    if not given:
        return False
    try:
        return OverridesParser.create().parse_override(given[-1]).value()
    except Exception:  # Hydra says what is wrong with it
        return False


def _show_cfg_with_target(argv: list[str]) -> bool:
    """``--cfg job|all target=NAME/1``: print the config with the target's spec merged
    (benchflow/config/compose.py: show_cfg); False: Hydra prints it (no target)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if not args.cfg or args.multirun:
        return False
    from benchflow.config.compose import show_cfg

    try:
        text = show_cfg(args.overrides, args.cfg, args.package, args.resolve, args.config_dir)
    except ConfigError as exc:
        print(f"benchflow: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if text is None:
        return False
    sys.stdout.write(text)
    return True


def _prevalidate(argv: list[str]) -> None:
    """Compose and validate every trial before Hydra starts any (exit 2 on a bad config)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.cfg or args.shell_completion or args.info:
        return  # Hydra's own informational modes
    from benchflow.results.logs import quiet_third_party

    # before anything imports faiss or MLflow (the sweep's callback does)
    quiet_third_party(_verbose_override(args.overrides))
    multirun = args.multirun or any(
        o.replace(" ", "") == "hydra.mode=MULTIRUN" for o in args.overrides
    )
    from benchflow.config import compose_trials

    try:
        compose_trials(args.overrides, multirun, args.config_dir)
        if multirun:  # a sweep sent to Slurm must fit its budget (or be approved)
            from benchflow.sweeps.slurm.plan import check_budget, make_plan

            plan = make_plan(args.overrides, True, args.config_dir)
            if plan.on_slurm:
                _require_slurm_extra()
            check_budget(plan)
    except ConfigError as exc:
        print(f"benchflow: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _require_slurm_extra() -> None:
    """A core install (no submitit) says what to install before a Slurm sweep starts."""
    from hydra_plugins.benchflow_plugins.slurm_launcher import MISSING_EXTRA

    if MISSING_EXTRA:
        print(f"benchflow: {MISSING_EXTRA}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


# Hydra's launchers log each job's overrides ("#0 : k=v ..."), credentials and all
_LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)


class _MaskOverrides(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from benchflow.secrets import mask_overrides_line

        record.msg = mask_overrides_line(record.getMessage())
        record.args = ()
        return True


def _mask_launcher_logs() -> None:
    for name in _LAUNCHER_LOGGERS:
        logging.getLogger(name).addFilter(_MaskOverrides())


@hydra.main(config_path=str(conf_dir()), config_name=CONFIG_NAME, version_base="1.3")
def hydra_app(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    from benchflow.results.logs import quiet_third_party
    from benchflow.sweeps.jobs import run_job

    quiet_third_party(HydraConfig.get().verbose)  # as the job's own config says

    if (cfg.get("search") or {}).get("kind", "none") != "none":
        from benchflow.search import run_search  # probes as trials (docs/capacity.md)

        return run_search(cfg)
    return run_job(cfg)


if __name__ == "__main__":
    main()
