"""Reading a ``torch.save`` file without running anything from it.

A ``torch.save`` file is a zip archive whose ``data.pkl`` is a pickle, and unpickling
calls whatever functions the pickle names: a crafted file runs a shell command as it
loads. darbgen therefore never unpickles a user's file with the full unpickler. It
lists the globals the pickle would import (:func:`pickle_globals`, which only parses
opcodes) and refuses the file unless every one is a tensor-rebuilding function, a
storage type, a dtype or an ``OrderedDict`` (:data:`ALLOWED`); only then does it call
``torch.load(weights_only=True)``, whose restricted unpickler enforces a similar list
itself. Two independent checks: a hole in either one does not open the door.

A pickled ``nn.Module`` (``torch.save(model)``) is refused like any other object:
loading it would run the class's code, and it needs that code on the path anyway.
"""

from __future__ import annotations

import functools
import io
import pickletools
import zipfile
from pathlib import Path

import torch

from ..files import read_input

__all__ = ["ALLOWED", "MAX_PICKLE_BYTES", "pickle_globals", "load_weights"]

#: The globals a state dict's pickle may name, beyond storage types and dtypes.
ALLOWED = frozenset({
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter", "torch.Size", "torch.device",
})
#: Largest ``data.pkl`` read (the tensors themselves are separate archive members).
MAX_PICKLE_BYTES = 64 << 20

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}
#: Where to export a model instead; every refusal of a pickled object ends with it.
HOW_TO_SAVE = ("save the weights with torch.save(model.state_dict(), PATH), or export the "
               "model to ONNX (torch.onnx.export) or with torch.export (a .pt2 file)")


def pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` globals that unpickling ``data`` would import, in order.

    Only parses the opcodes (:func:`pickletools.genops`); nothing is imported or run.
    ``STACK_GLOBAL`` (protocol 4+) takes its two names from the strings pushed before
    it, directly or through the memo.

    Raises
    ------
    ValueError
        ``data`` is not a well-formed pickle.
    """
    names, stack, memo = [], [], {}
    last = None
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            names.append(arg.replace(" ", "."))
            last = None
        elif op.name in _STRING_OPS:
            last = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            stack.append(last)
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = last
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            last = memo.get(int(arg))
            stack.append(last)
        elif op.name == "STACK_GLOBAL":
            module, name = (stack[-2:] if len(stack) >= 2 else (None, None))
            names.append(f"{module}.{name}")
            last = None
        else:
            last = None
    # Protocol 2 spells modules as Python 2 did; the unpickler maps them (fix_imports).
    return [_PY2_MODULES.get(n.partition(".")[0], n.partition(".")[0]) + n[n.index("."):]
            if "." in n else n for n in names]


#: Python 2 module names that protocol 2 pickles carry, as the unpickler reads them.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _allowed(name: str) -> bool:
    return name in ALLOWED or name in _torch_types()


@functools.cache
def _torch_types() -> frozenset:
    """``torch.<Storage>`` classes and ``torch.<dtype>`` objects, as global names."""
    return frozenset(f"torch.{attr}" for attr, value in vars(torch).items()
                     if isinstance(value, torch.dtype)
                     or (attr.endswith("Storage") and isinstance(value, type)))


def _refuse_globals(path: Path, names: list[str]) -> None:
    bad = list(dict.fromkeys(n for n in names if not _allowed(n)))
    if not bad:
        return
    shown = ", ".join(bad[:4]) + (", ..." if len(bad) > 4 else "")
    if any(n.startswith(("torch.nn.", "__main__.")) for n in bad):
        raise ValueError(f"{path}: holds a pickled model object ({shown}); darbgen never "
                         f"unpickles code, which could run anything: {HOW_TO_SAVE}")
    raise ValueError(f"{path}: holds pickled Python objects ({shown}) that loading would "
                     f"import and run; darbgen loads weights only: {HOW_TO_SAVE}")


def _data_pickle(path: Path, archive: zipfile.ZipFile) -> bytes:
    """The ``data.pkl`` of a ``torch.save`` archive, after size checks."""
    infos = archive.infolist()
    pkl = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
    if len(pkl) != 1:
        raise ValueError(f"{path}: a zip archive, but not a torch.save file (it has "
                         f"{len(pkl)} data.pkl members, not 1)")
    for info in infos:
        # torch.save stores members uncompressed; a compressed one could be a zip bomb.
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path}: member {info.filename!r} is compressed; torch.save "
                             "writes uncompressed archives")
    if pkl[0].file_size > MAX_PICKLE_BYTES:
        raise ValueError(f"{path}: data.pkl holds {pkl[0].file_size} bytes, more than the "
                         f"{MAX_PICKLE_BYTES} a state dict's index needs")
    return archive.read(pkl[0])


def load_weights(path, content: bytes | None = None) -> object:
    """The tensors (in dicts and lists) of a ``torch.save`` file, loaded without running
    any code from it. ``content`` is the file's bytes when the caller has read them
    (else they are read here, from a regular file of a bounded size).

    Raises
    ------
    ValueError
        The file is not a ``torch.save`` archive, or its pickle names anything but
        tensors, storages, dtypes and ``OrderedDict`` (a pickled model, a crafted
        payload); the message names the globals and says how to save weights instead.
    """
    path = Path(path)
    if content is None:
        content = read_input(path, what="a torch.save file")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            data = _data_pickle(path, archive)
    except zipfile.BadZipFile:
        # Not an archive: a bare pickle (pickle.dump, or torch.save's pre-1.6 format)
        # is still checked, so that the message names what it would have run.
        raw = content[:MAX_PICKLE_BYTES]
        try:
            names = pickle_globals(raw) if raw[:1] == b"\x80" else None
        except ValueError:
            names = None
        if names is not None:
            _refuse_globals(path, names)
            raise ValueError(f"{path}: a bare pickle, not torch.save's zip format (torch "
                             f">= 1.6): {HOW_TO_SAVE}") from None
        raise ValueError(f"{path}: not a .npy, ONNX, .pt2 or torch.save file") from None
    try:
        names = pickle_globals(data)
    except ValueError as e:
        raise ValueError(f"{path}: data.pkl is not a readable pickle ({e})") from None
    _refuse_globals(path, names)
    try:
        return torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the restricted unpickler refuses
        # torch's message is a page long; its reason is the line naming what it refused.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("Unsupported")), lines[0]
                      if lines else type(e).__name__)
        raise ValueError(f"{path}: torch's weights-only loader refuses it ({reason}); save "
                         "it with torch.save and its default pickle protocol") from None
