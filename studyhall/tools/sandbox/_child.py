"""The sandbox child: ``python -I -S -B -u _child.py CONFIG``. Stdlib only.

The config (marshal) carries the compiled code of _kernel, _guard and _boot, compiled once by
the host, so a run does not spend ~20 ms compiling them; this stub only loads them.
"""

import marshal
import sys

with open(sys.argv[1], "rb") as f:
    cfg = marshal.loads(f.read())
for name, code in cfg.pop("modules").items():
    module = type(sys)(name)
    sys.modules[name] = module
    exec(marshal.loads(code), module.__dict__)
sys.modules["_boot"].main(cfg)
