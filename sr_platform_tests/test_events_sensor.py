"""landing_zone_sensor ticks in the project_fully_featured manner: real sensor contexts built
with build_sensor_context(instance=..., cursor=...), the cursor carried from tick to tick, and
no database at all (its URL points at a port nothing listens on)."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest

from sr_platform.core.generate import write_event_files
from sr_platform.core.landing import signature
from sr_platform.core.localpg import free_port
from sr_platform.definitions import defs
from sr_platform.events.partitions import partition_key
from sr_platform.events.resources import LandingZone
from sr_platform.events.sensors import landing_zone_sensor
from sr_platform.resources import PostgresResource

GRANULARITIES = ["D", "H1", "H4", "W"]


def _keys(instrument: str) -> list[str]:
    # a multi-partition key's text: the dimensions' keys in the order of the dimension names
    return sorted(str(partition_key(instrument, g)) for g in GRANULARITIES)


def _one_run(result: dg.SensorResult, files: list[Path], keys: dict[Path, list[str]]
             ) -> dg.RunRequest:
    """The tick's one run request, checked: its config names every file once with the
    partitions the file holds, its run key is a digest of the files and their signatures."""
    (req,) = result.run_requests
    assert req.job_name is None  # the sensor's own job: ingest_landing_files
    assert req.partition_key is None  # the run reports many partitions, it targets none
    assert req.run_config == {"ops": {"ingest_files": {"config": {
        "files": [str(f) for f in files],
        "partitions_by_file": {str(f): keys[f] for f in files}}}}}
    digest = hashlib.sha256("\n".join(f"{f}:{signature(f)}" for f in files).encode()
                            ).hexdigest()[:16]
    assert req.run_key == f"ingest|{digest}"
    assert req.tags == {"sr_platform/files": ",".join(f.name for f in files),
                        "sr_platform/file_count": str(len(files)),
                        "sr_platform/partition_count": str(len({k for ks in keys.values()
                                                                for k in ks}))}
    return req


@pytest.fixture
def dead_database() -> PostgresResource:
    # nothing listens there: any connection attempt would fail
    return PostgresResource(database_url=f"postgresql://sr@127.0.0.1:{free_port()}/sr_platform")


def _files(directory: Path, instruments: int, seed: int, keep: str) -> list[Path]:
    write_event_files(directory, years=0.1, instruments=instruments, seed=seed, event_rate=0.5)
    for f in directory.glob("*.csv"):
        if keep not in f.name:
            f.unlink()
    return sorted(directory.glob("*.csv"))


def test_sensor_needs_only_the_landing_zone():
    assert landing_zone_sensor.required_resource_keys == {"landing_zone"}
    assert landing_zone_sensor.job_name == "ingest_landing_files"


def test_two_ticks_with_the_database_down_skip_nothing(tmp_path, dead_database):
    landing = tmp_path / "landing"
    (eur,) = _files(landing, instruments=1, seed=3, keep="EUR_USD")
    resources = {"landing_zone": LandingZone(path=str(landing)), "postgres": dead_database}
    with dg.instance_for_test() as instance:
        first = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs))
        assert isinstance(first, dg.SensorResult)
        first_run = _one_run(first, [eur], {eur: _keys("EUR_USD")})
        assert json.loads(first.cursor)["recent"] == {str(eur): signature(eur)}
        (add,) = first.dynamic_partitions_requests
        assert list(add.partition_keys) == ["EUR_USD"]
        # what the sensor daemon does with the result before the next tick
        instance.add_dynamic_partitions("instruments", list(add.partition_keys))

        # a file for a second instrument arrives; the next tick starts from the first's cursor
        (gbp,) = _files(tmp_path / "more", instruments=2, seed=4, keep="GBP_USD")
        gbp = gbp.rename(landing / gbp.name)
        second = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=first.cursor))
        second_run = _one_run(second, [gbp], {gbp: _keys("GBP_USD")})
        assert json.loads(second.cursor)["recent"] == {str(eur): signature(eur),
                                                       str(gbp): signature(gbp)}
        (add,) = second.dynamic_partitions_requests
        assert list(add.partition_keys) == ["GBP_USD"]
        assert first_run.run_key != second_run.run_key

        # and a third tick with nothing new skips, still without a database
        third = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=second.cursor))
        assert third.skip_reason and not third.run_requests


def test_a_rewritten_file_is_requested_again_under_a_new_run_key(tmp_path, dead_database):
    landing = tmp_path / "landing"
    (eur,) = _files(landing, instruments=1, seed=3, keep="EUR_USD")
    resources = {"landing_zone": LandingZone(path=str(landing)), "postgres": dead_database}
    with dg.instance_for_test() as instance:
        first = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs))
        first_run = _one_run(first, [eur], {eur: _keys("EUR_USD")})
        instance.add_dynamic_partitions("instruments", ["EUR_USD"])
        with eur.open("a") as f:  # one more copy of the last row: a new signature
            f.write(eur.read_text().splitlines()[-1] + "\n")
        second = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=first.cursor))
        again = _one_run(second, [eur], {eur: _keys("EUR_USD")})
        assert again.run_key != first_run.run_key
        assert second.dynamic_partitions_requests == []
        assert json.loads(second.cursor)["recent"] == {str(eur): signature(eur)}


def test_the_files_tag_fits_and_says_how_many_it_leaves_out():
    from sr_platform.events.sensors import TAG_CHARS, files_tag

    assert files_tag(["a.csv", "b.csv"]) == "a.csv,b.csv"
    names = [f"events_{i:02d}.csv" for i in range(28)]  # 13 characters each
    tag = files_tag(names)
    assert len(tag) <= TAG_CHARS
    assert tag == ",".join(names[:13]) + ",+15 more"  # 190 characters; one more: 204
