"""Run a sweep's unfinished jobs here, on a local process pool or on Ray; every row is appended to the store
as its job ends, so a stopped sweep resumes where it was."""

from __future__ import annotations

import os
from collections.abc import Iterator

from ad3d.bench.job import Job, run_job
from ad3d.bench.spec import Sweep
from ad3d.bench.store import ResultsStore
from ad3d.errors import ConfigError


def run_sweep(
    sweep: Sweep,
    out,
    *,
    workers: int | None = None,
    ray: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> dict:
    """Run every job of `sweep` that `out` does not already hold. workers: processes of the local pool
    (1: in this process; default: one per CPU, at most one per job). ray: 'local' starts a Ray instance on
    this machine with `workers` CPUs; 'auto' joins the running cluster; otherwise a cluster address.
    Returns counts: jobs, skipped (finished before), ran, failed. One driver per `out` (a second is refused);
    Ctrl-C stops it at once, its workers with it, and keeps every finished row."""
    store = ResultsStore(out)
    jobs = sweep.jobs()  # every value checked, every dataset found, before anything runs
    with store.driver_lock():
        done = store.finished(retry_failed=retry_failed)
        todo = [j for j in jobs if j.key not in done]
        _write_spec(store, sweep)
        return _run(todo, len(jobs), store, workers, ray, progress)


def _run(todo: list[Job], total: int, store: ResultsStore, workers, ray, progress: bool) -> dict:
    from tqdm import tqdm

    counts = {"jobs": total, "skipped": total - len(todo), "ran": 0, "failed": 0}
    workers_here = workers or _default_workers(todo)
    if ray:
        rows = _on_ray(todo, ray, workers)
    elif workers_here > 1 and len(todo) > 1:
        rows = _on_pool(todo, workers_here)
    else:
        rows = (run_job(j) for j in todo)
    bar = tqdm(total=total, initial=counts["skipped"], desc="bench", unit="job", disable=not progress)
    try:
        for row, details in rows:
            store.append(row, details)
            counts["ran"] += 1
            counts["failed"] += row["status"] != "ok"
            bar.set_postfix_str(f"{row['label']} {row['category']} s{row['seed']}: {_brief(row)}", refresh=False)
            bar.update()
    finally:  # stopped early: the pool's or Ray's workers are stopped now, not when the generator is collected
        rows.close()
        bar.close()
    return counts


def _brief(row: dict) -> str:
    if row["status"] != "ok":
        return "failed"
    o, p = row.get("object_auroc"), row.get("point_auroc")
    return f"O {o:.3f} P {p:.3f}" if o is not None and p is not None else "ok"


def _default_workers(todo: list[Job]) -> int:
    per_job = max((j.cpus or 1) for j in todo) if todo else 1
    return max(1, min(len(todo), (os.cpu_count() or 1) // per_job))


def _write_spec(store: ResultsStore, sweep: Sweep) -> None:
    """The sweep as asked, beside its results (the latest run's; the rows carry their own parameters)."""
    import json

    (store.folder / "sweep.json").write_text(json.dumps(sweep.as_dict(), indent=2, default=list))


def _on_pool(todo: list[Job], workers: int) -> Iterator[tuple[dict, dict]]:
    """A fresh process per job (its peak memory is its own), `workers` at a time; yields as jobs end. Stopped
    early (Ctrl-C, an error here), the queued jobs are dropped and the running workers terminated, not waited
    for; a worker whose driver dies (killed outright) ends itself."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        max_tasks_per_child=1,
        initializer=_follow_driver,
        initargs=(os.getpid(),),
    )
    finished = False
    try:
        futures = {pool.submit(run_job, job): job for job in todo}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as e:  # the worker process died (killed, out of memory): a failed row
                yield _lost(futures[future], e), {}
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            _stop_pool(pool)


def _stop_pool(pool) -> None:
    """Drop the queued jobs and end the running ones now (SIGTERM, then SIGKILL after 5 s)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def _follow_driver(driver: int) -> None:
    """In each pool worker: end this process when the driver is gone (SIGKILL leaves no chance to stop us)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ad3d-follow-driver").start()


def _on_ray(todo: list[Job], address: str, workers: int | None) -> Iterator[tuple[dict, dict]]:
    """One Ray task per job, a fresh worker each (max_calls=1), asking for the job's CPUs and, for detectors
    that train a network, one GPU when the cluster has any. Results come back to this process, which alone
    writes the store, so workers need no shared disk (but do need ad3d and the dataset at the same path)."""
    if address != "local":
        _check_reachable(address)
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'ad3d[bench]'") from None
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(num_cpus=workers or os.cpu_count(), **options)
    else:
        try:
            ray.init(address=address, **options)
        except ConnectionError as e:
            raise ConfigError(
                f"no Ray cluster at {address!r} ({e}); start one (`ray start --head`) or use --ray local"
            ) from None
    try:
        pending: dict = {}
        gpus = ray.cluster_resources().get("GPU", 0)
        remote = ray.remote(max_calls=1)(run_job)
        pending = {remote.options(**ray_resources(job, gpus)).remote(job): job for job in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # wakes up so Ctrl-C is heard
            if not ready:
                continue
            job = pending.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except Exception as e:  # the task's worker died: a failed row, the sweep goes on
                yield _lost(job, e), {}
    finally:
        if address != "local":  # stopped early: no queued job starts on the cluster (a local one just ends);
            for ref in pending:  # force-cancelling here crashed Ray 2.60's task manager one time in six
                ray.cancel(ref)
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """A host:port cluster address that nothing answers on is refused in seconds (Ray itself retries for two
    minutes, printing its log)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(
            f"no Ray cluster answers at {address!r} ({e.strerror or e}); start one (`ray start --head`) or use "
            "--ray local"
        ) from None


def ray_resources(job: Job, cluster_gpus: float) -> dict:
    """What one job asks of Ray: its CPUs, and a whole GPU when it trains on one and the cluster has any."""
    return {"num_cpus": job.cpus or 1, "num_gpus": 1 if cluster_gpus and job.wants_gpu else 0}


def _lost(job: Job, error: Exception) -> dict:
    return {
        **job.describe(),
        "status": "error",
        "error": f"worker lost: {type(error).__name__}: {error}",
    }
