"""Freshness of the events: the cron FreshnessPolicy on new_resistance_events, and Dagster's
own freshness daemon evaluating it across an FX weekend (at frozen times)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.definitions.freshness import CronFreshnessPolicy, FreshnessState
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from sr_platform.definitions import defs
from sr_platform.events.assets import new_resistance_events
from sr_platform.events.partitions import partition_key

KEY = dg.AssetKey("new_resistance_events")


def test_policy_on_the_events_asset():
    policy = new_resistance_events.specs_by_key[KEY].freshness_policy
    assert isinstance(policy, CronFreshnessPolicy)
    assert (policy.deadline_cron, policy.lower_bound_delta, policy.timezone) == (
        "0 18 * * 1-5", timedelta(hours=24), "America/New_York")
    # the code location carries it (what the daemon and the UI read), on that asset only
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string(): graph.get(k).freshness_policy
            for k in graph.get_all_asset_keys()
            if graph.get(k).freshness_policy} == {"new_resistance_events": policy}
    # the superseded freshness checks and their (stopped) sensor are gone
    assert sorted(s.name for s in defs.sensors) == [
        "check_failure_alert", "landing_zone_sensor", "outside_loads_sensor",
        "run_failure_alert"]
    assert sorted(k.name for k in graph.asset_check_keys
                  if k.asset_key == new_resistance_events.key) == [
        "loaded_equals_source_minus_rejected", "no_rows_in_catch_all_partitions",
        "rebound_in_atr_matches_rebound_over_atr", "source_files_had_no_rejected_rows"]
    assert not [k for k in graph.asset_check_keys if "fresh" in k.name]


@pytest.fixture
def daemon_context() -> Iterator[tuple[dg.DagsterInstance, WorkspaceProcessContext]]:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="sr_platform.definitions"),
        location_name="sr_platform")
    with dg.instance_for_test() as instance:
        with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as ctx:
            yield instance, ctx


def _state_at(when: datetime, instance: dg.DagsterInstance,
              ctx: WorkspaceProcessContext) -> FreshnessState:
    with freeze_time(when):
        list(FreshnessDaemon().run_iteration(ctx))
    return instance.get_freshness_state_records([KEY])[KEY].freshness_state


def _materialize_at(when: datetime, instance: dg.DagsterInstance) -> None:
    with freeze_time(when):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            KEY, partition=str(partition_key("EUR_USD", "H1"))))


def test_daemon_evaluates_the_fx_week(daemon_context):
    instance, ctx = daemon_context
    # November 2026: New York is on EST, so 18:00 there is 23:00 UTC
    friday = datetime(2026, 11, 20, tzinfo=UTC)
    assert _state_at(friday, instance, ctx) == FreshnessState.UNKNOWN  # never materialized
    _materialize_at(friday.replace(hour=21, minute=30), instance)  # before Friday's close
    for when in [
        friday.replace(hour=23, minute=30),  # Friday's deadline met
        friday + timedelta(days=1, hours=12),  # Saturday: market closed, no deadline
        friday + timedelta(days=2, hours=23, minutes=30),  # Sunday night: market open
        friday + timedelta(days=3, hours=22, minutes=59),  # Monday before its deadline
    ]:
        assert _state_at(when, instance, ctx) == FreshnessState.PASS, when
    monday_deadline = friday + timedelta(days=3, hours=23)
    # no load since the market reopened on Sunday: stale from Monday's deadline
    assert _state_at(monday_deadline + timedelta(minutes=1), instance, ctx) \
        == FreshnessState.FAIL
    _materialize_at(monday_deadline + timedelta(minutes=10), instance)
    assert _state_at(monday_deadline + timedelta(minutes=15), instance, ctx) \
        == FreshnessState.PASS


def test_daemon_follows_new_york_summer_time(daemon_context):
    instance, ctx = daemon_context
    # July 2026: New York is on EDT, so Friday's deadline is 22:00 UTC, not 23:00
    _materialize_at(datetime(2026, 7, 9, 21, 30, tzinfo=UTC), instance)  # Thursday
    assert _state_at(datetime(2026, 7, 10, 21, 59, tzinfo=UTC), instance, ctx) \
        == FreshnessState.PASS
    assert _state_at(datetime(2026, 7, 10, 22, 1, tzinfo=UTC), instance, ctx) \
        == FreshnessState.FAIL
