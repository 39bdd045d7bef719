"""What a suite file, a data file or a storage path can reach: one abuse case per test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from assay.evaluate.suite import load_suite, parse_suite
from assay.scenarios import DataFileError, get_scenario
from assay.storage.parquet import ParquetStore


def _suite(entry: dict) -> dict:
    return {"scenarios": {"quiz": entry}}


def _custom(path: str) -> dict:
    return {"scenario": "custom_file", "args": {"path": path}, "columns": {"input": "q"}}


# -- suites ---------------------------------------------------------------------------------


def test_a_suite_cannot_read_system_files():
    with pytest.raises(ValueError, match=r"s\.yaml: scenarios\.quiz\.args\.path: local file"):
        parse_suite(_suite(_custom("/etc/passwd")), "s.yaml")
    with pytest.raises(ValueError, match=r"scenarios\.quiz\.args\.path: local file"):
        parse_suite(_suite(_custom("file:///etc/passwd")), "s.yaml")


def test_a_suite_cannot_climb_out_of_its_folder(tmp_path: Path):
    suite_file = tmp_path / "suites" / "s.yaml"
    suite_file.parent.mkdir()
    suite_file.write_text(yaml.safe_dump(_suite(_custom("../../../../../../etc/hostname"))))
    with pytest.raises(ValueError, match=r"scenarios\.quiz\.args\.path: local file"):
        load_suite(suite_file)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/data.jsonl",
        "http://[fe80::1]/x.jsonl",
        "http://metadata.google.internal/computeMetadata/v1/x.jsonl",
    ],
)
def test_a_suite_cannot_reach_metadata_addresses(url):
    with pytest.raises(
        ValueError, match=r"scenarios\.quiz\.args\.path: refused, .*(link-local|metadata)"
    ):
        parse_suite(_suite(_custom(url)), "s.yaml")


@pytest.mark.parametrize(
    "url", ["ftp://host/x.csv", "sftp://host/x.csv", "memory://x/y.jsonl", "simplecache::s3://b/x"]
)
def test_a_suite_uses_only_allowed_schemes(url):
    with pytest.raises(ValueError, match=r"scenarios\.quiz\.args\.path: .*(scheme|chained)"):
        parse_suite(_suite(_custom(url)), "s.yaml")


def test_data_hosts_and_schemes_are_configurable(monkeypatch):
    monkeypatch.setenv("ASSAY_DATA_HOSTS", "data.example.org")
    parse_suite(_suite(_custom("https://data.example.org/q.jsonl")), "s.yaml")
    with pytest.raises(ValueError, match="ASSAY_DATA_HOSTS"):
        parse_suite(_suite(_custom("https://elsewhere.example.org/q.jsonl")), "s.yaml")
    monkeypatch.setenv("ASSAY_DATA_SCHEMES", "memory")
    parse_suite(_suite(_custom("memory://bucket/q.jsonl")), "s.yaml")


def test_a_suite_file_next_to_its_data_still_loads(tmp_path: Path):
    (tmp_path / "quiz.jsonl").write_text(json.dumps({"q": "2+2?"}) + "\n")
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(_suite(_custom(str(tmp_path / "quiz.jsonl")))))
    (instance,) = load_suite(suite_file)["quiz"].build().load().instances
    assert instance.input == "2+2?"


@pytest.mark.parametrize(
    ("field", "value", "env"),
    [
        ("venv", "/tmp/evil-venv", "ASSAY_SUITE_ALLOW_HELM_VENV"),
        ("scenario_class", "os.system", "ASSAY_SUITE_ALLOW_SCENARIO_CLASS"),
    ],
)
def test_helm_venv_and_scenario_class_need_the_deployment_to_allow_them(
    monkeypatch, field, value, env
):
    entry = {"scenario": "helm_scenario", "args": {field: value}}
    if field == "venv":
        entry["args"]["run_spec"] = "synthetic_reasoning"
    with pytest.raises(ValueError, match=rf"s\.yaml: scenarios\.quiz\.args\.{field}: .*\${env}=1"):
        parse_suite(_suite(entry), "s.yaml")
    monkeypatch.setenv(env, "1")
    assert parse_suite(_suite(entry), "s.yaml")["quiz"].args[field] == value


# -- data files -----------------------------------------------------------------------------


def test_a_csv_field_over_the_default_csv_limit_loads(tmp_path: Path):
    path = tmp_path / "long.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["q"])
        writer.writerow(["short"])
        writer.writerow(["x" * 200_000])  # over Python's default 131,072
    instances = get_scenario("custom_file", path=str(path), columns={"input": "q"}).load().instances
    assert [len(i.input) for i in instances] == [5, 200_000]


def test_a_csv_field_over_the_limit_names_file_and_row(tmp_path: Path):
    path = tmp_path / "huge.csv"
    limit = csv.field_size_limit()
    with path.open("w", newline="") as handle:
        handle.write("q\nshort\n")
        handle.write('"' + "x" * (limit + 1) + '"\n')
    with pytest.raises(DataFileError, match=rf"{path}: row 2: a field is over"):
        get_scenario("custom_file", path=str(path), columns={"input": "q"}).load()


# -- storage --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape.html", "a/../../escape.html", "/abs/../../x", "a//b"])
def test_write_file_stays_under_the_base(tmp_path: Path, name: str):
    store = ParquetStore(str(tmp_path / "base"))
    with pytest.raises(ValueError, match="write_file"):
        store.write_file(name, b"x")
    assert not (tmp_path / "escape.html").exists()
    assert not (tmp_path / "base").exists() or not any((tmp_path / "base").rglob("*.html"))
    assert store.write_file("dashboard/index.html", b"ok").endswith("dashboard/index.html")
