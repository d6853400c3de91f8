"""Loading a :class:`Definitions` from a Python file or ``module:attribute``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from headwater._errors import DefinitionError, HeadwaterError
from headwater.definitions import Definitions

__all__ = ["LoadError", "load_definitions"]


class LoadError(HeadwaterError):
    """The definitions could not be loaded; the message names the file and the cause."""


def _user_frame(exc: BaseException, filename: str) -> str:
    """``file:line`` of the deepest frame in the user's file, to point at their mistake."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == Path(filename).resolve():
            where = f" (line {frame.lineno})"
    return where


def _import_file(path: Path) -> ModuleType:
    name = f"headwater_definitions_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # so the definitions file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except DefinitionError as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"{path}: invalid definitions: {exc}") from exc
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"{path}: syntax error on line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        raise LoadError(
            f"{path}: importing it raised {type(exc).__name__}: {exc}{_user_frame(exc, str(path))}"
        ) from exc
    finally:
        if added:
            sys.path.remove(folder)
    return module


def _find(module: ModuleType, attribute: str | None, where: str) -> Definitions:
    if attribute is not None:
        value = getattr(module, attribute, None)
        if not isinstance(value, Definitions):
            raise LoadError(f"{where}: attribute {attribute!r} is not an hw.Definitions")
        return value
    found = [v for v in vars(module).values() if isinstance(v, Definitions)]
    if len(found) != 1:
        raise LoadError(
            f"{where}: expected one hw.Definitions at module level, found {len(found)}; "
            "name it with FILE.py:attribute"
        )
    return found[0]


def load_definitions(target: str) -> Definitions:
    """Load ``path/to/defs.py``, ``path/to/defs.py:attr`` or ``package.module:attr``."""
    path_text, _, attribute = (
        target.partition(":") if not Path(target).exists() else (target, "", "")
    )
    if path_text.endswith(".py") or Path(path_text).exists():
        path = Path(path_text).resolve()
        if not path.is_file():
            raise LoadError(f"definitions file {path_text!r} does not exist")
        defs = _find(_import_file(path), attribute or None, str(path))
        defs.base_dir = path.parent
        return defs
    try:
        module = importlib.import_module(path_text)
    except DefinitionError as exc:
        raise LoadError(f"module {path_text!r}: invalid definitions: {exc}") from exc
    except ImportError as exc:
        raise LoadError(f"cannot import module {path_text!r}: {exc}") from exc
    except Exception as exc:
        raise LoadError(
            f"module {path_text!r}: importing it raised {type(exc).__name__}: {exc}"
        ) from exc
    return _find(module, attribute or None, f"module {path_text!r}")
