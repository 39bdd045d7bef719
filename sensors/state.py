"""The cursors of this code location's sensors as the Dagster instance stores them.

The demo plays the daemon's part in process; it reads and writes the same sensor state the
daemon uses, so a sensor turned on afterwards (``make ui``) starts where the demo stopped
instead of replaying the demo's events. The state is keyed by the sensor's origin in the
workspace, so the code location is loaded from ``workspace.yaml`` exactly as the daemon and
the webserver load it; this is what ``dagster sensor cursor --set`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    SensorInstigatorData,
)
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
LOCATION = "assay"


class SensorCursors:
    """Get and set the stored cursor of each sensor of the code location."""

    def __init__(self, instance: DagsterInstance, sensors: dict[str, object]) -> None:
        self.instance = instance
        self._sensors = sensors  # name → RemoteSensor

    def get(self, name: str) -> str | None:
        sensor = self._sensors[name]
        state = self.instance.get_instigator_state(
            sensor.get_remote_origin_id(), sensor.selector_id
        )
        data = state.instigator_data if state else None
        return data.cursor if isinstance(data, SensorInstigatorData) else None

    def set(self, name: str, cursor: str | None) -> None:
        """Store ``cursor``; a sensor never started stays stopped, a running one keeps running."""
        sensor = self._sensors[name]
        state = self.instance.get_instigator_state(
            sensor.get_remote_origin_id(), sensor.selector_id
        )
        if state is None:
            self.instance.add_instigator_state(
                InstigatorState(
                    sensor.get_remote_origin(),
                    InstigatorType.SENSOR,
                    InstigatorStatus.STOPPED,
                    SensorInstigatorData(
                        min_interval=sensor.min_interval_seconds,
                        cursor=cursor,
                        sensor_type=sensor.sensor_type,
                    ),
                )
            )
            return
        data = state.instigator_data
        if not isinstance(data, SensorInstigatorData):
            data = SensorInstigatorData(sensor_type=sensor.sensor_type)
        self.instance.update_instigator_state(
            state.with_data(
                SensorInstigatorData(
                    last_tick_timestamp=data.last_tick_timestamp,
                    last_run_key=data.last_run_key,
                    min_interval=sensor.min_interval_seconds,
                    cursor=cursor,
                    last_tick_start_timestamp=data.last_tick_start_timestamp,
                    last_sensor_start_timestamp=data.last_sensor_start_timestamp,
                    sensor_type=sensor.sensor_type,
                )
            )
        )


@contextmanager
def sensor_cursors(
    instance: DagsterInstance, workspace: Path = WORKSPACE
) -> Iterator[SensorCursors]:
    """The stored sensor cursors, with the code location loaded from ``workspace``."""
    target = WorkspaceFileTarget(paths=[str(workspace)])
    with WorkspaceProcessContext(instance, target) as context:
        location = context.create_request_context().get_code_location(LOCATION)
        sensors = {
            s.name: s for repo in location.get_repositories().values() for s in repo.get_sensors()
        }
        yield SensorCursors(instance, sensors)
