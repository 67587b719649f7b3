"""Scale-out: the same flows with their per-symbol batch tasks on a Dask cluster instead of local threads.

Two mechanisms, each for its own job (DESIGN.md, "Scale-out"):

- Across machines, flows are spread by Prefect work pools and workers: every machine runs
  `prefect worker start --pool POOL` against the same Prefect server and PostgreSQL, and each flow run
  goes to one of them. Nothing here is needed for that.
- Inside one flow run, `with_dask(flow)` sends the batch tasks (`ingest_task`, `evaluate_task`, ...) to a
  Dask cluster: a temporary local one with worker processes (more cores than one interpreter's GIL allows),
  or an existing scheduler at `address` whose workers may sit on other machines.

`prefect-dask` is an optional extra (`pip install 'strategy-engine[dask]'`), imported only when asked for.
Tasks take block names and plain values, so they pickle to Dask workers; each worker process builds its own
clients from the blocks. The flow run's Prefect settings (API URL included) travel with every submitted task
(prefect-dask serialises the settings context), so workers report to the same Prefect server as the flow.
Workers at a remote `address` also need this package, the blocks' services reachable, and the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ParamSpec, TypeVar

from prefect import Flow

from domain.errors import ConfigurationError

P = ParamSpec("P")
R = TypeVar("R")

INSTALL_HINT = "pip install 'strategy-engine[dask]'"


def with_dask(
    flow: Flow[P, R],
    address: str | None = None,
    n_workers: int = 2,
    *,
    processes: bool = True,
    threads_per_worker: int = 1,
    cluster_kwargs: Mapping[str, Any] | None = None,
) -> Flow[P, R]:
    """`flow` with its submitted tasks run on Dask; the original flow is unchanged (same name, parameters).

    address: a running Dask scheduler (`tcp://host:8786`); None starts a temporary `distributed.LocalCluster`
        for each flow run and closes it when the run ends.
    n_workers, processes, threads_per_worker: the local cluster's shape (ignored with `address`). Processes
        sidestep the GIL for the CPU-bound indicator work; each worker process then pays its own start-up
        (imports, database pool, Redis connection: about a second or two here).
    cluster_kwargs: anything else for `LocalCluster`. The scheduler's HTTP server (the dashboard, when bokeh is
        installed) binds a free loopback port by default: never another host's reach, and two clusters never
        fight over 8787 (distributed warns on a taken port, which tests turn into errors).

    Raises ConfigurationError when `prefect-dask` is not installed, or when `address` is combined with
    local-cluster options.
    """
    try:
        # Without the extra installed, mypy sees no module here: hence the unused-ignore allowance.
        from prefect_dask.task_runners import DaskTaskRunner  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ConfigurationError(
            f"running {flow.name!r} on Dask needs the optional 'dask' extra: {INSTALL_HINT} ({exc})"
        ) from exc
    if address is not None:
        if cluster_kwargs:
            raise ConfigurationError("with_dask: `cluster_kwargs` configure a local cluster, not one at `address`")
        runner = DaskTaskRunner(address=address)
    else:
        if n_workers < 1 or threads_per_worker < 1:
            raise ConfigurationError("with_dask: n_workers and threads_per_worker must be at least 1")
        options: dict[str, Any] = {
            "n_workers": n_workers,
            "processes": processes,
            "threads_per_worker": threads_per_worker,
            "dashboard_address": "127.0.0.1:0",
        }
        runner = DaskTaskRunner(cluster_kwargs=options | dict(cluster_kwargs or {}))
    # DaskTaskRunner is a TaskRunner[PrefectDaskFuture]; with_options is typed for TaskRunner[PrefectFuture]
    # (generic invariance only: PrefectDaskFuture is a PrefectFuture).
    return flow.with_options(task_runner=runner)  # type: ignore[arg-type, unused-ignore]
