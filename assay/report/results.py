"""How one explorer build reads the stored results: per scenario or per partition, and a
cheap fingerprint of each partition's files, so a unit whose inputs did not change is kept
without reading its data.

Two sources behind one interface. :class:`QueriedResults` (``ExplorerData`` built without
tables, e.g. by :meth:`ExplorerData.of_day`) queries the metric tables and instance scores as
of the end of the build's day through DuckDB (:class:`~assay.storage.query.TablesAsOf`):
only a scenario's rows, or a partition's file, are in memory at a time. :class:`HeldResults`
(``ExplorerData`` given ``metric_tables`` and ``instance_scores``) filters the tables held.

A fingerprint names a partition's file and its size and modification time (history copies
are written once under a unique name); for tables held in memory it is a digest of the
partition's rows. Model outputs, judge replies, contamination checks and scenario instances
are read as the store holds them now (they keep no history), as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from assay.report.data import end_of, split_by
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, MODEL_VERSION, SCENARIO
from assay.storage.parquet import CorruptPartitionError, ParquetStore
from assay.storage.query import TablesAsOf

if TYPE_CHECKING:
    from assay.report.data import ExplorerData

NONE = "-"  # the fingerprint of a file that is not there

# A partition in a listing as of the build's day: its place in the listing's order, its
# partition dimensions and its file.
_Listed = tuple[int, dict[str, str], str]
# A listing by (version, scenario) and by version.
_Index = tuple[dict[tuple[str, str], list[_Listed]], dict[str, list[_Listed]]]


def table_digest(table: pa.Table | None) -> str:
    """A digest of a table's schema and rows (Arrow IPC stream)."""
    if table is None:
        return NONE
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def file_fingerprint(store: ParquetStore, path: str | None) -> str:
    """``path`` with its size and modification time: changes whenever the file is rewritten.
    A compacted copy (``<file>#<copy>``, :mod:`assay.storage.compacted`) is fingerprinted by
    its compacted file's and its copy's name."""
    if path is None:
        return NONE
    reference = store.compacted_reference(path)
    if reference is not None:
        file, copy = reference
        return f"{file_fingerprint(store, file)}#{copy}"
    stamp = store.file_stamp(path)
    return NONE if stamp is None else f"{path}|{stamp}"


class _Current:
    """The files each partition of an asset holds now, listed once per build."""

    def __init__(self, store: ParquetStore) -> None:
        self.store = store
        self._listed: dict[str, dict[tuple[str, ...], str]] = {}

    def path(self, asset: str, *key: str) -> str | None:
        if asset not in self._listed:
            found = {}
            for partition, path in self.store.current_files(asset):
                ident = tuple(partition.get(d, "") for d in (MODEL_VERSION, SCENARIO))
                if MODEL_VERSION not in partition:
                    ident = (partition.get(SCENARIO, ""),)
                found[ident] = path
            self._listed[asset] = found
        return self._listed[asset].get(key)


class Results:
    """What a build reads (see the module docstring); close it when the build ends."""

    def __init__(self, data: ExplorerData, store: ParquetStore | None = None) -> None:
        self.data = data
        self.store = data.store if store is None else store
        self.current = _Current(self.store)
        self._prints: dict[tuple[str, ...], str] = {}

    def close(self) -> None:
        """Release what the source holds (a DuckDB connection)."""

    # -- files read as the store holds them now ------------------------------------------
    def path(self, asset: str, version: str, scenario: str) -> str | None:
        """The file of ``asset``'s partition (model outputs, judge replies, contamination)."""
        return self.current.path(asset, version, scenario)

    def instances_path(self, scenario: str) -> str | None:
        return self.current.path("scenario_instances", scenario)

    def fingerprint(self, asset: str, version: str, scenario: str) -> str:
        """A fingerprint of a partition's file (any asset) without reading it."""
        key = (asset, version, scenario)
        if key not in self._prints:
            if asset in (METRIC_TABLES, INSTANCE_SCORES):
                self._prints[key] = self._history_print(asset, version, scenario)
            else:
                self._prints[key] = file_fingerprint(
                    self.store, self.path(asset, version, scenario)
                )
        return self._prints[key]

    def instances_fingerprint(self, scenario: str) -> str:
        key = ("instances", scenario)
        if key not in self._prints:
            self._prints[key] = file_fingerprint(self.store, self.instances_path(scenario))
        return self._prints[key]

    def version_fingerprint(self, asset: str, version: str, scenarios: Sequence[str]) -> str:
        """One digest of a version's partitions of ``asset`` over ``scenarios``."""
        key = ("version", asset, version)
        if key not in self._prints:
            text = "\n".join(self.fingerprint(asset, version, s) for s in scenarios)
            self._prints[key] = hashlib.sha256(text.encode()).hexdigest()
        return self._prints[key]

    # -- to implement ----------------------------------------------------------------------
    def _history_print(self, asset: str, version: str, scenario: str) -> str:
        raise NotImplementedError

    def cards(self, scenario: str, versions: Sequence[str]) -> pa.Table | None:
        """The metric tables of ``versions`` on ``scenario`` (every row)."""
        raise NotImplementedError

    def headline_cards(self, versions: Sequence[str]) -> pa.Table | None:
        """The ungrouped, unperturbed metric table rows of ``versions``, every scenario."""
        raise NotImplementedError

    def scores(
        self, scenario: str, versions: Sequence[str], metrics: Sequence[str]
    ) -> pa.Table | None:
        """The unperturbed instance scores of ``metrics`` of ``versions`` on ``scenario``."""
        raise NotImplementedError

    def partition_scores(self, version: str, scenario: str) -> pa.Table | None:
        """Every instance score of one partition."""
        raise NotImplementedError

    def lower_is_better(self, versions: Sequence[str], metrics: Sequence[str]) -> frozenset[str]:
        """The metrics ranked lower-is-better."""
        return self.data.lower_is_better or frozenset()


class HeldResults(Results):
    """Results from tables held in memory (``ExplorerData.metric_tables`` and
    ``instance_scores``)."""

    def __init__(self, data: ExplorerData, store: ParquetStore | None = None) -> None:
        super().__init__(data, store)
        self._split: dict[str, dict[str, dict[str, pa.Table]]] = {}

    def _parts(self, asset: str) -> dict[str, dict[str, pa.Table]]:
        """version → scenario → that partition's rows."""
        if asset not in self._split:
            table = self.data.metric_tables if asset == METRIC_TABLES else self.data.instance_scores
            by_version = {} if table is None else split_by(table, MODEL_VERSION)
            self._split[asset] = {v: split_by(t, SCENARIO) for v, t in by_version.items()}
        return self._split[asset]

    def _history_print(self, asset: str, version: str, scenario: str) -> str:
        return table_digest(self._parts(asset).get(version, {}).get(scenario))

    def _rows(self, asset: str, scenario: str, versions: Sequence[str]) -> pa.Table | None:
        parts = self._parts(asset)
        found = [parts[v][scenario] for v in versions if scenario in parts.get(v, {})]
        return pa.concat_tables(found, promote_options="default") if found else None

    def cards(self, scenario: str, versions: Sequence[str]) -> pa.Table | None:
        table = self.data.metric_tables
        if table is None:
            return None
        table = table.filter(pc.equal(table[SCENARIO], scenario))
        return table.filter(pc.is_in(table[MODEL_VERSION], pa.array(list(versions), pa.string())))

    def headline_cards(self, versions: Sequence[str]) -> pa.Table | None:
        table = self.data.metric_tables
        if table is None:
            return None
        table = table.filter(pc.is_in(table[MODEL_VERSION], pa.array(list(versions), pa.string())))
        return table.filter(
            pc.and_(pc.equal(table["group"], ""), pc.equal(table["perturbation"], ""))
        )

    def scores(
        self, scenario: str, versions: Sequence[str], metrics: Sequence[str]
    ) -> pa.Table | None:
        rows = self._rows(INSTANCE_SCORES, scenario, versions)
        if rows is None:
            return None
        return rows.filter(
            pc.and_(
                pc.equal(rows["perturbation"], ""),
                pc.is_in(rows["metric"], pa.array(list(metrics), pa.string())),
            )
        )

    def partition_scores(self, version: str, scenario: str) -> pa.Table | None:
        return self._parts(INSTANCE_SCORES).get(version, {}).get(scenario)


class QueriedResults(Results):
    """Results queried from the store as of the end of the build's day (DuckDB over the
    Parquet files the store chooses as of then), one scenario or partition at a time."""

    def __init__(self, data: ExplorerData, store: ParquetStore | None = None) -> None:
        super().__init__(data, store)
        self.tables = TablesAsOf(self.store, end_of(data.day))
        # asset → its listing as of the build's day, by (version, scenario) and by version
        self._indexes: dict[str, _Index] = {}

    def close(self) -> None:
        self.tables.close()

    def _listing(self, asset: str) -> dict[tuple[str, str], list[_Listed]]:
        """(version, scenario) → the partitions of that key in the listing as of the
        build's day (their place in its order, the partition, its file)."""
        return self._index(asset)[0]

    def _index(self, asset: str) -> _Index:
        """The day's listing of ``asset`` by (version, scenario) and by version."""
        if asset not in self._indexes:
            by_key: dict[tuple[str, str], list[_Listed]] = {}
            by_version: dict[str, list[_Listed]] = {}
            for place, (p, path) in enumerate(self.tables.files(asset)):
                entry = (place, p, path)
                key = (p.get(MODEL_VERSION, ""), p.get(SCENARIO, ""))
                by_key.setdefault(key, []).append(entry)
                by_version.setdefault(key[0], []).append(entry)
            self._indexes[asset] = by_key, by_version
        return self._indexes[asset]

    def history_path(self, asset: str, version: str, scenario: str) -> str | None:
        """The file of a metric tables / instance scores partition as of the build's day."""
        entries = self._listing(asset).get((version, scenario))
        return entries[-1][2] if entries else None

    def _history_print(self, asset: str, version: str, scenario: str) -> str:
        return file_fingerprint(self.store, self.history_path(asset, version, scenario))

    def _read(self, asset: str, scenario: str | None, versions: Sequence[str], **kw: Any):
        """The rows of ``versions``' partitions (on ``scenario``, or every scenario), found
        by key in the listing, read in the listing's order (as a read of the whole listing
        filtered to them would: the same rows in the same order)."""
        by_key, by_version = self._index(asset)
        wanted = set(versions)
        if scenario is None:
            entries = [e for v in wanted for e in by_version.get(v, ())]
        else:
            entries = [e for v in wanted for e in by_key.get((v, scenario), ())]
        entries.sort(key=lambda entry: entry[0])
        return self.tables.read_files(asset, [(p, path) for _, p, path in entries], **kw)

    def cards(self, scenario: str, versions: Sequence[str]) -> pa.Table | None:
        return self._read(METRIC_TABLES, scenario, versions)

    def headline_cards(self, versions: Sequence[str]) -> pa.Table | None:
        return self._read(
            METRIC_TABLES, None, versions, where="t.\"group\" = '' AND t.perturbation = ''"
        )

    def scores(
        self, scenario: str, versions: Sequence[str], metrics: Sequence[str]
    ) -> pa.Table | None:
        marks = ", ".join("?" * len(metrics))
        return self._read(
            INSTANCE_SCORES,
            scenario,
            versions,
            where=f"t.perturbation = '' AND t.metric IN ({marks})",
            params=list(metrics),
        )

    def lower_is_better(self, versions: Sequence[str], metrics: Sequence[str]) -> frozenset[str]:
        """What the stored metric tables of ``versions`` mark lower-is-better among
        ``metrics``, with the library's own list (``lower_is_better_in``)."""
        from assay.scoring.metrics.directions import LOWER_IS_BETTER, lower_is_better_in

        marks = ", ".join("?" * len(metrics))
        try:
            rows = self._read(
                METRIC_TABLES,
                None,
                versions,
                columns=["metric", "lower_is_better"],
                where=f"t.metric IN ({marks})",
                params=list(metrics),
            )
        except CorruptPartitionError:
            # Tables written before the column existed mark none; any other fault surfaces
            # when the rows themselves are read.
            return LOWER_IS_BETTER
        return lower_is_better_in(rows)

    def partition_scores(self, version: str, scenario: str) -> pa.Table | None:
        path = self.history_path(INSTANCE_SCORES, version, scenario)
        if path is None:
            return None
        return self.store.read_path(path, f"instance_scores {version} {scenario}")


def results_of(data: ExplorerData, listed: dict[str, dict[str, str]] | None = None) -> Results:
    """The source a build of ``data`` reads: held tables, or queries of the store; with
    ``listed`` (the files under the store's folders, as the build listed them), the store's
    folders are not walked again (:meth:`ParquetStore.listed`)."""
    store = data.store if listed is None else data.store.listed(listed)
    if data.metric_tables is None and data.instance_scores is None:
        results = QueriedResults(data, store)
        evaluated = {v for v, _ in results._listing(METRIC_TABLES)}
        if data.board_versions and not evaluated & set(data.board_versions):
            results.close()
            raise ValueError(
                f"no metric_tables partition of the board's {len(data.board_versions)} "
                f"version(s) had been written under {data.store.base_url} by the end of "
                f"{data.day} (history copies are stamped by the store's clock): nothing to show"
            )
        return results
    return HeldResults(data, store)
