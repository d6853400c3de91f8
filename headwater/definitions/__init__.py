"""Declarations: assets, sources, checks, partitions and the validated graph. Pure."""

from headwater.definitions._assets import AssetDef, asset
from headwater.definitions._checks import CheckDef, check
from headwater.definitions._definitions import EXECUTORS, Definitions, Node, valid_executor
from headwater.definitions._graph import AssetGraph, EdgeMapping
from headwater.definitions._mappings import (
    AllPartitions,
    Identity,
    Input,
    PartitionMapping,
    TimeWindow,
)
from headwater.definitions._partitions import (
    DynamicPartitions,
    MultiPartitions,
    PartitionContext,
    PartitionsDefinition,
    StaticPartitions,
    dynamic_keys_in,
    keys_holding,
)
from headwater.definitions._sources import FileSource, ObjectSource, SourceDef, source
from headwater.definitions._time_partitions import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    TimePartitions,
    WeeklyPartitions,
)
from headwater.definitions._values import CheckResult, Output

__all__ = [
    "EXECUTORS",
    "AllPartitions",
    "AssetDef",
    "AssetGraph",
    "CheckDef",
    "CheckResult",
    "DailyPartitions",
    "Definitions",
    "DynamicPartitions",
    "EdgeMapping",
    "FileSource",
    "HourlyPartitions",
    "Identity",
    "Input",
    "MonthlyPartitions",
    "MultiPartitions",
    "Node",
    "ObjectSource",
    "Output",
    "PartitionContext",
    "PartitionMapping",
    "PartitionsDefinition",
    "SourceDef",
    "StaticPartitions",
    "TimePartitions",
    "TimeWindow",
    "WeeklyPartitions",
    "asset",
    "check",
    "dynamic_keys_in",
    "keys_holding",
    "source",
    "valid_executor",
]
