"""Deliberately broken: the file raises while it is imported."""

import headwater as hw

raw = hw.source("raw")
value = undefined_name  # noqa: F821
