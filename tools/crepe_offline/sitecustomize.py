"""Loaded (as ``sitecustomize``, this folder first on PYTHONPATH) while pip builds crepe 0.0.16:
crepe's setup.py fetches each model-<capacity>.h5.bz2 with urllib.request.urlretrieve and
decompresses it; this answers those calls from the folder CREPE_WEIGHTS_DIR names instead of the
internet (model-<capacity>.h5.bz2, or an uncompressed model-<capacity>.h5). A capacity missing
there is installed as an empty file, which fails to load with h5py's error.

Used by tools/install_crepe.sh and tools/worker_packages.py.
"""

import bz2
import os
import urllib.request

_DIR = os.environ["CREPE_WEIGHTS_DIR"]


def _from_local_dir(url, filename=None, *args, **kwargs):
    name = os.path.basename(url)
    packed = os.path.join(_DIR, name)
    plain = os.path.join(_DIR, name[:-4]) if name.endswith(".bz2") else None
    if os.path.isfile(packed):
        with open(packed, "rb") as src, open(filename, "wb") as dst:
            dst.write(src.read())
    elif plain and os.path.isfile(plain):
        with open(plain, "rb") as src, open(filename, "wb") as dst:
            dst.write(bz2.compress(src.read()))
    else:
        print(f"crepe offline build: {name} is not in {_DIR}; that capacity will not load")
        with open(filename, "wb") as dst:
            dst.write(bz2.compress(b""))
    return filename, None


urllib.request.urlretrieve = _from_local_dir
