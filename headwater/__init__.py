"""headwater: a small reactive materialization daemon.

Declare assets and sources; headwater keeps them up to date, running only what changed data
makes stale.
"""

from headwater._durations import Duration, parse_duration
from headwater._errors import DefinitionError, HeadwaterError, PartitionKeyError, SelectionError
from headwater._events import Event, EventKind
from headwater.definitions import (
    AllPartitions,
    AssetDef,
    CheckDef,
    CheckResult,
    DailyPartitions,
    Definitions,
    DynamicPartitions,
    FileSource,
    HourlyPartitions,
    Identity,
    Input,
    MonthlyPartitions,
    MultiPartitions,
    ObjectSource,
    Output,
    PartitionMapping,
    PartitionsDefinition,
    SourceDef,
    StaticPartitions,
    TimeWindow,
    WeeklyPartitions,
    asset,
    check,
    source,
)
from headwater.execution import Context, FilesystemStore, IOManager, ObjectStore
from headwater.policies import Freshness, Policy, Retry, eager, lazy, manual, on_cron
from headwater.versions import code_version, data_version

__version__ = "0.1.0"

__all__ = [
    "AllPartitions",
    "AssetDef",
    "CheckDef",
    "CheckResult",
    "Context",
    "DailyPartitions",
    "DefinitionError",
    "Definitions",
    "Duration",
    "DynamicPartitions",
    "Event",
    "EventKind",
    "FileSource",
    "FilesystemStore",
    "Freshness",
    "HeadwaterError",
    "HourlyPartitions",
    "IOManager",
    "Identity",
    "Input",
    "MonthlyPartitions",
    "MultiPartitions",
    "ObjectSource",
    "ObjectStore",
    "Output",
    "PartitionKeyError",
    "PartitionMapping",
    "PartitionsDefinition",
    "Policy",
    "Retry",
    "SelectionError",
    "SourceDef",
    "StaticPartitions",
    "TimeWindow",
    "WeeklyPartitions",
    "asset",
    "check",
    "code_version",
    "data_version",
    "eager",
    "lazy",
    "manual",
    "on_cron",
    "parse_duration",
    "source",
]
