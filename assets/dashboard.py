"""``dashboard``: a static HTML report of the latest leaderboard, built from the tables."""

from datetime import UTC, datetime

from dagster import AssetDep, AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assay.compare.standings import StoredResults, leaderboard_as_of
from assay.report import render_dashboard
from resources import RegistryResource, StorageResource, SuiteResource

DASHBOARD_FILE = "dashboard/index.html"


@asset(
    deps=[AssetDep("rankings")],
    group_name="rankings",
    kinds={"html"},
    code_version="1",
    description=(
        "An offline HTML report: the latest leaderboard with rank intervals, its paired "
        "comparisons, every headline scorecard with intervals, and the leaderboard history."
    ),
)
def dashboard(
    context: AssetExecutionContext,
    storage: StorageResource,
    registry: RegistryResource,
    suite: SuiteResource,
) -> MaterializeResult:
    store = storage.store()
    history = store.read_all("rankings")
    if history is None or history.num_rows == 0:
        raise ValueError("no rankings partition has been materialized; materialize rankings first")
    day = max(history["day"].to_pylist())
    board, cards = leaderboard_as_of(day, StoredResults.read(store), registry.open(), suite.load())
    page = render_dashboard(board, cards, history, day=day, generated_at=datetime.now(UTC))
    url = store.write_file(DASHBOARD_FILE, page.encode("utf-8"))
    context.log.info(f"dashboard for {day} written to {url}")
    return MaterializeResult(
        metadata={"path": MetadataValue.path(url), "day": day, "bytes": len(page)}
    )
