"""Import open3d with its libusb dependency resolved (open3d-cpu wheels link libusb-1.0).

open3d is imported lazily through :func:`load` so that modules which only sometimes
need it stay cheap to import.
"""

from __future__ import annotations

import ctypes
import functools


@functools.lru_cache(maxsize=1)
def load():
    """Return the ``open3d`` module, preloading the ``libusb-package`` shared library.

    Raises:
        ImportError: open3d is not installed.
    """
    try:
        import libusb_package

        ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError, TypeError):
        pass  # a system libusb may be present
    import open3d

    return open3d
