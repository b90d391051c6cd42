"""Which machine a recorded environment describes, and the digest of a run's settings: what
tells two results folders apart as measurements that cannot be mixed."""

from __future__ import annotations

import hashlib
import json


def settings_id(settings: dict) -> str:
    """A short digest of what must match for results to be comparable (and resumable)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def gpu_names(env: dict) -> list[str]:
    """The hardware adapters an environment saw (every implementation's, software renderers
    left out), sorted: what tells two lent machines apart whose CPUs report the same model name,
    core count and host name (the H200 and H100 machines: "Intel(R) Xeon(R) Processor", 16, "vm")."""
    return sorted({a["name"] for a in env.get("adapters") or [] if isinstance(a, dict) and a.get("name")
                   and not a.get("software")})


def machine_difference(a: dict, b: dict) -> str:
    """'' where two recorded environments can be one machine (kind); else what differs, as
    'CPU X, host h, GPUs [..]' of `a`. The GPUs are compared only where both recorded adapters
    (a CPU engine's diagnosis does not look for any), and one's GPUs among the other's are the
    same machine (a peak run names the one adapter it used, a curve every adapter it saw); a GPU
    on one side and none on the other is not."""
    differs = [k for k in ("cpu_model", "hostname") if a.get(k) != b.get(k)]
    ga, gb = set(gpu_names(a)), set(gpu_names(b))
    same_gpus = (ga <= gb or gb <= ga) if ga and gb else ga == gb
    if a.get("adapters") and b.get("adapters") and not same_gpus:
        differs.append("gpus")
    if not differs:
        return ""
    return f"CPU {a.get('cpu_model')}, host {a.get('hostname')}" + (
        f", GPUs {', '.join(sorted(ga)) or 'none'}" if a.get("adapters") else "")


# settings keys added after folders were written without them, each with how to read its value
# from such a folder's recorded environment, so that --resume of that folder on the same machine
# goes on and on another machine is refused (session 9: a resume on a lent H100 machine took up
# repeats kept on the H200 machine, whose CPU reports the same name, cores and host name)
DERIVED_SETTINGS = {"gpus": gpu_names}
