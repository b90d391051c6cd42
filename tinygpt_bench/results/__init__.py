"""Result files as typed records: what `curve`, `peak` and `diagnose` write, and what every
reader (`summary`, `chart`, `report`, `compare`, `--resume`) reads back. The only package that
knows the files' layout: writers hand it records, readers get records (or a pandas view of
them, frame()). One job a module, imports going down this list:

  schema   the files, their columns and types, the format versions (schema.py's history)
  store    a file written whole or not at all, the folder's lock, temporary files cleaned
  codec    rows as CSV text and back, by column name
  machine  which machine an environment describes; the settings digest
  readers  each file's records, checked; pandas views for reporting
  resume   what a run may do with its folder: keep, measure, or refuse (pure: writes nothing)
  writer   a run's files (ResultWriter), peaks.csv, diagnose reports

Each measurement is committed as it finishes (its steps, then its row; every file replaced
atomically), so an interrupted run keeps everything it measured and `--resume` can carry
on, with the finished repeats of the measurement it was in. A step counts only with its
measurement's row (same run_id, preset and backend). The folder is locked while a run writes
into it (LOCK, holding the writer's pid). The names below are the package's API: callers
import the package (`from tinygpt_bench import results`), not its modules.
"""

from tinygpt_bench.errors import UserError
from tinygpt_bench.results import codec, machine, readers, resume, schema, store, writer
from tinygpt_bench.results.codec import csv_bytes, frame
from tinygpt_bench.results.machine import DERIVED_SETTINGS, gpu_names, machine_difference, settings_id
from tinygpt_bench.results.readers import (diagnoses, done_keys, load_environment, measurements, mixture, peaks,
                                           read_environment, read_measurements, read_peaks, read_steps, steps)
from tinygpt_bench.results.resume import Decision, decide, shape_id
from tinygpt_bench.results.schema import (DIAGNOSE_GLOB, ENVIRONMENT, FORMAT_VERSION, IN_PROGRESS, MEASUREMENT_COLUMNS,
                                          MEASUREMENTS, MIGRATE, PEAK_COLUMNS, PEAKS, READABLE_VERSIONS, STATUSES,
                                          STEP_COLUMNS, STEPS, Diagnosis, Measurement, Peak, Step)
from tinygpt_bench.results.store import LOCK, FolderLock, atomic_write
from tinygpt_bench.results.writer import ResultWriter, diagnosis_path, write_diagnosis, write_peaks

__all__ = [
    "UserError", "codec", "machine", "readers", "resume", "schema", "store", "writer", "csv_bytes", "frame",
    "DERIVED_SETTINGS", "gpu_names", "machine_difference", "settings_id", "diagnoses", "done_keys",
    "load_environment", "measurements", "mixture", "peaks", "read_environment", "read_measurements", "read_peaks",
    "read_steps", "steps", "Decision", "decide", "shape_id", "DIAGNOSE_GLOB", "ENVIRONMENT", "FORMAT_VERSION",
    "IN_PROGRESS", "MEASUREMENT_COLUMNS", "MEASUREMENTS", "MIGRATE", "PEAK_COLUMNS", "PEAKS",
    "READABLE_VERSIONS", "STATUSES", "STEP_COLUMNS", "STEPS", "Diagnosis", "Measurement", "Peak", "Step", "LOCK",
    "FolderLock", "atomic_write", "ResultWriter", "diagnosis_path", "write_diagnosis", "write_peaks",
]
