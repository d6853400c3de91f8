"""Declarations: assets, sources, checks, partitions and the validated graph. Pure."""

from headwater.definitions._assets import AssetDef, asset
from headwater.definitions._checks import CheckDef, check
from headwater.definitions._definitions import EXECUTORS, Definitions, Node
from headwater.definitions._graph import AssetGraph, EdgeMapping
from headwater.definitions._partitions import (
    DailyPartitions,
    DynamicPartitions,
    HourlyPartitions,
    MultiPartitions,
    PartitionContext,
    PartitionsDefinition,
    StaticPartitions,
)
from headwater.definitions._sources import FileSource, ObjectSource, SourceDef, source
from headwater.definitions._values import CheckResult, Output

__all__ = [
    "EXECUTORS",
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
    "MultiPartitions",
    "Node",
    "ObjectSource",
    "Output",
    "PartitionContext",
    "PartitionsDefinition",
    "SourceDef",
    "StaticPartitions",
    "asset",
    "check",
    "source",
]
