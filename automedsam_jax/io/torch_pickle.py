"""Read a PyTorch ``.pth`` checkpoint into NumPy arrays without importing torch.

A ``torch.save`` file (the zip format, PyTorch ≥ 1.6) is a zip holding ``<name>/data.pkl`` — a
pickle whose tensors refer to raw little-endian storages ``<name>/data/<key>``. Only tensors,
parameters, (ordered) dicts, lists, tuples and plain Python values are reconstructed; anything
else in the pickle is refused, so reading a checkpoint never runs code from it.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    itemsize = storage.itemsize
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)).copy()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    return data


class _Unpickler(pickle.Unpickler):
    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("builtins", "set"): set,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: Path):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load {module}.{name} from the checkpoint (only tensors "
            "and plain containers are read without torch)")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"{self.source}: unknown persistent id {pid!r}")
        dtype = _STORAGE_DTYPES[storage_type.name]
        if dtype is None:
            raise pickle.UnpicklingError(f"{self.source}: {storage_type.name} tensors are not "
                                         "supported without torch; save the checkpoint in float32")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        return self.storages[key]


def load_pth(path: str | Path):
    """Load a ``torch.save`` zip checkpoint; tensors become NumPy arrays (copies)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise ValueError(f"{path} is truncated or corrupt (a zip without its directory); "
                                 "download or copy it again")
        raise ValueError(f"{path} is not a PyTorch zip checkpoint (torch.save ≥ 1.6 format); "
                         "re-save it with torch.save(state_dict, path) or install torch")
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise ValueError(f"{path}: expected one */data.pkl in the archive, found {pkl}")
            prefix = pkl[0][: -len("/data.pkl")]
            with archive.open(pkl[0]) as f:
                return _Unpickler(f, archive, prefix, path).load()
    except (zipfile.BadZipFile, EOFError, KeyError) as e:
        raise ValueError(f"{path} is truncated or corrupt ({e}); download or copy it again") from e
