"""Code versions derived from the sources that define each table, and Dagster's view of them."""

from __future__ import annotations

import shutil

import pytest
from dagster import AssetKey, AssetsDefinition, AssetSelection, instance_for_test, materialize
from dagster._core.definitions.data_version import StaleCauseCategory, StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from assay.core.plugins import distribution_digest
from assay.storage.code_versions import (
    PACKAGE_ROOT,
    SOURCES,
    code_version,
    dependencies,
    derive_code_version,
    source_digest,
)
from assay.storage.contract import (
    CONTAMINATION,
    CORPUS_INDEX,
    DASHBOARD,
    INSTANCE_SCORES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    PROMPT_TRIALS,
    SCENARIO_INSTANCES,
    TRAINING_CORPORA,
)
from assets import all_assets
from resources import SuiteResource, assay_resources


@pytest.fixture
def package(tmp_path):
    """A copy of the assay package's sources to edit."""
    root = tmp_path / "assay"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _versions(root=PACKAGE_ROOT) -> dict[str, str]:
    """Every table's version as the code location would derive it now, from ``root``."""
    return {
        asset: derive_code_version(source_digest(entries, root), *dependencies(asset))
        for asset, entries in SOURCES.items()
    }


def _edit(path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


def test_the_copy_digests_like_the_package(package):
    assert _versions(package) == {asset: code_version(asset) for asset in SOURCES}


@pytest.mark.parametrize(
    ("edited", "changed"),
    [
        # A summary change (intervals) touches the scorecard, not the per-instance stats.
        # A prompt trial computes outputs and scores: what defines them defines it.
        ("scoring/summary.py", {METRIC_TABLES, PROMPT_TRIALS}),
        # A metric's code changes both scoring tables and nothing upstream of them, and the
        # contamination findings whose guided-completion signal compares by its ROUGE-L.
        (
            "scoring/metrics/accuracy.py",
            {INSTANCE_SCORES, METRIC_TABLES, PROMPT_TRIALS, CONTAMINATION},
        ),
        # The n-gram index's code defines the indexes and the findings, not the digests.
        ("contamination/ngram_index.py", {CORPUS_INDEX, CONTAMINATION}),
        # The corpus reader defines the digests too.
        ("contamination/corpus.py", {TRAINING_CORPORA, CORPUS_INDEX, CONTAMINATION}),
        # A lexicon is data that defines the bias metrics.
        (
            "scoring/metrics/data/bias/female.txt",
            {INSTANCE_SCORES, METRIC_TABLES, PROMPT_TRIALS},
        ),
        # Programs run in the sandbox: the sandbox defines their pass too.
        ("core/sandbox.py", {INSTANCE_SCORES, METRIC_TABLES, PROMPT_TRIALS}),
        ("report/templates/leaderboard.html", {DASHBOARD}),
        ("adapters/prompts.py", {MODEL_OUTPUTS, PROMPT_TRIALS}),
        # Pinning a prompt version in place of an alias defines the trial alone.
        ("evaluate/prompt_trials.py", {PROMPT_TRIALS}),
        # Modules that define no stored table change no version.
        ("cli/registry.py", set()),
        ("server/http.py", set()),
    ],
)
def test_an_edit_changes_exactly_the_versions_of_the_tables_it_defines(package, edited, changed):
    before = _versions(package)
    _edit(package / edited)
    after = _versions(package)
    assert {asset for asset in SOURCES if after[asset] != before[asset]} == changed


def test_a_new_file_in_a_listed_folder_counts_and_a_missing_source_is_named(package):
    before = source_digest(["scoring/metrics"], package)
    (package / "scoring" / "metrics" / "new_metric.py").write_text("X = 1\n")
    assert source_digest(["scoring/metrics"], package) != before
    with pytest.raises(ValueError, match=r"scoring/gone\.py"):
        source_digest(["scoring/gone.py"], package)
    with pytest.raises(KeyError, match="no_such_asset"):
        code_version("no_such_asset")


def _assets_by_key():
    return {key: a for a in all_assets if isinstance(a, AssetsDefinition) for key in a.keys}


def test_every_asset_carries_its_derived_code_version():
    for asset in SOURCES:
        definition = _assets_by_key()[AssetKey(asset)]
        assert definition.code_versions_by_key[AssetKey(asset)] == code_version(asset), asset


def test_dagster_reports_a_table_stale_when_its_sources_change(tmp_path, package):
    """Materialize scenario_instances under today's code version, then load the definitions
    as they would be after an edit of a scenario module: Dagster calls the partition stale,
    for its code version."""
    key = AssetKey(SCENARIO_INSTANCES)
    resources = assay_resources(
        storage_url=str(tmp_path / "storage"),
        registry_url=f"sqlite:///{tmp_path / 'registry.db'}",
        suite=SuiteResource(),
    )
    _edit(package / "scenarios" / "generated.py")
    edited = source_digest(SOURCES[SCENARIO_INSTANCES], package)
    assert edited != code_version(SCENARIO_INSTANCES)
    after_edit = [
        a.map_asset_specs(
            lambda spec: spec.replace_attributes(code_version=edited) if spec.key == key else spec
        )
        if isinstance(a, AssetsDefinition) and key in a.keys
        else a
        for a in all_assets
    ]
    with instance_for_test() as instance:
        result = materialize(
            all_assets,
            selection=AssetSelection.assets(SCENARIO_INSTANCES),
            partition_key="arithmetic",
            instance=instance,
            resources=resources,
        )
        assert result.success
        now = get_stale_status_resolver(instance, all_assets)
        assert now.get_status(key, "arithmetic") == StaleStatus.FRESH
        later = get_stale_status_resolver(instance, after_edit)
        assert later.get_status(key, "arithmetic") == StaleStatus.STALE
        causes = later.get_stale_causes(key, "arithmetic")
        assert [c.category for c in causes] == [StaleCauseCategory.CODE]


SCORER = """
from assay.core.scorers import Stat


class Echo:
    metric = "echo"

    def score(self, instances, outputs, args):
        return [Stat(o.request.instance_id, "echo", 1.0) for o in outputs]
"""
QUIZ = """
from assay.core.records import Instance
from assay.scenarios import Scenario


class Quiz(Scenario):
    def load(self):
        return [Instance("q", "1+1?", ())]
"""


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {asset for asset in before if before[asset] != after[asset]}


def test_a_scorer_plugin_enters_exactly_the_scoring_tables_versions(fake_plugins):
    """Installing, upgrading or editing a scorer plugin changes the version of the tables it
    feeds and of no other; a scenario plugin, of scenario_instances alone."""
    bare = _versions()
    entry = {"assay.scorers": {"echo": "acme_echo:Echo"}}
    info = fake_plugins.install("acme-echo", {"acme_echo": SCORER}, entry, version="1.0")
    installed = _versions()
    scoring = {INSTANCE_SCORES, METRIC_TABLES, PROMPT_TRIALS}
    assert _changed(bare, installed) == scoring
    # A new version with the same files.
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-echo\nVersion: 1.1\n")
    upgraded = _versions()
    assert _changed(installed, upgraded) == scoring
    # The same version with an edited file.
    module = fake_plugins.root / "acme_echo.py"
    module.write_text(module.read_text() + "# edited\n")
    edited = _versions()
    assert _changed(upgraded, edited) == scoring
    fake_plugins.install(
        "acme-quiz", {"acme_quiz": QUIZ}, {"assay.scenarios": {"quiz": "acme_quiz:Quiz"}}
    )
    assert _changed(edited, _versions()) == {SCENARIO_INSTANCES}


def test_a_plugin_digest_covers_its_installed_files_not_where_they_lie(fake_plugins, tmp_path):
    entry = {"assay.scorers": {"echo": "acme_echo.scorer:Echo"}}
    files = {"acme_echo.__init__": "", "acme_echo.scorer": SCORER}
    info = fake_plugins.install("acme-echo", files, entry)
    (fake_plugins.root / "acme_echo" / "__pycache__").mkdir()
    (fake_plugins.root / "acme_echo" / "__pycache__" / "scorer.cpython-311.pyc").write_bytes(b"x")
    # As an editable install lists its files: only a path hook beside the metadata.
    (info / "RECORD").write_text("__editable__.acme_echo-1.0.pth,,\n")
    (fake_plugins.root / "__editable__.acme_echo-1.0.pth").write_text(str(tmp_path) + "\n")
    from importlib.metadata import distribution

    editable = distribution_digest(distribution("acme-echo"))
    # As a wheel install lists them: the package's files, same bytes, same digest.
    (info / "RECORD").write_text(
        "acme_echo/__init__.py,,\nacme_echo/scorer.py,,\nacme_echo/__pycache__/scorer.pyc,,\n"
    )
    assert distribution_digest(distribution("acme-echo")) == editable
    (fake_plugins.root / "acme_echo" / "data.json").write_text("{}")
    assert distribution_digest(distribution("acme-echo")) == editable  # not listed: not its
    (info / "RECORD").write_text(
        "acme_echo/__init__.py,,\nacme_echo/scorer.py,,\nacme_echo/data.json,,\n"
    )
    assert distribution_digest(distribution("acme-echo")) != editable
