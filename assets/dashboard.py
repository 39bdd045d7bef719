"""``dashboard``: the results explorer, a static site written next to the stored tables."""

from datetime import UTC, datetime

from dagster import AssetDep, AssetExecutionContext, MaterializeResult, asset

from assay.report import EXPLORER_DIR, ExplorerData, build_site, store_writer
from assay.storage.code_versions import code_version
from assay.storage.contract import DASHBOARD, RANKINGS
from assets.common import explorer_link
from resources import RegistryResource, StorageResource, SuiteResource


@asset(
    deps=[AssetDep(RANKINGS)],
    group_name="rankings",
    kinds={"html"},
    code_version=code_version(DASHBOARD),
    description=(
        "The results explorer, a static site (works from a file or an object store, no "
        "server): leaderboard with filters and rank intervals, comparisons with flipped "
        "instances, scenario pages (scorecards, groups, robustness, calibration), every "
        "prediction, history with alias moves, and CSV/JSON/JSONL exports."
    ),
)
def dashboard(
    context: AssetExecutionContext,
    storage: StorageResource,
    registry: RegistryResource,
    suite: SuiteResource,
) -> MaterializeResult:
    store = storage.store()
    history = store.read_all(RANKINGS)
    if history is None or history.num_rows == 0:
        raise ValueError("no rankings partition has been materialized; materialize rankings first")
    day = max(history["day"].to_pylist())
    # The results are queried from the store as of the day's end, a scenario or a partition
    # at a time, and only for the pages whose inputs changed since the last build.
    data = ExplorerData.of_day(store, registry.open(), suite.load(), day, rankings=history)
    summary = build_site(data, store_writer(store, EXPLORER_DIR), generated_at=datetime.now(UTC))
    link = explorer_link(store)
    context.log.info(
        f"explorer for {day} at {link.value}: {summary.files} files, {summary.written} written, "
        f"{summary.unchanged} unchanged, {len(summary.deleted)} stale deleted"
    )
    return MaterializeResult(
        metadata={
            "explorer": link,
            "day": day,
            "num_files": summary.files,
            "bytes": summary.bytes,
            "num_pages": len(summary.pages),
            # Incremental builds: files rewritten vs left as the last build wrote them.
            "num_written": summary.written,
            "num_unchanged": summary.unchanged,
            "num_deleted": len(summary.deleted),
            "num_partitions_built": summary.partitions_built,
            "num_partitions_unchanged": summary.partitions_unchanged,
            # Pages (with their exports) rendered, and kept since their inputs had not changed.
            "num_units_rendered": summary.units_rendered,
            "num_units_skipped": summary.units_skipped,
            # Every input as at the last build: nothing looked at, nothing written.
            "site_unchanged": summary.site_unchanged,
        }
    )
